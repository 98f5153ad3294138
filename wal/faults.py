"""A fault-injecting file layer for tests: fail the Nth file call with a chosen errno.

`FaultyVFS(inner, fail_at=N, errno=EIO)` counts every call on the VFS and on the files it
opened (`calls`); call number `fail_at` (1-based) raises `OSError(errno)` without reaching
`inner`, and so does every later call when `sticky=True`. With `fail_at=None` it only counts,
which is how a test learns how many calls a scenario makes before sweeping N over them.

Every method of `wal.vfs.VFS` and `VFile` counts, under its own name (`only` selects names),
except `VFile.close()`, which never fails so that a test can always tidy up: the range
locks (`lock_range`, `unlock_range`, `range_locked`) and `map` too. A failed call never
reaches `inner`: a failed `unlock_range` leaves the range held until the handle closes.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence

from wal.vfs import VFS, Buffer, FileMap, VFile


class FaultyVFS:
    def __init__(
        self,
        inner: VFS,
        *,
        fail_at: int | None = None,
        errno: int = _errno.EIO,
        sticky: bool = False,
        only: frozenset[str] | None = None,
    ) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.errno = errno
        self.sticky = sticky
        self.only = only  # count only these method names (None: all)
        self.calls = 0
        self.failed: list[str] = []

    def _tick(self, name: str) -> None:
        if self.only is not None and name not in self.only:
            return
        self.calls += 1
        if self.fail_at is not None and (
            self.calls == self.fail_at or (self.sticky and self.calls > self.fail_at)
        ):
            self.failed.append(name)
            raise OSError(self.errno, f"injected {os.strerror(self.errno)} in {name}")

    def open(self, path: str, *, create: bool = False) -> VFile:
        self._tick("open")
        return _FaultyFile(self, self.inner.open(path, create=create))

    def exists(self, path: str) -> bool:
        self._tick("exists")
        return self.inner.exists(path)

    def remove(self, path: str) -> None:
        self._tick("remove")
        self.inner.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self._tick("rename")
        self.inner.rename(src, dst)

    def listdir(self, path: str) -> list[str]:
        self._tick("listdir")
        return self.inner.listdir(path)

    def sync_dir(self, path: str) -> None:
        self._tick("sync_dir")
        self.inner.sync_dir(path)

    def identity(self, path: str) -> tuple[int, int] | None:
        self._tick("identity")
        return self.inner.identity(path)


class _FaultyFile:
    def __init__(self, vfs: FaultyVFS, inner: VFile) -> None:
        self._vfs = vfs
        self._inner = inner

    def pread(self, size: int, offset: int) -> bytes:
        self._vfs._tick("pread")
        return self._inner.pread(size, offset)

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        self._vfs._tick("pwritev")
        self._inner.pwritev(buffers, offset)

    def size(self) -> int:
        self._vfs._tick("size")
        return self._inner.size()

    def truncate(self, size: int) -> None:
        self._vfs._tick("truncate")
        self._inner.truncate(size)

    def allocate(self, size: int) -> None:
        self._vfs._tick("allocate")
        self._inner.allocate(size)

    def sync(self) -> None:
        self._vfs._tick("sync")
        self._inner.sync()

    def lock(self) -> None:
        self._vfs._tick("lock")
        self._inner.lock()

    def lock_range(self, start: int, length: int, *, wait: bool = False) -> bool:
        self._vfs._tick("lock_range")
        return self._inner.lock_range(start, length, wait=wait)

    def unlock_range(self, start: int, length: int) -> None:
        self._vfs._tick("unlock_range")
        self._inner.unlock_range(start, length)

    def range_locked(self, start: int, length: int) -> bool:
        self._vfs._tick("range_locked")
        return self._inner.range_locked(start, length)

    def map(self, size: int) -> FileMap | None:
        self._vfs._tick("map")
        return self._inner.map(size)

    def identity(self) -> tuple[int, int]:
        self._vfs._tick("identity")
        return self._inner.identity()

    def close(self) -> None:
        # Closing never fails: a test must be able to tidy up after any injected fault.
        self._inner.close()
