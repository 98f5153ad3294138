"""LogTail: a read-only follower of a log that a writer appends to concurrently (wal/tail.py,
rules T1-T8)."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import wal
import wal.log
import wal.vfs
from wal import format as fmt
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS
from wal.scan import Window, scan
from wal.segments import slot_path

ROOT = Path(__file__).resolve().parents[2]
SMALL = 4096 + fmt.SEGMENT_HEADER_SIZE  # a small segment: roll-over every few records
WRITES = frozenset({"pwritev", "truncate", "allocate", "sync", "lock", "remove", "rename",
                    "sync_dir"})


def numbered(i: int) -> bytes:
    """A deterministic payload for record number `i`, 2 B to ~500 B."""
    return (b"%d." % i) * (i * 7919 % 97 + 1)


def commit_batch(log: wal.WriteAheadLog, payloads: list[bytes]) -> list[wal.Record]:
    records = [wal.Record(log.append(p), p) for p in payloads]
    log.commit()
    return records


# -- T6: committed batches only ------------------------------------------------------------


def test_tail_sees_only_committed_batches(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off") as log, wal.LogTail(path, from_lsn=1) as tail:
        assert tail.poll() == [] and tail.position == 0
        log.append(b"a")
        log.append(b"b")
        assert tail.poll() == []  # appended, not committed
        log.commit()
        assert tail.poll() == [(1, b"a"), (2, b"b")]
        assert tail.poll() == [] and tail.position == 2
        log.append(b"dropped")
        log.rollback()
        expected = commit_batch(log, [b"c"])
        assert tail.poll() == expected


@pytest.mark.parametrize("segment_size", [1 << 20, SMALL])
def test_spilled_batches_appear_at_commit_and_rolled_back_ones_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment_size: int
) -> None:
    monkeypatch.setattr(wal.log, "SPILL_BYTES", 1000)
    path = str(tmp_path / "log")
    big = [bytes([i]) * 700 for i in range(12)]  # spills; rolls over at SMALL
    with wal.open(path, sync="off", segment_size=segment_size) as log:
        tail = wal.LogTail(path, from_lsn=1)
        first = commit_batch(log, [b"first"])
        assert tail.poll() == first
        for _ in range(3):  # spilled (written before commit), then rolled back
            for payload in big:
                log.append(payload)
            assert log.committed_lsn == first[-1].lsn
            assert tail.poll() == []
            log.rollback()
            assert tail.poll() == []
        spilled = [wal.Record(log.append(p), p) for p in big]
        assert tail.poll() == []  # written, but no END yet
        log.commit()
        assert tail.poll() == spilled
        after = commit_batch(log, [b"after"])
        assert tail.poll() == after
        assert tail.position == after[-1].lsn
        tail.close()


# -- T5: segments ---------------------------------------------------------------------------


@pytest.mark.parametrize("sync", ["off", "full"])
@pytest.mark.parametrize("kind", ["os", "memory"])
def test_tail_follows_segment_rollover(tmp_path: Path, sync: wal.SyncMode, kind: str) -> None:
    vfs: wal.VFS = MemoryVFS() if kind == "memory" else wal.OsVFS()
    path = "/db/log" if kind == "memory" else str(tmp_path / "log")
    rng = random.Random(7)
    expected: list[wal.Record] = []
    got: list[wal.Record] = []
    number = 0
    with wal.open(path, sync=sync, segment_size=SMALL, vfs=vfs) as log:
        tail = wal.LogTail(path, from_lsn=1, vfs=vfs)
        for _ in range(60 if sync == "full" else 150):
            payloads = []
            for _ in range(rng.randint(1, 4)):
                number += 1
                payloads.append(numbered(number))
            expected += commit_batch(log, payloads)
            if rng.random() < 0.4:
                got += tail.poll()
                assert got == expected
        got += tail.poll()
        tail.close()
    assert got == expected
    assert len(vfs.listdir(os.path.dirname(path))) > 3  # it did roll over


# -- T7: checkpoints ------------------------------------------------------------------------


def test_checkpoint_of_an_older_segment_does_not_disturb_the_tail(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off", segment_size=SMALL) as log:
        tail = wal.LogTail(path, from_lsn=1)
        early = commit_batch(log, [numbered(i) for i in range(3)])
        expected = early + commit_batch(log, [numbered(i) for i in range(40)])
        assert tail.poll() == expected  # the tail is now in the active segment
        log.checkpoint(expected[-2].lsn)  # frees every older segment, not the active one
        with wal.LogTail(path, from_lsn=1) as fresh, pytest.raises(wal.WalRecycledError):
            fresh.poll()  # early records are gone
        more = commit_batch(log, [b"more"])
        assert tail.poll() == more
        tail.close()


def test_checkpoint_of_the_tails_segment_raises_recycled(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off", segment_size=SMALL) as log:
        tail = wal.LogTail(path, from_lsn=1)
        records = commit_batch(log, [b"a", b"b"])
        assert tail.poll() == records
        log.checkpoint(log.committed_lsn)  # rolls to a fresh segment, frees the tail's
        later = commit_batch(log, [b"c"])
        with pytest.raises(wal.WalRecycledError, match="checkpointed past this reader"):
            tail.poll()
        with pytest.raises(wal.WalRecycledError):  # stays failed
            tail.poll()
        tail.close()
        tail.close()
        with pytest.raises(wal.WalClosedError):
            tail.poll()
        with wal.LogTail(path, from_lsn=records[-1].lsn + 1) as fresh:
            assert fresh.poll() == later


def test_a_new_tail_from_before_the_checkpoint_raises_recycled(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off", segment_size=SMALL) as log:
        records = commit_batch(log, [numbered(i) for i in range(60)])  # a few segments
        log.checkpoint(records[-2].lsn)  # frees all but the active segment
        with wal.LogTail(path, from_lsn=1) as tail, pytest.raises(wal.WalRecycledError):
            tail.poll()  # T4: records 1.. are gone
        # From just after the checkpoint, the log still holds everything asked for.
        with wal.LogTail(path, from_lsn=records[-2].lsn + 1) as tail:
            assert tail.poll() == records[-1:]


def test_tails_reopened_after_checkpoints_see_every_record_once(tmp_path: Path) -> None:
    """A database-like follower: on WalRecycledError it reopens from the last checkpoint.
    Spare slot files are deleted and recreated under the same names along the way."""
    path = str(tmp_path / "log")
    rng = random.Random(3)
    committed: list[wal.Record] = []
    checkpoint = 0
    recycled = 0
    with wal.open(path, sync="off", segment_size=SMALL) as log:
        tail = wal.LogTail(path, from_lsn=1)
        run: list[wal.Record] = []  # what the current tail returned
        for step in range(400):
            committed += commit_batch(log, [numbered(step)] * rng.randint(1, 3))
            if rng.random() < 0.1 and committed[-1].lsn > checkpoint:
                checkpoint = rng.choice([r.lsn for r in committed if r.lsn > checkpoint])
                log.checkpoint(checkpoint)
            if rng.random() < 0.5:
                try:
                    run += tail.poll()
                except wal.WalRecycledError:
                    recycled += 1
                    tail.close()
                    tail = wal.LogTail(path, from_lsn=checkpoint + 1)
                    run = []
                    continue
                first = tail.from_lsn
                assert run == [r for r in committed if r.lsn >= first][: len(run)]
        run += tail.poll()
        tail.close()
        assert run == [r for r in committed if r.lsn >= tail.from_lsn]
    assert recycled > 3


class _HookVFS:
    """The real file layer, calling `hook` once, just before the `at`-th pread."""

    def __init__(self) -> None:
        self.inner = wal.OsVFS()
        self.preads = 0
        self.at = 0
        self.fired = False
        self.hook: Callable[[], None] = lambda: None

    def open(self, path: str, *, create: bool = False) -> wal.VFile:
        return _HookFile(self, self.inner.open(path, create=create))

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def remove(self, path: str) -> None:
        self.inner.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self.inner.rename(src, dst)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def sync_dir(self, path: str) -> None:
        self.inner.sync_dir(path)

    def identity(self, path: str) -> tuple[int, int] | None:
        return self.inner.identity(path)


class _HookFile:
    def __init__(self, vfs: _HookVFS, inner: wal.VFile) -> None:
        self._vfs = vfs
        self._inner = inner

    def pread(self, size: int, offset: int) -> bytes:
        self._vfs.preads += 1
        if self._vfs.preads == self._vfs.at:
            self._vfs.fired = True
            self._vfs.hook()
        return self._inner.pread(size, offset)

    def pwritev(self, buffers: Sequence[wal.vfs.Buffer], offset: int) -> None:
        raise AssertionError("a tail never writes")

    def size(self) -> int:
        return self._inner.size()

    def truncate(self, size: int) -> None:
        raise AssertionError("a tail never writes")

    def allocate(self, size: int) -> None:
        raise AssertionError("a tail never writes")

    def sync(self) -> None:
        raise AssertionError("a tail never writes")

    def lock(self) -> None:
        raise AssertionError("a tail never locks")

    def lock_range(self, start: int, length: int, *, wait: bool = False) -> bool:
        raise AssertionError("a tail never locks")

    def unlock_range(self, start: int, length: int) -> None:
        raise AssertionError("a tail never locks")

    def range_locked(self, start: int, length: int) -> bool:
        raise AssertionError("a tail never locks")

    def map(self, size: int) -> wal.vfs.FileMap | None:
        raise AssertionError("a tail never maps")

    def identity(self) -> tuple[int, int]:
        return self._inner.identity()

    def close(self) -> None:
        self._inner.close()


def test_segment_recycled_during_a_poll(tmp_path: Path) -> None:
    """At each pread of a poll in turn, the writer checkpoints and writes on until the
    tail's segment is reused with a new salt. The tail returns only the right records, and
    then either raises WalRecycledError or catches up (T7)."""
    outcomes = set()
    for at in range(1, 200):
        path = str(tmp_path / str(at) / "log")
        os.mkdir(os.path.dirname(path))
        with wal.open(path, sync="off", segment_size=SMALL) as log:
            vfs = _HookVFS()
            tail = wal.LogTail(path, from_lsn=1, vfs=vfs)
            committed = commit_batch(log, [numbered(i) for i in range(8)])
            assert tail.poll() == committed
            committed += commit_batch(log, [numbered(i) for i in range(8, 14)])

            def recycle() -> None:
                nonlocal committed
                log.checkpoint(log.committed_lsn)  # frees the tail's segment
                for i in range(30):  # the writer rolls on into the freed slot
                    committed += commit_batch(log, [numbered(i)] * 2)

            vfs.hook, vfs.at, vfs.preads = recycle, at, 0
            got: list[wal.Record] = []
            outcome = "followed"
            try:
                got += tail.poll()
                vfs.at = 0  # the poll under test is over
                got += tail.poll()
                got += tail.poll()
            except wal.WalRecycledError:
                outcome = "recycled"
            assert got == committed[8 : 8 + len(got)]
            if outcome == "followed":
                assert got == committed[8:]
            outcomes.add(outcome)
            tail.close()
            if not vfs.fired:
                break  # every pread of the poll was tried
    else:
        pytest.fail("the poll kept reading")
    assert outcomes == {"recycled", "followed"}


def test_implausible_or_torn_headers_count_as_free(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    implausible = fmt.SegmentHeader(0, 0x0102030400060708, 1, 1).pack()  # a zero tag byte
    torn = bytearray(fmt.SegmentHeader(0, 0x0102030405060708, 1, 1).pack())
    torn[30] ^= 1
    with wal.open(path, sync="off") as log:
        records = commit_batch(log, [b"a", b"b"])
        Path(path + ".7").write_bytes(implausible + bytes(100))
        Path(path + ".8").write_bytes(bytes(torn) + bytes(100))
        with wal.LogTail(path, from_lsn=1) as tail:
            assert tail.poll() == records
            more = commit_batch(log, [b"c"])
            assert tail.poll() == more


# -- T1: missing, empty, closed and reopened ------------------------------------------------


def test_missing_log_file_means_nothing_yet(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "log")
    tail = wal.LogTail(path, from_lsn=1)
    assert tail.poll() == [] and tail.poll() == []
    assert not os.path.exists(path) and not os.path.exists(tmp_path / "sub")
    os.mkdir(tmp_path / "sub")
    assert tail.poll() == []
    with wal.open(path, sync="off") as log:
        records = commit_batch(log, [b"x"])
        assert tail.poll() == records
    tail.close()


def test_missing_file_on_the_memory_vfs_is_not_created() -> None:
    vfs = MemoryVFS()
    with wal.LogTail("/db/log", from_lsn=1, vfs=vfs) as tail:
        assert tail.poll() == []
    assert not vfs.exists("/db/log")


HEADER_PREFIX = fmt.SegmentHeader(0, 0x0102030405060708, 1, 1).pack()[:40]


@pytest.mark.parametrize(
    "content", [b"", fmt.MAGIC[:5], bytes(30), HEADER_PREFIX],
    ids=["empty", "magic-prefix", "zeros", "header-prefix"],
)
def test_blank_file_is_an_empty_log(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "log"
    path.write_bytes(content)
    with wal.LogTail(str(path), from_lsn=1) as tail:
        assert tail.poll() == []
    assert path.read_bytes() == content


def test_empty_log_then_records(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path) as log, wal.LogTail(path, from_lsn=1) as tail:
        assert tail.poll() == []
        records = commit_batch(log, [b"1", b"2"])
        assert tail.poll() == records


def test_close_marker_is_consumed_and_a_reopened_writer_is_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal.log, "SPILL_BYTES", 100)
    path = str(tmp_path / "log")
    tail = wal.LogTail(path, from_lsn=1)
    with wal.open(path, sync="off") as log:
        first = commit_batch(log, [b"a"])
    assert tail.poll() == first
    assert tail.position == first[-1].lsn + 1  # the CLOSE marker: consumed, not returned
    log = wal.open(path, sync="off")
    assert log.recovery.clean
    second = commit_batch(log, [b"b", b"c"])
    assert tail.poll() == second
    log.append(bytes(200))
    log.append(bytes(200))  # the first of the two spills: written without END
    assert tail.poll() == []
    log.__del__()  # the writer dies mid-batch: no rollback, no CLOSE marker
    assert tail.poll() == []
    with wal.open(path, sync="off") as log:  # recovery drops the unfinished batch
        assert log.recovery.discarded_records == 1
        third = commit_batch(log, [b"d"])
    assert tail.poll() == third
    tail.close()


def test_foreign_file_raises_format_error(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"not a log at all, and long enough to be more than a header" * 2)
    with wal.LogTail(str(path), from_lsn=1) as tail, pytest.raises(wal.WalFormatError):
        tail.poll()


def test_tail_never_writes_locks_creates_or_removes(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off", segment_size=SMALL) as log:
        spy = FaultyVFS(wal.OsVFS(), fail_at=1, sticky=True, only=WRITES)
        tail = wal.LogTail(path, from_lsn=1, vfs=spy)
        records = commit_batch(log, [numbered(i) for i in range(30)])
        assert tail.poll() == records
        log.checkpoint(records[5].lsn)
        records += commit_batch(log, [b"x"])
        assert tail.poll() == records[-1:]
        tail.close()
    assert spy.calls == 0


# -- T5, T6 concurrently --------------------------------------------------------------------


def test_tail_keeps_up_with_a_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal.log, "SPILL_BYTES", 2000)  # some batches spill, some roll back
    path = str(tmp_path / "log")
    total = 2500
    log = wal.open(path, sync="off", segment_size=SMALL)
    done = threading.Event()

    def write() -> None:
        rng = random.Random(11)
        number = 1
        try:
            while number <= total:
                size = min(rng.randint(1, 8), total - number + 1)
                for i in range(size):
                    log.append(numbered(number + i))
                if rng.random() < 0.1:
                    log.rollback()
                    continue
                log.commit()
                number += size
                if rng.random() < 0.2:
                    time.sleep(0.0005)  # let the tail in now and then
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    got: list[wal.Record] = []
    try:
        with wal.LogTail(path, from_lsn=1) as tail:
            while not done.is_set():
                got += tail.poll()
            writer.join()
            got += tail.poll()
    finally:
        log.close()
    assert [r.payload for r in got] == [numbered(i) for i in range(1, total + 1)]
    assert [r.lsn for r in got] == sorted({r.lsn for r in got})


WRITER = """
import random, sys, time
import wal, wal.log

