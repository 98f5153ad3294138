"""An in-memory file layer that simulates a disk with a volatile write cache.

Every file keeps two states: what reads see, and what would survive a power loss. Writes,
truncations and allocations are pending until the file's `sync()`; creations, renames and
removals are pending until `sync_dir()` of their directory. `crash()` returns the disk as a
power loss (or a killed process) would leave it:

- `keep="none"`: every unsynced write is lost;
- `keep="all"`: every write survives (a killed process: the OS cache is not lost);
- `keep="random"`: each unsynced 512-byte sector piece survives or not, at random, so
  sectors of one write may land out of order;
- `tear=k` (with `keep="none"`): every unsynced write survives except the most recent
  one, of which only the first `k` bytes land.

Files keep the rules of `wal.vfs` (V1-V7): `lock()` and the range locks belong to the
handle and conflict between handles of one VFS (every handle lives in this process; a
"killed process" is `crash()`, whose disk holds no lock); `map()` returns None, so readers
of a file use `pread`.

Thread-safe. Used by the tests of this package and of the database built on it.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from wal.vfs import _EOF, Buffer, FileMap, _end

SECTOR = 512


@dataclass
class _Op:
    seq: int
    offset: int  # for a write; for a resize: the new size
    data: bytes | None  # None: resize


@dataclass
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytearray = field(default_factory=bytearray)
    pending: list[_Op] = field(default_factory=list)
    locked_by: int | None = None
    ranges: list[tuple[int, int, int]] = field(default_factory=list)  # start, end, handle

    def conflicts(self, owner: int, start: int, end: int) -> bool:
        return any(o != owner and s < end and start < e for s, e, o in self.ranges)


def _apply(buf: bytearray, op: _Op) -> None:
    if op.data is None:
        if op.offset < len(buf):
            del buf[op.offset :]
        else:
            buf.extend(bytes(op.offset - len(buf)))
        return
    end = op.offset + len(op.data)
    if end > len(buf):
        buf.extend(bytes(end - len(buf)))
    buf[op.offset : end] = op.data


def _dirname(path: str) -> str:
    head, _, _ = path.rpartition("/")
    return head


class MemoryFile:
    """A handle on a `MemoryVFS` file."""

    def __init__(self, vfs: MemoryVFS, path: str, inode: _Inode) -> None:
        self._vfs = vfs
        self.path = path
        self._inode = inode
        self._closed = False
        self._token = next(_HANDLES)  # owns its range locks (not id(): ids are reused)

    def _check(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def pread(self, size: int, offset: int) -> bytes:
        with self._vfs._lock:
            self._check()
            return bytes(self._inode.data[offset : offset + size])

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        data = b"".join(bytes(b) for b in buffers)
        with self._vfs._lock:
            self._check()
            op = _Op(self._vfs._next_seq(), offset, data)
            _apply(self._inode.data, op)
            self._inode.pending.append(op)

    def size(self) -> int:
        with self._vfs._lock:
            self._check()
            return len(self._inode.data)

    def _resize(self, size: int) -> None:
        op = _Op(self._vfs._next_seq(), size, None)
        _apply(self._inode.data, op)
        self._inode.pending.append(op)

    def truncate(self, size: int) -> None:
        with self._vfs._lock:
            self._check()
            self._resize(size)

    def allocate(self, size: int) -> None:
        with self._vfs._lock:
            self._check()
            if size > len(self._inode.data):
                self._resize(size)

    def sync(self) -> None:
        with self._vfs._lock:
            self._check()
            self._inode.durable = bytearray(self._inode.data)
            self._inode.pending.clear()
            self._vfs.syncs += 1

    def identity(self) -> tuple[int, int]:
        return 0, id(self._inode)

    def lock(self) -> None:
        with self._vfs._lock:
            self._check()
            owner = self._inode.locked_by
            if owner is not None and owner != id(self):
                raise BlockingIOError(11, "file is locked")
            self._inode.locked_by = id(self)

    def lock_range(self, start: int, length: int, *, wait: bool = False) -> bool:
        """V4, for this VFS's handles. O(ranges held on the file)."""
        end = _end(start, length)
        with self._vfs._lock:
            self._check()
            while self._inode.conflicts(self._token, start, end):
                if not wait:
                    return False
                self._vfs._released.wait()
                self._check()
            self._inode.ranges.append((start, end, self._token))
            return True

    def unlock_range(self, start: int, length: int) -> None:
        """V4: this handle's locks on those bytes go, split where needed. O(ranges held)."""
        end = _end(start, length)
        with self._vfs._lock:
            self._check()
            self._unlock(start, end)

    def _unlock(self, start: int, end: int) -> None:
        keep = []
        for s, e, o in self._inode.ranges:
            if o != self._token or e <= start or end <= s:
                keep.append((s, e, o))
                continue
            if s < start:
                keep.append((s, start, o))
            if end < e:
                keep.append((end, e, o))
        self._inode.ranges = keep
        self._vfs._released.notify_all()

    def range_locked(self, start: int, length: int) -> bool:
        """V4: another handle's lock on any of those bytes. O(ranges held)."""
        end = _end(start, length)
        with self._vfs._lock:
            self._check()
            return self._inode.conflicts(self._token, start, end)

    def map(self, size: int) -> FileMap | None:
        """None: a map could not see later writes to the simulated file (V7)."""
        self._check()
        return None

    def close(self) -> None:
        with self._vfs._lock:
            if not self._closed:
                if self._inode.locked_by == id(self):
                    self._inode.locked_by = None
                self._unlock(0, _EOF)
            self._closed = True


