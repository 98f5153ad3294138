"""Document records (values of the docs tree) and the operations logged in the WAL.

All integers little-endian; every length is checked against the buffer before use, and any
violation raises CorruptionError. Byte tables: docs/format/db.md.

A version record, 64 bytes then its arrays:

| off | size | field                                                             |
|-----|------|-------------------------------------------------------------------|
| 0   | 4    | version number (1, 2, ...)                                        |
| 4   | 1    | codec (0 = none; reserved for compression)                        |
| 5   | 1    | checksum algorithm (1 XXH3-64, 2 CRC-32C)                         |
| 6   | 2    | flags: bit 0 INLINE (the bytes follow the record)                 |
| 8   | 8    | LSN of the commit that wrote it                                   |
| 16  | 8    | size: the document's length in bytes                              |
| 24  | 8    | stored size: bytes on disk (differs once a codec applies)         |
| 32  | 8    | created, Unix time (float64)                                      |
| 40  | 8    | modified, Unix time (float64)                                     |
| 48  | 4    | chunk size: one checksum per chunk of this many stored bytes      |
| 52  | 4    | extent count                                                      |
| 56  | 4    | chunk count                                                       |
| 60  | 4    | reserved (nonce / appended tails)                                 |
| 64  | 12n  | extents: first page u64, page count u32                           |
|     | 8n   | chunk checksums, u64 each                                         |
|     | s    | the stored bytes, if INLINE                                       |
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from streamdb.errors import CorruptionError

FLAG_INLINE = 0x1
_VERSION = struct.Struct("<IBBHQQQddIIII")
_EXTENT = struct.Struct("<QI")
_DOC = struct.Struct("<BBHHH")  # format, flags, versions, paths, reserved
assert _VERSION.size == 64 and _DOC.size == 8


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    lsn: int
    size: int
    created: float
    modified: float
    checksum: int
    chunk_size: int
    extents: tuple[tuple[int, int], ...] = ()
    sums: tuple[int, ...] = ()
    inline: bytes | None = None
    codec: int = 0
    stored_size: int = -1  # -1: same as size

    @property
    def stored(self) -> int:
        return self.size if self.stored_size < 0 else self.stored_size

    @property
    def pages(self) -> int:
        return sum(n for _, n in self.extents)


@dataclass(frozen=True, slots=True)
class DocRecord:
    doc_id: uuid.UUID
    versions: tuple[Version, ...]  # newest first
    paths: tuple[bytes, ...] = field(default=())  # sorted path keys bound to it

    @property
    def latest(self) -> Version:
        return self.versions[0]


class Reader:
    """Bounded little-endian reading from a buffer; every overrun is CorruptionError."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes | memoryview, what: str) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CorruptionError(f"{self.what} is truncated or has a bad length")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: struct.Struct) -> tuple[object, ...]:
        return fmt.unpack(self.take(fmt.size))

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise CorruptionError(f"{self.what} has trailing bytes")


def encode_version(v: Version) -> bytes:
    flags = FLAG_INLINE if v.inline is not None else 0
    parts = [
        _VERSION.pack(
            v.version, v.codec, v.checksum, flags, v.lsn, v.size, v.stored, v.created,
            v.modified, v.chunk_size, len(v.extents), len(v.sums), 0,
        ),
        *(_EXTENT.pack(*e) for e in v.extents),
        struct.pack(f"<{len(v.sums)}Q", *v.sums),
    ]
    if v.inline is not None:
        parts.append(v.inline)
    return b"".join(parts)


def decode_version(r: Reader) -> Version:
    """One version record at the reader's position. Bounded: every count is checked against
    the bytes left before anything is sized from it."""
    buf, pos = r.buf, r.pos
    if pos + _VERSION.size > len(buf):
        raise CorruptionError(f"{r.what} is truncated")
    (number, codec, algo, flags, lsn, size, stored, created, modified, chunk, n_ext, n_sum,
     _reserved) = _VERSION.unpack_from(buf, pos)
    pos += _VERSION.size
    inline_len = stored if flags & FLAG_INLINE else 0
    end = pos + n_ext * _EXTENT.size + 8 * n_sum + inline_len
    if end > len(buf):
        raise CorruptionError(f"{r.what} declares more extents, chunks or bytes than it holds")
    extents = tuple(_EXTENT.iter_unpack(buf[pos : pos + n_ext * _EXTENT.size]))
    pos += n_ext * _EXTENT.size
    sums = struct.unpack_from(f"<{n_sum}Q", buf, pos)
    pos += 8 * n_sum
    inline = bytes(buf[pos : pos + inline_len]) if flags & FLAG_INLINE else None
    r.pos = end
    return Version(
        number, lsn, size, created, modified, algo, chunk, extents, sums, inline, codec,
        -1 if stored == size else stored,
    )


