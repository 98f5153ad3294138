"""The reader table: claims, publishes, liveness across table objects and processes, dead
and damaged slots, growth and the cap, the POSIX fallback, and the in-memory table."""

from __future__ import annotations

import fcntl
import gc
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streamdb.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    LockedError,
    UnsupportedError,
)
from streamdb.storage import readers
from streamdb.storage.readers import (
    HEADER_SIZE,
    IN_USE,
    SLOT_SIZE,
    FileReaderTable,
    LocalReaderTable,
    SlotRecord,
    open_table,
    pack_slot,
    unpack_slot,
)
from wal.memvfs import MemoryVFS
from wal.vfs import OsVFS

ROOT = Path(__file__).resolve().parents[2]
DB = bytes(range(1, 17))
OTHER = bytes(range(2, 18))


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "x.db-readers")


@pytest.fixture
def table(path: str) -> Iterator[FileReaderTable]:
    t = FileReaderTable(path)
    yield t
    t.close()


class FileReaderTableCtx:
    """A table closed on exit (the tests' own helper; the API has no context manager)."""

    def __init__(self, path: str) -> None:
        self.table = FileReaderTable(path)

    def __enter__(self) -> FileReaderTable:
        return self.table

    def __exit__(self, *exc: object) -> None:
        self.table.close()


def slot_bytes(path: str, index: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE + index * SLOT_SIZE)
        return f.read(SLOT_SIZE)


def write_at(path: str, offset: int, raw: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, raw, offset)
    finally:
        os.close(fd)


def plant(path: str, index: int, raw: bytes) -> None:
    write_at(path, HEADER_SIZE + index * SLOT_SIZE, raw)


def test_flock_struct_matches_the_kernel(path: str, table: FileReaderTable) -> None:
    assert platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")
    assert readers._FLOCK.size == 32  # sizeof(struct flock) on 64-bit Linux
    slot = table.claim()
    start = HEADER_SIZE + slot.index * SLOT_SIZE
    probe = os.open(path, os.O_RDWR)
    try:
        query = readers._FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        reply = fcntl.fcntl(probe, fcntl.F_OFD_GETLK, query)
    finally:
        os.close(probe)
    # Every field lands where the kernel put it: the holder's type and range, l_pid -1 (OFD).
    assert readers._FLOCK.unpack(reply) == (fcntl.F_WRLCK, os.SEEK_SET, start, SLOT_SIZE, -1)


def test_slot_codec_round_trip_and_checksum() -> None:
    record = SlotRecord(1234, IN_USE, DB, (2**64 - 1, 7), 1.5)
    raw = pack_slot(record)
    assert len(raw) == SLOT_SIZE and raw[48:56] == bytes(8)
    assert unpack_slot(raw) == record and record.in_use
    for i in (0, 8, 30, 60):
        damaged = bytearray(raw)
        damaged[i] ^= 1
        assert unpack_slot(bytes(damaged)) is None
    assert unpack_slot(raw[:63]) is None
    header = readers.pack_header()
    assert len(header) == HEADER_SIZE and header.startswith(readers.MAGIC)


def test_claim_publish_oldest_release(path: str, table: FileReaderTable) -> None:
    assert table.oldest(DB) is None and table.live(DB) == []
    a, b, c = table.claim(), table.claim(), table.claim()
    assert [a.index, b.index, c.index] == [0, 1, 2]
    assert table.live(DB) == []  # claimed, not published: pins nothing
    a.publish(DB, (6, 0))
    b.publish(DB, (5, 9))
    c.publish(OTHER, (1, 1))
    table._check()
    assert table.oldest(DB) == (5, 9)  # tuples: lsn first, then generation
    assert table.live(DB) == [(5, 9), (6, 0)]
    assert table.live(OTHER) == [(1, 1)]
    a.publish(DB, (5, 2))
    assert table.oldest(DB) == (5, 2)
    record = unpack_slot(slot_bytes(path, a.index))
    assert record is not None and record.pid == os.getpid() and record.db_id == DB
    a.release()
    a.release()  # idempotent
    assert slot_bytes(path, a.index) == bytes(SLOT_SIZE)
    assert table.live(DB) == [(5, 9)]
    with pytest.raises(ClosedError):
        a.publish(DB, (9, 9))
    assert table.claim().index == a.index  # a released slot is reused
    table._check()


