"""Transactions (docs/design.md, section 2, "The database"; invariants 2 and 7): every
write inside `with db.transaction()` commits atomically at exit with one fsync, none of them
if the block raises; the owner thread reads its pending writes, other threads read the
committed state without waiting and write after it. Ends with writer processes killed with
SIGKILL in the middle of committing transactions."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import streamdb
from streamdb import Config
from tests.streamdb.kill_tx_writer import model, payload
from tests.streamdb.killing import run_and_kill
from tests.streamdb.test_snapshots import check_all, rand
from wal.memvfs import MemoryVFS

PAGE = 4096
BIG = 300_000
HUGE = 5 << 20  # past the log's 4 MiB spill threshold
SPILL = [(f"/spill/{i}", rand(65_000, f"spill{i}")) for i in range(70)]  # 4.5 MB, all inline
WAIT = 10.0  # generous bound for things that must happen (never reached when they do)
BLOCKED = 0.2  # how long something that must wait is watched not finishing


class Boom(Exception):
    pass


def config(**overrides: object) -> Config:
    return Config(**{"page_size": PAGE, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[streamdb.Database]:
    with streamdb.open(tmp_path / "t.db", config()) as handle:
        yield handle


def contents(r: streamdb.Database | streamdb.Snapshot) -> dict[str, tuple[bytes, list[int]]]:
    return {p: (r.get(p), r.versions(p)) for p in r}


def used_pages(db: streamdb.Database) -> int:
    s = db.stats()
    return s.file_pages - s.free_pages - s.pending_free_pages


def baseline(db: streamdb.Database) -> None:
    db.write_document("/keep", b"keep-1")
    db.write_document("/keep", b"keep-2")
    doc = db.write_document("/big", rand(BIG, "big"))
    db.bind_to_path(doc, "/alias")
    db.write_document("/small", b"small")
    db.checkpoint()


def every_kind_of_write(db: streamdb.Database) -> None:
    """Writes, overwrites, deletes, binds and unbinds of every size, the log batch spilling."""
    db.write_document("/new/small", b"n")
    db.write_document("/new/big", rand(BIG, "new big"))
    db.write_document("/new/huge", rand(HUGE, "huge"))
    db.write_document("/keep", b"keep-3")
    db.write_document("/big", rand(BIG, "big-2"))
    db.delete("/small")
    db.unbind_path("/alias")
    db.bind_to_path(db.get_id_by_path("/keep"), "/new/alias")
    db.write_documents(SPILL)


EXPECTED_AFTER_EVERY_KIND = {
    "/new/small": b"n",
    "/new/big": rand(BIG, "new big"),
    "/new/huge": rand(HUGE, "huge"),
    "/keep": b"keep-3",
    "/new/alias": b"keep-3",
    "/big": rand(BIG, "big-2"),
    **dict(SPILL),
}


# ---- atomicity and visibility ------------------------------------------------------------


def test_commit_makes_every_write_visible_at_once_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = streamdb.open(path, config())
    baseline(db)
    commits = db.stats().commits
    lsn = db.refresh()
    with db.transaction():
        every_kind_of_write(db)
        # The owner thread reads its pending writes, with every read method.
        assert db.refresh() == lsn
        assert db.get("/new/huge") == rand(HUGE, "huge")
        assert bytes(db.get_view("/new/big")) == rand(BIG, "new big")
        assert b"".join(db.get_stream("/new/huge")) == rand(HUGE, "huge")
        assert db.versions("/keep") == [2, 3]
        assert "/small" not in db and "/alias" not in db
        assert db.search("/new/") == ["/new/alias", "/new/big", "/new/huge", "/new/small"]
        assert db.search_suffix("/alias") == ["/new/alias"]
        assert db.list_paths(db.get_id_by_path("/keep")) == ["/keep", "/new/alias"]
        assert db.info("/new/big").size == BIG
        assert len(db) == 6 + len(SPILL)
        assert db.stats().commits == commits
    assert db.stats().commits == commits + 1
    got = {p: db.get(p) for p in db}
    assert got == EXPECTED_AFTER_EVERY_KIND
    assert db.verify().ok
    check_all(db)
    db.close()
    with streamdb.open(path, config()) as again:
        assert {p: again.get(p) for p in again} == EXPECTED_AFTER_EVERY_KIND
        assert again.versions("/keep") == [2, 3]
        check_all(again)


def test_an_exception_inside_leaves_nothing_and_returns_the_space(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = streamdb.open(path, config())
    baseline(db)
    before = contents(db)
    used = used_pages(db)
    commits = db.stats().commits
    with pytest.raises(Boom) as raised, db.transaction():
        every_kind_of_write(db)
        assert db.get("/new/huge") == rand(HUGE, "huge")
        raise Boom("the block fails")
    assert str(raised.value) == "the block fails"  # propagated unchanged
    assert contents(db) == before
    assert db.stats().commits == commits
    assert used_pages(db) == used, "pages of the rolled-back writes were not returned"
    check_all(db)
    report = db.verify()
    assert report.ok, report.problems
    # The returned pages are reused: committing the same writes barely grows the file.
    pages = db.stats().file_pages
    with db.transaction():
        every_kind_of_write(db)
    assert db.stats().file_pages <= pages + 64
    assert {p: db.get(p) for p in db} == EXPECTED_AFTER_EVERY_KIND
    db.close()
    with streamdb.open(path, config()) as again:
        assert {p: again.get(p) for p in again} == EXPECTED_AFTER_EVERY_KIND
        assert again.verify().ok


def test_an_exception_leaves_nothing_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = streamdb.open(path, config())
    baseline(db)
    before = contents(db)
    with pytest.raises(Boom), db.transaction():
        every_kind_of_write(db)
        raise Boom
    db.close()
    with streamdb.open(path, config()) as again:
        assert contents(again) == before
        assert again.verify().ok
        check_all(again)


def test_a_base_exception_rolls_back_too(db: streamdb.Database) -> None:
    with pytest.raises(KeyboardInterrupt), db.transaction():
        db.write_document("/k", rand(BIG, "k"))
        raise KeyboardInterrupt
    assert "/k" not in db
    with db.transaction():  # the lock was released: a new transaction starts
        db.write_document("/k", b"ok")
    assert db.get("/k") == b"ok"
    check_all(db)


@pytest.mark.parametrize("keep", ["none", "random", "all"])
def test_power_loss_mid_transaction_keeps_the_committed_prefix(keep: str) -> None:
    disk = MemoryVFS()
    db = streamdb.open("/d/t.db", config(), vfs=disk)
    baseline(db)
    before = contents(db)
    with pytest.raises(Boom), db.transaction():
        every_kind_of_write(db)  # the spilled batch is in the log file, without its end
        crashed = [disk.crash(keep=keep, rng=random.Random(seed))  # type: ignore[arg-type]
                   for seed in range(4)]
        raise Boom
    with db.transaction():
        db.write_document("/after", b"committed after the rollback")
    after_rollback = disk.crash(keep=keep, rng=random.Random(9))  # type: ignore[arg-type]
    db._engine._forget()  # the process is gone: no checkpoint, no rollback
    for lost in crashed:
        with streamdb.open("/d/t.db", config(), vfs=lost) as again:
            assert contents(again) == before
            assert again.verify().ok
            check_all(again)
    with streamdb.open("/d/t.db", config(), vfs=after_rollback) as again:
        assert contents(again) == {**before, "/after": (b"committed after the rollback", [1])}
        assert again.verify().ok
        check_all(again)


def test_other_threads_read_the_committed_state_without_waiting(db: streamdb.Database) -> None:
    baseline(db)
    committed = contents(db)
    inside, looked = threading.Event(), threading.Event()
    seen: dict[str, object] = {}
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            assert inside.wait(WAIT)
            seen["contents"] = contents(db)
            seen["len"] = len(db)
            seen["search"] = db.search("/new")
            seen["new exists"] = db.exists("/new/small")
            seen["view"] = bytes(db.get_view("/big"))
            with db.snapshot() as snap:
                seen["snapshot"] = contents(snap)
        except BaseException as exc:
            errors.append(exc)
        finally:
            looked.set()

    thread = threading.Thread(target=reader)
    thread.start()
    with db.transaction():
        every_kind_of_write(db)
        inside.set()
        assert looked.wait(WAIT), "a reader waited for the transaction"
        assert db.get("/big") == rand(BIG, "big-2")  # while this thread sees its writes
    thread.join(WAIT)
    assert not errors, errors
    assert seen == {
        "contents": committed,
        "len": 4,
        "search": [],
        "new exists": False,
        "view": rand(BIG, "big"),
        "snapshot": committed,
    }
    assert {p: db.get(p) for p in db} == EXPECTED_AFTER_EVERY_KIND


def test_a_transaction_in_another_thread_is_invisible_here(db: streamdb.Database) -> None:
    db.write_document("/x", b"0")
    wrote, finish = threading.Event(), threading.Event()

    def owner() -> None:
        with db.transaction():
            db.write_document("/x", b"1")
            db.write_document("/y", rand(BIG, "y"))
            wrote.set()
            finish.wait(WAIT)

    thread = threading.Thread(target=owner)
    thread.start()
    assert wrote.wait(WAIT)
    assert db.get("/x") == b"0" and "/y" not in db and len(db) == 1
    with db.snapshot() as snap:
        assert sorted(snap) == ["/x"]
    finish.set()
    thread.join(WAIT)
    assert db.get("/x") == b"1" and db.get("/y") == rand(BIG, "y")


def test_other_threads_writes_and_maintenance_wait_for_the_transaction(
    db: streamdb.Database, tmp_path: Path
) -> None:
    db.write_document("/d", b"to delete")
    doc = db.write_document("/b", b"bound")
    started: dict[str, threading.Event] = {}
    done: dict[str, threading.Event] = {}
    errors: list[tuple[str, BaseException]] = []

    def in_tx() -> None:
        with db.transaction():
            db.write_document("/other-tx", b"o")

    calls: dict[str, Callable[[], object]] = {
        "write": lambda: db.write_document("/other", rand(BIG, "other")),
        "delete": lambda: db.delete("/d"),
        "bind": lambda: db.bind_to_path(doc, "/b2"),
        "transaction": in_tx,
        "gc": db.gc,
        "checkpoint": db.checkpoint,
        "verify": db.verify,
        "backup": lambda: db.backup(tmp_path / "backup.db"),
    }

    def run(name: str) -> None:
        started[name].set()
        try:
            calls[name]()
        except BaseException as exc:
            errors.append((name, exc))
        finally:
            done[name].set()

    threads = []
    with pytest.raises(Boom), db.transaction():
        db.write_document("/tx", b"t")
        for name in calls:
            started[name], done[name] = threading.Event(), threading.Event()
            threads.append(threading.Thread(target=run, args=(name,)))
            threads[-1].start()
        assert all(e.wait(WAIT) for e in started.values())
        time.sleep(BLOCKED)  # time for anything that does not wait to finish
        assert [n for n, e in done.items() if e.is_set()] == []
        assert "/other" not in db and db.get("/d") == b"to delete"
        db.write_document("/tx2", b"t2")
        raise Boom  # the others' writes are theirs: they survive our rollback
    for thread in threads:
        thread.join(WAIT)
    assert all(e.is_set() for e in done.values())
    assert not errors, errors
    assert "/tx" not in db and "/tx2" not in db
    assert db.get("/other") == rand(BIG, "other")
    assert db.get("/other-tx") == b"o" and db.get("/b2") == b"bound"
    assert "/d" not in db
    assert (tmp_path / "backup.db").exists()
    check_all(db)


def test_concurrent_readers_never_see_half_a_transaction(db: streamdb.Database) -> None:
    """Transactions keep /pair/a, /pair/b and the /set/ paths in step; reader threads check
    every snapshot and every search they make while a writer thread commits and aborts."""
    rounds = 40
    stop = threading.Event()
    errors: list[BaseException] = []
    checks = [0]

    pair_b = {k: rand(70_000 + k, k) for k in range(rounds)}

    def state(k: int) -> dict[str, bytes]:
        return {"/pair/a": b"%d" % k, "/pair/b": pair_b[k],
                **{f"/set/{k}/{i}": b"x" for i in range(3)}}

    with db.transaction():
        for p, data in state(0).items():
            db.write_document(p, data)

    def writer() -> None:
        try:
            for k in range(1, rounds):
                try:
                    with db.transaction():
                        for p in db.search("/set/"):
                            db.delete(p)
                        for p, data in state(k).items():
                            db.write_document(p, data)
                        if k % 3 == 0:
                            raise Boom
                except Boom:
                    pass
                if k % 20 == 0:
                    db.gc()
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set() or checks[0] < 10:
                with db.snapshot() as snap:
                    k = int(snap.get("/pair/a"))
                    assert k % 3 != 0 or k == 0, f"rolled-back transaction {k} is visible"
                    assert snap.get("/pair/b") == pair_b[k]
                    assert snap.search("/set/") == [f"/set/{k}/{i}" for i in range(3)]
                paths = db.search("/set/")  # one call: one consistent state
                assert len(paths) == 3 and len({p.split("/")[2] for p in paths}) == 1
                checks[0] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert checks[0] >= 10
    final = rounds - 1 if (rounds - 1) % 3 else rounds - 2
    assert {p: db.get(p) for p in db} == state(final)
    check_all(db)


def test_writer_threads_are_serialised(db: streamdb.Database) -> None:
    errors: list[BaseException] = []

    def plain(t: int) -> None:
        try:
            for i in range(20):
                db.write_document(f"/plain/{t}/{i}", rand(100 if i % 3 else 70_000, (t, i)))
        except BaseException as exc:
            errors.append(exc)

    def transactions(t: int) -> None:
        try:
            for i in range(10):
                with db.transaction():
                    db.write_document(f"/tx/{t}/{i}/a", rand(70_000, (t, i)))
                    db.write_document(f"/tx/{t}/{i}/b", b"b")
                    assert db.get(f"/tx/{t}/{i}/a") == rand(70_000, (t, i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=plain, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=transactions, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(db.search("/plain/")) == 60 and len(db.search("/tx/")) == 40
    assert all(db.get(f"/plain/{t}/{i}") == rand(100 if i % 3 else 70_000, (t, i))
               for t in range(3) for i in range(20))
    assert db.verify().ok
    check_all(db)


# ---- failures inside, and what is refused -------------------------------------------------


def test_a_failed_write_inside_is_undone_alone(tmp_path: Path) -> None:
    db = streamdb.open(tmp_path / "t.db", config(max_document_size=200_000))
    db.write_document("/kept", b"kept")
    used = used_pages(db)

    def failing_source() -> Iterator[bytes]:
        yield rand(100_000, "part")  # pages are allocated and written before it fails
        raise OSError("the source broke")

    with db.transaction():
        db.write_document("/a", rand(BIG // 3, "a"))
        with pytest.raises(streamdb.DocumentTooLargeError):
            db.write_document("/too-large", rand(BIG, "too large"))
        with pytest.raises(streamdb.DocumentTooLargeError):
            db.write_document("/kept", (rand(70_000, i) for i in range(4)))  # size unknown
        with pytest.raises(streamdb.NotFoundError):
            db.delete("/missing")
        with pytest.raises(streamdb.NotFoundError):
            db.unbind_path("/missing")
        with pytest.raises(streamdb.NotFoundError):
            db.bind_to_path(uuid.UUID(int=7), "/x")
        with pytest.raises(streamdb.InvalidPathError):
            db.write_document("no-slash", b"x")
        with pytest.raises(streamdb.InvalidArgumentError):
            db.write_document("/str", "text")
        with pytest.raises(OSError, match="the source broke"):
            db.write_document("/broken", failing_source())
        assert sorted(db) == ["/a", "/kept"]
        assert db.get("/kept") == b"kept"
        db.write_document("/b", b"b")
    assert sorted(db) == ["/a", "/b", "/kept"]
    assert db.get("/kept") == b"kept" and db.versions("/kept") == [1]
    check_all(db)
    assert used_pages(db) == used + -(-BIG // 3 // PAGE), "a failed write leaked pages"
    assert db.verify().ok
    db.close()


def test_a_failed_batch_inside_is_undone_alone(tmp_path: Path) -> None:
    """write_documents is one write: when its second document fails, its first is undone
    with it, and the transaction goes on with what it had."""
    small = streamdb.open(tmp_path / "t.db", config(max_document_size=100_000))
    with small.transaction():
        small.write_document("/first", b"1")
        with pytest.raises(streamdb.DocumentTooLargeError):
            small.write_documents([("/ok", b"ok"), ("/big", bytes(200_000))])
        assert sorted(small) == ["/first"]
        small.write_document("/after", b"2")
        with small.snapshot() as snap:
            assert sorted(snap) == ["/after", "/first"]
        assert small.stats().commits == 0  # nothing committed before the block ends
    assert sorted(small) == ["/after", "/first"]
    check_all(small)
    small.close()


def test_transactions_do_not_nest(db: streamdb.Database) -> None:
    with db.transaction():
        db.write_document("/outer", b"o")
        with pytest.raises(streamdb.InvalidArgumentError), db.transaction():
            db.write_document("/inner", b"never")
        db.write_document("/outer2", b"o2")
    assert sorted(db) == ["/outer", "/outer2"]
    with db.transaction():  # the lock count is back to zero: other threads may write
        pass
    thread = threading.Thread(target=lambda: db.write_document("/thread", b"t"))
    thread.start()
    thread.join(WAIT)
    assert db.get("/thread") == b"t"


def test_maintenance_is_refused_inside(db: streamdb.Database, tmp_path: Path) -> None:
    db.write_document("/x", b"x")
    with db.transaction():
        db.write_document("/y", b"y")
        for call in (db.gc, db.checkpoint, db.compact, db.verify,
                     lambda: db.backup(tmp_path / "b.db")):
            with pytest.raises(streamdb.InvalidArgumentError):
                call()
        db.write_document("/z", b"z")
    assert sorted(db) == ["/x", "/y", "/z"]
    assert not (tmp_path / "b.db").exists()
    assert db.stats().checkpoints == 0
    db.checkpoint()  # fine again outside
    assert db.stats().checkpoints == 1


def test_readonly_database_has_no_transactions(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with streamdb.open(path, config()) as writer:
        writer.write_document("/x", b"x")
        with streamdb.open(path, readonly=True) as ro:
            with pytest.raises(streamdb.ReadOnlyError), ro.transaction():
                pass
            assert ro.get("/x") == b"x"


def test_close_inside_the_transaction_rolls_it_back(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = streamdb.open(path, config())
    db.write_document("/before", b"b")
    with pytest.raises(streamdb.StorageIOError), db.transaction():
        db.write_document("/inside", rand(BIG, "inside"))
        db.close()
    with pytest.raises(streamdb.ClosedError):
        db.get("/before")
    with streamdb.open(path, config()) as again:
        assert sorted(again) == ["/before"]
        assert again.verify().ok
        check_all(again)


def test_raising_after_close_inside_propagates_the_exception(tmp_path: Path) -> None:
    db = streamdb.open(tmp_path / "t.db", config())
    with pytest.raises(Boom), db.transaction():
        db.write_document("/inside", b"i")
        db.close()
        raise Boom


# ---- fsyncs --------------------------------------------------------------------------------


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every fsync and fdatasync the process makes."""
    calls: list[int] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        calls.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return calls


