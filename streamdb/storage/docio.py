"""Document bytes: streaming them into storage, and reading them back verified.

A document up to `INLINE_MAX` bytes travels inside its log record (one fsync per commit);
a larger one is written to free pages, in as few contiguous extents as free space allows
(one when its size is known in advance), and the pages are fdatasync'ed before the log
record that makes them visible (the caller does both). Its payload starts on a page
boundary, so an uncompressed document in one extent is one `memoryview` over the map.

Checksums cover chunks of `CHUNK` stored bytes and live in the document record, outside the
payload, so verification does not break contiguity. Reads verify each chunk they touch
unless quick mode is on.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Protocol

import crc32c
import xxhash

from streamdb.errors import (
    ChecksumMismatch,
    CorruptionError,
    DocumentTooLargeError,
    InvalidArgumentError,
)
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import CHECKSUM_CRC32C, CHECKSUM_XXH3
from streamdb.storage.pager import Pager
from streamdb.storage.records import Version, chunks

CHUNK = 256 << 10  # bytes per checksum
INLINE_MAX = 64 << 10  # larger documents go to pages before their log record
PIECE = 1 << 20  # how much of a source is read at a time
FIRST_EXTENT = 1 << 20  # unknown-size sources: the first extent, doubling up to MAX_EXTENT
MAX_EXTENT = 64 << 20


class _Hash(Protocol):
    def update(self, data: bytes | memoryview) -> None: ...

    def intdigest(self) -> int: ...


class _Crc32c:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = crc32c.crc32c(data, self.value)

    def intdigest(self) -> int:
        return self.value


def new_hash(algorithm: int) -> _Hash:
    if algorithm == CHECKSUM_XXH3:
        return xxhash.xxh3_64()
    if algorithm == CHECKSUM_CRC32C:
        return _Crc32c()
    raise CorruptionError(f"unknown checksum algorithm {algorithm}")


def checksum(algorithm: int, data: bytes | memoryview) -> int:
    if algorithm == CHECKSUM_XXH3:
        return xxhash.xxh3_64_intdigest(data)
    return crc32c.crc32c(data) if algorithm == CHECKSUM_CRC32C else new_hash(algorithm).intdigest()


def known_size(data: object) -> int | None:
    """The number of bytes `data` will yield, when that can be told without reading it."""
    if isinstance(data, bytes | bytearray | memoryview):
        return memoryview(data).nbytes
    if isinstance(data, io.IOBase) and data.seekable():
        try:
            here = data.tell()
            end = data.seek(0, io.SEEK_END)
            data.seek(here)
            return end - here
        except OSError:
            return None
    return None


def source_pieces(data: object) -> Iterator[memoryview]:
    """The bytes of a bytes-like object, a binary file object, or an iterable of bytes-like
    chunks, in pieces of at most PIECE bytes. Raises InvalidArgumentError for anything
    else (a str in particular: encode it first)."""
    if isinstance(data, str):
        raise InvalidArgumentError("documents are bytes: encode the str first")
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), PIECE):
            yield view[start : start + PIECE]
        return
    read = getattr(data, "read", None)
    if callable(read):
        while True:
            piece = read(PIECE)
            if not piece:
                return
            if isinstance(piece, str):
                raise InvalidArgumentError("the file object is in text mode: open it with 'rb'")
            yield memoryview(piece).cast("B")
    if isinstance(data, Iterable):
        for item in data:
            if isinstance(item, str) or not isinstance(item, bytes | bytearray | memoryview):
                raise InvalidArgumentError(
                    f"document chunks must be bytes-like, not {type(item).__name__}"
                )
            yield from source_pieces(item)
        return
    raise InvalidArgumentError(
        f"a document is bytes-like, a binary file object or an iterable of chunks, "
        f"not {type(data).__name__}"
    )


class Ingest:
    """Streams one document into storage. Use `run`, then either commit the version it
    describes or return the pages in `extents` to free space (nothing ever saw them).
    Memory: O(PIECE + INLINE_MAX)."""

    def __init__(self, pager: Pager, space: FreeSpace, algorithm: int, max_size: int) -> None:
        self.pager = pager
        self.space = space
        self.algorithm = algorithm
        self.max_size = max_size
        self.extents: list[tuple[int, int]] = []

    def run(self, data: object) -> tuple[int, tuple[int, ...], bytes | None]:
        """(size, chunk checksums, inline bytes or None). May allocate and write pages.

        Raises DocumentTooLargeError past `max_size`, StorageFullError past max_db_size,
        InvalidArgumentError for an unusable source, OSError from the file; pages already
        written are in `extents` as soon as they are allocated, for the caller to return.
        """
        if type(data) is bytes and len(data) <= min(INLINE_MAX, self.max_size):  # common
            return len(data), tuple(self._sums(data)), data
        size_hint = known_size(data)
        if size_hint is not None and size_hint > self.max_size:
            raise DocumentTooLargeError(
                f"document of {size_hint} bytes exceeds max_document_size={self.max_size}"
            )
        head = bytearray()
        pieces = source_pieces(data)
        for piece in pieces:
            if len(head) + len(piece) <= INLINE_MAX:
                head += piece
                continue
            return self._to_pages(head, piece, pieces, size_hint)
        if len(head) > self.max_size:
            raise DocumentTooLargeError(
                f"document of {len(head)} bytes exceeds max_document_size={self.max_size}"
            )
        inline = bytes(head)
        return len(inline), tuple(self._sums(inline)), inline

    def _sums(self, data: bytes | memoryview) -> Iterator[int]:
        view = memoryview(data)
        for start, length in chunks(len(view), CHUNK):
            yield checksum(self.algorithm, view[start : start + length])

    def _to_pages(
        self,
        head: bytearray,
        piece: memoryview,
        rest: Iterator[memoryview],
        size_hint: int | None,
    ) -> tuple[int, tuple[int, ...], None]:
        page = self.pager.page_size
        sums: list[int] = []
        hasher = new_hash(self.algorithm)
        in_chunk = 0
        written = 0  # logical bytes written
        capacity = 0  # logical bytes the extents hold
        next_extent = FIRST_EXTENT

        def feed(data: memoryview) -> None:
            nonlocal hasher, in_chunk, written, capacity, next_extent
            if written + len(data) > self.max_size:
                raise DocumentTooLargeError(
                    f"document exceeds max_document_size={self.max_size} bytes"
                )
            while data:
                if written == capacity:
                    # A known size gets one extent; otherwise extents double as they fill.
                    remaining = (size_hint or 0) - written
                    want = remaining if remaining > 0 else next_extent
                    pages = -(-want // page)
                    start = self.space.allocate(pages)
                    self.extents.append((start, pages))
                    capacity += pages * page
                    next_extent = min(next_extent * 2, MAX_EXTENT)
                first, count = self.extents[-1]
                extent_base = capacity - count * page
                room = min(capacity - written, CHUNK - in_chunk)
                part, data = data[:room], data[room:]
                self.pager.write((first * page) + (written - extent_base), [part])
                hasher.update(part)
                in_chunk += len(part)
                written += len(part)
                if in_chunk == CHUNK:
                    sums.append(hasher.intdigest())
                    hasher, in_chunk = new_hash(self.algorithm), 0

        feed(memoryview(head))
        feed(piece)
        for more in rest:
            feed(more)
        if in_chunk or not sums:
            sums.append(hasher.intdigest())
        self._trim(written)
        return written, tuple(sums), None

    def _trim(self, size: int) -> None:
        """Give back the unused pages at the end of the last extent."""
        page = self.pager.page_size
        needed = -(-size // page)
        total = 0
        kept = []
        for start, count in self.extents:
            take = min(count, max(0, needed - total))
            if take:
                kept.append((start, take))
            if count > take:
                self.space.free(start + take, count - take)
            total += take
        self.extents = kept


class DocReader:
    """Verified reads of one version's stored bytes."""

    def __init__(self, pager: Pager, version: Version, path: str, *, verify: bool) -> None:
        self.pager = pager
        self.version = version
        self.path = path
        self.verify = verify

    def _physical(self, offset: int, length: int) -> list[memoryview]:
        """Views of the stored bytes [offset, offset+length), one per extent touched."""
        page = self.pager.page_size
        extents = self.version.extents
        if len(extents) == 1 and offset + length <= extents[0][1] * page:
            try:  # the common case, one extent: one view
                return [self.pager.read(extents[0][0] * page + offset, length)]
            except ValueError as exc:
                raise CorruptionError("document pages lie past the end of the file",
                                      path=self.path, offset=offset) from exc
        views = []
        base = 0
        for first, count in self.version.extents:
            span = count * page
            lo, hi = max(offset, base), min(offset + length, base + span)
            if lo < hi:
                try:
                    views.append(self.pager.read(first * page + lo - base, hi - lo))
                except ValueError as exc:  # the extent lies past the end of the file
                    raise CorruptionError("document pages lie past the end of the file",
                                          path=self.path, offset=lo) from exc
            base += span
            if base >= offset + length:
                break
        if sum(len(v) for v in views) != length:
            raise CorruptionError(
                "document extents are shorter than its size", path=self.path, offset=offset
            )
        return views

    def chunk(self, index: int) -> memoryview:
        """Chunk `index` (CHUNK bytes, the last shorter), verified. Zero-copy when it lies in
        one extent of a mapped file."""
        v = self.version
        start = index * v.chunk_size
        length = max(0, min(v.chunk_size, v.stored - start))
        if v.inline is not None:
            data = memoryview(v.inline)[start : start + length]
        else:
            views = self._physical(start, length)
            data = views[0] if len(views) == 1 else memoryview(b"".join(views))
        if self.verify and checksum(v.checksum, data) != v.sums[index]:
            raise ChecksumMismatch("document bytes fail their checksum", path=self.path,
                                   offset=start)
        return data

    def chunk_count(self) -> int:
        return len(self.version.sums)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) clipped to the document, verifying every chunk
        touched. O(length + chunk)."""
        v = self.version
        end = min(v.size, offset + length)
        if offset >= end:
            return b""
        if v.chunk_size <= 0:
            raise CorruptionError("document record has no chunk size", path=self.path)
        first, last = offset // v.chunk_size, (end - 1) // v.chunk_size
        if last >= len(v.sums):
            raise CorruptionError("document has fewer checksums than chunks", path=self.path)
        if first == last:  # the common small read: one chunk, one copy
            base = first * v.chunk_size
            return bytes(self.chunk(first)[offset - base : end - base])
        parts = []
        for i in range(first, last + 1):
            data = self.chunk(i)
            base = i * v.chunk_size
            parts.append(data[max(0, offset - base) : end - base])
        return b"".join(parts)

    def view(self) -> memoryview | None:
        """The whole document as one verified view of the map, or None when its layout
        does not allow that (several extents, inline, no map)."""
        v = self.version
        if v.inline is not None:
            for i in range(self.chunk_count()):
                self.chunk(i)
            return memoryview(v.inline).toreadonly()
        if len(v.extents) != 1 or not self.pager.mapped or v.codec:
            return None
        for i in range(self.chunk_count()):
            self.chunk(i)
        first, _ = v.extents[0]
        return self.pager.read(first * self.pager.page_size, v.size)
