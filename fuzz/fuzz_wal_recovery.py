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
`.txt` traceback). Bugs already saved there are not saved again. The input model and its
mutations are in fuzz/wal_inputs.py, the machinery every harness shares in fuzz/fuzzkit/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import sys
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from fuzzkit import HarnessBug  # noqa: E402
from wal_inputs import (  # noqa: E402
    LARGE_RECORD,
    LOG_PATH,
    MAX_RECORD_SIZE,
    SEGMENT_SIZE,
    SIBLING_PATH,
    FuzzCase,
    LogImage,
    generated,
    seeded_wal_randomness,
)

import wal  # noqa: E402
import wal.log  # noqa: E402
import wal.segments  # noqa: E402
from wal.memvfs import MemoryVFS  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus" / "wal"
WAL_DIR = Path(wal.__file__).resolve().parent

TIME_LIMIT = 2.0  # seconds per input
MEMORY_LIMIT = 64 << 20  # peak traced bytes per input, for inputs under SMALL_INPUT
SMALL_INPUT = 1 << 20

# HarnessBug kinds: "slow", "memory", "format-error-modified-input" (an open that failed with
# WalFormatError changed the files), and the round-trip failures "report-count-mismatch",
# "records-differ", "committed-record-lost", "checkpoint-..." and "<stage>-failed:<error>".


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


# -- the harness --------------------------------------------------------------------------------


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
                  defaults=Defaults(coverage=True, memory_every=8, atheris_memory_every=8,
                                    strict_option=True)))
