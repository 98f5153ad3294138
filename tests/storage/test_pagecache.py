"""The page cache of the `pread` path (docs/design.md, section 5):
`streamdb/storage/pagecache.py`, the Pager's use of it (and of madvise on the map), and a
database opened with `Config(use_mmap=False)`, writer and read-only follower (rule F5 of
streamdb/engine/follow.py).

Unit tests run the cache over an in-memory "file" whose `pread` counts its calls, so they can
tell a read served from the cache (no call) from one that went to the file.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamdb
from streamdb import Config
from streamdb.reads import version_at
from streamdb.storage.pagecache import CacheStats, PageCache
from streamdb.storage.pager import Pager
from wal.vfs import Buffer, FileMap, OsFile, OsVFS

# ---- an in-memory file --------------------------------------------------------------------


class FakeFile:
    """Bytes behind `pread(length, offset) -> bytes` (shorter past the end), counting calls.

    `hook`, when set, runs after each pread has taken its bytes and before it returns them
    (a write or an invalidation racing the read); it is dropped once it returns True."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.lock = threading.Lock()
        self.calls = 0
        self.log: list[tuple[int, int, int]] = []  # (length asked, offset, length returned)
        self.hook: Callable[[int, int], bool] | None = None

    def pread(self, length: int, offset: int) -> bytes:
        with self.lock:
            out = bytes(self.data[offset : offset + length])
            self.calls += 1
            self.log.append((length, offset, len(out)))
        hook = self.hook
        if hook is not None and hook(length, offset) and self.hook is hook:
            self.hook = None
        return out

    def write(self, offset: int, data: bytes) -> None:
        with self.lock:
            if offset > len(self.data):
                self.data.extend(bytes(offset - len(self.data)))
            self.data[offset : offset + len(data)] = data

    def snapshot(self) -> bytes:
        with self.lock:
            return bytes(self.data)


def make_cache(data: bytes, page_size: int, capacity: int) -> tuple[PageCache, FakeFile]:
    file = FakeFile(data)
    return PageCache(file.pread, page_size, capacity), file


def delta(before: CacheStats, after: CacheStats) -> tuple[int, int, int, int]:
    """(hits, misses, prefetches, evictions) between two snapshots of the counters."""
    return (after.hits - before.hits, after.misses - before.misses,
            after.prefetches - before.prefetches, after.evictions - before.evictions)


def hit_rate(before: CacheStats, after: CacheStats) -> float:
    hits, misses, _, _ = delta(before, after)
    assert hits + misses > 0
    return hits / (hits + misses)


def pages_of(offset: int, length: int, page_size: int) -> int:
    return (offset + length - 1) // page_size - offset // page_size + 1 if length > 0 else 0


