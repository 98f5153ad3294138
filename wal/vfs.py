"""The file layer: every OS call the log and the database above it make goes through here.

`VFS` and `VFile` are the seam. `OsVFS` is the real one; `wal.memvfs.MemoryVFS` simulates a
disk with a volatile cache for crash tests, and `wal.faults.FaultyVFS` fails chosen calls.
Nothing else in `wal` or `streamdb` opens files or touches descriptors, maps or locks
(tests/test_layers.py checks it on the source).

Methods raise `OSError` (with an errno) on failure; callers translate it. The rules every
layer keeps:

V1. Offsets are absolute; a file has no position. `pread` returns fewer bytes only at the
    end of the file; `pwritev` writes everything or raises.
V2. Writes and size changes are durable after the file's `sync()`; creations, renames and
    removals after `VFS.sync_dir()` of their directory.
V3. `lock()` is the whole-file lock of a database's one writer: exclusive, advisory, held by
    the handle until `close()` (flock on real files), BlockingIOError if held elsewhere.
V4. Range locks (`lock_range`, `unlock_range`, `range_locked`) are exclusive advisory locks
    on byte ranges, independent of `lock()`. They belong to the *handle* (one `VFS.open`):
    two handles conflict, in one process or two; a handle never conflicts with itself (a
    range locked twice is held once; unlocking part of a held range splits it). They are
    released by `unlock_range`, by `close()`, and when the process dies, even by SIGKILL.
    A length of 0 means from `start` to the end of the file, however far it grows.
    Real files: Linux open-file-description locks (F_OFD_SETLK); elsewhere POSIX record
    locks, which belong to the process and vanish when *any* of its descriptors of the
    file closes, so `OsFile` keeps a per-process registry (rule V5).
V5. The POSIX-lock fallback: the registry, keyed by (device, inode), records which handle
    holds which range, so handles of one process conflict as on Linux (the kernel never
    makes a process's own locks conflict); and while the process holds any range lock on a
    file, closing a handle of it only releases that handle's ranges and parks its
    descriptor, closed when the last range is released. A lock test there is a
    non-blocking lock attempt released at once (struct flock's layout differs between
    platforms), so a concurrent attempt by another process may fail for that instant.
V6. A forked child must not use its parent's handles; closing them in the child releases
    nothing the parent holds (OFD: the parent's descriptor keeps the description alive;
    POSIX: locks are not inherited; memory: the child's copy is its own).
V7. `map(size)` is a read-only shared map of the file's first `size` bytes that holds no
    lock (a map keeps a duplicate of a descriptor, and a duplicate of the writer's would
    keep its flock after close). It sees later writes to those bytes. Reading a mapped
    byte past the end of a file cut shorter since is a fault (SIGBUS), so a map never
    reaches past the end and is replaced when the file shrinks. None: the layer cannot
    map (it never will), and the caller reads through `pread` instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview

FileMap = mmap.mmap
"""A read-only map of a file's first bytes (`VFile.map`): `memoryview(m)` slices it without
copying, `len(m)` is its length, `m.close()` raises BufferError while views of it live and
`m.closed` tells. A `mmap.mmap`: on Python 3.11 no class written in Python can export a
buffer, so no other type could stand in."""

# os.pwritev accepts at most IOV_MAX buffers per call.
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)

_USE_OFD = hasattr(fcntl, "F_OFD_SETLK")  # read when an OsFile is made; tests switch it off
# struct flock on Linux x86-64 and arm64: l_type, l_whence, l_start, l_len, l_pid (+ padding).
_FLOCK = struct.Struct("hhqqi4x")
_EOF = 1 << 64  # the end of a range of length 0 (to the end of the file)


def _end(start: int, length: int) -> int:
    if start < 0 or length < 0:
        raise ValueError(f"a lock range starts and extends at 0 or more: {start}, {length}")
    return start + length if length else _EOF


def _length(start: int, end: int) -> int:
    return 0 if end == _EOF else end - start


@runtime_checkable
class VFile(Protocol):
    """An open file (a handle). Offsets are absolute; there is no file position."""

    def pread(self, size: int, offset: int) -> bytes:
        """Up to `size` bytes at `offset` (fewer at end of file). One syscall."""
        ...

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        """Write all buffers back to back at `offset`, extending the file if needed."""
        ...

    def size(self) -> int:
        """The file's length in bytes."""
        ...

    def truncate(self, size: int) -> None:
        """Set the length to `size`. Durable after the next `sync()`."""
        ...

    def allocate(self, size: int) -> None:
        """Make the file at least `size` bytes long with its blocks reserved (zero-filled)."""
        ...

    def sync(self) -> None:
        """Make every write and size change so far durable (fdatasync). May block for I/O."""
        ...

    def lock(self) -> None:
        """Take an exclusive advisory lock held until close; BlockingIOError if held elsewhere
        (V3)."""
        ...

    def lock_range(self, start: int, length: int, *, wait: bool = False) -> bool:
        """Take an exclusive lock on `length` bytes at `start` (0: to the end of the file) for
        this handle (V4). Without `wait`: False at once if another handle holds any of it;
        with `wait`: block until it is free, then True. Raises ValueError for a negative
        start or length, OSError (a deadlock the kernel detects: EDEADLK)."""
        ...

    def unlock_range(self, start: int, length: int) -> None:
        """Release this handle's locks on those bytes (none held: nothing happens) (V4)."""
        ...

    def range_locked(self, start: int, length: int) -> bool:
        """Whether another handle, in this process or another, holds a lock on any of those
        bytes; this handle's own locks never count (V4). Changes nothing, except that on
        the POSIX fallback the test briefly takes the free part of the range (V5)."""
        ...

    def map(self, size: int) -> FileMap | None:
        """A read-only map of the first `size` (> 0) bytes, holding no lock (V7), or None
        if this layer cannot map. Raises ValueError if the file is now shorter than
        `size`, OSError."""
        ...

    def identity(self) -> tuple[int, int]:
        """(device, inode) of the open file, as `VFS.identity` gives for a path naming it."""
        ...

    def close(self) -> None:
        """Release the handle and its locks (V4, V6). Idempotent."""
        ...


