"""The engine's writer: how the one writer applies, logs, commits and undoes.

Every write runs as a transaction: its own (one write, one commit), or the calling thread's
`transaction()`. A write's operations are applied to the catalog under LSNs above the
published one (other threads cannot see them, C2) and reach the log batch when the write
succeeds; the commit writes the batch (one fsync), then publishes the new state.

Rules (tests name them):
X1. A write that fails inside a transaction is undone alone: catalog entries after its
    first LSN, deferred frees after it, the pages it wrote. The transaction goes on.
X2. A failing log (a failed write or fsync) takes the whole transaction with it, and no
    write follows until the log is reopened (`_after_log_failure`).
X3. Undone documents' pages go back to free space, unless a view, stream or snapshot taken
    inside the transaction still reads them: then they wait for it (`_orphans`).
X4. Transactions do not nest; maintenance that checkpoints is refused inside one.

The write operations the façade and the features use (`write_documents`, `bind`, `unbind`,
`prune`, and inside `writing()`: `lookup_doc`, `log`, `log_append`, ...) are this part's
public methods.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import wal
from streamdb import errors as E
from streamdb.engine.base import EngineFields
from streamdb.errmap import io_error, wal_error
from streamdb.storage.catalog import Catalog
from streamdb.storage.docio import CHUNK, INLINE_MAX, Ingest, PageWrite, Transform, checksum
from streamdb.storage.logio import LogAppend
from streamdb.storage.records import (
    OP_BIND,
    OP_CREATE,
    OP_PRUNE,
    OP_UNBIND,
    OP_VERSION,
    DocRecord,
    Op,
    Version,
    encode_op,
)
from streamdb.storage.transform import Cipher

CHECKPOINT_LOG_BYTES = 128 << 20  # checkpoint when this much has been logged since the last
SYNC = {"full": "full", "normal": "batch", "off": "off"}


@dataclass(slots=True)
class Tx:
    """The writer's open transaction: ops applied to the catalog, not yet committed."""

    user: bool  # opened by `transaction()` (else one write's own)
    ingests: list[PageWrite]  # documents and appends written to pages by this transaction
    payloads: list[bytes]  # the current write's log records, appended when it succeeds
    records: int = 0  # log records appended
    logged: int = 0  # their bytes
    # path keys whose documents this transaction changed (their cached locations go when
    # it is published)
    touched: set[bytes] = field(default_factory=set)


