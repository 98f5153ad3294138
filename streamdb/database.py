"""The database: one `.db` file and its log `NAME-wal`, behind the API of docs/design.md,
section 2.

Invariants (docs/design.md, "How the engine keeps them"; tests name them):

D1. Never overwrite live data. New versions go to free pages. Pages a superseded version
    used are freed only once the change is durable (its log record fsynced; a crash replays
    it) and no reader (thread, snapshot, view, or reader process) holds a state that sees
    them; an old tree's, once the checkpoint that replaced it is durable.
D2. The commit point is the log record reaching stable storage. A document larger than
    INLINE_MAX is written to pages and fdatasync'ed before the record that makes it visible.
D3. Every stored byte is checksummed: document chunks (XXH3-64 by default), tree pages,
    headers, log records.
D4. A checkpoint writes new trees to free pages, fsyncs, then writes the other header copy and
    fsyncs it, then lets the log recycle. A crash at any point leaves the previous header and
    its trees intact, and the log replays what they lack.
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
import errno
import io
import os
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import wal
from streamdb import checks, follower, logs, maintenance, salvage, tables
from streamdb import errors as E
from streamdb.config import Config
from streamdb.errmap import io_error, wal_error
from streamdb.maintenance import VerifyReport
from streamdb.paths import path_key
from streamdb.pins import Counters, Pins, State, drain_all
from streamdb.reads import DocumentInfo, ReadMethods, Snapshot
from streamdb.storage import btree
from streamdb.storage.catalog import KIND_FREE, LATEST, Catalog
from streamdb.storage.docio import CHUNK, DocReader, Ingest, Transform, as_bytes, check_source
from streamdb.storage.freespace import FreeSpace, Stamp
from streamdb.storage.header import (
    CHECKSUM_CRC32C,
    CHECKSUM_XXH3,
    FLAG_ENCRYPTED,
    FLAG_MIRRORED,
    HEADER_PAGES,
    HEADER_SIZE,
    Copies,
    Header,
    read_copies,
)
from streamdb.storage.logfiles import log_files, remove_log
from streamdb.storage.pager import Pager
from streamdb.storage.pagestore import PageStore
from streamdb.storage.readers import (
    ReaderSlot,
    ReaderTable,
    open_table,
    peek_table,
    remove_table,
)
from streamdb.storage.records import (
    OP_BIND,
    OP_CREATE,
    OP_PRUNE,
    OP_UNBIND,
    OP_VERSION,
    Op,
    Version,
    decode_op,
)
from streamdb.storage.transform import CODECS, Cipher, key_check, open_cipher
from streamdb.txn import _SYNC, Transactions
from wal.vfs import VFS, OsVFS

if TYPE_CHECKING:
    from streamdb import arrow

__all__ = ["Database", "DocumentInfo", "Snapshot", "Stats", "open"]

# Any C-contiguous object with the buffer protocol (bytes, bytearray, memoryview, numpy
# arrays, array.array, mmap): collections.abc.Buffer, from Python 3.12.
Buffer = Any

RELEASE_INTERVAL = 0.05  # seconds between reader-table scans when the file would grow
_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


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


class Database(ReadMethods, Transactions):
    """An open StreamDB database. Create it with `streamdb.open`.

    Thread-safe: share one object between threads. Reads run concurrently and never wait for
    the writer; writes are serialised. After `fork()` a child must open the database again.
    """

    _pins: Pins
    _applied_lsn: int  # the newest LSN applied to the catalog (a transaction's, if open)
    _catalog: Catalog

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: Config | None = None,
        *,
        readonly: bool = False,
        vfs: VFS | None = None,
        recover: str | None = None,
    ) -> None:
        readonly = checks.flag(readonly, "readonly")
        salvage.check_mode(recover, readonly)
        self._recover = recover
        # What an open with recover="truncate-log" dropped; None when nothing was.
        self.recovery: salvage.LogRecovery | None = None
        self.path = checks.fspath(path, "the database path")
        if config is not None and not isinstance(config, Config):
            raise E.InvalidArgumentError(
                f"config must be a streamdb.Config, not {type(config).__name__}: "
                f"streamdb.open(path, streamdb.Config(...))")
        self.config = config or Config()
        self.readonly = readonly
        self._db = self
        self._vfs: VFS = vfs if vfs is not None else OsVFS()
        self._write_lock = threading.RLock()
        self._tx = None
        # path -> (document, LSN, size) of this handle's last append_batch there, and its
        # IPC writer (which knows the dictionaries the stream holds)
        self._ipc_appends: dict[str, tuple[tuple[bytes | None, int, int], Any]] = {}
        self._tx_owner: int | None = None
        self._failed: str | None = None
        self._quick = False
        self._warned_quick = False
        self._codec = CODECS.get(self.config.compression or "", 0)
        self._cipher: Cipher | None = None
        self._counters = Counters(
            ("checkpoints", "commits", "reads", "bytes_read", "bytes_written"))
        self._slot: ReaderSlot | None = None
        self._retired: list[Pager] = []  # files replaced by a compaction, still read
        # Pages of documents written then undone, still read by the states named.
        self._orphans: list[tuple[list[tuple[int, int]], set[State]]] = []
        self._last_scan = 0.0
        self._scan_blocked = False
        self._wal: wal.WriteAheadLog | None = None
        self._tail: wal.LogTail | None = None  # read-only opens follow the log with it
        self._header_damage: list[str] = []  # damaged header copies found (and repaired) at open
        self._refresh_lock = threading.Lock()
        try:
            file = self._vfs.open(self.path, create=not readonly)
        except FileNotFoundError as exc:
            raise E.NotFoundError(f"no database at {self.path}") from exc
        except OSError as exc:
            raise io_error(exc, f"opening {self.path}") from exc
        self._table: ReaderTable | None = None
        try:
            if not readonly:
                self._lock_file(file)
            self._header = self._read_or_create_header(file)
            if not readonly and (why := self._unproven_copy()) is not None:
                raise E.CorruptionError(why, page=0 if self._copies.a is None else 1)
            self._cipher = open_cipher(
                self.config.encryption_key, self._header.db_id,
                self._header.key_check if self._header.encrypted else None, self.path)
            self._page_size = self._header.page_size
            self._pager = Pager(file, self._page_size, use_mmap=self.config.use_mmap,
                                cache_pages=self.config.page_cache_size)
            self._space = FreeSpace(self._header.file_pages,
                                    self.config.max_db_size // self._page_size)
            self._store = PageStore(self._pager, self._space)
            # A writer only reads the reader table (and the log) until its open has
            # succeeded, so a failed open writes nothing (_finish_open).
            self._table = self._open_table() if readonly else peek_table(self._vfs, self.path)
            if readonly:
                self._slot = self._table.claim()
                follower.load(self)
            else:
                self._open_log()
                self._header_damage = self._copies.damage()
                self._mirror_copies()
                self._finish_open()
        except BaseException as exc:
            self._abandon_files(file)
            if isinstance(exc, OSError) and not isinstance(exc, E.StreamDbError):
                raise io_error(exc, f"opening {self.path}") from exc
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
        """Why the writer lock is taken, in words: by a Database of this process (named),
        or by another process."""
        try:
            ours = file.identity()
        except OSError:
            ours = None
        for other in list(_OPEN):
            if (not other.readonly and ours is not None and other._pins.closed is None
                    and other._pager.file.identity() == ours):
                return (f"{self.path} is already open for writing in this process "
                        f"({other!r}): share that Database between threads (it is "
                        f"thread-safe), or close it before opening the file again")
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
        May raise OSError."""
        page = header.pack().ljust(self._page_size, b"\x00")
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
        algo = CHECKSUM_XXH3 if self.config.checksum == "xxh3" else CHECKSUM_CRC32C
        db_id = uuid.uuid4()
        key = self.config.encryption_key
        header = Header(self.config.page_size, db_id, generation=1, checksum=algo,
                        flags=FLAG_MIRRORED | (FLAG_ENCRYPTED if key is not None else 0),
                        key_check=key_check(key, db_id) if key is not None else bytes(64))
        page = self.config.page_size
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
            copy = header.pack().ljust(page, b"\x00")
            file.pwritev([copy, copy], 0)  # both copies the same (H1)
            file.sync()
            self._vfs.sync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            raise io_error(exc, f"creating {self.path}") from exc
        return header

    def _remove_log(self) -> None:
        remove_log(self._vfs, self.path)

    def _new_catalog(self, refs: dict[str, btree.TreeRef]) -> Catalog:
        return Catalog(self._store, refs, keep=self.config.versions_to_keep,
                       on_free=self._defer_free, cache_pages=self.config.page_cache_size)

    def _open_log(self) -> None:
        """The state from the header, then the log's committed records on top (D4). The
        log is decided, not finished: nothing is written yet (`_finish_open`), except by a
        salvage (`recover=`, streamdb.salvage), which finishes the log itself."""
        self._reload_state()
        self._logged_bytes = 0
        sync = _SYNC[self.config.durability]
        if self._recover is not None:
            self.recovery = salvage.open_log(self, sync)  # type: ignore[arg-type]
            return
        self._wal = self._decided_log()

    def _decided_log(self) -> wal.WriteAheadLog:
        """Open the log without finishing its recovery, and replay it. Writes nothing."""
        try:
            log = self._wal = wal.open(self.path + "-wal", sync=_SYNC[self.config.durability],  # type: ignore[arg-type]
                                       vfs=self._vfs, finish=False)
            self._replay(opening=True)
            log.skip_to(self._applied_lsn)
        except wal.WalError as exc:
            raise wal_error(exc, f"opening the log of {self.path}") from exc
        return log

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
                if op.version is not None:  # VERSION, CREATE: its pages are in use
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
        for key, value in free.items():
            start = int.from_bytes(key, "big")
            end = min(start + int.from_bytes(value, "little"), self._space.file_pages)
            if HEADER_PAGES <= start < end:
                if behind:
                    self._space.defer(start, end - start, self._space.durable)
                else:
                    self._space.free(start, end - start)
        self._catalog = self._new_catalog(header.trees)
        self._applied_lsn = header.checkpoint_lsn
        self._publish()

    def _publish(self) -> None:
        """Make the catalog at the last applied LSN the state new reads see (C2)."""
        state = State(self._catalog, self._applied_lsn, self._header.generation, self._pager)
        if getattr(self, "_pins", None) is None:
            self._pins = Pins(state, self._unpinned)
        else:
            self._pins.publish(state)
            self._close_retired()

    def _horizon(self) -> int:
        """The lowest LSN a reader may read the catalog at (any, before the first
        publish)."""
        pins = getattr(self, "_pins", None)
        return pins.horizon(self._catalog) if pins is not None else LATEST

    def _defer_free(self, extents: tuple[tuple[int, int], ...], lsn: int) -> None:
        stamp = (self._header.generation, lsn)
        for start, count in extents:
            self._space.defer(start, count, stamp)

    # -- readers and space -------------------------------------------------------------

    def _oldest_reader(self) -> Stamp | None:
        """The oldest state any reader holds: in this process, or in the reader table."""
        assert self._table is not None
        drain_all()  # views dropped a moment ago, in any database of this process
        stamps = [s for s in (self._pins.oldest(),
                              self._table.oldest(self._header.db_id.bytes)) if s is not None]
        return min(stamps, default=None)

    def _release_space(self) -> None:
        """Make pending pages no reader can see allocatable (D1). Writer lock held."""
        self._last_scan = time.monotonic()
        self._space.release(self._oldest_reader())
        # Durable pages still pending are held by a reader: asking again at once is futile.
        self._scan_blocked = self._space.releasable()

    def _on_short(self) -> None:
        """The file would grow while freed pages wait (D1). Those whose change is durable
        are released if no reader sees them (unless a reader held them at the last look,
        less than RELEASE_INTERVAL ago). With durability "normal" or "off" they may still
        wait for the log's fsync: once they are a quarter of the file, the log is synced
        rather than the file grown."""
        space = self._space
        if not space.releasable():
            if (self._wal is None or self.readonly
                    or 4 * space.pending_pages() < space.file_pages):
                return
            try:
                self._wal.sync()
            except wal.WalError as exc:
                self._after_log_failure(exc)
                raise wal_error(exc, f"syncing the log of {self.path}") from exc
            self._note_durable()
            self._scan_blocked = False
        if not self._scan_blocked or time.monotonic() - self._last_scan >= RELEASE_INTERVAL:
            self._release_space()

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
            follower.publish_oldest(self)
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

    # -- guards ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._pins.closed is not None:
            raise E.ClosedError(self._pins.closed)

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise E.ReadOnlyError(f"{self.path} was opened read-only")
        if self._failed is not None:
            raise E.StorageIOError(errno.EIO, f"{self._failed}; reopen the database")

    def _check_no_tx(self, what: str) -> None:
        if self._tx is not None and self._tx.user:
            raise E.InvalidArgumentError(f"{what} cannot run inside a transaction")

    # -- state for reads ---------------------------------------------------------------

    def _own_state(self) -> State | None:
        """The state this thread's transaction sees (its pending writes), else None."""
        if self._tx_owner is not None and self._tx_owner == threading.get_ident():
            return State(self._catalog, self._applied_lsn, self._header.generation,
                         self._pager)
        return None

    def _enter(self) -> State:
        return self._pins.acquire(self._own_state())

    def _leave(self, state: State) -> None:
        self._pins.release(state)

    def _count(self, name: str, n: int = 1) -> None:
        self._counters.add(name, n)

    def _doc_reader(self, state: State, path: str, v: Version) -> DocReader:
        if v.codec and v.size > self.config.max_document_size:  # decoding allocates it
            raise E.CorruptionError(
                f"a compressed document claims {v.size} bytes, more than "
                f"max_document_size={self.config.max_document_size}", path=path)
        return DocReader(state.pager, v, path, verify=not self._quick, cipher=self._cipher)

    def _reader(self, state: State, path: str, v: Version) -> DocReader:
        self._counters.read(0)
        return self._doc_reader(state, path, v)

    def _read(self, state: State, path: str, v: Version, offset: int, length: int,
              reader: DocReader | None = None) -> bytes:
        """Bytes of `v`, through `reader` when the caller keeps one (a stream, a file)."""
        try:
            data = (reader or self._doc_reader(state, path, v)).read(offset, length)
        except OSError as exc:
            raise io_error(exc, f"reading {path!r}") from exc
        except ValueError as exc:  # a page past the end of the file
            raise E.CorruptionError(f"{path!r} points past the end of the file") from exc
        self._counters.read(len(data))
        return data

    def snapshot(self) -> Snapshot:
        """A consistent, read-only view of the last committed state (O(1)); see
        `Snapshot`. Inside a transaction, of that transaction's state so far; if the
        transaction then rolls back, the snapshot reads the state before it (views and
        streams taken inside keep their bytes either way)."""
        return Snapshot(self)

    def refresh(self) -> int:
        """Read-only databases: move on to the last committed state (reads see the state
        of the open, or of the last refresh). Returns its LSN. O(log bytes since the last
        refresh), or O(1) + a catalog reopen after a checkpoint. A writer's reads are always
        current: there it only returns the LSN."""
        self._check_open()
        if self.readonly:
            follower.refresh(self)
        return self._pins.current.lsn

    # -- writing -----------------------------------------------------------------------

    def write_document(self, path: str, data: object) -> uuid.UUID:
        """Write `data` (bytes-like, a binary file object, or an iterable of bytes-like
        chunks) as the new version of the document at `path`, creating it if needed.

        Returns the document id (stable across versions). Durable on return with
        durability="full" (inside a transaction: when it commits). Memory O(64 KiB + 1 MiB)
        whatever the size. Raises InvalidPathError, DocumentTooLargeError,
        StorageFullError; on any error nothing is visible and the previous version is intact.
        """
        return self.write_documents([(path, data)])[0]

    def put_table(self, path: str, table: arrow.Table | arrow.RecordBatch
                  | Iterable[arrow.RecordBatch] | Any, *, compression: str | None = None
                  ) -> uuid.UUID:
        """Store an Arrow table (or batches, or any object with the Arrow PyCapsule stream
        interface, such as a pyarrow or Polars table) at `path` as an Arrow IPC file
        (64-byte aligned, buffers compressed with `compression` "lz4"/"zstd" if given), the
        new version of the document. `get_table` reads it back. Raises as `write_document`."""
        from streamdb.arrow.writer import write_ipc

        checks.choice(compression, "compression", (None, "lz4", "zstd"))
        path_key(path)
        sink = io.BytesIO()
        write_ipc(sink, table, format="file", compression=compression)
        return self.write_document(path, sink.getbuffer())

    def append_batch(self, path: str, batch: arrow.RecordBatch | arrow.Table | Any) -> None:
        """Append a record batch (or a table's batches; or any object with the Arrow
        PyCapsule stream interface, such as a pyarrow or Polars table) to the Arrow IPC
        stream document at `path`, creating it (with the schema) if needed. In place, as a
        message log grows: one atomic, durable commit that rewrites nothing. A dictionary
        is written when the stream does not hold it yet: whole on the first append of this
        handle (or when it changed), as a delta when it only grew, not at all when
        unchanged since this handle's last append (if nothing else wrote the document
        since). A table without batches creates the stream with its schema. Columns in
        another form of the stored type (large_utf8 for utf8, ..., see `Table.cast`) are
        converted to it. `get_table` reads the stream. Raises ArrowError naming the field
        if the schema differs from the stored one in more than that, or a value does not
        fit; InvalidArgumentError if `path` holds something else (saying what) or `batch`
        is not Arrow data. O(batch bytes)."""
        tables.append_batch(self, path, batch)
    def write_documents(self, items: Iterable[tuple[str, object]]) -> list[uuid.UUID]:
        """Write many documents atomically: all are visible after one fsync, or none.
        `items` is an iterable of (path, data) pairs, data as for `write_document`; every
        pair is checked (InvalidPathError, InvalidArgumentError) before anything is
        written."""
        batch = _pairs(items)
        with self._writing() as tx:
            ids = []
            for key, path, data in batch:
                doc_id_bytes = self._catalog.lookup(key)
                doc = self._catalog.doc(doc_id_bytes) if doc_id_bytes is not None else None
                if doc_id_bytes is not None and doc is None:
                    raise E.CorruptionError("a path names a missing document", path=path)
                doc_id = uuid.uuid4() if doc is None else doc.doc_id
                number = 1 if doc is None else doc.latest.version + 1
                ingest = Ingest(self._pager, self._space, self._header.checksum,
                                self.config.max_document_size,
                                Transform(self._codec, self._cipher, doc_id.bytes, number))
                tx.ingests.append(ingest)
                try:
                    stored = ingest.run(data)
                except OSError as exc:
                    raise io_error(exc, f"writing {path!r}") from exc
                self._count("bytes_written", stored.size)
                now = time.time()
                version = Version(
                    number, self._next_lsn(), stored.size,
                    now if doc is None else doc.versions[-1].created, now,
                    self._header.checksum, CHUNK, tuple(ingest.extents), stored.sums,
                    stored.inline, self._codec if stored.table else 0,
                    sum(n for n, _, _ in stored.table) if stored.table else -1,
                    stored.table, stored.salt, doc_id.bytes,
                )
                if doc is None:
                    ops = [Op(OP_CREATE, doc_id, path=key, version=version)]
                else:
                    ops = [Op(OP_VERSION, doc_id, version=version)]
                self._log(ops)
                ids.append(doc_id)
            return ids

    def append_message(self, path: str, payload: Buffer, *,
                       checksum: str | None = "xxh3") -> int:
        """Append one framed message to the message log at `path` (created if absent, with
        `checksum`: "xxh3", "crc32", "crc16" or None, recorded with it). The log grows in
        place: no new version. Durable on return with durability="full" (inside a
        transaction: when it commits), and visible atomically. Returns the message's index.
        Raises InvalidArgumentError for a path that holds a plain document or a log with
        another checksum, DocumentTooLargeError past max_document_size."""
        return self.append_messages(path, (as_bytes(payload, "payload"),), checksum=checksum)

    def append_messages(self, path: str, payloads: Iterable[Buffer], *,
                        checksum: str | None = "xxh3") -> int:
        """`append_message` for many payloads (each bytes-like: any C-contiguous buffer) in
        one commit (one fsync). Returns the index of the first. O(total bytes + 256 KiB)."""
        checks.choice(checksum, "checksum", ("xxh3", "crc32", "crc16", None))
        path_key(path)
        if isinstance(payloads, str | bytes | bytearray | memoryview):
            raise E.InvalidArgumentError(
                "payloads must be an iterable of bytes-like messages (append_message takes "
                "one)")
        try:
            views = [as_bytes(p, "a message") for p in payloads]
        except TypeError:
            raise E.InvalidArgumentError(
                f"payloads must be an iterable of bytes-like messages, not "
                f"{type(payloads).__name__}") from None
        return logs.append_messages(self, path, views, checksum)

    def bind_to_path(self, doc_id: uuid.UUID, path: str) -> None:
        """Make `path` name the document `doc_id` too (an alias). A path that named another
        document is moved; that document is deleted if it has no path left."""
        doc_id = checks.doc_id(doc_id)
        key = path_key(path)
        with self._writing():
            if self._catalog.doc(doc_id.bytes) is None:
                raise E.NotFoundError(f"no document {doc_id}")
            self._log([Op(OP_BIND, doc_id, path=key)])

    def unbind_path(self, path: str) -> None:
        """Remove the path; the document is deleted if it has no path left."""
        self.delete(path)

    def delete(self, path: str) -> None:
        """Remove `path`. Raises NotFoundError (a KeyError) if it names nothing."""
        key = path_key(path)
        with self._writing():
            if self._catalog.lookup(key) is None:
                raise E.NotFoundError(f"no document at {path!r}")
            self._log([Op(OP_UNBIND, path=key)])

    def gc(self) -> int:
        """Drop versions beyond versions_to_keep and make freed space reusable (a
        checkpoint). Space a snapshot or reader still sees is reused once it is released.
        Returns the number of pages free afterwards."""
        with self._write_lock:
            self._check_no_tx("gc()")
            keep = self.config.versions_to_keep
            with self._writing():
                ops = [Op(OP_PRUNE, d.doc_id, keep=keep)
                       for d in self._catalog.iter_docs() if len(d.versions) > keep]
                if ops:
                    self._log(ops)
            self._checkpoint()
            return self._space.free_pages()

    # -- maintenance -------------------------------------------------------------------

    def set_quick_mode(self, on: bool) -> None:
        """Skip payload checksum verification on reads (metadata checks stay on)."""
        on = checks.flag(on, "on")
        if on and not self._warned_quick:
            warnings.warn("StreamDB quick mode: document checksums are not verified on read",
                          stacklevel=2)
            self._warned_quick = True
        self._quick = bool(on)

    def flush(self) -> None:
        """Make every commit durable now (matters with durability "normal" or "off")."""
        with self._write_lock:
            self._check_writable()
            assert self._wal is not None
            try:
                self._wal.sync()
            except wal.WalError as exc:
                self._after_log_failure(exc)
                raise wal_error(exc, f"flushing {self.path}") from exc
            self._note_durable()

    def checkpoint(self) -> None:
        """Write the index and every logged change into the database file (D4), so the
        log can be recycled. O(index size)."""
        with self._write_lock:
            self._check_writable()
            self._check_no_tx("checkpoint()")
            self._checkpoint()

    def _checkpoint(self, *, force: bool = False,
                    index: dict[str, Iterator[tuple[bytes, bytes]]] | None = None) -> None:
        try:
            maintenance.write_checkpoint(self, force=force, index=index)
        except OSError as exc:
            self._failed = f"a checkpoint failed ({exc})"
            raise io_error(exc, f"checkpointing {self.path}") from exc
        except wal.WalError as exc:
            self._failed = f"a checkpoint failed ({exc})"
            raise wal_error(exc, f"checkpointing {self.path}") from exc

    def _tree_pages(self, refs: dict[str, btree.TreeRef]) -> list[int]:
        return maintenance.tree_pages(self, refs)

    def verify(self) -> VerifyReport:
        """Check every checksum and structure: the header, each tree (order, separators,
        page checksums), every chunk of every kept version, that paths and documents agree,
        and that no page is used twice or both used and free.

        When the path index (the paths and suffix trees) is damaged or disagrees with the
        document records, it is rebuilt from those records (each lists its paths) and a
        checkpoint writes it; deleted or superseded documents are not in the records, so
        nothing comes back. O(database size) reads; writers wait meanwhile, readers do not.
        Returns a report; raises only for I/O errors or a closed database.
        """
        with self._write_lock:
            self._check_open()
            self._check_no_tx("verify()")
            return maintenance.verify(self)

    def backup(self, dest: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write a consistent copy of the database to `dest`: one file that opens as a
        database on its own (the database is checkpointed first). It is written under a
        temporary name beside `dest`, fsynced, then renamed, so `dest` is never half
        written and a failed backup leaves it as it was.

        Raises InvalidArgumentError when `dest` is one of this database's own files (the
        database, its log `NAME-wal` and `NAME-wal.N`, its reader table `NAME-readers`),
        however spelled (links count), or exists and `overwrite` is false. O(file size);
        writers wait meanwhile, readers do not."""
        from streamdb.backup import backup

        overwrite = checks.flag(overwrite, "overwrite")
        dest = checks.fspath(dest, "the backup destination")
        with self._write_lock:
            self._check_open()
            self._check_no_tx("backup()")
            backup(self, dest, overwrite=overwrite)

    def compact(self) -> None:
        """Rewrite the database into a new file holding only what is live, each version
        contiguous, and rename it over this one. Snapshots, streams and views taken before
        go on reading the old file, which is renamed over, never truncated. O(live data)."""
        with self._write_lock:
            self._check_writable()
            self._check_no_tx("compact()")
            maintenance.compact(self)

    def stats(self) -> Stats:
        self._check_open()
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
        """Checkpoint (so the .db file alone holds every committed byte), then release the
        files. Idempotent.

        Reads in flight finish first; writes and transactions in other threads finish
        first too. Afterwards snapshots and streams raise ClosedError, while views from
        `get_view` stay valid: their pages stay out of reuse, by this process and by later
        writers (through the reader table), until the views are gone. The files are
        released even when the checkpoint fails; what was committed is then still in the
        log, and the next open replays it.
        """
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
            follower.close(self)
            try:
                self._pager.close()
            except OSError as exc:
                error = error or io_error(exc, f"closing {self.path}")
            self._close_retired()
            if not self._pins.held():
                self._release_slot()
            if error is not None:
                raise error

    def _detach(self, *, close_file: bool = False) -> None:
        """Compaction's scratch database, done: close it without a checkpoint, remove its
        log and reader table, and keep its file open (the caller adopts it) unless
        `close_file`."""
        self._pins.closed = f"{self.path} was compacted into another database"
        _OPEN.discard(self)
        with contextlib.suppress(wal.WalError, OSError):  # scratch files: removed next
            if self._wal is not None:
                self._wal.close()
        self._remove_log()
        self._release_slot()
        remove_table(self._vfs, self.path)
        if close_file:
            self._pager.close()

    def _forget(self) -> None:
        """In a forked child: refuse every call, and drop our descriptors without any I/O
        (their locks and the parent's state are the parent's)."""
        self._pins.closed = (f"{self.path} was opened in process {self._pid}; after fork() "
                             f"the child must open the database again")
        with contextlib.suppress(OSError):  # descriptors only: nothing is written
            if self._wal is not None:
                self._wal.forget()
            if self._table is not None:
                self._table.forget()
            follower.close(self)
            self._pager.file.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        closed = hasattr(self, "_pins") and self._pins.closed is not None
        return f"<streamdb.Database {self.path!r}{' closed' if closed else ''}>"

    def open(self, path: str, mode: str = "rb") -> io.RawIOBase:
        """A file object: "rb" reads the latest version (seekable, readinto; it pins that
        version until closed); "wb" buffers and writes a new version when closed."""
        from streamdb.fileobj import DocumentReader, DocumentWriter

        checks.choice(mode, "mode", ("rb", "wb"))
        if mode == "rb":
            return DocumentReader(self, *self._hold_latest(path), path)
        if mode == "wb":
            path_key(path)
            self._check_writable()
            return DocumentWriter(self, path)
        raise E.InvalidArgumentError(f"mode must be 'rb' or 'wb', not {mode!r}")


def _pairs(items: object) -> list[tuple[bytes, str, object]]:
    """`write_documents`' items as (key, path, data), each checked. O(items)."""
    if isinstance(items, str | bytes | bytearray | memoryview) or not isinstance(
            items, Iterable):
        raise E.InvalidArgumentError(
            f"write_documents takes an iterable of (path, data) pairs, not "
            f"{type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise E.InvalidArgumentError(
                f"write_documents item {i} must be a (path, data) pair, not {item!r:.60}")
        path, data = item
        out.append((path_key(path), path, check_source(data)))
    return out


