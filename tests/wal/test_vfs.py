"""The file layer's range locks and maps (wal.vfs rules V4-V7) on every layer: the OS's
files with OFD locks ("os"), the same with the POSIX-lock fallback and its per-process
registry ("posix"), and the in-memory layer ("memory"); and the fault injector's view of
them."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import wal.vfs
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS
from wal.vfs import VFS, OsVFS, VFile, will_need


class Layer:
    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.vfs: VFS = MemoryVFS() if kind == "memory" else OsVFS()
        self.path = "/t/f" if kind == "memory" else str(tmp_path / "f")
        self.handles: list[VFile] = []

    def open(self) -> VFile:
        handle = self.vfs.open(self.path, create=True)
        self.handles.append(handle)
        return handle


def _layer(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    if kind == "posix":
        monkeypatch.setattr(wal.vfs, "_USE_OFD", False)
    made = Layer(kind, tmp_path)
    yield made
    for handle in made.handles:
        handle.close()
    assert not wal.vfs._POSIX, "a range is left in the POSIX registry after every close"


@pytest.fixture(params=["os", "posix", "memory"])
def layer(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    yield from _layer(request.param, tmp_path, monkeypatch)


@pytest.fixture(params=["os", "posix"])
def os_layer(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    """The layers a child process shares with its parent (an in-memory one is not)."""
    yield from _layer(request.param, tmp_path, monkeypatch)


def ofd_holder(fd: int, start: int, length: int) -> tuple[int, int, int, int, int]:
    """What F_OFD_GETLK says about a range, through a descriptor of our own: OFD locks
    conflict with every other description's locks, and with POSIX record locks."""
    query = wal.vfs._FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
    held: tuple[int, int, int, int, int] = wal.vfs._FLOCK.unpack(
        fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query))
    return held


def test_flock_struct_matches_the_kernel(tmp_path: Path) -> None:
    assert platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")
    assert wal.vfs._FLOCK.size == 32  # sizeof(struct flock) on 64-bit Linux
    f = OsVFS().open(str(tmp_path / "f"), create=True)
    probe = os.open(tmp_path / "f", os.O_RDWR)
    try:
        assert f.lock_range(128, 64)
        # Every field lands where the kernel put it: the holder's type and range, l_pid -1.
        assert ofd_holder(probe, 0, 0) == (fcntl.F_WRLCK, os.SEEK_SET, 128, 64, -1)
    finally:
        os.close(probe)
        f.close()


def test_range_locks_between_handles(layer: Layer) -> None:
    a, b = layer.open(), layer.open()
    assert a.lock_range(0, 64)
    assert a.lock_range(0, 64)  # its own: held once
    assert not b.lock_range(0, 64) and not b.lock_range(32, 64)  # any overlap conflicts
    assert b.lock_range(64, 64)  # adjacent: free
    assert b.range_locked(0, 1) and b.range_locked(63, 10) and a.range_locked(100, 1)
    assert not a.range_locked(0, 64) and not b.range_locked(64, 64)  # own locks never count
    assert not a.range_locked(128, 64) and not a.range_locked(0, 64)
    a.unlock_range(0, 64)
    assert not b.range_locked(0, 64)
    assert b.lock_range(0, 64)
    a.unlock_range(500, 10)  # holds nothing there: nothing happens
    b.close()
    assert a.lock_range(0, 128)  # a handle's close releases its locks
    with pytest.raises(ValueError):
        a.lock_range(-1, 10)
    with pytest.raises(ValueError):
        a.range_locked(0, -1)


def test_length_zero_reaches_past_the_end_and_unlock_splits(layer: Layer) -> None:
    a, b = layer.open(), layer.open()
    assert a.lock_range(1000, 0)  # from 1000 on, however far the file grows
    assert b.range_locked(1 << 40, 1) and not b.lock_range(5000, 10)
    assert not b.range_locked(0, 1000) and b.range_locked(0, 0)
    a.unlock_range(2000, 100)  # splits a's lock in two
    assert b.lock_range(2000, 100)
    assert not b.lock_range(1999, 1) and not b.lock_range(2100, 1)
    b.unlock_range(2000, 100)
    a.unlock_range(0, 0)  # everything a holds
    assert b.lock_range(0, 0)
    assert a.range_locked(12345, 1)


def test_wait_blocks_until_the_holder_releases(layer: Layer) -> None:
    a, b = layer.open(), layer.open()
    assert a.lock_range(0, 64)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(b.lock_range(0, 64, wait=True)))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and not got  # still waiting
    a.unlock_range(0, 64)
    waiter.join(10)
    assert got == [True] and a.range_locked(0, 64)
    assert b.lock_range(0, 64, wait=True)  # its own: at once