def test_one_fsync_per_transaction(db: streamdb.Database, syncs: list[int]) -> None:
    db.write_document("/warm", b"w")  # the log exists and is preallocated
    syncs.clear()
    with db.transaction():
        for i in range(40):
            db.write_document(f"/small/{i}", rand(1000, i))
        db.delete("/warm")
        db.bind_to_path(db.get_id_by_path("/small/0"), "/alias")
    assert len(syncs) == 1, "small documents: the log record is the one fsync"
    # Log files start at 1 MiB and double (wal rule W6): crossing into a new file costs its
    # header and zero-fill fsyncs. Grown and checkpointed, the log rolls to a fresh 8 MiB
    # file, with room for the 4.5 MB batch.
    with db.transaction():  # one by one: through the log, which grows
        for i, (_, data) in enumerate(SPILL):
            db.write_document(f"/grow/{i}", data)
    db.checkpoint()
    syncs.clear()
    with db.transaction():
        for path, data in SPILL:  # one by one: each travels in the log
            db.write_document(path, data)
    assert len(syncs) == 1, "a spilled batch is still one fsync"
    syncs.clear()
    with db.transaction():
        db.write_documents(SPILL)  # one batch of 4.5 MB: its documents go to pages
    assert len(syncs) == 2, "pages first (one fdatasync for all of them), then the log"
    syncs.clear()
    with db.transaction():
        for i in range(6):
            db.write_document(f"/big/{i}", rand(BIG, i))
        db.write_document("/huge", rand(HUGE, "huge"))
        db.write_document("/small/0", b"small")
    # Pages first (one fdatasync of the file for all of them), then the log record.
    assert len(syncs) == 2
    syncs.clear()
    for i in range(5):
        db.write_document(f"/each/{i}", b"e")
    assert len(syncs) == 5  # without a transaction: one per write
    syncs.clear()
    with pytest.raises(Boom), db.transaction():
        for i in range(10):
            db.write_document(f"/gone/{i}", b"g")
        raise Boom
    with db.transaction():
        pass
    assert syncs == [], "a rollback or an empty transaction needs no fsync"


