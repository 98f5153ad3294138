"""The engine: one database's files and every mutable field, behind `streamdb.Database`.

`Engine` owns all state: the files (database, log, reader table), the header copies, the
catalog and free space, the published states and what holds them, the writer and its
transaction, checkpoints, space release, following another process's log, close and fork.
Its parts live in this package's modules as mixins of this one class (writes.py,
checkpoint.py, follow.py, salvage.py); nothing outside the package assigns its fields. The
façade (`streamdb.database`) checks arguments and calls its public methods; the features on
top (reads, message logs, Arrow tables, file objects, verify, backup) do the same.

Lifecycle (a writer; a read-only open takes the right-hand path):

    OPENING --lock, header copies (H2/H3), cipher key check--+
        |                                                    |
        | writer: log decided (R7) and replayed,             | reader: slot claimed,
        |         copies mirrored (H4), log finished,        |         trees + log tail
        |         reader table opened                        |         loaded (F1-F3)
        v                                                    v
      OPEN --write / transaction / checkpoint--> OPEN     OPEN --refresh()--> OPEN
        |            (a failed fsync: FAILED, writes refused until reopened)
        |
        +--close(): checkpoint, refuse new operations, wait for those in flight,
        |           release the log and the file; views may outlive it (their pages
        |           stay published in the reader table until they die) --> CLOSED
        +--fork(), in the child: FORGOTTEN (every call refused, descriptors dropped, no
                    I/O: the files and locks are the parent's)

An open that fails releases what it took and changes no file (a new database's file and
header excepted). `_check()` asserts the structural invariants.

Invariants (docs/design.md, "How the engine keeps them"; tests name them):

D1. Never overwrite live data. New versions go to free pages. Pages a superseded version
    used are freed only once the change is durable (its log record fsynced; a crash replays
    it) and no reader (thread, snapshot, view, or reader process) holds a state that sees
    them; an old tree's, once the checkpoint that replaced it is durable (checkpoint.py).
D2. The commit point is the log record reaching stable storage. A document larger than
    INLINE_MAX is written to pages and fdatasync'ed before the record that makes it visible.
D3. Every stored byte is checksummed: document chunks (XXH3-64 by default), tree pages,
    headers, log records.
D4. A checkpoint writes new trees to free pages, fsyncs, then writes both header copies, one
    after the other, each fsynced, then lets the log recycle (checkpoint.py). A crash at
    any point leaves a header and its trees intact, and the log replays what they lack.
D5. The path index is the trees of the last checkpoint, read page by page, plus the changes
    since (replayed from the log on open): opening reads two header pages, not the index.

Concurrency (docs/design.md, invariant 7, single writer and many readers):
C1. One writer thread at a time holds `_write_lock` for a whole write, or a whole
    `transaction()`. Readers never take it: a read pins the published `State` (an LSN of the
    multi-version catalog) and reads pages no writer will touch while it is pinned.
C2. A write is applied to the catalog under LSNs above the published one, so other threads
    cannot see it; it is published (one reference swap) after its log batch is committed.
    A transaction's own thread reads at its newest LSN, so it sees its pending writes.
C3. One writer process: the writer holds an exclusive lock on the database file (and the
    log's). Read-only opens take no lock; they publish the oldest state they hold in the
    reader table (`NAME-readers`), which the writer consults before reusing pages.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
import warnings
import weakref
from dataclasses import dataclass, replace
from typing import Any

import crc32c
import xxhash

import wal
from streamdb import errors as E
from streamdb.config import Config
from streamdb.engine.checkpoint import Checkpoints
from streamdb.engine.follow import Follower
from streamdb.engine.pins import Counters, Pins, State, drain_all
from streamdb.engine.salvage import Salvage, check_mode
from streamdb.engine.writes import SYNC, Writes
from streamdb.errmap import io_error, wal_error
from streamdb.paths import path_key
from streamdb.storage import btree
from streamdb.storage.catalog import KIND_FREE, LATEST, Catalog
from streamdb.storage.docio import DocReader
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import (
    CHECKSUM_CRC32C,
    CHECKSUM_XXH3,
    FLAG_ENCRYPTED,
    FLAG_MIRRORED,
    HEADER_PAGES,
    HEADER_SIZE,
    Copies,
    Header,
    parse,
    read_copies,
)
from streamdb.storage.logfiles import log_files
from streamdb.storage.pager import Pager
from streamdb.storage.pagestore import PageStore
from streamdb.storage.readers import ReaderTable, open_table, peek_table
from streamdb.storage.records import DocRecord, Version, decode_op
from streamdb.storage.transform import CODECS, key_check, open_cipher
from wal.vfs import VFS, OsVFS

_OPEN: weakref.WeakSet[Engine] = weakref.WeakSet()
LOCATIONS_MAX = 1 << 20  # cached document locations (about 150 bytes each)


@dataclass(frozen=True, slots=True)
class Stats:
    paths: int
    documents_changed_since_checkpoint: int
    page_size: int
    file_pages: int
    free_pages: int
    pending_free_pages: int
    checkpoints: int
    commits: int
    reads: int
    bytes_read: int
    bytes_written: int
    cache_hits: int  # the page cache (use_mmap=False): pages found, read ahead or not
    cache_misses: int  # pages read on demand
    cache_evictions: int
    cache_prefetches: int  # pages read ahead (with mmap: pages advised with madvise)
    cache_pages: int  # pages held now, at most page_cache_size
    index_cache_hits: int  # decoded index records
    index_cache_misses: int
    snapshots: int  # states held by snapshots, streams, views and reads in flight
    readers: int  # live reader processes (and closed databases' views) in the reader table


class Engine(Writes, Checkpoints, Follower, Salvage):
    """One open database (see the module docstring). Thread-safe."""

    def __init__(self, path: str, config: Config, *, readonly: bool, vfs: VFS | None,
                 recover: str | None) -> None:
        """Open (OPENING -> OPEN), or raise with nothing changed: NotFoundError,
        LockedError, UnsupportedError, CorruptionError, EncryptionError, StorageIOError."""
        check_mode(recover, readonly)
        self.path = path
        self.config = config
        self.readonly = readonly
        self.recovery = None
        self._recover = recover
        self._vfs = vfs if vfs is not None else OsVFS()
        self._write_lock = threading.RLock()
        self._tx = None
        self._tx_owner = None
        self._ipc_appends = {}
        self._failed = None
        self._quick = False
        self._codec = CODECS.get(config.compression or "", 0)
        self._cipher = None
        self._counters = Counters(
            ("checkpoints", "commits", "reads", "bytes_read", "bytes_written"))
        self._slot = None
        self._table = None
        self._retired = []
        self._orphans = []
        self._last_scan = 0.0
        self._scan_blocked = False
        self._wal = None
        self._tail = None
        self._header_damage = []
        self._refresh_lock = threading.Lock()
        self._logged_bytes = 0
        self._replay_batch = 0
        self._locations = {}
        self._epoch = 0
        try:
            file = self._vfs.open(path, create=not readonly)
        except FileNotFoundError as exc:
            raise E.NotFoundError(f"no database at {path}") from exc
        except OSError as exc:
            raise io_error(exc, f"opening {path}") from exc
        try:
            if not readonly:
                self._lock_file(file)
            self._header = self._read_or_create_header(file)
            if not readonly and (why := self._unproven_copy()) is not None:
                raise E.CorruptionError(why, page=0 if self._copies.a is None else 1)
            self._cipher = open_cipher(
                config.encryption_key, self._header.db_id,
                self._header.key_check if self._header.encrypted else None, path)
            self._page_size = self._header.page_size
            self._pager = Pager(file, self._page_size, use_mmap=config.use_mmap,
                                cache_pages=config.page_cache_size)
            self._space = FreeSpace(self._header.file_pages,
                                    config.max_db_size // self._page_size)
            self._store = PageStore(self._pager, self._space)
            # A writer only reads the reader table (and the log) until its open has
            # succeeded, so a failed open writes nothing (_finish_open).
            self._table = self._open_table() if readonly else peek_table(self._vfs, path)
            if readonly:
                self._slot = self._table.claim()
                self._load()
            else:
                self._open_log()
                self._header_damage = self._copies.damage()
                self._mirror_copies()
                self._finish_open()
        except BaseException as exc:
            self._abandon_files(file)
            if isinstance(exc, OSError) and not isinstance(exc, E.StreamDbError):
                raise io_error(exc, f"opening {path}") from exc
            raise
        self._pid = os.getpid()
        _OPEN.add(self)

    # -- opening -----------------------------------------------------------------------

    def _abandon_files(self, file: Any) -> None:
        with contextlib.suppress(Exception):  # already failing: report the first error
            if self._wal is not None:
                self._wal.close()
        if self._slot is not None:
            self._slot.release()
        if self._table is not None:
            self._table.close()
        file.close()

    def _open_table(self) -> ReaderTable:
        try:
            return open_table(self._vfs, self.path)
        except OSError as exc:
            raise io_error(exc, f"opening the reader table {self.path}-readers") from exc

    def _lock_file(self, file: Any) -> None:
        deadline = time.monotonic() + self.config.lock_timeout
        while True:
            try:
                file.lock()
                return
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    raise E.LockedError(self._lock_holder(file)) from exc
                time.sleep(0.01)
            except OSError as exc:
                raise io_error(exc, f"locking {self.path}") from exc

    def _lock_holder(self, file: Any) -> str:
        """Why the writer lock is taken, in words: by an open database of this process,
        or by another process."""
        try:
            ours = file.identity()
        except OSError:
            ours = None
        for other in list(_OPEN):
            if (not other.readonly and ours is not None and other._pins.closed is None
                    and other._pager.file.identity() == ours):
                return (f"{self.path} is already open for writing in this process "
                        f"(<streamdb.Database {other.path!r}>): share that Database between "
                        f"threads (it is thread-safe), or close it before opening the file "
                        f"again")
        return f"{self.path} is open for writing in another process"

    def _read_or_create_header(self, file: Any) -> Header:
        """The current header copy (H2 in storage/header.py); a new database for an empty or
        never-initialised file. Raises UnsupportedError (never modifying the file) for a
        foreign or newer file, CorruptionError naming the header when no copy can be
        trusted. Remembers what it found in `_copies`."""
        try:
            size = file.size()
            copies = read_copies(file.pread)
        except E.UnsupportedError as exc:
            raise E.UnsupportedError(f"{self.path}: {exc}") from exc
        except OSError as exc:
            raise io_error(exc, f"reading {self.path}") from exc
        header = copies.current
        if header is not None:
            self._copies = copies
            return header
        try:
            tail = file.pread(min(size, 2 * 65536), 0)[HEADER_SIZE:]
        except OSError as exc:
            raise io_error(exc, f"reading {self.path}") from exc
        if size > 2 * 65536 or any(tail):
            raise E.CorruptionError(f"both headers of {self.path} are damaged", page=0)
        if self.readonly:
            raise E.NotFoundError(f"{self.path} holds no database yet")
        header = self._create(file)
        self._copies = Copies(header, header)
        return header

    def _unproven_copy(self) -> str | None:
        """H3: why the current copy cannot be trusted (None: it can). A file whose only
        valid copy predates mirrored headers is trusted only when its log provably holds
        every change after that copy's checkpoint. Reads the log's segment headers only."""
        copies, header = self._copies, self._header
        if not copies.single or header.flags & FLAG_MIRRORED:
            return None
        try:
            held = wal.holds_after(self.path + "-wal", vfs=self._vfs)
        except wal.WalError as exc:
            raise wal_error(exc, f"reading the log of {self.path}") from exc
        if held is not None and held <= header.checkpoint_lsn:
            return None
        return (f"{'; '.join(copies.damage())} in {self.path}, and the other copy, written "
                f"by an earlier version of StreamDB, may be the older one: the log no longer "
                f"holds what a newer copy saw, so opening it could lose committed writes. "
                f"Restore from a backup")

    def _write_headers(self, header: Header, first: int) -> None:
        """Write `header` to copy `first` (0 or 1), fsync, then to the other copy, fsync (H1).
        Raises CorruptionError, writing nothing, for a header that would not read back (a
        tree outside the file: the free-space map gave out a page past its end); OSError."""
        packed = header.pack()
        if parse(packed) != header:
            raise E.CorruptionError(f"{self.path}: refusing to write a header that would not "
                                    f"read back ({header})")
        page = packed.ljust(self._page_size, b"\x00")
        for slot in (first, 1 - first):
            self._pager.write_pages(slot, page)
            self._pager.sync()
        self._copies = Copies(header, header)

    def _mirror_copies(self) -> None:
        """H4: make both copies the current header, flagged, before anything is written
        (the copy that is not current first, so a crash leaves the current one intact)."""
        if self._copies.mirrored:
            return
        header = replace(self._header, flags=self._header.flags | FLAG_MIRRORED)
        current = 0 if self._copies.a == self._header else 1
        try:
            self._write_headers(header, 1 - current)
        except OSError as exc:
            raise io_error(exc, f"rewriting the headers of {self.path}") from exc
        self._header = header

    def _create(self, file: Any) -> Header:
        config = self.config
        algo = CHECKSUM_XXH3 if config.checksum == "xxh3" else CHECKSUM_CRC32C
        db_id = uuid.uuid4()
        key = config.encryption_key
        header = Header(config.page_size, db_id, generation=1, checksum=algo,
                        flags=FLAG_MIRRORED | (FLAG_ENCRYPTED if key is not None else 0),
                        key_check=key_check(key, db_id) if key is not None else bytes(64))
        try:
            # A database's header is durable before its log is first written, so a log
            # beside a file with no header means the file was damaged or replaced: refuse,
            # keeping the log as evidence, rather than start over or replay it into a new
            # database.
            if log_files(self._vfs, self.path):
                raise E.CorruptionError(
                    f"{self.path} has no database header but its log {self.path}-wal "
                    f"exists: remove the log (and its numbered siblings) to start anew"
                )
            copy = header.pack().ljust(config.page_size, b"\x00")
            file.pwritev([copy, copy], 0)  # both copies the same (H1)
            file.sync()
            self._vfs.sync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            raise io_error(exc, f"creating {self.path}") from exc
        return header

    def _new_catalog(self, refs: dict[str, btree.TreeRef]) -> Catalog:
        return Catalog(self._store, refs, keep=self.config.versions_to_keep,
                       on_free=self._defer_free, cache_pages=self.config.page_cache_size)

    def _open_log(self) -> None:
        """The state from the header, then the log's committed records on top (D4). The
        log is decided, not finished: nothing is written yet (`_finish_open`), except by a
        salvage (`recover=`, salvage.py), which finishes the log itself."""
        self._reload_state()
        sync = SYNC[self.config.durability]
        if self._recover is not None:
            self.recovery = self._salvage_log(sync)  # type: ignore[arg-type]
            return
        try:
            log = self._wal = wal.open(self.path + "-wal", sync=sync,  # type: ignore[arg-type]
                                       vfs=self._vfs, finish=False)
            self._replay(opening=True)
            log.skip_to(self._applied_lsn)
        except wal.WalError as exc:
            raise wal_error(exc, f"opening the log of {self.path}") from exc

    def _finish_open(self) -> None:
        """The open succeeded: now the log's recovery writes (wal rule R7) and the reader
        table is opened for real (created if missing, trimmed, dead slots reclaimed)."""
        assert self._wal is not None
        try:
            self._wal.finish()
        except wal.WalError as exc:
            raise wal_error(exc, f"opening the log of {self.path}") from exc
        peek, self._table = self._table, None
        if peek is not None:
            peek.close()
        self._table = self._open_table()

    def _replay(self, *, opening: bool = False, until: int | None = None) -> int:
        """Apply logged operations past the last applied LSN (D4), below `until` if given,
        then publish; returns how many. O(log bytes). While `opening` nobody reads yet: only
        each key's newest entry is kept. On a CorruptionError `_replay_batch` is the first
        LSN of the batch being applied."""
        assert self._wal is not None
        self._catalog.horizon = LATEST if opening else self._horizon()
        # Logged pages were synced before their record: pages past the end of the file
        # are damage, and must not move the file's end (the next checkpoint would write
        # there). Reading that document reports it.
        in_file = -(-self._pager.file.size() // self._page_size)
        applied = 0
        self._replay_batch = 0
        try:
            for record, end in self._wal.replay_batches(self._applied_lsn + 1):
                if until is not None and record.lsn >= until:
                    break
                self._replay_batch = self._replay_batch or record.lsn
                op = decode_op(record.payload)
                if op.version is not None:  # VERSION, CREATE, EXTEND: its pages are in use
                    for start, count in op.version.extents:
                        if start < in_file:
                            self._space.claim(start, min(count, in_file - start))
                self._catalog.apply(op, record.lsn)
                self._applied_lsn = record.lsn
                applied += 1
                if end:
                    self._replay_batch = 0
            return applied
        except wal.WalError as exc:
            raise wal_error(exc, f"replaying the log of {self.path}") from exc
        finally:
            self._catalog.mark()
            self._publish()

    def _reload_state(self) -> None:
        """Free space, catalog and published state from the current header.

        The header's page count may exceed the file (pages allocated at the end by a write
        that never committed were never written); free extents past the real end are
        dropped rather than trusted, so a damaged count cannot make the file grow. While a
        reader process holds a state older than this header, the free map may list pages
        that reader still reads: they wait until it has moved on (D1).
        """
        header = self._header
        actual = -(-self._pager.file.size() // self._page_size)
        self._space = FreeSpace(min(header.file_pages, max(actual, HEADER_PAGES)),
                                self._space.max_pages)
        self._space.on_short = self._on_short
        self._space.durable = (header.generation, header.checkpoint_lsn)
        self._store = PageStore(self._pager, self._space)
        assert self._table is not None
        behind = any(s[0] < header.generation
                     for s in self._table.live(header.db_id.bytes))
        free = btree.Tree(self._store, header.trees["free"], kind=KIND_FREE)
        listed = HEADER_PAGES  # the extents come in order; overlaps (damage) stay in use
        for key, value in free.items():
            first = int.from_bytes(key, "big")
            end = min(first + int.from_bytes(value, "little"), self._space.file_pages)
            start, listed = max(first, listed), max(listed, end)
            if HEADER_PAGES <= start < end:
                if behind:
                    self._space.defer(start, end - start, self._space.durable)
                else:
                    self._space.free(start, end - start)
        self._catalog = self._new_catalog(header.trees)
        self._applied_lsn = header.checkpoint_lsn
        self._publish()

    # -- published states (C2) and what holds them --------------------------------------

    def _publish(self, touched: set[bytes] | None = None) -> None:
        """Make the catalog at the last applied LSN the state new reads see (C2). The
        cached locations of the path keys `touched` (None: every one) go first, inside the
        `_epoch` seqlock (P4): no fast read can then find a location the new state changed,
        and no slow read that raced the publish can put one back."""
        state = State(self._catalog, self._applied_lsn, self._header.generation, self._pager)
        if getattr(self, "_pins", None) is None:
            self._pins = Pins(state, self._unpinned)
            return
        if touched is None or touched:
            self._epoch += 1  # odd: changing
            if touched is None:
                self._locations = {}
            else:
                for key in touched:
                    self._locations.pop(key.decode("utf-8", "replace"), None)
            self._pins.publish(state)
            self._epoch += 1
        else:
            self._pins.publish(state)
        self._close_retired()

    def _horizon(self) -> int:
        """The lowest LSN a reader may read the catalog at (any, before the first
        publish)."""
        pins = getattr(self, "_pins", None)
        return pins.horizon(self._catalog) if pins is not None else LATEST

    def _unpinned(self, state: State) -> None:
        """The last pin of `state` went (it is no longer the published one, or we are
        closed). A closed database releases its reader-table slot once nothing is held; a
        reader process republishes its oldest held state; a file replaced by a compaction
        is closed once no state over it is held or published."""
        self._scan_blocked = False  # what it held may be released at the next look
        if self._pins.closed is not None:
            if not self._pins.held():
                self._release_slot()
        elif self.readonly:
            self._publish_oldest()
        self._close_retired()

    def _retire(self, pager: Pager) -> None:
        """`pager`'s file was replaced (compaction): close it once nothing reads it."""
        self._retired.append(pager)
        self._close_retired()

    def _close_retired(self) -> None:
        if not self._retired:
            return
        in_use = {s.pager for s in self._pins.held()} | {self._pins.current.pager}
        for pager in [p for p in self._retired if p not in in_use]:
            self._retired.remove(pager)
            pager.close()

    def _release_slot(self) -> None:
        """Closed and nothing held: leave the reader table."""
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()
        table, self._table = self._table, None
        if table is not None:
            table.close()

    # -- reading: what the read features call --------------------------------------------

    def _own_state(self) -> State | None:
        """The state this thread's transaction sees (its pending writes), else None."""
        if self._tx_owner is not None and self._tx_owner == threading.get_ident():
            return State(self._catalog, self._applied_lsn, self._header.generation,
                         self._pager)
        return None

    def _count(self, name: str, n: int = 1) -> None:
        self._counters.add(name, n)

    def pin(self, state: State | None = None) -> State:
        """Pin `state` (default: this thread's transaction's, else the published one) for
        one operation, counted in flight. Raises ClosedError. O(1)."""
        return self._pins.acquire(state or self._own_state())

    def unpin(self, state: State) -> None:
        """Undo `pin`."""
        self._pins.release(state)

    def hold(self, state: State | None = None) -> State:
        """Pin `state` (default as `pin`) beyond an operation: a snapshot's, stream's or
        view's lifetime. Raises ClosedError. O(1)."""
        return self._pins.acquire(state or self._own_state(), op=False)

    def let_go(self, state: State) -> None:
        """Undo `hold`."""
        self._pins.release(state, op=False)

    def let_go_later(self, state: State) -> None:
        """`let_go`, from a finaliser or the garbage collector: safe at any point."""
        self._pins.release_later(state)

    def op_begin(self) -> None:
        """Count an operation on a held state (a stream's next chunk). Raises ClosedError."""
        self._pins.begin()

    def op_end(self) -> None:
        self._pins.end()

    @property
    def closed(self) -> str | None:
        """Why operations are refused (closed, or forked), or None while open."""
        return self._pins.closed

    def fast_get(self, path: str) -> bytes | None:
        """The latest version of a whole, plain, one-chunk document from its cached
        location: a dict lookup, a lock-free pin (P4), a slice of the map and a checksum.
        None when there is no usable entry (the caller takes `get_latest`). Never raises:
        anything unexpected (a closed or retired map, a checksum that does not match) drops
        the entry and leaves the caller the general path, which reports it."""
        entry = self._locations.get(path)
        if entry is None or (self._tx_owner is not None
                             and self._tx_owner == threading.get_ident()):
            return None  # a transaction's own reads see its pending writes
        pins = self._pins
        try:
            slot = pins._local.slot
        except AttributeError:
            slot = pins.slot(self._counters)
        slot.state = pins.current
        try:
            if self._locations.get(path) is not entry:  # taken out since: changed
                return None
            data, start, end, expected, digest = entry
            if digest is not None:  # a slice of the map, verified
                data = data[start:end]
                if not self._quick and digest(data) != expected:
                    self._locations.pop(path, None)
                    return None
            counts = slot.counts
            counts["reads"] += 1
            counts["bytes_read"] += end - start
            return data  # type: ignore[no-any-return]
        except (ValueError, TypeError, OSError):  # a retired map, closed: ask again
            self._locations.pop(path, None)
            return None
        finally:
            slot.state = None

    def _forget_locations(self) -> None:
        """Drop every cached location (P4)."""
        self._epoch += 1
        self._locations = {}
        self._epoch += 1

    def get_latest(self, path: str) -> bytes:
        """The latest version of the document at `path`, through the general path; its
        location is cached for `fast_get` when the document is whole, plain and one chunk,
        read from the published state, and no publish raced the read (P4). Raises as
        `Database.get`."""
        epoch = self._epoch
        key = path_key(path)
        state = self.pin()
        try:
            doc = self.doc(state, key)
            if doc is None:
                raise E.NotFoundError(f"no document at {path!r}")
            v = doc.latest
            data = self.read(state, path, v, 0, v.size)
            if (not epoch & 1 and len(v.sums) == 1 and not v.table
                    and state is self._pins.current):
                self._remember(path, state, v, data, epoch)
            return data
        finally:
            self.unpin(state)

    def _remember(self, path: str, state: State, v: Version, data: bytes,
                  epoch: int) -> None:
        """Cache where `v` (just read in full from the published `state`) lies."""
        if v.inline is not None:
            entry: tuple[Any, int, int, int, Any] = (data, 0, len(data), 0, None)
        elif len(v.extents) == 1:
            start = v.extents[0][0] * self._page_size
            try:
                mapped = state.pager.mapping(start, v.size)
            except (ValueError, E.ClosedError):
                return
            if mapped is None:
                return
            digest = xxhash.xxh3_64_intdigest if v.checksum == CHECKSUM_XXH3 else (
                crc32c.crc32c if v.checksum == CHECKSUM_CRC32C else None)
            if digest is None:
                return
            entry = (mapped, start, start + v.size, v.sums[0], digest)
        else:
            return
        if len(self._locations) >= LOCATIONS_MAX:
            self._locations.pop(next(iter(self._locations)), None)
        if self._epoch == epoch:  # no publish since the read began
            self._locations[path] = entry

    def doc(self, state: State, key: bytes) -> DocRecord | None:
        """The document a path key names in `state`. O(log n)."""
        doc_id = state.catalog.lookup(key, state.lsn)
        return state.catalog.doc(doc_id, state.lsn) if doc_id is not None else None

    def doc_reader(self, state: State, path: str, v: Version) -> DocReader:
        """Verified reads of `v`'s bytes in `state`'s file (not in quick mode: then payload
        checksums are skipped). Raises CorruptionError for a compressed version claiming
        more than max_document_size (decoding would allocate it)."""
        if v.codec and v.size > self.config.max_document_size:
            raise E.CorruptionError(
                f"a compressed document claims {v.size} bytes, more than "
                f"max_document_size={self.config.max_document_size}", path=path)
        return DocReader(state.pager, v, path, verify=not self._quick, cipher=self._cipher)

    def counted_reader(self, state: State, path: str, v: Version) -> DocReader:
        """`doc_reader`, counted as a read in `stats()`."""
        self._counters.read(0)
        return self.doc_reader(state, path, v)

    def read(self, state: State, path: str, v: Version, offset: int, length: int,
             reader: DocReader | None = None) -> bytes:
        """Bytes [offset, offset+length) of `v`, through `reader` when the caller keeps one
        (a stream, a file). O(length + chunk). Raises CorruptionError (ChecksumMismatch),
        StorageIOError."""
        try:
            data = (reader or self.doc_reader(state, path, v)).read(offset, length)
        except OSError as exc:
            raise io_error(exc, f"reading {path!r}") from exc
        except ValueError as exc:  # a page past the end of the file
            raise E.CorruptionError(f"{path!r} points past the end of the file") from exc
        self._counters.read(len(data))
        return data

    def set_quick_mode(self, on: bool) -> None:
        """Skip payload checksum verification on reads, with a one-time warning."""
        if on and not self._quick:
            warnings.warn("StreamDB quick mode: document checksums are not verified on read",
                          stacklevel=3)
        self._quick = on

    @property
    def quick(self) -> bool:
        return self._quick

    def refresh(self) -> int:
        """`Database.refresh`: a reader moves on to the last committed state; returns its
        LSN."""
        self.check_open()
        if self.readonly:
            self._refresh_follower()
        return self._pins.current.lsn

    def flush(self) -> None:
        """`Database.flush`: every commit durable now."""
        with self._write_lock:
            self.check_writable()
            assert self._wal is not None
            try:
                self._wal.sync()
            except wal.WalError as exc:
                self._after_log_failure(exc)
                raise wal_error(exc, f"flushing {self.path}") from exc
            self._note_durable()

    # -- what verify and backup read (writer lock held) -----------------------------------

    @property
    def header(self) -> Header:
        return self._header

    @property
    def vfs(self) -> VFS:
        return self._vfs

    def file_identity(self) -> tuple[int, int]:
        """The identity of the database file this engine has open (VFile.identity)."""
        return self._pager.file.identity()

    def tree(self, name: str) -> btree.Tree:
        """The current header's tree `name` ("paths", "suffix", "docs", "free"), read
        afresh (no cache)."""
        from streamdb.engine.checkpoint import KINDS

        return btree.Tree(self._store, self._header.trees[name], kind=KINDS[name])

    def tree_pages(self) -> list[int]:
        """Every page of the current header's trees."""
        return self._tree_pages(self._header.trees)

    @property
    def catalog(self) -> Catalog:
        """The writer's catalog (every committed change; writer lock held)."""
        return self._catalog

    def published(self) -> State:
        return self._pins.current

    def free_extents(self) -> list[tuple[int, int]]:
        return self._space.extents()

    @property
    def failed(self) -> str | None:
        return self._failed

    def header_problems(self) -> list[str]:
        """Damaged header copies: those found (and rewritten) at open, and those found now.
        A writer also rewrites copies that do not both hold its current header (H4). A
        reader looks three times before it reports a copy a checkpoint may be rewriting."""
        problems = [f"{p}; it was rewritten from the other copy at open"
                    for p in self._header_damage]
        self._header_damage = []  # reported once
        for _ in range(1 if not self.readonly else 3):
            try:
                copies = read_copies(self._pager.file.pread)
            except (OSError, E.UnsupportedError) as exc:
                problems.append(f"the header copies cannot be read: {exc}")
                return problems
            if not copies.damage():
                break
        now = copies.damage()
        if self.readonly:
            return problems + now
        if copies.a != self._header or copies.b != self._header:
            try:
                self._write_headers(self._header, 0 if copies.a != self._header else 1)
            except OSError as exc:
                raise io_error(exc, f"rewriting the headers of {self.path}") from exc
            problems += [f"{p}; it was rewritten from the current header" for p in now]
            if not now:
                problems.append("the header copies differed; both were rewritten")
        return problems

    # -- stats, close, fork ---------------------------------------------------------------

    def stats(self) -> Stats:
        """`Database.stats`."""
        self.check_open()
        drain_all()
        state = self._pins.current
        c = self._counters.snapshot()
        hits, misses = state.catalog.cache_stats()
        pages = self._pager.cache_stats()
        table = self._table
        return Stats(
            paths=state.catalog.count(state.lsn),
            documents_changed_since_checkpoint=len(state.catalog.d_docs),
            page_size=self._page_size,
            file_pages=max(self._space.file_pages, self._pager.size // self._page_size),
            free_pages=self._space.free_pages(),
            pending_free_pages=sum(p[1] for p in self._space.pending),
            checkpoints=c["checkpoints"],
            commits=c["commits"],
            reads=c["reads"],
            bytes_read=c["bytes_read"],
            bytes_written=c["bytes_written"],
            cache_hits=pages.hits,
            cache_misses=pages.misses,
            cache_evictions=pages.evictions,
            cache_prefetches=pages.prefetches,
            cache_pages=pages.pages,
            index_cache_hits=hits,
            index_cache_misses=misses,
            snapshots=len(self._pins.held()),
            readers=len(table.live(self._header.db_id.bytes)) if table is not None else 0,
        )

    def close(self) -> None:
        """`Database.close` (see there): OPEN -> CLOSED. Idempotent; nothing in a forked
        child."""
        if getattr(self, "_pid", None) != os.getpid():
            return  # a forked child: the parent's files are not ours to touch
        with self._write_lock:
            if self._pins.closed is not None:
                return
            if self._tx is not None:
                self._abort()
            error: E.StreamDbError | None = None
            if not self.readonly and self._failed is None:
                try:
                    self._checkpoint()
                except E.StreamDbError as exc:
                    error = exc
            self._pins.close(f"{self.path} is closed")  # no read starts, none is in flight
            self._forget_locations()  # a fast read then finds nothing, and reports closed
            _OPEN.discard(self)
            held = self._pins.oldest()
            if held is not None and self._slot is None and self._table is not None:
                self._slot = self._table.claim()  # views outlive us: keep their pages
                self._slot.publish(self._header.db_id.bytes, held)
            if self._wal is not None:
                try:
                    self._wal.close()
                except wal.WalError as exc:
                    error = error or wal_error(exc, f"closing the log of {self.path}")
            self._close_tail()
            try:
                self._pager.close()
            except OSError as exc:
                error = error or io_error(exc, f"closing {self.path}")
            self._close_retired()
            if not self._pins.held():
                self._release_slot()
            if error is not None:
                raise error

    def crash(self, why: str = "stopped as if the process had died") -> None:
        """For tests: refuse writes from now on and close without a checkpoint, as a
        killed process would leave the files (what the file layer already holds stays)."""
        self._failed = why
        self.close()

    def _forget(self) -> None:
        """In a forked child (-> FORGOTTEN): refuse every call, and drop our descriptors
        without any I/O (their locks and the parent's state are the parent's)."""
        self._pins.closed = (f"{self.path} was opened in process {self._pid}; after fork() "
                             f"the child must open the database again")
        self._forget_locations()
        with contextlib.suppress(OSError):  # descriptors only: nothing is written
            if self._wal is not None:
                self._wal.forget()
            if self._table is not None:
                self._table.forget()
            self._close_tail()
            self._pager.file.close()

    def _check(self) -> None:
        """Assert the structural invariants the engine keeps: the catalog (paths and
        documents agree), free space (extents sorted, disjoint, inside the file, nothing
        both free and waiting), the pins (counts), and for a writer that both header copies
        are the current header and no free page is used by the trees. For stress, crash and
        fuzz tests. O(database size)."""
        self._pins._check()
        state = self._pins.current
        state.catalog._check(state.lsn)
        if self.readonly:
            return
        with self._write_lock:
            self._space._check()
            copies = read_copies(self._pager.file.pread)
            assert copies.a == copies.b == self._header, "the header copies differ"
            free = {p for s, c in self._space.extents() for p in range(s, s + c)}
            assert not free & set(self.tree_pages()), "a tree page is free"


def _after_fork_in_child() -> None:
    for engine in list(_OPEN):
        engine._forget()
    _OPEN.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
