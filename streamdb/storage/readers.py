"""The reader table: which database states live reader processes may still read.

One writer process reuses freed pages; reader processes (and readers in the writer's own
process) may still be reading an older state. Each reader claims a slot in `NAME-readers` and
publishes the oldest *stamp* `(generation, lsn)` of the state it may still read; the writer
asks `oldest(db_id)` and reuses no page freed after it (docs/design.md, invariant 7). The
byte layout is in docs/format/readers.md; the rules:

1. A slot is live while its 64-byte range holds an exclusive range lock (`wal.vfs` rule V4).
   The lock belongs to the table object's own handle of the file, so it conflicts between
   two table objects in one process, survives other handles of the file closing, and
   vanishes when the process dies (real files: OFD locks on Linux, POSIX record locks with
   the file layer's per-process registry elsewhere, V5).
2. The lock is taken before the slot is written and released after it is zeroed, so a slot's
   content is only ever written by its lock holder (or by a reclaimer holding the lock).
3. A claimed slot starts with db_id zeros and stamp (0, 0): it pins nothing until it
   publishes. `publish()` is one 64-byte pwrite with an XXH3-64 over the first 56 bytes.
4. In-use content under a free lock is a dead owner's: `oldest()` reclaims it (takes the lock,
   zeroes the slot if it is unchanged, unlocks). Content that fails its checksum under a held
   lock is being written: re-read a few times, then count it as (0, 0), which pins everything.
5. A reader publishes the stamp of the state it is about to read, then confirms that state is
   still current before reading a page (and publishes again if not). A concurrent `oldest()`
   may miss a publish in flight; the confirmation makes that harmless.
6. The file grows by `BATCH` slots under an exclusive lock on the header's range, up to
   `MAX_SLOTS`; beyond that `claim()` raises `LockedError`.

`FileReaderTable` makes every file call through a `wal.vfs` layer (open, pread, pwritev,
size, truncate and the range locks), so it runs on the OS's files, shared by processes, on
an in-memory layer, whose range locks are in-process, and under the fault injector. The
database uses it on the OS's files; on a layer no other process sees, `open_table` gives a
`LocalReaderTable`: the same API over Python objects, no file.

A forked child must not use its parent's table objects (the database forgets them in the
child: `forget()` closes the handle, which releases nothing the parent holds, V6).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Protocol

import xxhash

from streamdb.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    LockedError,
    UnsupportedError,
)
from wal.vfs import VFS, OsVFS, VFile

Stamp = tuple[int, int]

MAGIC = b"\x89SDR\r\n\x1a\n"
VERSION = 1
HEADER_SIZE = 64
SLOT_SIZE = 64
DB_ID_SIZE = 16
IN_USE = 1  # slot flags bit 0
BATCH = 64  # slots added per growth
MAX_SLOTS = 4096  # slots past this are never claimed nor read
REREADS = 3  # re-reads of a slot that fails its checksum under a held lock

_HEADER = struct.Struct("<8sHH44x")  # magic, version, slot size, reserved; then XXH3-64
_SLOT = struct.Struct("<II16sQQd8x")  # pid, flags, db_id, lsn, generation, time; then XXH3-64
assert _HEADER.size == _SLOT.size == 56
_ZERO_ID = bytes(DB_ID_SIZE)
_ZERO_SLOT = bytes(SLOT_SIZE)
_U64 = 1 << 64


class ReaderSlot(Protocol):
    """One reader's slot: `publish()` the oldest stamp it may still read, `release()` when done."""

    index: int

    def publish(self, db_id: bytes, stamp: Stamp) -> None: ...

    def release(self) -> None: ...


class ReaderTable(Protocol):
    """The slots of one database file's readers (FileReaderTable, LocalReaderTable,
    PeekReaderTable)."""

    def claim(self) -> ReaderSlot: ...

    def oldest(self, db_id: bytes) -> Stamp | None: ...

    def live(self, db_id: bytes) -> list[Stamp]: ...

    def close(self) -> None: ...

    def forget(self) -> None: ...


# ---- codec -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """One decoded slot."""

    pid: int
    flags: int
    db_id: bytes
    stamp: Stamp
    published: float  # time.time() of the last write

    @property
    def in_use(self) -> bool:
        return bool(self.flags & IN_USE)


def _seal(body: bytes) -> bytes:
    return body + xxhash.xxh3_64_intdigest(body).to_bytes(8, "little")


def _verified(raw: bytes) -> bytes | None:
    """The 56-byte body of a 64-byte record if its checksum matches, else None."""
    body = raw[:56]
    ok = len(raw) == 64 and xxhash.xxh3_64_intdigest(body) == int.from_bytes(raw[56:], "little")
    return body if ok else None


