"""Document records (values of the docs tree) and the operations logged in the WAL.

All integers little-endian; every length is checked against the buffer before use, and any
violation raises CorruptionError. Byte tables: docs/format/db.md.

A version record, 64 bytes then its arrays:

| off | size | field                                                             |
|-----|------|-------------------------------------------------------------------|
| 0   | 4    | version number (1, 2, ...)                                        |
| 4   | 1    | codec (0 none, 1 snappy, 2 lz4, 3 zstd)                           |
| 5   | 1    | checksum algorithm (1 XXH3-64, 2 CRC-32C)                         |
| 6   | 2    | flags: 0 INLINE, 1 ENCRYPTED, 2 TABLE (a chunk table), 3 LOG      |
| 8   | 8    | LSN of the commit that wrote it                                   |
| 16  | 8    | size: the document's length in bytes                              |
| 24  | 8    | stored size: bytes on disk (differs once a codec applies)         |
| 32  | 8    | created, Unix time (float64)                                      |
| 40  | 8    | modified, Unix time (float64)                                     |
| 48  | 4    | chunk size: logical bytes per chunk (stored bytes without TABLE)  |
| 52  | 4    | extent count                                                      |
| 56  | 4    | chunk count                                                       |
| 60  | 4    | reserved (nonce / appended tails)                                 |
| 64  | 12n  | extents: first page u64, page count u32                           |
|     | 8n   | chunk checksums of the stored bytes, u64 each                     |
|     | 12n  | if TABLE: stored length u32, chunk flags u16 (0 RAW), 0 u16, seal u32 |
|     | 16   | if ENCRYPTED: the version's key salt                              |
|     | 16   | if LOG: framing checksum u8, 0 u8, 0 u16, 0 u32, message count u64 |
|     | 12n  | if LOG, per chunk: index u64, offset u32 of its first frame start |
|     | 16n  | if LOG and ENCRYPTED, per chunk: the salt of its key              |
|     | s    | the stored bytes, if INLINE                                       |

A version with a codec or encryption has a TABLE: its chunks are transformed one by one
and stored back to back, so each needs its stored length. RAW marks a chunk stored without
the codec (it did not shrink); seal counts re-encryptions of the chunk (0 until appends).

A LOG version is a framed message stream (docs/format/framing.md) that grows by appends,
in place: each chunk's entry gives the index of the first message that starts in it and
its offset in the chunk (NO_FRAME: none starts there), so reading from message N seeks.
An encrypted LOG is never compressed; each append seals the chunks it writes under a key
of its own (a fresh salt), so a chunk re-sealed after a crash never reuses a nonce, and
each chunk records the salt it was sealed with.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate

from streamdb.errors import CorruptionError

FLAG_INLINE = 0x1
FLAG_ENCRYPTED = 0x2
FLAG_TABLE = 0x4
FLAG_LOG = 0x8
NO_FRAME = 0xFFFFFFFF  # log chunk entry: no frame starts in this chunk
# A log's framing checksum; "arrow": the frames are Arrow IPC messages, unframed (an Arrow
# IPC stream document grown by `append_batch`).
FRAMINGS = {None: 0, "xxh3": 1, "crc32": 2, "crc16": 3, "arrow": 4}
ARROW_STREAM = 4
CHUNK_RAW = 0x1  # chunk flag: stored without the version's codec
SALT_SIZE = 16
MAX_CHUNK = 16 << 20  # larger chunk sizes are damage: decoding one allocates that much
CODEC_MAX = 3  # codecs 1..3: snappy, lz4, zstd (streamdb/storage/transform.py)
_VERSION = struct.Struct("<IBBHQQQddIIII")
_EXTENT = struct.Struct("<QI")
_ENTRY = struct.Struct("<IHHI")  # stored length, chunk flags, reserved, seal
_LOG = struct.Struct("<BBHIQ")  # framing checksum, reserved x3, message count
_START = struct.Struct("<QI")  # first message index, its offset in the chunk


@dataclass(frozen=True, slots=True)
class LogTable:
    """A LOG version's framing checksum (FRAMINGS), message count and, per chunk,
    (index, offset in the chunk) of the first message that starts in it."""

    framing: int
    count: int
    starts: tuple[tuple[int, int], ...]
    salts: tuple[bytes, ...] = ()  # encrypted logs: per chunk, the salt of its key
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
    table: tuple[tuple[int, int, int], ...] = ()  # per chunk: stored length, flags, seal
    salt: bytes = b""  # encrypted versions: the salt of their key
    doc: bytes = field(default=b"", compare=False)  # the owner's id (not stored here)
    log: LogTable | None = None  # LOG versions: a framed message stream
    # TABLE versions: where each stored chunk starts, and the end (computed, O(chunks)).
    offsets: tuple[int, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        offsets = (0, *accumulate(n for n, _, _ in self.table)) if self.table else ()
        object.__setattr__(self, "offsets", offsets)

    @property
    def encrypted(self) -> bool:
        return bool(self.salt)

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
    flags = ((FLAG_INLINE if v.inline is not None else 0) | (FLAG_ENCRYPTED if v.salt else 0)
             | (FLAG_TABLE if v.table else 0) | (FLAG_LOG if v.log is not None else 0))
    parts = [
        _VERSION.pack(
            v.version, v.codec, v.checksum, flags, v.lsn, v.size, v.stored, v.created,
            v.modified, v.chunk_size, len(v.extents), len(v.sums), 0,
        ),
        *(_EXTENT.pack(*e) for e in v.extents),
        struct.pack(f"<{len(v.sums)}Q", *v.sums),
        *(_ENTRY.pack(length, chunk_flags, 0, seal) for length, chunk_flags, seal in v.table),
        v.salt,
    ]
    if v.log is not None:
        parts.append(_LOG.pack(v.log.framing, 0, 0, 0, v.log.count))
        parts.extend(_START.pack(*start) for start in v.log.starts)
        if v.salt:
            assert len(v.log.salts) == len(v.sums)
            parts.extend(v.log.salts)
    if v.inline is not None:
        parts.append(v.inline)
    return b"".join(parts)


def decode_version(r: Reader, doc: bytes = b"") -> Version:
    """One version record at the reader's position, owned by document `doc`. Bounded: every
    count is checked against the bytes left before anything is sized from it."""
    buf, pos = r.buf, r.pos
    if pos + _VERSION.size > len(buf):
        raise CorruptionError(f"{r.what} is truncated")
    (number, codec, algo, flags, lsn, size, stored, created, modified, chunk, n_ext, n_sum,
     _reserved) = _VERSION.unpack_from(buf, pos)
    pos += _VERSION.size
    inline_len = stored if flags & FLAG_INLINE else 0
    table_len = n_sum * _ENTRY.size if flags & FLAG_TABLE else 0
    salt_len = SALT_SIZE if flags & FLAG_ENCRYPTED else 0
    log_len = _LOG.size + n_sum * _START.size if flags & FLAG_LOG else 0
    salts_len = n_sum * SALT_SIZE if flags & FLAG_LOG and flags & FLAG_ENCRYPTED else 0
    end = (pos + n_ext * _EXTENT.size + 8 * n_sum + table_len + salt_len + log_len + salts_len
           + inline_len)
    if end > len(buf):
        raise CorruptionError(f"{r.what} declares more extents, chunks or bytes than it holds")
    extents = tuple(_EXTENT.iter_unpack(buf[pos : pos + n_ext * _EXTENT.size]))
    pos += n_ext * _EXTENT.size
    sums = struct.unpack_from(f"<{n_sum}Q", buf, pos)
    pos += 8 * n_sum
    table = tuple((n, f, seal) for n, f, _, seal in _ENTRY.iter_unpack(buf[pos : pos + table_len]))
    pos += table_len
    salt = bytes(buf[pos : pos + salt_len])
    pos += salt_len
    log = None
    if flags & FLAG_LOG:
        framing, _, _, _, count = _LOG.unpack_from(buf, pos)
        starts = tuple(_START.iter_unpack(buf[pos + _LOG.size : pos + log_len]))
        if framing not in FRAMINGS.values() or codec:
            raise CorruptionError(f"{r.what}: a message log with framing {framing} or a codec")
        pos += log_len
        salts = tuple(bytes(buf[i : i + SALT_SIZE]) for i in range(pos, pos + salts_len, SALT_SIZE))
        log = LogTable(framing, count, starts, salts)
        pos += salts_len
    inline = bytes(buf[pos : pos + inline_len]) if flags & FLAG_INLINE else None
    r.pos = end
    if (codec or salt) and not table:
        raise CorruptionError(f"{r.what}: a transformed version has no chunk table")
    if table and (sum(n for n, _, _ in table) != stored or not 0 < chunk <= MAX_CHUNK
                  or codec > CODEC_MAX or any(f & ~CHUNK_RAW for _, f, _ in table)):
        raise CorruptionError(f"{r.what}: the chunk table disagrees with the version")
    return Version(
        number, lsn, size, created, modified, algo, chunk, extents, sums, inline, codec,
        -1 if stored == size else stored, table, salt, doc, log,
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
        versions.append(decode_version(body, doc_id.bytes))
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
OP_EXTEND = 6  # doc id, version record: the latest version (same number) grew by appends


@dataclass(frozen=True, slots=True)
class Op:
    kind: int
    doc_id: uuid.UUID | None = None
    path: bytes = b""
    version: Version | None = None
    keep: int = 0


def encode_op(op: Op) -> bytes:
    head = bytes([op.kind]) + (op.doc_id.bytes if op.doc_id is not None else bytes(16))
    if op.kind in (OP_VERSION, OP_EXTEND):
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
    if kind in (OP_VERSION, OP_EXTEND):
        op = Op(kind, doc_id, version=decode_version(r, doc_id.bytes))
    elif kind in (OP_BIND, OP_UNBIND):
        op = Op(kind, doc_id, path=bytes(r.take(len(r.buf) - r.pos)))
    elif kind == OP_PRUNE:
        op = Op(kind, doc_id, keep=int.from_bytes(r.take(4), "little"))
    elif kind == OP_CREATE:
        path = bytes(r.take(int.from_bytes(r.take(2), "little")))
        op = Op(kind, doc_id, path=path, version=decode_version(r, doc_id.bytes))
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