def _after_fork_in_child() -> None:
    for db in list(_OPEN):
        db._forget()
    _OPEN.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def open(  # mirrors dbm.open and the builtin
    path: str | os.PathLike[str],
    config: Config | None = None,
    readonly: bool = False,
    *,
    vfs: VFS | None = None,
    recover: str | None = None,
) -> Database:
    """Open (creating if missing, unless `readonly`) the database at `path`.

    One process at a time may open a database for writing; another gets LockedError (at
    once, or after `config.lock_timeout` seconds). `readonly=True` opens work in any
    number of processes while the writer writes, each reading the last committed state
    as of its open or its latest `refresh()`.

    An open that fails changes no file: the log's recovery and the reader table write only
    once everything else has succeeded (a new database's file and header are the one
    exception: they are written first).

    A writer open refuses a damaged log (CorruptionError). `recover="truncate-log"` salvages
    it instead (rules L1-L4 in `streamdb.salvage`): the damaged log files are copied beside
    the database, the state is the last checkpoint plus every whole commit before the first
    damage, made durable by a checkpoint, and the log starts over; `Database.recovery`
    reports what was dropped, and a `LogRecoveryWarning` is issued. InvalidArgumentError
    for another value, or with `readonly=True`.
    """
    return Database(path, config, readonly=readonly, vfs=vfs, recover=recover)