def numbered(i):
    return (b"%d." % i) * (i * 7919 % 97 + 1)

wal.log.SPILL_BYTES = 2000
path, total = sys.argv[1], int(sys.argv[2])
rng = random.Random(5)
with wal.open(path, sync="off", segment_size=8192) as log:
    number = 1
    while number <= total:
        size = min(rng.randint(1, 6), total - number + 1)
        for i in range(size):
            log.append(numbered(number + i))
        if rng.random() < 0.1:
            log.rollback()
            continue
        log.commit()
        number += size
        if rng.random() < 0.2:
            time.sleep(0.001)  # let the tail catch up now and then
"""


def test_tail_follows_a_writer_in_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    total = 3000
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(total)], env=env)
    got: list[wal.Record] = []
    polls = 0
    try:
        with wal.LogTail(path, from_lsn=1) as tail:
            while proc.poll() is None:
                got += tail.poll()
                polls += 1
            got += tail.poll()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert polls > 1
    assert [r.payload for r in got] == [numbered(i) for i in range(1, total + 1)]


# -- T2: growth byte by byte, damage ---------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    file: int  # index in chain order
    end: int  # offset after the record
    lsn: int
    batch_end: bool
    record: wal.Record | None  # None for a CLOSE marker


def _written_log(vfs: MemoryVFS, segment_size: int) -> tuple[list[bytes], list[_Found]]:
    """A log of varied batches (one rolled back), its files' bytes in chain order, and every
    record found in them."""
    rng = random.Random(1)
    with wal.open("/db/log", vfs=vfs, sync="off", segment_size=segment_size) as log:
        for batch in range(25):
            for i in range(rng.randint(1, 4)):
                log.append(numbered(batch * 10 + i)[: rng.randint(0, 200)])
            if batch == 7:
                log.rollback()
            else:
                log.commit()
    names = sorted(vfs.listdir("/db"), key=lambda n: (len(n), n))
    files = [vfs.read_file("/db/" + name) for name in names]
    found: list[_Found] = []
    last = 0
    for index, name in enumerate(names):
        file = vfs.open("/db/" + name)
        header = fmt.parse_segment_header(files[index][:64])
        assert header is not None and header.seq == index + 1  # slot order is chain order
        for rec in scan(Window(file, len(files[index])), header, last_lsn=last,
                        max_record_size=1 << 20, payloads=True):
            assert rec.payload is not None
            data = rec.header.kind == fmt.KIND_DATA
            record = wal.Record(rec.header.lsn, rec.payload) if data else None
            found.append(_Found(index, rec.end, rec.header.lsn, rec.header.end, record))
            last = rec.header.lsn
        file.close()
    return files, found


def _complete(found: list[_Found], file: int, size: int) -> list[wal.Record]:
    """Data records of the batches whose END lies within files[:file] + files[file][:size]."""
    visible = [f for f in found if (f.file, f.end) <= (file, size)]
    ends = [i for i, f in enumerate(visible) if f.batch_end]
    upto = ends[-1] + 1 if ends else 0
    return [f.record for f in visible[:upto] if f.record is not None]


@pytest.mark.parametrize("segment_size", [1 << 20, 1500])
def test_growing_log_byte_by_byte(segment_size: int) -> None:
    files, found = _written_log(MemoryVFS(), segment_size)
    assert sum(f.batch_end for f in found) == 25  # 24 batches and the CLOSE marker
    if segment_size < 1 << 20:
        assert len(files) > 3
    growing = MemoryVFS()
    follower = wal.LogTail("/db/log", from_lsn=1, vfs=growing)
    got: list[wal.Record] = []
    checked = 0
    for index, data in enumerate(files):
        name = slot_path("/db/log", index)
        for size in range(len(data) + 1):
            growing.write_file(name, data[:size])
            expected = _complete(found, index, size)
            got += follower.poll()  # one tail across the growth: each record once
            assert got == expected
            if size % 13 == 0 or size == len(data):  # and a new tail over each prefix
                with wal.LogTail("/db/log", from_lsn=1, vfs=growing) as fresh:
                    assert fresh.poll() == expected
                checked += 1
    assert got == [f.record for f in found if f.record is not None]
    assert checked > 100
    follower.close()


def test_growing_real_file_with_a_stride(tmp_path: Path) -> None:
    files, found = _written_log(MemoryVFS(), 1 << 20)
    (data,) = files
    path = tmp_path / "log"
    got: list[wal.Record] = []
    with path.open("wb") as out, wal.LogTail(str(path), from_lsn=1) as tail:
        for size in range(0, len(data) + 7, 7):
            out.write(data[size - 7 : size] if size else b"")
            out.flush()
            got += tail.poll()
            assert got == _complete(found, 0, min(size, len(data)))


def test_flipped_bit_stops_the_tail_silently(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off") as log:
        batches = [commit_batch(log, [numbered(b * 3 + i) for i in range(3)]) for b in range(10)]
    data = bytearray(Path(path).read_bytes())
    # The second record of batch 5: its header starts after 5 batches of 3 and one record.
    offset = fmt.SEGMENT_HEADER_SIZE + sum(
        fmt.RECORD_HEADER_SIZE + len(r.payload) for batch in batches[:5] for r in batch
    ) + fmt.RECORD_HEADER_SIZE + len(batches[5][0].payload)
    data[offset + fmt.RECORD_HEADER_SIZE + 1] ^= 0x10  # a payload bit
    Path(path).write_bytes(data)
    expected = [r for batch in batches[:5] for r in batch]
    with wal.LogTail(path, from_lsn=1) as tail:
        assert tail.poll() == expected
        assert tail.poll() == [] and tail.poll() == []
        assert tail.position == expected[-1].lsn
    with wal.LogTail(path, from_lsn=expected[-1].lsn + 1) as tail:
        assert tail.poll() == []


# -- from_lsn, limits, errors ----------------------------------------------------------------


def test_from_lsn_skips_earlier_records(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off", segment_size=SMALL) as log:
        records: list[wal.Record] = []
        for b in range(30):
            records += commit_batch(log, [numbered(b * 4 + i) for i in range(4)])
        middle = records[57].lsn  # the middle of a batch, several segments in
        with wal.LogTail(path, from_lsn=middle) as tail:
            assert tail.poll() == records[57:]
            assert tail.position == records[-1].lsn
        beyond = log.next_lsn + 5
        with wal.LogTail(path, from_lsn=beyond) as tail:
            assert tail.poll() == []
            assert tail.position == records[-1].lsn  # consumed, not returned
            log.skip_to(beyond)
            later = commit_batch(log, [b"x", b"y"])
            assert tail.poll() == later


def test_oversized_record_raises_invalid_argument(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off") as log:
        small = commit_batch(log, [b"ok"])
        commit_batch(log, [bytes(500)])
    with wal.LogTail(path, from_lsn=1, max_record_size=100) as tail:
        with pytest.raises(wal.WalInvalidArgumentError, match="max_record_size"):
            tail.poll()
        assert tail.position == 0  # nothing was consumed
    with wal.LogTail(path, from_lsn=1, max_record_size=500) as tail:
        assert tail.poll()[:1] == small


def test_bad_arguments() -> None:
    with pytest.raises(wal.WalInvalidArgumentError):
        wal.LogTail("x", from_lsn=-1)
    with pytest.raises(wal.WalInvalidArgumentError):
        wal.LogTail("x", from_lsn=1, max_record_size=-1)


def test_io_errors_are_wrapped_and_the_poll_can_be_retried(tmp_path: Path) -> None:
    """Fail each file call of a first poll (which finds the segments) and of a later one
    (which resumes): WalIOError, nothing consumed, and the retry returns the same records."""
    path = str(tmp_path / "log")
    with wal.open(path, sync="off", segment_size=SMALL) as log:
        records = commit_batch(log, [numbered(i) for i in range(20)])
        counting = FaultyVFS(wal.OsVFS())
        with wal.LogTail(path, from_lsn=1, vfs=counting) as tail:
            assert tail.poll() == records
        for fail_at in range(1, counting.calls + 1):
            faulty = FaultyVFS(wal.OsVFS(), fail_at=fail_at)
            with wal.LogTail(path, from_lsn=1, vfs=faulty) as tail:
                with pytest.raises(wal.WalIOError) as info:
                    tail.poll()
                assert info.value.errno == errno.EIO and isinstance(info.value.__cause__, OSError)
                assert tail.position == 0
                assert tail.poll() == records

        vfses = [FaultyVFS(wal.OsVFS()) for _ in range(60)]
        tails = [wal.LogTail(path, from_lsn=1, vfs=vfs) for vfs in vfses]
        for tail in tails:
            assert tail.poll() == records
        more = commit_batch(log, [numbered(i) for i in range(20, 40)])
        before = vfses[0].calls
        assert tails[0].poll() == more
        calls = vfses[0].calls - before
        assert 3 < calls < len(tails)
        for fail_at, (vfs, tail) in enumerate(zip(vfses[1:calls + 1], tails[1:], strict=False), 1):
            vfs.fail_at = vfs.calls + fail_at
            with pytest.raises(wal.WalIOError):
                tail.poll()
            assert tail.position == records[-1].lsn
            assert tail.poll() == more
        for tail in tails:
            tail.close()


def test_repr_and_poll_timing(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with wal.open(path, sync="off") as log, wal.LogTail(path, from_lsn=1) as tail:
        commit_batch(log, [b"a"])
        tail.poll()
        assert "position=1" in repr(tail) and "open" in repr(tail)
        started = time.perf_counter()
        for _ in range(200):
            assert tail.poll() == []
        assert time.perf_counter() - started < 2  # idle polls are cheap
    assert "closed" in repr(tail)
