"""The page store the trees of one file read and write: its pager, plus (for the writer)
the free space new tree pages come from. Implements `btree.PageStore`."""

from __future__ import annotations

from streamdb import errors as E
from streamdb.errmap import io_error
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import HEADER_PAGES
from streamdb.storage.pager import Pager


class PageStore:
    """The page store the trees of one file use: its pager, plus (for the writer) free
    space, from which new tree pages are allocated."""

    def __init__(self, pager: Pager, space: FreeSpace) -> None:
        self.pager = pager
        self.space = space
        self.page_size = pager.page_size
        self.at_end = False  # allocate past the end of the file (building the free tree)

    def page_count(self) -> int:
        return max(self.space.file_pages, self.pager.size // self.page_size)

    def read_page(self, page_no: int) -> memoryview:
        if page_no < HEADER_PAGES:
            raise E.CorruptionError("tree points into the header", page=page_no)
        try:
            return self.pager.read_page(page_no)
        except ValueError as exc:
            raise E.CorruptionError("tree page lies past the end of the file",
                                    page=page_no) from exc
        except OSError as exc:
            raise io_error(exc, f"reading page {page_no}") from exc

    def allocate(self, n_pages: int) -> int:
        """Pages for a tree: one page (leaf or internal) anywhere, from small free extents
        first (`FreeSpace.allocate_scattered`); an overflow chain contiguous."""
        if self.at_end:
            start = self.space.file_pages
            self.space.file_pages += n_pages
            return start
        if n_pages == 1:
            return self.space.allocate_scattered()
        return self.space.allocate(n_pages)

    def allocate_pages(self, n_pages: int) -> list[int]:
        """`n_pages` single pages for a tree (leaf or internal), ascending, in one call:
        what `n_pages` calls of `allocate(1)` would give, from small free extents first
        (`FreeSpace.take_small`, O(log n) per extent taken), then past the end of the file
        (while it may grow), then from the largest extent. Raises StorageFullError."""
        if self.at_end:
            start = self.space.file_pages
            self.space.file_pages += n_pages
            return list(range(start, start + n_pages))
        space = self.space
        pages = space.take_small(n_pages)
        grow = min(n_pages - len(pages), max(0, space.max_pages - space.file_pages))
        pages += range(space.file_pages, space.file_pages + grow)
        space.file_pages += grow
        while len(pages) < n_pages:  # the file is at its maximum: the largest extent
            pages.append(space.allocate(1))
        pages.sort()
        return pages

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        self.pager.write_pages(page_no, data)
