"""The reader table: which database states live reader processes may still read.

One writer process reuses freed pages; reader processes (and readers in the writer's own
process) may still be reading an older state. Each reader claims a slot in `NAME-readers` and
publishes the oldest *stamp* `(generation, lsn)` of the state it may still read; the writer
asks `oldest(db_id)` and reuses no page freed after it (docs/design.md, invariant 7). The
byte layout is in docs/format/readers.md; the rules:

1. A slot is live while its 64-byte range holds an exclusive lock. Linux: an open-file-
   description lock (F_OFD_SETLK), so it survives other descriptors of the file closing,
   conflicts between two table objects in one process, and vanishes when the process dies.
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

Without F_OFD_SETLK (non-Linux) POSIX record locks are used instead. They belong to the
process and vanish when *any* descriptor of the file closes, so the process opens the file
once (a registry keyed by (st_dev, st_ino), reference-counted) and remembers which slots it
holds, since its own locks never conflict with each other.

A forked child must not use its parent's table objects (the database forgets its descriptors
in the child): OFD locks would be shared with the parent, POSIX locks are not inherited.

`LocalReaderTable` is the same API for in-memory file layers: one process, no staleness.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import threading
import time
import weakref
from abc import ABC, abstractmethod
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
from wal.vfs import VFS, OsVFS

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
# struct flock on Linux x86-64 and arm64: l_type, l_whence, l_start, l_len, l_pid (+ padding).
_FLOCK = struct.Struct("hhqqi4x")
assert _HEADER.size == _SLOT.size == 56
_USE_OFD = hasattr(fcntl, "F_OFD_SETLK")
_ZERO_ID = bytes(DB_ID_SIZE)
_ZERO_SLOT = bytes(SLOT_SIZE)
_U64 = 1 << 64


class ReaderSlot(Protocol):
    """One reader's slot: `publish()` the oldest stamp it may still read, `release()` when done."""

    index: int

    def publish(self, db_id: bytes, stamp: Stamp) -> None: ...

    def release(self) -> None: ...


class ReaderTable(Protocol):
    """The slots of one database file's readers (FileReaderTable, LocalReaderTable)."""

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


# ---- locks -------------------------------------------------------------------------------


class _LockFile(ABC):
    """A descriptor of the table file and the byte-range locks taken through it.

    `lock` guards every use of the descriptor by table objects; `claimed` holds the slots
    whose locks are held through this object (the OFD path: one table's; the POSIX path:
    the whole process's)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.claimed: set[int] = set()

    def try_lock(self, start: int, length: int) -> bool:
        """Take an exclusive lock without waiting; False if another holder has it."""
        try:
            self._set(False, start, length)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    @abstractmethod
    def _set(self, wait: bool, start: int, length: int) -> None:
        """Take an exclusive lock on the range, waiting for it if `wait`."""

    def wait_lock(self, start: int, length: int) -> None:
        self._set(True, start, length)

    @abstractmethod
    def unlock(self, start: int, length: int) -> None:
        """Release our lock on the range."""

    @abstractmethod
    def held(self, start: int, length: int) -> bool:
        """Whether another holder locks any of the range (never ask about our own locks)."""

    def close(self) -> None:
        os.close(self.fd)


def _open_fd(path: str, mode: int = 0o666) -> int:
    # Created `mode` & ~umask (0o666 by default): every user who may read the database must
    # be able to claim a slot.
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), mode)


class _OfdFile(_LockFile):
    """A descriptor of one table object, with open-file-description locks (Linux)."""

    def _fcntl(self, cmd: int, kind: int, start: int, length: int) -> bytes:
        # l_pid must be 0 for OFD locks.
        return fcntl.fcntl(self.fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))

    def _set(self, wait: bool, start: int, length: int) -> None:
        self._fcntl(fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, fcntl.F_WRLCK, start,
                    length)

    def unlock(self, start: int, length: int) -> None:
        self._fcntl(fcntl.F_OFD_SETLK, fcntl.F_UNLCK, start, length)

    def held(self, start: int, length: int) -> bool:
        reply = self._fcntl(fcntl.F_OFD_GETLK, fcntl.F_WRLCK, start, length)
        return bool(_FLOCK.unpack(reply)[0] != fcntl.F_UNLCK)


class _PosixFile(_LockFile):
    """The fallback: the process's one descriptor of a table file, with POSIX record locks.

    Closing any descriptor of the file would drop every lock the process holds on it, so
    table objects share this one (reference-counted in `_POSIX_FILES`)."""

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        super().__init__(fd)
        self.key = key
        self.refs = 0
        self.spare: list[int] = []  # descriptors that must stay open until this one closes

    def _set(self, wait: bool, start: int, length: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB, length,
                    start)

    def unlock(self, start: int, length: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, length, start)

    def held(self, start: int, length: int) -> bool:
        # F_GETLK's struct flock differs between platforms; trying the lock needs no layout.
        if not self.try_lock(start, length):
            return True
        self.unlock(start, length)
        return False

    def close(self) -> None:
        with _POSIX_LOCK:
            self.refs -= 1
            if self.refs:
                return
            del _POSIX_FILES[self.key]
        for fd in [self.fd, *self.spare]:
            os.close(fd)


_POSIX_FILES: dict[tuple[int, int], _PosixFile] = {}
_POSIX_LOCK = threading.Lock()


def _posix_file(path: str, mode: int = 0o666) -> _PosixFile:
    """The process's shared descriptor of `path`, opened (and created) if needed."""
    with _POSIX_LOCK:
        with contextlib.suppress(FileNotFoundError):  # absent: created below
            st = os.stat(path)
            shared = _POSIX_FILES.get((st.st_dev, st.st_ino))
            if shared is not None:
                shared.refs += 1
                return shared
        fd = _open_fd(path, mode)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        shared = _POSIX_FILES.get(key)
        if shared is None:
            shared = _POSIX_FILES[key] = _PosixFile(fd, key)
        else:  # it appeared since the stat; closing fd now would drop the process's locks
            shared.spare.append(fd)
        shared.refs += 1
        return shared


