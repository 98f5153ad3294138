"""Crash safety of the database on the fault-injecting, power-loss-simulating file layer.

After any injected failure and any crash, the reopened database holds exactly the
acknowledged state, or that state plus the one operation that was in flight."""

from __future__ import annotations

import errno
import random

import pytest

import streamdb
from tests.streamdb import dbworkload
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS


def check(disk: MemoryVFS, out: dbworkload.Outcome) -> None:
    with streamdb.open(dbworkload.DB, dbworkload.CONFIG, vfs=disk) as db:
        got = dbworkload.contents(db)
        allowed = [out.acked] + ([out.pending] if out.pending is not None else [])
        assert got in allowed, (sorted(got), [sorted(a) for a in allowed], out.error)
        db._catalog._check()
        db._space._check()
        db.write_document("/after", b"usable")
    with streamdb.open(dbworkload.DB, dbworkload.CONFIG, vfs=disk.crash(keep="none")) as db:
        assert db.get("/after") == b"usable"


def total_calls(only: frozenset[str] | None = None) -> int:
    probe = FaultyVFS(MemoryVFS(), only=only)
    out = dbworkload.run(probe)
    assert out.error is None, out.error
    return probe.calls


def test_clean_run_survives_power_loss() -> None:
    mem = MemoryVFS()
    out = dbworkload.run(mem)
    assert out.error is None and out.steps == 13
    for keep in ("none", "random", "all"):
        check(mem.crash(keep=keep, rng=random.Random(1)), out)


WRITES = frozenset({"pwritev", "allocate", "truncate"})


@pytest.mark.parametrize(("code", "only"), [(errno.EIO, None), (errno.ENOSPC, WRITES)])
def test_fail_every_file_call_in_turn(code: int, only: frozenset[str] | None) -> None:
    """EIO at every file call; ENOSPC at every call that can run out of space."""
    total = total_calls(only)
    assert total > 20
    for n in range(1, total + 1):
        mem = MemoryVFS()
        out = dbworkload.run(FaultyVFS(mem, fail_at=n, errno=code, only=only))
        assert out.error is not None, n
        check(mem.crash(keep="none" if n % 2 else "all"), out)
        if code == errno.EIO:
            check(mem.crash(keep="all" if n % 2 else "none"), out)


def test_power_loss_at_every_sync_keeping_random_sectors() -> None:
    syncs = FaultyVFS(MemoryVFS(), only=frozenset({"sync", "sync_dir"}))
    dbworkload.run(syncs)
    rng = random.Random(5)
    for n in range(1, syncs.calls + 1):
        mem = MemoryVFS()
        out = dbworkload.run(FaultyVFS(mem, fail_at=n, only=frozenset({"sync", "sync_dir"})))
        for _ in range(4):
            check(mem.crash(keep="random", rng=rng), out)


def test_disk_full_leaves_the_database_usable_without_reopening() -> None:
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"pwritev"}))
    db = streamdb.open(dbworkload.DB, dbworkload.CONFIG, vfs=faulty)
    db.write_document("/kept", b"before")
    for size in (10, 200_000):
        faulty.fail_at, faulty.errno = faulty.calls + 1, errno.ENOSPC
        with pytest.raises(streamdb.StorageFullError):
            db.write_document("/new", bytes(size))
        faulty.fail_at = None
        assert "/new" not in db
        db.write_document("/next", b"still works")
        assert db.get("/kept") == b"before" and db.get("/next") == b"still works"
    db.close()


def test_after_a_failed_fsync_writes_are_refused_until_reopen() -> None:
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"sync"}))
    db = streamdb.open(dbworkload.DB, dbworkload.CONFIG, vfs=faulty)
    db.write_document("/kept", b"before")
    faulty.fail_at, faulty.errno = faulty.calls + 1, errno.EIO
    with pytest.raises(streamdb.StorageIOError):
        db.write_document("/lost", b"x")
    faulty.fail_at = None
    with pytest.raises(streamdb.StorageIOError, match="reopen"):
        db.write_document("/next", b"y")
    assert db.get("/kept") == b"before"  # reads still work
    db.close()
    with streamdb.open(dbworkload.DB, dbworkload.CONFIG, vfs=mem.crash(keep="none")) as again:
        assert again.get("/kept") == b"before"
        again.write_document("/next", b"y")


@pytest.mark.parametrize("durability", ["normal", "off"])
def test_lazy_durability_loses_at_most_recent_commits_never_consistency(durability: str) -> None:
    """With "normal" or "off" a power loss may drop the latest commits, but the database
    reopens to a state some prefix of the commits produced, and verifies."""
    config = streamdb.Config(page_size=4096, durability=durability)  # type: ignore[arg-type]
    rng = random.Random(11)
    for keep in ("none", "random", "all"):
        mem = MemoryVFS()
        db = streamdb.open(dbworkload.DB, config, vfs=mem)
        states: list[dict[str, bytes]] = [{}]
        for i in range(40):
            path, data = f"/k/{i % 7}", rng.randbytes(rng.choice((10, 3000, 90_000)))
            db.write_document(path, data)
            states.append({**states[-1], path: data})
            if i == 20:
                db.checkpoint()
        disk = mem.crash(keep=keep, rng=rng)
        with streamdb.open(dbworkload.DB, config, vfs=disk) as again:
            got = dbworkload.contents(again)
            assert got in states[21:], keep  # the checkpoint was durable
            assert again.verify().ok
            if keep == "all":
                assert got == states[-1]
        db.close()
