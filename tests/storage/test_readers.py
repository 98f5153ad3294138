"""The reader table: claims, publishes, liveness across table objects and processes, dead
and damaged slots, growth and the cap, the peek, the in-memory table, and every file call
failing in turn.

`FileReaderTable` makes its file calls through `wal.vfs`, so most tests run on three
layers: the OS's files with OFD locks ("os"), the same with the POSIX-lock fallback and its
per-process registry ("posix", wal.vfs rule V5), and the in-memory layer ("memory")."""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import wal.vfs
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
    PeekReaderTable,
    SlotRecord,
    Stamp,
    open_table,
    pack_slot,
    peek_table,
    unpack_slot,
)
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS
from wal.vfs import VFS, OsVFS

ROOT = Path(__file__).resolve().parents[2]
DB = bytes(range(1, 17))
OTHER = bytes(range(2, 18))
LAYERS = ["os", "posix", "memory"]


class Layer:
    """A file layer and the table's path in it, with raw access to the file's bytes through
    a handle of the layer (so that, on the POSIX fallback, it drops no lock: V5)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.vfs: VFS = MemoryVFS() if kind == "memory" else OsVFS()
        self.path = "/t/x.db-readers" if kind == "memory" else str(tmp_path / "x.db-readers")

    def table(self) -> FileReaderTable:
        return FileReaderTable(self.path, self.vfs)

    def read(self, offset: int, size: int) -> bytes:
        f = self.vfs.open(self.path)
        try:
            return f.pread(size, offset)
        finally:
            f.close()

    def write_at(self, offset: int, raw: bytes) -> None:
        f = self.vfs.open(self.path, create=True)
        try:
            f.pwritev([raw], offset)
        finally:
            f.close()

    def replace(self, raw: bytes) -> None:
        f = self.vfs.open(self.path, create=True)
        try:
            f.truncate(0)
            f.pwritev([raw], 0)
        finally:
            f.close()

    def size(self) -> int:
        f = self.vfs.open(self.path)
        try:
            return f.size()
        finally:
            f.close()

    def slot_bytes(self, index: int) -> bytes:
        return self.read(HEADER_SIZE + index * SLOT_SIZE, SLOT_SIZE)

    def plant(self, index: int, raw: bytes) -> None:
        self.write_at(HEADER_SIZE + index * SLOT_SIZE, raw)


def _layer(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    if kind == "posix":
        monkeypatch.setattr(wal.vfs, "_USE_OFD", False)
    yield Layer(kind, tmp_path)
    assert not wal.vfs._POSIX, "the POSIX registry holds a range after every table closed"


@pytest.fixture(params=LAYERS)
def layer(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    yield from _layer(request.param, tmp_path, monkeypatch)


@pytest.fixture
def table(layer: Layer) -> Iterator[FileReaderTable]:
    t = layer.table()
    yield t
    t.close()


class Tables:
    """Tables closed on exit (the tests' own helper; the API has no context manager)."""

    def __init__(self, layer: Layer, n: int) -> None:
        self.tables = [layer.table() for _ in range(n)]

    def __enter__(self) -> list[FileReaderTable]:
        return self.tables

    def __exit__(self, *exc: object) -> None:
        for t in self.tables:
            t.close()


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


def test_claim_publish_oldest_release(layer: Layer, table: FileReaderTable) -> None:
    assert table.oldest(DB) is None and table.live(DB) == []
    a, b, c = table.claim(), table.claim(), table.claim()
    assert [a.index, b.index, c.index] == [0, 1, 2]
    assert table.live(DB) == []  # claimed, not published: pins nothing
    a.publish(DB, (6, 0))
    b.publish(DB, (5, 9))
    c.publish(OTHER, (1, 1))
    table._check()
    assert table.oldest(DB) == (5, 9)  # tuples: generation first, then lsn
    assert table.live(DB) == [(5, 9), (6, 0)]
    assert table.live(OTHER) == [(1, 1)]
    a.publish(DB, (5, 2))
    assert table.oldest(DB) == (5, 2)
    record = unpack_slot(layer.slot_bytes(a.index))
    assert record is not None and record.pid == os.getpid() and record.db_id == DB
    a.release()
    a.release()  # idempotent
    assert layer.slot_bytes(a.index) == bytes(SLOT_SIZE)
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


def test_close_releases_and_is_idempotent(layer: Layer) -> None:
    t = layer.table()
    slots = [t.claim() for _ in range(3)]
    slots[0].publish(DB, (1, 1))
    t.close()
    t.close()
    assert all(layer.slot_bytes(i) == bytes(SLOT_SIZE) for i in range(3))
    for call in (t.claim, lambda: t.oldest(DB), lambda: slots[1].publish(DB, (1, 1))):
        with pytest.raises(ClosedError):
            call()
    slots[2].release()  # after close: nothing to do
    with Tables(layer, 1) as (again,):
        assert again.live(DB) == [] and again.claim().index == 0


def test_two_tables_in_one_process(layer: Layer) -> None:
    with Tables(layer, 2) as (a, b):
        slot = a.claim()
        slot.publish(DB, (3, 4))
        assert a.live(DB) == [(3, 4)]  # its own slot, without a lock test
        assert b.live(DB) == [(3, 4)]  # the lock conflicts between handles
        assert b.claim().index != slot.index
        # Another handle of the file closing must not drop a's lock (it would, with bare
        # POSIX record locks): b still sees the slot live and does not reclaim it.
        layer.read(0, 1)
        if layer.kind == "os":  # OFD locks survive any descriptor closing
            os.close(os.open(layer.path, os.O_RDONLY))
        assert b.live(DB) == [(3, 4)]
        assert unpack_slot(layer.slot_bytes(slot.index)) is not None
        a._check()
        b._check()


def test_stale_slot_is_reclaimed_in_process(layer: Layer, table: FileReaderTable) -> None:
    table.claim().release()  # one batch of slots exists
    layer.plant(5, pack_slot(SlotRecord(99999, IN_USE, DB, (1, 1), 0.0)))
    assert table.live(DB) == []
    assert layer.slot_bytes(5) == bytes(SLOT_SIZE)
    table._check()


def test_garbled_slot_under_a_held_lock_pins_everything(layer: Layer) -> None:
    with Tables(layer, 2) as (a, b):
        slot = a.claim()
        slot.publish(DB, (8, 8))
        raw = bytearray(layer.slot_bytes(slot.index))
        raw[30] ^= 0xFF  # as if read mid-write
        layer.plant(slot.index, bytes(raw))
        assert b.live(DB) == [(0, 0)]
        assert b.oldest(OTHER) == (0, 0)  # unreadable: it may be any database's
        assert a.oldest(OTHER) == (0, 0)  # its owner does not trust it either
        assert layer.slot_bytes(slot.index) == bytes(raw)  # not reclaimed: its owner lives
        with pytest.raises(AssertionError):
            a._check()
        slot.publish(DB, (9, 9))
        assert b.live(DB) == [(9, 9)] and b.live(OTHER) == []
        a._check()


def test_garbled_slot_under_a_free_lock_is_reclaimed(layer: Layer,
                                                     table: FileReaderTable) -> None:
    table.claim().release()
    layer.plant(3, b"\xa5" * SLOT_SIZE)
    assert table.oldest(DB) is None
    assert layer.slot_bytes(3) == bytes(SLOT_SIZE)
    table._check()


def test_growth_past_the_first_batch(
    layer: Layer, table: FileReaderTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "BATCH", 4)
    slots = [table.claim() for _ in range(10)]
    assert [s.index for s in slots] == list(range(10))
    assert layer.size() == HEADER_SIZE + 12 * SLOT_SIZE
    for i, s in enumerate(slots):
        s.publish(DB, (i, 0))
    assert table.oldest(DB) == (0, 0) and len(table.live(DB)) == 10
    table._check()


def test_cap_raises_locked_error(
    layer: Layer, table: FileReaderTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "BATCH", 4)
    monkeypatch.setattr(readers, "MAX_SLOTS", 6)
    slots = [table.claim() for _ in range(6)]
    with pytest.raises(LockedError, match="too many concurrent readers"):
        table.claim()
    with Tables(layer, 1) as (other,), pytest.raises(LockedError):
        other.claim()
    assert layer.size() == HEADER_SIZE + 6 * SLOT_SIZE
    slots[2].release()
    assert table.claim().index == 2
    table._check()


def test_threads_share_one_table_and_race_another(layer: Layer) -> None:
    with Tables(layer, 2) as tables:

        def work(n: int) -> None:
            table = tables[n % 2]
            for i in range(50):
                slot = table.claim()
                slot.publish(DB, (n, i))
                assert (n, i) in table.live(DB)
                assert (n, i) in tables[1 - n % 2].live(DB)
                slot.release()

        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(work, n) for n in range(4)]:
                done.result()
        for t in tables:
            assert t.live(DB) == []
            t._check()