def test_a_lock_survives_other_handles_closing(layer: Layer) -> None:
    """V4/V5: on the POSIX fallback the registry parks the closed handles' descriptors
    while the process holds a lock on the file, and reuses them, so they stay few."""
    a = layer.open()
    assert a.lock_range(64, 64)
    for _ in range(50):
        other = layer.vfs.open(layer.path)
        other.pread(1, 0)
        other.close()
    checker = layer.open()
    assert checker.range_locked(64, 64)
    if layer.kind == "posix":
        (entry,) = wal.vfs._POSIX.values()
        assert len(entry.parked) <= 1, entry.parked  # reused, not piled up
    if layer.kind != "memory":
        probe = os.open(layer.path, os.O_RDWR)  # kept open until a closes
        try:
            assert ofd_holder(probe, 64, 64)[0] == fcntl.F_WRLCK
            a.close()
            checker.close()
            assert ofd_holder(probe, 64, 64)[0] == fcntl.F_UNLCK
            assert not wal.vfs._POSIX
        finally:
            os.close(probe)


def test_a_forked_child_closing_its_handles_releases_nothing(os_layer: Layer) -> None:
    """V6: the parent's lock outlives the child's close of its copy of the handle."""
    layer = os_layer
    a = layer.open()
    assert a.lock_range(0, 64)
    pid = os.fork()
    if pid == 0:  # the child: close and leave, whatever happens
        try:
            a.close()
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    probe = os.open(layer.path, os.O_RDWR)
    try:
        assert ofd_holder(probe, 0, 64)[0] == fcntl.F_WRLCK
    finally:
        os.close(probe)
    assert layer.open().range_locked(0, 64)


def test_memory_locks_belong_to_the_inode_and_do_not_survive_a_crash() -> None:
    mem = MemoryVFS()
    a = mem.open("/d/f", create=True)
    assert a.lock_range(0, 10)
    mem.sync_dir("/d")
    mem.rename("/d/f", "/d/g")
    assert mem.open("/d/g").range_locked(0, 10)  # the same file under its new name
    after = mem.crash(keep="all")  # as a killed process leaves it: its locks are gone
    assert not after.open("/d/g").range_locked(0, 10)
    a.close()
    with pytest.raises(ValueError):
        a.lock_range(0, 1)  # closed


# ---- maps (V7) ------------------------------------------------------------------------------


def test_a_map_sees_later_writes_and_holds_no_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    f = OsVFS().open(path, create=True)
    f.pwritev([b"a" * 8192], 0)
    f.lock()
    m = f.map(8192)
    assert m is not None and len(m) == 8192 and not m.closed
    view = memoryview(m)[4096:4100]
    f.pwritev([b"bcde"], 4096)
    assert bytes(view) == b"bcde"  # shared: the map sees the write
    with pytest.raises(ValueError):
        f.map(1 << 20)  # past the end
    f.close()
    # The view keeps the map alive, and the map holds no flock: the file can be locked.
    again = OsVFS().open(path)
    again.lock()
    again.close()
    with pytest.raises(BufferError):
        m.close()
    view.release()
    m.close()
    assert m.closed


def test_will_need_advises_whole_pages_and_never_raises(tmp_path: Path) -> None:
    f = OsVFS().open(str(tmp_path / "f"), create=True)
    f.pwritev([bytes(64 << 10)], 0)
    m = f.map(64 << 10)
    f.close()
    assert m is not None
    page = mmap.PAGESIZE
    assert will_need(m, page + 10, 3 * page) == 2 * page  # from the page's start
    assert will_need(m, 2 * page, 2 * page) == 0
    m.close()
    assert will_need(m, 0, page) == 0  # a closed map: advice only


def test_the_memory_layer_does_not_map() -> None:
    mem = MemoryVFS()
    f = mem.open("/f", create=True)
    f.pwritev([b"x" * 100], 0)
    assert f.map(100) is None
    f.close()


# ---- the fault injector -------------------------------------------------------------------


def test_faulty_vfs_counts_and_fails_locks_and_maps(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    counting = FaultyVFS(OsVFS(), only=frozenset({"lock_range", "unlock_range",
                                                   "range_locked", "map"}))
    f = counting.open(path, create=True)
    f.pwritev([bytes(4096)], 0)
    assert f.lock_range(0, 1) and not f.range_locked(0, 1)
    f.unlock_range(0, 1)
    m = f.map(4096)
    assert m is not None
    m.close()
    assert counting.calls == 4
    f.close()
    for name in ("lock_range", "unlock_range", "range_locked", "map"):
        faulty = FaultyVFS(OsVFS(), fail_at=1, errno=errno.EIO, only=frozenset({name}))
        g = faulty.open(path)
        if name == "unlock_range":
            assert g.lock_range(0, 1)
        with pytest.raises(OSError) as info:
            if name == "map":
                g.map(4096)
            else:
                getattr(g, name)(0, 1)
        assert info.value.errno == errno.EIO and faulty.failed == [name]
        other = OsVFS().open(path)
        # A failed call never reached the file: a failed unlock leaves the lock held
        # until the handle closes; a failed lock took nothing.
        assert other.range_locked(0, 1) == (name == "unlock_range")
        g.close()
        assert not other.range_locked(0, 1)
        other.close()
