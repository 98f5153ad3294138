"""Many reader threads and one writer thread on one Database (docs/design.md, invariant 7:
single writer, many readers).

Every document is self-verifying (tests/streamdb/stressdocs.py): a header with its path,
generation, length and a SHA-256 of the body. The writer commits numbered generations:
groups of documents written (or deleted) in one transaction all carry the generation of that
transaction. Readers check every read on its own (whole, intact, of that path), against
what the writer had acknowledged before the read began and started before it ended, and
check snapshots for atomicity: a snapshot's whole state is one the writer committed.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import streamdb
from streamdb.storage.readers import FileReaderTable
from tests.streamdb import stressdocs as sd
from wal.vfs import OsFile

GROUPS = 6  # groups 0 and 1 have a ~1 MiB member
MEMBERS = {f"/g/{n}/": sd.group_paths(n, big=n < 2) for n in range(GROUPS)}
SINGLES = ["/s/t0", "/s/t1", "/s/t2", "/s/k0", "/s/k1", "/s/h0", "/s/h1", "/s/m0"]
UNIVERSE = sorted([p for paths in MEMBERS.values() for p in paths] + SINGLES)
READERS = 4
WAIT = 30.0  # seconds: a bound on synchronisation waits, far beyond any healthy delay


class Abort(Exception):
    """Raised inside a transaction the writer means to roll back."""


@dataclass
class Progress:
    """Reads completed by reader threads, and what the writer saw of them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cond: threading.Condition = field(init=False)
    reads: int = 0
    per_reader: list[int] = field(default_factory=lambda: [0] * READERS)
    syncs: int = 0  # fsyncs by the writer thread
    reads_during_sync: int = 0  # reads that completed while one of them ran
    syncs_overlapped: int = 0  # fsyncs during which at least one read completed
    held_commits: int = 0  # commits held open until a reader completed a read

    def __post_init__(self) -> None:
        self.cond = threading.Condition(self.lock)

    def done(self, reader: int) -> None:
        with self.lock:
            self.reads += 1
            self.per_reader[reader] += 1
            self.cond.notify_all()


@dataclass
class Shared:
    """What the writer publishes for the readers' checks (single assignments and dict/set
    operations, atomic under the GIL)."""

    started: int = 0  # the newest generation the writer began to commit
    acked: dict[str, tuple[int, bool]] = field(default_factory=dict)  # path -> (gen, present)
    delete_started: dict[str, int] = field(default_factory=dict)  # path -> gen of last delete
    aborted: set[int] = field(default_factory=set)  # generations rolled back on purpose
    states: set[frozenset[tuple[str, int]]] = field(default_factory=lambda: {frozenset()})
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.ops[what] = self.ops.get(what, 0) + 1

    def fail(self, who: str) -> None:
        self.errors.append(f"{who}:\n{traceback.format_exc()}")
        self.stop.set()


def check_latest(shared: Shared, path: str, before: tuple[int, bool] | None,
                 gen: int | None) -> None:
    """A read of the latest state of `path` returned generation `gen` (None: absent). It
    must show every commit acknowledged before the read began (`before`) and nothing the
    writer had not started by the time it ended, nor a rolled-back generation."""
    started = shared.started
    if gen is not None:
        assert gen <= started, f"{path}: gen {gen} was never started (newest {started})"
        assert gen not in shared.aborted, f"{path}: gen {gen} was rolled back"
        if before is not None:
            assert gen >= before[0] if before[1] else gen > before[0], (path, before, gen)
    elif before is not None and before[1]:
        deleted = shared.delete_started.get(path, 0)
        assert deleted > before[0], f"{path}: acknowledged at gen {before[0]}, then gone"


# ---- the writer ---------------------------------------------------------------------------