def pack_header() -> bytes:
    """The 64-byte file header of this format version."""
    return _seal(_HEADER.pack(MAGIC, VERSION, SLOT_SIZE))


def pack_slot(record: SlotRecord) -> bytes:
    """64 bytes. O(1). Raises struct.error for fields out of range."""
    generation, lsn = record.stamp
    return _seal(_SLOT.pack(record.pid, record.flags, record.db_id, lsn, generation,
                            record.published))


def unpack_slot(raw: bytes) -> SlotRecord | None:
    """The record in 64 bytes, or None if its checksum does not match. O(1)."""
    body = _verified(raw)
    if body is None:
        return None
    pid, flags, db_id, lsn, generation, published = _SLOT.unpack(body)
    return SlotRecord(pid, flags, db_id, (generation, lsn), published)


def _check_db_id(db_id: bytes) -> None:
    if len(db_id) != DB_ID_SIZE or db_id == _ZERO_ID:
        raise InvalidArgumentError(f"a database id is {DB_ID_SIZE} bytes, not all zero")


def _check_stamp(stamp: Stamp) -> None:
    if len(stamp) != 2 or not all(isinstance(v, int) and 0 <= v < _U64 for v in stamp):
        raise InvalidArgumentError(f"a stamp is two integers in [0, 2**64): {stamp!r}")


def _span(index: int) -> tuple[int, int]:
    return HEADER_SIZE + index * SLOT_SIZE, SLOT_SIZE


# ---- the table ---------------------------------------------------------------------------


class _Slot:
    """A claimed slot; its table does the work."""

    def __init__(self, table: FileReaderTable | LocalReaderTable, index: int) -> None:
        self.index = index
        self._table = table

    def publish(self, db_id: bytes, stamp: Stamp) -> None:
        """Publish the oldest state this reader may still read. O(1): one pwrite (file
        table). Raises
        InvalidArgumentError for a bad id or stamp, ClosedError once released, OSError from
        the write."""
        self._table._publish(self, db_id, stamp)

    def release(self) -> None:
        """Zero the slot (one pwrite), then unlock it. Idempotent. Raises OSError (the slot
        is this object's no more, whatever failed: its lock goes at the latest when the
        table closes)."""
        self._table._release(self)

    def __repr__(self) -> str:
        return f"<reader slot {self.index}>"


