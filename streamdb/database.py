"""The database: one `.db` file and its log `NAME-wal`, behind the API of DESIGN section 2.

Invariants (DESIGN section 3; tests name them):

D1. Never overwrite live data. New versions go to free pages; pages a superseded version or an
    old tree used are freed only after the next checkpoint is durable.
D2. The commit point is the log record reaching stable storage. A document larger than
    INLINE_MAX is written to pages and fdatasync'ed before the record that makes it visible.
D3. Every stored byte is checksummed: document chunks (XXH3-64 by default), tree pages,
    headers, log records.
D4. A checkpoint writes new trees to free pages, fsyncs, then writes the other header copy and
    fsyncs it, then lets the log recycle. A crash at any point leaves the previous header and
    its trees intact, and the log replays what they lack.
D5. The path index is the trees of the last checkpoint, read page by page, plus the changes
    since (replayed from the log on open): opening reads two header pages, not the index.

Locking: one lock serialises the API for now (snapshots and concurrent readers come next).
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, cast

import wal
from streamdb import errors as E
from streamdb import maintenance
from streamdb.config import Config
from streamdb.errmap import io_error, wal_error
from streamdb.maintenance import VerifyReport
from streamdb.paths import path_key, search_key
from streamdb.storage import btree
from streamdb.storage.catalog import KIND_FREE, Catalog
from streamdb.storage.docio import CHUNK, DocReader, Ingest
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import (
    CHECKSUM_CRC32C,
    CHECKSUM_XXH3,
    HEADER_PAGES,
    HEADER_SIZE,
    Header,
    could_be_ours,
    parse,
)
from streamdb.storage.logfiles import log_files, remove_log
from streamdb.storage.pager import Pager
from streamdb.storage.records import (
    OP_BIND,
    OP_PRUNE,
    OP_UNBIND,
    OP_VERSION,
    DocRecord,
    Op,
    Version,
    decode_op,
    encode_op,
)
from wal.vfs import VFS, OsVFS

CHECKPOINT_LOG_BYTES = 128 << 20  # checkpoint when this much has been logged since the last
_SYNC = {"full": "full", "normal": "batch", "off": "off"}


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    path: str
    doc_id: uuid.UUID
    version: int
    size: int
    created: float
    modified: float
    codec: str | None
    checksum: str
    paths: tuple[str, ...]


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
    cache_hits: int
    cache_misses: int


class _Store:
    """The page store the trees use: the pager plus free space, recording what it wrote."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.page_size = db._page_size
        self.written: list[int] = []
        self.at_end = False  # allocate past the end of the file (building the free tree)

    def page_count(self) -> int:
        return self.db._space.file_pages

    def read_page(self, page_no: int) -> memoryview:
        if not HEADER_PAGES <= page_no < self.db._space.file_pages:
            raise E.CorruptionError("tree points outside the file", page=page_no)
        try:
            return self.db._pager.read_page(page_no)
        except ValueError as exc:
            raise E.CorruptionError("tree page lies past the end of the file",
                                    page=page_no) from exc
        except OSError as exc:
            raise io_error(exc, f"reading page {page_no}") from exc

    def allocate(self, n_pages: int) -> int:
        space = self.db._space
        if self.at_end:
            start = space.file_pages
            space.file_pages += n_pages
            return start
        return space.allocate(n_pages)

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        self.db._pager.write_pages(page_no, data)
        self.written.extend(range(page_no, page_no + len(data) // self.page_size))


class Database:
    """An open StreamDB database. Create it with `streamdb.open`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: Config | None = None,
        *,
        readonly: bool = False,
        vfs: VFS | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.config = config or Config()
        self.readonly = readonly
        self._vfs: VFS = vfs if vfs is not None else OsVFS()
        self._lock = threading.RLock()
        self._closed = True
        self._failed: str | None = None
        self._quick = False
        self._warned_quick = False
        self._counters = dict.fromkeys(
            ("checkpoints", "commits", "reads", "bytes_read", "bytes_written"), 0
        )
        try:
            file = self._vfs.open(self.path, create=not readonly)
        except FileNotFoundError as exc:
            raise E.NotFoundError(f"no database at {self.path}") from exc
        except OSError as exc:
            raise io_error(exc, f"opening {self.path}") from exc
        try:
            self._lock_file(file)
            self._header = self._read_or_create_header(file)
            self._page_size = self._header.page_size
            self._pager = Pager(file, self._page_size, use_mmap=self.config.use_mmap)
            self._open_log()
        except OSError as exc:
            file.close()
            raise io_error(exc, f"opening {self.path}") from exc
        except BaseException:
            file.close()
            raise
        self._closed = False

    # -- opening -----------------------------------------------------------------------

    def _lock_file(self, file: Any) -> None:
        deadline = time.monotonic() + self.config.lock_timeout
        while True:
            try:
                file.lock()
                return
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    raise E.LockedError(f"{self.path} is open for writing elsewhere") from exc
                time.sleep(0.01)
            except OSError as exc:
                raise io_error(exc, f"locking {self.path}") from exc

    def _read_or_create_header(self, file: Any) -> Header:
        """The current header copy; a new database for an empty or never-initialised file.
        Raises UnsupportedError (never modifying the file) for a foreign or newer file."""
        try:
            size = file.size()
            first = file.pread(HEADER_SIZE, 0)
        except OSError as exc:
            raise io_error(exc, f"reading {self.path}") from exc
        if not could_be_ours(first):
            raise E.UnsupportedError(f"{self.path} is not a StreamDB database")
        candidates = []
        a = parse(first)
        sizes = [a.page_size] if a is not None else [4096 << i for i in range(5)]
        if a is not None:
            candidates.append(a)
        for page_size in sizes:
            try:
                b = parse(file.pread(HEADER_SIZE, page_size))
            except OSError as exc:
                raise io_error(exc, f"reading {self.path}") from exc
            if b is not None and (a is None or b.db_id == a.db_id):
                candidates.append(b)
                break
        if candidates:
            return max(candidates, key=lambda h: h.generation)
        if size > 2 * 65536 or any(file.pread(min(size, 2 * 65536), 0)[HEADER_SIZE:]):
            raise E.CorruptionError(f"both headers of {self.path} are damaged", page=0)
        if self.readonly:
            raise E.NotFoundError(f"{self.path} holds no database yet")
        return self._create(file)

    def _create(self, file: Any) -> Header:
        algo = CHECKSUM_XXH3 if self.config.checksum == "xxh3" else CHECKSUM_CRC32C
        header = Header(self.config.page_size, uuid.uuid4(), generation=1, checksum=algo)
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
            older = replace(header, generation=0).pack().ljust(page, b"\x00")
            file.pwritev([header.pack().ljust(page, b"\x00"), older], 0)
            file.sync()
            self._vfs.sync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            raise io_error(exc, f"creating {self.path}") from exc
        return header

    def _remove_log(self) -> None:
        remove_log(self._vfs, self.path)

    def _open_log(self) -> None:
        header = self._header
        max_pages = self.config.max_db_size // self._page_size
        self._space = FreeSpace(header.file_pages, max_pages)
        self._store = _Store(self)
        self._reload_state()
        try:
            self._wal = wal.open(self.path + "-wal", sync=_SYNC[self.config.durability],  # type: ignore[arg-type]
                                 vfs=self._vfs)
        except wal.WalError as exc:
            raise wal_error(exc, f"opening the log of {self.path}") from exc
        try:
            self._applied_lsn = header.checkpoint_lsn
            self._replay()
            self._wal.skip_to(self._applied_lsn)
        except wal.WalError as exc:
            self._wal.close()
            raise wal_error(exc, f"opening the log of {self.path}") from exc
        except BaseException:
            self._wal.close()
            raise
        self._logged_bytes = 0

    def _replay(self) -> None:
        """Apply logged operations past the checkpoint (D4). O(log bytes)."""
        try:
            for record in self._wal.replay(self._applied_lsn + 1):
                op = decode_op(record.payload)
                if op.kind == OP_VERSION and op.version is not None:
                    for start, count in op.version.extents:
                        self._space.claim(start, count)
                self._catalog.apply(op)
                self._applied_lsn = record.lsn
        except wal.WalError as exc:
            raise wal_error(exc, f"replaying the log of {self.path}") from exc

    def _defer_free(self, extents: tuple[tuple[int, int], ...]) -> None:
        for start, count in extents:
            self._space.defer(start, count)

    # -- guards ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise E.ClosedError(f"{self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise E.ReadOnlyError(f"{self.path} was opened read-only")
        if self._failed is not None:
            raise E.StorageIOError(errno.EIO, f"{self._failed}; reopen the database")

    # -- writing -----------------------------------------------------------------------

    def write_document(self, path: str, data: object) -> uuid.UUID:
        """Write `data` (bytes-like, a binary file object, or an iterable of bytes-like
        chunks) as the new version of the document at `path`, creating it if needed.

        Returns the document id (stable across versions). Durable on return with
        durability="full". Memory O(64 KiB + 1 MiB) whatever the size. Raises
        InvalidPathError, DocumentTooLargeError, StorageFullError; on any error nothing is
        visible and the previous version is intact.
        """
        return self.write_documents([(path, data)])[0]

    def write_documents(self, items: Iterable[tuple[str, object]]) -> list[uuid.UUID]:
        """Write many documents atomically: all are visible after one fsync, or none."""
        with self._lock:
            self._check_writable()
            ops: list[Op] = []
            ingests: list[Ingest] = []
            ids: list[uuid.UUID] = []
            planned: dict[bytes, tuple[uuid.UUID, int]] = {}
            try:
                for path, data in items:
                    key = path_key(path)
                    doc_id, number = self._next_version(key, planned)
                    ingest = Ingest(self._pager, self._space, self._header.checksum,
                                    self.config.max_document_size)
                    ingests.append(ingest)
                    try:
                        size, sums, inline = ingest.run(data)
                    except OSError as exc:
                        raise io_error(exc, f"writing {path!r}") from exc
                    now = time.time()
                    created = now
                    doc = self._catalog.doc(doc_id.bytes)
                    if doc is not None:
                        created = doc.versions[-1].created
                    # Operations get consecutive LSNs (one writer, lock held): stamp it now.
                    lsn = self._wal.next_lsn + len(ops)
                    version = Version(number, lsn, size, created, now, self._header.checksum,
                                      CHUNK, tuple(ingest.extents), sums, inline)
                    ops.append(Op(OP_VERSION, doc_id, version=version))
                    if key not in planned and self._catalog.lookup(key) is None:
                        ops.append(Op(OP_BIND, doc_id, path=key))
                    planned[key] = (doc_id, number)
                    ids.append(doc_id)
                self._commit(ops, ingests)
            except BaseException:
                for ingest in ingests:
                    ingest.abandon()
                raise
            return ids

    def _next_version(
        self, key: bytes, planned: dict[bytes, tuple[uuid.UUID, int]]
    ) -> tuple[uuid.UUID, int]:
        if key in planned:
            doc_id, number = planned[key]
            return doc_id, number + 1
        existing = self._catalog.lookup(key)
        if existing is None:
            return uuid.uuid4(), 1
        doc = self._catalog.doc(existing)
        if doc is None:
            raise E.CorruptionError("a path names a missing document",
                                    path=key.decode("utf-8", "replace"))
        return doc.doc_id, doc.latest.version + 1

    def _commit(self, ops: list[Op], ingests: Iterable[Ingest] = ()) -> int:
        """Log `ops` as one atomic batch, then apply them (D2). Lock held."""
        if any(ingest.extents for ingest in ingests):
            try:
                self._pager.sync()  # the pages first: the log record will point at them
            except OSError as exc:
                raise io_error(exc, f"syncing {self.path}") from exc
        payloads = [encode_op(op) for op in ops]
        try:
            first = self._wal.next_lsn
            for payload in payloads:
                self._wal.append(payload)
            last = self._wal.commit()
            assert last == first + len(ops) - 1, "log LSNs are consecutive within a batch"
        except wal.WalError as exc:
            self._after_log_failure(exc)
            raise wal_error(exc, f"committing to {self.path}") from exc
        for op in ops:
            self._catalog.apply(op)
        self._applied_lsn = last
        self._counters["commits"] += 1
        self._logged_bytes += sum(len(p) for p in payloads)
        if self._logged_bytes > CHECKPOINT_LOG_BYTES:
            self._checkpoint()
        return last

    def _after_log_failure(self, exc: wal.WalError) -> None:
        """A failed write to the log (ENOSPC) leaves the database usable: reopen the log,
        which drops the torn batch. A failed fsync does not: what the kernel dropped cannot
        be known, so writes are refused until the database is reopened."""
        if isinstance(exc, wal.WalIOError) and exc.during == "syncing":
            self._failed = f"an fsync of the log failed ({exc})"
            return
        try:
            self._wal.close()
            self._wal = wal.open(self.path + "-wal", sync=_SYNC[self.config.durability],  # type: ignore[arg-type]
                                 vfs=self._vfs)
            self._replay()  # in case the batch did reach the log after all
            self._wal.skip_to(self._applied_lsn)
        except (wal.WalError, E.StreamDbError) as again:
            self._failed = f"the log could not be reopened ({again})"

    # -- reading -----------------------------------------------------------------------

    def _doc_at(self, path: str) -> tuple[bytes, DocRecord]:
        key = path_key(path)
        doc_id = self._catalog.lookup(key)
        doc = self._catalog.doc(doc_id) if doc_id is not None else None
        if doc is None:
            raise E.NotFoundError(f"no document at {path!r}")
        return key, doc

    def _version(self, path: str, version: int | None) -> Version:
        _, doc = self._doc_at(path)
        if version is None:
            return doc.latest
        for v in doc.versions:
            if v.version == version:
                return v
        raise E.NotFoundError(f"{path!r} has no version {version} (kept: "
                              f"{[v.version for v in doc.versions]})")

    def _reader(self, path: str, v: Version) -> DocReader:
        self._counters["reads"] += 1
        return DocReader(self._pager, v, path, verify=not self._quick)

    def get(self, path: str, version: int | None = None, offset: int = 0,
            length: int | None = None) -> bytes:
        """The bytes of the latest (or the given kept) version, or of a range of it.

        O(length); every chunk touched is verified (unless quick mode). Raises
        NotFoundError, InvalidArgumentError, ChecksumMismatch naming the path and offset.
        """
        if offset < 0 or (length is not None and length < 0):
            raise E.InvalidArgumentError("offset and length must be >= 0")
        with self._lock:
            self._check_open()
            v = self._version(path, version)
            data = self._read(path, v, offset, v.size - offset if length is None else length)
            return data

    def _read(self, path: str, v: Version, offset: int, length: int) -> bytes:
        try:
            data = self._reader(path, v).read(offset, length)
        except OSError as exc:
            raise io_error(exc, f"reading {path!r}") from exc
        self._counters["bytes_read"] += len(data)
        return data

    def get_view(self, path: str) -> memoryview:
        """The latest version as a read-only memoryview, zero-copy over the memory map when
        the document is stored uncompressed in one extent (a copy otherwise).

        Lifetime: the view stays valid after later writes and after close() (the map lives
        as long as the view). Its bytes are the version's until that version is superseded
        and a checkpoint has run; after that the pages may be reused: keep a copy (`get`)
        of anything held across writes.
        """
        with self._lock:
            self._check_open()
            v = self._version(path, None)
            try:
                view = self._reader(path, v).view()
            except OSError as exc:
                raise io_error(exc, f"reading {path!r}") from exc
            if view is None:
                view = memoryview(self._read(path, v, 0, v.size))
            return view.toreadonly()

    def get_stream(self, path: str, chunk_size: int | None = None) -> Iterator[bytes]:
        """The latest version as an iterator of `bytes` chunks (256 KiB by default), each
        verified as it is read and valid after `next()`. Memory O(chunk). The version is
        fixed when the iterator is created."""
        if chunk_size is not None and chunk_size <= 0:
            raise E.InvalidArgumentError("chunk_size must be > 0")
        with self._lock:
            self._check_open()
            v = self._version(path, None)
        step = chunk_size or v.chunk_size or CHUNK
        return self._stream(path, v, step)

    def _stream(self, path: str, v: Version, step: int) -> Iterator[bytes]:
        for offset in range(0, v.size, step):
            with self._lock:
                self._check_open()
                yield self._read(path, v, offset, step)

    async def get_async(self, path: str) -> bytes:
        """`get` on a worker thread, so the event loop is not blocked."""
        return await asyncio.to_thread(self.get, path)

    def info(self, path: str) -> DocumentInfo:
        with self._lock:
            self._check_open()
            _, doc = self._doc_at(path)
            v = doc.latest
            return DocumentInfo(
                path, doc.doc_id, v.version, v.size, v.created, v.modified,
                None if not v.codec else str(v.codec),
                "xxh3" if v.checksum == CHECKSUM_XXH3 else "crc32c",
                tuple(_text(p) for p in doc.paths),
            )

    def versions(self, path: str) -> list[int]:
        """Kept version numbers, oldest first."""
        with self._lock:
            self._check_open()
            _, doc = self._doc_at(path)
            return sorted(v.version for v in doc.versions)

    # -- paths -------------------------------------------------------------------------

    def search(self, prefix: str) -> list[str]:
        """Every path starting with `prefix`, sorted. O(log n + k)."""
        key = search_key(prefix, "prefix")
        with self._lock:
            self._check_open()
            return [_text(k) for k in self._catalog.iter_paths(key)]

    def search_suffix(self, suffix: str) -> list[str]:
        """Every path ending with `suffix`, sorted. O(log n + k log k)."""
        key = search_key(suffix, "suffix")
        with self._lock:
            self._check_open()
            return sorted(_text(k) for k in self._catalog.iter_suffix(key))

    def exists(self, path: str) -> bool:
        key = path_key(path)
        with self._lock:
            self._check_open()
            return self._catalog.lookup(key) is not None

    def __contains__(self, path: object) -> bool:
        try:
            return self.exists(cast(str, path))
        except E.InvalidPathError:
            return False

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return self._catalog.count

    def __iter__(self) -> Iterator[str]:
        """Paths in sorted order (a snapshot taken when iteration starts)."""
        return iter(self.search("/"))

    def get_id_by_path(self, path: str) -> uuid.UUID:
        with self._lock:
            self._check_open()
            return self._doc_at(path)[1].doc_id

    def list_paths(self, doc_id: uuid.UUID) -> list[str]:
        with self._lock:
            self._check_open()
            doc = self._catalog.doc(doc_id.bytes)
            if doc is None:
                raise E.NotFoundError(f"no document {doc_id}")
            return [_text(p) for p in doc.paths]

    def bind_to_path(self, doc_id: uuid.UUID, path: str) -> None:
        """Make `path` name the document `doc_id` too (an alias). A path that named another
        document is moved; that document is deleted if it has no path left."""
        key = path_key(path)
        with self._lock:
            self._check_writable()
            if self._catalog.doc(doc_id.bytes) is None:
                raise E.NotFoundError(f"no document {doc_id}")
            self._commit([Op(OP_BIND, doc_id, path=key)])

    def unbind_path(self, path: str) -> None:
        """Remove the path; the document is deleted if it has no path left."""
        self.delete(path)

    def delete(self, path: str) -> None:
        """Remove `path`. Raises NotFoundError (a KeyError) if it names nothing."""
        key = path_key(path)
        with self._lock:
            self._check_writable()
            if self._catalog.lookup(key) is None:
                raise E.NotFoundError(f"no document at {path!r}")
            self._commit([Op(OP_UNBIND, path=key)])

    def gc(self) -> int:
        """Drop versions beyond versions_to_keep and make freed space reusable (a
        checkpoint). Returns the number of pages free afterwards."""
        with self._lock:
            self._check_writable()
            keep = self.config.versions_to_keep
            ops = [Op(OP_PRUNE, d.doc_id, keep=keep)
                   for d in self._catalog.iter_docs() if len(d.versions) > keep]
            if ops:
                self._commit(ops)
            self._checkpoint()
            return self._space.free_pages()

    # -- maintenance -------------------------------------------------------------------

    def set_quick_mode(self, on: bool) -> None:
        """Skip payload checksum verification on reads (metadata checks stay on)."""
        if on and not self._warned_quick:
            warnings.warn("StreamDB quick mode: document checksums are not verified on read",
                          stacklevel=2)
            self._warned_quick = True
        self._quick = bool(on)

    def flush(self) -> None:
        """Make every commit durable now (matters with durability "normal" or "off")."""
        with self._lock:
            self._check_writable()
            try:
                self._wal.sync()
            except wal.WalError as exc:
                self._after_log_failure(exc)
                raise wal_error(exc, f"flushing {self.path}") from exc

    def checkpoint(self) -> None:
        """Write the index and every logged change into the database file (D4), so the
        log can be recycled. O(index size)."""
        with self._lock:
            self._check_writable()
            self._checkpoint()

    def _checkpoint(self, *, force: bool = False) -> None:
        try:
            maintenance.write_checkpoint(self, force=force)
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
        nothing comes back. O(database size) reads. Returns a report; raises only for I/O
        errors or a closed database.
        """
        with self._lock:
            return maintenance.verify(self)

    def backup(self, dest: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the database to `dest` (one .db file: it is
        checkpointed first), under a temporary name, fsynced, then renamed, so `dest` is
        never half written. O(file size); writers wait meanwhile."""
        with self._lock:
            maintenance.backup(self, dest)

    def compact(self) -> None:
        """Rewrite the database into a new file holding only what is live, each version
        contiguous, and rename it over this one. Views from `get_view` stay valid (the old
        file is renamed over, never truncated). O(live data)."""
        with self._lock:
            maintenance.compact(self)

    def _reload_state(self) -> None:
        """Free space and catalog from the current header.

        The header's page count may exceed the file (pages allocated at the end by a write
        that never committed were never written); free extents past the real end are
        dropped rather than trusted, so a damaged count cannot make the file grow.
        """
        header = self._header
        actual = -(-self._pager.file.size() // self._page_size)
        self._space = FreeSpace(min(header.file_pages, max(actual, HEADER_PAGES)),
                                self._space.max_pages)
        free = btree.Tree(self._store, header.trees["free"], kind=KIND_FREE)
        for key, value in free.items():
            start = int.from_bytes(key, "big")
            end = min(start + int.from_bytes(value, "little"), self._space.file_pages)
            if HEADER_PAGES <= start < end:
                self._space.free(start, end - start)
        self._catalog = Catalog(self._store, header.trees, keep=self.config.versions_to_keep,
                                on_free=self._defer_free,
                                cache_pages=self.config.page_cache_size)

    def stats(self) -> Stats:
        with self._lock:
            self._check_open()
            c = self._counters
            hits, misses = self._catalog.cache_stats()
            return Stats(
                paths=self._catalog.count,
                documents_changed_since_checkpoint=len(self._catalog.d_docs),
                page_size=self._page_size,
                file_pages=self._space.file_pages,
                free_pages=self._space.free_pages(),
                pending_free_pages=sum(n for _, n in self._space.pending),
                checkpoints=c["checkpoints"],
                commits=c["commits"],
                reads=c["reads"],
                bytes_read=c["bytes_read"],
                bytes_written=c["bytes_written"],
                cache_hits=hits,
                cache_misses=misses,
            )

    def close(self) -> None:
        """Checkpoint (so the .db file alone holds every committed byte), then release the
        files. Idempotent. The files are released even when the checkpoint fails; what was
        committed is then still in the log, and the next open replays it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            error: E.StreamDbError | None = None
            if not self.readonly and self._failed is None:
                try:
                    self._checkpoint()
                except E.StreamDbError as exc:
                    error = exc
            try:
                self._wal.close()
            except wal.WalError as exc:
                error = error or wal_error(exc, f"closing the log of {self.path}")
            try:
                self._pager.close()
            except OSError as exc:
                error = error or io_error(exc, f"closing {self.path}")
            if error is not None:
                raise error

    def __enter__(self) -> Database:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<streamdb.Database {self.path!r}{' closed' if self._closed else ''}>"

    def open(self, path: str, mode: str = "rb") -> io.RawIOBase:
        """A file object: "rb" reads the latest version (seekable, readinto); "wb" buffers
        and writes a new version when closed."""
        from streamdb.fileobj import DocumentReader, DocumentWriter

        if mode == "rb":
            with self._lock:
                self._check_open()
                v = self._version(path, None)
            return DocumentReader(self, path, v)
        if mode == "wb":
            path_key(path)
            self._check_writable()
            return DocumentWriter(self, path)
        raise E.InvalidArgumentError(f"mode must be 'rb' or 'wb', not {mode!r}")


def _text(key: bytes) -> str:
    """A stored path key as text; keys are written as valid UTF-8, so anything else is
    damage."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise E.CorruptionError(f"a stored path is not UTF-8: {key[:80]!r}") from exc


def open(  # mirrors dbm.open and the builtin
    path: str | os.PathLike[str],
    config: Config | None = None,
    readonly: bool = False,
    *,
    vfs: VFS | None = None,
) -> Database:
    """Open (creating if missing, unless `readonly`) the database at `path`."""
    return Database(path, config, readonly=readonly, vfs=vfs)
