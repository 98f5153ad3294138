"""Recovery decisions: torn tail versus corruption, stale bytes, damaged headers."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

import wal
from wal import format as fmt
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS

LOG = "/db/log"
HDR = fmt.SEGMENT_HEADER_SIZE
REC = fmt.RECORD_HEADER_SIZE


def opened(vfs: MemoryVFS, **kw: object) -> wal.WriteAheadLog:
    kw.setdefault("segment_size", 1 << 16)
    return wal.open(LOG, vfs=vfs, **kw)  # type: ignore[arg-type]


def files(vfs: MemoryVFS) -> dict[str, bytes]:
    return {n: vfs.read_file(f"/db/{n}") for n in sorted(vfs.listdir("/db"))}


def damage(
    vfs: MemoryVFS, path: str, offset: int, value: int | None = None, length: int = 1
) -> None:
    raw = bytearray(vfs.read_file(path))
    for i in range(offset, offset + length):
        raw[i] = raw[i] ^ 0x40 if value is None else value
    vfs.write_file(path, bytes(raw))


def crashed_mid_commit(payloads: list[bytes], committed: list[bytes]) -> MemoryVFS:
    """A log where `committed` were committed and synced, and `payloads` were written as one
    batch whose fsync never happened (the process died at the sync)."""
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"sync"}))
    log = opened(faulty)  # type: ignore[arg-type]
    for p in committed:
        log.append(p)
    log.commit()
    faulty.fail_at = faulty.calls + 1
    for p in payloads:
        log.append(p)
    with pytest.raises(wal.WalIOError):
        log.commit()
    log.close()
    return mem.crash(keep="all")


@pytest.mark.parametrize("same_payload", [False, True])
def test_dropped_records_never_come_back_after_new_writes(same_payload: bool) -> None:
    """A torn batch whose first record is lost but whose later records landed: after the
    writer resumes at the same offset, those stale records must not chain onto new ones."""
    b1, b2, b3 = b"1" * 100, b"2" * 100, b"3" * 100
    disk = crashed_mid_commit([b1, b2, b3], [b"A"])
    first_of_batch = HDR + REC + 1
    damage(disk, LOG, first_of_batch, value=0, length=REC)  # B1's header sector never landed
    with opened(disk) as log:
        assert log.recovery.torn is False and log.recovery.records == 1
        assert [r.payload for r in log.replay()] == [b"A"]
        log.append(b1 if same_payload else b"C" * 100)  # same size: lands exactly over B1
        log.commit()
        again = disk.crash(keep="none")  # before close() writes its marker over B2
    with opened(again) as log:
        got = [r.payload for r in log.replay()]
    assert got == [b"A", b1 if same_payload else b"C" * 100]


def test_an_identical_unfinished_rewrite_does_not_revive_the_old_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The new session writes the same first record as the lost batch (spilled, no END) and
    dies: the old batch's later records follow byte-identical bytes, and only the session id
    in each record keeps them from chaining on and committing a batch nobody committed."""
    import wal.log as wlog

    monkeypatch.setattr(wlog, "SPILL_BYTES", 150)
    b1, b2, b3 = b"1" * 100, b"2" * 100, b"3" * 100
    disk = crashed_mid_commit([b1, b2, b3], [b"A"])
    damage(disk, LOG, HDR + REC + 1 + REC + 10, value=0, length=4)  # B1's payload torn
    with opened(disk) as log:
        assert [r.payload for r in log.replay()] == [b"A"]
        log.append(b1)
        log.append(b"Z" * 100)  # spills b1 over the old B1, identical to it
        again = disk.crash(keep="all")
    with opened(again) as log:
        assert [r.payload for r in log.replay()] == [b"A"]


def test_unfinished_batch_is_reported_not_raised() -> None:
    disk = crashed_mid_commit([b"x" * 50, b"y" * 50], [b"A", b"B"])
    # Tear the END record: the first record of the batch is whole, the second is not.
    size = len(disk.read_file(LOG))
    raw = disk.read_file(LOG)
    end_of_batch = raw.rfind(b"y" * 50) + 50
    damage(disk, LOG, end_of_batch - 10, length=5)
    with opened(disk) as log:
        assert log.recovery.torn and log.recovery.discarded_records == 1
        assert [r.payload for r in log.replay()] == [b"A", b"B"]
    assert size == len(disk.read_file(LOG))


