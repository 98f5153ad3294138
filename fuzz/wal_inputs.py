"""The inputs of the log recovery harness (fuzz/fuzz_wal_recovery.py): how one byte string
describes a log's files and options (`FuzzCase`), valid logs written by `wal` itself
(`write_valid_log`), the record layout read from `wal/format.py`'s tables, and the
structure-aware mutations, a plug-in of the shared mutator (`LogImage`)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from fuzzkit import Mutator, Part  # noqa: E402
from fuzzkit.mutate import Op, flip_bits, set_bytes  # noqa: E402

import wal  # noqa: E402
import wal.log  # noqa: E402
import wal.segments  # noqa: E402
from wal import format as fmt  # noqa: E402
from wal.memvfs import MemoryVFS  # noqa: E402

LOG_PATH = "/fuzz/log"
SIBLING_PATH = "/fuzz/log.1"
MAX_RECORD_SIZE = 1 << 16
SEGMENT_SIZE = 4096

MAX_INPUT = 1 << 20  # the built-in fuzzer's mutations stay below this size

CTRL_SIBLING = 0x01
CTRL_CHECKPOINT = 0x02
CTRL_LARGE = 0x04
LARGE_RECORD = 3000


# -- input framing ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FuzzCase:
    """A decoded input: the two files and the options in the control byte."""

    log: bytes
    sibling: bytes | None = None
    checkpoint: bool = False
    large: bool = False

    @classmethod
    def decode(cls, data: bytes) -> FuzzCase:
        if not data:
            return cls(b"")
        control = data[0]
        flags = {"checkpoint": bool(control & CTRL_CHECKPOINT), "large": bool(control & CTRL_LARGE)}
        log, sibling = fuzzkit.inputs.unpack_files(data[1:], [True, bool(control & CTRL_SIBLING)])
        return cls(log or b"", sibling, **flags)

    def encode(self) -> bytes:
        control = (
            (CTRL_SIBLING if self.sibling is not None else 0)
            | (CTRL_CHECKPOINT if self.checkpoint else 0)
            | (CTRL_LARGE if self.large else 0)
        )
        return bytes([control]) + fuzzkit.inputs.pack_files([self.log, self.sibling])

    def describe(self) -> str:
        parts = [f"log: {len(self.log)} bytes"]
        if self.sibling is not None:
            parts.append(f"log.1: {len(self.sibling)} bytes")
        if self.checkpoint:
            parts.append("checkpoint")
        if self.large:
            parts.append("large record")
        return ", ".join(parts)


# -- deterministic randomness for wal ----------------------------------------------------------


class _SeededSecrets:
    """Stands in for the `secrets` module inside `wal.log` and `wal.segments`."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)


@contextlib.contextmanager
def seeded_wal_randomness(seed: int) -> Iterator[None]:
    """Make the salts and session ids `wal` draws reproducible for the duration."""
    modules = (vars(wal.log), vars(wal.segments))
    saved = [namespace["secrets"] for namespace in modules]
    fake = _SeededSecrets(seed)
    for namespace in modules:
        namespace["secrets"] = fake
    try:
        yield
    finally:
        for namespace, original in zip(modules, saved, strict=True):
            namespace["secrets"] = original


# -- generating valid logs ---------------------------------------------------------------------


Crash = Literal["none", "all", "random", "tear"]


