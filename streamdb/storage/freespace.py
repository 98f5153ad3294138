"""Free space: extents of whole pages, allocated best-fit so large documents stay contiguous.

Pages freed while something may still read them are *pending*, tagged with the stamp
`(generation, lsn)` of the change that freed them: states older than the stamp still see
them. A pending extent becomes allocatable (`release`) once both
- the change that freed it is durable (`durable`: its log record fsynced, or a checkpoint
  after it): until then a crash could bring back the state that uses the pages (log
  replay frees them again, and `claim` takes reused ones back out of `pending`); and
- no reader (a snapshot, an in-flight read, a view, a reader process) holds a state older
  than its stamp: the caller passes the oldest such stamp as `horizon`.
That is invariant 1: never overwrite live data.

Stamps order by generation first: a reader process that loaded the trees of generation g
and then followed the log past a later checkpoint still reads generation g's trees, so it
must count as older than anything freed in generation g + 1, whatever its LSN. Within one
generation the LSN orders states exactly.
"""

from __future__ import annotations

from collections.abc import Callable

from sortedcontainers import SortedDict, SortedList

from streamdb.errors import CorruptionError, StorageFullError

Stamp = tuple[int, int]  # (header generation, lsn), compared as a tuple
SMALL = 8  # pages: extents this size or smaller are where tree pages go first


