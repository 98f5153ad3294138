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
from dataclasses import dataclass
from typing import Protocol

import crc32c
import xxhash

from streamdb.errors import (
    AuthenticationError,
    ChecksumMismatch,
    CorruptionError,
    DocumentTooLargeError,
    EncryptionError,
    InvalidArgumentError,
)
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import CHECKSUM_CRC32C, CHECKSUM_XXH3
from streamdb.storage.pager import Pager
from streamdb.storage.records import CHUNK_RAW, Version, chunks
from streamdb.storage.transform import (
    AESGCM,
    TAG,
    Cipher,
    InvalidTag,
    compress,
    decompress,
)

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
    if not isinstance(data, str):
        try:
            return memoryview(data).nbytes  # type: ignore[arg-type]
        except TypeError:
            pass  # not a buffer: a file object, an iterable, or something refused later
    if isinstance(data, io.IOBase):
        try:
            if not data.seekable():
                return None
            here = data.tell()
            end = data.seek(0, io.SEEK_END)
            data.seek(here)
            return end - here
        except (OSError, ValueError):  # a closed file: reading it says so
            return None
    return None


def as_bytes(data: object, what: str) -> memoryview:
    """The bytes of any C-contiguous object with the buffer protocol (bytes, bytearray,
    memoryview, numpy arrays, array.array, mmap, ...) as a flat byte view, no copy.
    Raises InvalidArgumentError naming `what` for a str, a non-contiguous buffer, or an
    object that is not bytes-like. O(1)."""
    if isinstance(data, str):
        raise InvalidArgumentError(f"{what} must be bytes, not str: encode it first")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(
            f"{what} must be bytes-like, not {type(data).__name__}") from None
    if not view.c_contiguous:
        raise InvalidArgumentError(
            f"{what} must be C-contiguous (a non-contiguous buffer, such as a strided numpy "
            f"view, has no single run of bytes: copy it first, e.g. numpy.ascontiguousarray)")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _buffer(data: object) -> memoryview | None:
    """`as_bytes(data)`, or None if `data` does not have the buffer protocol."""
    if isinstance(data, bytes | bytearray | memoryview):
        return as_bytes(data, "document data")
    try:
        memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        return None
    return as_bytes(data, "document data")


def check_source(data: object) -> object:
    """`data` if it can be a document's source (what `source_pieces` takes), checked as far
    as that can be without reading it: a str, a non-contiguous buffer, or something that is
    neither bytes-like, readable nor iterable raises InvalidArgumentError. O(1)."""
    if isinstance(data, str):
        raise InvalidArgumentError("documents are bytes: encode the str first")
    if _buffer(data) is None and not callable(getattr(data, "read", None)) and not isinstance(
            data, Iterable):
        raise InvalidArgumentError(
            f"a document is bytes-like, a binary file object or an iterable of chunks, "
            f"not {type(data).__name__}")
    return data


def source_pieces(data: object) -> Iterator[memoryview]:
    """The bytes of a bytes-like object (anything C-contiguous with the buffer protocol:
    numpy arrays, array.array, mmap), a binary file object, or an iterable of bytes-like
    chunks, in pieces of at most PIECE bytes. Raises InvalidArgumentError for anything
    else (a str in particular: encode it first; a closed or text-mode file)."""
    if isinstance(data, str):
        raise InvalidArgumentError("documents are bytes: encode the str first")
    view = _buffer(data)
    if view is not None:
        for start in range(0, len(view), PIECE):
            yield view[start : start + PIECE]
        return
    read = getattr(data, "read", None)
    if callable(read):
        while True:
            try:
                piece = read(PIECE)
            except OSError as exc:
                if isinstance(exc, io.UnsupportedOperation):
                    raise InvalidArgumentError(
                        f"the file object cannot be read: {exc}") from exc
                raise  # a failed read: the database reports it as a storage error
            except ValueError as exc:  # a closed file
                raise InvalidArgumentError(f"the file object cannot be read: {exc}") from exc
            if not piece:
                return
            if isinstance(piece, str):
                raise InvalidArgumentError("the file object is in text mode: open it with 'rb'")
            yield as_bytes(piece, "what the file object's read() returned")
    if isinstance(data, Iterable):
        for item in data:
            if isinstance(item, str) or _buffer(item) is None:
                raise InvalidArgumentError(
                    f"document chunks must be bytes-like, not {type(item).__name__}"
                )
            yield from source_pieces(item)
        return
    raise InvalidArgumentError(
        f"a document is bytes-like, a binary file object or an iterable of chunks, "
        f"not {type(data).__name__}"
    )


