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

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        self.pager.write_pages(page_no, data)