def test_damage_before_later_synced_batches_is_corruption_and_changes_nothing() -> None:
    mem = MemoryVFS()
    with opened(mem) as log:
        for i in range(10):
            log.append(b"record %d" % i)
            log.commit()
    damage(mem, LOG, HDR + 3 * (REC + 8) + REC + 2)  # a payload byte of the 4th record
    before = files(mem)
    with pytest.raises(wal.WalCorruptionError) as info:
        opened(mem)
    assert info.value.segment == LOG and info.value.offset == HDR + 3 * (REC + 8)
    assert files(mem) == before


def test_damage_to_the_last_synced_record_before_a_clean_close_is_corruption() -> None:
    mem = MemoryVFS()
    with opened(mem) as log:
        log.append(b"only")
        log.commit()
    damage(mem, LOG, HDR + 16)  # the LSN field of the record; the CLOSE marker follows
    with pytest.raises(wal.WalCorruptionError):
        opened(mem)


def test_without_fsyncs_damage_cannot_be_told_from_a_torn_tail() -> None:
    mem = MemoryVFS()
    with opened(mem, sync="off") as log:
        for i in range(5):
            log.append(b"r%d" % i)
            log.commit()
    damage(mem, LOG, HDR + 2 * (REC + 2) + REC)
    with opened(mem, sync="off") as log:  # documented: sync="off" gives up this check
        assert [r.payload for r in log.replay()] == [b"r0", b"r1"]


def test_a_missing_middle_segment_is_corruption() -> None:
    mem = MemoryVFS()
    with opened(mem, segment_size=1024) as log:
        for i in range(40):
            log.append(bytes([i]) * 100)
            log.commit()
    segments = sorted(n for n in mem.listdir("/db"))
    assert len(segments) >= 4
    damage(mem, f"/db/{segments[1]}", 30)  # inside the header: its CRC fails
    before = files(mem)
    with pytest.raises(wal.WalCorruptionError):
        opened(mem, segment_size=1024)
    assert files(mem) == before


def test_a_damaged_header_of_the_newest_segment_is_corruption() -> None:
    mem = MemoryVFS()
    with opened(mem, segment_size=1024) as log:
        for i in range(20):
            log.append(bytes([i]) * 100)
            log.commit()
    headers = {n: fmt.parse_segment_header(mem.read_file(f"/db/{n}")) for n in mem.listdir("/db")}
    name = max((h.seq, n) for n, h in headers.items() if h is not None and not h.free)[1]
    damage(mem, f"/db/{name}", 40)  # a reserved byte: CRC fails, salt intact
    with pytest.raises(wal.WalCorruptionError, match="header"):
        opened(mem, segment_size=1024)


def test_stale_records_of_a_recycled_segment_never_validate() -> None:
    mem = MemoryVFS()
    with opened(mem, segment_size=2048) as log:
        for round_ in range(6):
            for i in range(30):
                log.append(b"%d:%d" % (round_, i) * 5)
                log.commit()
            log.checkpoint(log.committed_lsn)
        log.append(b"fresh")
        log.commit()
    # Every segment file has been reused and still holds old records past its new data.
    stale = [b"%d:1" % r for r in range(5)]
    assert any(s in mem.read_file(f"/db/{n}") for n in mem.listdir("/db") for s in stale)
    with opened(mem, segment_size=2048) as log:
        assert [r.payload for r in log.replay()] == [b"fresh"]


def test_zero_filled_preallocated_space_is_a_clean_end() -> None:
    mem = MemoryVFS()
    log = opened(mem)
    log.append(b"x")
    log.commit()
    log.close()
    with opened(mem.crash(keep="none")) as again:
        assert again.recovery.clean and not again.recovery.torn
        assert [r.payload for r in again.replay()] == [b"x"]


def test_blank_or_partly_created_files_open_as_new_logs() -> None:
    for prefix in (b"", fmt.MAGIC[:3], fmt.MAGIC, bytes(20)):
        mem = MemoryVFS()
        mem.write_file(LOG, prefix)
        mem.write_file(LOG + ".1", prefix)
        with opened(mem) as log:
            assert log.recovery.records == 0
            log.append(b"x")
            log.commit()
        with opened(mem) as log:
            assert [r.payload for r in log.replay()] == [b"x"]