class VFS(Protocol):
    """A namespace of files."""

    def open(self, path: str, *, create: bool = False) -> VFile:
        """Open read-write; FileNotFoundError if absent and not `create`."""
        ...

    def exists(self, path: str) -> bool: ...

    def remove(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` with `src`. Durable after `sync_dir`."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) in a directory."""
        ...

    def sync_dir(self, path: str) -> None:
        """Make creations, renames and removals in directory `path` durable."""
        ...

    def identity(self, path: str) -> tuple[int, int] | None:
        """(device, inode) of the file or directory `path` names, links followed; None if
        nothing is there. Two paths name the same file exactly when these are equal."""
        ...


def will_need(m: FileMap, start: int, stop: int) -> int:
    """Advise the kernel that bytes [start, stop) of the map are about to be read (read-ahead
    without waiting for it), `start` rounded down to a page. Returns the bytes advised: 0
    when there is nothing to advise, no madvise on this platform, or the map is closed or
    replaced meanwhile (advice only: never raises). O(1); the kernel reads asynchronously."""
    start = start // mmap.PAGESIZE * mmap.PAGESIZE
    advice = getattr(mmap, "MADV_WILLNEED", None)
    if stop <= start or advice is None:
        return 0
    try:
        m.madvise(advice, start, stop - start)
    except (OSError, ValueError):
        return 0
    return stop - start


# ---- the POSIX-lock fallback's registry (V5) ----------------------------------------------


class _ProcessLocks:
    """The range locks this process holds on one file, and descriptors parked until they
    are all released."""

    def __init__(self) -> None:
        self.held: list[tuple[int, int, int]] = []  # (start, end, owner: the handle's fd)
        self.parked: list[int] = []

    def conflicts(self, owner: int, start: int, end: int) -> bool:
        return any(o != owner and s < end and start < e for s, e, o in self.held)


_POSIX: dict[tuple[int, int], _ProcessLocks] = {}
_POSIX_LOCK = threading.Condition()  # guards _POSIX; notified whenever a range is released


def _posix_drop(key: tuple[int, int], entry: _ProcessLocks) -> None:
    """Forget an entry whose last range was released; close its parked descriptors (no
    lock is left for the closes to drop). _POSIX_LOCK held."""
    if not entry.held and _POSIX.get(key) is entry:
        del _POSIX[key]
        for fd in entry.parked:
            os.close(fd)
        entry.parked.clear()


def _posix_release(entry: _ProcessLocks, owner: int, start: int,
                   end: int) -> list[tuple[int, int]]:
    """Take `owner`'s pieces of [start, end) out of the registry, before the kernel unlocks
    them (an unlock that fails then leaves a lock other processes see: it errs on the side
    of holding). Returns the pieces to unlock. _POSIX_LOCK held."""
    keep, release = [], []
    for s, e, o in entry.held:
        if o != owner or e <= start or end <= s:
            keep.append((s, e, o))
            continue
        lo, hi = max(s, start), min(e, end)
        release.append((lo, hi))
        if s < lo:
            keep.append((s, lo, o))
        if hi < e:
            keep.append((hi, e, o))
    entry.held = keep
    return release


class OsFile:
    """A real file, used through pread/pwritev on a descriptor it owns."""

    __slots__ = ("_fd", "_key", "_ofd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._ofd = _USE_OFD  # range locks: OFD (Linux) or the POSIX fallback (V4, V5)
        self._key: tuple[int, int] | None = None  # identity(), once the fallback needs it

    def fileno(self) -> int:
        return self._fd

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        # Buffers are byte-format (len == nbytes): the log normalises payloads on append.
        written = 0
        if len(buffers) <= _IOV_MAX:
            written = os.pwritev(self._fd, buffers, offset)
            if written == sum(map(len, buffers)):
                return  # the common case: one syscall wrote everything
        views = [memoryview(b) for b in buffers if len(b)]
        i = 0  # views[:i] are written
        while i < len(views):
            # Skip what landed; a short write leaves a partial buffer to resume from.
            offset += written
            while written and i < len(views):
                if written >= len(views[i]):
                    written -= len(views[i])
                    i += 1
                else:
                    views[i] = views[i][written:]
                    written = 0
            if i < len(views):
                written = os.pwritev(self._fd, views[i : i + _IOV_MAX], offset)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def allocate(self, size: int) -> None:
        current = self.size()
        if size <= current:
            return
        try:
            os.posix_fallocate(self._fd, current, size - current)
        except OSError as exc:
            # Filesystems without fallocate support: extend with a sparse tail instead.
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(self._fd, size)

    def sync(self) -> None:
        if hasattr(os, "fdatasync"):
            os.fdatasync(self._fd)
        else:  # macOS: fsync does not reach the platter; F_FULLFSYNC does.
            fullfsync = getattr(fcntl, "F_FULLFSYNC", None)
            if fullfsync is not None:
                fcntl.fcntl(self._fd, fullfsync)
            else:
                os.fsync(self._fd)

    def identity(self) -> tuple[int, int]:
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def lock(self) -> None:
        # flock, not lockf: POSIX record locks vanish when *any* descriptor of the file closes.
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    # -- range locks (V4, V5) --------------------------------------------------------------

    def _ofd_fcntl(self, cmd: int, kind: int, start: int, length: int) -> bytes:
        # l_pid must be 0 for OFD locks.
        return fcntl.fcntl(self._fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))

    def _lock_key(self) -> tuple[int, int]:
        if self._key is None:
            self._key = self.identity()
        return self._key

    def lock_range(self, start: int, length: int, *, wait: bool = False) -> bool:
        """V4. OFD: one fcntl. Fallback: one lockf plus O(ranges this process holds on the
        file) for the registry."""
        end = _end(start, length)
        if self._ofd:
            try:
                self._ofd_fcntl(fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK,
                                fcntl.F_WRLCK, start, length)
            except OSError as exc:
                if not wait and exc.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            return True
        key, fd = self._lock_key(), self._fd
        with _POSIX_LOCK:
            while (entry := _POSIX.get(key)) is not None and entry.conflicts(fd, start, end):
                if not wait:
                    return False
                _POSIX_LOCK.wait()  # another handle of this process holds some of it
            entry = _POSIX.setdefault(key, _ProcessLocks())
            # Recorded before the kernel call, so that in-process attempts see it taken and
            # no descriptor of the file closes while a blocking call below waits.
            entry.held.append((start, end, fd))
            if not wait:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
                except OSError as exc:
                    self._forget_range(key, entry, (start, end, fd))
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        return False
                    raise
                return True
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, length, start)  # outside the registry's lock
        except BaseException:
            with _POSIX_LOCK:
                self._forget_range(key, entry, (start, end, fd))
            raise
        return True

    @staticmethod
    def _forget_range(key: tuple[int, int], entry: _ProcessLocks,
                      held: tuple[int, int, int]) -> None:
        """Undo a registry record whose kernel lock was not taken. _POSIX_LOCK held."""
        entry.held.remove(held)
        _posix_drop(key, entry)
        _POSIX_LOCK.notify_all()

    def unlock_range(self, start: int, length: int) -> None:
        """V4. OFD: one fcntl. Fallback: one lockf per held piece of the range."""
        end = _end(start, length)
        if self._ofd:
            self._ofd_fcntl(fcntl.F_OFD_SETLK, fcntl.F_UNLCK, start, length)
            return
        key, fd = self._lock_key(), self._fd
        with _POSIX_LOCK:
            entry = _POSIX.get(key)
            if entry is None:
                return
            release = _posix_release(entry, fd, start, end)
            try:
                for lo, hi in release:
                    fcntl.lockf(fd, fcntl.LOCK_UN, _length(lo, hi), lo)
            finally:
                _posix_drop(key, entry)
                _POSIX_LOCK.notify_all()

    def range_locked(self, start: int, length: int) -> bool:
        """V4. OFD: one fcntl (F_OFD_GETLK). Fallback: a lock attempt and release on each
        piece of the range this handle does not hold."""
        end = _end(start, length)
        if self._ofd:
            reply = self._ofd_fcntl(fcntl.F_OFD_GETLK, fcntl.F_WRLCK, start, length)
            return bool(_FLOCK.unpack(reply)[0] != fcntl.F_UNLCK)
        key, fd = self._lock_key(), self._fd
        with _POSIX_LOCK:
            entry = _POSIX.get(key)
            if entry is not None and entry.conflicts(fd, start, end):
                return True
            # Test only the gaps between our own ranges: releasing a test lock on bytes we
            # hold would release them.
            gaps, at = [], start
            own = sorted((s, e) for s, e, o in entry.held if o == fd) if entry else []
            for s, e in own:
                if e <= at or end <= s:
                    continue
                if at < s:
                    gaps.append((at, s))
                at = max(at, e)
            if at < end:
                gaps.append((at, end))
            for lo, hi in gaps:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _length(lo, hi), lo)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        return True
                    raise
                fcntl.lockf(fd, fcntl.LOCK_UN, _length(lo, hi), lo)
            return False

    # -- map (V7) ----------------------------------------------------------------------------

    def map(self, size: int) -> FileMap:
        """V7: mmap keeps a duplicate of the descriptor it maps, and a duplicate shares the
        writer's flock, so the map is made from a separate read-only open of the same file
        (Linux: /proc/self/fd), whose duplicate holds no lock. Without /proc the descriptor
        itself is mapped: a view that outlives close() then keeps the flock until it dies.
        Do not map a file you range-lock on the POSIX fallback: the map's duplicate closing
        would drop the process's record locks. Raises ValueError past the end, OSError."""
        try:
            private = os.open(f"/proc/self/fd/{self._fd}",
                              os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # no /proc: map the descriptor itself
            return mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        try:
            return mmap.mmap(private, size, access=mmap.ACCESS_READ)
        finally:
            os.close(private)

    def close(self) -> None:
        """Close the descriptor: the kernel releases its flock and range locks (V4). On the
        POSIX fallback, while this process holds other range locks on the file, only this
        handle's ranges are released and the descriptor is parked (V5)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        if self._ofd:
            os.close(fd)
            return
        with _POSIX_LOCK:  # no lock may be taken between the check and the close
            key, entry = self._key, None
            if _POSIX:
                with contextlib.suppress(OSError):  # no identity: it can hold nothing
                    key = key if key is not None else _key_of_fd(fd)
                entry = _POSIX.get(key) if key is not None else None
            if key is None or entry is None:
                os.close(fd)
                return
            try:
                for lo, hi in _posix_release(entry, fd, 0, _EOF):
                    fcntl.lockf(fd, fcntl.LOCK_UN, _length(lo, hi), lo)
            finally:
                entry.parked.append(fd)  # closed by _posix_drop, now or later
                _posix_drop(key, entry)
                _POSIX_LOCK.notify_all()


def _key_of_fd(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _reuse_parked(path: str) -> OsFile | None:
    """On the POSIX fallback, a descriptor parked by a closed handle of the file `path`
    names, as a new handle: reusing parked descriptors bounds them by the most handles
    ever open at once, however often handles open and close while the process holds locks
    on the file (V5). One stat. None if there is none."""
    with _POSIX_LOCK:
        if not _POSIX:
            return None
        try:
            key = _key_of_path(path)
        except FileNotFoundError:
            return None
        entry = _POSIX.get(key)
        if entry is None or not entry.parked:
            return None
        file = OsFile(path, entry.parked.pop())
        file._key = key
        return file


def _key_of_path(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class OsVFS:
    """The operating system's files, created with `mode` (less the umask)."""

    def __init__(self, mode: int = 0o666) -> None:
        self.mode = mode

    def open(self, path: str, *, create: bool = False) -> OsFile:
        if not _USE_OFD and (parked := _reuse_parked(path)) is not None:
            return parked
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
        return OsFile(path, os.open(path, flags, self.mode))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def remove(self, path: str) -> None:
        os.remove(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path or ".")

    def identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path or ".")
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def sync_dir(self, path: str) -> None:
        fd = os.open(path or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
