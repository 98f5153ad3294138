"""The database file header: two copies (A in page 0, B in page 1), written alternately.

The copy with the higher generation whose checksum matches is current. A checkpoint writes
the other copy and fsyncs it; a torn header write leaves the previous copy current. Byte
layout (little-endian), in the first 512 bytes of each header page:

| off | size | field                                                            |
|-----|------|------------------------------------------------------------------|
| 0   | 8    | magic `89 53 44 42 0D 0A 1A 0A` ("\\x89SDB\\r\\n\\x1a\\n")           |
| 8   | 2    | format version (1)                                               |
| 10  | 2    | header size (512)                                                |
| 12  | 4    | page size                                                        |
| 16  | 16   | database id (a UUID, fixed at creation)                          |
| 32  | 8    | generation: +1 per header write                                  |
| 40  | 8    | checkpoint LSN: every log record up to it is in the trees        |
| 48  | 8    | file pages: pages in use, headers included                       |
| 56  | 1    | checksum algorithm of document chunks (1 XXH3-64, 2 CRC-32C)     |
| 57  | 1    | flags: bit 0 encrypted                                           |
| 58  | 6    | reserved                                                         |
| 64  | 24   | paths tree (a TreeRef, docs/format/btree.md): path -> doc id     |
| 88  | 24   | suffix tree: reversed path -> (empty)                            |
| 112 | 24   | docs tree: doc id -> document record (which lists its paths)     |
| 136 | 24   | free tree: first page (u64 BE) -> page count (u64)               |
| 160 | 24   | reserved (a further tree)                                        |
| 184 | 64   | key check, if encrypted: scheme u8 (1), 15 reserved, salt 16, check 32 |
| 248 | 256  | reserved                                                         |
| 504 | 8    | XXH3-64 of bytes 0..503                                          |
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field, replace

import xxhash

from streamdb.errors import CorruptionError, UnsupportedError
from streamdb.storage.btree import EMPTY, TreeRef

MAGIC = b"\x89SDB\r\n\x1a\n"
VERSION = 1
HEADER_SIZE = 512
HEADER_PAGES = 2
MAX_COUNTER = 1 << 62  # generations, LSNs and page counts stay far below this
CHECKSUM_XXH3 = 1
CHECKSUM_CRC32C = 2
TREES = ("paths", "suffix", "docs", "free")
FLAG_ENCRYPTED = 0x1
KEY_CHECK = slice(184, 248)

_FIXED = struct.Struct("<8sHHI16sQQQBB6s")  # 64 bytes
assert _FIXED.size == 64


@dataclass(frozen=True, slots=True)
class Header:
    page_size: int
    db_id: uuid.UUID
    generation: int = 0
    checkpoint_lsn: int = 0
    file_pages: int = HEADER_PAGES
    checksum: int = CHECKSUM_XXH3
    flags: int = 0
    trees: dict[str, TreeRef] = field(default_factory=lambda: dict.fromkeys(TREES, EMPTY))
    key_check: bytes = bytes(64)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    def pack(self) -> bytes:
        body = _FIXED.pack(
            MAGIC, VERSION, HEADER_SIZE, self.page_size, self.db_id.bytes, self.generation,
            self.checkpoint_lsn, self.file_pages, self.checksum, self.flags, bytes(6),
        )
        body += b"".join(self.trees[name].pack() for name in TREES)
        body = body.ljust(KEY_CHECK.start, b"\x00") + self.key_check
        body = body.ljust(HEADER_SIZE - 8, b"\x00")
        return body + xxhash.xxh3_64_intdigest(body).to_bytes(8, "little")

    def next(self, **changes: object) -> Header:
        """The header of the next checkpoint (generation + 1)."""
        return replace(self, generation=self.generation + 1, **changes)  # type: ignore[arg-type]


def could_be_ours(data: bytes) -> bool:
    """False when the first bytes are neither our magic, a torn prefix of it, nor zeros: then
    the file belongs to something else and must not be touched."""
    return MAGIC.startswith(data[: len(MAGIC)].rstrip(b"\x00"))


def parse(data: bytes | memoryview) -> Header | None:
    """One header copy, or None if it is torn or damaged (checksum mismatch).

    Raises UnsupportedError for a newer format version. Callers check the magic first.
    """
    raw = bytes(data[:HEADER_SIZE])
    if len(raw) < HEADER_SIZE:
        return None
    if xxhash.xxh3_64_intdigest(raw[:-8]) != int.from_bytes(raw[-8:], "little"):
        return None
    magic, version, size, page_size, db_id, gen, lsn, pages, algo, flags, _ = (
        _FIXED.unpack_from(raw)
    )
    if magic != MAGIC or size != HEADER_SIZE:
        return None
    if version > VERSION:
        raise UnsupportedError(
            f"database format version {version} is newer than this library's {VERSION}"
        )
    try:
        trees = {name: TreeRef.unpack(raw[64 + 24 * i : 88 + 24 * i])
                 for i, name in enumerate(TREES)}
    except CorruptionError:
        return None
    # A checksummed header with values the writer never produces is damage, not a header.
    sane_size = 4096 <= page_size <= 65536 and not page_size & (page_size - 1)
    counters_ok = max(gen, lsn, pages) < MAX_COUNTER and pages >= HEADER_PAGES
    trees_ok = all(t.count <= pages * page_size and t.root < pages for t in trees.values())
    if not (sane_size and counters_ok and trees_ok and db_id != bytes(16)
            and algo in (CHECKSUM_XXH3, CHECKSUM_CRC32C)):
        return None
    return Header(page_size, uuid.UUID(bytes=db_id), gen, lsn, pages, algo, flags, trees,
                  raw[KEY_CHECK])
