#!/usr/bin/env python3
"""Fuzz harness for `wal` log recovery.

One input is one disk image. The target writes it into a fresh `wal.memvfs.MemoryVFS` as the
log file `/fuzz/log` (slot 0) and, optionally, the sibling segment `/fuzz/log.1`, then:

1. opens it (`wal.open(..., max_record_size=1 << 16, segment_size=4096)`), which recovers;
2. iterates `replay()` fully;
3. appends and commits one record (and, if the input asks, checkpoints it);
4. closes, reopens, replays again and closes.

Accepted outcomes: success, or a `wal.WalError` at any step. Everything else is a bug and is
raised: any other exception, an input that runs longer than `TIME_LIMIT` seconds, a peak of
traced memory above `MEMORY_LIMIT` (for inputs under 1 MiB), files changed by an open that
failed with `WalFormatError` (the error tree promises the file is left untouched), and, in
strict mode (the default), a log that does not round-trip: once the first session finished
without error, the reopen must succeed and replay the first session's records followed by the
new one (only a suffix of them after a checkpoint). See the `HarnessBug` kinds below.

Input framing (so that one byte string can describe one or two files):

    byte 0            control: bit 0 = a sibling file follows, bit 1 = checkpoint after the
                      commit, bit 2 = append a large record (3000 bytes, forces a segment roll)
    bit 0 clear:      bytes 1..    slot 0 contents
    bit 0 set:        bytes 1..4   u32 little-endian n; bytes 5..5+n slot 0; the rest `log.1`

An empty input is an empty slot 0. The salts and session ids `wal` draws from `secrets` are
replaced, for the duration of one input, by a generator seeded from the input, so a run is
reproducible.

Modes (`fuzzkit.cli`; `--help` lists the knobs):

    python fuzz/fuzz_wal_recovery.py --seconds 60 [--seed S]     built-in mutation fuzzer
    python fuzz/fuzz_wal_recovery.py --atheris [-- ARGS]         coverage-guided (atheris)
    python fuzz/fuzz_wal_recovery.py FILE_OR_DIR...              run inputs, print outcomes

The built-in fuzzer starts from `fuzz/corpus/wal/` and from valid logs it writes itself
(random batches, rollbacks, checkpoints, clean closes, power-loss images from
`MemoryVFS.crash`), mutates them (the shared mutations, plus interesting integers in the
header fields documented in `wal/format.py`, with or without repairing the checksums
afterwards, borrowed header fields, grown ranges, control bits and sibling swaps), keeps
inputs that reach new line-to-line edges in `wal` or new outcomes, and saves each new bug,
minimized, under `fuzz/crashes/` (`wal-<signature>-<sha1>.bin`, gzipped above 64 KiB, with a
`.txt` traceback). Bugs already saved there are not saved again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import random
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from fuzzkit import HarnessBug, Mutator, Part  # noqa: E402
from fuzzkit.mutate import Op, flip_bits, set_bytes  # noqa: E402

import wal  # noqa: E402
import wal.log  # noqa: E402
import wal.segments  # noqa: E402
from wal import format as fmt  # noqa: E402
from wal.memvfs import MemoryVFS  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus" / "wal"
WAL_DIR = Path(wal.__file__).resolve().parent

LOG_PATH = "/fuzz/log"
SIBLING_PATH = "/fuzz/log.1"
MAX_RECORD_SIZE = 1 << 16
SEGMENT_SIZE = 4096

TIME_LIMIT = 2.0  # seconds per input
MEMORY_LIMIT = 64 << 20  # peak traced bytes per input, for inputs under SMALL_INPUT
SMALL_INPUT = 1 << 20
MAX_INPUT = 1 << 20  # the built-in fuzzer's mutations stay below this size

CTRL_SIBLING = 0x01
CTRL_CHECKPOINT = 0x02
CTRL_LARGE = 0x04
LARGE_RECORD = 3000

# HarnessBug kinds: "slow", "memory", "format-error-modified-input" (an open that failed with
# WalFormatError changed the files), and the round-trip failures "report-count-mismatch",
# "records-differ", "committed-record-lost", "checkpoint-..." and "<stage>-failed:<error>".

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
        if not control & CTRL_SIBLING:
            return cls(data[1:], None, **flags)
        size = int.from_bytes(data[1:5].ljust(4, b"\0"), "little")
        return cls(data[5 : 5 + size], data[5 + size :], **flags)

    def encode(self) -> bytes:
        control = (
            (CTRL_SIBLING if self.sibling is not None else 0)
            | (CTRL_CHECKPOINT if self.checkpoint else 0)
            | (CTRL_LARGE if self.large else 0)
        )
        if self.sibling is None:
            return bytes([control]) + self.log
        return bytes([control]) + struct.pack("<I", len(self.log)) + self.log + self.sibling

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


# -- the target ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one input ended: `exception` is None on success, else the WalError raised at
    `stage` ("open", "replay", "append", "commit", "checkpoint", "close", "reopen", ...)."""

    stage: str
    exception: wal.WalError | None = None
    report: wal.RecoveryReport | None = None  # of the first open
    records: int = 0  # replayed by the first session

    @property
    def error(self) -> str | None:
        return None if self.exception is None else type(self.exception).__name__

    @property
    def message(self) -> str:
        return "" if self.exception is None else str(self.exception)

    def features(self) -> tuple[object, ...]:
        """A coarse fingerprint, used as feedback when line coverage is off."""
        report = self.report
        shape = (
            None
            if report is None
            else (report.clean, report.torn, report.segments, min(report.records, 3),
                  min(report.discarded_records, 2))
        )
        return (self.stage, self.error, re.sub(r"\d+", "N", self.message)[:80], shape)

    def __str__(self) -> str:
        text = "ok" if self.error is None else f"{self.error} at {self.stage}: {self.message}"
        if self.report is not None:
            r = self.report
            text += (
                f" [recovered {r.records} records, last_lsn={r.last_lsn}, clean={r.clean}, "
                f"torn={r.torn}, segments={r.segments}]"
            )
        return text


