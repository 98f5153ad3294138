"""The page cache of the `pread` path (`Config(use_mmap=False)`): an LRU of page runs.

An entry is one `pread` of whole pages: the pages a read asked for, or a run of pages read
ahead of a sequential stream, as long as that stream's reads. Entries never overlap, are
evicted whole, least recently used first, and are counted per page: the cache holds at most
`capacity` pages. A read that one entry covers is a slice of it (no copy).

Read-ahead: the cache remembers where the last few streams ended. A read that starts at one
of those pages continues that stream: its window (the pages to read ahead) doubles, from the
read's own length up to `max_window`, and the pages after the read are fetched ahead when
they are not cached yet. Counters: `hits` (pages found, read ahead or not), `misses` (pages
read on demand), `prefetches` (pages read ahead), `evictions` (pages evicted).

Consistency: `invalidate(first, count)` drops cached pages that were written, and
`clear()` everything (a reader process moving to a newer state). A read that raced either
does not insert what it read (an epoch counter tells).

Threads: one lock guards the structure; file reads happen outside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

STREAMS = 16  # sequential streams remembered


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    prefetches: int
    pages: int
    capacity: int


class PageCache:
    def __init__(self, pread: Callable[[int, int], bytes], page_size: int, capacity: int,
                 max_window: int = 256) -> None:
        self._pread = pread  # (length, offset) -> bytes, shorter at the end of the file
        self.page_size = page_size
        self.capacity = capacity
        self.max_window = max(1, min(max_window, capacity // 4))
        self._entries: OrderedDict[int, bytes] = OrderedDict()  # first page -> pages
        self._owner: dict[int, int] = {}  # page -> first page of the entry holding it
        self._pages = 0
        self._streams: OrderedDict[int, int] = OrderedDict()  # next page -> window
        self._epoch = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.prefetches = 0

    def read(self, offset: int, length: int) -> memoryview:
        """`length` bytes at `offset` (shorter only past the end of the file). O(pages)."""
        if length <= 0:
            return memoryview(b"")
        ps = self.page_size
        first, last = offset // ps, (offset + length - 1) // ps
        count = last - first + 1
        if count * 2 > self.capacity:  # too big to cache: read through
            with self._lock:
                self.misses += count
            return memoryview(self._pread(length, offset))
        with self._lock:
            window = self._continues(first, last + 1, count)
            entry = self._covering(first, last)
            if entry is not None:
                self.hits += count
                missing = 0
            else:
                missing = sum(page not in self._owner for page in range(first, last + 1))
                self.hits += count - missing
            ahead = window and (last + 1) not in self._owner
            epoch = self._epoch
        if entry is not None:
            start, data = entry
        else:
            start, data = first, self._fetch(first, count, epoch, missing)
        if ahead:
            self._ahead(last + 1, window, count, epoch)
        base = offset - start * self.page_size
        return memoryview(data)[base : base + length]

    def _continues(self, first: int, end: int, count: int) -> int:
        """Record a read of pages [first, end); its read-ahead window (0: not sequential)."""
        previous = self._streams.pop(first, None)
        window = 0 if previous is None else min(self.max_window, max(count, previous * 2))
        self._streams[end] = window
        while len(self._streams) > STREAMS:
            self._streams.popitem(last=False)
        return window

    def _covering(self, first: int, last: int) -> tuple[int, bytes] | None:
        start = self._owner.get(first)
        if start is None:
            return None
        data = self._entries[start]
        if start + len(data) // self.page_size <= last:
            return None
        self._entries.move_to_end(start)
        return start, data

    def _fetch(self, first: int, count: int, epoch: int, missing: int) -> bytes:
        """Read pages [first, first+count) on demand (`missing` of them not cached) and
        cache the whole pages read, unless an invalidation raced."""
        ps = self.page_size
        data = self._pread(count * ps, first * ps)
        whole = len(data) // ps
        with self._lock:
            self.misses += missing
            if whole and epoch == self._epoch:
                self._insert(first, data if whole * ps == len(data) else data[: whole * ps],
                             whole)
        return data

    def _ahead(self, first: int, window: int, unit: int, epoch: int) -> None:
        """Read pages [first, first+window) ahead, in entries of `unit` pages (the stream's
        read size, so that each later read is one whole entry: no copy), skipping entries
        already cached."""
        ps = self.page_size
        for start in range(first, first + window, unit):
            with self._lock:
                if start in self._owner:
                    continue
            count = min(unit, first + window - start)
            data = self._pread(count * ps, start * ps)
            whole = len(data) // ps
            with self._lock:
                if not whole or epoch != self._epoch:
                    return
                self.prefetches += whole
                self._insert(start, data if whole * ps == len(data) else data[: whole * ps],
                             whole)
            if whole < count:
                return

    def _insert(self, first: int, data: bytes, count: int) -> None:
        for page in range(first, first + count):
            start = self._owner.get(page)
            if start is not None:
                self._drop(start)
        self._entries[first] = data
        for page in range(first, first + count):
            self._owner[page] = first
        self._pages += count
        while self._pages > self.capacity and self._entries:
            start = next(iter(self._entries))
            self.evictions += self._drop(start)

    def _drop(self, start: int) -> int:
        data = self._entries.pop(start)
        count = len(data) // self.page_size
        for page in range(start, start + count):
            del self._owner[page]
        self._pages -= count
        return count

    def invalidate(self, first: int, count: int) -> None:
        """Forget pages [first, first+count): they were just written. O(count)."""
        with self._lock:
            self._epoch += 1
            if not self._owner:
                return
            for page in range(first, first + count):
                start = self._owner.get(page)
                if start is not None:
                    self._drop(start)

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._owner.clear()
            self._pages = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, self.evictions, self.prefetches,
                              self._pages, self.capacity)

    def _check(self) -> None:
        """Assert the structure's invariants (tests). O(pages)."""
        with self._lock:
            owners: dict[int, int] = {}
            total = 0
            for start, data in self._entries.items():
                assert data and len(data) % self.page_size == 0
                count = len(data) // self.page_size
                total += count
                for page in range(start, start + count):
                    assert page not in owners, "entries overlap"
                    owners[page] = start
            assert owners == self._owner, "page owners disagree with entries"
            assert total == self._pages <= self.capacity, (total, self._pages)
            assert len(self._streams) <= STREAMS