def writer(db: streamdb.Database, shared: Shared, model: dict[str, int], seed: int,
           duration: float) -> None:
    """Random commits for `duration` seconds; `model` (path -> generation) follows what
    was acknowledged."""
    rng = random.Random(seed)
    start = time.monotonic()
    compact_at = [duration / 3, 2 * duration / 3]
    gen = 0

    def commit(kind: str, writes: list[str], deletes: list[str],
               run: Callable[[int], None]) -> None:
        nonlocal gen
        gen += 1
        after = dict(model)
        for p in deletes:
            del after[p]
        after.update((p, gen) for p in writes)
        shared.states.add(frozenset(after.items()))
        for p in deletes:
            shared.delete_started[p] = gen
        shared.started = gen
        run(gen)
        model.clear()
        model.update(after)
        for p in writes:
            shared.acked[p] = (gen, True)
        for p in deletes:
            shared.acked[p] = (gen, False)
        shared.count(kind)

    def present_groups() -> list[str]:
        return [g for g in MEMBERS if MEMBERS[g][0] in model]

    while not shared.stop.is_set() and time.monotonic() - start < duration:
        if compact_at and time.monotonic() - start >= compact_at[0]:
            compact_at.pop(0)
            db.compact()
            shared.count("compact")
            continue
        roll = rng.random()
        group = rng.choice(list(MEMBERS))
        if roll < 0.35:  # a group, maybe with another group's deletion and a single
            writes = list(MEMBERS[group])
            others = [g for g in present_groups() if g != group]
            deletes = list(MEMBERS[rng.choice(others)]) if others and rng.random() < 0.3 else []
            if rng.random() < 0.5:
                writes.append(rng.choice(SINGLES))

            def tx(g: int, writes: list[str] = writes, deletes: list[str] = deletes) -> None:
                with db.transaction():
                    for p in writes:
                        db.write_document(p, sd.make(p, g))
                    for p in deletes:
                        db.delete(p)
                    # This thread's reads see its pending writes.
                    assert sd.parse(writes[0], db.get(writes[0])) == g

            commit("transaction", writes, deletes, tx)
        elif roll < 0.45:  # the same, in one call
            writes = list(MEMBERS[group])

            def many(g: int, writes: list[str] = writes) -> None:
                db.write_documents((p, sd.make(p, g)) for p in writes)

            commit("write_documents", writes, [], many)
        elif roll < 0.70:
            path = rng.choice(SINGLES)

            def one(g: int, path: str = path) -> None:
                db.write_document(path, sd.make(path, g))

            commit("write", [path], [], one)
        elif roll < 0.78:
            present = [p for p in SINGLES if p in model]
            if present:
                path = rng.choice(present)

                def remove(g: int, path: str = path) -> None:
                    db.delete(path)

                commit("delete", [], [path], remove)
        elif roll < 0.84:
            groups = present_groups()
            if groups:
                members = list(MEMBERS[rng.choice(groups)])

                def drop(g: int, members: list[str] = members) -> None:
                    with db.transaction():
                        for p in members:
                            db.delete(p)

                commit("group delete", [], members, drop)
        elif roll < 0.88:  # a transaction that raises: none of it may ever be seen
            gen += 1
            shared.aborted.add(gen)
            shared.started = gen
            with pytest.raises(Abort), db.transaction():
                for p in MEMBERS[group]:
                    db.write_document(p, sd.make(p, gen))
                raise Abort
            shared.count("rolled back")
        elif roll < 0.93:
            db.checkpoint()
            shared.count("checkpoint")
        else:
            db.gc()
            shared.count("gc")


# ---- the readers --------------------------------------------------------------------------


