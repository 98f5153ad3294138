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

Modes:

    python fuzz/fuzz_db_open.py --seconds 60 [--seed S]    built-in mutation fuzzer
    python fuzz/fuzz_db_open.py --atheris [libFuzzer args]  coverage-guided (atheris)
    python fuzz/fuzz_db_open.py FILE_OR_DIR...              replay inputs, print outcomes

The built-in fuzzer starts from `fuzz/corpus/db/` and from databases it builds (documents of
0..300 KB, overwrites, deletes, aliases, checkpoints, some with message logs of each
checksum kind grown by appends; closed, or cut by a simulated power loss; plain, or
compressed and/or encrypted, some with an incompressible document on pages), mutates them
(bit flips, byte sets, truncation, zeroed ranges, page swaps and copies, interesting
integers in the header, key check and tree page fields, with checksums repaired or not,
log payloads with their CRCs repaired, now and then another compression, key or quick
mode), keeps inputs with new outcomes, and saves one input per bug signature
not saved yet under `fuzz/crashes/` (`db-<signature>-<sha1>.bin[.gz]` and a `.txt` with
the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import hashlib
import importlib
import os
import random
import re
import struct
import sys
import tempfile
import time
import traceback
import tracemalloc
import types
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

FUZZ_DIR = Path(__file__).resolve().parent
REPO_DIR = FUZZ_DIR.parent
if str(REPO_DIR) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO_DIR))

import xxhash  # noqa: E402
from fuzzkit import Bug, FuzzStats, input_files, read_input, slug  # noqa: E402
from fuzzkit import watchdog as hang_watchdog  # noqa: E402

import streamdb  # noqa: E402
import streamdb.engine.writes  # noqa: E402
import streamdb.logs  # noqa: E402
import wal  # noqa: E402
import wal.log  # noqa: E402
import wal.segments  # noqa: E402
from streamdb import Config  # noqa: E402
from streamdb.errors import CorruptionError, StreamDbError  # noqa: E402
from streamdb.storage import btree, btree_format, header, records, transform  # noqa: E402
from wal import format as fmt  # noqa: E402
from wal.memvfs import MemoryFile, MemoryVFS  # noqa: E402
from wal.vfs import Buffer  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus" / "db"
CRASH_DIR = FUZZ_DIR / "crashes"
CODE_DIRS = (Path(streamdb.__file__).resolve().parent, Path(wal.__file__).resolve().parent)

DB_PATH = "/fuzz/t.db"
FILES = (DB_PATH, DB_PATH + "-wal", DB_PATH + "-wal.1")
NEW_PATH = "/fuzz/new"
PAGE = 4096
# "full" would zero-fill 16 MiB logs. A compressed document may legitimately decode to
# max_document_size bytes (a few KB of zstd can say so): keep that within MEMORY_LIMIT.
CONFIG = Config(page_size=PAGE, durability="normal", max_document_size=32 << 20)
TEST_KEY = hashlib.sha256(b"streamdb fuzz test key").digest()  # the key of CTRL_KEY inputs

TIME_LIMIT = 2.0  # seconds per input
MEMORY_LIMIT = 128 << 20  # peak traced bytes per input
DISK_LIMIT = 64 << 20  # no file of a session may grow past this
MAX_INPUT = 2 << 20  # mutations stay below this size
CTRL_WAL, CTRL_WAL1, CTRL_LARGE, CTRL_KEY, CTRL_QUICK = 0x01, 0x02, 0x04, 0x08, 0x40
CODEC_SHIFT, CODEC_MASK = 4, 0x30  # control bits 4-5: transform.CODECS, 0 none
COMPRESSION: dict[int, Literal["snappy", "lz4", "zstd"]] = {1: "snappy", 2: "lz4", 3: "zstd"}
assert {name: codec for codec, name in COMPRESSION.items()} == transform.CODECS