def test_invalid_arguments(table: FileReaderTable) -> None:
    slot = table.claim()
    for db_id in (b"short", bytes(16), bytes(17)):
        with pytest.raises(InvalidArgumentError):
            slot.publish(db_id, (1, 1))
        with pytest.raises(InvalidArgumentError):
            table.oldest(db_id)
    for stamp in ((-1, 0), (0, 2**64), (1, 2, 3)):
        with pytest.raises(InvalidArgumentError):
            slot.publish(DB, stamp)  # type: ignore[arg-type]
    table._check()


def test_close_releases_and_is_idempotent(path: str) -> None:
    t = FileReaderTable(path)
    slots = [t.claim() for _ in range(3)]
    slots[0].publish(DB, (1, 1))
    t.close()
    t.close()
    assert all(slot_bytes(path, i) == bytes(SLOT_SIZE) for i in range(3))
    for call in (t.claim, lambda: t.oldest(DB), lambda: slots[1].publish(DB, (1, 1))):
        with pytest.raises(ClosedError):
            call()
    slots[2].release()  # after close: nothing to do
    with FileReaderTableCtx(path) as again:
        assert again.live(DB) == [] and again.claim().index == 0


def test_two_tables_in_one_process(path: str) -> None:
    with FileReaderTableCtx(path) as a, FileReaderTableCtx(path) as b:
        slot = a.claim()
        slot.publish(DB, (3, 4))
        assert a.live(DB) == [(3, 4)]  # its own slot, without a lock test
        assert b.live(DB) == [(3, 4)]  # the lock conflicts across file descriptions
        assert b.claim().index != slot.index
        # Another descriptor of the file closing must not drop a's lock (it would, with
        # POSIX record locks): b still sees the slot live and does not reclaim it.
        with open(path, "rb") as f:
            f.read(1)
        os.close(os.open(path, os.O_RDONLY))
        assert b.live(DB) == [(3, 4)]
        assert unpack_slot(slot_bytes(path, slot.index)) is not None
        a._check()
        b._check()