@dataclass
class Held:
    """What a reader keeps across operations, to check later that it never changed."""

    views: list[tuple[str, memoryview, bytes]] = field(default_factory=list)
    stream: tuple[str, Iterator[bytes], list[bytes], int] | None = None
    snapshot: tuple[streamdb.Snapshot, list[str], dict[str, int], dict[str, bytes]] | None = None

    def check_view(self) -> None:
        path, view, digest = self.views.pop(0)
        assert hashlib.sha256(view).digest() == digest, f"the view of {path} changed"
        sd.parse(path, view)

    def finish_stream(self) -> None:
        assert self.stream is not None
        path, chunks, parts, gen = self.stream
        self.stream = None
        parts.extend(chunks)
        assert sd.parse(path, b"".join(parts)) == gen, path

    def check_snapshot(self) -> None:
        assert self.snapshot is not None
        snap, paths, mapping, digests = self.snapshot
        self.snapshot = None
        try:
            assert snap.search("/") == paths
            assert {p: sd.header_gen(p, snap.get(p, length=sd.HEADER_MAX))
                    for p in paths} == mapping
            for p, digest in digests.items():
                assert hashlib.sha256(snap.get(p)).digest() == digest, p
        finally:
            snap.close()

    def check_all(self) -> None:
        while self.views:
            self.check_view()
        if self.stream is not None:
            self.finish_stream()
        if self.snapshot is not None:
            self.check_snapshot()


def check_snapshot(db: streamdb.Database, shared: Shared, rng: random.Random,
                   held: Held) -> None:
    """One snapshot: its state is one the writer committed (so every transaction is all or
    nothing), and its read methods agree with each other."""
    snap = db.snapshot()
    keep = False
    try:
        paths = snap.search("/")
        assert paths == sorted(paths) and len(set(paths)) == len(paths)
        assert len(snap) == len(paths)
        assert list(snap) == paths
        mapping = {p: sd.header_gen(p, snap.get(p, length=sd.HEADER_MAX)) for p in paths}
        assert frozenset(mapping.items()) in shared.states, (
            f"snapshot at lsn {snap.lsn} shows a state never committed: {sorted(mapping.items())}")
        sd.check_groups(mapping, MEMBERS)
        for group in MEMBERS:
            assert snap.search(group) == [p for p in paths if p.startswith(group)]
        assert snap.search_suffix("/m0") == [p for p in paths if p.endswith("/m0")]
        for p in UNIVERSE:
            assert snap.exists(p) == (p in mapping) == (p in snap), p
        absent = [p for p in UNIVERSE if p not in mapping]
        if absent:
            with pytest.raises(streamdb.NotFoundError):
                snap.get(rng.choice(absent))
        digests = {}
        for p in rng.sample(paths, min(3, len(paths))):
            data = snap.get(p)
            assert sd.parse(p, data) == mapping[p]
            digests[p] = hashlib.sha256(data).digest()
            info = snap.info(p)
            assert info.size == len(data) and info.path == p and p in info.paths
            kept = snap.versions(p)
            assert kept[-1] == info.version and kept == sorted(kept)
            older = [sd.parse(p, snap.get(p, version=v)) for v in kept[:-1]]
            assert older == sorted(older) and all(o < mapping[p] for o in older), (p, older)
        if held.snapshot is None and rng.random() < 0.3:
            held.snapshot = (snap, paths, mapping, digests)
            keep = True
    finally:
        if not keep:
            snap.close()


