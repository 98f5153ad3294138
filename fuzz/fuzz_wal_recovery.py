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
new one (only a suffix of them after a checkpoint). See `HarnessBug`.

Input framing (so that one byte string can describe one or two files):

    byte 0            control: bit 0 = a sibling file follows, bit 1 = checkpoint after the
                      commit, bit 2 = append a large record (3000 bytes, forces a segment roll)
    bit 0 clear:      bytes 1..    slot 0 contents
    bit 0 set:        bytes 1..4   u32 little-endian n; bytes 5..5+n slot 0; the rest `log.1`

An empty input is an empty slot 0. The salts and session ids `wal` draws from `secrets` are
replaced, for the duration of one input, by a generator seeded from the input, so a run is
reproducible.

Modes:

    python fuzz/fuzz_wal_recovery.py --seconds 60 [--seed S]     built-in mutation fuzzer
    python fuzz/fuzz_wal_recovery.py --atheris [libFuzzer args]   coverage-guided, via atheris
    python fuzz/fuzz_wal_recovery.py FILE_OR_DIR...               run inputs, print outcomes

The built-in fuzzer (no dependency beyond `wal`) starts from `fuzz/corpus/wal/` and from valid
logs it writes itself (random batches, rollbacks, checkpoints, clean closes, power-loss images
from `MemoryVFS.crash`), mutates them (bit flips, byte sets, truncation, splices, duplicated
ranges, interesting integers in the header fields documented in `wal/format.py`, with or
without repairing the checksums afterwards), keeps inputs that reach new line-to-line edges in
`wal` (sys.settrace) or new outcomes, and saves each new bug, minimized, under
`fuzz/crashes/` (`<signature>-<sha1>.bin`, gzipped above 64 KiB, with a `.txt` traceback).
Bugs already saved there are not saved again. `--help` lists the knobs.

atheris (`pip install atheris`; not a project dependency) is used only with `--atheris`: it
instruments everything imported, mixes libFuzzer's mutations with the ones above, reads the
corpus, writes new inputs to a temporary directory and crashes to `fuzz/crashes/crash-*`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import hashlib
import importlib
import itertools
import os
import random
import re
import struct
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

FUZZ_DIR = Path(__file__).resolve().parent
REPO_DIR = FUZZ_DIR.parent
if str(REPO_DIR) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO_DIR))

from fuzzkit import Bug, FuzzStats, LineCoverage, input_files, read_input, slug  # noqa: E402
from fuzzkit import watchdog as hang_watchdog  # noqa: E402

import wal  # noqa: E402
import wal.log  # noqa: E402
import wal.segments  # noqa: E402
from wal import format as fmt  # noqa: E402
from wal.memvfs import MemoryVFS  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus" / "wal"
CRASH_DIR = FUZZ_DIR / "crashes"
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

# -- bugs the harness detects besides exceptions -------------------------------------------


class HarnessBug(Exception):
    """A violated harness invariant. `kind` is short and stable (used to deduplicate)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class InputTimeout(HarnessBug):
    """An input ran past the time limit (raised by the watchdog or measured afterwards)."""


class MemoryBlowup(HarnessBug):
    """An input's peak traced memory passed the limit."""


class InputModified(HarnessBug):
    """`wal.open` failed with WalFormatError but changed the files."""