# ---- the file table ----------------------------------------------------------------------


class _Slot:
    """A claimed slot; its table does the work."""

    def __init__(self, table: FileReaderTable | LocalReaderTable, index: int) -> None:
        self.index = index
        self._table = table

    def publish(self, db_id: bytes, stamp: Stamp) -> None:
        """Publish the oldest state this reader may still read. O(1): one pwrite (file
        table). Raises InvalidArgumentError for a bad id or stamp, ClosedError once
        released, OSError from the write."""
        self._table._publish(self, db_id, stamp)

    def release(self) -> None:
        """Zero the slot (one pwrite), then unlock it. Idempotent. Raises OSError."""
        self._table._release(self)

    def __repr__(self) -> str:
        return f"<reader slot {self.index}>"


class FileReaderTable:
    """The reader table in the file `path` (`NAME-readers`), shared by every process.

    Opening creates the file if missing and initialises its header under an exclusive lock
    on the header's range; a damaged header is re-initialised when no slot lock is held (its
    content died with its processes). Raises PermissionError unchanged when the file cannot
    be created or opened read-write, other OSError as is, UnsupportedError for another
    format version, CorruptionError for a damaged header while slots are held.

    Thread-safe (one lock per object; per process on the POSIX fallback). Not fork-safe."""

    def __init__(self, path: str, mode: int = 0o666) -> None:
        self.path = path
        self._file: _LockFile = (_OfdFile(_open_fd(path, mode)) if _USE_OFD
                                 else _posix_file(path, mode))
        self._lock = self._file.lock
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
        f.wait_lock(0, HEADER_SIZE)
        try:
            body = _verified(os.pread(f.fd, HEADER_SIZE, 0))
            if body is not None and body[:8] == MAGIC:
                _, version, slot_size = _HEADER.unpack(body)
                if (version, slot_size) == (VERSION, SLOT_SIZE):
                    # Bytes past the last whole slot (damage: growth is one ftruncate)
                    # belong to no slot and no lock: drop them.
                    size = os.fstat(f.fd).st_size
                    if (size - HEADER_SIZE) % SLOT_SIZE:
                        os.ftruncate(f.fd, size - (size - HEADER_SIZE) % SLOT_SIZE)
                    return
                raise UnsupportedError(
                    f"reader table {self.path}: format version {version}, slot size {slot_size}"
                )
            if f.claimed or f.held(HEADER_SIZE, 0):
                raise CorruptionError("the reader table header is damaged while readers are "
                                      "live", path=self.path)
            # New, or damaged with every owner gone: start over.
            os.ftruncate(f.fd, 0)
            os.pwrite(f.fd, pack_header(), 0)
        finally:
            f.unlock(0, HEADER_SIZE)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the reader table {self.path} is closed")

    def _slot_count(self) -> int:
        return min(max(os.fstat(self._file.fd).st_size - HEADER_SIZE, 0) // SLOT_SIZE, MAX_SLOTS)

    def _write(self, index: int, raw: bytes) -> None:
        if os.pwrite(self._file.fd, raw, _span(index)[0]) != SLOT_SIZE:
            raise OSError(errno.EIO, f"short write to the reader table {self.path}")

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
                    if index not in f.claimed and f.try_lock(*_span(index)):
                        return self._take(index)
                self._grow(count)

    def _take(self, index: int) -> _Slot:
        slot = self._mine[index] = _Slot(self, index)
        self._file.claimed.add(index)
        record = SlotRecord(os.getpid(), IN_USE, _ZERO_ID, (0, 0), time.time())
        try:
            self._write(index, pack_slot(record))
        except BaseException:
            self._drop(index)
            raise
        return slot

    def _grow(self, count: int) -> None:
        f = self._file
        f.wait_lock(0, HEADER_SIZE)  # growth is short: waiting is fine
        try:
            if self._slot_count() > count:
                return  # another table grew it: claim scans again
            if count >= MAX_SLOTS:
                raise LockedError(f"too many concurrent readers ({MAX_SLOTS} slots in use) in "
                                  f"{self.path}")
            os.ftruncate(f.fd, HEADER_SIZE + min(count + BATCH, MAX_SLOTS) * SLOT_SIZE)
        finally:
            f.unlock(0, HEADER_SIZE)

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
        # Zero before unlocking: once unlocked, a new owner may write the slot.
        try:
            self._write(index, _ZERO_SLOT)
        finally:
            del self._mine[index]
            self._file.claimed.discard(index)
            self._file.unlock(*_span(index))

    def oldest(self, db_id: bytes) -> Stamp | None:
        """The oldest stamp live readers publish for `db_id`, or None. Reclaims dead owners'
        slots. O(slots): one pread, one fcntl per in-use slot. Raises InvalidArgumentError,
        ClosedError, OSError."""
        return min(self.live(db_id), default=None)

    def live(self, db_id: bytes) -> list[Stamp]:
        """Every live stamp for `db_id`, sorted; an unreadable live slot counts as (0, 0).
        Same cost, effects and errors as `oldest()`."""
        _check_db_id(db_id)
        with self._lock:
            self._check_open()
            f = self._file
            table = os.pread(f.fd, HEADER_SIZE + MAX_SLOTS * SLOT_SIZE, 0)
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
                if index not in f.claimed:
                    if not f.held(*_span(index)):
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
            record = unpack_slot(os.pread(self._file.fd, SLOT_SIZE, _span(index)[0]))
            if record is not None:
                return record
        return None

    def _reclaim(self, index: int, stale: bytes) -> None:
        """Zero a dead owner's slot if it still holds `stale` (it may have been claimed or
        reclaimed since it was read)."""
        f = self._file
        if not f.try_lock(*_span(index)):
            return  # claimed meanwhile: its new owner is live
        try:
            if os.pread(f.fd, SLOT_SIZE, _span(index)[0]) == stale:
                self._write(index, _ZERO_SLOT)
        finally:
            f.unlock(*_span(index))

    def close(self) -> None:
        """Release every slot this object claimed and close the descriptor. Idempotent.
        Raises OSError (after releasing and closing all it can)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.ExitStack() as stack:
                stack.callback(self._file.close)  # runs last
                for index in list(self._mine):
                    stack.callback(self._drop, index)

    def forget(self) -> None:
        """In a forked child: close the descriptor without touching a slot. The slots'
        locks belong to the open file description the parent still holds, so they stay
        held; releasing them here would drop the parent's. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._mine.clear()
                with contextlib.suppress(OSError):  # only a descriptor: nothing to lose
                    os.close(self._file.fd)

    def _check(self) -> None:
        """Assert the header is valid, every non-zero slot verifies and this object's own
        slots are in use under its pid. O(slots)."""
        with self._lock:
            self._check_open()
            table = os.pread(self._file.fd, HEADER_SIZE + MAX_SLOTS * SLOT_SIZE, 0)
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
            assert set(self._mine) <= self._file.claimed


# ---- the in-memory table -----------------------------------------------------------------


class _LocalShared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamps: dict[int, tuple[bytes, Stamp]] = {}
        self.next = 0


class LocalReaderTable:
    """The reader table API for an in-memory file layer: slots are Python objects in a
    registry shared by every table over one VFS and path. One process, so no slot is ever
    stale; release removes it. Thread-safe; O(1) except live/oldest O(slots)."""

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
    read the file without creating, locking, trimming or reclaiming anything, so an open
    that then fails leaves `NAME-readers` as it was (or absent). The writer opens the real
    table (`open_table`) once its open has succeeded.

    A missing file means no reader: every reader creates it before publishing. A slot whose
    lock no one holds is a dead owner's and counts for nothing (the real table reclaims it
    later); a slot failing its checksum under a held lock counts as (0, 0). Linux only (it
    tests locks with F_OFD_GETLK, which needs no write access); `peek_table` falls back to
    the real table elsewhere."""

    def __init__(self, path: str) -> None:
        self.path = path

    def claim(self) -> ReaderSlot:
        raise InvalidArgumentError("a peek at the reader table cannot claim a slot")

    def oldest(self, db_id: bytes) -> Stamp | None:
        return min(self.live(db_id), default=None)

    def live(self, db_id: bytes) -> list[Stamp]:
        """Every live stamp for `db_id`, sorted. O(slots): one open, one pread, one fcntl
        per in-use slot. Raises InvalidArgumentError for a bad id, OSError."""
        _check_db_id(db_id)
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return []
        try:
            file = _OfdFile(fd)
            table = os.pread(fd, HEADER_SIZE + MAX_SLOTS * SLOT_SIZE, 0)
            stamps: list[Stamp] = []
            for index in range(max(len(table) - HEADER_SIZE, 0) // SLOT_SIZE):
                start = _span(index)[0]
                raw = table[start : start + SLOT_SIZE]
                if raw == _ZERO_SLOT or not file.held(*_span(index)):
                    continue
                record = unpack_slot(raw)
                if record is None:
                    stamps.append((0, 0))
                elif record.in_use and record.db_id == db_id:
                    stamps.append(record.stamp)
            return sorted(stamps)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing to release: the peek holds no descriptor between calls."""

    def forget(self) -> None:
        """Nothing to forget."""


