"""The engine's fields, declared once: `Engine` (core.py) assigns them, and the parts of the
engine in the other modules of this package (writes, checkpoints, following, compaction,
salvage) are mixins of that one class. Nothing outside the package assigns them.

The methods one part calls in another are declared here too, so each module type-checks
on its own.
"""

from __future__ import annotations

import errno
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import wal
from streamdb import errors as E
from streamdb.config import Config
from streamdb.engine.pins import Counters, Pins, State
from streamdb.storage import btree
from streamdb.storage.catalog import Catalog
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import Copies, Header
from streamdb.storage.pager import Pager
from streamdb.storage.pagestore import PageStore
from streamdb.storage.readers import ReaderSlot, ReaderTable
from streamdb.storage.transform import Cipher
from wal.vfs import VFS

if TYPE_CHECKING:
    from streamdb.engine.salvage import LogRecovery
    from streamdb.engine.writes import Tx


class EngineFields(ABC):
    """Every mutable field of an engine (see `Engine` for the lifecycle)."""

    path: str
    config: Config
    readonly: bool
    recovery: LogRecovery | None  # what an open with recover= dropped (None: nothing)

    _vfs: VFS
    _recover: str | None
    _pid: int
    # -- files and the state read from them
    _header: Header
    _copies: Copies
    _header_damage: list[str]  # damaged header copies found (and rewritten) at open
    _page_size: int
    _pager: Pager
    _space: FreeSpace
    _store: PageStore
    _catalog: Catalog
    _applied_lsn: int  # the newest LSN applied to the catalog (a transaction's, if open)
    _cipher: Cipher | None
    _codec: int
    _retired: list[Pager]  # files replaced by a compaction, still read
    # -- readers
    _pins: Pins
    _counters: Counters
    _quick: bool
    # path -> where the latest version of a whole, plain, one-chunk document lies, for the
    # fast read path: (bytes, or a memory map), start, end, checksum, checksum function
    # (None: bytes already verified). Filled from the published state, emptied of what a
    # state about to be published changes (`_publish`), under `_epoch`: odd while a publish
    # is changing it, so a fill that raced it is dropped (a seqlock).
    _locations: dict[str, tuple[Any, int, int, int, Any]]
    _epoch: int
    _table: ReaderTable | None
    _slot: ReaderSlot | None
    _tail: wal.LogTail | None  # read-only opens follow the log with it
    _refresh_lock: threading.Lock
    # -- the writer
    _wal: wal.WriteAheadLog | None
    _write_lock: threading.RLock
    _tx: Tx | None
    _tx_owner: int | None
    _failed: str | None  # why writes are refused until the database is reopened
    _orphans: list[tuple[list[tuple[int, int]], set[State]]]
    _logged_bytes: int
    _last_scan: float
    _scan_blocked: bool
    _replay_batch: int
    # path -> (document, LSN, size) of this handle's last append_batch there, and its IPC
    # writer (which knows the dictionaries the stream holds)
    _ipc_appends: dict[str, tuple[tuple[bytes | None, int, int], Any]]

    # -- guards -------------------------------------------------------------------------

    def check_open(self) -> None:
        """Raise ClosedError once closing began."""
        if self._pins.closed is not None:
            raise E.ClosedError(self._pins.closed)

    def check_writable(self) -> None:
        """Raise unless writes are allowed now (open, not read-only, not failed)."""
        self.check_open()
        if self.readonly:
            raise E.ReadOnlyError(f"{self.path} was opened read-only")
        if self._failed is not None:
            raise E.StorageIOError(errno.EIO, f"{self._failed}; reopen the database")

    def check_no_tx(self, what: str) -> None:
        """Raise InvalidArgumentError inside a `transaction()` (maintenance refuses it)."""
        if self._tx is not None and self._tx.user:
            raise E.InvalidArgumentError(f"{what} cannot run inside a transaction")

    # -- what one part of the engine calls in another ------------------------------------

    @abstractmethod
    def _publish(self, touched: set[bytes] | None = None) -> None:
        """Make the catalog at `_applied_lsn` the state new reads see; the cached locations
        of the path keys `touched` (None: all) go first."""

    @abstractmethod
    def _horizon(self) -> int:
        """The lowest LSN any reader may read the catalog at."""

    @abstractmethod
    def _count(self, name: str, n: int = 1) -> None:
        """Bump a `stats()` counter."""

    @abstractmethod
    def _release_space(self) -> None:
        """Make pending pages no reader can see allocatable."""

    @abstractmethod
    def _reload_state(self) -> None:
        """Free space, catalog and published state from the current header."""

    @abstractmethod
    def _new_catalog(self, refs: dict[str, btree.TreeRef]) -> Catalog:
        """A catalog over the trees `refs`."""

    @abstractmethod
    def _replay(self, *, opening: bool = False, until: int | None = None) -> int:
        """Apply the log's committed records past `_applied_lsn`, then publish."""

    @abstractmethod
    def _checkpoint(self, *, force: bool = False,
                    index: dict[str, Iterator[tuple[bytes, bytes]]] | None = None) -> None:
        """Write a checkpoint (D4)."""

    @abstractmethod
    def _write_headers(self, header: Header, first: int) -> None:
        """Write `header` to both copies, `first` first (H1)."""

    @abstractmethod
    def _read_or_create_header(self, file: Any) -> Header:
        """The current header copy of `file`."""

    @abstractmethod
    def _unproven_copy(self) -> str | None:
        """Why the current header copy cannot be trusted (None: it can)."""

    @abstractmethod
    def _note_durable(self) -> None:
        """Let pages freed by now-durable changes be released."""

    @abstractmethod
    def _after_log_failure(self, exc: wal.WalError) -> None:
        """Recover from a failed write to the log, or refuse writes."""

    @abstractmethod
    def _retire(self, pager: Pager) -> None:
        """`pager`'s file was replaced: close it once nothing reads it."""

    @abstractmethod
    def _close_retired(self) -> None:
        """Close replaced files nothing reads any more."""

    @abstractmethod
    def _release_slot(self) -> None:
        """Leave the reader table."""