def test_a_foreign_sibling_file_is_refused_untouched() -> None:
    mem = MemoryVFS()
    with opened(mem) as log:
        log.append(b"x")
        log.commit()
    mem.write_file(LOG + ".7", b"not ours, but named like a segment" * 4)
    before = files(mem)
    with pytest.raises(wal.WalFormatError):
        opened(mem)
    assert files(mem) == before


def test_replay_detects_bytes_changed_after_open() -> None:
    mem = MemoryVFS()
    with opened(mem) as log:
        for i in range(5):
            log.append(b"r%d" % i)
        log.commit()
        damage(mem, LOG, HDR + REC)  # first payload byte, while open
        with pytest.raises(wal.WalCorruptionError):
            list(log.replay())


def test_a_checksummed_header_with_absurd_counters_is_refused() -> None:
    """Found by the fuzz corpus test: a crafted header with a valid CRC and a sequence number
    near 2**64 made the next segment roll overflow the u64 field."""
    mem = MemoryVFS()
    header = fmt.SegmentHeader(0, 0x1122334455667788, (1 << 64) - 1, 1, 0)
    mem.write_file(LOG, header.pack() + bytes(200))
    with pytest.raises(wal.WalCorruptionError, match="implausible"):
        opened(mem)


@pytest.mark.parametrize("bit", [16 * 8 + 3, 16 * 8 + 45, 24 * 8, 60 * 8 + 7])
def test_one_flipped_bit_in_a_live_header_is_corruption_not_silent_loss(bit: int) -> None:
    """Found by the fuzzer: a flipped salt bit made a segment of synced records read as free.
    The single-bit error is corrected to recover the salt, and the records prove the header
    had been durable."""
    mem = MemoryVFS()
    with opened(mem) as log:
        for i in range(5):
            log.append(b"r%d" % i)
            log.commit()
    raw = bytearray(mem.read_file(LOG))
    raw[bit >> 3] ^= 1 << (bit & 7)
    mem.write_file(LOG, bytes(raw))
    with pytest.raises(wal.WalCorruptionError, match="header damaged"):
        opened(mem)


def _damaged_with_tail(tail: Callable[[bytes, int], bytes]) -> MemoryVFS:
    """A crashed log (no CLOSE) of 5 synced records, the last one's payload damaged, and the
    rest of the segment replaced by `tail(tag, room)`: recovery must search that rest for a
    proof that the damaged record had been synced (R5)."""
    mem = MemoryVFS()
    log = opened(mem)
    for i in range(5):
        log.append(b"record %d" % i)
        log.commit()
    mem = mem.crash(keep="all")
    damage(mem, LOG, HDR + 4 * (REC + 8) + REC + 2)
    raw = mem.read_file(LOG)
    end = HDR + 5 * (REC + 8)
    mem.write_file(LOG, raw[:end] + tail(raw[16:20], len(raw) - end))
    return mem


@pytest.mark.parametrize("shape", ["a tag every 4 bytes", "headers claiming long payloads"])
def test_a_segment_crafted_to_make_the_search_quadratic_is_refused(shape: str) -> None:
    """The torn-or-corrupt search (and the salvage survey) is linear: a segment full of
    candidates that fail (a tag every 4 bytes, or plausible headers every 40 bytes each
    claiming most of the file, whose CRCs would hash it all again) is corruption, found
    without the work, and nothing is changed."""

    def tail(tag: bytes, room: int) -> bytes:
        if shape == "a tag every 4 bytes":
            return (tag * (room // 4 + 1))[:room]
        head = struct.pack("<IBBHIIQQII", int.from_bytes(tag, "little"), fmt.KIND_DATA, 0, 0,
                           room - REC, 0, 99, 1, 0, 0)
        return (head * (room // REC + 1))[:room]

    mem = _damaged_with_tail(tail)
    before = files(mem)
    with pytest.raises(wal.WalCorruptionError, match="more damaged record headers"):
        opened(mem)
    assert files(mem) == before
    log = opened(mem, finish=False, salvage=True)
    with pytest.raises(wal.WalCorruptionError, match="more damaged record headers"):
        log.survey(0)
    log.close()
    assert files(mem) == before