CHILD = """
import sys
from streamdb.storage.readers import FileReaderTable
table = FileReaderTable(sys.argv[1])
slot = table.claim()
slot.publish(bytes.fromhex(sys.argv[2]), (7, 3))
print(slot.index, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child(path: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A reader process that claimed a slot and published (7, 3) for DB, then waits."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, DB.hex()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    index = int(proc.stdout.readline())
    yield proc, index
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_live_child_slot_is_counted(
    table: FileReaderTable, child: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, index = child
    assert table.oldest(DB) == (7, 3)
    assert table.live(OTHER) == []
    assert table.claim().index != index
    assert proc.poll() is None
    table._check()


def test_killed_child_slot_is_reclaimed(
    path: str, table: FileReaderTable, child: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, index = child
    assert table.live(DB) == [(7, 3)]
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert unpack_slot(slot_bytes(path, index)) is not None  # still says in use...
    assert table.oldest(DB) is None  # ...but its lock died with the process
    assert slot_bytes(path, index) == bytes(SLOT_SIZE)  # reclaimed
    assert table.claim().index == index
    table._check()


def test_stale_slot_is_reclaimed_in_process(path: str, table: FileReaderTable) -> None:
    table.claim().release()  # one batch of slots exists
    plant(path, 5, pack_slot(SlotRecord(99999, IN_USE, DB, (1, 1), 0.0)))
    assert table.live(DB) == []
    assert slot_bytes(path, 5) == bytes(SLOT_SIZE)
    table._check()


def test_garbled_slot_under_a_held_lock_pins_everything(path: str) -> None:
    with FileReaderTableCtx(path) as a, FileReaderTableCtx(path) as b:
        slot = a.claim()
        slot.publish(DB, (8, 8))
        raw = bytearray(slot_bytes(path, slot.index))
        raw[30] ^= 0xFF  # as if read mid-write
        plant(path, slot.index, bytes(raw))
        assert b.live(DB) == [(0, 0)]
        assert b.oldest(OTHER) == (0, 0)  # unreadable: it may be any database's
        assert a.oldest(OTHER) == (0, 0)  # its owner does not trust it either
        assert slot_bytes(path, slot.index) == bytes(raw)  # not reclaimed: its owner lives
        with pytest.raises(AssertionError):
            a._check()
        slot.publish(DB, (9, 9))
        assert b.live(DB) == [(9, 9)] and b.live(OTHER) == []
        a._check()


def test_garbled_slot_under_a_free_lock_is_reclaimed(path: str, table: FileReaderTable) -> None:
    table.claim().release()
    plant(path, 3, b"\xa5" * SLOT_SIZE)
    assert table.oldest(DB) is None
    assert slot_bytes(path, 3) == bytes(SLOT_SIZE)
    table._check()


def test_growth_past_the_first_batch(
    path: str, table: FileReaderTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "BATCH", 4)
    slots = [table.claim() for _ in range(10)]
    assert [s.index for s in slots] == list(range(10))
    assert os.path.getsize(path) == HEADER_SIZE + 12 * SLOT_SIZE
    for i, s in enumerate(slots):
        s.publish(DB, (i, 0))
    assert table.oldest(DB) == (0, 0) and len(table.live(DB)) == 10
    table._check()


def test_cap_raises_locked_error(
    path: str, table: FileReaderTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "BATCH", 4)
    monkeypatch.setattr(readers, "MAX_SLOTS", 6)
    slots = [table.claim() for _ in range(6)]
    with pytest.raises(LockedError, match="too many concurrent readers"):
        table.claim()
    with FileReaderTableCtx(path) as other, pytest.raises(LockedError):
        other.claim()
    assert os.path.getsize(path) == HEADER_SIZE + 6 * SLOT_SIZE
    slots[2].release()
    assert table.claim().index == 2
    table._check()


def test_threads_share_one_table(table: FileReaderTable) -> None:
    def work(n: int) -> None:
        for i in range(50):
            slot = table.claim()
            slot.publish(DB, (n, i))
            assert (n, i) in table.live(DB)
            slot.release()

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(work, n) for n in range(4)]:
            done.result()
    assert table.live(DB) == []
    table._check()


def test_header_new_damaged_and_foreign(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"garbage" * 100)  # damaged, nobody holds a slot: re-initialised
    with FileReaderTableCtx(path) as t:
        t._check()
        assert os.path.getsize(path) == HEADER_SIZE
        slot = t.claim()
        write_at(path, 0, bytes(8))  # damage the header while a slot is held
        with pytest.raises(CorruptionError):
            FileReaderTable(path)
        slot.release()
    with FileReaderTableCtx(path) as t:  # no slot held now: re-initialised again
        t._check()
    body = readers._HEADER.pack(readers.MAGIC, 2, SLOT_SIZE)
    with open(path, "wb") as f:
        f.write(readers._seal(body))
    with pytest.raises(UnsupportedError):
        FileReaderTable(path)


def test_permission_error_propagates_unchanged(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores file modes, so the failing open is simulated.
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError) as info:
        FileReaderTable(path)
    assert type(info.value) is PermissionError


def test_posix_fallback_bookkeeping(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "_USE_OFD", False)
    a = FileReaderTable(path)
    b = FileReaderTable(path)
    shared = a._file
    assert isinstance(shared, readers._PosixFile) and b._file is shared and shared.refs == 2
    probe = os.open(path, os.O_RDWR)  # kept open: closing it would drop the process's locks
    try:

        def locked(index: int) -> bool:
            # OFD locks conflict with POSIX record locks, even the same process's.
            start = HEADER_SIZE + index * SLOT_SIZE
            query = readers._FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, SLOT_SIZE, 0)
            reply = fcntl.fcntl(probe, fcntl.F_OFD_GETLK, query)
            return bool(readers._FLOCK.unpack(reply)[0] != fcntl.F_UNLCK)

        sa, sb = a.claim(), b.claim()
        assert (sa.index, sb.index) == (0, 1)  # the process's own locks never conflict
        assert shared.claimed == {0, 1} and locked(0) and locked(1)
        sa.publish(DB, (2, 2))
        sb.publish(DB, (1, 5))
        assert a.live(DB) == b.live(DB) == [(1, 5), (2, 2)]
        # Through the probe: opening and closing the file here would drop a's and b's locks.
        dead = HEADER_SIZE + 7 * SLOT_SIZE
        os.pwrite(probe, pack_slot(SlotRecord(99999, IN_USE, DB, (0, 1), 0.0)), dead)
        assert a.oldest(DB) == (1, 5)  # the dead slot is reclaimed, the live ones kept
        assert os.pread(probe, SLOT_SIZE, dead) == bytes(SLOT_SIZE) and locked(1)
        a.close()
        assert shared.refs == 1 and shared.claimed == {1} and not locked(0) and locked(1)
        assert b.live(DB) == [(1, 5)]
        b._check()
        b.close()
        assert shared.key not in readers._POSIX_FILES and not locked(1)
        with pytest.raises(OSError):
            os.fstat(shared.fd)
    finally:
        os.close(probe)


def test_posix_fallback_keeps_a_descriptor_opened_in_a_race(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_USE_OFD", False)
    a = FileReaderTable(path)
    slot = a.claim()

    def missing(*args: object, **kwargs: object) -> os.stat_result:
        raise FileNotFoundError(2, "No such file", path)

    with monkeypatch.context() as m:
        m.setattr(os, "stat", missing)  # as if the file appeared after the stat
        b = FileReaderTable(path)
    shared = a._file
    assert isinstance(shared, readers._PosixFile)
    assert b._file is shared and len(shared.spare) == 1 and shared.claimed == {slot.index}
    b.close()
    a.close()
    assert shared.key not in readers._POSIX_FILES


def test_open_table_picks_the_implementation(tmp_path: Path) -> None:
    db_path = str(tmp_path / "x.db")
    t = open_table(OsVFS(), db_path)
    assert isinstance(t, FileReaderTable) and t.path == db_path + "-readers"
    assert os.path.exists(db_path + "-readers")
    t.close()
    vfs = MemoryVFS()
    a, b = open_table(vfs, "/m.db"), open_table(vfs, "/m.db")
    other_path, other_vfs = open_table(vfs, "/n.db"), open_table(MemoryVFS(), "/m.db")
    assert isinstance(a, LocalReaderTable)
    a.claim().publish(DB, (4, 4))
    assert b.live(DB) == [(4, 4)]  # one registry per (vfs, path)
    assert other_path.live(DB) == [] and other_vfs.live(DB) == []
    for t in (a, b, other_path, other_vfs):
        t.close()
    key = (id(vfs), "/m.db")
    assert key in readers._LOCAL_TABLES
    del vfs
    gc.collect()
    assert key not in readers._LOCAL_TABLES  # an id reused by a new VFS starts afresh


def test_local_table_round_trip() -> None:
    vfs = MemoryVFS()
    a, b = open_table(vfs, "/m.db"), open_table(vfs, "/m.db")
    s1, s2, s3 = a.claim(), a.claim(), b.claim()
    assert len({s1.index, s2.index, s3.index}) == 3
    assert a.live(DB) == []
    s1.publish(DB, (6, 0))
    s2.publish(DB, (5, 9))
    s3.publish(OTHER, (1, 1))
    assert b.oldest(DB) == (5, 9) and b.live(OTHER) == [(1, 1)]
    s2.release()
    s2.release()
    with pytest.raises(ClosedError):
        s2.publish(DB, (1, 1))
    with pytest.raises(InvalidArgumentError):
        s1.publish(bytes(16), (1, 1))
    assert b.live(DB) == [(6, 0)]
    a.close()
    a.close()
    assert b.oldest(DB) is None and b.live(OTHER) == [(1, 1)]
    with pytest.raises(ClosedError):
        a.claim()
    b.close()