class RoundTripError(HarnessBug):
    """A log that a session opened, wrote and closed cleanly did not read back the same."""


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
            raise InputModified(
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
            raise RoundTripError(
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
        raise RoundTripError(
            "report-count-mismatch",
            f"recovery reported {report.records} records but replay yielded {len(first)}",
        )
    if checkpointed:
        if second != expected[len(expected) - len(second) :]:
            kind = "committed-record-lost" if new not in second and not second else "records-differ"
            raise RoundTripError(f"checkpoint-{kind}", detail)
        return
    if second != expected:
        kind = "committed-record-lost" if new not in second else "records-differ"
        raise RoundTripError(kind, detail)


def memory_limit(size: int) -> int:
    return MEMORY_LIMIT if size < SMALL_INPUT else MEMORY_LIMIT + 64 * size


def run_one(
    data: bytes,
    *,
    strict: bool = True,
    memory: bool = True,
    time_limit: float = TIME_LIMIT,
    watchdog: bool = False,
) -> Outcome:
    """`execute` plus the checks: at most `time_limit` seconds and, with `memory`, a peak of
    traced memory within `memory_limit` (tracemalloc is started for the run if it is off,
    and stopped again). With `watchdog`, a hang is interrupted after 2.5 x `time_limit`
    (SIGALRM: main thread only; leave it off under pytest-timeout's signal method)."""
    started_tracing = memory and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    try:
        if memory:
            tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0] if memory else 0
        start = time.perf_counter()
        slow = lambda msg: InputTimeout("slow", msg)  # noqa: E731
        guard = hang_watchdog(time_limit * 2.5, slow) if watchdog else contextlib.nullcontext()
        with guard:
            outcome = execute(data, strict=strict)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - base if memory else 0
    finally:
        if started_tracing:
            tracemalloc.stop()
    if elapsed > time_limit:
        raise InputTimeout("slow", f"{elapsed:.2f}s for a {len(data)}-byte input ({outcome})")
    if peak > memory_limit(len(data)):
        raise MemoryBlowup(
            "memory", f"peak {peak >> 20} MiB traced for a {len(data)}-byte input ({outcome})"
        )
    return outcome


def signature(exc: BaseException) -> str:
    """A stable name for a bug: the harness kind, or the exception type and the innermost
    function inside `wal`."""
    if isinstance(exc, HarnessBug):
        return f"{type(exc).__name__}:{exc.kind}"
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve().is_relative_to(WAL_DIR)]
    if not (inside or frames):
        return name
    where = (inside or frames)[-1]
    return f"{name}@{Path(where.filename).name}:{where.name}"  # no line: stable across edits


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


# -- the mutator --------------------------------------------------------------------------------