class FileReaderTable:
    """The reader table in the file `path` (`NAME-readers`) of the file layer `vfs` (the
    OS's by default), shared by every table object on that file: other processes' on real
    files, this process's on an in-memory layer.

    The object opens its own handle of the file (created if missing, with the layer's mode:
    0o666 less the umask on real files, so every user who may read the database can claim
    a slot); its slots' range locks belong to that handle. Opening initialises the header
    under an exclusive lock on the header's range; a damaged header is re-initialised when
    no slot lock is held (its content died with its processes). Raises PermissionError
    unchanged when the file cannot be created or opened read-write, other OSError as is,
    UnsupportedError for another format version, CorruptionError for a damaged header while
    slots are held.

    Thread-safe (one lock per object). Not fork-safe (`forget()`)."""

    def __init__(self, path: str, vfs: VFS | None = None) -> None:
        self.path = path
        self._file: VFile = (vfs if vfs is not None else OsVFS()).open(path, create=True)
        self._lock = threading.Lock()
        self._mine: dict[int, _Slot] = {}
        self._closed = False
        try:
            with self._lock:
                self._prepare()
        except BaseException:
            self._file.close()
            raise

    def _prepare(self) -> None:
        f = self._file
        f.lock_range(0, HEADER_SIZE, wait=True)
        try:
            body = _verified(f.pread(HEADER_SIZE, 0))
            if body is not None and body[:8] == MAGIC:
                _, version, slot_size = _HEADER.unpack(body)
                if (version, slot_size) != (VERSION, SLOT_SIZE):
                    raise UnsupportedError(f"reader table {self.path}: format version "
                                           f"{version}, slot size {slot_size}")
                if body == pack_header()[:56]:  # reserved bytes not zero: damage, below
                    # Bytes past the last whole slot (damage: growth is one truncate)
                    # belong to no slot and no lock: drop them.
                    size = f.size()
                    if (size - HEADER_SIZE) % SLOT_SIZE:
                        f.truncate(size - (size - HEADER_SIZE) % SLOT_SIZE)
                    return
            # This object holds no slot yet: any slot lock is another holder's.
            if f.range_locked(HEADER_SIZE, 0):
                raise CorruptionError("the reader table header is damaged while readers are "
                                      "live", path=self.path)
            # New, or damaged with every owner gone: start over.
            f.truncate(0)
            f.pwritev([pack_header()], 0)
        finally:
            f.unlock_range(0, HEADER_SIZE)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the reader table {self.path} is closed")

    def _slot_count(self) -> int:
        return min(max(self._file.size() - HEADER_SIZE, 0) // SLOT_SIZE, MAX_SLOTS)

    def _write(self, index: int, raw: bytes) -> None:
        self._file.pwritev([raw], _span(index)[0])

    def claim(self) -> _Slot:
        """A slot owned by this object until released, written as in use with db_id zeros
        and stamp (0, 0). O(slots) lock attempts (usually few); may grow the file by BATCH
        slots. Raises LockedError past MAX_SLOTS, ClosedError, OSError."""
        with self._lock:
            self._check_open()
            f = self._file
            while True:
                count = self._slot_count()
                for index in range(count):
                    # A dead owner's content is overwritten below.
                    if index not in self._mine and f.lock_range(*_span(index)):
                        return self._take(index)
                self._grow(count)

    def _take(self, index: int) -> _Slot:
        slot = self._mine[index] = _Slot(self, index)
        record = SlotRecord(os.getpid(), IN_USE, _ZERO_ID, (0, 0), time.time())
        try:
            self._write(index, pack_slot(record))
        except BaseException:
            self._drop(index)
            raise
        return slot

    def _grow(self, count: int) -> None:
        f = self._file
        f.lock_range(0, HEADER_SIZE, wait=True)  # growth is short: waiting is fine
        try:
            if self._slot_count() > count:
                return  # another table grew it: claim scans again
            if count >= MAX_SLOTS:
                raise LockedError(f"too many concurrent readers ({MAX_SLOTS} slots in use) in "
                                  f"{self.path}")
            f.truncate(HEADER_SIZE + min(count + BATCH, MAX_SLOTS) * SLOT_SIZE)
        finally:
            f.unlock_range(0, HEADER_SIZE)

    def _publish(self, slot: _Slot, db_id: bytes, stamp: Stamp) -> None:
        _check_db_id(db_id)
        _check_stamp(stamp)
        raw = pack_slot(SlotRecord(os.getpid(), IN_USE, db_id, stamp, time.time()))
        with self._lock:
            if self._mine.get(slot.index) is not slot:
                raise ClosedError(f"reader slot {slot.index} was released")
            self._write(slot.index, raw)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            if self._mine.get(slot.index) is slot:
                self._drop(slot.index)

    def _drop(self, index: int) -> None:
        # Zero before unlocking: once unlocked, a new owner may write the slot. If the
        # zeroing fails the slot is unlocked all the same: its content is then a dead
        # owner's, which the next table read reclaims.
        del self._mine[index]
        try:
            self._write(index, _ZERO_SLOT)
        finally:
            self._file.unlock_range(*_span(index))

    def oldest(self, db_id: bytes) -> Stamp | None:
        """The oldest stamp live readers publish for `db_id`, or None. Reclaims dead owners'
        slots. O(slots): one pread, one lock test per in-use slot of another owner. Raises
        InvalidArgumentError, ClosedError, OSError."""
        return min(self.live(db_id), default=None)

    def live(self, db_id: bytes) -> list[Stamp]:
        """Every live stamp for `db_id`, sorted; an unreadable live slot counts as (0, 0).
        Same cost, effects and errors as `oldest()`."""
        _check_db_id(db_id)
        with self._lock:
            self._check_open()
            f = self._file
            table = f.pread(HEADER_SIZE + MAX_SLOTS * SLOT_SIZE, 0)
            stamps: list[Stamp] = []
            for index in range(max(len(table) - HEADER_SIZE, 0) // SLOT_SIZE):
                start = _span(index)[0]
                raw = table[start : start + SLOT_SIZE]
                if raw == _ZERO_SLOT:
                    continue
                record = unpack_slot(raw)
                if record is not None and not record.in_use:
                    continue
                # Our own slots need no test: a lock never conflicts with its own holder.
                if index not in self._mine:
                    if not f.range_locked(*_span(index)):
                        self._reclaim(index, raw)
                        continue
                    if record is None:
                        record = self._reread(index)
                if record is None:
                    stamps.append((0, 0))  # unreadable: pin everything
                elif record.in_use and record.db_id == db_id:
                    stamps.append(record.stamp)
            return sorted(stamps)

    def _reread(self, index: int) -> SlotRecord | None:
        """A slot that failed its checksum under a held lock: probably being written."""
        for _ in range(REREADS):
            time.sleep(0)  # let the owner finish its pwrite
            record = unpack_slot(self._file.pread(SLOT_SIZE, _span(index)[0]))
            if record is not None:
                return record
        return None

    def _reclaim(self, index: int, stale: bytes) -> None:
        """Zero a dead owner's slot if it still holds `stale` (it may have been claimed or
        reclaimed since it was read)."""
        f = self._file
        if not f.lock_range(*_span(index)):
            return  # claimed meanwhile: its new owner is live
        try:
            if f.pread(SLOT_SIZE, _span(index)[0]) == stale:
                self._write(index, _ZERO_SLOT)
        finally:
            f.unlock_range(*_span(index))

    def close(self) -> None:
        """Release every slot this object claimed and close its handle. Idempotent. Raises
        OSError (after releasing and closing all it can: the handle's close releases every
        lock still held)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.ExitStack() as stack:
                stack.callback(self._file.close)  # runs last
                for index in list(self._mine):
                    stack.callback(self._drop, index)

    def forget(self) -> None:
        """In a forked child: close the handle without touching a slot. The slots' locks
        are the parent's (wal.vfs V6): closing the child's handle releases none of them,
        zeroing or unlocking a slot here would. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._mine.clear()
                with contextlib.suppress(OSError):  # only a handle: nothing to lose
                    self._file.close()

    def _check(self) -> None:
        """Assert the header is valid, every non-zero slot verifies and this object's own
        slots are in use under its pid. O(slots)."""
        with self._lock:
            self._check_open()
            table = self._file.pread(HEADER_SIZE + MAX_SLOTS * SLOT_SIZE, 0)
            assert table[:HEADER_SIZE] == pack_header(), "reader table header"
            assert (len(table) - HEADER_SIZE) % SLOT_SIZE == 0, "partial slot"
            for index in range((len(table) - HEADER_SIZE) // SLOT_SIZE):
                start = _span(index)[0]
                raw = table[start : start + SLOT_SIZE]
                record = unpack_slot(raw)
                assert raw == _ZERO_SLOT or record is not None, f"slot {index} checksum"
                if index in self._mine:
                    assert record is not None and record.in_use, f"own slot {index} not in use"
                    assert record.pid == os.getpid(), f"own slot {index} pid"


# ---- the in-memory table -----------------------------------------------------------------


class _LocalShared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamps: dict[int, tuple[bytes, Stamp]] = {}
        self.next = 0


class LocalReaderTable:
    """The reader table API for the database on a file layer other than the OS's: slots are
    Python objects in a registry shared by every table over one VFS and path, no file. One
    process, so no slot is ever stale; release removes it. Thread-safe; O(1) except
    live/oldest O(slots); no I/O, so it never raises OSError."""

    def __init__(self, shared: _LocalShared) -> None:
        self._shared = shared
        self._mine: dict[int, _Slot] = {}
        self._closed = False

    def claim(self) -> _Slot:
        with self._shared.lock:
            if self._closed:
                raise ClosedError("the reader table is closed")
            index, self._shared.next = self._shared.next, self._shared.next + 1
            self._shared.stamps[index] = (_ZERO_ID, (0, 0))
            slot = self._mine[index] = _Slot(self, index)
            return slot

    def _publish(self, slot: _Slot, db_id: bytes, stamp: Stamp) -> None:
        _check_db_id(db_id)
        _check_stamp(stamp)
        with self._shared.lock:
            if self._mine.get(slot.index) is not slot:
                raise ClosedError(f"reader slot {slot.index} was released")
            self._shared.stamps[slot.index] = (db_id, stamp)

    def _release(self, slot: _Slot) -> None:
        with self._shared.lock:
            if self._mine.pop(slot.index, None) is slot:
                del self._shared.stamps[slot.index]

    def oldest(self, db_id: bytes) -> Stamp | None:
        return min(self.live(db_id), default=None)

    def live(self, db_id: bytes) -> list[Stamp]:
        _check_db_id(db_id)
        with self._shared.lock:
            if self._closed:
                raise ClosedError("the reader table is closed")
            return sorted(s for d, s in self._shared.stamps.values() if d == db_id)

    def close(self) -> None:
        with self._shared.lock:
            for index in self._mine:
                del self._shared.stamps[index]
            self._mine.clear()
            self._closed = True

    def forget(self) -> None:
        """In a forked child: stop using the table (the child's copy of it is private)."""
        self._closed = True


_LOCAL_TABLES: dict[tuple[int, str], _LocalShared] = {}
_LOCAL_LOCK = threading.Lock()


class PeekReaderTable:
    """The reader table as a writer that is still opening sees it: `live()` and `oldest()`
    read the file without creating, writing, trimming or reclaiming anything, so an open
    that then fails leaves `NAME-readers` as it was (or absent). The writer opens the real
    table (`open_table`) once its open has succeeded.

    A missing file means no reader: every reader creates it before publishing. A slot whose
    lock no one holds is a dead owner's and counts for nothing (the real table reclaims it
    later); a slot failing its checksum under a held lock counts as (0, 0). Lock tests are
    `VFile.range_locked` (on the POSIX fallback a test briefly takes a free slot's lock,
    wal.vfs V5: an attempt to claim it at that instant moves on to the next slot)."""

    def __init__(self, path: str, vfs: VFS | None = None) -> None:
        self.path = path
        self._vfs: VFS = vfs if vfs is not None else OsVFS()

    def claim(self) -> ReaderSlot:
        raise InvalidArgumentError("a peek at the reader table cannot claim a slot")

    def oldest(self, db_id: bytes) -> Stamp | None:
        return min(self.live(db_id), default=None)

    def live(self, db_id: bytes) -> list[Stamp]:
        """Every live stamp for `db_id`, sorted. O(slots): one open (read-write: the lock
        tests of the POSIX fallback need it), one pread, one lock test per in-use slot, one
        close. Raises InvalidArgumentError for a bad id, OSError."""
        _check_db_id(db_id)
        try:
            file = self._vfs.open(self.path)
        except FileNotFoundError:
            return []
        try:
            table = file.pread(HEADER_SIZE + MAX_SLOTS * SLOT_SIZE, 0)
            stamps: list[Stamp] = []
            for index in range(max(len(table) - HEADER_SIZE, 0) // SLOT_SIZE):
                start = _span(index)[0]
                raw = table[start : start + SLOT_SIZE]
                if raw == _ZERO_SLOT or not file.range_locked(*_span(index)):
                    continue
                record = unpack_slot(raw)
                if record is None:
                    stamps.append((0, 0))
                elif record.in_use and record.db_id == db_id:
                    stamps.append(record.stamp)
            return sorted(stamps)
        finally:
            file.close()

    def close(self) -> None:
        """Nothing to release: the peek holds no handle between calls."""

    def forget(self) -> None:
        """Nothing to forget."""


def peek_table(vfs: VFS, db_path: str) -> ReaderTable:
    """What a writer that is still opening reads the reader table with: a `PeekReaderTable`
    (no I/O until asked) when `open_table` would give a file table, else `open_table`'s
    table (an in-memory one writes no file). Raises as `open_table`."""
    if isinstance(vfs, OsVFS):
        return PeekReaderTable(db_path + "-readers", vfs)
    return open_table(vfs, db_path)


def open_table(vfs: VFS, db_path: str) -> ReaderTable:
    """The reader table of the database at `db_path`.

    On the OS's files (`vfs` an OsVFS), which other processes may open too: a
    FileReaderTable on `db_path + "-readers"`, created with the layer's mode. On any other
    layer, private to this process: a LocalReaderTable from a process-wide registry keyed
    by (id(vfs), db_path), so several Database objects over one in-memory VFS share it.
    It keeps the database's file calls on such a layer (which tests count, sweep with
    faults and compare after a failed open) to its own files. `FileReaderTable(path, vfs)`
    runs on any layer; the tests run it on the in-memory and fault-injecting ones.
    Raises as FileReaderTable does."""
    if isinstance(vfs, OsVFS):
        return FileReaderTable(db_path + "-readers", vfs)
    key = (id(vfs), db_path)
    with _LOCAL_LOCK:
        shared = _LOCAL_TABLES.get(key)
        if shared is None:
            shared = _LOCAL_TABLES[key] = _LocalShared()
            # id(vfs) is reused once vfs is gone: forget its tables with it. A VFS without
            # weak references keeps its entry for the life of the process.
            with contextlib.suppress(TypeError):
                weakref.finalize(vfs, _LOCAL_TABLES.pop, key, None)
    return LocalReaderTable(shared)


def remove_table(vfs: VFS, db_path: str) -> None:
    """Delete the reader table of a database nobody has open (a scratch database's).
    Raises OSError (not FileNotFoundError: nothing to delete is fine)."""
    if isinstance(vfs, OsVFS):
        with contextlib.suppress(FileNotFoundError):
            vfs.remove(db_path + "-readers")
    else:
        with _LOCAL_LOCK:
            _LOCAL_TABLES.pop((id(vfs), db_path), None)