@dataclass(frozen=True, slots=True)
class Transform:
    """How new versions are stored: `codec` (0 none, transform.CODECS) and `cipher` (None:
    unencrypted), for document `doc` (16-byte id) version `version`."""

    codec: int = 0
    cipher: Cipher | None = None
    doc: bytes = b""
    version: int = 0

    def __bool__(self) -> bool:
        return bool(self.codec or self.cipher)


@dataclass(frozen=True, slots=True)
class Stored:
    """What `Ingest.run` produced: the logical size, the chunk checksums (of stored
    bytes), the stored bytes when inline, and for transformed versions the chunk table and
    the key salt."""

    size: int
    sums: tuple[int, ...]
    inline: bytes | None
    table: tuple[tuple[int, int, int], ...] = ()
    salt: bytes = b""


class _PageSink:
    """Writes a stream of stored bytes into extents of free pages, allocated as needed:
    one extent when the size is known in advance, otherwise extents that double."""

    def __init__(self, pager: Pager, space: FreeSpace, size_hint: int | None) -> None:
        self.pager = pager
        self.space = space
        self.size_hint = size_hint
        self.extents: list[tuple[int, int]] = []
        self.written = 0
        self.capacity = 0
        self.next_extent = FIRST_EXTENT

    def write(self, data: memoryview | bytes) -> None:
        page = self.pager.page_size
        data = memoryview(data)
        while data:
            if self.written == self.capacity:
                remaining = (self.size_hint or 0) - self.written
                want = remaining if remaining > 0 else self.next_extent
                pages = -(-want // page)
                start = self.space.allocate(pages)
                self.extents.append((start, pages))
                self.capacity += pages * page
                self.next_extent = min(self.next_extent * 2, MAX_EXTENT)
            first, count = self.extents[-1]
            extent_base = self.capacity - count * page
            room = self.capacity - self.written
            part, data = data[:room], data[room:]
            self.pager.write(first * page + self.written - extent_base, [part])
            self.written += len(part)

    def trim(self) -> None:
        """Give back the unused pages at the end of the last extent."""
        page = self.pager.page_size
        needed = -(-self.written // page)
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


def logical_chunks(pieces: Iterator[memoryview], size: int) -> Iterator[memoryview]:
    """The source cut into chunks of exactly `size` bytes (the last shorter; one empty
    chunk for an empty source). A chunk inside one piece is a slice of it, not a copy."""
    held = bytearray()
    emitted = False
    for piece in pieces:
        if held:
            take = size - len(held)
            held += piece[:take]
            piece = piece[take:]
            if len(held) < size:
                continue
            yield memoryview(held)
            emitted = True
            held = bytearray()
        while len(piece) >= size:
            yield piece[:size]
            emitted = True
            piece = piece[size:]
        if piece:
            held = bytearray(piece)
    if held or not emitted:
        yield memoryview(held)


class PageWrite(Protocol):
    """What a write put in pages: the extents it allocated (returned to free space if the
    write is undone), and whether pages must be synced before its commit."""

    @property
    def extents(self) -> list[tuple[int, int]]: ...

    @property
    def wrote_pages(self) -> bool: ...


class Ingest:
    """Streams one document into storage. Use `run`, then either commit the version it
    describes or return the pages in `extents` to free space (nothing ever saw them).
    Memory: O(PIECE + INLINE_MAX) (transformed: O(PIECE + INLINE_MAX + CHUNK))."""

    def __init__(self, pager: Pager, space: FreeSpace, algorithm: int, max_size: int,
                 transform: Transform | None = None) -> None:
        self.pager = pager
        self.space = space
        self.algorithm = algorithm
        self.max_size = max_size
        self.transform = transform or Transform()
        self._sink: _PageSink | None = None

    @property
    def extents(self) -> list[tuple[int, int]]:
        return self._sink.extents if self._sink is not None else []

    @property
    def wrote_pages(self) -> bool:
        return bool(self.extents)

    def _too_large(self, size: int | None = None) -> DocumentTooLargeError:
        what = f"document of {size} bytes" if size is not None else "document"
        return DocumentTooLargeError(f"{what} exceeds max_document_size={self.max_size}")

    def run(self, data: object) -> Stored:
        """Store `data`. May allocate and write pages.

        Raises DocumentTooLargeError past `max_size`, StorageFullError past max_db_size,
        InvalidArgumentError for an unusable source, OSError from the file; pages already
        written are in `extents` as soon as they are allocated, for the caller to return.
        """
        plain = not self.transform
        if plain and type(data) is bytes and len(data) <= min(INLINE_MAX, self.max_size):
            return Stored(len(data), tuple(self._sums(data)), data)  # the common case
        size_hint = known_size(data)
        if size_hint is not None and size_hint > self.max_size:
            raise self._too_large(size_hint)
        if not plain:
            return self._transformed(source_pieces(data), size_hint)
        head = bytearray()
        pieces = source_pieces(data)
        for piece in pieces:
            if len(head) + len(piece) <= INLINE_MAX:
                head += piece
                continue
            return self._to_pages(head, piece, pieces, size_hint)
        if len(head) > self.max_size:
            raise self._too_large(len(head))
        inline = bytes(head)
        return Stored(len(inline), tuple(self._sums(inline)), inline)

    def _sums(self, data: bytes | memoryview) -> Iterator[int]:
        view = memoryview(data)
        for start, length in chunks(len(view), CHUNK):
            yield checksum(self.algorithm, view[start : start + length])

    def _to_pages(self, head: bytearray, piece: memoryview, rest: Iterator[memoryview],
                  size_hint: int | None) -> Stored:
        sink = self._sink = _PageSink(self.pager, self.space, size_hint)
        sums: list[int] = []
        hasher = new_hash(self.algorithm)
        in_chunk = 0

        def feed(data: memoryview) -> None:
            nonlocal hasher, in_chunk
            if sink.written + len(data) > self.max_size:
                raise self._too_large()
            while data:
                part, data = data[: CHUNK - in_chunk], data[CHUNK - in_chunk :]
                sink.write(part)
                hasher.update(part)
                in_chunk += len(part)
                if in_chunk == CHUNK:
                    sums.append(hasher.intdigest())
                    hasher, in_chunk = new_hash(self.algorithm), 0

        feed(memoryview(head))
        feed(piece)
        for more in rest:
            feed(more)
        if in_chunk or not sums:
            sums.append(hasher.intdigest())
        sink.trim()
        return Stored(sink.written, tuple(sums), None)

    def _transformed(self, pieces: Iterator[memoryview], size_hint: int | None) -> Stored:
        """Compress and/or seal chunk by chunk; stored bytes go inline while they total at
        most INLINE_MAX, then to pages. A chunk is sealed once the next byte (or the end)
        is seen, so the final chunk's associated data can carry the count and size."""
        t = self.transform
        cipher = t.cipher
        salt = cipher.new_salt() if cipher is not None else b""
        aead = cipher.version_key(t.doc, t.version, salt) if cipher is not None else None
        sums: list[int] = []
        table: list[tuple[int, int, int]] = []
        held: list[bytes] = []  # stored chunks not yet on pages
        held_bytes = 0
        size = 0
        stored_hint = None if size_hint is None else size_hint + TAG * (size_hint // CHUNK + 1)

        def store(chunk: memoryview, final: bool) -> None:
            nonlocal held_bytes
            index = len(table)
            flags = 0
            out: bytes | memoryview = chunk
            if t.codec:
                packed = compress(t.codec, chunk)
                if len(packed) < len(chunk):
                    out = packed
                else:
                    flags = CHUNK_RAW
            if cipher is not None and aead is not None:
                aad = cipher.associated(t.doc, t.version, index, t.codec, flags,
                                        (index + 1, size) if final else None)
                out = aead.encrypt(cipher.nonce(index, 0), out, aad)
            sums.append(checksum(self.algorithm, out))
            table.append((len(out), flags, 0))
            if self._sink is None and held_bytes + len(out) <= INLINE_MAX:
                held.append(bytes(out))
                held_bytes += len(out)
                return
            if self._sink is None:
                self._sink = _PageSink(self.pager, self.space, stored_hint)
                for part in held:
                    self._sink.write(part)
                held.clear()
            self._sink.write(out)

        pending: memoryview | None = None
        for chunk in logical_chunks(pieces, CHUNK):
            if size + len(chunk) > self.max_size:
                raise self._too_large()
            if pending is not None:
                store(pending, final=False)
            size += len(chunk)
            # Held across the next read of the source: a view into a buffer the source may
            # refill (anything but immutable bytes) is copied.
            pending = chunk if isinstance(chunk.obj, bytes) else memoryview(bytes(chunk))
        assert pending is not None
        store(pending, final=True)
        if self._sink is None:
            inline = b"".join(held)
            return Stored(size, tuple(sums), inline, tuple(table), salt)
        self._sink.trim()
        return Stored(size, tuple(sums), None, tuple(table), salt)

    def copy(self, reader: DocReader) -> Stored:
        """The stored bytes of `reader`'s version, copied unchanged (no decoding, each
        chunk verified against its checksum) into new pages, or inline if it was."""
        v = reader.version
        if v.inline is not None:
            return Stored(v.size, v.sums, v.inline, v.table, v.salt)
        self._sink = _PageSink(self.pager, self.space, v.stored)
        for i in range(reader.chunk_count()):
            self._sink.write(reader.stored_chunk(i, verify=True))
        self._sink.trim()
        return Stored(v.size, v.sums, None, v.table, v.salt)


class DocReader:
    """Verified reads of one version's stored bytes, decoded (decompressed, authenticated
    and decrypted) when the version is transformed; `cipher` is the database's."""

    def __init__(self, pager: Pager, version: Version, path: str, *, verify: bool,
                 cipher: Cipher | None = None) -> None:
        self.pager = pager
        self.version = version
        self.path = path
        self.verify = verify
        self.cipher = cipher
        self._aead: AESGCM | None = None  # the key last used, and its salt
        self._aead_salt = b""

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

    def _span(self, index: int) -> tuple[int, int]:
        """(stored offset, stored length) of chunk `index`."""
        v = self.version
        if not v.table:
            start = index * v.chunk_size
            return start, max(0, min(v.chunk_size, v.stored - start))
        return v.offsets[index], v.table[index][0]

    def stored_chunk(self, index: int, *, verify: bool) -> memoryview:
        """The stored bytes of chunk `index`, checked against its checksum if `verify`.
        Zero-copy when they lie in one extent of a mapped file."""
        v = self.version
        start, length = self._span(index)
        if v.inline is not None:
            data = memoryview(v.inline)[start : start + length]
        else:
            views = self._physical(start, length)
            data = views[0] if len(views) == 1 else memoryview(b"".join(views))
        if verify and checksum(v.checksum, data) != v.sums[index]:
            raise ChecksumMismatch("document bytes fail their checksum", path=self.path,
                                   offset=index * v.chunk_size)
        return data

    def chunk(self, index: int) -> memoryview:
        """Chunk `index` of the document (`chunk_size` bytes, the last shorter), verified.
        Zero-copy when stored untransformed in one extent of a mapped file.

        A sealed chunk is authenticated whatever `verify` says (its checksum is then
        consulted only to tell damage, ChecksumMismatch, from tampering,
        AuthenticationError). Raises CorruptionError for undecodable chunks."""
        v = self.version
        if not v.table:
            return self.stored_chunk(index, verify=self.verify)
        data: bytes | memoryview = self.stored_chunk(index, verify=self.verify and not v.salt)
        _, flags, seal = v.table[index]
        if v.salt:
            data = self._open(index, data, flags, seal)
        expected = max(0, min(v.chunk_size, v.size - index * v.chunk_size))
        if v.codec and not flags & CHUNK_RAW:
            try:
                data = decompress(v.codec, data, expected)
            except CorruptionError as exc:
                raise CorruptionError(str(exc), path=self.path,
                                      offset=index * v.chunk_size) from exc
        elif len(data) != expected:
            raise CorruptionError("a stored chunk has the wrong length", path=self.path,
                                  offset=index * v.chunk_size)
        return memoryview(data)

    def _open(self, index: int, sealed: bytes | memoryview, flags: int, seal: int) -> bytes:
        v = self.version
        if self.cipher is None:
            raise EncryptionError(f"{self.path!r} is encrypted: open the database with its key")
        last = len(v.sums) - 1
        salt = v.log.salts[index] if v.log is not None and v.log.salts else v.salt
        aead = self._aead
        if aead is None or salt != self._aead_salt:
            aead = self._aead = self.cipher.version_key(v.doc, v.version, salt)
            self._aead_salt = salt
        aad = self.cipher.associated(v.doc, v.version, index, v.codec, flags,
                                     (last + 1, v.size) if index == last else None)
        try:
            return self.cipher.open(aead, sealed, index, seal, aad)
        except InvalidTag:
            if checksum(v.checksum, sealed) != v.sums[index]:
                raise ChecksumMismatch("document bytes fail their checksum", path=self.path,
                                       offset=index * v.chunk_size) from None
            raise AuthenticationError("an encrypted chunk fails authentication (altered, "
                                      "moved, or its metadata changed)", path=self.path,
                                      offset=index * v.chunk_size) from None

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
            data = self.chunk(first)
            whole = data.obj
            if offset == base and isinstance(whole, bytes) and len(whole) == end - base \
                    == len(data):
                return whole  # a decoded chunk, whole: no further copy
            return bytes(data[offset - base : end - base])
        parts = []
        for i in range(first, last + 1):
            data = self.chunk(i)
            base = i * v.chunk_size
            parts.append(data[max(0, offset - base) : end - base])
        return b"".join(parts)

    def view(self) -> memoryview | None:
        """The whole document as one verified view of the map, or None when its layout
        does not allow that (several extents, inline, transformed, no map)."""
        v = self.version
        if v.inline is not None and not v.table:
            for i in range(self.chunk_count()):
                self.chunk(i)
            return memoryview(v.inline).toreadonly()
        if len(v.extents) != 1 or not self.pager.mapped or v.table:
            return None
        if self.verify:  # quick mode: O(1), nothing to check
            for i in range(self.chunk_count()):
                self.chunk(i)
        first, _ = v.extents[0]
        return self.pager.read(first * self.pager.page_size, v.size)