class HarnessBug(Exception):
    """A violated harness invariant; `kind` is short and stable (bugs are deduplicated by it)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


# -- input framing ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mode:
    """How an input is opened: with `TEST_KEY` or not, a codec (0 none, else
    transform.CODECS), quick mode (reads skip checksums) or not."""

    key: bool = False
    codec: int = 0
    quick: bool = False

    def config(self) -> Config:
        return dataclasses.replace(CONFIG, compression=COMPRESSION.get(self.codec),
                                   encryption_key=TEST_KEY if self.key else None)

    @property
    def transformed(self) -> bool:
        return self.key or bool(self.codec)

    def __str__(self) -> str:
        parts = [COMPRESSION.get(self.codec, "")] + ["aes"] * self.key
        return "+".join(p for p in parts if p) or "plain"


PLAIN = Mode()


@dataclasses.dataclass(frozen=True)
class FuzzCase:
    db: bytes
    wal: bytes | None = None
    wal1: bytes | None = None
    large: bool = False
    mode: Mode = PLAIN

    @classmethod
    def decode(cls, data: bytes) -> FuzzCase:
        if not data:
            return cls(b"")
        control, rest = data[0], data[1:]
        present = [True, bool(control & CTRL_WAL), bool(control & CTRL_WAL1)]
        files: list[bytes | None] = [None, None, None]
        last = max(i for i, p in enumerate(present) if p)
        for i in range(3):
            if not present[i]:
                continue
            if i == last:
                files[i], rest = rest, b""
            else:
                n = int.from_bytes(rest[:4].ljust(4, b"\0"), "little")
                files[i], rest = rest[4 : 4 + n], rest[4 + n :]
        mode = Mode(bool(control & CTRL_KEY), (control & CODEC_MASK) >> CODEC_SHIFT,
                    bool(control & CTRL_QUICK))
        return cls(files[0] or b"", files[1], files[2], bool(control & CTRL_LARGE), mode)

    def encode(self) -> bytes:
        control = ((CTRL_WAL if self.wal is not None else 0)
                   | (CTRL_WAL1 if self.wal1 is not None else 0)
                   | (CTRL_LARGE if self.large else 0)
                   | (CTRL_KEY if self.mode.key else 0)
                   | (self.mode.codec << CODEC_SHIFT & CODEC_MASK)
                   | (CTRL_QUICK if self.mode.quick else 0))
        files = [f for f in (self.db, self.wal, self.wal1) if f is not None]
        head = b"".join(struct.pack("<I", len(f)) + f for f in files[:-1])
        return bytes([control]) + head + files[-1]

    def files(self) -> dict[str, bytes]:
        return {p: d for p, d in zip(FILES, (self.db, self.wal, self.wal1), strict=True)
                if d is not None}

    def describe(self) -> str:
        sizes = ", ".join(f"{Path(p).name}: {len(d)} bytes" for p, d in self.files().items())
        mode = "" if self.mode == PLAIN else f", opened {self.mode}" + (
            " in quick mode" if self.mode.quick else "")
        return sizes + (", large new document" if self.large else "") + mode


# -- determinism and a bounded disk -------------------------------------------------------------


class _Seeded:
    """Stands in for `secrets` (btree, wal), `uuid.uuid4` and `os.urandom` (transform: key
    salts) during one input."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def urandom(self, n: int) -> bytes:
        return self._rng.randbytes(n)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Make the ids, salts, tree ids and timestamps the library draws reproducible."""
    fake = _Seeded(seed)
    clock = types.SimpleNamespace(time=lambda: 1_800_000_000.0, monotonic=time.monotonic,
                                  sleep=time.sleep)
    patches: list[tuple[dict[str, Any], str, object]] = [
        (vars(btree), "secrets", fake), (vars(wal.log), "secrets", fake),
        (vars(wal.segments), "secrets", fake), (vars(uuid), "uuid4", fake.uuid4),
        (vars(streamdb.engine.writes), "time", clock), (vars(streamdb.logs), "time", clock),
        (vars(streamdb.engine.writes), "_ids", lambda n: [fake.uuid4() for _ in range(n)]),
        (vars(transform), "os", types.SimpleNamespace(urandom=fake.urandom)),
    ]
    saved = [(ns, name, ns[name]) for ns, name, _ in patches]
    for ns, name, value in patches:
        ns[name] = value
    try:
        yield
    finally:
        for ns, name, value in saved:
            ns[name] = value


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
    bytes. With `watchdog`, a hang is interrupted after 2.5 x TIME_LIMIT (main thread only)."""
    started_tracing = memory and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    try:
        if memory:
            tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0] if memory else 0
        start = time.perf_counter()
        slow = lambda msg: HarnessBug("slow", msg)  # noqa: E731
        guard = hang_watchdog(TIME_LIMIT * 2.5, slow) if watchdog else contextlib.nullcontext()
        with guard:
            outcome = execute(data, strict=strict)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - base if memory else 0
    finally:
        if started_tracing:
            tracemalloc.stop()
    if elapsed > TIME_LIMIT:
        raise HarnessBug("slow", f"{elapsed:.2f}s for a {len(data)}-byte input ({outcome})")
    if peak > MEMORY_LIMIT:
        raise HarnessBug("memory", f"peak {peak >> 20} MiB for a {len(data)}-byte input")
    return outcome


