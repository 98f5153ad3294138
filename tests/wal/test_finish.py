"""Two-step recovery (R7) and salvage (R8, S1-S3): deciding writes nothing, finishing is
crash-safe, a salvaged log starts over above every LSN it held."""

from __future__ import annotations

import errno
import os
import random

import pytest

import wal
from wal import format as fmt
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS

LOG = "/db/log"
SEGMENT = 1024


def files(vfs: MemoryVFS) -> dict[str, bytes]:
    return {n: vfs.read_file(f"/db/{n}") for n in sorted(vfs.listdir("/db"))}


def opened(vfs: wal.VFS, **kw: object) -> wal.WriteAheadLog:
    kw.setdefault("segment_size", SEGMENT)
    return wal.open(LOG, vfs=vfs, **kw)  # type: ignore[arg-type]


def payloads(log: wal.WriteAheadLog, from_lsn: int = 0) -> list[bytes]:
    return [r.payload for r in log.replay(from_lsn)]


def needs_finishing(monkeypatch: pytest.MonkeyPatch) -> tuple[MemoryVFS, list[bytes]]:
    """A killed writer's log: committed batches over several segments, then an unfinished
    batch that spilled across more segments. Finishing frees those segments and erases the
    first record of the batch. Returns the disk and the committed payloads."""
    import wal.log as wlog

    monkeypatch.setattr(wlog, "SPILL_BYTES", 300)
    mem = MemoryVFS()
    log = opened(mem)
    committed = []
    for i in range(6):
        batch = [bytes([i, j]) * 60 for j in range(3)]
        for p in batch:
            log.append(p)
        log.commit()
        committed += batch
    for _ in range(12):
        log.append(os.urandom(200))  # spills: never committed
    disk = mem.crash(keep="all")
    log.forget()
    return disk, committed


def test_deciding_writes_nothing_and_finishing_does_what_open_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    disk, committed = needs_finishing(monkeypatch)
    before = files(disk)
    log = opened(disk, finish=False)
    assert not log.finished and repr(log).count("unfinished") == 1
    assert log.recovery.discarded_records > 0 and log.recovery.torn
    assert payloads(log) == committed  # the decided state replays
    log.skip_to(500)  # allowed: writes nothing
    log.checkpoint(log.committed_lsn)  # allowed: does nothing before finish()
    for write in (lambda: log.append(b"x"), log.commit, log.rollback, log.sync):
        with pytest.raises(wal.WalUnfinishedError):
            write()
    log.close()
    assert files(disk) == before  # not a byte changed, nothing created or removed

    log = opened(disk, finish=False)
    log.skip_to(500)
    log.finish()
    log.finish()  # idempotent
    assert files(disk) != before  # freed the spilled segments, erased the batch's head
    assert log.append(b"new") > 500
    log.commit()
    log.close()
    with opened(disk.crash(keep="none")) as again:
        assert payloads(again) == [*committed, b"new"]


def test_an_unfinished_open_of_a_missing_log_creates_nothing() -> None:
    mem = MemoryVFS()
    log = opened(mem, finish=False)
    assert list(log.replay()) == [] and log.committed_lsn == 0
    log.close()
    assert not mem.exists(LOG)
    log = opened(mem, finish=False)
    log.skip_to(41)
    log.finish()
    assert mem.exists(LOG)
    assert log.append(b"a") == 42
    log.commit()
    log.close()
    with opened(mem) as again:
        assert [(r.lsn, r.payload) for r in again.replay()] == [(42, b"a")]


def test_finish_refuses_a_log_another_writer_created_meanwhile() -> None:
    mem = MemoryVFS()
    log = opened(mem, finish=False)
    with opened(mem), pytest.raises(wal.WalLockedError):  # created it and holds the lock
        log.finish()
    log.close()


