#!/usr/bin/env python3
"""Fuzz harness for opening, reading and writing a damaged StreamDB database.

One input is a disk image: the database file and, optionally, its log segments. The target
writes it into a fresh `wal.memvfs.MemoryVFS` (`/fuzz/t.db`, `/fuzz/t.db-wal`,
`/fuzz/t.db-wal.1`), then:

1. opens it (`streamdb.open`; page size 4096 and durability "normal" for new files,
   max_document_size 32 MiB; with the compression and the fixed test key `TEST_KEY` the
   input selects, and in quick mode, checksums not verified on read, if it asks);
2. lists every path (`list(db)`, `db.search("/")`, `db.search_suffix("")`); calls
   `db.info` on every path found and reads each message log (`info().messages` not None)
   with `db.messages`: from its middle and its last message (seeks by the chunk entries),
   then whole (before the gets, so that a damaged log reaches the message reader rather
   than `get`); gets every document found; calls `db.verify()` if the database has one;
3. writes one new document (100 bytes, or 100 KB when the input asks: under a codec, its
   first 70,000 bytes do not compress, so it goes to pages) and closes;
4. reopens (same config), reads the new document back, lists the paths again and closes.

When the first open fails with CorruptionError, the harness checks that no file changed,
then opens again with recover="truncate-log" (the salvage): it may fail with a StreamDbError
(damage outside the log), or succeed, report what it dropped, leave byte-identical copies
of the log files, and leave a database that opens without `recover`.

Accepted outcomes: success, or a `streamdb.errors.StreamDbError` at any step. Everything else
is a bug and is raised (see `HarnessBug`): another exception; an input that runs longer than
`TIME_LIMIT`; a traced-memory peak above `MEMORY_LIMIT`; a write that would make a file
larger than `DISK_LIMIT` (refused before the memory is taken: no input comes near it, so the
database trusted a damaged size or page number); an open that failed (with any StreamDbError)
but changed, created or removed a file; an open with recover="truncate-log" after a
CorruptionError that succeeds without reporting a salvage, whose copies of the log files
differ from them, or after which an open without `recover` fails; an image written by the
seed generator (a clean database or a simulated power loss) that does not open and read
cleanly; and, in strict mode
(the default), a session that ran without error whose paths and new document do not read
back after the reopen.

Input framing: byte 0 is a control byte (bit 0: a `-wal` file follows, bit 1: a `-wal.1`
file follows, bit 2: the new document is large, bit 3: open with the encryption key
`TEST_KEY`, bits 4-5: compression 0 none, 1 snappy, 2 lz4, 3 zstd, bit 6: quick mode).
The files follow in the order db, wal, wal.1; each but the last is prefixed by its length
(u32 little-endian). Empty input: an empty database file. Randomness the library draws
(ids, key salts, clock) is seeded from the input, so every run of an input is the same.

Modes (`fuzzkit.cli`; `--help` lists the knobs):

    python fuzz/fuzz_db_open.py --seconds 60 [--seed S]    built-in mutation fuzzer
    python fuzz/fuzz_db_open.py --atheris [-- ARGS]         coverage-guided (atheris)
    python fuzz/fuzz_db_open.py FILE_OR_DIR...              replay inputs, print outcomes

The built-in fuzzer starts from `fuzz/corpus/db/` and from databases it builds (documents of
0..300 KB, overwrites, deletes, aliases, checkpoints, some with message logs of each
checksum kind grown by appends; closed, or cut by a simulated power loss; plain, or
compressed and/or encrypted, some with an incompressible document on pages), mutates them
(the shared mutations, plus page swaps and copies, interesting integers in the header, key
check and tree page fields, with checksums repaired or not, log payloads with their CRCs
repaired, now and then another compression, key or quick mode), keeps inputs with new
outcomes, and saves one input per bug signature not saved yet under `fuzz/crashes/`
(`db-<signature>-<sha1>.bin[.gz]` and a `.txt` with the traceback). The input model and
its mutations are in fuzz/db_inputs.py, the machinery every harness shares in fuzz/fuzzkit/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from db_inputs import CONFIG as CONFIG  # noqa: E402
from db_inputs import DB_PATH as DB_PATH  # noqa: E402
from db_inputs import (  # noqa: E402
    PLAIN,
    DiskImage,
    Mode,
    deterministic,
    random_seed,
)
from db_inputs import FuzzCase as FuzzCase  # noqa: E402
from db_inputs import log_records as log_records  # noqa: E402
from db_inputs import repair_log as repair_log  # noqa: E402
from fuzzkit import HarnessBug  # noqa: E402

import streamdb  # noqa: E402
import wal  # noqa: E402
from streamdb.errors import CorruptionError, StreamDbError  # noqa: E402
from wal.memvfs import MemoryFile, MemoryVFS  # noqa: E402
from wal.vfs import Buffer  # noqa: E402

# CONFIG, DB_PATH, FuzzCase, log_records and repair_log are re-exported (`as`): other tests
# (salvage, failed opens) take them from here.
CORPUS_DIR = FUZZ_DIR / "corpus" / "db"
CODE_DIRS = (Path(streamdb.__file__).resolve().parent, Path(wal.__file__).resolve().parent)

NEW_PATH = "/fuzz/new"

TIME_LIMIT = 2.0  # seconds per input
MEMORY_LIMIT = 128 << 20  # peak traced bytes per input
DISK_LIMIT = 64 << 20  # no file of a session may grow past this


# -- a bounded disk -------------------------------------------------------------------------------


class _BoundedFile(MemoryFile):
    def _grow(self, end: int) -> None:
        if end > DISK_LIMIT:
            raise HarnessBug("huge-file", f"{self.path} would grow to {end} bytes")

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        self._grow(offset + sum(memoryview(b).nbytes for b in buffers))
        super().pwritev(buffers, offset)

    def truncate(self, size: int) -> None:
        self._grow(size)
        super().truncate(size)

    def allocate(self, size: int) -> None:
        self._grow(size)
        super().allocate(size)


class BoundedVFS(MemoryVFS):
    """A `MemoryVFS` whose files raise HarnessBug instead of growing past DISK_LIMIT."""

    def open(self, path: str, *, create: bool = False) -> MemoryFile:
        inner = super().open(path, create=create)
        return _BoundedFile(self, path, inner._inode)


# -- the target -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How an input ended: `exception` is None on success, else the error raised at `stage`."""

    stage: str
    exception: StreamDbError | None = None
    paths: int = 0
    mode: Mode = PLAIN
    messages: int = 0  # messages read from message logs (all three reads of each)

    @property
    def error(self) -> str | None:
        return None if self.exception is None else type(self.exception).__name__

    def features(self) -> tuple[object, ...]:
        message = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "N", str(self.exception or ""))
        # Plain and transformed inputs are told apart, not the 16 modes: the pool would
        # fill with the same outcome under every mode.
        return (self.stage, self.error, message[:70], min(self.paths, 4), self.mode.transformed,
                self.messages > 0)

    def __str__(self) -> str:
        read = f", {self.messages} messages read" if self.messages else ""
        if self.exception is None:
            return f"ok ({self.paths} paths{read})"
        return f"{self.error} at {self.stage}{read}: {self.exception}"