class Mutator:
    """Seeded mutations of `FuzzCase`s; `pool` supplies splice partners."""

    def __init__(self, rng: random.Random, pool: Callable[[], bytes]) -> None:
        self.rng = rng
        self._partner = pool
        self._file_ops: list[tuple[float, Callable[[bytearray], bytearray]]] = [
            (3, self._flip_bits),
            (2, self._set_bytes),
            (2, self._truncate),
            (2, self._splice),
            (1.5, self._duplicate_range),
            (1, self._delete_range),
            (1, self._insert_bytes),
            (4, self._set_field),
            (1, self._repair),
            (0.5, self._copy_header_field),
            (0.2, self._grow),
        ]

    def mutate(self, data: bytes, rounds: int | None = None) -> bytes:
        rng = self.rng
        out = data
        for _ in range(rounds if rounds is not None else rng.choice([1, 1, 1, 2, 2, 3, 4])):
            if rng.random() < 0.1:
                out = bytes(self._raw(bytearray(out)))
            else:
                out = self._mutate_case(FuzzCase.decode(out)).encode()
        return out[:MAX_INPUT]

    def _raw(self, buf: bytearray) -> bytearray:
        """Mutate the encoded input itself: reaches odd control bytes and split lengths."""
        if not buf:
            return bytearray([self.rng.randrange(8)])
        if self.rng.random() < 0.3:
            buf[0] ^= 1 << self.rng.randrange(3)
            return buf
        return self._flip_bits(buf) if self.rng.random() < 0.5 else self._set_bytes(buf)

    def _mutate_case(self, case: FuzzCase) -> FuzzCase:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return dataclasses.replace(case, checkpoint=not case.checkpoint)
        if roll < 0.10:
            return dataclasses.replace(case, large=not case.large)
        if roll < 0.14:  # add, drop or swap the sibling
            if case.sibling is None:
                other = FuzzCase.decode(self._partner())
                return dataclasses.replace(case, sibling=other.sibling or other.log)
            if rng.random() < 0.5:
                return dataclasses.replace(case, sibling=None)
            return dataclasses.replace(case, log=case.sibling, sibling=case.log)
        use_sibling = case.sibling is not None and rng.random() < 0.35
        target = bytearray(case.sibling if use_sibling and case.sibling is not None else case.log)
        weights = [w for w, _ in self._file_ops]
        op = rng.choices([f for _, f in self._file_ops], weights)[0]
        result = bytes(op(target))[:MAX_INPUT]
        if use_sibling:
            return dataclasses.replace(case, sibling=result)
        return dataclasses.replace(case, log=result)

    def _offset(self, buf: bytearray) -> int:
        """A position biased to headers and record boundaries."""
        rng = self.rng
        if not buf:
            return 0
        roll = rng.random()
        if roll < 0.3:
            return rng.randrange(min(len(buf), HDR))
        if roll < 0.6:
            records = record_offsets(buf, 256)
            if records:
                return min(len(buf) - 1, rng.choice(records) + rng.randrange(REC))
        return rng.randrange(len(buf))

    def _flip_bits(self, buf: bytearray) -> bytearray:
        if not buf:
            return bytearray([self.rng.randrange(256)])
        for _ in range(self.rng.choice([1, 1, 2, 3, 8])):
            buf[self._offset(buf)] ^= 1 << self.rng.randrange(8)
        return buf

    def _set_bytes(self, buf: bytearray) -> bytearray:
        if not buf:
            return buf
        pos = self._offset(buf)
        value = self.rng.choice([0, 0xFF, 0x7F, 0x80, 1, self.rng.randrange(256)])
        n = self.rng.choice([1, 1, 2, 4, 8, 40])
        buf[pos : pos + n] = bytes([value]) * len(buf[pos : pos + n])
        return buf

    def _truncate(self, buf: bytearray) -> bytearray:
        rng = self.rng
        points = [0, 1, 7, 8, 9, HDR - 1, HDR, HDR + 1, HDR + REC - 1, HDR + REC]
        for offset in record_offsets(buf, 256):
            points += [offset, offset + 1, offset + REC - 1, offset + REC, offset + REC + 1]
        if buf and rng.random() < 0.5:
            points.append(rng.randrange(len(buf)))
        points.append(max(0, len(buf) - rng.randrange(1, 64)))
        return buf[: rng.choice(points)]

    def _splice(self, buf: bytearray) -> bytearray:
        other = FuzzCase.decode(self._partner())
        source = other.log if other.sibling is None or self.rng.random() < 0.5 else other.sibling
        if not source:
            return buf
        cut = self.rng.randrange(len(buf) + 1)
        start = self.rng.randrange(len(source))
        if self.rng.random() < 0.5:  # overwrite in place
            piece = source[start : start + self.rng.choice([4, 8, 40, 64, 512, len(source)])]
            buf[cut : cut + len(piece)] = piece
            return buf
        return buf[:cut] + source[start:]

    def _range(self, buf: bytearray) -> tuple[int, int]:
        start = self._offset(buf)
        rng = self.rng
        n = rng.choice([1, 4, 8, REC, REC + rng.randrange(64), rng.randrange(1, 1024)])
        return start, min(len(buf), start + n)

    def _duplicate_range(self, buf: bytearray) -> bytearray:
        if not buf:
            return buf
        start, end = self._range(buf)
        at = self._offset(buf) if self.rng.random() < 0.5 else end
        return buf[:at] + buf[start:end] * self.rng.choice([1, 1, 2, 4]) + buf[at:]

    def _grow(self, buf: bytearray) -> bytearray:
        """Repeat a range up to hundreds of KiB: looks for super-linear scans."""
        if not buf:
            return buf
        start, end = self._range(buf)
        piece = buf[start:end] or buf[-1:]
        target = self.rng.choice([16 << 10, 64 << 10, 64 << 10, 256 << 10, (1 << 20) - 4096])
        return (buf[:end] + piece * max(1, (target - len(buf)) // len(piece)) + buf[end:])[:target]

    def _delete_range(self, buf: bytearray) -> bytearray:
        start, end = self._range(buf)
        del buf[start:end]
        return buf

    def _insert_bytes(self, buf: bytearray) -> bytearray:
        pos = self._offset(buf)
        n = self.rng.choice([1, 2, 4, 8, REC])
        fill = self.rng.randbytes(n) if self.rng.random() < 0.5 else bytes(n)
        return buf[:pos] + fill + buf[pos:]

    def _set_field(self, buf: bytearray) -> bytearray:
        """Write an interesting integer into a header field, then usually repair the CRCs."""
        rng = self.rng
        records = record_offsets(buf, 256)
        if len(buf) >= HDR and (not records or rng.random() < 0.4):
            base, field = 0, rng.choice(SEGMENT_FIELDS)
        elif records:
            base, field = rng.choice(records), rng.choice(RECORD_FIELDS)
        else:
            return self._flip_bits(buf)
        pos = base + field.offset
        size = min(field.size, 8)
        current = int.from_bytes(buf[pos : pos + size], "little")
        value = rng.choice(interesting_values(size, current, len(buf)))
        buf[pos : pos + size] = value.to_bytes(size, "little")
        roll = rng.random()
        if roll < 0.55:
            return bytearray(repair_checksums(buf))
        if roll < 0.75:
            return bytearray(repair_checksums(buf, records=False))
        return buf

    def _repair(self, buf: bytearray) -> bytearray:
        return bytearray(repair_checksums(buf, records=self.rng.random() < 0.7))

    def _copy_header_field(self, buf: bytearray) -> bytearray:
        """Borrow a segment header field (salt, seq, base LSN) from a partner input."""
        other = FuzzCase.decode(self._partner())
        source = other.sibling if other.sibling and self.rng.random() < 0.5 else other.log
        if len(buf) < HDR or len(source) < HDR:
            return buf
        field = self.rng.choice(BORROWABLE)
        end = field.offset + field.size
        buf[field.offset : end] = source[field.offset : end]
        return bytearray(repair_checksums(buf, records=False))


# -- line coverage feedback -----------------------------------------------------------------------


# -- the built-in fuzzer --------------------------------------------------------------------------


def load_corpus(directory: Path) -> list[bytes]:
    return [read_input(p) for p in input_files(directory)]


def _failure(data: bytes, *, strict: bool, watchdog: bool) -> Exception | None:
    try:
        run_one(data, strict=strict, watchdog=watchdog)
    except Exception as exc:
        return exc
    return None


def _bug_signature(data: bytes, *, strict: bool, watchdog: bool) -> str | None:
    exc = _failure(data, strict=strict, watchdog=watchdog)
    return None if exc is None else signature(exc)


def minimize(
    data: bytes, sig: str, *, strict: bool, watchdog: bool, seconds: float = 20.0
) -> bytes:
    """Shrink an input while it still fails with the same signature (chunk removal, then
    zeroing chunks). Bounded by `seconds`."""
    deadline = time.monotonic() + seconds
    best = data

    def still_fails(candidate: bytes) -> bool:
        return _bug_signature(candidate, strict=strict, watchdog=watchdog) == sig

    for transform in ("remove", "zero"):
        chunk = max(1, len(best) // 2)
        while chunk >= 1 and time.monotonic() < deadline:
            pos = 1 if transform == "remove" else 5  # keep the control byte (and split)
            changed = False
            while pos < len(best) and time.monotonic() < deadline:
                if transform == "remove":
                    candidate = best[:pos] + best[pos + chunk :]
                else:
                    if not any(best[pos : pos + chunk]):
                        pos += chunk
                        continue
                    zeros = bytes(len(best[pos : pos + chunk]))
                    candidate = best[:pos] + zeros + best[pos + chunk :]
                if still_fails(candidate):
                    best, changed = candidate, True
                else:
                    pos += chunk
            if not changed:
                chunk //= 2
    return best


def save_bug(bug: Bug, crash_dir: Path, *, strict: bool) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(bug.data).hexdigest()[:12]
    stem = f"{slug(bug.signature)}-{digest}"
    if len(bug.data) > 64 << 10:
        path = crash_dir / f"{stem}.bin.gz"
        path.write_bytes(gzip.compress(bug.data, mtime=0))
    else:
        path = crash_dir / f"{stem}.bin"
        path.write_bytes(bug.data)
    case = FuzzCase.decode(bug.data)
    (crash_dir / f"{stem}.txt").write_text(
        f"signature: {bug.signature}\n"
        f"input: {len(bug.data)} bytes ({case.describe()})\n"
        f"reproduce: python fuzz/fuzz_wal_recovery.py{'' if strict else ' --no-strict'} "
        f"fuzz/crashes/{path.name}\n\n{bug.error}"
    )
    return path


def known_signatures(crash_dir: Path, *, strict: bool) -> set[str]:
    """Signatures of the saved crashes that still reproduce."""
    found: set[str] = set()
    if crash_dir.is_dir():
        for path in input_files(crash_dir):
            sig = _bug_signature(read_input(path), strict=strict, watchdog=True)
            if sig is not None:
                found.add(sig)
    return found


def fuzz(
    *,
    seed: int,
    seconds: float | None = None,
    max_inputs: int | None = None,
    corpus_dirs: Sequence[Path] = (CORPUS_DIR,),
    crash_dir: Path | None = None,
    coverage: bool = True,
    strict: bool = True,
    watchdog: bool = False,
    memory_every: int = 1,
    minimize_seconds: float = 20.0,
    generated_seeds: int = 40,
    progress: Callable[[FuzzStats], None] | None = None,
) -> FuzzStats:
    """The built-in mutation fuzzer. Stops after `seconds` or `max_inputs` (whichever comes
    first); deterministic for a given seed and `max_inputs`.

    With `coverage`, runs are traced (`LineCoverage`) and inputs reaching new edges join the
    pool; without it only new outcome fingerprints do. Tracing slows a run several fold, so a
    traced run that fails is confirmed by an untraced rerun, whose verdict counts. The memory
    check (tracemalloc, which costs another 5x under tracing) runs on every `memory_every`-th
    input and on every input that joins the pool. Bugs are collected in the stats (one per
    signature) and, with `crash_dir`, saved there minimized."""
    if seconds is None and max_inputs is None:
        raise ValueError("give seconds or max_inputs")
    rng = random.Random(seed)
    stats = FuzzStats()
    seeds = [data for d in corpus_dirs for data in load_corpus(d)]
    seeds += (
        write_valid_log(rng, crash=_random_crash(rng)).encode() for _ in range(generated_seeds)
    )
    seeds = seeds or [b""]
    pool: list[bytes] = list(seeds)
    seen_features: set[tuple[object, ...]] = set()
    cov = LineCoverage(WAL_DIR) if coverage else None
    known = known_signatures(crash_dir, strict=strict) if crash_dir is not None else set()
    mutator = Mutator(rng, lambda: rng.choice(pool))
    started = time.monotonic()
    deadline = None if seconds is None else started + seconds
    last_progress = started
    queue = list(seeds)  # every seed runs once, unmutated

    while True:
        if max_inputs is not None and stats.executed >= max_inputs:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if progress is not None and now - last_progress >= 10:
            last_progress = now
            stats.seconds, stats.pool = now - started, len(pool)
            stats.edges = len(cov.edges) if cov is not None else 0
            progress(stats)
        if queue:
            data = queue.pop(0)
        elif rng.random() < 0.03:
            data = write_valid_log(rng, crash=_random_crash(rng)).encode()
        else:
            data = mutator.mutate(rng.choice(pool))
        stats.executed += 1
        want_memory = memory_every <= 1 or stats.executed % memory_every == 0
        checked = cov is None and want_memory
        new_edges = 0
        failure: Exception | None = None
        outcome: Outcome | None = None
        if cov is None:
            outcome, failure = _attempt(data, strict=strict, memory=want_memory, watchdog=watchdog)
        else:
            with cov.tracing():
                outcome, _ = _attempt(data, strict=strict, memory=False, watchdog=watchdog)
            new_edges = cov.commit()
            if outcome is None:  # confirm untraced: tracing makes runs several times slower
                outcome, failure = _attempt(data, strict=strict, memory=True, watchdog=watchdog)
                checked = True
        if outcome is not None and failure is None:
            label = "ok" if outcome.error is None else f"{outcome.error}@{outcome.stage}"
            stats.outcomes[label] = stats.outcomes.get(label, 0) + 1
            features = outcome.features()
            interesting = new_edges > 0 or features not in seen_features
            seen_features.add(features)
            if not checked and (interesting or want_memory):  # the memory check, untraced
                _, failure = _attempt(data, strict=strict, memory=True, watchdog=watchdog)
        if failure is not None:
            _record_bug(failure, data, stats, known, crash_dir, strict=strict,
                        watchdog=watchdog, minimize_seconds=minimize_seconds)
            continue
        if interesting and len(data) <= 64 << 10:
            if len(pool) >= 4000:
                pool[rng.randrange(len(seeds), len(pool))] = data
            else:
                pool.append(data)
    stats.seconds = time.monotonic() - started
    stats.pool = len(pool)
    stats.edges = len(cov.edges) if cov is not None else 0
    return stats


def _attempt(
    data: bytes, *, strict: bool, memory: bool, watchdog: bool
) -> tuple[Outcome | None, Exception | None]:
    """`run_one`, returning the exception instead of raising it."""
    try:
        return run_one(data, strict=strict, memory=memory, watchdog=watchdog), None
    except Exception as exc:
        return None, exc


def _record_bug(
    exc: Exception,
    data: bytes,
    stats: FuzzStats,
    known: set[str],
    crash_dir: Path | None,
    *,
    strict: bool,
    watchdog: bool,
    minimize_seconds: float,
) -> None:
    sig = signature(exc)
    stats.hits[sig] = stats.hits.get(sig, 0) + 1
    if sig in known or any(b.signature == sig for b in stats.bugs):
        return
    bug = Bug(sig, data, "".join(traceback.format_exception(exc)))
    if crash_dir is not None:
        bug.data = minimize(data, sig, strict=strict, watchdog=watchdog, seconds=minimize_seconds)
        again = _failure(bug.data, strict=strict, watchdog=watchdog)
        if again is not None:  # describe the minimized input, not the original
            bug.error = "".join(traceback.format_exception(again))
        bug.path = save_bug(bug, crash_dir, strict=strict)
    stats.bugs.append(bug)


def _random_crash(rng: random.Random) -> Crash | None:
    choices: list[Crash | None] = [None, None, "none", "all", "random", "tear", "tear"]
    return rng.choice(choices)


# -- command line -----------------------------------------------------------------------------


def _atheris_main(argv: list[str]) -> None:
    atheris: Any = importlib.import_module("atheris")  # optional; not a project dependency
    rng = random.Random(0)
    holder: list[bytes] = [b""]
    mutator = Mutator(rng, lambda: holder[0])

    def test_one_input(data: bytes) -> None:
        run_one(data)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng.seed(seed)
        if rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        holder[0] = data
        return mutator.mutate(data)[:max_size]

    args = [sys.argv[0], *argv]
    options = [a for a in argv if a.startswith("-")]
    if not any(a.startswith("-timeout=") for a in options):
        args.append(f"-timeout={int(TIME_LIMIT * 3)}")
    if not any(a.startswith("-rss_limit_mb=") for a in options):
        args.append("-rss_limit_mb=4096")
    if not any(a.startswith("-artifact_prefix=") for a in options):
        CRASH_DIR.mkdir(exist_ok=True)
        args.append(f"-artifact_prefix={CRASH_DIR}{os.sep}")
    if not any(not a.startswith("-") for a in argv):
        # libFuzzer writes new inputs into the first directory: keep the committed corpus clean.
        work = tempfile.mkdtemp(prefix="wal-atheris-")
        print(f"new inputs go to {work}", file=sys.stderr)
        args += [work, str(CORPUS_DIR)]
    atheris.instrument_all()
    atheris.Setup(args, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def _print_progress(stats: FuzzStats) -> None:
    rate = stats.executed / stats.seconds if stats.seconds else 0.0
    print(
        f"[{stats.seconds:6.0f}s] {stats.executed} inputs ({rate:.0f}/s), pool {stats.pool}, "
        f"edges {stats.edges}, bugs {len(stats.bugs)}",
        flush=True,
    )


def _limit_address_space(megabytes: int) -> None:
    try:
        import resource
    except ImportError:  # not POSIX
        return
    limit = megabytes << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if "--atheris" in args_in:
        args_in.remove("--atheris")
        _atheris_main(args_in)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("inputs", nargs="*", type=Path, help="run these inputs and print outcomes")
    parser.add_argument("--seconds", type=float, help="fuzz for this long")
    parser.add_argument("--max-inputs", type=int, help="stop after this many inputs")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument("--corpus", type=Path, action="append", help=f"default: {CORPUS_DIR}")
    parser.add_argument("--crashes", type=Path, default=CRASH_DIR)
    parser.add_argument("--no-coverage", action="store_true", help="outcome feedback only")
    parser.add_argument("--no-strict", action="store_true", help="skip the round-trip checks")
    parser.add_argument("--memory-every", type=int, default=8,
                        help="tracemalloc check on every Nth input (and on each new pool entry)")
    parser.add_argument("--generated-seeds", type=int, default=40,
                        help="valid logs written at start-up to seed the pool")
    parser.add_argument("--address-space-mb", type=int, default=8192,
                        help="RLIMIT_AS for the fuzzer process (0: leave as is)")
    args = parser.parse_args(args_in)
    strict = not args.no_strict

    if args.inputs:
        failed = 0
        paths = [p for arg in args.inputs for p in (input_files(arg) if arg.is_dir() else [arg])]
        for path in paths:
            data = read_input(path)
            try:
                outcome = run_one(data, strict=strict, watchdog=True)
            except Exception as exc:
                failed += 1
                print(f"{path}: BUG {signature(exc)}")
                traceback.print_exception(exc)
            else:
                print(f"{path}: {outcome}")
        return 1 if failed else 0

    if args.seconds is None and args.max_inputs is None:
        parser.error("give --seconds N (or --max-inputs N), or input files to run")
    if args.address_space_mb:
        _limit_address_space(args.address_space_mb)
    seed = args.seed if args.seed is not None else time.time_ns() % (1 << 32)
    print(f"seed {seed}", flush=True)
    stats = fuzz(
        seed=seed,
        seconds=args.seconds,
        max_inputs=args.max_inputs,
        corpus_dirs=args.corpus or [CORPUS_DIR],
        crash_dir=args.crashes,
        coverage=not args.no_coverage,
        strict=strict,
        watchdog=True,
        memory_every=args.memory_every,
        generated_seeds=args.generated_seeds,
        progress=_print_progress,
    )
    _print_progress(stats)
    print("outcomes:")
    for label, count in sorted(stats.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:8d}  {label}")
    if stats.hits:
        print("bug signatures (inputs hitting each):")
        for sig, count in sorted(stats.hits.items(), key=lambda kv: -kv[1]):
            print(f"  {count:8d}  {sig}")
    for bug in stats.bugs:
        print(f"NEW BUG {bug.signature}: {bug.path or '(not saved)'}")
    return 1 if stats.bugs else 0


if __name__ == "__main__":
    sys.exit(main())