def _finish_calls(disk: MemoryVFS, only: frozenset[str] | None) -> int:
    probe = FaultyVFS(disk.crash(keep="all"), only=only)
    log = opened(probe, finish=False)
    start = probe.calls
    log.finish()
    calls = probe.calls - start
    log.close()
    return calls


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_fail_each_file_call_of_finishing(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Fail each call that finish() makes, then lose power (or not): the next open
    recovers the same committed records, and takes new ones."""
    disk, committed = needs_finishing(monkeypatch)
    total = _finish_calls(disk, None)
    assert total > 10
    for n in range(1, total + 1):
        mem = disk.crash(keep="all")
        faulty = FaultyVFS(mem)
        log = opened(faulty, finish=False)
        faulty.fail_at = faulty.calls + n
        with pytest.raises(wal.WalIOError):
            log.finish()
        with pytest.raises(wal.WalFailedError):
            log.append(b"refused")  # W4: a failed finish poisons the log
        log.close()
        for keep in ("none", "all"):
            with opened(mem.crash(keep=keep)) as again:
                assert payloads(again) == committed, (n, keep)
                again.append(b"after")
                again.commit()
                assert payloads(again)[-1] == b"after"


def test_power_loss_at_each_sync_of_finishing(monkeypatch: pytest.MonkeyPatch) -> None:
    disk, committed = needs_finishing(monkeypatch)
    syncs = _finish_calls(disk, frozenset({"sync", "sync_dir"}))
    assert syncs >= 3
    rng = random.Random(5)
    for n in range(1, syncs + 1):
        mem = disk.crash(keep="all")
        faulty = FaultyVFS(mem, only=frozenset({"sync", "sync_dir"}))
        log = opened(faulty, finish=False)
        faulty.fail_at = faulty.calls + n
        with pytest.raises(wal.WalIOError):
            log.finish()
        log.close()
        for keep in ("none", "random", "all"):
            crashed = mem.crash(keep=keep, rng=rng)
            with opened(crashed) as again:
                assert payloads(again) == committed, (n, keep)


# -- salvage ------------------------------------------------------------------------------


def written(count: int, segment: int = SEGMENT) -> tuple[MemoryVFS, list[tuple[int, bytes]]]:
    """`count` one-record batches, each synced, over several segments; closed."""
    mem = MemoryVFS()
    records = []
    with opened(mem, segment_size=segment) as log:
        for i in range(count):
            payload = bytes([i]) * 100
            records.append((log.append(payload), payload))
            log.commit()
    return mem, records


def flip(mem: MemoryVFS, path: str, offset: int) -> None:
    raw = bytearray(mem.read_file(path))
    raw[offset] ^= 0x40
    mem.write_file(path, bytes(raw))


def segment_paths(mem: MemoryVFS) -> list[str]:
    """The current segments' paths in sequence order."""
    found = []
    for name in mem.listdir("/db"):
        header = fmt.parse_segment_header(mem.read_file(f"/db/{name}")[:64])
        if header is not None and not header.free:
            found.append((header.seq, f"/db/{name}"))
    return [p for _, p in sorted(found)]


def salvage_and_check(mem: MemoryVFS, kept: list[tuple[int, bytes]],
                      dropped: list[tuple[int, bytes]]) -> None:
    """Refused without salvage; with it: the prefix replays, the survey counts what is
    dropped, and starting over leaves a log that opens empty with LSNs above them all."""
    before = files(mem)
    with pytest.raises(wal.WalCorruptionError):
        opened(mem)
    log = opened(mem, finish=False, salvage=True)
    assert log.damage is not None
    assert [(r.lsn, r.payload) for r in log.replay()] == kept
    found = log.survey(kept[-1][0] if kept else 0)
    assert found.records >= len(dropped) - 1  # a damaged record cannot be counted
    if dropped:
        assert found.last_lsn == dropped[-1][0]
        assert found.bytes == sum(fmt.RECORD_HEADER_SIZE + len(p) for lsn, p in dropped
                                  if lsn >= found.first_lsn)
    highest = found.highest_lsn
    with pytest.raises(wal.WalCorruptionError):
        log.finish()
    assert files(mem) == before
    log.finish(start_over=True)
    lsn = log.append(b"fresh")
    assert lsn > highest >= (dropped or kept)[-1][0]
    log.commit()
    log.close()
    with opened(mem.crash(keep="none")) as again:
        assert [(r.lsn, r.payload) for r in again.replay()] == [(lsn, b"fresh")]


def test_salvage_a_flipped_record_in_a_middle_batch() -> None:
    mem, records = written(40)
    first = segment_paths(mem)[0]
    raw = mem.read_file(first)
    # The fourth record of the first segment: one byte of its payload.
    offset = fmt.SEGMENT_HEADER_SIZE + 3 * (fmt.RECORD_HEADER_SIZE + 100) + 50
    assert raw[offset] == 3
    flip(mem, first, offset)
    salvage_and_check(mem, records[:3], records[3:])


def test_salvage_a_missing_middle_segment() -> None:
    mem, records = written(40)
    paths = segment_paths(mem)
    assert len(paths) >= 4
    gone = paths[1]
    in_first = len(list(_lsns(mem, paths[0])))
    in_gone = len(list(_lsns(mem, gone)))
    mem.remove(gone)
    kept = records[:in_first]
    salvage_and_check(mem, kept, records[in_first + in_gone :])


def test_salvage_a_damaged_segment_header() -> None:
    mem, records = written(40)
    paths = segment_paths(mem)
    in_first = len(list(_lsns(mem, paths[0])))
    flip(mem, paths[1], 40)  # previous LSN: the CRC fails, the salt is intact
    before = files(mem)
    salvage_and_check(mem, records[:in_first], records[in_first:])
    assert set(files(mem)) == set(before)


def test_salvage_of_a_sound_log_finds_nothing() -> None:
    mem, records = written(10)
    log = opened(mem, finish=False, salvage=True)
    assert log.damage is None
    assert [(r.lsn, r.payload) for r in log.replay()] == records
    log.finish()
    log.close()
    with pytest.raises(wal.WalInvalidArgumentError):
        opened(mem, salvage=True)


def _lsns(mem: MemoryVFS, path: str) -> list[int]:
    raw = mem.read_file(path)
    header = fmt.parse_segment_header(raw[:64])
    assert header is not None
    offset, found = fmt.SEGMENT_HEADER_SIZE, []
    while offset + fmt.RECORD_HEADER_SIZE <= len(raw):
        head = fmt.parse_record_header(raw[offset : offset + fmt.RECORD_HEADER_SIZE])
        if head.tag != header.tag:
            break
        if head.kind == fmt.KIND_DATA:
            found.append(head.lsn)
        offset += fmt.RECORD_HEADER_SIZE + head.length
    return found