def reader(db: streamdb.Database, shared: Shared, progress: Progress, index: int,
           seed: int) -> None:
    rng = random.Random(seed)
    held = Held()
    try:
        while not shared.stop.is_set():
            roll = rng.random()
            path = rng.choice(UNIVERSE)
            before = shared.acked.get(path)
            if roll < 0.30:
                try:
                    if rng.random() < 0.8:
                        data = db.get(path)
                    else:
                        with db.open(path, "rb") as f:
                            data = f.read()
                    gen: int | None = sd.parse(path, data)
                except streamdb.NotFoundError:
                    gen = None
                check_latest(shared, path, before, gen)
            elif roll < 0.45:
                try:
                    view = db.get_view(path)
                except streamdb.NotFoundError:
                    check_latest(shared, path, before, None)
                else:
                    check_latest(shared, path, before, sd.parse(path, view))
                    held.views.append((path, view, hashlib.sha256(view).digest()))
                    del view
                    if len(held.views) > 3:
                        held.check_view()
            elif roll < 0.60:
                if held.stream is not None:
                    held.finish_stream()
                size = rng.choice([None, 4096, 65_536, 300_000])
                try:
                    chunks = db.get_stream(path, chunk_size=size)
                except streamdb.NotFoundError:
                    check_latest(shared, path, before, None)
                else:
                    parts = [next(chunks, b"")]
                    gen = sd.header_gen(path, parts[0]) if parts[0] else None
                    if gen is not None and rng.random() < 0.3:
                        held.stream = (path, chunks, parts, gen)  # finished later
                    else:
                        parts.extend(chunks)
                        gen = sd.parse(path, b"".join(parts))
                    check_latest(shared, path, before, gen)
            elif roll < 0.90:
                check_snapshot(db, shared, rng, held)
            elif held.snapshot is not None:
                held.check_snapshot()
            else:
                assert 0 <= len(db) <= len(UNIVERSE)
                assert set(db.search("/")) <= set(UNIVERSE)
            progress.done(index)
        held.check_all()
    except BaseException:
        shared.fail(f"reader {index}")
    finally:
        if held.snapshot is not None:
            held.snapshot[0].close()


# ---- the test -----------------------------------------------------------------------------


def watch_syncs(monkeypatch: pytest.MonkeyPatch, writer_ident: list[int],
                progress: Progress) -> None:
    """Count reads that complete while the writer thread is in an fsync; every 8th one also
    holds the writer there (writer lock held, commit unpublished) until a reader completes
    a read: readers that waited for the writer would never do so."""
    real = OsFile.sync

    def sync(self: OsFile) -> None:
        if threading.get_ident() not in writer_ident:
            real(self)
            return
        with progress.lock:
            before = progress.reads
            progress.syncs += 1
            hold = progress.syncs % 8 == 0
        real(self)
        with progress.lock:
            if hold:
                assert progress.cond.wait_for(lambda: progress.reads > before, WAIT), (
                    "no reader completed a read while the writer was committing")
                progress.held_commits += 1
            progress.reads_during_sync += progress.reads - before
            progress.syncs_overlapped += progress.reads > before

    monkeypatch.setattr(OsFile, "sync", sync)


def expected(model: dict[str, int]) -> dict[str, bytes]:
    return {p: sd.make(p, g) for p, g in model.items()}


def check_database(db: streamdb.Database) -> None:
    db._engine._check()
    assert isinstance(db._engine._table, FileReaderTable)
    db._engine._table._check()
    cache = db._engine._pager.cache  # the page cache of the pread path
    assert (cache is not None) == (not db.config.use_mmap and db.config.page_cache_size > 0)
    if cache is not None:
        cache._check()
        assert db.stats().cache_pages <= db.config.page_cache_size
    report = db.verify()
    assert report.ok, report.problems


