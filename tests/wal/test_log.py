"""Unit tests of the write-ahead log's public behaviour, on the in-memory and real file layers."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

import wal
from wal import format as fmt
from wal.faults import FaultyVFS
from wal.memvfs import MemoryFile, MemoryVFS

LOG = "/db/log"


def mem_open(vfs: MemoryVFS | FaultyVFS, **kw: object) -> wal.WriteAheadLog:
    kw.setdefault("segment_size", 4096)
    return wal.open(LOG, vfs=vfs, **kw)  # type: ignore[arg-type]


def payloads(log: wal.WriteAheadLog, from_lsn: int = 0) -> list[bytes]:
    return [r.payload for r in log.replay(from_lsn)]


def test_append_commit_replay_roundtrip() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        assert log.recovery.records == 0
        lsns = [log.append(b"a"), log.append(b""), log.append(bytearray(b"ccc"))]
        assert lsns == [1, 2, 3]
        assert log.commit() == 3
        assert [tuple(r) for r in log.replay()] == [(1, b"a"), (2, b""), (3, b"ccc")]
        assert payloads(log, from_lsn=2) == [b"", b"ccc"]
    with mem_open(vfs) as log:
        assert log.recovery.records == 3 and log.recovery.clean and not log.recovery.torn
        assert payloads(log) == [b"a", b"", b"ccc"]


def test_uncommitted_records_are_not_replayed_or_recovered() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        log.append(b"kept")
        log.commit()
        log.append(b"pending")
        assert payloads(log) == [b"kept"]
    with mem_open(vfs) as log:
        assert payloads(log) == [b"kept"]


def test_lsns_only_grow_across_reopens_and_checkpoints() -> None:
    vfs = MemoryVFS()
    seen: list[int] = []
    for round_ in range(5):
        with mem_open(vfs) as log:
            seen.extend(log.append(b"%d-%d" % (round_, i)) for i in range(30))
            log.commit()
            if round_ % 2:
                log.checkpoint(log.committed_lsn)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    crashed = vfs.crash(keep="none")
    with mem_open(crashed) as log:
        assert log.append(b"after") > seen[-1]


def test_mutating_a_bytearray_after_append_does_not_change_the_record() -> None:
    vfs = MemoryVFS()
    buf = bytearray(b"original")
    with mem_open(vfs) as log:
        log.append(buf)
        buf[:] = b"mutated!"
        log.commit()
        assert payloads(log) == [b"original"]


def test_records_roll_over_segments_and_replay_in_order() -> None:
    vfs = MemoryVFS()
    data = [os.urandom(i % 700) for i in range(300)]
    with mem_open(vfs) as log:
        for i, item in enumerate(data):
            log.append(item)
            if i % 9 == 0:
                log.commit()
        log.commit()
        assert payloads(log) == data
    assert len([n for n in vfs.listdir("/db") if n.startswith("log")]) > 3
    with mem_open(vfs) as log:
        assert payloads(log) == data
        assert payloads(log, from_lsn=250) == data[249:]


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own() -> None:
    vfs = MemoryVFS()
    big = os.urandom(20_000)
    with mem_open(vfs) as log:
        log.append(b"small")
        log.append(big)
        log.append(b"after")
        log.commit()
    with mem_open(vfs) as log:
        assert payloads(log) == [b"small", big, b"after"]


def test_large_batches_spill_before_commit_and_stay_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    import wal.log as wlog

    monkeypatch.setattr(wlog, "SPILL_BYTES", 1000)
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        log.append(b"committed")
        log.commit()
        for _ in range(40):
            log.append(os.urandom(300))  # spills to the file, across segments
        assert vfs.read_file(LOG).count(b"\x00" * 512) < 8  # something was written
    # close() dropped the batch; a crash would too.
    for disk in (vfs, vfs.crash(keep="all")):
        with mem_open(disk) as log:
            assert payloads(log) == [b"committed"]


def test_rollback_drops_the_batch_including_spilled_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wal.log as wlog

    monkeypatch.setattr(wlog, "SPILL_BYTES", 500)
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        log.append(b"one")
        log.commit()
        for _ in range(30):
            log.append(os.urandom(200))
        log.rollback()
        after = log.append(b"two")
        log.commit()
        assert after > 31  # rolled-back LSNs are not reused
        assert payloads(log) == [b"one", b"two"]
    crashed = vfs.crash(keep="all")
    with mem_open(crashed) as log:
        assert payloads(log) == [b"one", b"two"]


def test_checkpoint_recycles_segments_and_bounds_the_files() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        for round_ in range(20):
            for _ in range(50):
                log.append(os.urandom(100))
            log.commit()
            log.checkpoint(log.committed_lsn)
            assert payloads(log) == []
            files = [n for n in vfs.listdir("/db") if n.startswith("log")]
            assert len(files) <= 4, (round_, files)
        log.append(b"last")
        log.commit()
    with mem_open(vfs) as log:
        assert payloads(log) == [b"last"]


def test_partial_checkpoint_keeps_what_is_not_applied() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        for i in range(200):
            log.append(b"%05d" % i + bytes(100))
            log.commit()
        log.checkpoint(120)
        got = [r.lsn for r in log.replay()]
        assert got[-1] == 200 and got[0] <= 121  # whole segments only
        assert got == list(range(got[0], 201))
    with mem_open(vfs) as log:
        assert [r.lsn for r in log.replay()][-1] == 200
        assert [r.lsn for r in log.replay(121)] == list(range(121, 201))


def test_checkpoint_beyond_the_committed_lsn_is_refused() -> None:
    with mem_open(MemoryVFS()) as log:
        log.append(b"x")
        with pytest.raises(wal.WalInvalidArgumentError):
            log.checkpoint(1)  # appended, not committed
        log.commit()
        log.checkpoint(1)


def test_checkpoint_is_refused_while_a_replay_is_open() -> None:
    with mem_open(MemoryVFS()) as log:
        log.append(b"x")
        log.commit()
        it = log.replay()
        next(it)
        with pytest.raises(wal.WalError, match="replay"):
            log.checkpoint(1)
        it.close()
        log.checkpoint(1)


def test_max_record_size_is_enforced_on_append_and_recovery() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs, max_record_size=100) as log:
        with pytest.raises(wal.WalInvalidArgumentError):
            log.append(bytes(101))
        log.append(bytes(100))
        log.commit()
    with mem_open(vfs, max_record_size=1000) as log:
        log.append(bytes(500))
        log.commit()
    before = vfs.read_file(LOG)
    with pytest.raises(wal.WalInvalidArgumentError, match="max_record_size"):
        mem_open(vfs, max_record_size=100)
    assert vfs.read_file(LOG) == before
    with mem_open(vfs, max_record_size=1000) as log:
        assert len(payloads(log)) == 2


def test_a_foreign_file_is_refused_and_left_untouched() -> None:
    vfs = MemoryVFS()
    vfs.write_file(LOG, b"SQLite format 3\x00" + bytes(200))
    with pytest.raises(wal.WalFormatError):
        mem_open(vfs)
    assert vfs.read_file(LOG) == b"SQLite format 3\x00" + bytes(200)
    assert vfs.listdir("/db") == ["log"]


def test_a_newer_format_version_is_refused_and_left_untouched() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        log.append(b"x")
        log.commit()
    raw = bytearray(vfs.read_file(LOG))
    raw[8:10] = (fmt.VERSION + 1).to_bytes(2, "little")
    vfs.write_file(LOG, bytes(raw))
    with pytest.raises(wal.WalFormatError, match="newer"):
        mem_open(vfs)
    assert vfs.read_file(LOG) == bytes(raw)


def test_an_empty_existing_file_becomes_a_new_log() -> None:
    vfs = MemoryVFS()
    vfs.write_file(LOG, b"")
    with mem_open(vfs) as log:
        log.append(b"x")
        log.commit()
    with mem_open(vfs) as log:
        assert payloads(log) == [b"x"]


def test_a_second_writer_is_locked_out() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs), pytest.raises(wal.WalLockedError):
        mem_open(vfs)
    mem_open(vfs).close()


def test_closed_log_refuses_work() -> None:
    log = mem_open(MemoryVFS())
    log.close()
    log.close()  # idempotent
    for call in (lambda: log.append(b"x"), log.commit, lambda: log.replay(), log.sync):
        with pytest.raises(wal.WalClosedError):
            call()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_failed_fsync_poisons_the_log_until_reopened(code: int) -> None:
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"sync"}))
    log = mem_open(faulty)
    log.append(b"durable")
    log.commit()
    faulty.fail_at = faulty.calls + 1
    faulty.errno = code
    log.append(b"maybe")
    expected = wal.WalFullError if code == errno.ENOSPC else wal.WalIOError
    with pytest.raises(expected) as info:
        log.commit()
    assert info.value.errno == code
    faulty.fail_at = None
    # Retrying would report success for pages the kernel may have dropped: refused.
    for call in (lambda: log.append(b"x"), log.commit, log.sync, lambda: log.checkpoint(1)):
        with pytest.raises(wal.WalFailedError):
            call()
    log.close()
    with mem_open(mem.crash(keep="none")) as log:
        assert payloads(log) == [b"durable"]


def test_sync_modes_fsync_as_documented() -> None:
    for mode, expect_syncs in (("full", True), ("off", False)):
        mem = MemoryVFS()
        with mem_open(mem, sync=mode) as log:
            before = mem.syncs
            for _ in range(10):
                log.append(b"x")
                log.commit()
            assert (mem.syncs - before >= 10) == expect_syncs
            assert (log.durable_lsn == log.committed_lsn) == expect_syncs
            assert log.sync() == log.committed_lsn
    mem = MemoryVFS()
    with mem_open(mem, sync="batch", sync_interval=3600) as log:
        log.append(b"x")
        log.commit()
        assert log.durable_lsn < log.committed_lsn
    with mem_open(mem.crash(keep="none")) as log:  # close() synced
        assert payloads(log) == [b"x"]


class SlowSyncVFS(MemoryVFS):
    """A disk whose fsync takes 3 ms: long enough that committing threads always overlap."""

    def open(self, path: str, *, create: bool = False) -> MemoryFile:
        file = super().open(path, create=create)
        sync = file.sync

        def slow_sync() -> None:
            time.sleep(0.003)
            sync()

        file.sync = slow_sync  # type: ignore[method-assign]
        return file


def test_group_commit_shares_fsyncs_between_threads() -> None:
    mem = SlowSyncVFS()
    log = mem_open(mem, segment_size=1 << 20)
    start_syncs = mem.syncs
    barrier = threading.Barrier(8)
    acked: list[list[int]] = [[] for _ in range(8)]

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(20):
            log.append(b"%d:%d" % (n, i))
            acked[n].append(log.commit())
            assert log.durable_lsn >= acked[n][-1]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = payloads(log)
    assert sorted(records) == sorted(b"%d:%d" % (n, i) for n in range(8) for i in range(20))
    for n in range(8):  # each thread's records replay in its own order
        mine = [r for r in records if r.startswith(b"%d:" % n)]
        assert mine == [b"%d:%d" % (n, i) for i in range(20)]
    # 160 commits; one fsync each would be 160. Sharing brings it near 160 / 8.
    assert mem.syncs - start_syncs <= 60
    log.close()


def test_real_files_roundtrip_and_layout(tmp_path: Path) -> None:
    path = tmp_path / "app-wal"
    with wal.open(path, segment_size=8192) as log:
        for i in range(100):
            log.append(b"r%d" % i * 20)
            log.commit()
    names = sorted(os.listdir(tmp_path))
    assert names[0] == "app-wal" and all(n.startswith("app-wal.") for n in names[1:])
    with wal.open(path, segment_size=8192) as log:
        assert len(list(log.replay())) == 100
        with pytest.raises(wal.WalLockedError):
            wal.open(path)


def test_invalid_arguments() -> None:
    vfs = MemoryVFS()
    with pytest.raises(wal.WalInvalidArgumentError):
        wal.open(LOG, vfs=vfs, sync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(wal.WalInvalidArgumentError):
        wal.open(LOG, vfs=vfs, segment_size=10)
    with pytest.raises(ValueError):  # the tree's argument error is also a ValueError
        wal.open(LOG, vfs=vfs, max_record_size=-1)


# Regressions found by the stateful test (test_stateful.py): rolled-back and dropped LSNs
# leave gaps, which recovery once took for a missing segment tail.


def test_regression_rolled_back_lsn_gap_before_a_segment_roll() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs, segment_size=3000) as log:
        log.append(b"")
        log.commit()
        log.append(b"")
        log.rollback()  # LSN 2 is skipped
        log.append(b"x" * 4000)  # does not fit: rolls to a new segment
        log.commit()
        assert [r.lsn for r in log.replay()] == [1, 3]
    with mem_open(vfs.crash(keep="none"), segment_size=3000) as log:
        assert [r.lsn for r in log.replay()] == [1, 3]


def test_a_record_larger_than_the_segment_survives_power_loss() -> None:
    vfs = MemoryVFS()
    log = mem_open(vfs, segment_size=3000)
    log.append(b"x" * 4000)
    log.commit()
    with mem_open(vfs.crash(keep="none"), segment_size=3000) as again:
        assert [r.payload for r in again.replay()] == [b"x" * 4000]
    log.close()


def test_regression_close_marker_after_a_dropped_append_is_a_clean_end() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs, segment_size=3000) as log:
        log.append(b"x" * 4000)
        log.commit()
        log.append(b"")  # dropped by close(); the marker rolls into a new segment
    with mem_open(vfs, segment_size=3000) as log:
        assert log.recovery.clean
        assert [r.payload for r in log.replay()] == [b"x" * 4000]


def test_regression_a_recycled_header_is_durable_before_a_later_segment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the stateful stress run: a recycled segment's header was left unsynced while
    a newer, freshly created segment's header was synced; a power loss then left a gap in
    the sequence numbers, which recovery rightly calls damage."""
    import wal.log as wlog

    monkeypatch.setattr(wlog, "SPILL_BYTES", 2500)
    disk = MemoryVFS()
    log = mem_open(disk, segment_size=3000)
    for _ in range(13):
        log.append(b"")
    log.append(b"x" * 4000)  # spills, rolling into a new file log.1
    log.append(b"")
    disk = disk.crash(keep="none")  # recovery frees log.1
    log.close()
    log = mem_open(disk, segment_size=3000)
    for payload in (b"", b"x" * 4000, b"", b"x" * 4000):  # recycles log.1, creates log.2
        log.append(payload)
    disk = disk.crash(keep="none")
    log.close()
    with mem_open(disk, segment_size=3000) as again:
        assert list(again.replay()) == []