def test_header_new_damaged_and_foreign(layer: Layer) -> None:
    layer.replace(b"garbage" * 100)  # damaged, nobody holds a slot: re-initialised
    with Tables(layer, 1) as (t,):
        t._check()
        assert layer.size() == HEADER_SIZE
        slot = t.claim()
        layer.write_at(0, bytes(8))  # damage the header while a slot is held
        with pytest.raises(CorruptionError):
            layer.table()
        slot.release()
    with Tables(layer, 1) as (t,):  # no slot held now: re-initialised again
        t._check()
    layer.replace(readers._seal(readers._HEADER.pack(readers.MAGIC, 2, SLOT_SIZE)))
    with pytest.raises(UnsupportedError):
        layer.table()


def test_forget_closes_the_handle_and_touches_no_slot(layer: Layer) -> None:
    """`forget()` is for a forked child: no slot is zeroed or unlocked by it. In the one
    process here, closing the handle does release the locks (nobody else shares the
    description), so the slot's content is then a dead owner's and another table
    reclaims it."""
    with Tables(layer, 1) as (other,):
        t = layer.table()
        slot = t.claim()
        slot.publish(DB, (2, 2))
        t.forget()
        t.forget()
        assert unpack_slot(layer.slot_bytes(slot.index)) is not None  # left as it was
        with pytest.raises(ClosedError):
            t.live(DB)
        t.close()  # after forget: nothing
        assert other.live(DB) == []  # dead: reclaimed
        assert layer.slot_bytes(slot.index) == bytes(SLOT_SIZE)


