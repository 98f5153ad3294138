"""`streamdb.open(path, recover="truncate-log")`: salvaging a damaged log (rules L1-L4 in
streamdb.engine.salvage). Each damaged log is refused without `recover`; with it the database holds
exactly the committed prefix before the damage, the copies are the damaged files byte for
byte, the report says what was dropped, and afterwards the database opens without `recover`.
A crash at any point of the salvage leaves the damaged state or the recovered one."""

from __future__ import annotations

import errno
import random
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import streamdb
import wal.log as wlog
from streamdb import Config, LogRecovery, LogRecoveryWarning
from streamdb.errors import CorruptionError, InvalidArgumentError, StreamDbError
from wal import format as fmt
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzz_db_open as harness  # noqa: E402
import fuzzkit  # noqa: E402

DB = "/data/t.db"
CONFIG = Config(page_size=4096)
RECOVER = "truncate-log"


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Log files of 8, 16, 32 KiB...: a few dozen commits span several segments."""
    monkeypatch.setattr(wlog, "FIRST_FILE_SIZE", 8192)
    yield


@dataclass
class Image:
    disk: MemoryVFS
    docs: list[tuple[str, bytes]]  # written in this order, one commit (one record) each
    lsns: list[int]  # the log record of each


def written(count: int = 30, *, checkpoint_after: int | None = None) -> Image:
    """`count` documents written one commit each (inline: they travel in the log), the
    image taken as a killed process leaves it (no close, so no final checkpoint)."""
    mem = MemoryVFS()
    docs, lsns = [], []
    db = streamdb.open(DB, CONFIG, vfs=mem)
    for i in range(count):
        path, data = f"/d/{i:03d}", bytes([i % 251]) * 700
        db.write_document(path, data)
        docs.append((path, data))
        lsns.append(db._engine._applied_lsn)
        if checkpoint_after == i:
            db.checkpoint()
    disk = mem.crash(keep="all")
    db.close()
    return Image(disk, docs, lsns)


def contents(db: streamdb.Database) -> dict[str, bytes]:
    return {path: db.get(path) for path in db}


def files(vfs: MemoryVFS) -> dict[str, bytes]:
    return {n: vfs.read_file(f"/data/{n}") for n in sorted(vfs.listdir("/data"))}


def segments(vfs: MemoryVFS) -> list[str]:
    """The log's current segments, in sequence order."""
    found = []
    for name in vfs.listdir("/data"):
        if "-wal" not in name:
            continue
        header = fmt.parse_segment_header(vfs.read_file(f"/data/{name}")[:64])
        if header is not None and not header.free:
            found.append((header.seq, f"/data/{name}"))
    return [p for _, p in sorted(found)]


def records(vfs: MemoryVFS, path: str) -> list[tuple[int, int, int]]:
    """(offset, payload length, LSN) of the records of a segment file, in order."""
    raw = vfs.read_file(path)
    out = []
    for at, length in harness.log_records(raw):
        out.append((at, length, fmt.parse_record_header(raw[at : at + 40]).lsn))
    return out


def salvage(disk: MemoryVFS) -> tuple[dict[str, bytes], LogRecovery]:
    with pytest.warns(LogRecoveryWarning, match="dropped"), \
            streamdb.open(DB, CONFIG, vfs=disk, recover=RECOVER) as db:
        report = db.recovery
        assert report is not None
        got = contents(db)
    return got, report


def check_salvage(image: Image, kept: int, dropped_lsns: tuple[int, int] | None,
                  dropped: int) -> LogRecovery:
    """Refused, then salvaged to the first `kept` documents; copies, report, reopen."""
    disk = image.disk
    before = files(disk)
    with pytest.raises(CorruptionError):
        streamdb.open(DB, CONFIG, vfs=disk)
    assert files(disk) == before
    got, report = salvage(disk)
    assert got == dict(image.docs[:kept])
    assert report.kept_lsn == image.lsns[kept - 1]
    assert report.records_dropped == dropped
    assert report.lsns_dropped == dropped_lsns
    if dropped_lsns is not None:
        assert report.bytes_dropped >= dropped * (fmt.RECORD_HEADER_SIZE + 700)
    logs = sorted(n for n in before if "-wal" in n)
    assert [c.rsplit("/", 1)[1].split(".damaged-")[0] for c in report.copies] == logs
    for copy in report.copies:
        assert disk.read_file(copy) == before[copy.rsplit("/", 1)[1].split(".damaged-")[0]]
    # The recovered state is durable and the log is sound: no recover needed, new LSNs
    # above everything the damaged log held.
    after = disk.crash(keep="none")
    with streamdb.open(DB, CONFIG, vfs=after) as db:
        assert db.recovery is None
        assert contents(db) == dict(image.docs[:kept])
        db.write_document("/after", b"usable")
        assert db._engine._applied_lsn > max(image.lsns)
    with streamdb.open(DB, CONFIG, vfs=after.crash(keep="none")) as db:
        assert db.get("/after") == b"usable"
    return report


