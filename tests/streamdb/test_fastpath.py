"""The fast read path (`Engine.fast_get`, rule P4 in streamdb/engine/pins.py): a whole,
plain, one-chunk document read again comes from its cached location, pinned without a lock.
It must never return anything the general path would not: after overwrites, deletes,
aliases, transactions (their own thread sees pending writes, others do not), rollbacks,
compaction, close, damage, and while a writer reuses pages under busy readers."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

import streamdb
from streamdb import Config


def tagged(path: str, n: int, size: int) -> bytes:
    """Bytes that say which path and write they are, so a reader can check one is whole."""
    head = f"{path}#{n}#".encode()
    return (head * (size // len(head) + 1))[:size]


def test_reads_follow_every_change(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "f.db") as db:
        db.write_document("/a", b"one")
        db.write_document("/p", tagged("/p", 1, 4096))
        db.checkpoint()  # /p on pages, /a inline
        for _ in range(2):
            assert db.get("/a") == b"one" and db.get("/p") == tagged("/p", 1, 4096)
        assert "/a" in db._engine._locations and "/p" in db._engine._locations
        db.write_document("/p", tagged("/p", 2, 4096))
        assert db.get("/p") == tagged("/p", 2, 4096)
        doc = db.get_id_by_path("/p")
        db.bind_to_path(doc, "/alias")
        assert db.get("/alias") == tagged("/p", 2, 4096)
        db.write_document("/alias", tagged("/p", 3, 4096))  # a new version through the alias
        assert db.get("/p") == tagged("/p", 3, 4096) == db.get("/alias")
        db.bind_to_path(db.get_id_by_path("/a"), "/p")  # /p now names /a's document
        assert db.get("/p") == b"one" and db.get("/alias") == tagged("/p", 3, 4096)
        db.delete("/a")
        db.delete("/p")
        with pytest.raises(streamdb.NotFoundError):
            db.get("/a")
        with pytest.raises(streamdb.NotFoundError):
            db.get("/p")
        db.append_message("/log", b"m1")
        assert db.get("/log") == db.get("/log")
        before = db.get("/log")
        db.append_message("/log", b"m2")
        assert db.get("/log") != before and len(db.get("/log")) > len(before)


def test_a_transaction_sees_its_writes_and_others_do_not(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_document("/x", tagged("/x", 1, 4096))
        db.checkpoint()
        assert db.get("/x") == db.get("/x") == tagged("/x", 1, 4096)
        seen: list[bytes] = []
        with db.transaction():
            db.write_document("/x", tagged("/x", 2, 4096))
            assert db.get("/x") == tagged("/x", 2, 4096)  # its own pending write
            other = threading.Thread(target=lambda: seen.append(db.get("/x")))
            other.start()
            other.join()
        assert seen == [tagged("/x", 1, 4096)]  # another thread: the published one
        assert db.get("/x") == tagged("/x", 2, 4096)
        with pytest.raises(KeyError), db.transaction():
            db.write_document("/x", tagged("/x", 3, 4096))
            raise KeyError("roll back")
        assert db.get("/x") == tagged("/x", 2, 4096)


def test_compaction_and_close(tmp_path: Path) -> None:
    db = streamdb.open(tmp_path / "c.db")
    for i in range(5):
        db.write_document(f"/d{i}", tagged(f"/d{i}", 1, 10_000 * (i + 1)))
    db.delete("/d0")
    assert all(db.get(f"/d{i}") == db.get(f"/d{i}") for i in range(1, 5))
    db.compact()
    assert db._engine._pager.mapped  # the new file is read through its map too
    assert all(db.get(f"/d{i}") == tagged(f"/d{i}", 1, 10_000 * (i + 1)) for i in range(1, 5))
    assert "/d4" in db._engine._locations
    db.close()
    with pytest.raises(streamdb.ClosedError):
        db.get("/d1")


def test_damage_is_reported_by_the_general_path(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with streamdb.open(path) as db:
        db.write_document("/big", tagged("/big", 1, 100_000))
    with streamdb.open(path) as db:
        assert db.get("/big") == db.get("/big")  # cached
        start = db._engine._locations["/big"][1]
        with open(path, "r+b") as f:  # flip a byte under the map
            f.seek(start + 5000)
            x = f.read(1)
            f.seek(start + 5000)
            f.write(bytes([x[0] ^ 0xFF]))
        with pytest.raises(streamdb.ChecksumMismatch, match="/big"):
            db.get("/big")
        db.set_quick_mode(False)
    with streamdb.open(path) as db, pytest.warns(UserWarning):
        db.set_quick_mode(True)  # quick mode: not verified, as the general path
        assert len(db.get("/big")) == 100_000


def test_stats_count_fast_reads(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "s.db") as db:
        db.write_document("/a", b"abc")
        before = db.stats()
        for _ in range(10):
            db.get("/a")
        after = db.stats()
        assert after.reads - before.reads == 10
        assert after.bytes_read - before.bytes_read == 30


def test_a_reader_process_follows(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with streamdb.open(path) as writer, streamdb.open(path, readonly=True) as reader:
        writer.write_document("/a", tagged("/a", 1, 4096))
        reader.refresh()
        assert reader.get("/a") == reader.get("/a") == tagged("/a", 1, 4096)
        writer.write_document("/a", tagged("/a", 2, 4096))
        assert reader.get("/a") == tagged("/a", 1, 4096)  # until it refreshes
        reader.refresh()
        assert reader.get("/a") == tagged("/a", 2, 4096)
        writer.delete("/a")
        writer.checkpoint()
        reader.refresh()
        with pytest.raises(streamdb.NotFoundError):
            reader.get("/a")


@pytest.mark.parametrize("durability", ["full", "off"])
def test_busy_readers_never_see_reused_pages(tmp_path: Path, durability: str) -> None:
    """A writer overwrites and deletes documents of one page to a few pages, so their pages
    are freed and reused at once, while reader threads get() them as fast as they can:
    every read is one whole version that was written, never a mix or another document's
    bytes."""
    config = Config(page_size=4096, durability=durability)  # type: ignore[arg-type]
    paths = [f"/d{i}" for i in range(16)]
    rng = random.Random(7)
    stop = threading.Event()
    errors: list[str] = []
    with streamdb.open(tmp_path / "b.db", config) as db:
        for p in paths:
            db.write_document(p, tagged(p, 0, 70_000))

        def read(seed: int) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                p = r.choice(paths)
                try:
                    data = db.get(p)
                except streamdb.NotFoundError:
                    continue
                head = data[: data.index(b"#", len(p) + 1) + 1]
                path, n = head.decode().split("#")[:2]
                if path != p or data != tagged(p, int(n), len(data)):
                    errors.append(f"{p}: a read of {len(data)} bytes is not one version")
                    stop.set()

        readers = [threading.Thread(target=read, args=(i,)) for i in range(3)]
        for t in readers:
            t.start()
        deadline = time.monotonic() + (4 if os.environ.get("STREAMDB_STRESS") else 1.5)
        n = 0
        while time.monotonic() < deadline and not stop.is_set():
            n += 1
            p = rng.choice(paths)
            if rng.random() < 0.1:
                db.delete(p)
                db.write_document(p, tagged(p, n, rng.choice([100, 4096, 70_000, 200_000])))
            else:
                db.write_document(p, tagged(p, n, rng.choice([4096, 70_000, 200_000])))
            if n % 50 == 0:
                db.checkpoint()
        stop.set()
        for t in readers:
            t.join()
        assert not errors, errors
        assert n > 20
        db._engine._check()


def test_a_fast_read_in_flight_keeps_its_pages(tmp_path: Path) -> None:
    """P4 directly: while a thread's slot holds a state (a fast read in flight), the pages
    that state sees are not reused; once the slot is clear, they are."""
    with streamdb.open(tmp_path / "p.db", Config(page_size=4096)) as db:
        engine = db._engine
        db.write_document("/a", tagged("/a", 1, 100_000))
        assert db.get("/a") == db.get("/a")
        doc = engine._catalog.doc(db.get_id_by_path("/a").bytes)
        assert doc is not None
        first, count = doc.latest.extents[0]
        old = set(range(first, first + count))
        slot = engine._pins.slot(engine._counters)
        slot.state = engine._pins.current  # a fast read of /a, in flight
        for n in range(2, 6):  # /a's first version is dropped (keep 2), then more pages
            db.write_document("/a", tagged("/a", n, 100_000))
        used = {p for d in engine._catalog.iter_docs() for v in d.versions
                for s, c in v.extents for p in range(s, s + c)}
        assert not old & used, "pages a fast read may be reading were reused"
        slot.state = None
        time.sleep(0.06)  # a reader held them at the last look: the next look is this late
        for n in range(6, 10):
            db.write_document("/a", tagged("/a", n, 100_000))
        used = {p for d in engine._catalog.iter_docs() for v in d.versions
                for s, c in v.extents for p in range(s, s + c)}
        assert old & used, "once the read is done, its pages are reused"


def test_batched_writes_leave_the_garbage_collector_as_they_found_it(tmp_path: Path) -> None:
    import gc

    with streamdb.open(tmp_path / "g.db") as db:
        assert gc.isenabled()
        db.write_documents([(f"/a{i}", bytes([i]) * 100) for i in range(50)])
        assert gc.isenabled()
        with pytest.raises(streamdb.InvalidArgumentError):
            db.write_documents([("/ok", b"x"), ("/bad", [b"x", 5])])
        assert gc.isenabled() and not db.exists("/ok")
        gc.disable()
        try:
            db.write_documents([("/b", b"y")])
            assert not gc.isenabled()
        finally:
            gc.enable()
        ids = db.write_documents([(f"/c{i}", b"z") for i in range(20)])
        assert len(set(ids)) == 20 and all(i.version == 4 for i in ids)
        assert [db.get_id_by_path(f"/c{i}") for i in range(20)] == ids


def test_a_large_batch_of_small_documents_goes_to_pages_atomically() -> None:
    """A batch of more than 256 KiB of small documents: they go to pages allocated together
    (not through the log), and the batch is all there after a power loss, or, when a file
    call fails anywhere in it, not there at all."""
    import errno

    from wal.faults import FaultyVFS
    from wal.memvfs import MemoryVFS

    config = Config(page_size=4096)
    docs = [(f"/b/{i}", tagged(f"/b/{i}", 1, 3000 + 17 * i)) for i in range(100)]
    mem = MemoryVFS()
    with streamdb.open("/d/x.db", config, vfs=mem) as db:
        db.write_documents(docs)
        engine = db._engine
        doc = engine._catalog.doc(db.get_id_by_path("/b/7").bytes)
        assert doc is not None and doc.latest.inline is None and doc.latest.extents
        crashed = mem.crash(keep="none")
    with streamdb.open("/d/x.db", config, vfs=crashed) as db:
        assert {p: db.get(p) for p in db} == dict(docs)

    probe = FaultyVFS(MemoryVFS())
    with streamdb.open("/d/y.db", config, vfs=probe) as db:
        before = probe.calls
        db.write_documents(docs)
        total = probe.calls - before
    failed = 0
    for n in range(1, total + 1):
        inner = MemoryVFS()
        disk = FaultyVFS(inner, errno=errno.EIO)
        db = streamdb.open("/d/y.db", config, vfs=disk)
        disk.fail_at = disk.calls + n
        try:
            db.write_documents(docs)
            ok = True
        except (streamdb.StorageIOError, streamdb.StorageFullError):
            ok, failed = False, failed + 1
        disk.fail_at = None
        db._engine.crash()
        with streamdb.open("/d/y.db", config, vfs=inner.crash(keep="none")) as again:
            got = {p: again.get(p) for p in again}
            assert got in ({}, dict(docs)) and (got == dict(docs) or not ok), (n, len(got))
            assert again.verify().ok
    assert failed > 0