# ---- kill -9 while committing ----------------------------------------------------------------

WRITER = Path(__file__).with_name("kill_tx_writer.py")


def recovered_matches(db: streamdb.Database, last: int) -> list[str]:
    """Differences between the database and the state after transactions 0..last."""
    expect = model(last)
    problems = [f"{p} present, carrying {db.get(p)[:16]!r}" for p in db if p not in expect]
    for p, (k, origin, size) in expect.items():
        if p not in db:
            problems.append(f"{p} of transaction {k} missing")
        elif db.get(p) != payload(k, origin, size):
            problems.append(f"{p} holds {db.get(p)[:16]!r}, not transaction {k}'s")
    return problems


def kill_round(path: Path, first: int, rng: random.Random) -> int:
    """Run a writer from transaction `first`, SIGKILL it at a random moment, check the
    recovered database; returns the last transaction in it."""
    lines = run_and_kill(WRITER, [str(path), str(first)], rng, (0.02, 0.6))
    acked = [int(line.split()[1]) for line in lines if line.startswith("C ")]
    assert acked == list(range(first, first + len(acked))), "acknowledged out of order"
    last_acked = first + len(acked) - 1
    with streamdb.open(path) as db:
        report = db.verify()
        assert report.ok, report.problems
        check_all(db)
        # Every acknowledged transaction is there; the one in flight all or nothing.
        for last in (last_acked, last_acked + 1):
            if not recovered_matches(db, last):
                return last
        pytest.fail(f"after transaction {last_acked} (acknowledged): "
                    f"{recovered_matches(db, last_acked)}; after {last_acked + 1}: "
                    f"{recovered_matches(db, last_acked + 1)}")


def kill_rounds(path: Path, count: int, rng: random.Random) -> None:
    last = -1
    for _ in range(count):
        last = kill_round(path, last + 1, rng)


def test_sigkill_mid_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    kill_rounds(tmp_path / "k.db", int(os.environ.get("KILL_ROUNDS", "8")), random.Random(11))


@pytest.mark.slow
def test_sigkill_mid_transaction_stress(tmp_path: Path) -> None:
    kill_rounds(tmp_path / "k.db", 150, random.Random(12))