class FreeSpace:
    """Extents `(first page, count)`, coalesced. O(log n) allocate and free."""

    def __init__(self, file_pages: int, max_pages: int) -> None:
        self.file_pages = file_pages  # the logical end of the file, in pages
        self.max_pages = max_pages
        self._by_start: SortedDict = SortedDict()  # start -> count
        self._by_size: SortedList = SortedList()  # (count, start)
        self.pending: list[tuple[int, int, Stamp]] = []  # (start, count, freed at)
        self.durable: Stamp = (0, 0)  # the newest durable change (its log record, or a checkpoint)
        self._oldest_cache: Stamp | None = None  # the oldest pending stamp, when known
        # Called when an allocation would grow the file while pages are pending: it may
        # `release` some (it asks readers how old they are, and may make changes durable).
        self.on_short: Callable[[], None] | None = None

    def free_pages(self) -> int:
        return sum(self._by_start.values())

    def extents(self) -> list[tuple[int, int]]:
        return list(self._by_start.items())

    def allocate(self, count: int) -> int:
        """First page of `count` contiguous pages: the smallest free extent that fits, else
        the end of the file. Raises StorageFullError past `max_pages`."""
        i = self._by_size.bisect_left((count, -1))
        if i == len(self._by_size) and self.on_short is not None and self.pending:
            self.on_short()
            i = self._by_size.bisect_left((count, -1))
        if i < len(self._by_size):
            size, start = map(int, self._by_size[i])
            self._remove(start, size)
            if size > count:
                self._insert(start + count, size - count)
            return start
        # Extend; a free extent touching the end of the file is used as the extent's head.
        start = self.file_pages
        if self._by_start:
            last, size = map(int, self._by_start.peekitem(-1))
            if last + size == self.file_pages:
                self._remove(last, size)
                start = last
        if start + count > self.max_pages:
            if start != self.file_pages:
                self._insert(start, self.file_pages - start)
            raise StorageFullError(
                f"the database would exceed max_db_size ({self.max_pages} pages)"
            )
        self.file_pages = max(self.file_pages, start + count)
        return int(start)

    def free(self, start: int, count: int) -> None:
        """Return pages for immediate reuse (nothing can read them). Coalesces. O(log n).

        Raises CorruptionError, changing nothing, when a page is free already: something
        (a damaged free tree, in practice) gave out a page still in use, and writing on
        would overwrite live data."""
        if count <= 0:
            return
        by_start = self._by_start
        i = by_start.bisect_left(start)
        end = start + count
        prev = by_start.peekitem(i - 1) if i > 0 else None
        nxt = by_start.peekitem(i) if i < len(by_start) else None
        if (prev is not None and prev[0] + prev[1] > start) or (nxt is not None and nxt[0] < end):
            raise CorruptionError(
                f"pages {start}..{end - 1} are already free: the free-space map is damaged "
                f"(it lists pages in use)")
        if prev is not None and prev[0] + prev[1] == start:
            self._remove(*prev)
            start, count = prev[0], count + prev[1]
        if nxt is not None and nxt[0] == end:
            self._remove(*nxt)
            count += nxt[1]
        self._insert(start, count)

    def claim(self, start: int, count: int) -> None:
        """Mark pages in use that the free map still lists (log replay: pages a commit after
        the last checkpoint allocated). Extends the file end if they lie past it.

        Pages pending from an earlier replayed change are taken out of `pending` too: they
        were released (their change durable) and reused before the crash, so the commit that
        claims them now owns them. O(log n + extents and pending touched)."""
        end = start + count
        if self.pending and any(s < end and start < s + c for s, c, _ in self.pending):
            kept: list[tuple[int, int, Stamp]] = []
            for s, c, stamp in self.pending:
                if s < end and start < s + c:
                    if s < start:
                        kept.append((s, start - s, stamp))
                    if s + c > end:
                        kept.append((end, s + c - end, stamp))
                else:
                    kept.append((s, c, stamp))
            self.pending = kept
            self._oldest_cache = None
        i = self._by_start.bisect_right(start)
        if i > 0:
            i -= 1
        for s, c in list(self._by_start.items()[i:]):
            if s >= end:
                break
            if s + c <= start:
                continue
            self._remove(s, c)
            if s < start:
                self._insert(s, start - s)
            if s + c > end:
                self._insert(end, s + c - end)
        self.file_pages = max(self.file_pages, end)

    def defer(self, start: int, count: int, stamp: Stamp) -> None:
        """Free these pages once nothing can read them (see the module docstring). O(1)."""
        if count > 0:
            self.pending.append((start, count, stamp))
            if self._oldest_cache is not None and stamp < self._oldest_cache:
                self._oldest_cache = stamp

    def undefer_after(self, stamp: Stamp) -> None:
        """Forget deferrals stamped after `stamp` (their change was rolled back). O(pending)."""
        self.pending = [p for p in self.pending if p[2] <= stamp]
        self._oldest_cache = None

    def pending_pages(self) -> int:
        """Pages waiting to be released. O(pending)."""
        return sum(c for _, c, _ in self.pending)

    def releasable(self) -> bool:
        """True if some pending extent waits only for readers. O(1)."""
        return bool(self.pending) and self._oldest <= self.durable

    @property
    def _oldest(self) -> Stamp:
        if self._oldest_cache is None:
            self._oldest_cache = min((p[2] for p in self.pending), default=(1 << 63, 0))
        return self._oldest_cache

    def release(self, horizon: Stamp | None) -> int:
        """Free pending extents whose stamp is at or below both the newest durable change and
        `horizon` (the oldest state a reader holds; None: no reader). Returns the pages
        freed. O(pending log n)."""
        limit = self.durable if horizon is None else min(self.durable, horizon)
        kept, freed = [], 0
        for start, count, stamp in self.pending:
            if stamp <= limit:
                count = min(count, self.file_pages - start)  # the file may have shrunk
                self.free(start, count)
                freed += max(count, 0)
            else:
                kept.append((start, count, stamp))
        self.pending = kept
        self._oldest_cache = None
        return freed

    def allocate_scattered(self) -> int:
        """One page that need not sit next to any other (a tree page): from the smallest
        free extent, else past the end of the file, so the largest extent stays whole for
        documents; from it only when the file cannot grow (max_pages). O(log n)."""
        taken = self.take_small(1)
        if taken:
            return taken[0]
        if self.file_pages < self.max_pages:
            self.file_pages += 1
            return self.file_pages - 1
        return self.allocate(1)

    def take_small(self, count: int) -> list[int]:
        """Up to `count` free pages for pages that need not be contiguous (tree pages),
        taken out of the map from the smallest extents first (lowest pages of each), so the
        large ones stay whole for documents: never from the largest extent, unless it has
        at most SMALL pages or is more than half the file (a mostly empty file: using its
        first pages lets the end of the file go free, to be cut off). Fewer if those run
        out; the file never grows. O(log n) per extent taken (one page: O(log n))."""
        pages: list[int] = []
        by_size = self._by_size  # (size, start), smallest first
        if not by_size:
            return pages
        largest = tuple(map(int, by_size[-1]))
        spared = largest if largest[0] > SMALL and 2 * largest[0] <= self.file_pages else None
        while len(pages) < count and by_size:
            size, start = map(int, by_size[0])  # the smallest left
            if (size, start) == spared:
                break  # only the largest is left
            take = min(size, count - len(pages))
            self._remove(start, size)
            if size > take:  # the last extent taken: done
                self._insert(start + take, size - take)
            pages.extend(range(start, start + take))
        return pages

    def free_at_end(self) -> int:
        """Free pages at the end of the file (`trim_end` would drop them). O(1)."""
        if self._by_start:
            last, size = map(int, self._by_start.peekitem(-1))
            if last + size == self.file_pages:
                return size
        return 0

    def trim_end(self) -> int:
        """Drop the free extent that ends at the end of the file, so the file can be cut
        there; returns the new end (`file_pages`). O(log n)."""
        size = self.free_at_end()
        if size:
            self._remove(self.file_pages - size, size)
            self.file_pages -= size
        return self.file_pages

    def _insert(self, start: int, count: int) -> None:
        self._by_start[start] = count
        self._by_size.add((count, start))

    def _remove(self, start: int, count: int) -> None:
        del self._by_start[start]
        self._by_size.remove((count, start))

    def _check(self) -> None:
        """Assert: extents sorted, disjoint, coalesced, inside the file; indexes agree."""
        end = -1
        for start, count in self._by_start.items():
            assert count > 0 and start > end, (start, count)
            assert start + count <= self.file_pages
            end = start + count
        assert sorted((c, s) for s, c in self._by_start.items()) == list(self._by_size)
        for start, count, _stamp in self.pending:
            for s, c in self._by_start.items():
                assert start + count <= s or s + c <= start, "pending pages already free"
