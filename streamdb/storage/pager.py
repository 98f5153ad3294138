"""The pager: page-granular I/O on the database file, through a `wal.vfs` file.

Reads go through a read-only memory map when mmap is enabled and the file layer can map the
file (`VFile.map`, wal.vfs rule V7), so a document read can be a zero-copy `memoryview`;
otherwise through `pread`, served by the LRU page cache (`pagecache.py`) when there are
`cache_pages`. Which path reads take is decided when the pager is made: an empty file, or a
layer whose `map` returns None (the in-memory ones), is read through `pread` for good.
Sequential reads are read ahead: by the cache, or on the map with `wal.vfs.will_need`
(madvise). Writes always use `pwritev` (never the map). The map is replaced, not resized,
when the file grows: a map with live exported views cannot be closed (`BufferError`), so
superseded maps are kept until their views are gone. The pager cuts the file only under its
remap lock, dropping a map that reaches past the new end (a read there would fault).

Threads: any number may read while one writes. A remap happens under a lock; a reader that
picked up a map another thread has just retired and closed retries with the current one.

Errors: OSError from the file layer propagates; the database translates it.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence

from streamdb.errors import ClosedError
from streamdb.storage.pagecache import STREAMS, CacheStats, PageCache
from wal.vfs import Buffer, FileMap, VFile, will_need

ADVISE_MAX = 4 << 20  # bytes advised ahead of a sequential reader of the map, at most


class _Advisor:
    """Read-ahead on the map: a read that continues one of the last few sequential reads
    advises the kernel (MADV_WILLNEED) of the bytes after it, in a window that doubles up to
    ADVISE_MAX, once per window."""

    def __init__(self) -> None:
        self._streams: dict[int, tuple[int, int]] = {}  # end -> (window, advised until)
        self._lock = threading.Lock()
        self.advised = 0  # bytes

    def after_read(self, m: FileMap, offset: int, end: int) -> None:
        with self._lock:
            stream = self._streams.pop(offset, None)
            if len(self._streams) >= STREAMS:
                self._streams.pop(next(iter(self._streams)))
            if stream is None:  # not (yet) sequential: remember where it ended
                self._streams[end] = (0, 0)
                return
            window, until = stream
            window = min(ADVISE_MAX, max(window * 2, end - offset))
            if until >= end + window // 2:  # advised far enough ahead already
                self._streams[end] = (window, until)
                return
            start = max(end, until)
            stop = min(len(m), end + window)
            self._streams[end] = (window, stop)
        self.advised += will_need(m, start, stop)  # advice only: 0 on a closed map


class Pager:
    def __init__(self, file: VFile, page_size: int, *, use_mmap: bool,
                 cache_pages: int = 0) -> None:
        self.file = file
        self.page_size = page_size
        self.size = file.size()
        # The first map, made now: whether the layer maps at all decides the read path.
        self._map: FileMap | None = file.map(self.size) if use_mmap and self.size else None
        self._mapped = self._map is not None
        self._retired: list[FileMap] = []
        self._remap = threading.Lock()
        self._closed = False
        self.cache = (PageCache(lambda n, off: file.pread(n, off), page_size, cache_pages)
                      if not self._mapped and cache_pages > 0 else None)
        self._advisor = _Advisor() if self._mapped else None

    @property
    def mapped(self) -> bool:
        """Reads are views of a map (fixed when the pager is made)."""
        return self._mapped

    def _ensure_map(self, end: int) -> FileMap:
        """A map covering [0, end). O(1) unless the file grew past the current map."""
        current = self._map
        if current is not None and len(current) >= end:
            return current
        with self._remap:
            current = self._map
            if current is not None and len(current) >= end:
                return current
            if self._closed:
                raise ClosedError("the database file is closed")
            # The file as it is now: it grows, and a checkpoint may cut free pages off its
            # end (a map past the end would fault on them).
            for _ in range(8):
                self.size = self.file.size()
                if end > self.size or not self.size:  # nothing to map in an empty file
                    raise ValueError("read beyond the end of the file")
                try:
                    fresh = self.file.map(self.size)
                except ValueError:  # cut shorter between the size and the map: look again
                    continue
                if fresh is None:  # it mapped the file before (wal.vfs V7): a broken layer
                    raise OSError(errno.ENODEV, "the file layer no longer maps the file")
                break
            else:
                raise ValueError("the file keeps shrinking under the map")
            self._map = fresh
            if current is not None:
                self._retire(current)
            return fresh

    def _retire(self, old: FileMap) -> None:
        self._retired.append(old)
        still = []
        for m in self._retired:
            try:
                m.close()
            except BufferError:  # a view handed out earlier still points into it
                still.append(m)
        self._retired = still

    def read(self, offset: int, length: int) -> memoryview:
        """`length` bytes at `offset`: a view of the map (zero-copy) or of a fresh buffer.

        Raises ValueError when the range is past the end of the file, ClosedError after
        `close()`.
        """
        end = offset + length
        if self._mapped:
            while True:
                m = self._ensure_map(end)
                if not m.closed:
                    try:
                        view = memoryview(m)[offset:end]
                    except ValueError:  # retired and closed by another thread just now
                        if not m.closed:
                            raise
                    else:
                        if length >= self.page_size and self._advisor is not None:
                            self._advisor.after_read(m, offset, end)
                        return view
                if self._map is m:
                    raise ClosedError("the database file is closed")
        data = (self.cache.read(offset, length) if self.cache is not None
                else memoryview(self.file.pread(length, offset)))
        if len(data) != length:
            raise ValueError("read beyond the end of the file")
        return data

    def mapping(self, offset: int, length: int) -> FileMap | None:
        """The memory map that covers [offset, offset+length) now, for a caller that keeps
        it to slice later (a cached location); None without a map. The map may be retired
        (closed once no view of it lives): slicing it then raises ValueError, and the caller
        asks again. Raises ValueError past the end of the file, ClosedError."""
        if not self._mapped:
            return None
        return self._ensure_map(offset + length)

    def read_page(self, page_no: int) -> memoryview:
        return self.read(page_no * self.page_size, self.page_size)

    def write(self, offset: int, buffers: Sequence[Buffer]) -> None:
        """Write buffers back to back at `offset` (one pwritev). Extends the file."""
        written = sum(len(b) for b in buffers)
        try:
            self.file.pwritev(buffers, offset)
        finally:  # after the write: a read that raced it does not cache what it read
            if self.cache is not None and written:
                first = offset // self.page_size
                self.cache.invalidate(first, (offset + written - 1) // self.page_size - first + 1)
        self.size = max(self.size, offset + written)

    def write_pages(self, page_no: int, data: Buffer) -> None:
        self.write(page_no * self.page_size, [data])

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes: the pages past it are free, nothing reads them. The
        map is replaced by a shorter one (the old one stays while views into it live), so a
        read past the new end raises ValueError instead of faulting. Not synced: a crash may
        leave the file longer, which is harmless. Raises OSError."""
        with self._remap:
            old_size = self.size
            self.file.truncate(size)
            self.size = size
            self._drop_map_past(size)
        if self.cache is not None and old_size > size:
            first = size // self.page_size
            self.cache.invalidate(first, -(-old_size // self.page_size) - first)

    def notice_shrink(self) -> None:
        """Another process may have cut the file (a writer's checkpoint): map no further
        than it now ends. One fstat. Raises OSError."""
        size = self.file.size()
        if size < self.size:
            with self._remap:
                self.size = size
                self._drop_map_past(size)

    def _drop_map_past(self, size: int) -> None:
        """Retire the map if it reaches past `size`; the next read maps anew. Lock held."""
        current = self._map
        if current is not None and len(current) > size:
            self._map = None
            self._retire(current)

    def cache_stats(self) -> CacheStats:
        """Page cache counters; on the map, `prefetches` counts pages advised ahead."""
        if self.cache is not None:
            return self.cache.stats()
        advised = self._advisor.advised // self.page_size if self._advisor is not None else 0
        return CacheStats(0, 0, 0, advised, 0, 0)

    def forget_cached(self) -> None:
        """Drop every cached page: another process may have rewritten free pages."""
        if self.cache is not None:
            self.cache.clear()

    def sync(self) -> None:
        """fdatasync the database file. Blocks for I/O."""
        self.file.sync()

    def close(self) -> None:
        """Drop the maps (maps with live views stay until those views die) and the file."""
        with self._remap:
            if self._map is not None:
                self._retire(self._map)
                self._map = None
            self._closed = True
        self.file.close()
