"""The page cache of the `pread` path (`Config(use_mmap=False)`): an LRU of page runs.

An entry is one `pread` of whole pages: a run of pages a read asked for that was not
cached, or a run read ahead of a sequential stream. Entries never overlap, are
evicted whole, least recently used first, and are counted per page: the cache holds at most
`capacity` pages. A read that one entry covers is a slice of it (no copy).

Read-ahead: the cache remembers where the last few streams ended. A read that starts there
(or on the last page of the previous read, and goes past it) continues that stream; when a
page within half the stream's window after it is not cached, the window of pages from
there is read ahead (in entries of at least the read's length) and the window doubles for
next time, up to `max_window`. Counters: `hits`
(pages found, read ahead or not), `misses` (pages read on demand), `prefetches` (pages
read ahead), `evictions` (pages evicted).

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
AHEAD_UNIT = 16  # pages: the least read ahead at once, and the least entry read ahead


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
        """`length` bytes at `offset` (shorter only past the end of the file). O(pages);
        zero-copy when one entry holds them all."""
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
            ahead, window = self._continues(first, last, count)
            pieces = self._pieces(first, last)
            missing = sum(n for _, data, n, _ in pieces if data is None)
            self.hits += count - missing
            self.misses += missing
            epoch = self._epoch
        base = offset - first * ps
        whole = pieces[0][1] if len(pieces) == 1 else None
        if whole is not None:  # one entry holds it all
            lo = pieces[0][3]
            view = memoryview(whole)[lo + base : lo + base + length]
        else:
            parts = []
            for page, data, n, lo in pieces:
                if data is None:
                    part = memoryview(self._fetch(page, n, epoch))
                else:
                    part = memoryview(data)[lo : lo + n * ps]
                parts.append(part)
                if len(part) < n * ps:  # the end of the file
                    break
            joined = parts[0] if len(parts) == 1 else memoryview(b"".join(parts))
            view = joined[base : base + length]
        if window:
            self._ahead(ahead, window, max(count, AHEAD_UNIT), epoch)
        return view

    def _continues(self, first: int, last: int, count: int) -> tuple[int, int]:
        """Record a read of pages [first, last]. Returns the pages to read ahead after it
        as (first page, count), count 0 for none: none unless it continues a stream and a
        page within half the stream's window (at least the read's length) after it is not
        cached; then the window from that page, and the window doubles for next time."""
        window = self._streams.pop(first, None)
        if window is None and last > first:  # back to back, sharing a page: [.., p] [p, ..]
            window = self._streams.pop(first + 1, None)
        if window is None:
            self._streams[last + 1] = 0
            self._trim_streams()
            return 0, 0
        window = min(self.max_window, max(window, count, AHEAD_UNIT))
        horizon = last + max(count, window // 2)
        page = last + 1
        while page <= horizon:  # skip the entries already read ahead
            start = self._owner.get(page)
            if start is None:
                break
            page = start + len(self._entries[start]) // self.page_size
        if page > horizon:
            self._streams[last + 1] = window
            self._trim_streams()
            return 0, 0
        self._streams[last + 1] = min(self.max_window, window * 2)
        self._trim_streams()
        return page, window

    def _trim_streams(self) -> None:
        while len(self._streams) > STREAMS:
            self._streams.popitem(last=False)

    def _pieces(self, first: int, last: int) -> list[tuple[int, bytes | None, int, int]]:
        """Pages [first, last] as runs (first page, entry bytes, pages, byte offset of the
        first page in the entry); entry bytes None for a run not cached. Touches the
        entries used."""
        pieces: list[tuple[int, bytes | None, int, int]] = []
        page = first
        while page <= last:
            start = self._owner.get(page)
            if start is None:
                end = page
                while end <= last and end not in self._owner:
                    end += 1
                pieces.append((page, None, end - page, 0))
                page = end
                continue
            data = self._entries[start]
            self._entries.move_to_end(start)
            end = min(last + 1, start + len(data) // self.page_size)
            pieces.append((page, data, end - page, (page - start) * self.page_size))
            page = end
        return pieces

    def _fetch(self, first: int, count: int, epoch: int) -> bytes:
        """Read pages [first, first+count) on demand and cache the whole pages read,
        unless an invalidation raced."""
        ps = self.page_size
        data = self._pread(count * ps, first * ps)
        whole = len(data) // ps
        with self._lock:
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