def test_peek_reads_without_writing(layer: Layer) -> None:
    """The peek of a writer that is still opening: no file created, nothing reclaimed or
    trimmed, live slots counted, garbled held ones as (0, 0); the tables' locks survive
    its handle closing (on the POSIX fallback too)."""
    peek = PeekReaderTable(layer.path, layer.vfs)
    assert peek.live(DB) == [] and peek.oldest(DB) is None
    assert not layer.vfs.exists(layer.path)
    with pytest.raises(InvalidArgumentError):
        peek.claim()
    with pytest.raises(InvalidArgumentError):
        peek.live(b"short")
    with Tables(layer, 2) as (a, b):
        live, garbled = a.claim(), b.claim()
        live.publish(DB, (4, 1))
        garbled.publish(OTHER, (1, 1))
        layer.plant(garbled.index, b"\x5a" * SLOT_SIZE)
        layer.plant(9, pack_slot(SlotRecord(99999, IN_USE, DB, (0, 1), 0.0)))  # dead
        layer.write_at(layer.size(), b"\x01\x02")  # a partial slot: damage
        before = layer.read(0, 1 << 20)
        assert peek.live(DB) == [(0, 0), (4, 1)]
        assert peek.oldest(OTHER) == (0, 0)
        assert layer.read(0, 1 << 20) == before
        garbled.publish(OTHER, (1, 1))
        assert b.live(DB) == [(4, 1)]  # a's lock outlived the peek's handle: not reclaimed
        assert peek.live(OTHER) == [(1, 1)]
    peek.close()
    peek.forget()


def test_permission_error_propagates_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores file modes, so the failing open is simulated.
    path = str(tmp_path / "x.db-readers")

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError) as info:
        FileReaderTable(path)
    assert type(info.value) is PermissionError


# ---- other processes ------------------------------------------------------------------------

CHILD = """
import sys
import wal.vfs
wal.vfs._USE_OFD = sys.argv[3] == "os"
from streamdb.storage.readers import FileReaderTable
table = FileReaderTable(sys.argv[1])
slot = table.claim()
slot.publish(bytes.fromhex(sys.argv[2]), (7, 3))
print(slot.index, flush=True)
sys.stdin.read()
"""


