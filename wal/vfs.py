"""The file layer: every OS call the log (and the database above it) makes goes through here.

`VFS` and `VFile` are the seam. `OsVFS` is the real one; `wal.memvfs.MemoryVFS` simulates a
disk with a volatile cache for crash tests, and `wal.faults.FaultyVFS` fails chosen calls.

Methods raise `OSError` (with an errno) on failure; callers translate it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview

# os.pwritev accepts at most IOV_MAX buffers per call.
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


@runtime_checkable
class VFile(Protocol):
    """An open file. Offsets are absolute; there is no file position."""

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
        """Take an exclusive advisory lock held until close; BlockingIOError if held elsewhere."""
        ...

    def identity(self) -> tuple[int, int]:
        """(device, inode) of the open file, as `VFS.identity` gives for a path naming it."""
        ...

    def close(self) -> None:
        """Release the descriptor (and the lock). Idempotent."""
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


class OsFile:
    """A real file, used through pread/pwritev on a descriptor it owns."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

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

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class OsVFS:
    """The operating system's files."""

    def open(self, path: str, *, create: bool = False) -> OsFile:
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
        return OsFile(path, os.open(path, flags, 0o666))

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