def checked_read(cache: PageCache, file: FakeFile, offset: int, length: int, *,
                 check: bool = True) -> bytes:
    """One read, checked against the file and the cache's accounting: the bytes are the
    file's; every page asked for counts once, as a hit or a miss; no whole page comes from
    the file without being counted as a miss or a prefetch (unless a hook races the read:
    what a raced read-ahead read is dropped uncounted); the structure is sound (if
    `check`: O(pages cached))."""
    before, calls, racing = cache.stats(), len(file.log), file.hook is not None
    got = bytes(cache.read(offset, length))
    after = cache.stats()
    assert got == bytes(file.data[offset : offset + length]), (offset, length)
    hits, misses, prefetches, _ = delta(before, after)
    assert hits + misses == pages_of(offset, length, cache.page_size), (offset, length)
    fetched = sum(n // cache.page_size for _, _, n in file.log[calls:])
    assert racing or fetched <= misses + prefetches, (offset, length, file.log[calls:], after)
    assert after.pages <= cache.capacity
    if check:
        cache._check()
    return got


PS = 64  # page size of the unit tests


def pattern(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# ---- 1. reads return the file's bytes; capacity; read-through --------------------------------


def test_every_read_returns_the_files_bytes() -> None:
    data = pattern(40 * PS + 17)  # a partial last page
    cache, file = make_cache(data, PS, 32)
    reads = [  # whatever read-ahead caches besides, each read is checked against the file
        (0, PS), (PS, 2 * PS),  # two entries side by side (and a stream: read-ahead)
        (PS // 2, 2 * PS),  # spanning both entries, unaligned
        (10, 5), (3 * PS + 1, PS - 2),  # inside one page
        (2 * PS + 7, 12 * PS),  # partly cached
        (0, 14 * PS),  # cached, across several entries
        (39 * PS, 3 * PS),  # past the end: shorter
        (40 * PS + 10, 100),  # in the partial last page, past the end
        (40 * PS + 17, 5), (45 * PS, PS),  # at and beyond the end: empty
        (5 * PS, 0),  # nothing
        (20 * PS - 1, 2),  # two pages, one byte of each
        (0, len(data)),  # larger than capacity/2: read through
    ]
    for offset, length in reads:
        got = checked_read(cache, file, offset, length)
        assert len(got) == max(0, min(length, len(data) - offset))


def test_a_read_spanning_cached_entries_goes_to_the_file_for_no_page() -> None:
    """Entries [0,1], [2,3], [4,5] (read in descending order: no stream, no read-ahead).
    A read of pages 0..7 reads only 6..7; then one of pages 0..5 calls no pread at all."""
    cache, file = make_cache(pattern(64 * PS), PS, 64)
    for first in (4, 2, 0):
        checked_read(cache, file, first * PS, 2 * PS)
    assert cache.stats().prefetches == 0 and file.calls == 3
    before = cache.stats()
    checked_read(cache, file, 10, 7 * PS)  # pages 0..7: 0..5 cached
    assert delta(before, cache.stats())[:3] == (6, 2, 0)
    assert file.log[3:] == [(2 * PS, 6 * PS, 2 * PS)], "only the pages not cached are read"
    before = cache.stats()
    checked_read(cache, file, PS // 2, 5 * PS)  # pages 0..5: all cached, in three entries
    assert delta(before, cache.stats())[:2] == (6, 0)
    assert file.calls == 4


@dataclass(frozen=True)
class Op:
    kind: str  # "read", "seq" (back-to-back reads), "write" (then invalidate), "clear"
    offset: int
    length: int
    repeat: int = 1


def ops(max_offset: int) -> st.SearchStrategy[list[Op]]:
    offset = st.integers(0, max_offset)
    length = st.integers(0, 6 * PS)
    one = st.one_of(
        st.builds(Op, st.just("read"), offset, length),
        st.builds(Op, st.just("seq"), offset, st.integers(1, 3 * PS), st.integers(2, 12)),
        st.builds(Op, st.just("write"), offset, st.integers(1, 3 * PS)),
        st.builds(Op, st.just("clear"), st.just(0), st.just(0)),
    )
    return st.lists(one, max_size=40)


@given(capacity=st.sampled_from([1, 2, 3, 5, 8, 16, 64]),
       size=st.integers(0, 30 * PS), steps=ops(34 * PS))
def test_random_reads_writes_and_invalidations_match_the_file(
        capacity: int, size: int, steps: list[Op]) -> None:
    """Against the model (the file's bytes): reads, runs of back-to-back reads (read-ahead),
    writes followed by `invalidate` of the pages written (what the Pager does, also
    extending the file), and `clear()`."""
    cache, file = make_cache(pattern(size, seed=size), PS, capacity)
    for n, op in enumerate(steps):
        if op.kind == "read":
            checked_read(cache, file, op.offset, op.length)
        elif op.kind == "seq":
            for i in range(op.repeat):
                checked_read(cache, file, op.offset + i * op.length, op.length)
        elif op.kind == "write":
            file.write(op.offset, pattern(op.length, seed=1000 + n))
            first = op.offset // PS
            cache.invalidate(first, (op.offset + op.length - 1) // PS - first + 1)
            cache._check()
        else:
            cache.clear()
            cache._check()
            assert cache.stats().pages == 0
    checked_read(cache, file, 0, len(file.data))  # the whole file, at the end


def test_cached_pages_never_exceed_capacity_and_evictions_are_counted() -> None:
    pages, capacity = 1000, 32
    cache, file = make_cache(pattern(pages * PS), PS, capacity)
    rng = random.Random(5)
    for _ in range(1500):
        offset = rng.randrange(pages * PS)
        checked_read(cache, file, offset, rng.randrange(1, 8 * PS))
        assert cache.stats().pages <= capacity
    stats = cache.stats()
    assert stats.evictions > 0 and stats.pages > capacity // 2, stats


def test_random_single_page_reads_account_exactly_and_are_not_read_ahead() -> None:
    """Each page read once, in random order, never next to the one before: every read is a
    miss, nothing is read ahead, and every page read is either held or evicted."""
    capacity = 16
    cache, file = make_cache(pattern(600 * PS), PS, capacity)
    order = list(range(0, 600, 2))
    random.Random(2).shuffle(order)
    for page in order:
        checked_read(cache, file, page * PS + 3, PS - 3)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.prefetches) == (0, len(order), 0)
    assert stats.pages == capacity and stats.pages + stats.evictions == len(order)
    assert file.calls == len(order)


def test_the_least_recently_used_entry_is_evicted_first() -> None:
    cache, file = make_cache(pattern(100 * PS), PS, 6)
    for first in (0, 10, 20):  # three entries of two pages: full
        checked_read(cache, file, first * PS, 2 * PS)
    checked_read(cache, file, 0, 2 * PS)  # touch the first entry
    before = cache.stats()
    checked_read(cache, file, 30 * PS, 2 * PS)  # one more: the entry at 10 goes
    assert delta(before, cache.stats())[1:] == (2, 0, 2)
    calls = file.calls
    checked_read(cache, file, 20 * PS, 2 * PS)
    checked_read(cache, file, 0, 2 * PS)
    checked_read(cache, file, 30 * PS, 2 * PS)
    assert file.calls == calls, "entries 0, 20 and 30 are still cached"
    before = cache.stats()
    checked_read(cache, file, 10 * PS, 2 * PS)
    assert delta(before, cache.stats())[:2] == (0, 2), "entry 10 was evicted"


def test_a_read_larger_than_half_the_capacity_reads_through() -> None:
    cache, file = make_cache(pattern(200 * PS), PS, 8)
    for _ in range(2):  # not cached: the second time goes to the file again
        before, calls = cache.stats(), file.calls
        checked_read(cache, file, 3 * PS + 5, 4 * PS)  # 5 pages > 8 / 2
        assert delta(before, cache.stats())[:2] == (0, 5)
        assert file.calls == calls + 1 and file.log[-1] == (4 * PS, 3 * PS + 5, 4 * PS)
        assert cache.stats().pages == 0
    checked_read(cache, file, 40 * PS, 4 * PS)  # 4 pages = 8 / 2: cached
    assert cache.stats().pages == 4
    calls = file.calls
    checked_read(cache, file, 40 * PS, 4 * PS)
    assert file.calls == calls


def test_the_pager_has_no_cache_with_zero_pages_or_a_map(tmp_path: Path) -> None:
    data = pattern(10 * 4096)
    vfs = OsVFS()
    file = vfs.open(str(tmp_path / "f"), create=True)
    file.pwritev([data], 0)
    pager = Pager(file, 4096, use_mmap=False, cache_pages=0)
    assert pager.cache is None and not pager.mapped
    assert bytes(pager.read(4096 + 100, 3 * 4096)) == data[4196 : 4196 + 3 * 4096]
    assert pager.cache_stats() == CacheStats(0, 0, 0, 0, 0, 0)
    pager.forget_cached()
    pager.write(5, [b"new"])
    assert bytes(pager.read(0, 16)) == data[:5] + b"new" + data[8:16]
    pager.close()
    mapped = Pager(vfs.open(str(tmp_path / "f")), 4096, use_mmap=True, cache_pages=64)
    assert mapped.mapped and mapped.cache is None
    assert bytes(mapped.read(0, 16)) == data[:5] + b"new" + data[8:16]
    mapped.close()
    cached = Pager(vfs.open(str(tmp_path / "f")), 4096, use_mmap=False, cache_pages=64)
    assert cached.cache is not None and cached.cache.capacity == 64
    cached.close()


class RacingFile:
    """An OsFile that does not map (so the Pager reads through its cache) whose pwritev
    first lets `before_write` run: a read in another thread just before the write lands."""

    def __init__(self, file: OsFile) -> None:
        self.file = file
        self.before_write: Callable[[], None] | None = None

    def pread(self, size: int, offset: int) -> bytes:
        return self.file.pread(size, offset)

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()
        self.file.pwritev(buffers, offset)

    def size(self) -> int:
        return self.file.size()

    def truncate(self, size: int) -> None:
        self.file.truncate(size)

    def allocate(self, size: int) -> None:
        self.file.allocate(size)

    def sync(self) -> None:
        self.file.sync()

    def lock(self) -> None:
        self.file.lock()

    def lock_range(self, start: int, length: int, *, wait: bool = False) -> bool:
        return self.file.lock_range(start, length, wait=wait)

    def unlock_range(self, start: int, length: int) -> None:
        self.file.unlock_range(start, length)

    def range_locked(self, start: int, length: int) -> bool:
        return self.file.range_locked(start, length)

    def map(self, size: int) -> FileMap | None:
        return None

    def identity(self) -> tuple[int, int]:
        return self.file.identity()

    def close(self) -> None:
        self.file.close()


def test_pager_writes_invalidate_after_the_write(tmp_path: Path) -> None:
    """A read that caches the old bytes while a write is under way (before its pwritev
    lands) must not leave them cached: the Pager invalidates after the write."""
    page = 4096
    data = pattern(64 * page)
    raw = OsVFS().open(str(tmp_path / "f"), create=True)
    raw.pwritev([data], 0)
    file = RacingFile(raw)
    pager = Pager(file, page, use_mmap=False, cache_pages=64)
    assert pager.cache is not None
    new = pattern(3 * page - 100, seed=9)
    file.before_write = lambda: assert_equal(pager.read(5 * page, 4 * page),
                                             data[5 * page : 9 * page])
    pager.write(5 * page + 50, [new[:1000], new[1000:]])
    model = bytearray(data)
    model[5 * page + 50 : 5 * page + 50 + len(new)] = new
    assert bytes(pager.read(5 * page, 4 * page)) == model[5 * page : 9 * page]
    assert bytes(pager.read(0, 64 * page)) == model  # read through
    assert bytes(pager.read(60 * page, 4 * page)) == model[60 * page :]  # cached
    pager.write(64 * page + 10, [b"grown"])  # extends the file: a partial last page
    model += bytes(10) + b"grown"
    assert bytes(pager.read(63 * page, page + 15)) == model[63 * page :]
    pager.write(64 * page + 15, [b"-more"])  # and again, after that page was read
    model += b"-more"
    assert bytes(pager.read(62 * page, 2 * page + 20)) == model[62 * page :]
    with pytest.raises(ValueError):
        pager.read(64 * page, 21)  # past the end
    pager.cache._check()
    pager.close()


def assert_equal(view: memoryview, want: bytes) -> None:
    assert bytes(view) == want


# ---- 2. sequential streams ----------------------------------------------------------------


def sequential(cache: PageCache, file: FakeFile, start: int, size: int,
               count: int) -> list[int]:
    """`count` back-to-back reads of `size` bytes from `start`; the pread calls of each."""
    calls = []
    for i in range(count):
        before = file.calls
        checked_read(cache, file, start + i * size, size, check=i % 64 == 0)
        calls.append(file.calls - before)
    cache._check()
    return calls


def test_sequential_reads_are_read_ahead_and_prefetched_pages_are_hits() -> None:
    cache, file = make_cache(pattern(2000 * PS), PS, 1024)
    calls = sequential(cache, file, 0, 4 * PS, 3)
    stats = cache.stats()
    assert stats.prefetches > 0, "the second read continues the first: read ahead"
    assert cache.stats().pages >= 12 + 4
    before, n = cache.stats(), file.calls
    checked_read(cache, file, 12 * PS, 4 * PS)  # read ahead: served without the file
    assert delta(before, cache.stats())[:2] == (4, 0)
    assert file.calls == n
    calls += sequential(cache, file, 16 * PS, 4 * PS, 150)
    assert calls.count(0) >= 140, calls
    whole = sum(n // PS for _, _, n in file.log)
    assert whole <= 616 + cache.max_window, "no page is read twice"


@pytest.mark.parametrize(("start", "size", "capacity"), [
    pytest.param(0, 4 * PS, 1024, id="4-pages"),
    pytest.param(PS // 2, 4 * PS, 1024, id="4-pages-unaligned"),
    pytest.param(0, 3 * PS + 7, 1024, id="reads-share-a-page"),
    pytest.param(0, PS // 4, 1024, id="4-reads-a-page"),
    pytest.param(0, 32 * PS, 1024, id="db-chunk"),  # 256 KiB of 8 KiB pages
    pytest.param(0, 32 * PS + 16, 1024, id="encrypted-chunk"),  # plus its tag: 33 pages
    pytest.param(0, 32 * PS, 256, id="db-chunk-small-cache"),
    pytest.param(0, 32 * PS + 16, 256, id="encrypted-chunk-small-cache"),
    pytest.param(0, 48 * PS, 1024, id="48-pages"),  # the 256-page window is no multiple
])
def test_first_sequential_read_of_a_long_region_mostly_hits(
        start: int, size: int, capacity: int) -> None:
    """Read-ahead keeps ahead of a stream of reads that fit the cache: on the first read of a
    region of 3000 pages (several times the cache), at least 90% of the pages asked for
    are hits, and few pages are read from the file twice."""
    cache, file = make_cache(pattern(3200 * PS), PS, capacity)
    count = 3000 * PS // size
    sequential(cache, file, start, size, count)
    stats = cache.stats()
    assert stats.pages <= capacity and stats.prefetches > 0
    assert stats.hits / (stats.hits + stats.misses) >= 0.9, stats
    region = (start + count * size) // PS + 1
    whole = sum(n // PS for _, _, n in file.log)
    assert whole <= region * 1.05 + cache.max_window, (whole, region, stats)


def test_a_sequential_reread_of_a_region_that_fits_hits_every_page() -> None:
    cache, file = make_cache(pattern(1000 * PS), PS, 1024)
    sequential(cache, file, 0, 4 * PS, 100)  # 400 pages
    first = cache.stats()
    assert first.hits / (first.hits + first.misses) >= 0.9, first
    sequential(cache, file, 0, 4 * PS, 100)
    again = cache.stats()
    assert delta(first, again)[:2] == (400, 0)
    assert hit_rate(first, again) == 1.0


def test_random_reads_are_not_read_ahead() -> None:
    cache, file = make_cache(pattern(5000 * PS), PS, 256)
    rng = random.Random(3)
    starts = rng.sample(range(0, 5000 - 8, 3), 400)  # never where another read ended
    for page in starts:
        checked_read(cache, file, page * PS + rng.randrange(PS), rng.randrange(1, PS))
    stats = cache.stats()
    assert stats.prefetches == 0 and stats.hits == 0, stats
    assert file.calls == len(starts)


@pytest.mark.parametrize("streams", [2, 4])
def test_interleaved_sequential_streams_are_each_detected(streams: int) -> None:
    """Readers taking turns, each reading its own region sequentially: each one is read
    ahead (hits on most of its reads), as if it were alone."""
    cache, file = make_cache(pattern(streams * 1000 * PS), PS, 2048)
    per: list[list[int]] = [[0, 0] for _ in range(streams)]  # hits, misses
    for i in range(200):
        for s in range(streams):
            before = cache.stats()
            checked_read(cache, file, (s * 1000 + i * 4) * PS, 4 * PS)
            hits, misses, _, _ = delta(before, cache.stats())
            per[s][0] += hits
            per[s][1] += misses
    assert cache.stats().prefetches > 0
    for hits, misses in per:
        assert hits / (hits + misses) >= 0.9, per


# ---- 3. invalidation ----------------------------------------------------------------------


def test_invalidate_drops_the_pages_and_the_next_read_sees_new_bytes() -> None:
    cache, file = make_cache(pattern(100 * PS), PS, 64)
    checked_read(cache, file, 10 * PS, 2 * PS)
    checked_read(cache, file, 30 * PS, 2 * PS)
    assert cache.stats().pages == 4
    new = pattern(PS, seed=7)
    file.write(10 * PS, new)
    calls = file.calls
    assert bytes(cache.read(10 * PS, PS)) != new, "cached: the write is not seen yet"
    assert file.calls == calls
    cache.invalidate(10, 1)
    assert cache.stats().pages == 2  # the entry holding page 10 went, not the other one
    cache._check()
    before = cache.stats()
    assert checked_read(cache, file, 10 * PS, PS) == new
    assert delta(before, cache.stats())[:2] == (0, 1)
    assert file.log[calls] == (PS, 10 * PS, PS)
    before = cache.stats()
    checked_read(cache, file, 30 * PS, 2 * PS)
    assert delta(before, cache.stats())[:2] == (2, 0)
    pages = cache.stats().pages
    cache.invalidate(500, 10)  # nothing cached there
    assert cache.stats().pages == pages


Race = Callable[[PageCache, FakeFile, int, int], None]


def race_invalidate(cache: PageCache, file: FakeFile, first: int, count: int) -> None:
    file.write(first * PS, pattern(count * PS, seed=first + 77))
    cache.invalidate(first, count)


def race_clear(cache: PageCache, file: FakeFile, first: int, count: int) -> None:
    file.write(first * PS, pattern(count * PS, seed=first + 77))
    cache.clear()


@pytest.mark.parametrize("race", [race_invalidate, race_clear])
def test_a_demand_read_racing_an_invalidation_caches_nothing_stale(race: Race) -> None:
    cache, file = make_cache(pattern(1000 * PS), PS, 256)
    old = file.snapshot()

    def hook(length: int, offset: int) -> bool:
        race(cache, file, 20, 4)  # while the read of pages 20..23 is under way
        return True

    file.hook = hook
    got = bytes(cache.read(20 * PS, 4 * PS))
    assert got == old[20 * PS : 24 * PS]  # read before the write: the old bytes
    cache._check()
    assert file.hook is None
    assert checked_read(cache, file, 20 * PS, 4 * PS) == file.data[20 * PS : 24 * PS]


@pytest.mark.parametrize("race", [race_invalidate, race_clear])
def test_a_read_ahead_racing_an_invalidation_caches_nothing_stale(race: Race) -> None:
    cache, file = make_cache(pattern(1000 * PS), PS, 256)
    checked_read(cache, file, 0, 4 * PS)
    ahead: list[int] = []

    def hook(length: int, offset: int) -> bool:
        if offset < 8 * PS:  # the demand reads
            return False
        ahead.append(offset // PS)  # the first pread ahead of the stream
        race(cache, file, offset // PS, length // PS)
        return True

    file.hook = hook
    checked_read(cache, file, 4 * PS, 4 * PS)  # continues the stream: reads ahead
    assert ahead == [8], "the second read of the stream reads ahead from page 8"
    for i in range(2, 10):
        checked_read(cache, file, i * 4 * PS, 4 * PS)  # checks the bytes against the file


def test_clear_empties_the_cache() -> None:
    cache, file = make_cache(pattern(100 * PS), PS, 64)
    sequential(cache, file, 0, 2 * PS, 10)
    assert cache.stats().pages > 0
    cache.clear()
    assert cache.stats().pages == 0
    cache._check()
    calls = file.calls
    checked_read(cache, file, 0, PS)
    assert file.calls == calls + 1


# ---- 4. threads ---------------------------------------------------------------------------


def page_bytes(page: int, version: int) -> bytes:
    return hashlib.blake2b(f"{page}/{version}".encode(), digest_size=PS).digest()


def test_threads_reading_while_pages_are_rewritten_and_invalidated() -> None:
    """Readers (random and sequential) and a writer that rewrites pages, then invalidates
    them (as the Pager does), then publishes their new version. Every page a read returns
    is some version of that page no older than the one published when the read began:
    never a mix, never stale."""
    pages, capacity = 400, 48
    written = [0] * pages  # versions in the file
    published = [0] * pages  # versions written and invalidated
    file = FakeFile(b"".join(page_bytes(p, 0) for p in range(pages)))
    cache = PageCache(file.pread, PS, capacity)
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0] * 4

    def check(offset: int, size: int, got: bytes, floor: list[int]) -> None:
        assert len(got) == min(size, pages * PS - offset), (offset, size, len(got))
        pos = 0
        while pos < len(got):
            page, lo = divmod(offset + pos, PS)
            n = min(PS - lo, len(got) - pos)
            piece = got[pos : pos + n]
            newest = written[page]
            assert any(page_bytes(page, v)[lo : lo + n] == piece
                       for v in range(floor[page - offset // PS], newest + 1)), (
                f"page {page}: not a version since {floor[page - offset // PS]}")
            pos += n

    def reader(index: int) -> None:
        rng = random.Random(index)
        try:
            while not stop.is_set():
                start = rng.randrange(pages * PS)
                if index % 2:  # a sequential run
                    size = rng.choice([PS, 3 * PS + 5, 200, 16 * PS])
                    offsets = range(start, min(pages * PS, start + 40 * size), size)
                else:  # one random read
                    size, offsets = rng.randrange(1, 6 * PS), range(start, start + 1)
                for offset in offsets:
                    first, last = offset // PS, min(pages - 1, (offset + size - 1) // PS)
                    floor = published[first : last + 1]
                    check(offset, size, bytes(cache.read(offset, size)), floor)
                    reads[index] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def writer() -> None:
        rng = random.Random(99)
        try:
            for n in range(5000):
                if stop.is_set():
                    return
                first = rng.randrange(pages)
                count = min(pages - first, rng.randint(1, 3))
                with file.lock:
                    for p in range(first, first + count):
                        written[p] += 1
                        file.data[p * PS : (p + 1) * PS] = page_bytes(p, written[p])
                if n % 100 == 99:
                    cache.clear()
                else:
                    cache.invalidate(first, count)
                for p in range(first, first + count):
                    published[p] = written[p]
                if n % 50 == 0:
                    cache._check()
                time.sleep(0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    cache._check()
    assert min(reads) > 100, reads
    stats = cache.stats()
    assert stats.pages <= capacity and stats.hits > 0 and stats.evictions > 0, stats
    check(0, 10 * PS, bytes(cache.read(0, 10 * PS)), published[:10])


# ---- 5. a database on the pread path ------------------------------------------------------


MiB = 1 << 20


def random_doc(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def compressible_doc(size: int, seed: int) -> bytes:
    """Random text of 16 letters: zstd stores it in about half its size, in chunks of
    varying stored lengths."""
    return random.Random(seed).randbytes(size).translate(bytes(b"abcdefghijklmnop"[i % 16]
                                                               for i in range(256)))


def read_stream(db: streamdb.Database, path: str) -> bytes:
    return b"".join(db.get_stream(path))


def rate(before: streamdb.Stats, after: streamdb.Stats) -> float:
    hits = after.cache_hits - before.cache_hits
    misses = after.cache_misses - before.cache_misses
    assert hits + misses > 0
    return hits / (hits + misses)


TRANSFORMS: dict[str, tuple[Config, Callable[[int, int], bytes]]] = {
    "plain": (Config(use_mmap=False), random_doc),
    "encrypted": (Config(use_mmap=False, encryption_key=bytes(range(32))), random_doc),
    "zstd": (Config(use_mmap=False, compression="zstd"), compressible_doc),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_streaming_a_document_twice_hits_the_cache(tmp_path: Path, transform: str) -> None:
    config, make = TRANSFORMS[transform]
    path = tmp_path / "s.db"
    data = make(8 * MiB, 1)
    with streamdb.open(path, config) as db:
        db.write_document("/big", data)
    with streamdb.open(path, config) as db:  # a fresh open: nothing cached
        cache = cache_of(db)
        start = db.stats()
        assert read_stream(db, "/big") == data
        first = db.stats()
        assert read_stream(db, "/big") == data
        second = db.stats()
        assert first.cache_prefetches > start.cache_prefetches
        assert second.cache_pages <= config.page_cache_size
        assert rate(first, second) >= 0.9, second
        assert rate(start, first) >= 0.9, first  # thanks to read-ahead
        cache._check()


def test_random_range_reads_keep_the_cache_within_its_size(tmp_path: Path) -> None:
    data = random_doc(32 * MiB, 2)
    config = Config(use_mmap=False, page_cache_size=256)
    with streamdb.open(tmp_path / "r.db", config) as db:
        db.write_document("/big", data)
        rng = random.Random(4)
        for _ in range(300):
            offset = rng.randrange(len(data) - 4096)
            assert db.get("/big", offset=offset, length=4096) == data[offset : offset + 4096]
            assert db.stats().cache_pages <= 256
        stats = db.stats()
        assert stats.cache_evictions > 0 and stats.cache_hits > 0, stats
        cache_of(db)._check()


def doc_pages(db: streamdb.Database, path: str) -> set[int]:
    v = version_at(db._engine._pins.current, path, None)
    return {p for start, n in v.extents for p in range(start, start + n)}


def cache_of(db: streamdb.Database) -> PageCache:
    cache = db._engine._pager.cache
    assert cache is not None, "use_mmap=False: the Pager has a cache"
    return cache


def cached_pages(db: streamdb.Database) -> set[int]:
    return set(cache_of(db)._owner)


def test_pages_reused_by_new_versions_are_never_read_stale(tmp_path: Path) -> None:
    """Write, read (caching the pages and the free pages read ahead after them), delete,
    gc and checkpoint, then write other documents into the pages freed: reads return the
    new bytes, never what the cache held."""
    rng = random.Random(6)
    reused = 0
    with streamdb.open(tmp_path / "o.db", Config(use_mmap=False)) as db:
        live: dict[str, bytes] = {}
        for round_ in range(8):
            for i in range(3):
                path = f"/r{round_}/{i}"
                live[path] = random_doc(rng.choice([300_000, 700_000, 1_500_000]),
                                        round_ * 10 + i)
                db.write_document(path, live[path])
            for path, data in live.items():
                assert read_stream(db, path) == data
                assert db.get(path) == data
            for path in rng.sample(sorted(live), 3):
                db.delete(path)
                del live[path]
            db.gc()
            db.checkpoint()
            held = cached_pages(db)
            path = f"/new/{round_}"
            live[path] = random_doc(rng.choice([400_000, 900_000]), 1000 + round_)
            db.write_document(path, live[path])
            reused += len(held & doc_pages(db, path))
            for path, data in live.items():
                assert db.get(path) == data, path
                assert read_stream(db, path) == data, path
            cache_of(db)._check()
    assert reused > 0, "no document went to pages the cache held"


def test_with_mmap_a_sequential_stream_is_advised_ahead_and_nothing_is_cached(
        tmp_path: Path) -> None:
    data = random_doc(8 * MiB, 3)
    with streamdb.open(tmp_path / "m.db") as db:
        db.write_document("/big", data)
    with streamdb.open(tmp_path / "m.db") as db:
        assert db._engine._pager.mapped and db._engine._pager.cache is None
        assert read_stream(db, "/big") == data
        stats = db.stats()
        assert stats.cache_prefetches > 0  # pages advised with MADV_WILLNEED
        assert (stats.cache_hits, stats.cache_misses, stats.cache_pages) == (0, 0, 0)
        assert stats.index_cache_hits + stats.index_cache_misses > 0  # counted apart


# ---- 6. a read-only follower on the pread path (rule F5) ----------------------------------


def test_a_follower_never_reads_pages_it_cached_before_the_writer_reused_them(
        tmp_path: Path) -> None:
    """A writer and a read-only open of the same file, both without mmap. Each round the
    follower refreshes and reads every document (filling its cache, and reading ahead past
    the documents into free pages); the writer then deletes, runs gc() and checkpoint(),
    and writes new documents into free pages, some of which the follower has cached. After
    refresh() the follower reads exactly what the writer wrote."""
    rng = random.Random(8)
    config = Config(use_mmap=False)
    path = tmp_path / "f.db"
    live: dict[str, bytes] = {}
    stale_risk = 0  # pages the writer rewrote while the follower had them cached
    with streamdb.open(path, config) as writer, \
            streamdb.open(path, config, readonly=True) as reader:
        n = 0
        for round_ in range(8):
            reader.refresh()
            assert reader.search("/") == sorted(live)
            for p, data in sorted(live.items()):
                assert read_stream(reader, p) == data, (round_, p)
                assert reader.get(p) == data, (round_, p)
            cache_of(reader)._check()
            held = cached_pages(reader)
            for p in rng.sample(sorted(live), min(len(live), 2)):
                writer.delete(p)
                del live[p]
            writer.gc()
            writer.checkpoint()
            for _ in range(3):
                n += 1
                p = f"/d/{n}"
                live[p] = random_doc(rng.choice([200_000, 600_000, 1_200_000]), n)
                writer.write_document(p, live[p])
                stale_risk += len(held & doc_pages(writer, p))
            if round_ % 2:
                writer.checkpoint()
        reader.refresh()
        for p, data in live.items():
            assert reader.get(p) == data
    assert stale_risk > 0, "the writer never reused a page the follower had cached"
