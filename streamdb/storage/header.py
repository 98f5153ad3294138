"""The database file header: two copies (A in page 0, B in page 1), kept identical.

Rules (docs/format/db.md, "Header"):

H1. A checkpoint writes its header to copy `generation % 2`, fsyncs, then writes the same
    header to the other copy and fsyncs again; only then may the log forget what the
    checkpoint holds. So at any instant either both copies are the same header, or a crash
    stopped a checkpoint between its two writes: then the log still holds everything after
    the older copy's checkpoint.
H2. Of the copies whose checksums match, the one with the higher generation is current.
    One damaged copy loses nothing: the other copy is either the same header, or the older
    one of H1's crash, whose state the log rebuilds.
H3. Headers written under H1 carry FLAG_MIRRORED. A file whose only valid copy lacks it was
    written by a version that let the log forget the older copy's changes after writing
    just one copy: that copy is current only if the log proves it holds everything after
    that copy's checkpoint (the database checks).
H4. A writer that opens a file whose copies differ (one damaged, or a crash between H1's two
    writes, or a file written before H1) rewrites both copies with the current header
    before it writes anything else, so the older copy's pages are never reused while a
    copy still names them.

Byte layout (little-endian), in the first 512 bytes of each header page:

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
| 57  | 1    | flags: bit 0 encrypted, bit 1 mirrored (H3)                      |
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
from collections.abc import Callable
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
FLAG_MIRRORED = 0x2
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
        """The header of the next checkpoint (generation + 1), written under H1."""
        changes = {"flags": self.flags | FLAG_MIRRORED, **changes}
        return replace(self, generation=self.generation + 1, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Copies:
    """What the two header pages hold: each copy parsed, or None when damaged."""

    a: Header | None  # page 0
    b: Header | None  # page 1 (at the page size of the file)

    @property
    def current(self) -> Header | None:
        """H2: the valid copy with the higher generation (None: neither is valid)."""
        valid = [h for h in (self.a, self.b) if h is not None]
        return max(valid, key=lambda h: h.generation) if valid else None

    @property
    def mirrored(self) -> bool:
        """Both copies valid, identical and written under H1."""
        return self.a is not None and self.a == self.b and bool(self.a.flags & FLAG_MIRRORED)

    @property
    def single(self) -> bool:
        """Exactly one copy is valid."""
        return (self.a is None) != (self.b is None)

    def damage(self) -> list[str]:
        """The damaged copies, in words."""
        return [f"header copy {name} (page {page}) is damaged"
                for name, page, copy in (("A", 0, self.a), ("B", 1, self.b)) if copy is None]


def read_copies(pread: Callable[[int, int], bytes]) -> Copies:
    """Both header copies of a file read through `pread(size, offset)`. Copy B is looked for
    at copy A's page size, or at every possible page size when A is damaged; a copy B of
    another database (a stale header inside a data page) does not count.

    Raises UnsupportedError when the file is not ours: its first bytes are neither the
    magic, a prefix of it, nor zeros, and no valid copy B vouches for it (a damaged magic
    in copy A alone is damage, not another format); or a copy is of a newer format version.
    Two to six reads of 512 bytes. OSError passes through.
    """
    first = pread(HEADER_SIZE, 0)
    ours = could_be_ours(first)
    a = parse(first) if ours else None
    b = None
    for page_size in [a.page_size] if a is not None else [4096 << i for i in range(5)]:
        candidate = parse(pread(HEADER_SIZE, page_size))
        if (candidate is not None and candidate.page_size == page_size
                and (a is None or candidate.db_id == a.db_id)):
            b = candidate
            break
    if not ours and b is None:
        raise UnsupportedError("not a StreamDB database")
    return Copies(a, b)


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
