"""`Database`: the public API of docs/design.md, section 2, as a façade over the engine.

A `Database` checks its arguments (InvalidArgumentError, InvalidPathError, before anything
is read or written) and delegates to its `streamdb.engine.Engine`, which owns every mutable
field (its module docstring has the lifecycle; docs/design.md, "How the engine keeps them",
has invariants D1-D5 and C1-C3). The read methods come from `streamdb.reads`; message logs,
Arrow tables, file objects, verify and backup are features built on the engine's public
methods.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamdb import checks, logs, maintenance, tables
from streamdb import errors as E
from streamdb.config import Config
from streamdb.engine import Engine, LogRecovery, State, Stats, Transaction
from streamdb.maintenance import VerifyReport
from streamdb.paths import path_key
from streamdb.reads import DocumentInfo, ReadMethods, Snapshot
from streamdb.storage.docio import as_bytes, check_source
from wal.vfs import VFS

if TYPE_CHECKING:
    from streamdb import arrow

__all__ = ["Database", "DocumentInfo", "Snapshot", "Stats", "open"]

# Any C-contiguous object with the buffer protocol (bytes, bytearray, memoryview, numpy
# arrays, array.array, mmap): collections.abc.Buffer, from Python 3.12.
Buffer = Any

class Database(ReadMethods):
    """An open StreamDB database. Create it with `streamdb.open`.

    Thread-safe: share one object between threads. Reads run concurrently and never wait for
    the writer; writes are serialised. After `fork()` a child must open the database again.
    """

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
        name = checks.fspath(path, "the database path")
        if config is not None and not isinstance(config, Config):
            raise E.InvalidArgumentError(
                f"config must be a streamdb.Config, not {type(config).__name__}: "
                f"streamdb.open(path, streamdb.Config(...))")
        self._engine = Engine(name, config or Config(), readonly=readonly, vfs=vfs,
                              recover=recover)

    @property
    def path(self) -> str:
        return self._engine.path

    @property
    def config(self) -> Config:
        return self._engine.config

    @property
    def readonly(self) -> bool:
        return self._engine.readonly

    @property
    def recovery(self) -> LogRecovery | None:
        """What an open with recover="truncate-log" dropped; None when nothing was."""
        return self._engine.recovery

    def get(self, path: str, version: int | None = None, offset: int = 0,
            length: int | None = None) -> bytes:
        """The bytes of the latest (or the given kept) version, or of a range of it.

        O(length); every chunk touched is verified (unless quick mode). A whole, plain
        document of one chunk (256 KiB) read again is served from its cached location: a
        dict lookup, a slice of the memory map and its checksum. Raises NotFoundError,
        InvalidArgumentError, ChecksumMismatch naming the path and offset.
        """
        if (path.__class__ is str and version is None and length is None and offset == 0
                and offset.__class__ is int):
            engine = self._engine
            data = engine.fast_get(path)
            return data if data is not None else engine.get_latest(path)
        return super().get(path, version, offset, length)

    def _enter(self) -> State:
        return self._engine.pin()

    def _leave(self, state: State) -> None:
        self._engine.unpin(state)

    def snapshot(self) -> Snapshot:
        """A consistent, read-only view of the last committed state (O(1)); see
        `Snapshot`. Inside a transaction, of that transaction's state so far; if the
        transaction then rolls back, the snapshot reads the state before it (views and
        streams taken inside keep their bytes either way)."""
        return Snapshot(self._engine)

    def refresh(self) -> int:
        """Read-only databases: move on to the last committed state (reads see the state
        of the open, or of the last refresh). Returns its LSN. O(log bytes since the last
        refresh), or O(1) + a catalog reopen after a checkpoint. A writer's reads are always
        current: there it only returns the LSN."""
        return self._engine.refresh()

    def transaction(self) -> Transaction:
        """A context manager that makes every write, delete, bind and unbind this thread
        makes through the database inside it one atomic commit (one fsync) when the block
        exits, and none of them if it raises. This thread's reads see its pending writes;
        other threads' reads do not, and their writes wait for it. Transactions do not
        nest (InvalidArgumentError). `gc`, `checkpoint`, `compact`, `backup` and `verify`
        are refused inside one."""
        return self._engine.transaction()

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
        return self._engine.write_documents(_pairs(items))

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
        return logs.append_messages(self._engine, path, views, checksum)

    def bind_to_path(self, doc_id: uuid.UUID, path: str) -> None:
        """Make `path` name the document `doc_id` too (an alias). A path that named another
        document is moved; that document is deleted if it has no path left."""
        self._engine.bind(checks.doc_id(doc_id), path_key(path))

    def unbind_path(self, path: str) -> None:
        """Remove the path; the document is deleted if it has no path left."""
        self.delete(path)

    def delete(self, path: str) -> None:
        """Remove `path`. Raises NotFoundError (a KeyError) if it names nothing."""
        self._engine.unbind(path_key(path), path)

    def gc(self) -> int:
        """Drop versions beyond versions_to_keep and make freed space reusable (a
        checkpoint). Space a snapshot or reader still sees is reused once it is released.
        Returns the number of pages free afterwards."""
        return self._engine.gc()

    # -- maintenance -------------------------------------------------------------------

    def set_quick_mode(self, on: bool) -> None:
        """Skip payload checksum verification on reads (metadata checks stay on)."""
        self._engine.set_quick_mode(checks.flag(on, "on"))

    def flush(self) -> None:
        """Make every commit durable now (matters with durability "normal" or "off")."""
        self._engine.flush()

    def checkpoint(self) -> None:
        """Write the index and every logged change into the database file (D4), so the
        log can be recycled. O(index size)."""
        self._engine.checkpoint()

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
        engine = self._engine
        with engine._write_lock:
            engine.check_open()
            engine.check_no_tx("verify()")
            return maintenance.verify(engine)

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
        engine = self._engine
        with engine._write_lock:
            engine.check_open()
            engine.check_no_tx("backup()")
            backup(engine, dest, overwrite=overwrite)

    def compact(self) -> None:
        """Rewrite the database into a new file holding only what is live, each version
        contiguous, and rename it over this one. Snapshots, streams and views taken before
        go on reading the old file, which is renamed over, never truncated. O(live data)."""
        self._engine.compact()

    def stats(self) -> Stats:
        """Counters and sizes (a frozen dataclass): pages, cache hits and misses, reads,
        commits, checkpoints, states held and reader processes. O(threads + held states)."""
        return self._engine.stats()

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
        self._engine.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        engine = getattr(self, "_engine", None)
        closed = engine is not None and engine.closed is not None
        path = engine.path if engine is not None else "?"
        return f"<streamdb.Database {path!r}{' closed' if closed else ''}>"

    def open(self, path: str, mode: str = "rb") -> io.RawIOBase:
        """A file object: "rb" reads the latest version (seekable, readinto; it pins that
        version until closed); "wb" buffers and writes a new version when closed."""
        from streamdb.fileobj import DocumentReader, DocumentWriter

        checks.choice(mode, "mode", ("rb", "wb"))
        if mode == "rb":
            return DocumentReader(self, *self._hold_latest(path), path)
        if mode == "wb":
            path_key(path)
            self._engine.check_writable()
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
    it instead (rules L1-L4 in `streamdb.engine.salvage`): the damaged log files are copied beside
    the database, the state is the last checkpoint plus every whole commit before the first
    damage, made durable by a checkpoint, and the log starts over; `Database.recovery`
    reports what was dropped, and a `LogRecoveryWarning` is issued. InvalidArgumentError
    for another value, or with `readonly=True`.
    """
    return Database(path, config, readonly=readonly, vfs=vfs, recover=recover)