def _snapshot(vfs: MemoryVFS) -> dict[str, bytes]:
    return {path: vfs.read_file(path) for path in (LOG_PATH, SIBLING_PATH) if vfs.exists(path)}


def _open(vfs: MemoryVFS) -> wal.WriteAheadLog:
    """`wal.open`, checking that a WalFormatError leaves every file as it was."""
    before = _snapshot(vfs)
    try:
        return wal.open(
            LOG_PATH, vfs=vfs, max_record_size=MAX_RECORD_SIZE, segment_size=SEGMENT_SIZE
        )
    except wal.WalFormatError as exc:
        after = _snapshot(vfs)
        if after != before:
            paths = before.keys() | after.keys()
            changed = sorted(p for p in paths if before.get(p) != after.get(p))
            raise HarnessBug(
                "format-error-modified-input",
                f"open raised WalFormatError ({exc}) but changed {', '.join(changed)}",
            ) from exc
        raise


def _close_after_error(log: wal.WriteAheadLog) -> None:
    """Close a log a WalError interrupted; a further WalError is accepted, nothing else is."""
    with contextlib.suppress(wal.WalError):
        log.close()


def _new_payload(data: bytes, large: bool) -> bytes:
    digest = hashlib.sha256(data).digest()
    if large:
        return (digest * (LARGE_RECORD // len(digest) + 1))[:LARGE_RECORD]
    return b"fuzz:" + digest[:27]


def execute(data: bytes, *, strict: bool = True) -> Outcome:
    """Run one input through open, replay, append, commit, close, reopen, replay.

    Returns the outcome when it is success or a WalError; raises anything else, and
    `HarnessBug` for the invariants in the module docstring. No time or memory checks:
    see `run_one`.
    """
    case = FuzzCase.decode(data)
    vfs = MemoryVFS()
    vfs.write_file(LOG_PATH, case.log)
    if case.sibling is not None:
        vfs.write_file(SIBLING_PATH, case.sibling)
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    with seeded_wal_randomness(seed):
        return _sessions(vfs, case, _new_payload(data, case.large), strict=strict)


def _sessions(vfs: MemoryVFS, case: FuzzCase, payload: bytes, *, strict: bool) -> Outcome:
    try:
        log = _open(vfs)
    except wal.WalError as exc:
        return Outcome("open", exc)
    report = log.recovery
    stage = "replay"
    try:
        first = [(r.lsn, r.payload) for r in log.replay()]
        stage = "append"
        lsn = log.append(payload)
        stage = "commit"
        log.commit()
        if case.checkpoint:
            stage = "checkpoint"
            log.checkpoint(lsn)
        stage = "close"
        log.close()
    except wal.WalError as exc:
        _close_after_error(log)
        return Outcome(stage, exc, report)

    stage = "reopen"
    try:
        log = _open(vfs)
        stage = "replay2"
        try:
            second = [(r.lsn, r.payload) for r in log.replay()]
            stage = "close2"
            log.close()
        except wal.WalError:
            _close_after_error(log)
            raise
    except wal.WalError as exc:
        if strict:
            raise HarnessBug(
                f"{stage}-failed:{type(exc).__name__}",
                f"the log was opened, written and closed without error, then {stage} "
                f"raised {exc!r}",
            ) from exc
        return Outcome(stage, exc, report, len(first))

    if strict:
        _check_round_trip(first, (lsn, payload), second, report, checkpointed=case.checkpoint)
    return Outcome("done", None, report, len(first))


def _check_round_trip(
    first: list[tuple[int, bytes]],
    new: tuple[int, bytes],
    second: list[tuple[int, bytes]],
    report: wal.RecoveryReport,
    *,
    checkpointed: bool,
) -> None:
    expected = [*first, new]

    def lsns(records: list[tuple[int, bytes]]) -> str:
        shown = [lsn for lsn, _ in records]
        return str(shown if len(shown) <= 8 else [*shown[:3], "...", *shown[-3:]])

    detail = f"expected LSNs {lsns(expected)}, replayed {lsns(second)}"
    if report.records != len(first):
        raise HarnessBug(
            "report-count-mismatch",
            f"recovery reported {report.records} records but replay yielded {len(first)}",
        )
    if checkpointed:
        if second != expected[len(expected) - len(second) :]:
            kind = "committed-record-lost" if new not in second and not second else "records-differ"
            raise HarnessBug(f"checkpoint-{kind}", detail)
        return
    if second != expected:
        kind = "committed-record-lost" if new not in second else "records-differ"
        raise HarnessBug(kind, detail)



def memory_limit(size: int) -> int:
    return MEMORY_LIMIT if size < SMALL_INPUT else MEMORY_LIMIT + 64 * size


def run_one(data: bytes, *, strict: bool = True, memory: bool = True,
            time_limit: float = TIME_LIMIT, watchdog: bool = False) -> Outcome:
    """`execute` within `time_limit` seconds and, with `memory`, a peak of traced memory
    within `memory_limit` (see `fuzzkit.bounded`). With `watchdog`, a hang is interrupted
    after 2.5 x `time_limit` (SIGALRM: main thread only; leave it off under pytest-timeout's
    signal method)."""
    return fuzzkit.bounded(lambda: execute(data, strict=strict), size=len(data),
                           time_limit=time_limit,
                           memory_limit=memory_limit(len(data)) if memory else None,
                           hang_after=time_limit * 2.5 if watchdog else None)


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


# -- the harness --------------------------------------------------------------------------------


def generated(rng: random.Random) -> bytes:
    choices: list[Crash | None] = [None, None, "none", "all", "random", "tear", "tear"]
    return write_valid_log(rng, crash=rng.choice(choices)).encode()


def outcome_label(outcome: Outcome) -> str:
    return "ok" if outcome.error is None else f"{outcome.error}@{outcome.stage}"


def harness(strict: bool = True, watchdog: bool = False) -> fuzzkit.Harness:
    """This harness for the shared machinery; `strict` and `watchdog` as in `run_one`."""
    return fuzzkit.Harness(
        name="wal", script="fuzz/fuzz_wal_recovery.py" + ("" if strict else " --no-strict"),
        corpus_dir=CORPUS_DIR, code_dirs=(WAL_DIR,),
        run=lambda data, memory: run_one(data, strict=strict, memory=memory, watchdog=watchdog),
        fmt=LogImage(), generate=generated,
        describe=lambda data: FuzzCase.decode(data).describe(), label=outcome_label,
        features=Outcome.features, keep=1, shrink_zero=True, minimize_seconds=20.0,
        time_limit=TIME_LIMIT, fresh_rate=0.03, pool_limit=4000, pool_input_limit=64 << 10)


def signature(exc: BaseException) -> str:
    return harness().signature(exc)


def fuzz(*, seed: int, seconds: float | None = None, max_inputs: int | None = None,
         corpus_dirs: list[Path] | None = None, crash_dir: Path | None = None,
         coverage: bool = True, strict: bool = True, memory_every: int = 1,
         generated_seeds: int = 40) -> fuzzkit.FuzzStats:
    """The built-in fuzzer (`fuzzkit.fuzz`) on this harness, without the hang watchdog."""
    return fuzzkit.fuzz(harness(strict), seed=seed, seconds=seconds, max_inputs=max_inputs,
                        corpus_dirs=corpus_dirs, generated_seeds=generated_seeds,
                        crash_dir=crash_dir, coverage=coverage, memory_every=memory_every)


if __name__ == "__main__":
    from fuzzkit.cli import Defaults, main

    sys.exit(main(lambda strict: harness(strict, watchdog=True), __doc__,
                  defaults=Defaults(coverage=True, memory_every=8, strict_option=True)))
