"""Crash safety on the fault-injecting, power-loss-simulating file layer.

Every scenario checks the same property (workload.check_recovered): after reopening, the log
holds exactly a committed prefix, in whole batches, containing every acknowledged batch.
"""

from __future__ import annotations

import errno
import random

import pytest

import wal
from tests.wal import workload
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS


def count_calls(**kw: object) -> int:
    probe = FaultyVFS(MemoryVFS())
    out = workload.run(probe, **kw)  # type: ignore[arg-type]
    assert out.error is None and out.acked > 0
    return probe.calls


def reopen_and_check(disk: MemoryVFS, out: workload.Outcome) -> None:
    log = workload.check_recovered(disk, out)
    lsn = log.append(b"after")
    log.commit()
    log.close()
    after = disk.crash(keep="none")
    with wal.open(workload.LOG, vfs=after, segment_size=workload.SEGMENT) as again:
        assert [r for r in again.replay(lsn)] == [wal.Record(lsn, b"after")]


def test_power_loss_after_a_clean_run_keeps_everything() -> None:
    mem = MemoryVFS()
    out = workload.run(mem)
    assert out.error is None
    for keep in ("none", "random", "all"):
        reopen_and_check(mem.crash(keep=keep, rng=random.Random(3)), out)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_fail_every_file_call_in_turn(code: int) -> None:
    """Fail call N (N = 1..all) with EIO/ENOSPC, then lose power; also keep all writes."""
    total = count_calls()
    assert total > 50
    for n in range(1, total + 1):
        mem = MemoryVFS()
        out = workload.run(FaultyVFS(mem, fail_at=n, errno=code))
        assert out.error is not None, n
        assert isinstance(out.error, wal.WalError)
        for keep in ("none", "all"):
            reopen_and_check(mem.crash(keep=keep), out)


def test_tear_the_last_write_at_every_byte_offset() -> None:
    """Crash at each fsync: the write before it lands torn at every byte offset."""
    syncs = FaultyVFS(MemoryVFS(), only=frozenset({"sync"}))
    workload.run(syncs)
    crashes = 0
    for n in range(1, syncs.calls + 1):
        mem = MemoryVFS()
        out = workload.run(FaultyVFS(mem, fail_at=n, only=frozenset({"sync"})))
        last = max((op for inode in mem._names.values() for op in inode.pending if op.data),
                   key=lambda op: op.seq, default=None)
        if last is None or last.data is None:
            continue
        for tear in range(len(last.data) + 1):
            reopen_and_check(mem.crash(tear=tear), out)
            crashes += 1
    assert crashes > 1000


def test_keep_a_random_subset_of_unsynced_sectors() -> None:
    syncs = FaultyVFS(MemoryVFS(), only=frozenset({"sync"}))
    workload.run(syncs)
    rng = random.Random(7)
    for n in range(1, syncs.calls + 1):
        mem = MemoryVFS()
        out = workload.run(FaultyVFS(mem, fail_at=n, only=frozenset({"sync"})))
        for _ in range(6):
            reopen_and_check(mem.crash(keep="random", rng=rng), out)


@pytest.mark.parametrize("sync", ["batch", "off"])
def test_killed_process_loses_nothing_committed_in_lazy_sync_modes(sync: wal.SyncMode) -> None:
    """Without fsync a killed process (OS cache survives) still keeps every commit."""
    total = count_calls(sync=sync)
    for n in range(1, total + 1, 2):
        mem = MemoryVFS()
        out = workload.run(FaultyVFS(mem, fail_at=n), sync=sync)
        reopen_and_check(mem.crash(keep="all"), out)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_stress_random_workloads_and_crashes(seed: int) -> None:
    rng = random.Random(seed)
    total = count_calls(seed=seed, rounds=30)
    for _ in range(200):
        mem = MemoryVFS()
        out = workload.run(
            FaultyVFS(
                mem, fail_at=rng.randint(1, total), errno=rng.choice((errno.EIO, errno.ENOSPC))
            ),
            seed=seed,
            rounds=30,
        )
        keep = rng.choice(("none", "random", "all"))
        reopen_and_check(mem.crash(keep=keep, rng=rng), out)  # type: ignore[arg-type]
