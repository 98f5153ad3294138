"""Free space: best-fit allocation, coalescing, and the rules for pending pages (they wait
for a durable checkpoint and for every reader that may still see them)."""

from __future__ import annotations

import itertools
import random

import pytest

from streamdb.errors import CorruptionError, StorageFullError
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.pagestore import PageStore


def test_best_fit_keeps_large_extents_whole() -> None:
    space = FreeSpace(100, 1000)
    space.free(10, 5)
    space.free(30, 50)
    assert space.allocate(4) == 10  # the small hole, not the big one
    assert space.allocate(50) == 30
    assert space.allocate(3) == 100  # nothing fits: the file grows
    space._check()


def test_frees_coalesce_and_the_limit_holds() -> None:
    space = FreeSpace(10, 20)
    for start in (2, 6, 4, 3, 5):
        space.free(start, 1)
    assert space.extents() == [(2, 5)]
    space._check()
    with pytest.raises(StorageFullError):
        space.allocate(11)
    assert space.allocate(10) == 10 and space.file_pages == 20
    space._check()


def test_pending_waits_for_a_durable_checkpoint_and_for_readers() -> None:
    space = FreeSpace(100, 1000)
    space.defer(10, 5, (3, 40))  # freed by the commit at LSN 40 of generation 3
    assert space.release(None) == 0  # no checkpoint since: the header still names them
    space.durable = (4, 40)
    assert space.release((3, 39)) == 0  # a reader still sees LSN 39
    assert space.release((3, 40)) == 5
    assert space.extents() == [(10, 5)]
    space._check()


def test_a_reader_of_an_older_generation_pins_whatever_its_lsn() -> None:
    """A reader process that loaded generation 3's trees and then followed the log past the
    checkpoint that started generation 4 still reads generation 3's tree pages."""
    space = FreeSpace(100, 1000)
    space.durable = (4, 50)
    space.defer(20, 2, (4, 50))  # generation 3's tree pages, freed by that checkpoint
    assert space.release((3, 150)) == 0
    assert space.release((4, 50)) == 2


def test_undefer_forgets_rolled_back_frees() -> None:
    space = FreeSpace(100, 1000)
    space.defer(10, 1, (2, 5))
    space.defer(11, 1, (2, 7))
    space.undefer_after((2, 6))
    space.durable = (3, 9)
    assert space.release(None) == 1 and space.extents() == [(10, 1)]


def test_short_space_asks_for_releases_before_growing() -> None:
    space = FreeSpace(100, 1000)
    asked = []
    space.on_short = lambda: asked.append(space.release(None))
    space.defer(50, 8, (1, 1))
    space.durable = (2, 1)
    assert space.allocate(8) == 50 and asked == [8]


def test_random_operations_keep_the_invariants() -> None:
    rng = random.Random(7)
    space = FreeSpace(2, 10_000)
    used: list[tuple[int, int]] = []
    for _ in range(2000):
        if used and rng.random() < 0.5:
            start, count = used.pop(rng.randrange(len(used)))
            space.free(start, count)
        else:
            count = rng.randint(1, 20)
            used.append((space.allocate(count), count))
        space._check()
    owned = sorted(used)
    for (a, n), (b, _) in itertools.pairwise(owned):
        assert a + n <= b


class _NoPager:
    """What `PageStore` needs of a pager to allocate: the page size."""

    page_size = 4096
    size = 0


@pytest.mark.parametrize("seed", range(5))
def test_allocating_pages_at_once_gives_what_one_at_a_time_gives(seed: int) -> None:
    limit = 3100 if seed % 2 else 10_000  # odd seeds: the file cannot grow much
    spaces = [FreeSpace(3000, limit) for _ in range(2)]
    layout = random.Random(seed)
    for fs in spaces:
        layout.seed(seed)
        fs.free(2, 500)  # a large extent, spared for documents while others are free
        for k in range(60):  # small extents, apart
            fs.free(600 + 40 * k + layout.randrange(30), layout.randrange(1, 6))
    one, many = (PageStore(_NoPager(), fs) for fs in spaces)  # type: ignore[arg-type]
    for n in (1, 3, 40, 300):
        singles = sorted(one.allocate(1) for _ in range(n))
        assert many.allocate_pages(n) == singles
        assert spaces[0].extents() == spaces[1].extents()
        assert spaces[0].file_pages == spaces[1].file_pages
        spaces[1]._check()
    many.at_end = True
    end = spaces[1].file_pages
    assert many.allocate_pages(3) == [end, end + 1, end + 2]


@pytest.mark.parametrize("start, count", [(10, 1), (14, 3), (8, 3), (5, 20), (12, 1)])
def test_freeing_a_free_page_is_corruption_and_changes_nothing(start: int, count: int) -> None:
    """A page freed twice means something gave out a page in use (a damaged free tree):
    going on would overwrite live data."""
    space = FreeSpace(100, 1000)
    space.free(10, 5)
    space.free(30, 2)
    with pytest.raises(CorruptionError, match="already free"):
        space.free(start, count)
    assert space.extents() == [(10, 5), (30, 2)]
    space._check()
    space.free(15, 15)  # touching both neighbours: coalesced
    assert space.extents() == [(10, 22)]