@pytest.fixture(params=[kind for kind in LAYERS if kind != "memory"])
def os_layer(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    """The layers other processes share (an in-memory layer is one process's)."""
    yield from _layer(request.param, tmp_path, monkeypatch)


@pytest.fixture
def child(os_layer: Layer) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A reader process that claimed a slot and published (7, 3) for DB, then waits. It
    locks as this test's layer does (OFD or POSIX record locks, which conflict with each
    other on Linux)."""
    layer = os_layer
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, layer.path, DB.hex(), layer.kind],
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
    os_layer: Layer, child: tuple[subprocess.Popen[bytes], int]
) -> None:
    layer = os_layer
    proc, index = child
    with Tables(layer, 1) as (table,):
        assert table.oldest(DB) == (7, 3)
        assert table.live(OTHER) == []
        assert table.claim().index != index
        assert PeekReaderTable(layer.path, layer.vfs).live(DB) == [(7, 3)]
        assert proc.poll() is None
        table._check()


def test_killed_child_slot_is_reclaimed(
    os_layer: Layer, child: tuple[subprocess.Popen[bytes], int]
) -> None:
    layer = os_layer
    proc, index = child
    with Tables(layer, 1) as (table,):
        assert table.live(DB) == [(7, 3)]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert unpack_slot(layer.slot_bytes(index)) is not None  # still says in use...
        assert PeekReaderTable(layer.path, layer.vfs).live(DB) == []  # ...its lock is gone
        assert unpack_slot(layer.slot_bytes(index)) is not None  # (a peek reclaims nothing)
        assert table.oldest(DB) is None
        assert layer.slot_bytes(index) == bytes(SLOT_SIZE)  # reclaimed
        assert table.claim().index == index
        table._check()


# ---- the POSIX fallback's registry (wal.vfs V5) ---------------------------------------------


def test_posix_fallback_bookkeeping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal.vfs, "_USE_OFD", False)
    path = str(tmp_path / "x.db-readers")
    a = FileReaderTable(path)
    b = FileReaderTable(path)
    probe = os.open(path, os.O_RDWR)  # kept open: closing it would drop the process's locks
    try:

        def locked(index: int) -> bool:
            # OFD locks conflict with POSIX record locks, even the same process's.
            start = HEADER_SIZE + index * SLOT_SIZE
            query = wal.vfs._FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, SLOT_SIZE, 0)
            reply = fcntl.fcntl(probe, fcntl.F_OFD_GETLK, query)
            return bool(wal.vfs._FLOCK.unpack(reply)[0] != fcntl.F_UNLCK)

        sa, sb = a.claim(), b.claim()
        assert (sa.index, sb.index) == (0, 1)  # the registry makes the handles conflict
        (key, entry), = wal.vfs._POSIX.items()
        assert sorted((s, e) for s, e, _ in entry.held) == [
            (HEADER_SIZE, HEADER_SIZE + SLOT_SIZE),
            (HEADER_SIZE + SLOT_SIZE, HEADER_SIZE + 2 * SLOT_SIZE)]
        assert locked(0) and locked(1)
        sa.publish(DB, (2, 2))
        sb.publish(DB, (1, 5))
        assert a.live(DB) == b.live(DB) == [(1, 5), (2, 2)]
        # Through the probe: opening and closing the file here would drop a's and b's locks.
        dead = HEADER_SIZE + 7 * SLOT_SIZE
        os.pwrite(probe, pack_slot(SlotRecord(99999, IN_USE, DB, (0, 1), 0.0)), dead)
        assert a.oldest(DB) == (1, 5)  # the dead slot is reclaimed, the live ones kept
        assert os.pread(probe, SLOT_SIZE, dead) == bytes(SLOT_SIZE) and locked(1)
        a.close()  # releases slot 0; its descriptor is parked while b holds slot 1
        assert not locked(0) and locked(1) and len(entry.parked) == 1
        parked = entry.parked[0]
        assert b.live(DB) == [(1, 5)]
        b._check()
        b.close()
        assert key not in wal.vfs._POSIX and not locked(1)
        with pytest.raises(OSError):
            os.fstat(parked)  # closed with the last range
    finally:
        os.close(probe)


def test_open_table_picks_the_implementation(tmp_path: Path) -> None:
    db_path = str(tmp_path / "x.db")
    assert isinstance(peek_table(OsVFS(), db_path), PeekReaderTable)
    assert not os.path.exists(db_path + "-readers")
    t = open_table(OsVFS(), db_path)
    assert isinstance(t, FileReaderTable) and t.path == db_path + "-readers"
    assert os.path.exists(db_path + "-readers")
    t.close()
    readers.remove_table(OsVFS(), db_path)
    readers.remove_table(OsVFS(), db_path)  # nothing to remove: fine
    assert not os.path.exists(db_path + "-readers")
    vfs = MemoryVFS()
    a, b = open_table(vfs, "/m.db"), peek_table(vfs, "/m.db")
    other_path, other_vfs = open_table(vfs, "/n.db"), open_table(MemoryVFS(), "/m.db")
    assert isinstance(a, LocalReaderTable) and isinstance(b, LocalReaderTable)
    a.claim().publish(DB, (4, 4))
    assert b.live(DB) == [(4, 4)]  # one registry per (vfs, path)
    assert other_path.live(DB) == [] and other_vfs.live(DB) == []
    assert vfs.listdir("") == []  # no file
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


# ---- every file call failing in turn -------------------------------------------------------


def scenario(layer: Layer, vfs: VFS, published: list[Stamp], check: Callable[[], None]) -> None:
    """Open a table over `vfs`; read the oldest stamp (reclaiming a dead owner's slot 1);
    claim slot 1 and publish; claim again, which grows the file, and publish; read; release
    both and close. Another table holds slot 0, published as (7, 7). `published` holds the
    stamps whose publish returned and whose release has not begun: those a reader relies
    on. `check()` runs between steps."""
    t = FileReaderTable(layer.path, vfs)
    try:
        check()
        assert t.oldest(DB) == (7, 7)
        check()
        a = t.claim()
        check()
        a.publish(DB, (5, 1))
        published.append((5, 1))
        check()
        b = t.claim()
        b.publish(DB, (3, 2))
        published.append((3, 2))
        check()
        assert (a.index, b.index) == (1, 2)
        assert t.oldest(DB) == (3, 2)
        check()
        published.remove((5, 1))
        a.release()
        check()
        assert t.live(DB) == [(3, 2), (7, 7)]
        published.remove((3, 2))
        b.release()
        check()
        assert t.oldest(DB) == (7, 7)
    finally:
        published.clear()  # the reader gives up its slots, whether close() succeeds or not
        t.close()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
@pytest.mark.parametrize("sticky", [False, True], ids=["once", "from-then-on"])
def test_every_file_call_failing_in_turn(layer: Layer, code: int, sticky: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file call of the scenario (opening, reading the oldest stamp with a reclaim,
    claiming, growing, publishing, releasing, closing) fails in turn, once or from then on:

    - the injected OSError reaches the caller, whatever call it hit, and no answer the
      table gives before it is wrong (the scenario's assertions hold up to the error);
    - a stamp whose publish returned is seen by another table until its release begins,
      so no page it pins can be reused; the other table's own slot is never disturbed;
    - once the failing table is closed its slots are free or dead, and a fresh table sees
      only the other table's stamp and passes its checks."""
    monkeypatch.setattr(readers, "BATCH", 2)
    dead = pack_slot(SlotRecord(99999, IN_USE, DB, (0, 1), 0.0))
    with Tables(layer, 1) as (other,):
        keeper = other.claim()
        keeper.publish(DB, (7, 7))
        keeper_raw = layer.slot_bytes(keeper.index)
        published: list[Stamp] = []

        def check() -> None:
            seen = other.live(DB)
            assert all(s in seen for s in published), (seen, published)
            assert layer.slot_bytes(keeper.index) == keeper_raw

        def reset() -> None:  # the first batch: slot 0 the keeper's, slot 1 dead
            f = layer.vfs.open(layer.path)
            try:
                f.truncate(HEADER_SIZE + 2 * SLOT_SIZE)
                f.pwritev([dead], HEADER_SIZE + SLOT_SIZE)
            finally:
                f.close()

        reset()
        counting = FaultyVFS(layer.vfs)
        scenario(layer, counting, published, check)
        calls = counting.calls
        assert calls > 20, calls
        failed = set()
        for n in range(1, calls + 1):
            reset()
            faulty = FaultyVFS(layer.vfs, fail_at=n, errno=code, sticky=sticky)
            with pytest.raises(OSError) as info:
                scenario(layer, faulty, published, check)
            assert faulty.failed and info.value.errno == code, (n, info.value)
            failed.add(faulty.failed[0])
            check()
            with Tables(layer, 1) as (fresh,):
                assert fresh.live(DB) == [(7, 7)], (n, faulty.failed)
                fresh._check()
        other._check()
    # Every kind of call the table makes failed at least once.
    assert failed == {"open", "lock_range", "unlock_range", "range_locked", "pread",
                      "pwritev", "size", "truncate"}, failed


def test_a_header_with_reserved_bytes_set_is_damage_and_reinitialised(tmp_path: Path) -> None:
    """A checksummed header whose reserved bytes are not zero (a fuzzer finding: it was
    taken as valid, and `_check` failed on it) is damage: with no reader live, the table
    starts over with a clean header."""
    body = bytearray(readers.pack_header()[:56])
    body[46] = 0x10
    path = tmp_path / "t.db-readers"
    path.write_bytes(readers._seal(bytes(body)))
    table = readers.FileReaderTable(str(path))
    try:
        table._check()
        assert path.read_bytes()[: readers.HEADER_SIZE] == readers.pack_header()
    finally:
        table.close()