def peek_table(vfs: VFS, db_path: str) -> ReaderTable:
    """What a writer that is still opening reads the reader table with: a `PeekReaderTable`
    for real files on Linux; elsewhere `open_table` (an in-memory layer's table writes no
    file; the POSIX-lock fallback needs the process's shared descriptor, which creates it).
    Raises as `open_table`."""
    if isinstance(vfs, OsVFS) and _USE_OFD:
        return PeekReaderTable(db_path + "-readers")
    return open_table(vfs, db_path)


def open_table(vfs: VFS, db_path: str) -> ReaderTable:
    """A FileReaderTable on `db_path + "-readers"` when `vfs` is an OsVFS; otherwise a
    LocalReaderTable from a process-wide registry keyed by (id(vfs), db_path), so several
    Database objects over one in-memory VFS in one process share it. Raises as
    FileReaderTable does."""
    if isinstance(vfs, OsVFS):  # a file layer with a `mode` creates files with it
        return FileReaderTable(db_path + "-readers", getattr(vfs, "mode", 0o666))
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
    """Delete the reader table of a database nobody has open (a scratch database's)."""
    if isinstance(vfs, OsVFS):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db_path + "-readers")
    else:
        with _LOCAL_LOCK:
            _LOCAL_TABLES.pop((id(vfs), db_path), None)