class Writes(EngineFields):
    """The writer part of `Engine` (rules X1-X4)."""

    def transaction(self) -> Transaction:
        """`Database.transaction()`: see there."""
        return Transaction(self)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Tx]:
        """One write: join this thread's transaction, or run as a transaction of its own.

        Its operations are applied to the catalog as it goes (so it sees its own earlier
        ones) and reach the log batch only when it succeeds, so a write that fails inside a
        transaction is undone alone and the transaction goes on. Only a failing log takes
        the whole transaction with it."""
        with self._write_lock:
            self.check_writable()
            own = self._tx is None
            if own:
                self._begin(user=False)
            tx = self._tx
            assert tx is not None
            lsn, mark, ingests = self._applied_lsn, self._catalog.undo_mark(), len(tx.ingests)
            try:
                yield tx
                self._append(tx)
            except BaseException:
                if own or self._failed is not None:
                    self._abort()
                else:
                    self._undo_write(lsn, mark, ingests)
                raise
            if own:
                self._commit()

    # -- the write operations ------------------------------------------------------------

    def write_documents(self, batch: list[tuple[bytes, str, object]]) -> list[uuid.UUID]:
        """New versions of the documents at the given path keys (creating them), from
        checked (key, path, data) triples: one atomic commit (one fsync), or nothing.
        Memory O(64 KiB + 1 MiB) a document whatever its size. Raises as
        `Database.write_documents`.

        The common case, `bytes` of at most 64 KiB in a database without compression or
        encryption, takes a short path: one checksum, ids drawn in bulk, one clock read per
        batch, and the garbage collector paused while the batch's records are built (they
        are many small objects that live until the commit). Alone, such a document travels
        in its log record (one fsync); in a batch of more than BATCH_TO_PAGES bytes of them,
        those too big for a tree leaf go to pages allocated together and written with one
        pwritev per 1,024 of them, and only their records travel in the log (two fsyncs a
        batch, and a checkpoint that does not write them again)."""
        catalog, checksum_of = self._catalog, self._header.checksum
        plain = not self._codec and self._cipher is None
        limit = min(INLINE_MAX, CHUNK, self.config.max_document_size)
        now = time.time()
        fresh = _ids(len(batch))
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            with self.writing() as tx:
                placed = self._place_batch(tx, batch, limit) if plain else {}
                ids = []
                written = 0
                for i, (key, path, data) in enumerate(batch):
                    doc_id_bytes = catalog.lookup(key)
                    doc = catalog.doc(doc_id_bytes) if doc_id_bytes is not None else None
                    if doc_id_bytes is not None and doc is None:
                        raise E.CorruptionError("a path names a missing document", path=path)
                    doc_id = fresh[i] if doc is None else doc.doc_id
                    number = 1 if doc is None else doc.latest.version + 1
                    if plain and type(data) is bytes and len(data) <= limit:
                        size = len(data)
                        extent = placed.get(i)
                        version = Version(
                            number, self._next_lsn(), size,
                            now if doc is None else doc.versions[-1].created, now,
                            checksum_of, CHUNK, () if extent is None else (extent,),
                            (checksum(checksum_of, data),), data if extent is None else None,
                            doc=doc_id.bytes)
                    else:
                        version = self._ingest(tx, doc_id, number, path, data, now,
                                               None if doc is None else doc.versions[-1])
                        size = version.size
                    written += size
                    if doc is None:
                        self._log([Op(OP_CREATE, doc_id, path=key, version=version)])
                    else:
                        self._log([Op(OP_VERSION, doc_id, version=version)])
                    ids.append(doc_id)
                self._count("bytes_written", written)
                return ids
        finally:
            if paused:
                gc.enable()

    def _place_batch(self, tx: Tx, batch: list[tuple[bytes, str, object]], limit: int
                     ) -> dict[int, tuple[int, int]]:
        """For a batch of more than BATCH_TO_PAGES bytes of small plain documents too big
        for a tree leaf: one extent for all of them, written in runs of 1,024 buffers (each
        document, then the zeros that fill its last page); their extents by batch index.
        Empty when the batch is small (its documents travel in the log). Allocates and
        writes pages (they are the transaction's: undone with it)."""
        page = self._page_size
        chosen = [(i, data) for i, (_, _, data) in enumerate(batch)
                  if type(data) is bytes and page // 4 < len(data) <= limit]
        if len(chosen) < 2 or sum(len(d) for _, d in chosen) <= BATCH_TO_PAGES:
            return {}
        pages = [-(-len(d) // page) for _, d in chosen]
        run = _Run()
        tx.ingests.append(run)
        start = self._space.allocate(sum(pages))
        run.extents.append((start, sum(pages)))
        placed: dict[int, tuple[int, int]] = {}
        zeros = bytes(page)
        at, buffers, first = start, [], start
        try:
            for (i, data), n in zip(chosen, pages, strict=True):
                placed[i] = (at, n)
                buffers.append(data)
                pad = n * page - len(data)
                if pad:
                    buffers.append(zeros[:pad])
                at += n
                if len(buffers) >= 1024:
                    self._pager.write(first * page, buffers)
                    buffers, first = [], at
            if buffers:
                self._pager.write(first * page, buffers)
        except OSError as exc:
            raise io_error(exc, f"writing a batch to {self.path}") from exc
        run.wrote = True
        return placed

    def _ingest(self, tx: Tx, doc_id: uuid.UUID, number: int, path: str, data: object,
                now: float, oldest: Version | None) -> Version:
        """The general path of `write_documents`: any source, any size, transformed."""
        header = self._header
        ingest = Ingest(self._pager, self._space, header.checksum,
                        self.config.max_document_size,
                        Transform(self._codec, self._cipher, doc_id.bytes, number))
        tx.ingests.append(ingest)
        try:
            stored = ingest.run(data)
        except OSError as exc:
            raise io_error(exc, f"writing {path!r}") from exc
        return Version(
            number, self._next_lsn(), stored.size,
            now if oldest is None else oldest.created, now,
            header.checksum, CHUNK, tuple(ingest.extents), stored.sums,
            stored.inline, self._codec if stored.table else 0,
            sum(n for n, _, _ in stored.table) if stored.table else -1,
            stored.table, stored.salt, doc_id.bytes,
        )

    def bind(self, doc_id: uuid.UUID, key: bytes) -> None:
        """Make the path key name the document too; NotFoundError if there is none."""
        with self.writing():
            if self._catalog.doc(doc_id.bytes) is None:
                raise E.NotFoundError(f"no document {doc_id}")
            self._log([Op(OP_BIND, doc_id, path=key)])

    def unbind(self, key: bytes, path: str) -> None:
        """Remove the path; NotFoundError (naming `path`) if it names nothing."""
        with self.writing():
            if self._catalog.lookup(key) is None:
                raise E.NotFoundError(f"no document at {path!r}")
            self._log([Op(OP_UNBIND, path=key)])

    def gc(self) -> int:
        """Drop versions beyond versions_to_keep, then checkpoint; the free pages after.
        O(documents)."""
        with self._write_lock:
            self.check_no_tx("gc()")
            keep = self.config.versions_to_keep
            with self.writing():
                ops = [Op(OP_PRUNE, d.doc_id, keep=keep)
                       for d in self._catalog.iter_docs() if len(d.versions) > keep]
                if ops:
                    self._log(ops)
            self._checkpoint()
            return self._space.free_pages()

    # -- inside `writing()`: what features that write build on ---------------------------

    def lookup_doc(self, key: bytes) -> DocRecord | None:
        """The document at a path key as this write sees it (its own changes included).
        Raises CorruptionError when the path names a missing document. O(log n)."""
        doc_id = self._catalog.lookup(key)
        if doc_id is None:
            return None
        doc = self._catalog.doc(doc_id)
        if doc is None:
            raise E.CorruptionError("a path names a missing document")
        return doc

    @property
    def checksum_algorithm(self) -> int:
        """The chunk checksum new versions use (storage.header CHECKSUM_*)."""
        return self._header.checksum

    @property
    def cipher(self) -> Cipher | None:
        return self._cipher

    def log_append(self) -> LogAppend:
        """A grower of a message log's latest version, its pages given back if this write
        is undone."""
        assert self._tx is not None, "inside writing()"
        append = LogAppend(self._pager, self._space, self._cipher)
        self._tx.ingests.append(append)
        return append

    def next_lsn(self) -> int:
        """The LSN the next operation of this write gets."""
        return self._next_lsn()

    def log(self, ops: list[Op]) -> None:
        """Apply `ops` to this write (they commit with it)."""
        self._log(ops)

    def count_written(self, n: int) -> None:
        self._count("bytes_written", n)

    def take_ipc_writer(self, path: str) -> tuple[tuple[bytes | None, int, int], Any] | None:
        """The IPC writer this handle's last `append_batch` to `path` left, and the
        (document, LSN, size) it left the document at; forgotten here."""
        return self._ipc_appends.pop(path, None)

    def keep_ipc_writer(self, path: str, where: tuple[bytes | None, int, int],
                        writer: Any) -> None:
        """Remember the IPC writer of an `append_batch` that committed (the last 64)."""
        if len(self._ipc_appends) >= 64:
            del self._ipc_appends[next(iter(self._ipc_appends))]
        self._ipc_appends[path] = (where, writer)

    # -- transactions ---------------------------------------------------------------------

    def _begin(self, *, user: bool) -> None:
        self._collect_orphans()
        self._tx = Tx(user, [], [])
        self._tx_owner = threading.get_ident()
        self._catalog.horizon = self._horizon()

    def _undo_write(self, lsn: int, mark: int, ingests: int) -> None:
        """Undo what one failed write inside a transaction applied after LSN `lsn` (none
        of it reached the log): the transaction goes on as before the write."""
        tx = self._tx
        assert tx is not None
        self._catalog.rollback(lsn, mark)
        self._space.undefer_after((self._header.generation, lsn))
        self._give_back(tx.ingests[ingests:], lsn)
        del tx.ingests[ingests:]
        tx.payloads.clear()
        self._applied_lsn = lsn

    def _abort(self) -> None:
        """Drop the open transaction: the log batch, the catalog entries, the pages."""
        tx, self._tx, self._tx_owner = self._tx, None, None
        assert tx is not None and self._wal is not None
        published = self._pins.current.lsn
        self._catalog.rollback(published)
        self._space.undefer_after((self._header.generation, published))
        self._give_back(tx.ingests, published)
        self._applied_lsn = published
        if tx.records:
            try:
                self._wal.rollback()
            except wal.WalError as exc:
                self._failed = f"a rollback of the log failed ({exc})"

    def _give_back(self, ingests: list[PageWrite], upto: int) -> None:
        """Return the pages of written-then-undone documents. A view, stream or snapshot
        taken inside the transaction may still read them: then they wait for it."""
        extents = [e for ingest in ingests for e in ingest.extents]
        if not extents:
            return
        readers = {s for s in self._pins.held() if s.lsn > upto and s.catalog is self._catalog}
        if readers:
            self._orphans.append((extents, readers))
        else:
            for start, count in extents:
                self._space.free(start, count)

    def _collect_orphans(self) -> None:
        """Free undone documents' pages nobody reads any more. Writer lock held."""
        if not self._orphans:
            return
        held = set(self._pins.held())
        for orphan in list(self._orphans):
            extents, readers = orphan
            if not readers & held:
                self._orphans.remove(orphan)
                for start, count in extents:
                    self._space.free(start, count)

    def _next_lsn(self) -> int:
        """The LSN the next operation of this write gets (one writer: nobody else
        appends meanwhile)."""
        assert self._tx is not None and self._wal is not None
        return self._wal.next_lsn + len(self._tx.payloads)

    def _log(self, ops: list[Op]) -> None:
        """Apply `ops` to the catalog; they reach the log batch when the write succeeds."""
        tx = self._tx
        assert tx is not None
        for op in ops:
            touched(self._catalog, op, tx.touched)
            lsn = self._next_lsn()
            self._catalog.apply(op, lsn)
            self._applied_lsn = lsn
            tx.payloads.append(encode_op(op))

    def _append(self, tx: Tx) -> None:
        """Append the finished write's operations to the transaction's log batch."""
        if not tx.payloads:
            return
        assert self._wal is not None
        expected = self._applied_lsn - len(tx.payloads) + 1
        try:
            first = self._wal.append_many(tx.payloads)
        except wal.WalError as exc:
            self._failed = f"writing the log failed ({exc})"
            tx.records += len(tx.payloads)  # some may be in the batch: it must all go
            raise wal_error(exc, f"writing to {self.path}") from exc
        assert first == expected, "one writer: LSNs are handed out in order"
        tx.records += len(tx.payloads)
        tx.logged += sum(map(len, tx.payloads))
        tx.payloads.clear()

    def _commit(self) -> None:
        """Commit the open transaction (one log batch, one fsync), then publish it (C2)."""
        tx = self._tx
        assert tx is not None and self._wal is not None
        if not tx.records:
            self._tx = self._tx_owner = None
            self._catalog.mark()
            return
        try:
            with handoff():
                if any(ingest.wrote_pages for ingest in tx.ingests):
                    self._pager.sync()  # the pages first: the log records point at them
                last = self._wal.commit()
        except (OSError, wal.WalError) as exc:
            self._abort()
            if isinstance(exc, wal.WalError):
                self._after_log_failure(exc)
                raise wal_error(exc, f"committing to {self.path}") from exc
            raise io_error(exc, f"syncing {self.path}") from exc
        assert last == self._applied_lsn, (last, self._applied_lsn)
        self._tx = self._tx_owner = None
        self._catalog.mark()
        self._publish(tx.touched)
        self._note_durable()
        self._count("commits")
        self._logged_bytes += tx.logged
        if self._logged_bytes > CHECKPOINT_LOG_BYTES:
            self._checkpoint()

    def _note_durable(self) -> None:
        """Pages freed by changes whose log records are now fsynced may be reused once no
        reader sees them (D1): a crash replays those changes, which free them again."""
        assert self._wal is not None
        durable = (self._header.generation, self._wal.durable_lsn)
        if durable > self._space.durable:
            self._space.durable = durable

    def _after_log_failure(self, exc: wal.WalError) -> None:
        """A failed write to the log (ENOSPC) leaves the database usable: reopen the log,
        which drops the torn batch. A failed fsync does not: what the kernel dropped cannot
        be known, so writes are refused until the database is reopened."""
        if isinstance(exc, wal.WalIOError) and exc.during == "syncing":
            self._failed = f"an fsync of the log failed ({exc})"
            return
        assert self._wal is not None
        try:
            self._wal.close()
            # Decided, replayed, then finished: the log's recovery writes only once the
            # replay has succeeded (wal rule R7).
            self._wal = wal.open(self.path + "-wal", sync=SYNC[self.config.durability],  # type: ignore[arg-type]
                                 vfs=self._vfs, finish=False)
            self._replay()  # in case the batch did reach the log after all
            self._wal.skip_to(self._applied_lsn)
            self._wal.finish()
            self._failed = None
        except (wal.WalError, E.StreamDbError) as again:
            self._failed = f"the log could not be reopened ({again})"


BATCH_TO_PAGES = 256 << 10  # small documents in a batch go to pages beyond this many bytes


class _Run:
    """The pages a batch's small documents went to (a `PageWrite`)."""

    def __init__(self) -> None:
        self.extents: list[tuple[int, int]] = []
        self.wrote = False

    @property
    def wrote_pages(self) -> bool:
        return self.wrote


_HANDOFF = threading.Lock()
_handoff_depth = 0
_handoff_saved = 0.0
HANDOFF_INTERVAL = 0.0002  # seconds: the switch interval while a commit waits for the disk


@contextlib.contextmanager
def handoff() -> Iterator[None]:
    """A commit's syscalls (the fsyncs) release the GIL; coming back, the writer waits for
    it up to the interpreter's switch interval (5 ms by default) while reader threads keep
    the interpreter busy, and a commit makes two or three such calls. So while one runs,
    the switch interval is HANDOFF_INTERVAL (unless already shorter), and the previous value
    is put back after the last concurrent commit ends. Reader threads then take turns more
    often during the fsync, which costs them little; a process with one thread is left
    alone. O(1)."""
    global _handoff_depth, _handoff_saved
    if threading.active_count() == 1:
        yield
        return
    with _HANDOFF:
        if not _handoff_depth:
            _handoff_saved = sys.getswitchinterval()
            if _handoff_saved > HANDOFF_INTERVAL:
                sys.setswitchinterval(HANDOFF_INTERVAL)
        _handoff_depth += 1
    try:
        yield
    finally:
        with _HANDOFF:
            _handoff_depth -= 1
            if not _handoff_depth and _handoff_saved > HANDOFF_INTERVAL:
                sys.setswitchinterval(_handoff_saved)


# Document ids: 122 random bits each, from a generator seeded from the system's randomness
# (in each process: again after fork()), so a write makes no system call for them (one
# would hand the GIL to reader threads and wait to get it back).
_RANDOM = random.Random()
os.register_at_fork(after_in_child=_RANDOM.seed)


def _ids(n: int) -> list[uuid.UUID]:
    """`n` random (version 4) document ids. O(n), no system call."""
    bits = _RANDOM.getrandbits
    return [uuid.UUID(int=bits(128), version=4) for _ in range(n)]


def touched(catalog: Catalog, op: Op, into: set[bytes]) -> None:
    """Add to `into` the path keys whose documents `op` changes: its path, and every path
    of the document it names (as the catalog holds it before `op`). O(paths of the doc)."""
    if op.path:
        into.add(op.path)
    if op.doc_id is not None and op.kind != OP_UNBIND:
        doc = catalog.doc(op.doc_id.bytes)
        if doc is not None:
            into.update(doc.paths)


class Transaction:
    """`Database.transaction()`: see there."""

    def __init__(self, db: Writes) -> None:
        self._db = db
        self._tx: Tx | None = None

    def __enter__(self) -> None:
        db = self._db
        db._write_lock.acquire()
        try:
            if db._tx_owner == threading.get_ident():
                raise E.InvalidArgumentError("transactions do not nest")
            db.check_writable()
            db._begin(user=True)
            self._tx = db._tx
        except BaseException:
            db._write_lock.release()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        db = self._db
        try:
            if db._tx is not self._tx:  # rolled back under us: the log failed, or close()
                if exc_type is None:
                    raise E.StorageIOError(
                        errno.EIO, f"the transaction was rolled back: "
                        f"{db._failed or 'the database was closed'}")
                return
            if exc_type is not None:
                db._abort()
            else:
                db._commit()
        finally:
            db._write_lock.release()
