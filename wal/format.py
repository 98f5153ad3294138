"""The log's byte layout: one constants module shared by the writer and recovery.

All integers little-endian. See docs/format/wal.md for the tables and the reasoning.

Segment header, 64 bytes at offset 0 of every segment file:

| off | size | field                                                     |
|-----|------|-----------------------------------------------------------|
| 0   | 8    | magic `89 53 44 42 57 41 4C 0A` ("\\x89SDBWAL\\n")          |
| 8   | 2    | format version (1)                                        |
| 10  | 2    | header size (64)                                          |
| 12  | 4    | flags: bit 0 FREE (segment holds nothing current)         |
| 16  | 8    | salt: random, new each time the header is written         |
| 24  | 8    | sequence number of the segment in the log (0 when FREE)   |
| 32  | 8    | base LSN: no record in this segment has a smaller LSN     |
| 40  | 8    | previous LSN: the last record of the previous segment     |
| 48  | 1    | record checksum algorithm (1 = CRC-32C)                   |
| 49  | 11   | reserved, zero                                            |
| 60  | 4    | CRC-32C of bytes 0..59                                    |

Record, 40-byte header then the payload, back to back from offset 64:

| off | size | field                                                     |
|-----|------|-----------------------------------------------------------|
| 0   | 4    | tag: low 32 bits of the segment salt                      |
| 4   | 1    | kind (1 = DATA, 2 = CLOSE; others reserved)               |
| 5   | 1    | flags: bit 0 END (last record of a commit batch)          |
| 6   | 2    | reserved, zero (e.g. a payload codec later)               |
| 8   | 4    | payload length                                            |
| 12  | 4    | CRC-32C, seeded with CRC-32C(salt), over payload then header bytes 0..11, 16..39 |
| 16  | 8    | LSN (strictly increasing along the log)                   |
| 24  | 8    | durable LSN: every record up to it was fsynced before this one was written |
| 32  | 4    | CRC of the previous record in this segment (0 for the first) |
| 36  | 4    | writer session: random per open of the log               |

A CLOSE record always has END set (it ends the last batch); one without END is not valid.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import crc32c as _crc32c

from wal.errors import WalCorruptionError, WalFormatError

MAGIC = b"\x89SDBWAL\n"
VERSION = 1
SEGMENT_HEADER_SIZE = 64
RECORD_HEADER_SIZE = 40
CHECKSUM_CRC32C = 1

FLAG_FREE = 0x1
KIND_DATA = 1
KIND_CLOSE = 2
FLAG_END = 0x1

MAX_PAYLOAD = 0xFFFF_FFFF  # the length field is a u32
# LSNs and sequence numbers are u64 on disk; values past 2**62 cannot come from a real log
# (a million records a second would take 146,000 years) and are refused as damage, which
# keeps every "+ 1" the writer does far from overflowing.
MAX_COUNTER = 1 << 62

_SEG = struct.Struct("<8sHHIQQQQB11s")  # 60 bytes; the CRC follows
_REC = struct.Struct("<IBBHIIQQII")  # 40 bytes
assert _SEG.size == SEGMENT_HEADER_SIZE - 4 and _REC.size == RECORD_HEADER_SIZE


def crc(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """CRC-32C (Castagnoli), continuing from `seed`. O(len), in C."""
    return int(_crc32c.crc32c(data, seed))


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    flags: int
    salt: int
    seq: int
    base_lsn: int
    prev_lsn: int = 0
    # Derived from the salt once, since every record written or read uses them.
    tag: int = field(init=False, repr=False, compare=False)  # the salt's low 32 bits
    seed: int = field(init=False, repr=False, compare=False)  # CRC-32C of the salt

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", self.salt & 0xFFFF_FFFF)
        object.__setattr__(self, "seed", crc(self.salt.to_bytes(8, "little")))

    @property
    def free(self) -> bool:
        return bool(self.flags & FLAG_FREE)

    def pack(self) -> bytes:
        body = _SEG.pack(
            MAGIC, VERSION, SEGMENT_HEADER_SIZE, self.flags, self.salt, self.seq,
            self.base_lsn, self.prev_lsn, CHECKSUM_CRC32C, bytes(11),
        )
        return body + crc(body).to_bytes(4, "little")


def is_blank(data: bytes) -> bool:
    """True for a file a crash left before its first header landed: empty, or a prefix of one.

    Such a file may be (re)initialised. Anything else without our magic is somebody else's.
    """
    if len(data) >= SEGMENT_HEADER_SIZE:
        return False
    return MAGIC.startswith(data[: len(MAGIC)]) or not any(data)


def parse_segment_header(data: bytes) -> SegmentHeader | None:
    """The header, or None if its CRC does not match (torn or damaged).

    Raises WalFormatError when the bytes are not a log segment or are of a newer version:
    callers must then leave the file untouched.
    """
    if len(data) < SEGMENT_HEADER_SIZE or data[:8] != MAGIC:
        raise WalFormatError("not a StreamDB write-ahead log (bad magic)")
    _, version, size, flags, salt, seq, base, prev, algo, _ = _SEG.unpack_from(data)
    if version > VERSION:
        raise WalFormatError(f"log format version {version} is newer than this library's {VERSION}")
    if crc(data[: _SEG.size]) != int.from_bytes(data[_SEG.size : SEGMENT_HEADER_SIZE], "little"):
        return None
    if version != VERSION or size != SEGMENT_HEADER_SIZE or algo != CHECKSUM_CRC32C:
        raise WalFormatError(f"unsupported log header (version {version}, size {size})")
    live = not flags & FLAG_FREE
    if not all(salt >> (8 * i) & 0xFF for i in range(4)):
        # The writer never makes a tag with a zero byte; one would make zero-filled space
        # a candidate record at every byte when recovery searches for records.
        raise WalCorruptionError("log header holds an implausible salt")
    if max(seq, base, prev) >= MAX_COUNTER or base < 1 or (live and not (seq >= 1 and prev < base)):
        raise WalCorruptionError("log header holds an implausible sequence number or LSN")
    return SegmentHeader(flags, salt, seq, base, prev)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    tag: int
    kind: int
    flags: int
    reserved: int
    length: int
    crc: int
    lsn: int
    durable_lsn: int
    prev_crc: int
    session: int

    @property
    def end(self) -> bool:
        return bool(self.flags & FLAG_END)

    def plausible(self, tag: int, room: int) -> bool:
        """Cheap structural checks before the CRC is worth computing."""
        return (
            self.tag == tag
            and self.kind in (KIND_DATA, KIND_CLOSE)
            and not self.flags & ~FLAG_END
            and (self.kind == KIND_DATA or bool(self.flags & FLAG_END))  # CLOSE ends a batch
            and self.reserved == 0
            and self.length <= room
            and self.durable_lsn < self.lsn < MAX_COUNTER
        )


def pack_record_header(
    *,
    tag: int,
    kind: int,
    flags: int,
    length: int,
    payload_crc: int,
    lsn: int,
    durable_lsn: int,
    prev_crc: int,
    session: int,
) -> tuple[bytes, int]:
    """The header and the record CRC, given the payload's CRC from the segment seed."""
    head = _REC.pack(tag, kind, flags, 0, length, 0, lsn, durable_lsn, prev_crc, session)
    value = finish_crc(head, payload_crc)
    return head[:12] + value.to_bytes(4, "little") + head[16:], value


def parse_record_header(data: bytes | memoryview) -> RecordHeader:
    """Decode 40 bytes; validation is `plausible` plus the CRC."""
    return RecordHeader(*_REC.unpack_from(data))


def finish_crc(header: bytes | memoryview, payload_crc: int) -> int:
    """The record CRC given its header bytes and the running CRC over its payload."""
    return crc(header[16:RECORD_HEADER_SIZE], crc(header[:12], payload_crc))
