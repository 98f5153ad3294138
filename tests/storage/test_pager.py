"""The pager's map goes through the file layer (`VFile.map`, wal.vfs rule V7): which layers
map, when the map is made and replaced, and what a failing map does."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from streamdb.storage.pager import Pager
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS
from wal.vfs import OsVFS

PAGE = 4096


def pages(n: int, fill: int = 1) -> bytes:
    return bytes([fill]) * (n * PAGE)


def test_an_os_file_is_mapped_through_the_layer_and_remapped_as_it_grows(
    tmp_path: Path,
) -> None:
    counting = FaultyVFS(OsVFS(), only=frozenset({"map", "pread"}))
    file = counting.open(str(tmp_path / "f"), create=True)
    file.pwritev([pages(4)], 0)
    pager = Pager(file, PAGE, use_mmap=True, cache_pages=64)
    assert pager.mapped and pager.cache is None and counting.calls == 1  # mapped at once
    view = pager.read_page(3)
    assert bytes(view) == pages(1) and counting.calls == 1  # a view of the map: no pread
    pager.write_pages(4, pages(2, fill=2))
    assert bytes(pager.read_page(5)) == pages(1, fill=2)
    assert counting.calls == 2  # the file grew: one new map, and still no pread
    assert bytes(view) == pages(1)  # the old map lives on while its view does
    pager.truncate(3 * PAGE)
    with pytest.raises(ValueError):
        pager.read_page(3)  # past the new end: refused, not a fault
    del view
    pager.close()


@pytest.mark.parametrize("vfs", [MemoryVFS(), FaultyVFS(MemoryVFS())], ids=["memory", "faulty"])
def test_a_layer_that_cannot_map_is_read_through_the_cache(vfs: MemoryVFS | FaultyVFS) -> None:
    file = vfs.open("/f", create=True)
    file.pwritev([pages(4)], 0)
    pager = Pager(file, PAGE, use_mmap=True, cache_pages=64)
    assert not pager.mapped and pager.cache is not None
    assert bytes(pager.read(PAGE, 2 * PAGE)) == pages(2)
    pager.close()


def test_an_empty_file_is_not_mapped(tmp_path: Path) -> None:
    file = OsVFS().open(str(tmp_path / "f"), create=True)
    pager = Pager(file, PAGE, use_mmap=True)
    assert not pager.mapped
    pager.write_pages(0, pages(1))
    assert bytes(pager.read_page(0)) == pages(1)  # through pread
    pager.close()


def test_a_failing_map_raises_the_layers_error(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    OsVFS().open(path, create=True).pwritev([pages(2)], 0)
    for n in (1, 2):  # the map made when the pager is, then the one after growth
        faulty = FaultyVFS(OsVFS(), fail_at=n, errno=errno.ENOMEM, only=frozenset({"map"}))
        file = faulty.open(path)
        if n == 1:
            with pytest.raises(OSError) as info:
                Pager(file, PAGE, use_mmap=True)
            file.close()
        else:
            pager = Pager(file, PAGE, use_mmap=True)
            pager.write_pages(2, pages(1))
            with pytest.raises(OSError) as info:
                pager.read_page(2)
            assert bytes(pager.read_page(1)) == pages(1)  # the old map still serves
            pager.close()
        assert info.value.errno == errno.ENOMEM and faulty.failed == ["map"]