def _snapshot(vfs: MemoryVFS) -> dict[str, bytes]:
    """Every file of the session's directory, by path."""
    folder = os.path.dirname(DB_PATH)
    return {p: vfs.read_file(p) for p in (f"{folder}/{n}" for n in vfs.listdir(folder))}


def _close_quietly(db: streamdb.Database) -> None:
    with contextlib.suppress(StreamDbError):
        db.close()


def execute(data: bytes, *, strict: bool = True) -> Outcome:
    """Run one input through the steps of the module docstring. Returns the outcome when it
    is success or a StreamDbError; raises anything else and HarnessBug. No time or memory
    checks: see `run_one`."""
    case = FuzzCase.decode(data)
    vfs = BoundedVFS()
    for path, content in case.files().items():
        vfs.write_file(path, content)
    digest = hashlib.sha256(data).digest()
    payload = (digest * (100_000 // 32 + 1))[:100_000] if case.large else digest * 3 + b"end"
    if case.large and case.mode.codec:  # incompressible enough to go to pages
        payload = hashlib.shake_256(digest).digest(70_000) + payload[70_000:]
    with deterministic(int.from_bytes(digest[:8], "little")):
        return _session(vfs, list(case.files()), payload, case.mode, strict=strict)


def _open(vfs: MemoryVFS, mode: Mode) -> streamdb.Database:
    db = streamdb.open(DB_PATH, mode.config(), vfs=vfs)
    if mode.quick:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            db.set_quick_mode(True)
    return db


def _read_log(db: streamdb.Database, path: str, count: int) -> int:
    """Read the message log at `path` (of `count` messages, by its record): from its
    middle and its last message (seeks by the chunk entries), then whole. Returns the
    messages read."""
    read, touched = 0, hashlib.sha1()
    for start in (count // 2, max(count - 1, 0), 0):
        for message in db.messages(path, start):
            touched.update(message)  # every payload byte is there to read
            read += 1
    return read


def _session(vfs: MemoryVFS, inputs: list[str], payload: bytes, mode: Mode = PLAIN, *,
             strict: bool) -> Outcome:
    before = _snapshot(vfs)
    try:
        db = _open(vfs, mode)
    except StreamDbError as exc:
        after = _snapshot(vfs)
        if after != before:
            changed = sorted(Path(p).name for p in {*before, *after}
                             if before.get(p) != after.get(p))
            raise HarnessBug(f"open-failed-but-modified-{'+'.join(changed)}",
                             f"open raised {exc!r} and changed {changed}") from exc
        if isinstance(exc, CorruptionError):
            return _salvage(vfs, mode, before, exc)
        return Outcome("open", exc, mode=mode)
    stage, paths, messages = "list", [], 0
    try:
        paths = list(db)
        stage = "search"
        found = {*paths, *db.search("/")}
        stage = "search_suffix"
        found.update(db.search_suffix(""))
        for path in sorted(found):
            stage = "info"
            count = db.info(path).messages
            if count is not None:  # a message log
                stage = "messages"
                messages += _read_log(db, path, count)
        stage = "get"
        for path in sorted(found):
            db.get(path)
        verify = getattr(db, "verify", None)
        if callable(verify):
            stage = "verify"
            verify()
            paths = list(db)  # verify() may have rebuilt the path index
        stage = "write"
        db.write_document(NEW_PATH, payload)
        stage = "close"
        db.close()
    except StreamDbError as exc:
        _close_quietly(db)
        return Outcome(stage, exc, len(paths), mode, messages)
    try:
        stage = "reopen"
        db = _open(vfs, mode)
        try:
            stage = "reread"
            got = db.get(NEW_PATH)
            stage = "relist"
            again = list(db)
        finally:
            _close_quietly(db)
    except StreamDbError as exc:
        if strict:
            raise HarnessBug(f"{stage}-failed:{type(exc).__name__}",
                             f"a session ran without error, then {stage} raised {exc!r}") from exc
        return Outcome(stage, exc, len(paths), mode, messages)
    if strict and got != payload:
        raise HarnessBug("new-document-differs", f"wrote {len(payload)} bytes, read {len(got)}")
    if strict and again != sorted({*paths, NEW_PATH}):
        raise HarnessBug("paths-differ", f"listed {len(paths)} paths + 1 new, then {len(again)}")
    return Outcome("done", None, len(paths), mode, messages)


def _salvage(vfs: MemoryVFS, mode: Mode, before: dict[str, bytes],
             refused: CorruptionError) -> Outcome:
    """After an open refused damage: salvage with recover="truncate-log" and check it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            db = streamdb.open(DB_PATH, mode.config(), vfs=vfs, recover="truncate-log")
    except StreamDbError:
        return Outcome("open", refused, mode=mode)
    report = db.recovery
    _close_quietly(db)
    if report is None:
        raise HarnessBug("salvage-found-nothing",
                         f"open raised {refused!r}, recover= found no damage")
    for copy in report.copies:
        source = copy.rsplit(".damaged-", 1)[0]
        if vfs.read_file(copy) != before.get(source):
            raise HarnessBug("salvage-copy-differs", f"{copy} is not {source} as it was")
    try:
        _close_quietly(_open(vfs, mode))
    except StreamDbError as exc:
        raise HarnessBug(f"salvaged-but-refused:{type(exc).__name__}",
                         f"after a salvage ({report}), open raised {exc!r}") from exc
    return Outcome("salvage", refused, mode=mode)


def run_one(data: bytes, *, strict: bool = True, memory: bool = True,
            watchdog: bool = False) -> Outcome:
    """`execute` within TIME_LIMIT seconds and (with `memory`, via tracemalloc) MEMORY_LIMIT
    bytes (see `fuzzkit.bounded`). With `watchdog`, a hang is interrupted after 2.5 x
    TIME_LIMIT (main thread only)."""
    return fuzzkit.bounded(lambda: execute(data, strict=strict), size=len(data),
                           time_limit=TIME_LIMIT, memory_limit=MEMORY_LIMIT if memory else None,
                           hang_after=TIME_LIMIT * 2.5 if watchdog else None)


# -- the harness --------------------------------------------------------------------------------


def _check_built(outcome: Outcome) -> None:
    if outcome.exception is not None:
        raise HarnessBug("valid-image-rejected", str(outcome)) from outcome.exception


def _mode_label(outcome: Outcome) -> str:
    return str(outcome.mode) + (" quick" if outcome.mode.quick else "")


def harness(strict: bool = True, watchdog: bool = False) -> fuzzkit.Harness:
    """This harness for the shared machinery; `strict` and `watchdog` as in `run_one`."""
    return fuzzkit.Harness(
        name="db", script="fuzz/fuzz_db_open.py" + ("" if strict else " --no-strict"),
        corpus_dir=CORPUS_DIR, code_dirs=CODE_DIRS,
        run=lambda data, memory: run_one(data, strict=strict, memory=memory, watchdog=watchdog),
        fmt=DiskImage(), generate=random_seed,
        describe=lambda data: FuzzCase.decode(data).describe(),
        label=lambda o: "ok" if o.error is None else f"{o.error}@{o.stage}",
        features=Outcome.features, mode=_mode_label, check_generated=_check_built, depth=2,
        keep=1, minimize_seconds=10.0, time_limit=TIME_LIMIT, gzip_above=16 << 10)


def signature(exc: BaseException) -> str:
    return harness().signature(exc)


def fuzz(*, seed: int, seconds: float | None = None, max_inputs: int | None = None,
         corpus_dirs: Sequence[Path] | None = None, crash_dir: Path | None = None,
         strict: bool = True, memory_every: int = 1, generated_seeds: int = 12
         ) -> fuzzkit.FuzzStats:
    """The built-in fuzzer (`fuzzkit.fuzz`) on this harness, without the hang watchdog.
    Every seed runs once unmutated (the ones built here must open and read cleanly)."""
    return fuzzkit.fuzz(harness(strict), seed=seed, seconds=seconds, max_inputs=max_inputs,
                        corpus_dirs=corpus_dirs, generated_seeds=generated_seeds,
                        crash_dir=crash_dir, memory_every=memory_every)


if __name__ == "__main__":
    from fuzzkit.cli import Defaults, main

    sys.exit(main(lambda strict: harness(strict, watchdog=True), __doc__,
                  defaults=Defaults(memory_every=4, generated_seeds=12, strict_option=True)))