def signature(exc: BaseException) -> str:
    """A stable bug name: the harness kind, or the exception type and the two innermost
    functions inside streamdb or wal (no line numbers: stable across edits)."""
    if isinstance(exc, HarnessBug):
        return exc.kind
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if any(Path(f.filename).resolve().is_relative_to(d)
                                       for d in CODE_DIRS)]
    where = " in ".join(f"{Path(f.filename).stem}.{f.name}" for f in (inside or frames)[:-3:-1])
    return f"{type(exc).__qualname__}@{where}" if where else type(exc).__qualname__


# -- seeds: databases built here --------------------------------------------------------------

PATHS = ("/a", "/a/b", "/docs/readme.txt", "/docs/x.bin", "/z/ünïcödé", "/logs/2026/01/02")
ALIASES = ("/alias/one", "/alias/two", "/a/b")
LogChecksum = Literal["xxh3", "crc32", "crc16"] | None
LOGS: dict[str, LogChecksum] = {
    "/msg/xxh3": "xxh3", "/msg/crc32": "crc32", "/msg/crc16": "crc16", "/msg/none": None}


def content(tag: str, size: int) -> bytes:
    """Deterministic, compressible document bytes."""
    block = hashlib.sha256(tag.encode()).digest()
    return (block * (size // 32 + 1))[:size]


def _size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.15:
        return 0
    if roll < 0.5:
        return rng.randint(1, 4096)
    if roll < 0.8:
        return rng.randint(4097, 65536)
    return rng.randint(65537, 300_000)


def log_batch(rng: random.Random, tag: str) -> list[bytes]:
    """A batch of 1..20 messages for a log: empty, small, a few KB, or (now and then) one
    long enough to span a 256 KiB chunk."""
    sizes = [rng.choice((0, rng.randint(1, 200), rng.randint(1, 200), rng.randint(200, 4000)))
             for _ in range(rng.randint(1, 20))]
    if rng.random() < 0.1:
        sizes[rng.randrange(len(sizes))] = rng.randint(100_000, 600_000)
    return [content(f"{tag}:{i}", size) for i, size in enumerate(sizes)]


def noise(tag: str, size: int) -> bytes:
    """Deterministic bytes that do not compress."""
    return hashlib.shake_256(tag.encode()).digest(size)


def build_database(rng: random.Random, *, many: bool = False, crash: str | None = None,
                   with_log: bool = True, mode: Mode = PLAIN, paged: bool = False,
                   max_doc: int | None = None, logs: bool = False) -> bytes:
    """An encoded input: a database after a few random operations, closed (crash None), or
    as a power loss with `MemoryVFS.crash(keep=crash)` leaves it ("none", "all", "random").
    Written with `mode`'s config, and opened with it. The documents are compressible: with
    a codec they are stored inline; `paged` first writes a 70 KB document that is not.
    `max_doc` caps the document sizes (without drawing differently from `rng`). With
    `logs`, some steps append messages to the message logs of LOGS instead (without it,
    nothing is drawn for them)."""
    vfs = MemoryVFS()
    with deterministic(rng.getrandbits(64)):
        db = streamdb.open(DB_PATH, mode.config(), vfs=vfs)
        live: dict[str, uuid.UUID] = {}
        if paged:
            live["/docs/x.bin"] = db.write_document("/docs/x.bin", noise("x.bin", 70_000))
        if many:
            db.write_documents((f"/many/{i:04d}/{'x' * (i % 40)}", content(str(i), i % 200))
                               for i in range(rng.randint(120, 220)))
        for step in range(rng.randint(3, 10)):
            if logs and rng.random() < 0.4:
                path = rng.choice(sorted(LOGS))
                # An alias may have made the log's path a plain document: no more appends.
                with contextlib.suppress(streamdb.InvalidArgumentError):
                    db.append_messages(path, log_batch(rng, f"{path}:{step}"),
                                       checksum=LOGS[path])
                live = {p: db.get_id_by_path(p) for p in db}
                continue
            roll = rng.random()
            if roll < 0.5 or not live:
                path = rng.choice(PATHS)
                size = _size(rng) if max_doc is None else min(_size(rng), max_doc)
                live[path] = db.write_document(path, content(f"{path}:{step}", size))
            elif roll < 0.65:
                db.delete(rng.choice(sorted(live)))
            elif roll < 0.8:
                alias = rng.choice(ALIASES)
                db.bind_to_path(live[rng.choice(sorted(live))], alias)
            elif roll < 0.95:
                db.checkpoint()
            else:
                db.gc()
            live = {p: db.get_id_by_path(p) for p in db}
        image = vfs
        if crash is not None:
            image = vfs.crash(keep=crash, rng=rng)  # type: ignore[arg-type]
        else:
            db.close()
        db_file, wal0, wal1 = (image.read_file(p) if image.exists(p) else None for p in FILES)
        case = FuzzCase(db_file or b"", wal0, wal1, rng.random() < 0.3, mode)
        if not with_log:
            case = FuzzCase(case.db, large=case.large, mode=mode)
        if crash is not None:
            db.close()
    if case.wal is None and case.wal1 is not None:
        case = dataclasses.replace(case, wal=b"")
    return case.encode()


def random_mode(rng: random.Random) -> Mode:
    """Plain half of the time, else a codec and/or the key."""
    if rng.random() < 0.5:
        return PLAIN
    key, codec = rng.choice([(True, 3), (True, 3), (True, 0), (True, 1), (True, 2),
                             (False, 1), (False, 2), (False, 3)])
    return Mode(key, codec)


def random_seed(rng: random.Random) -> bytes:
    crash = rng.choice([None, None, None, "none", "all", "random"])
    mode = random_mode(rng)
    logs = rng.random() < 0.4
    return build_database(rng, many=rng.random() < 0.15, crash=crash,
                          with_log=crash is not None or rng.random() < 0.5, mode=mode,
                          paged=mode.codec != 0 and rng.random() < 0.5, logs=logs)


# -- mutations ----------------------------------------------------------------------------------


def struct_fields(layout: struct.Struct, base: int = 0) -> list[tuple[int, int]]:
    """(offset, size) of each field of a struct layout, shifted by `base`."""
    fields, offset = [], 0
    for code in re.findall(r"\d*[a-zA-Z?]", layout.format.lstrip("<>=!@")):
        size = struct.calcsize("<" + code)
        fields.append((base + offset, size))
        offset += size
    return fields


# Field tables come from the format constants that the reader and writer share.
HEADER_FIELDS = struct_fields(header._FIXED) + [
    f for i in range(5) for f in struct_fields(btree_format._REF, 64 + 24 * i)] + [
    (184, 1), (185, 1), (200, 8), (216, 8), (240, 8)]  # key check: scheme, reserved, salt, check
PAGE_FIELDS = [f for f in struct_fields(btree_format._HEADER) if f[0] != btree_format._CHECKSUM_AT]
OP_FIELDS = [(0, 1), (1, 16), *struct_fields(records._VERSION, 17)]  # kind, doc id, version


def repair_header(buf: bytearray, at: int) -> None:
    body = header.HEADER_SIZE - 8
    if len(buf) >= at + header.HEADER_SIZE:
        buf[at + body : at + body + 8] = xxhash.xxh3_64_intdigest(
            bytes(buf[at : at + body])).to_bytes(8, "little")


def repair_page(buf: bytearray, at: int) -> None:
    if len(buf) >= at + PAGE:
        buf[at + 24 : at + 32] = bytes(8)
        buf[at + 24 : at + 32] = xxhash.xxh3_64_intdigest(bytes(buf[at : at + PAGE])).to_bytes(
            8, "little")


def tree_pages(buf: bytes | bytearray) -> list[int]:
    """Offsets of the pages that look like tree pages."""
    return [at for at in range(2 * PAGE, len(buf) - PAGE + 1, PAGE)
            if buf[at : at + 2] == btree_format.MAGIC]


def repair_db(buf: bytearray) -> None:
    """Recompute both header checksums and every tree page checksum."""
    for at in (0, PAGE):
        if buf[at : at + 8] == header.MAGIC:
            repair_header(buf, at)
    for at in tree_pages(buf):
        repair_page(buf, at)


def log_records(buf: bytes | bytearray) -> list[tuple[int, int]]:
    """(offset, payload length) of the records that carry the segment's tag, in order."""
    if len(buf) < fmt.SEGMENT_HEADER_SIZE or buf[:8] != fmt.MAGIC:
        return []
    found, at, tag = [], fmt.SEGMENT_HEADER_SIZE, int.from_bytes(buf[16:20], "little")
    while at + fmt.RECORD_HEADER_SIZE <= len(buf):
        head = fmt.parse_record_header(bytes(buf[at : at + fmt.RECORD_HEADER_SIZE]))
        if head.tag != tag or at + fmt.RECORD_HEADER_SIZE + head.length > len(buf):
            break
        found.append((at, head.length))
        at += fmt.RECORD_HEADER_SIZE + head.length
    return found


def repair_log(buf: bytearray) -> None:
    """Recompute the segment header CRC and every record's CRC and chain (`prev_crc`)."""
    if len(buf) < fmt.SEGMENT_HEADER_SIZE or buf[:8] != fmt.MAGIC:
        return
    buf[60:64] = fmt.crc(bytes(buf[:60])).to_bytes(4, "little")
    seg = fmt.SegmentHeader(0, int.from_bytes(buf[16:24], "little"), 1, 1)
    prev = 0
    for at, length in log_records(buf):
        head = fmt.parse_record_header(bytes(buf[at : at + fmt.RECORD_HEADER_SIZE]))
        body = bytes(buf[at + fmt.RECORD_HEADER_SIZE : at + fmt.RECORD_HEADER_SIZE + length])
        packed, prev = fmt.pack_record_header(
            tag=seg.tag, kind=head.kind, flags=head.flags, length=length,
            payload_crc=fmt.crc(body, seg.seed), lsn=head.lsn, durable_lsn=head.durable_lsn,
            prev_crc=prev, session=head.session)
        buf[at : at + fmt.RECORD_HEADER_SIZE] = packed


def interesting(size: int, current: int, pages: int) -> list[int]:
    top = (1 << 8 * size) - 1
    values = {0, 1, 2, 3, 4, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, PAGE, 2 * PAGE, 1 << 16,
              1 << 31, 1 << 32, 1 << 62, 1 << 63, top, top - 1, current + 1, current - 1,
              pages - 1, pages, pages + 1, 2 * pages, pages * PAGE}
    return sorted({v & top for v in values if v >= 0})


class Mutator:
    """Structure-aware mutations of an encoded input, drawing randomness from `rng`.
    `pool` supplies other inputs to splice pages from."""

    def __init__(self, rng: random.Random, pool: list[bytes]) -> None:
        self.rng = rng
        self.pool = pool

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        case = FuzzCase.decode(data)
        db = bytearray(case.db)
        logs = [bytearray(f) if f is not None else None for f in (case.wal, case.wal1)]
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            present = [log for log in logs if log is not None]
            if present and rng.random() < 0.2:
                self._log(rng.choice(present))
            else:
                self._db(db)
        if logs[0] is not None and rng.random() < 0.03:
            logs[rng.randrange(2)] = None
        large = case.large ^ (rng.random() < 0.05)
        mode = case.mode
        roll = rng.random()
        if roll < 0.01:  # the wrong key, or none: rejected at open, nothing written
            mode = dataclasses.replace(mode, key=not mode.key)
        elif roll < 0.03:  # new versions under another codec, old ones read with theirs
            mode = dataclasses.replace(mode, codec=rng.randrange(4))
        elif roll < 0.08:  # damaged chunks reach the decoders unverified
            mode = dataclasses.replace(mode, quick=not mode.quick)
        wal0, wal1 = (bytes(log) if log is not None else None for log in logs)
        if wal0 is None and wal1 is not None:
            wal0 = b""
        return FuzzCase(bytes(db[:MAX_INPUT]), wal0, wal1, large, mode).encode()

    def _db(self, buf: bytearray) -> None:
        rng = self.rng
        if len(buf) < 2 * PAGE and rng.random() < 0.5:
            self._generic(buf)
            return
        roll = rng.random()
        if roll < 0.35:
            self._generic(buf)
            if rng.random() < 0.3:
                repair_db(buf)
        elif roll < 0.5:
            self._pages(buf)
        elif roll < 0.65:
            at = rng.choice((0, 0, PAGE))
            offset, size = rng.choice(HEADER_FIELDS)
            self._put(buf, at + offset, size)
            if rng.random() < 0.9:
                repair_header(buf, at)
        else:
            pages = tree_pages(buf)
            if not pages:
                self._generic(buf)
                return
            at = rng.choice(pages)
            if roll < 0.8:
                self._put(buf, at + rng.choice(PAGE_FIELDS)[0], rng.choice(PAGE_FIELDS)[1])
            elif roll < 0.9 or buf[at + 4] != btree.PageType.INTERNAL:
                self._flip(buf, at + btree_format.HEADER_SIZE, at + PAGE, rng.choice((1, 1, 2, 8)))
            else:  # an internal page's child pointer: another child, a page, 0 or 1
                n = int.from_bytes(buf[at + 8 : at + 12], "little")
                child = at + 64 + 8 * rng.randrange(max(1, min(n, 400)))
                other = at + 64 + 8 * rng.randrange(max(1, min(n, 400)))
                buf[child : child + 8] = (buf[other : other + 8] if rng.random() < 0.5 else
                                          rng.choice((0, 1, 2, len(buf) // PAGE)).to_bytes(8,
                                                                                  "little"))
            if rng.random() < 0.9:
                repair_page(buf, at)

    def _log(self, buf: bytearray) -> None:
        rng = self.rng
        found = log_records(buf)
        roll = rng.random()
        if roll < 0.5 or not found:
            self._generic(buf)
        elif roll < 0.6:  # a segment header field: flags, salt, seq, base LSN, previous LSN
            self._put(buf, rng.choice((12, 16, 24, 32, 40)), 8 if roll > 0.52 else 4)
        else:  # a logged operation's fields
            at, length = rng.choice(found)
            start = at + fmt.RECORD_HEADER_SIZE
            fields = [f for f in OP_FIELDS if f[0] + f[1] <= length]
            if roll < 0.85 and fields:
                offset, size = rng.choice(fields)
                self._put(buf, start + offset, size)
            elif length:
                self._flip(buf, start, start + length, rng.choice((1, 2, 4)))
        if rng.random() < 0.85:
            repair_log(buf)

    def _put(self, buf: bytearray, at: int, size: int) -> None:
        if at + size > len(buf):
            return
        current = int.from_bytes(buf[at : at + size], "little")
        value = self.rng.choice(interesting(size, current, len(buf) // PAGE))
        big = size > 1 and self.rng.random() < 0.1
        buf[at : at + size] = value.to_bytes(size, "big" if big else "little")

    def _flip(self, buf: bytearray, lo: int, hi: int, bits: int) -> None:
        hi = min(hi, len(buf))
        for _ in range(bits if hi > lo else 0):
            buf[self.rng.randrange(lo, hi)] ^= 1 << self.rng.randrange(8)

    def _generic(self, buf: bytearray) -> None:
        rng, size = self.rng, len(buf)
        roll = rng.random()
        if not size or roll < 0.05:  # grow: zeros, noise or a copy of a page
            tail = bytes(PAGE) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, PAGE))
            buf += buf[:PAGE] if size and rng.random() < 0.3 else tail
        elif roll < 0.35:
            self._flip(buf, 0, size, rng.choice((1, 1, 2, 4, 8)))
        elif roll < 0.55:
            for _ in range(rng.choice((1, 2, 4))):
                buf[rng.randrange(size)] = rng.choice((0, 0xFF, 0x7F, 0x80, 1, rng.randrange(256)))
        elif roll < 0.75:  # truncate: anywhere, at a page boundary, or a few bytes off the end
            cut = rng.choice((rng.randrange(size), size // PAGE * PAGE - PAGE * rng.randrange(3),
                              size - rng.randint(1, 16)))
            del buf[max(0, cut) :]
        else:  # zero a range, inside a page or a whole page
            start = rng.randrange(size)
            length = PAGE if rng.random() < 0.4 else rng.randint(1, 512)
            if length == PAGE:
                start -= start % PAGE
            buf[start : start + length] = bytes(len(buf[start : start + length]))

    def _pages(self, buf: bytearray) -> None:
        rng, count = self.rng, len(buf) // PAGE
        if count < 2:
            self._generic(buf)
            return
        i, j = rng.randrange(count), rng.randrange(count)
        a, b = slice(i * PAGE, (i + 1) * PAGE), slice(j * PAGE, (j + 1) * PAGE)
        roll = rng.random()
        if roll < 0.4:
            buf[a], buf[b] = buf[b], buf[a]
        elif roll < 0.7:
            buf[b] = buf[a]
        else:  # a page of another input at the same place: a stale or foreign page
            other = FuzzCase.decode(rng.choice(self.pool)).db
            if len(other) >= (j + 1) * PAGE:
                buf[b] = other[b]


# -- the built-in fuzzer ----------------------------------------------------------------------


def save_input(directory: Path, stem: str, data: bytes) -> Path:
    """Write an input, gzipped when over 16 KiB (a name ending in .bin.gz)."""
    directory.mkdir(parents=True, exist_ok=True)
    if len(data) > 16 << 10:
        path = directory / f"{stem}.bin.gz"
        path.write_bytes(gzip.compress(data, 9, mtime=0))
    else:
        path = directory / f"{stem}.bin"
        path.write_bytes(data)
    return path


def save_bug(bug: Bug, crash_dir: Path) -> Path:
    stem = f"db-{slug(bug.signature)}-{hashlib.sha1(bug.data).hexdigest()[:12]}"
    path = save_input(crash_dir, stem, bug.data)
    (crash_dir / f"{stem}.txt").write_text(
        f"signature: {bug.signature}\ninput: {FuzzCase.decode(bug.data).describe()}\n"
        f"reproduce: python fuzz/fuzz_db_open.py fuzz/crashes/{path.name}\n\n{bug.error}")
    return path


def fuzz(*, seed: int, seconds: float | None = None, max_inputs: int | None = None,
         corpus_dirs: Sequence[Path] = (CORPUS_DIR,), crash_dir: Path | None = None,
         strict: bool = True, watchdog: bool = False, memory_every: int = 1,
         generated_seeds: int = 12, progress: Any = None) -> FuzzStats:
    """The built-in mutation fuzzer; stops after `seconds` or `max_inputs`. Deterministic for
    a seed and `max_inputs`. Every seed runs once unmutated (the ones built here must open
    and read cleanly); then inputs with a new outcome fingerprint join the pool. The memory
    check runs on every `memory_every`-th input. Bugs are collected (one per signature) and,
    with `crash_dir`, saved there."""
    if seconds is None and max_inputs is None:
        raise ValueError("give seconds or max_inputs")
    rng = random.Random(seed)
    stats = FuzzStats()
    corpus = [read_input(p) for d in corpus_dirs for p in input_files(d)]
    built = [random_seed(rng) for _ in range(generated_seeds)]
    pool = [*corpus, *built] or [b""]
    queue = [(d, False) for d in corpus] + [(d, True) for d in built]
    mutator = Mutator(rng, pool)
    seen: set[tuple[object, ...]] = set()
    started = last_progress = time.monotonic()
    while max_inputs is None or stats.executed < max_inputs:
        now = time.monotonic()
        if seconds is not None and now - started >= seconds:
            break
        if progress is not None and now - last_progress >= 10:
            stats.seconds, stats.pool, last_progress = now - started, len(pool), now
            progress(stats)
        if queue:
            data, must_open = queue.pop(0)
        elif rng.random() < 0.02:
            data, must_open = random_seed(rng), True
        else:
            data, must_open = mutator.mutate(rng.choice(pool)), False
        stats.executed += 1
        memory = memory_every <= 1 or stats.executed % memory_every == 0
        try:
            outcome = run_one(data, strict=strict, memory=memory, watchdog=watchdog)
            if must_open and outcome.exception is not None:
                raise HarnessBug("valid-image-rejected", str(outcome)) from outcome.exception
        except Exception as exc:
            _record_bug(exc, data, stats, crash_dir)
            continue
        label = "ok" if outcome.error is None else f"{outcome.error}@{outcome.stage}"
        stats.outcomes[label] = stats.outcomes.get(label, 0) + 1
        mode = str(outcome.mode) + (" quick" if outcome.mode.quick else "")
        stats.modes[mode] = stats.modes.get(mode, 0) + 1
        if outcome.error is None:
            stats.modes_ok[mode] = stats.modes_ok.get(mode, 0) + 1
        features = outcome.features()
        if features not in seen:
            seen.add(features)
            pool.append(data)
    stats.seconds, stats.pool = time.monotonic() - started, len(pool)
    return stats


def _record_bug(exc: Exception, data: bytes, stats: FuzzStats, crash_dir: Path | None) -> None:
    """Count a bug; keep (and save) the first input of each signature not saved before."""
    sig = signature(exc)
    stats.hits[sig] = stats.hits.get(sig, 0) + 1
    saved = crash_dir is not None and any(crash_dir.glob(f"db-{slug(sig)}-*.txt"))
    if saved or any(b.signature == sig for b in stats.bugs):
        return
    bug = Bug(sig, data, "".join(traceback.format_exception(exc)))
    if crash_dir is not None:
        bug.path = save_bug(bug, crash_dir)
    stats.bugs.append(bug)


# -- command line -------------------------------------------------------------------------------


def _atheris_main(argv: list[str]) -> None:
    atheris: Any = importlib.import_module("atheris")  # optional; not a project dependency
    rng = random.Random(0)
    pool = [read_input(p) for p in input_files(CORPUS_DIR)] or [b""]
    mutator = Mutator(rng, pool)

    def test_one_input(data: bytes) -> None:
        run_one(data)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng.seed(seed)
        if rng.random() < 0.3:
            return bytes(atheris.Mutate(data, max_size))
        return mutator.mutate(data)[:max_size]

    args = [sys.argv[0], *argv]
    options = [a for a in argv if a.startswith("-")]
    defaults = {"-timeout=": str(int(TIME_LIMIT * 3)), "-rss_limit_mb=": "4096",
                "-max_len=": str(MAX_INPUT), "-artifact_prefix=": f"{CRASH_DIR}{os.sep}db-"}
    args += [k + v for k, v in defaults.items() if not any(a.startswith(k) for a in options)]
    CRASH_DIR.mkdir(exist_ok=True)
    if not any(not a.startswith("-") for a in argv):
        # libFuzzer reads raw files and writes new inputs to the first directory: give it a
        # scratch directory holding the corpus decompressed.
        work = tempfile.mkdtemp(prefix="db-atheris-")
        for i, data in enumerate(pool):
            Path(work, f"seed-{i:03d}").write_bytes(data)
        print(f"corpus and new inputs in {work}", file=sys.stderr)
        args.append(work)
    atheris.instrument_all()
    atheris.Setup(args, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def _print_progress(stats: FuzzStats) -> None:
    rate = stats.executed / stats.seconds if stats.seconds else 0.0
    print(f"[{stats.seconds:6.0f}s] {stats.executed} inputs ({rate:.0f}/s), pool {stats.pool}, "
          f"bugs {len(stats.bugs)}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if "--atheris" in args_in:
        args_in.remove("--atheris")
        _atheris_main(args_in)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help="replay these files or folders")
    parser.add_argument("--seconds", type=float, help="fuzz for this long")
    parser.add_argument("--max-inputs", type=int, help="stop after this many inputs")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument("--corpus", type=Path, action="append", help=f"default: {CORPUS_DIR}")
    parser.add_argument("--crashes", type=Path, default=CRASH_DIR)
    parser.add_argument("--no-strict", action="store_true", help="skip the round-trip checks")
    parser.add_argument("--memory-every", type=int, default=4,
                        help="tracemalloc check on every Nth input")
    parser.add_argument("--generated-seeds", type=int, default=12,
                        help="databases built at start-up to seed the pool")
    args = parser.parse_args(args_in)
    strict = not args.no_strict
    if args.inputs:
        failed = 0
        for path in (p for a in args.inputs for p in (input_files(a) if a.is_dir() else [a])):
            try:
                outcome = run_one(read_input(path), strict=strict, watchdog=True)
            except Exception as exc:
                failed += 1
                print(f"{path}: BUG {signature(exc)}")
                traceback.print_exception(exc)
            else:
                print(f"{path}: {outcome}")
        return 1 if failed else 0
    if args.seconds is None and args.max_inputs is None:
        parser.error("give --seconds N (or --max-inputs N), or input files to replay")
    seed = args.seed if args.seed is not None else time.time_ns() % (1 << 32)
    print(f"seed {seed}", flush=True)
    stats = fuzz(seed=seed, seconds=args.seconds, max_inputs=args.max_inputs,
                 corpus_dirs=args.corpus or [CORPUS_DIR], crash_dir=args.crashes, strict=strict,
                 watchdog=True, memory_every=args.memory_every,
                 generated_seeds=args.generated_seeds, progress=_print_progress)
    _print_progress(stats)
    print("outcomes:")
    for label, count in sorted(stats.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:8d}  {label}")
    print("inputs by mode (ended without error):")
    for mode, count in sorted(stats.modes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:8d}  {mode} ({stats.modes_ok.get(mode, 0)})")
    if stats.hits:
        print("bug signatures (inputs hitting each):")
        for sig, count in sorted(stats.hits.items(), key=lambda kv: -kv[1]):
            print(f"  {count:8d}  {sig}")
    for bug in stats.bugs:
        print(f"NEW BUG {bug.signature}: {bug.path or '(not saved)'}")
    return 1 if stats.bugs else 0


if __name__ == "__main__":
    sys.exit(main())