def stress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int,
           duration: float, config: streamdb.Config) -> None:
    path = tmp_path / "t.db"
    shared = Shared()
    progress = Progress()
    model: dict[str, int] = {}
    writer_ident: list[int] = []
    db = streamdb.open(path, config)
    with monkeypatch.context() as patch:
        watch_syncs(patch, writer_ident, progress)

        def write() -> None:
            writer_ident.append(threading.get_ident())
            try:
                writer(db, shared, model, seed, duration)
            except BaseException:
                shared.fail("writer")
            finally:
                shared.stop.set()

        threads = [threading.Thread(target=reader, args=(db, shared, progress, i, seed * 10 + i))
                   for i in range(READERS)]
        threads.append(threading.Thread(target=write))
        for t in threads:
            t.start()
        for t in threads:
            t.join(duration + 120)
        assert not any(t.is_alive() for t in threads), "a thread hangs"
    errors = list(shared.errors)  # checksum errors, half documents, failed checks
    assert not errors, "\n".join(errors)
    print(f"ops {shared.ops}; reads {progress.per_reader}; fsyncs {progress.syncs}, "
          f"{progress.syncs_overlapped} with reads completing during them "
          f"({progress.reads_during_sync} reads)")

    # Every kind of operation ran; each reader read a lot, also during commits.
    assert set(shared.ops) >= {"transaction", "write_documents", "write", "delete",
                               "group delete", "rolled back", "checkpoint", "gc", "compact"}
    assert min(progress.per_reader) >= 50 * duration / 5, progress.per_reader
    assert progress.held_commits >= 1 and progress.syncs_overlapped >= 1
    assert progress.reads_during_sync >= progress.held_commits

    gc.collect()  # views the threads held are gone: their pins must be too
    db.gc()
    stats = db.stats()
    assert stats.snapshots == 0 and stats.readers == 0 and stats.pending_free_pages == 0, stats
    check_database(db)
    want = expected(model)
    assert {p: db.get(p) for p in db} == want
    db.close()
    with streamdb.open(path, config) as db:
        assert {p: db.get(p) for p in db} == want
        check_database(db)


# Reads through the memory map, or through pread and the page cache (with read-ahead, and
# invalidations by every write), the latter also with a cache small enough to evict.
CONFIGS = {
    "mmap": streamdb.Config(),
    "pread": streamdb.Config(use_mmap=False),
    "pread-small-cache": streamdb.Config(use_mmap=False, page_cache_size=96),
}


@pytest.mark.parametrize(("mode", "duration"), [("mmap", 5.0), ("pread", 3.0)])
def test_threads_stress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                        duration: float) -> None:
    stress(tmp_path, monkeypatch, seed=1, duration=duration, config=CONFIGS[mode])


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(CONFIGS))
def test_threads_stress_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             mode: str) -> None:
    stress(tmp_path, monkeypatch, seed=2,
           duration=float(os.environ.get("STREAMDB_STRESS_SECONDS", "60")),
           config=CONFIGS[mode])


def test_reads_do_not_wait_for_a_commit_or_a_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer stopped inside its commit's fsync, or inside an open transaction, does not
    stop reads in other threads, and they do not see its writes until it is committed."""
    members = sd.group_paths(0, big=True)
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_documents((p, sd.make(p, 1)) for p in members)
        inside, resume = threading.Event(), threading.Event()
        real = OsFile.sync

        def sync(self: OsFile) -> None:
            real(self)
            if threading.current_thread().name == "writer":
                inside.set()
                assert resume.wait(WAIT)

        def write(g: int) -> None:
            with db.transaction():
                for p in members:
                    db.write_document(p, sd.make(p, g))
                if g == 3:  # hold the transaction open, uncommitted
                    inside.set()
                    assert resume.wait(WAIT)

        def reads_see(g: int) -> streamdb.Snapshot:
            assert [sd.parse(p, db.get(p)) for p in members] == [g] * len(members)
            assert sd.parse(members[-1], db.get_view(members[-1])) == g
            assert sd.parse(members[2], b"".join(db.get_stream(members[2], 4096))) == g
            assert db.search("/g/") == sorted(members) and len(db) == len(members)
            snap = db.snapshot()
            assert sd.parse(members[-1], snap.get(members[-1])) == g
            return snap

        with monkeypatch.context() as patch:
            patch.setattr(OsFile, "sync", sync)
            for g in (2, 3):
                inside.clear()
                resume.clear()
                thread = threading.Thread(target=write, args=(g,), name="writer")
                thread.start()
                assert inside.wait(WAIT)
                snap = reads_see(g - 1)  # the writer is stopped mid-commit
                resume.set()
                thread.join(WAIT)
                assert not thread.is_alive()
                reads_see(g).close()
                with snap:  # taken during the commit: still the state before it
                    assert sd.parse(members[-1], snap.get(members[-1])) == g - 1
