"""Crash safety of the database on the fault-injecting, power-loss-simulating file layer.

After any injected failure and any crash, the reopened database holds exactly the
acknowledged state, or that state plus the one operation that was in flight.

Every scenario runs under each config of `dbworkload.CONFIGS`: plain, and with compression
and/or encryption. The sweeps over every file call or every sync are exhaustive for the
plain config; for the transforming ones they take every `STRIDE[name]`-th point from a
seeded offset (zstd+aes, which compresses and encrypts, the densest), unless
STREAMDB_STRESS is set (`make stress`): then all of them.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import zlib

import pytest

import streamdb
from streamdb import Config
from streamdb.storage import records
from tests.streamdb import dbworkload
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS

STRESS = bool(os.environ.get("STREAMDB_STRESS"))
STRIDE = {"zstd+aes": 4, "lz4": 12, "snappy": 12}
NAMES = list(dbworkload.CONFIGS)


def points(total: int, name: str, test: str) -> list[int]:
    """The calls 1..total a sweep fails: all of them, or a seeded stride for a transform."""
    if STRESS or name == "plain":
        return list(range(1, total + 1))
    stride = STRIDE[name]
    start = 1 + random.Random(zlib.crc32(f"{name}:{test}".encode())).randrange(stride)
    return list(range(start, total + 1, stride))


def check(disk: MemoryVFS, out: dbworkload.Outcome, config: Config = dbworkload.CONFIG) -> None:
    with streamdb.open(dbworkload.DB, config, vfs=disk) as db:
        got = dbworkload.contents(db)
        allowed = [out.acked] + ([out.pending] if out.pending is not None else [])
        assert got in allowed, (sorted(got), [sorted(a) for a in allowed], out.error)
        db._engine._check()
        report = db.verify()  # every kept version, every chunk decoded and authenticated
        assert report.ok, report.problems
        db.write_document("/after", b"usable")
    with streamdb.open(dbworkload.DB, config, vfs=disk.crash(keep="none")) as db:
        assert db.get("/after") == b"usable"


def total_calls(only: frozenset[str] | None = None,
                config: Config = dbworkload.CONFIG) -> int:
    probe = FaultyVFS(MemoryVFS(), only=only)
    out = dbworkload.run(probe, config=config)
    assert out.error is None, out.error
    return probe.calls


@pytest.mark.parametrize("name", NAMES)
def test_clean_run_survives_power_loss(name: str) -> None:
    config = dbworkload.CONFIGS[name]
    mem = MemoryVFS()
    out = dbworkload.run(mem, config=config)
    assert out.error is None and out.steps == 13
    for keep in ("none", "random", "all"):
        check(mem.crash(keep=keep, rng=random.Random(1)), out, config)


def stored_versions(config: Config) -> list[records.Version]:
    """Every version the workload stored, as first seen after the step that wrote it."""
    seen: dict[tuple[bytes, int], records.Version] = {}

    def observe(db: streamdb.Database) -> None:
        for rec in db._engine.catalog.iter_docs():
            for v in rec.versions:
                seen.setdefault((rec.doc_id.bytes, v.version), v)

    assert dbworkload.run(MemoryVFS(), config=config, observe=observe).error is None
    return list(seen.values())


def test_transforms_store_chunks_in_the_log_and_in_pages() -> None:
    """What the transform variants are for: under each, the workload's documents are stored
    transformed, some inline (in the log; a checkpoint may move them to pages), some on
    pages, some compressed and some RAW, one in two chunks."""
    for name in dbworkload.TRANSFORMS:
        config = dbworkload.CONFIGS[name]
        versions = stored_versions(config)
        assert all(v.table for v in versions), name
        assert all(v.encrypted == (config.encryption_key is not None) for v in versions), name
        inline = [v for v in versions if v.inline is not None]
        paged = [v for v in versions if v.inline is None]
        flags = [f for v in paged for _, f, _ in v.table]
        assert any(v.size > 1000 and v.stored < v.size for v in inline), name
        assert any(len(v.table) > 1 for v in paged), name
        assert 0 in flags and records.CHUNK_RAW in flags, name  # compressed and RAW pages


WRITES = frozenset({"pwritev", "allocate", "truncate"})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("code", "only"), [(errno.EIO, None), (errno.ENOSPC, WRITES)],
                         ids=["EIO", "ENOSPC"])
def test_fail_every_file_call_in_turn(code: int, only: frozenset[str] | None,
                                      name: str) -> None:
    """EIO at every file call; ENOSPC at every call that can run out of space."""
    config = dbworkload.CONFIGS[name]
    total = total_calls(only, config)
    assert total > 20
    for n in points(total, name, f"fail-{code}"):
        mem = MemoryVFS()
        out = dbworkload.run(FaultyVFS(mem, fail_at=n, errno=code, only=only), config=config)
        assert out.error is not None, n
        check(mem.crash(keep="none" if n % 2 else "all"), out, config)
        if code == errno.EIO:
            check(mem.crash(keep="all" if n % 2 else "none"), out, config)


@pytest.mark.parametrize("name", NAMES)
def test_power_loss_at_every_sync_keeping_random_sectors(name: str) -> None:
    config = dbworkload.CONFIGS[name]
    syncs = FaultyVFS(MemoryVFS(), only=frozenset({"sync", "sync_dir"}))
    dbworkload.run(syncs, config=config)
    rng = random.Random(5)
    for n in points(syncs.calls, name, "sync"):
        mem = MemoryVFS()
        out = dbworkload.run(FaultyVFS(mem, fail_at=n, only=frozenset({"sync", "sync_dir"})),
                             config=config)
        for _ in range(4):
            check(mem.crash(keep="random", rng=rng), out, config)


@pytest.mark.parametrize("name", NAMES)
def test_disk_full_leaves_the_database_usable_without_reopening(name: str) -> None:
    config = dbworkload.CONFIGS[name]
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"pwritev"}))
    db = streamdb.open(dbworkload.DB, config, vfs=faulty)
    db.write_document("/kept", b"before")
    for size in (10, 200_000):
        faulty.fail_at, faulty.errno = faulty.calls + 1, errno.ENOSPC
        with pytest.raises(streamdb.StorageFullError):
            # incompressible: 200 KB go to pages whatever the config
            db.write_document("/new", random.Random(size).randbytes(size))
        faulty.fail_at = None
        assert "/new" not in db
        db.write_document("/next", b"still works")
        assert db.get("/kept") == b"before" and db.get("/next") == b"still works"
    assert db.verify().ok
    db.close()


@pytest.mark.parametrize("name", NAMES)
def test_after_a_failed_fsync_writes_are_refused_until_reopen(name: str) -> None:
    config = dbworkload.CONFIGS[name]
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"sync"}))
    db = streamdb.open(dbworkload.DB, config, vfs=faulty)
    db.write_document("/kept", b"before")
    faulty.fail_at, faulty.errno = faulty.calls + 1, errno.EIO
    with pytest.raises(streamdb.StorageIOError):
        db.write_document("/lost", b"x")
    faulty.fail_at = None
    with pytest.raises(streamdb.StorageIOError, match="reopen"):
        db.write_document("/next", b"y")
    assert db.get("/kept") == b"before"  # reads still work
    db.close()
    with streamdb.open(dbworkload.DB, config, vfs=mem.crash(keep="none")) as again:
        assert again.get("/kept") == b"before"
        again.write_document("/next", b"y")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("durability", ["normal", "off"])
def test_lazy_durability_loses_at_most_recent_commits_never_consistency(durability: str,
                                                                        name: str) -> None:
    """With "normal" or "off" a power loss may drop the latest commits, but the database
    reopens to a state some prefix of the commits produced, and verifies."""
    config = dataclasses.replace(dbworkload.CONFIGS[name],
                                 durability=durability)  # type: ignore[arg-type]
    rng = random.Random(11)
    for keep in ("none", "random", "all"):
        mem = MemoryVFS()
        db = streamdb.open(dbworkload.DB, config, vfs=mem)
        states: list[dict[str, bytes]] = [{}]
        for i in range(40):
            kind: dbworkload.Kind = "text" if i % 3 == 0 else "random"
            data = dbworkload.document(rng, rng.choice((10, 3000, 90_000)), kind)
            path = f"/k/{i % 7}"
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