def test_flipped_bytes_in_a_middle_record() -> None:
    image = written()
    first = segments(image.disk)[0]
    at, length, lsn = records(image.disk, first)[5]
    k = image.lsns.index(lsn)
    raw = bytearray(image.disk.read_file(first))
    raw[at + fmt.RECORD_HEADER_SIZE + length // 2] ^= 0x10
    image.disk.write_file(first, bytes(raw))
    # The damaged record cannot be counted; every later one is.
    report = check_salvage(image, k, (image.lsns[k + 1], image.lsns[-1]), len(image.docs) - k - 1)
    assert "synced" in report.reason


def test_a_missing_middle_segment() -> None:
    image = written()
    paths = segments(image.disk)
    assert len(paths) >= 3
    in_first = len(records(image.disk, paths[0]))
    in_second = len(records(image.disk, paths[1]))
    image.disk.remove(paths[1])
    first_after = image.lsns[in_first + in_second]
    report = check_salvage(image, in_first, (first_after, image.lsns[-1]),
                           len(image.docs) - in_first - in_second)
    assert "missing" in report.reason


def test_a_damaged_segment_header() -> None:
    image = written()
    paths = segments(image.disk)
    in_first = len(records(image.disk, paths[0]))
    raw = bytearray(image.disk.read_file(paths[1]))
    raw[41] ^= 0x01  # the previous LSN: the CRC fails, one bit to correct
    image.disk.write_file(paths[1], bytes(raw))
    report = check_salvage(image, in_first, (image.lsns[in_first], image.lsns[-1]),
                           len(image.docs) - in_first)
    assert "header" in report.reason


def test_a_record_that_contradicts_the_checkpoint() -> None:
    """A logged delete of a path that names nothing (its payload rewritten, CRCs repaired):
    the log is sound, its replay is not. Kept: every commit before that one."""
    mem = MemoryVFS()
    db = streamdb.open(DB, CONFIG, vfs=mem)
    docs = [("/a", b"a" * 300), ("/b", b"b" * 300)]
    for path, data in docs:
        db.write_document(path, data)
    kept_lsn = db._engine._applied_lsn
    db.delete("/a")
    db.write_document("/c", b"c" * 300)
    disk = mem.crash(keep="all")
    db.close()
    log = segments(disk)[0]
    raw = bytearray(disk.read_file(log))
    at, length, _ = records(disk, log)[2]
    body = raw[at + 40 : at + 40 + length]
    assert body.endswith(b"/a")
    raw[at + 40 + length - 1] = ord("z")  # unbind "/z", which names nothing
    harness.repair_log(raw)
    disk.write_file(log, bytes(raw))
    before = files(disk)
    with pytest.raises(CorruptionError, match="names nothing"):
        streamdb.open(DB, CONFIG, vfs=disk)
    assert files(disk) == before
    got, report = salvage(disk)
    assert got == dict(docs)
    assert report.kept_lsn == kept_lsn and report.records_kept == 2
    assert report.records_dropped == 2 and report.lsns_dropped == (kept_lsn + 1, kept_lsn + 2)
    assert "contradicts" in report.reason
    for copy in report.copies:
        assert disk.read_file(copy) == before[copy.rsplit("/", 1)[1].split(".damaged-")[0]]
    with streamdb.open(DB, CONFIG, vfs=disk) as again:
        assert contents(again) == dict(docs) and again.recovery is None


def test_a_salvage_after_a_checkpoint_keeps_it_and_replays_only_the_rest() -> None:
    image = written(checkpoint_after=9)
    last = segments(image.disk)[-1]
    at, _, lsn = records(image.disk, last)[1]
    k = image.lsns.index(lsn)
    assert k > 10
    raw = bytearray(image.disk.read_file(last))
    raw[at + 45] ^= 0x01
    image.disk.write_file(last, bytes(raw))
    report = check_salvage(image, k, (image.lsns[k + 1], image.lsns[-1]),
                           len(image.docs) - k - 1)
    assert report.records_kept == k - 10  # the first ten were in the checkpoint


def test_copies_never_overwrite_earlier_ones() -> None:
    image = written(12)
    first = segments(image.disk)[0]
    at, _, _ = records(image.disk, first)[3]
    raw = bytearray(image.disk.read_file(first))
    raw[at + 50] ^= 1
    image.disk.write_file(first, bytes(raw))
    damaged = image.disk.crash(keep="all")
    _, one = salvage(image.disk)
    # The same damage again, with the first copies already there under the same names.
    for copy in one.copies:
        damaged.write_file(copy, b"earlier")
    _, two = salvage(damaged)
    assert set(one.copies).isdisjoint(two.copies)
    assert all(damaged.read_file(c) == b"earlier" for c in one.copies)


def test_fuzz_corpus_images_refused_then_salvaged() -> None:
    for name in ("open-failed-wal-0fc7bff480e5.bin.gz", "open-failed-wal1-1ba9dd7acdbd.bin.gz"):
        case = harness.FuzzCase.decode(fuzzkit.read_input(harness.CORPUS_DIR / name))
        disk = MemoryVFS()
        for path, data in case.files().items():
            disk.write_file(path, data)
        before = {p: disk.read_file(p) for p in case.files()}
        with pytest.raises(CorruptionError):
            streamdb.open(harness.DB_PATH, harness.CONFIG, vfs=disk)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            db = streamdb.open(harness.DB_PATH, harness.CONFIG, vfs=disk, recover=RECOVER)
        assert [w.category for w in caught] == [LogRecoveryWarning]
        report = db.recovery
        assert report is not None and "contradicts" in report.reason
        paths = list(db)
        db.close()
        assert {c.split(".damaged-")[0] for c in report.copies} == {
            p for p in before if "-wal" in p}
        for copy in report.copies:
            assert disk.read_file(copy) == before[copy.split(".damaged-")[0]]
        with streamdb.open(harness.DB_PATH, harness.CONFIG, vfs=disk) as again:
            assert list(again) == paths


def test_a_sound_log_opens_as_without_recover() -> None:
    image = written(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning
        with streamdb.open(DB, CONFIG, vfs=image.disk, recover=RECOVER) as db:
            assert db.recovery is None
            assert contents(db) == dict(image.docs)
    assert not [n for n in image.disk.listdir("/data") if "damaged" in n]


def test_recover_arguments_are_checked() -> None:
    image = written(2)
    with pytest.raises(InvalidArgumentError):
        streamdb.open(DB, CONFIG, vfs=image.disk, readonly=True, recover=RECOVER)
    with pytest.raises(InvalidArgumentError):
        streamdb.open(DB, CONFIG, vfs=image.disk, recover="drop-everything")


# -- crash safety of the salvage ------------------------------------------------------------


def damaged_image() -> tuple[MemoryVFS, dict[str, bytes], dict[str, bytes]]:
    """A log with a flipped record: its disk, the state a salvage recovers (the documents
    committed before the damaged one), and its files."""
    image = written(14)
    first = segments(image.disk)[0]
    at, length, lsn = records(image.disk, first)[4]
    raw = bytearray(image.disk.read_file(first))
    raw[at + 40 + length // 2] ^= 0x10
    image.disk.write_file(first, bytes(raw))
    recovered = dict(image.docs[: image.lsns.index(lsn)])
    return image.disk, recovered, files(image.disk)


def check_after_crash(disk: MemoryVFS, recovered: dict[str, bytes], where: str) -> None:
    """Either the damaged state (refused; a new salvage reaches the recovered state) or the
    recovered one."""
    try:
        with streamdb.open(DB, CONFIG, vfs=disk) as db:
            assert contents(db) == recovered, where
            return
    except CorruptionError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LogRecoveryWarning)
        with streamdb.open(DB, CONFIG, vfs=disk, recover=RECOVER) as db:
            assert contents(db) == recovered, where
    with streamdb.open(DB, CONFIG, vfs=disk) as db:
        assert contents(db) == recovered, where


def salvage_calls(disk: MemoryVFS, only: frozenset[str] | None) -> int:
    probe = FaultyVFS(disk.crash(keep="all"), only=only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LogRecoveryWarning)
        db = streamdb.open(DB, CONFIG, vfs=probe, recover=RECOVER)
    calls = probe.calls
    db.close()
    return calls


def test_fail_each_file_call_of_the_salvage() -> None:
    disk, recovered, _ = damaged_image()
    total = salvage_calls(disk, None)
    assert total > 50
    for n in range(1, total + 1):
        mem = disk.crash(keep="all")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LogRecoveryWarning)
            with pytest.raises(StreamDbError):
                streamdb.open(DB, CONFIG, vfs=FaultyVFS(mem, fail_at=n, errno=errno.EIO),
                              recover=RECOVER)
        for keep in ("none", "all"):
            check_after_crash(mem.crash(keep=keep), recovered, f"call {n}, keep {keep}")


def test_power_loss_at_each_sync_of_the_salvage() -> None:
    disk, recovered, _ = damaged_image()
    only = frozenset({"sync", "sync_dir"})
    total = salvage_calls(disk, only)
    assert total > 8
    rng = random.Random(11)
    for n in range(1, total + 1):
        mem = disk.crash(keep="all")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LogRecoveryWarning)
            with pytest.raises(StreamDbError):
                streamdb.open(DB, CONFIG, vfs=FaultyVFS(mem, fail_at=n, only=only),
                              recover=RECOVER)
        for keep in ("none", "random"):
            check_after_crash(mem.crash(keep=keep, rng=rng), recovered, f"sync {n}, {keep}")