def encode_doc(doc: DocRecord) -> bytes:
    parts = [_DOC.pack(1, 0, len(doc.versions), len(doc.paths), 0)]
    parts.extend(struct.pack("<H", len(p)) + p for p in doc.paths)
    for v in doc.versions:
        body = encode_version(v)
        parts.append(struct.pack("<I", len(body)) + body)
    return b"".join(parts)


def decode_doc(doc_id: uuid.UUID, data: bytes | memoryview) -> DocRecord:
    r = Reader(data, f"document record {doc_id}")
    fmt_, _flags, n_versions, n_paths, _ = r.unpack(_DOC)
    if fmt_ != 1:
        raise CorruptionError(f"document record {doc_id} has unknown format {fmt_}")
    assert isinstance(n_paths, int) and isinstance(n_versions, int)
    paths = tuple(bytes(r.take(int.from_bytes(r.take(2), "little"))) for _ in range(n_paths))
    versions = []
    for _ in range(n_versions):
        body = Reader(r.take(int.from_bytes(r.take(4), "little")), r.what)
        versions.append(decode_version(body))
        body.end()
    r.end()
    if not versions:
        raise CorruptionError(f"document record {doc_id} has no version")
    return DocRecord(doc_id, tuple(versions), paths)


# -- log operations ------------------------------------------------------------------------
# One WAL record per operation; a commit batch is one atomic transaction.

OP_VERSION = 1  # doc id, version record: a new version of a (possibly new) document
OP_BIND = 2  # doc id, path: the path now names the document
OP_UNBIND = 3  # path: the path names nothing
OP_PRUNE = 4  # doc id, u32 keep: drop versions beyond the newest `keep`
OP_CREATE = 5  # doc id, u16 path length, path, version record: a new document at a new path


@dataclass(frozen=True, slots=True)
class Op:
    kind: int
    doc_id: uuid.UUID | None = None
    path: bytes = b""
    version: Version | None = None
    keep: int = 0


def encode_op(op: Op) -> bytes:
    head = bytes([op.kind]) + (op.doc_id.bytes if op.doc_id is not None else bytes(16))
    if op.kind == OP_VERSION:
        assert op.version is not None
        return head + encode_version(op.version)
    if op.kind in (OP_BIND, OP_UNBIND):
        return head + op.path
    if op.kind == OP_PRUNE:
        return head + struct.pack("<I", op.keep)
    if op.kind == OP_CREATE:
        assert op.version is not None
        return head + struct.pack("<H", len(op.path)) + op.path + encode_version(op.version)
    raise ValueError(f"unknown op {op.kind}")


def decode_op(data: bytes | memoryview) -> Op:
    r = Reader(data, "log record")
    kind = r.take(1)[0]
    doc_id = uuid.UUID(bytes=bytes(r.take(16)))
    if kind == OP_VERSION:
        op = Op(kind, doc_id, version=decode_version(r))
    elif kind in (OP_BIND, OP_UNBIND):
        op = Op(kind, doc_id, path=bytes(r.take(len(r.buf) - r.pos)))
    elif kind == OP_PRUNE:
        op = Op(kind, doc_id, keep=int.from_bytes(r.take(4), "little"))
    elif kind == OP_CREATE:
        path = bytes(r.take(int.from_bytes(r.take(2), "little")))
        op = Op(kind, doc_id, path=path, version=decode_version(r))
    else:
        raise CorruptionError(f"log record of unknown kind {kind}")
    r.end()
    return op


def chunks(size: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each checksummed chunk of a `size`-byte document."""
    if size == 0:
        yield 0, 0
        return
    for start in range(0, size, chunk_size):
        yield start, min(chunk_size, size - start)