def random_payload(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return b""
    if roll < 0.75:
        size = rng.randrange(1, 48)
    elif roll < 0.97:
        size = rng.randrange(48, 900)
    else:
        size = rng.randrange(900, 3000)
    style = rng.random()
    if style < 0.4:
        return rng.randbytes(size)
    if style < 0.7:
        return bytes([rng.randrange(256)]) * size
    if style < 0.85:  # things a scanner might mistake for structure
        return (fmt.MAGIC + bytes(rng.randrange(40)))[:size].ljust(size, b"\0")
    return bytes(i & 0xFF for i in range(size))


def write_valid_log(
    rng: random.Random,
    *,
    batches: int | None = None,
    close: bool | None = None,
    checkpoint_rate: float = 0.15,
    rollback_rate: float = 0.08,
    crash: Crash | None = None,
) -> FuzzCase:
    """Write a log with `wal` itself (MemoryVFS, the harness's segment size) and return the
    bytes of slot 0 and slot 1. `crash`: None, "none", "all", "random" or "tear" (a power
    loss image of the disk, see `MemoryVFS.crash`)."""
    vfs = MemoryVFS()
    with seeded_wal_randomness(rng.getrandbits(64)):
        log = wal.open(
            LOG_PATH,
            vfs=vfs,
            max_record_size=MAX_RECORD_SIZE,
            segment_size=SEGMENT_SIZE,
            sync=rng.choice(["full", "full", "batch", "off"]),
        )
        for _ in range(rng.randrange(0, 14) if batches is None else batches):
            for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
                log.append(random_payload(rng))
            if rng.random() < rollback_rate:
                log.rollback()
            else:
                log.commit()
            if log.committed_lsn and rng.random() < checkpoint_rate:
                log.checkpoint(rng.randrange(1, log.committed_lsn + 1))
            if vfs.exists(LOG_PATH + ".2"):
                break
        if rng.random() < 0.3:
            log.append(random_payload(rng))  # left pending: dropped by close, lost by a crash
        if close if close is not None else rng.random() < 0.5:
            log.close()
        if crash == "tear":
            vfs = vfs.crash(keep="none", tear=rng.randrange(0, 200), rng=rng)
        elif crash is not None:
            vfs = vfs.crash(keep=crash, rng=rng)
        # A log left open is abandoned: to the next open that is a killed process.
    files = [vfs.read_file(p) if vfs.exists(p) else b"" for p in (LOG_PATH, SIBLING_PATH)]
    sibling = files[1] if vfs.exists(SIBLING_PATH) else None
    return FuzzCase(files[0], sibling, checkpoint=rng.random() < 0.2, large=rng.random() < 0.2)


# -- structure-aware helpers --------------------------------------------------------------------

HDR = fmt.SEGMENT_HEADER_SIZE
REC = fmt.RECORD_HEADER_SIZE


@dataclasses.dataclass(frozen=True)
class Field:
    offset: int
    size: int
    name: str  # the description column of the layout table in wal/format.py


def parse_layout(doc: str) -> tuple[list[Field], list[Field]]:
    """The segment header and record header tables of `wal.format`'s docstring (the
    documented byte layout), so that the mutator follows the format as it changes. Falls
    back to 4-byte fields when the tables are missing or do not add up."""
    tables: list[list[Field]] = []
    current: list[Field] = []
    for line in doc.splitlines():
        row = re.match(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(.*?)\s*\|\s*$", line)
        if row:
            current.append(Field(int(row[1]), int(row[2]), row[3]))
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)

    def valid(fields: list[Field], total: int) -> bool:
        return sum(f.size for f in fields) == total and all(
            a.offset + a.size == b.offset for a, b in itertools.pairwise(fields)
        )

    def generic(total: int) -> list[Field]:
        return [Field(i, min(4, total - i), f"bytes {i}..") for i in range(0, total, 4)]

    segment = tables[0] if tables and valid(tables[0], HDR) else generic(HDR)
    record = tables[1] if len(tables) > 1 and valid(tables[1], REC) else generic(REC)
    return segment, record


SEGMENT_FIELDS, RECORD_FIELDS = parse_layout(fmt.__doc__ or "")


def _field(fields: list[Field], word: str, default: tuple[int, int]) -> tuple[int, int]:
    """(offset, size) of the first field whose description starts with `word`."""
    for f in fields:
        if f.name.lower().startswith(word):
            return f.offset, f.size
    return default


SALT = _field(SEGMENT_FIELDS, "salt", (16, 8))
HEADER_CRC = _field(SEGMENT_FIELDS, "crc", (HDR - 4, 4))
REC_TAG = _field(RECORD_FIELDS, "tag", (0, 4))
REC_LENGTH = _field(RECORD_FIELDS, "payload length", (8, 4))
REC_CRC = _field(RECORD_FIELDS, "crc", (12, 4))
REC_PREV_CRC = _field(RECORD_FIELDS, "crc of the previous", (32, 4))
BORROWABLE = [
    f for f in SEGMENT_FIELDS
    if re.match(r"(salt|sequence|base lsn|previous lsn|flags)", f.name.lower())
] or SEGMENT_FIELDS


def _u(buf: bytes | bytearray, at: int, field: tuple[int, int]) -> int:
    return int.from_bytes(buf[at + field[0] : at + field[0] + field[1]], "little")


def _put(buf: bytearray, at: int, field: tuple[int, int], value: int) -> None:
    buf[at + field[0] : at + field[0] + field[1]] = value.to_bytes(field[1], "little")


def record_offsets(data: bytes | bytearray, limit: int = 4096) -> list[int]:
    """Offsets of the records of a segment, following the length fields (unchecked)."""
    offsets: list[int] = []
    offset = HDR
    while offset + REC <= len(data) and len(offsets) < limit:
        length = _u(data, offset, REC_LENGTH)
        if length == 0 and not any(data[offset : offset + REC]):
            break  # zero-filled space
        offsets.append(offset)
        offset += REC + length
    return offsets


def repair_checksums(
    data: bytes | bytearray, *, header: bool = True, records: bool = True
) -> bytes:
    """Recompute the header CRC and then, record by record while the tag matches, the chain
    and CRC of each record: makes deliberate damage look valid."""
    buf = bytearray(data)
    if len(buf) < HDR or buf[: len(fmt.MAGIC)] != fmt.MAGIC:
        return bytes(buf)
    if header:
        _put(buf, 0, HEADER_CRC, fmt.crc(buf[: HEADER_CRC[0]]))
    if not records:
        return bytes(buf)
    salt = bytes(buf[SALT[0] : SALT[0] + SALT[1]])
    tag = _u(salt, 0, (0, REC_TAG[1]))
    seed = fmt.crc(salt)
    prev = 0
    for offset in record_offsets(buf):
        if _u(buf, offset, REC_TAG) != tag:
            break
        length = _u(buf, offset, REC_LENGTH)
        body = offset + REC
        if body + length > len(buf):
            break
        _put(buf, offset, REC_PREV_CRC, prev)
        value = fmt.finish_crc(bytes(buf[offset:body]), fmt.crc(buf[body : body + length], seed))
        _put(buf, offset, REC_CRC, value)
        prev = value
    return bytes(buf)


def interesting_values(size: int, current: int, file_size: int) -> list[int]:
    top = (1 << (8 * size)) - 1
    values = {0, 1, 2, top, top - 1, top >> 1, (top >> 1) + 1, current, current + 1, current - 1,
              current + 2, current - 2, current * 2, current // 2}
    if size >= 2:
        values |= {HDR - 1, HDR, HDR + 1, REC - 1, REC, REC + 1, 0xFF, 0x100}
    if size >= 4:
        values |= {SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, MAX_RECORD_SIZE,
                   MAX_RECORD_SIZE + 1, file_size, file_size - HDR - REC, 0x7FFF_FFFF,
                   0x8000_0000, 0xFFFF}
    if size >= 8:
        values |= {0xFFFF_FFFF, 1 << 32, 1 << 48}
    return sorted(v for v in values if 0 <= v <= top)


# -- the mutation plug-in -----------------------------------------------------------------------


def field_points(buf: bytes | bytearray) -> list[int]:
    """The segment header's fields, and those of every record (up to 256 of them)."""
    points = [f.offset for f in SEGMENT_FIELDS if f.offset < len(buf)]
    for offset in record_offsets(buf, 256):
        points += [offset + f.offset for f in RECORD_FIELDS]
    return points


def set_field(m: Mutator, buf: bytearray) -> bytearray:
    """Write an interesting integer into a header field, then usually repair the CRCs."""
    rng = m.rng
    records = record_offsets(buf, 256)
    if len(buf) >= HDR and (not records or rng.random() < 0.4):
        base, field = 0, rng.choice(SEGMENT_FIELDS)
    elif records:
        base, field = rng.choice(records), rng.choice(RECORD_FIELDS)
    else:
        return flip_bits(m, buf)
    at, size = base + field.offset, min(field.size, 8)
    m.put_int(buf, at, size, interesting_values(size, m.current(buf, at, size), len(buf)))
    roll = rng.random()
    if roll < 0.55:
        return bytearray(repair_checksums(buf))
    if roll < 0.75:
        return bytearray(repair_checksums(buf, records=False))
    return buf


def repair(m: Mutator, buf: bytearray) -> bytearray:
    return bytearray(repair_checksums(buf, records=m.rng.random() < 0.7))


def copy_header_field(m: Mutator, buf: bytearray) -> bytearray:
    """Borrow a segment header field (salt, seq, base LSN) from a partner input."""
    source = m.partner_part()
    if len(buf) < HDR or len(source) < HDR:
        return buf
    field = m.rng.choice(BORROWABLE)
    end = field.offset + field.size
    buf[field.offset : end] = source[field.offset : end]
    return bytearray(repair_checksums(buf, records=False))


def grow(m: Mutator, buf: bytearray) -> bytearray:
    """Repeat a range up to hundreds of KiB: looks for super-linear scans."""
    if not buf:
        return buf
    start, end = m.span(buf)
    piece = buf[start:end] or buf[-1:]
    target = m.rng.choice([16 << 10, 64 << 10, 64 << 10, 256 << 10, (1 << 20) - 4096])
    return (buf[:end] + piece * max(1, (target - len(buf)) // len(piece)) + buf[end:])[:target]


LOG_OPS: list[tuple[float, Op]] = [(4, set_field), (1, repair), (0.5, copy_header_field),
                                   (0.2, grow)]


class LogImage(fuzzkit.Format):
    """Inputs are `FuzzCase`s: the options and the sibling are changed as a whole now and
    then, the encoded bytes themselves (odd control bytes and split lengths) too; otherwise
    slot 0 or the sibling is mutated, favouring header and record fields."""

    rounds = (1, 1, 1, 2, 2, 3, 4)
    max_size = MAX_INPUT

    def whole(self, m: Mutator, data: bytes) -> bytes | None:
        rng = m.rng
        roll = rng.random()
        if roll < 0.1:  # the encoded input itself
            if not data:
                return bytes([rng.randrange(8)])
            buf = bytearray(data)
            if rng.random() < 0.3:
                buf[0] ^= 1 << rng.randrange(3)
                return bytes(buf)
            return bytes((flip_bits if rng.random() < 0.5 else set_bytes)(m, buf))
        case = FuzzCase.decode(data)
        roll = rng.random()
        if roll < 0.05:
            return dataclasses.replace(case, checkpoint=not case.checkpoint).encode()
        if roll < 0.10:
            return dataclasses.replace(case, large=not case.large).encode()
        if roll < 0.14:  # add, drop or swap the sibling
            if case.sibling is None:
                other = FuzzCase.decode(m.partner())
                return dataclasses.replace(case, sibling=other.sibling or other.log).encode()
            if rng.random() < 0.5:
                return dataclasses.replace(case, sibling=None).encode()
            return dataclasses.replace(case, log=case.sibling, sibling=case.log).encode()
        return None

    def part(self, m: Mutator, data: bytes) -> Part:
        case = FuzzCase.decode(data)
        if case.sibling is not None and m.rng.random() < 0.35:
            return Part(case.sibling, lambda b: dataclasses.replace(case, sibling=b).encode(),
                        LOG_OPS, field_points)
        return Part(case.log, lambda b: dataclasses.replace(case, log=b).encode(), LOG_OPS,
                    field_points)


def generated(rng: random.Random) -> bytes:
    choices: list[Crash | None] = [None, None, "none", "all", "random", "tear", "tear"]
    return write_valid_log(rng, crash=rng.choice(choices)).encode()