_HANDLES = itertools.count(1)


class MemoryVFS:
    """A simulated disk. Paths are plain strings; directories exist implicitly."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)  # a range lock was released
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._seq = 0
        self.syncs = 0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def open(self, path: str, *, create: bool = False) -> MemoryFile:
        with self._lock:
            inode = self._names.get(path)
            if inode is None:
                if not create:
                    raise FileNotFoundError(2, "No such file", path)
                inode = self._names[path] = _Inode()
            return MemoryFile(self, path, inode)

    def exists(self, path: str) -> bool:
        with self._lock:
            return path in self._names

    def remove(self, path: str) -> None:
        with self._lock:
            if self._names.pop(path, None) is None:
                raise FileNotFoundError(2, "No such file", path)

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            if src not in self._names:
                raise FileNotFoundError(2, "No such file", src)
            self._names[dst] = self._names.pop(src)

    def listdir(self, path: str) -> list[str]:
        with self._lock:
            return [p.rpartition("/")[2] for p in self._names if _dirname(p) == path]

    def sync_dir(self, path: str) -> None:
        with self._lock:
            for name in [n for n in self._durable_names if _dirname(n) == path]:
                del self._durable_names[name]
            for name, inode in self._names.items():
                if _dirname(name) == path:
                    self._durable_names[name] = inode
            self.syncs += 1

    def identity(self, path: str) -> tuple[int, int] | None:
        """A file's inode (names are never links here), or a directory's name: (0, id) for
        files, (1, hash) for directories that hold something."""
        with self._lock:
            inode = self._names.get(path)
            if inode is not None:
                return 0, id(inode)
            if any(_dirname(name) == path.rstrip("/") for name in self._names):
                return 1, hash(path.rstrip("/"))
            return None

    def read_file(self, path: str) -> bytes:
        """The visible contents of a file (for tests)."""
        with self._lock:
            return bytes(self._names[path].data)

    def write_file(self, path: str, data: bytes) -> None:
        """Replace a file's contents durably (for tests that plant damage)."""
        with self._lock:
            inode = self._names.setdefault(path, _Inode())
            inode.data = bytearray(data)
            inode.durable = bytearray(data)
            inode.pending.clear()
            self._durable_names[path] = inode

    def crash(
        self,
        *,
        keep: Literal["none", "all", "random"] = "none",
        tear: int | None = None,
        rng: random.Random | None = None,
    ) -> MemoryVFS:
        """The disk after a power loss (or, with keep="all", a killed process). O(data)."""
        rng = rng or random.Random(0)
        with self._lock:
            names = self._names if keep == "all" else self._durable_names
            last_write = max(
                (op.seq for inode in names.values() for op in inode.pending if op.data),
                default=None,
            )
            after = MemoryVFS()
            copies: dict[int, _Inode] = {}
            for name, inode in names.items():
                if id(inode) not in copies:
                    buf = bytearray(inode.durable)
                    for op in inode.pending:
                        for piece in self._surviving(op, keep, tear, last_write, rng):
                            _apply(buf, piece)
                    copies[id(inode)] = _Inode(data=buf, durable=bytearray(buf))
                after._names[name] = copies[id(inode)]
            after._durable_names = dict(after._names)
            return after

    @staticmethod
    def _surviving(
        op: _Op,
        keep: str,
        tear: int | None,
        last_write: int | None,
        rng: random.Random,
    ) -> list[_Op]:
        if keep == "all":
            return [op]
        if tear is not None:
            if op.seq == last_write and op.data is not None:
                return [_Op(op.seq, op.offset, op.data[:tear])]
            return [op]
        if keep == "none":
            return []
        # keep == "random": sector-aligned pieces land independently.
        if op.data is None:
            return [op] if rng.random() < 0.5 else []
        pieces = []
        pos = op.offset
        end = op.offset + len(op.data)
        while pos < end:
            stop = min(end, (pos // SECTOR + 1) * SECTOR)
            if rng.random() < 0.5:
                pieces.append(_Op(op.seq, pos, op.data[pos - op.offset : stop - op.offset]))
            pos = stop
        return pieces
