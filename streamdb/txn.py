"""Writes and transactions: how the one writer applies, logs, commits and undoes.

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
"""

from __future__ import annotations

import contextlib
import errno
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import wal
from streamdb import errors as E
from streamdb.errmap import io_error, wal_error
from streamdb.pins import Pins, State
from streamdb.storage.catalog import Catalog
from streamdb.storage.docio import PageWrite
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import Header
from streamdb.storage.pager import Pager
from streamdb.storage.records import Op, encode_op

if TYPE_CHECKING:
    from streamdb.config import Config

CHECKPOINT_LOG_BYTES = 128 << 20  # checkpoint when this much has been logged since the last
_SYNC = {"full": "full", "normal": "batch", "off": "off"}


@dataclass(slots=True)
class Tx:
    """The writer's open transaction: ops applied to the catalog, not yet committed."""

    user: bool  # opened by `transaction()` (else one write's own)
    ingests: list[PageWrite]  # documents and appends written to pages by this transaction
    payloads: list[bytes]  # the current write's log records, appended when it succeeds
    records: int = 0  # log records appended
    logged: int = 0  # their bytes


class Transactions(ABC):
    """The write machinery of `Database` (a mixin: the attributes and the abstract
    methods below are the database's)."""

    path: str
    config: Config
    _vfs: wal.VFS
    _write_lock: threading.RLock
    _tx: Tx | None
    _tx_owner: int | None
    _failed: str | None
    _wal: wal.WriteAheadLog | None
    _catalog: Catalog
    _space: FreeSpace
    _pager: Pager
    _pins: Pins
    _header: Header
    _applied_lsn: int
    _logged_bytes: int
    _orphans: list[tuple[list[tuple[int, int]], set[State]]]

    @abstractmethod
    def _check_writable(self) -> None:
        """Raise unless writes are allowed now."""

    @abstractmethod
    def _publish(self) -> None:
        """Make the catalog at `_applied_lsn` the state new reads see."""

    @abstractmethod
    def _replay(self, *, opening: bool = False, until: int | None = None) -> int:
        """Apply the log's committed records past `_applied_lsn` (below `until`), then
        publish; returns how many."""

    @abstractmethod
    def _horizon(self) -> int:
        """The lowest LSN any reader may read the catalog at."""

    @abstractmethod
    def _count(self, name: str, n: int = 1) -> None:
        """Bump a `stats()` counter."""

    @abstractmethod
    def _checkpoint(self, *, force: bool = False,
                    index: dict[str, Iterator[tuple[bytes, bytes]]] | None = None) -> None:
        """Write a checkpoint (D4)."""

    def transaction(self) -> Transaction:
        """A context manager that makes every write, delete, bind and unbind this thread
        makes through the database inside it one atomic commit (one fsync) when the block
        exits, and none of them if it raises. This thread's reads see its pending writes;
        other threads' reads do not, and their writes wait for it. Transactions do not
        nest (InvalidArgumentError). `gc`, `checkpoint`, `compact`, `backup` and `verify`
        are refused inside one."""
        return Transaction(self)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Tx]:
        """One write: join this thread's transaction, or run as a transaction of its own.

        Its operations are applied to the catalog as it goes (so it sees its own earlier
        ones) and reach the log batch only when it succeeds, so a write that fails inside a
        transaction is undone alone and the transaction goes on. Only a failing log takes
        the whole transaction with it."""
        with self._write_lock:
            self._check_writable()
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
        self._publish()
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
            self._wal = wal.open(self.path + "-wal", sync=_SYNC[self.config.durability],  # type: ignore[arg-type]
                                 vfs=self._vfs, finish=False)
            self._replay()  # in case the batch did reach the log after all
            self._wal.skip_to(self._applied_lsn)
            self._wal.finish()
            self._failed = None
        except (wal.WalError, E.StreamDbError) as again:
            self._failed = f"the log could not be reopened ({again})"


class Transaction:
    """`Database.transaction()`: see there."""

    def __init__(self, db: Transactions) -> None:
        self._db = db
        self._tx: Tx | None = None

    def __enter__(self) -> None:
        db = self._db
        db._write_lock.acquire()
        try:
            if db._tx_owner == threading.get_ident():
                raise E.InvalidArgumentError("transactions do not nest")
            db._check_writable()
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