def test_any_buffer_is_stored_as_its_bytes() -> None:
    import array

    data = bytes(range(256)) * 4
    buffers: list[object] = [
        memoryview(data).cast("I"),  # read-only view over bytes, 4-byte items
        memoryview(data)[::2],  # not contiguous
        array.array("H", range(100)),
        bytearray(b"abc"),
        memoryview(bytearray(b"xyz")).toreadonly(),
    ]
    with mem_open(MemoryVFS(), segment_size=1 << 16) as log:
        for buf in buffers:
            log.append(buf)  # type: ignore[arg-type]
        log.commit()
        got = [r.payload for r in log.replay()]
    assert got == [memoryview(b).tobytes() for b in buffers]  # type: ignore[arg-type]


def test_os_file_pwritev_resumes_after_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wal import vfs as wvfs

    real = os.pwritev

    def short(fd: int, buffers: list[bytes], offset: int) -> int:
        first = bytes(memoryview(buffers[0]))[:3]  # at most 3 bytes per call
        return real(fd, [first], offset)

    monkeypatch.setattr(os, "pwritev", short)
    monkeypatch.setattr(wvfs, "_IOV_MAX", 2)
    f = wvfs.OsVFS().open(str(tmp_path / "f"), create=True)
    f.pwritev([b"hello", b"", memoryview(b" wide "), bytearray(b"world")], 10)
    assert f.pread(100, 0) == bytes(10) + b"hello wide world"
    f.close()


def test_skip_to_makes_later_lsns_larger_and_they_persist() -> None:
    vfs = MemoryVFS()
    with mem_open(vfs) as log:
        log.skip_to(1000)
        assert log.append(b"x") == 1001
        log.commit()
    with mem_open(vfs.crash(keep="none")) as log:
        assert [r.lsn for r in log.replay()] == [1001]
        assert log.next_lsn > 1001


def test_io_errors_say_what_the_log_was_doing() -> None:
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"sync"}))
    log = mem_open(faulty)
    faulty.fail_at = faulty.calls + 1
    log.append(b"x")
    with pytest.raises(wal.WalIOError) as info:
        log.commit()
    assert info.value.during == "syncing"
    log.close()
