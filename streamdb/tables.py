"""Arrow tables in the database: `Database.append_batch`, which grows an Arrow IPC stream
document (a message log of framing "arrow") in place."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from streamdb import errors as E
from streamdb import logs
from streamdb.paths import path_key
from streamdb.storage.records import ARROW_STREAM, Version

if TYPE_CHECKING:
    from streamdb.arrow.table import Table
    from streamdb.arrow.types import Schema
    from streamdb.database import Database


def append_batch(db: Database, path: str, batch: Any) -> None:
    """`Database.append_batch` (see there)."""
    from streamdb.arrow.reader import read_stream_schema
    from streamdb.arrow.table import RecordBatch as ArrowBatch
    from streamdb.arrow.table import Table as ArrowTable
    from streamdb.arrow.writer import StreamWriter as IpcWriter

    if not isinstance(batch, ArrowTable | ArrowBatch):
        if not hasattr(batch, "__arrow_c_stream__"):
            raise E.InvalidArgumentError(f"append_batch takes a RecordBatch or a Table, "
                                         f"not a {type(batch).__name__}")
        batch = ArrowTable.from_arrow(batch)  # pyarrow, Polars, ...
    table = batch if isinstance(batch, ArrowTable) else ArrowTable(batch.schema, [batch])
    engine = db._engine
    key = path_key(path)
    with engine.writing() as tx:
        doc = engine.lookup_doc(key)
        doc_key = doc.doc_id.bytes if doc is not None else None
        # The writer of this handle's last append knows which dictionaries the stream
        # holds, if that append is still the document's latest version. Appends inside
        # a transaction (which may roll back) neither use nor remember it.
        own = not tx.user
        last = engine.take_ipc_writer(path) if own else None
        writer = None
        schema = table.schema
        if doc is not None:
            v = doc.latest
            _check_stream(path, v)
            if last is not None and last[0] == (doc_key, v.lsn, v.size):
                writer = last[1]
                schema = writer.schema
            else:
                schema = read_stream_schema(
                    lambda off, n: db.get(path, offset=off, length=n))
            table = _fit(path, table, schema)
        if writer is None:
            # A new stream starts with its schema (even without batches: the stream then
            # holds an empty table); an existing one has it already.
            writer = IpcWriter(io.BytesIO(), schema, alignment=8)
            if doc is not None:
                writer.sink = io.BytesIO()
        for b in table.batches:
            writer.write_batch(b)
        messages = writer.sink.getbuffer()
        if messages.nbytes:
            logs.append_messages(engine, path, [messages], "arrow", arrow=True)
        writer.sink = io.BytesIO()
        grown = engine.lookup_doc(key)
        assert grown is not None
        latest = grown.latest
    if own:
        engine.keep_ipc_writer(path, (grown.doc_id.bytes, latest.lsn, latest.size), writer)


def _check_stream(path: str, v: Version) -> None:
    """Raise InvalidArgumentError, saying what `path` holds and what to do, unless its
    latest version `v` is an Arrow stream that append_batch created. O(1)."""
    if v.log is None:
        raise E.InvalidArgumentError(
            f"{path!r} holds a plain document (written with write_document or put_table); "
            f"append_batch grows only a stream it created itself. To turn an Arrow table "
            f"stored there into such a stream, in one transaction: "
            f"table = db.get_table({path!r}); db.delete({path!r}); "
            f"db.append_batch({path!r}, table)")
    if v.log.framing != ARROW_STREAM:
        raise E.InvalidArgumentError(
            f"{path!r} is a message log (written with append_message or append_messages), "
            f"not an Arrow stream: append_batch grows only a stream it created itself")


def _fit(path: str, table: Table, stored: Schema) -> Table:
    """`table` in the forms of the stream's schema `stored` (`Table.cast`: offsets' widths
    only, nothing copied where the forms agree). Raises ArrowError naming the path and
    each field that differs in more than that, or whose values do not fit. O(fields),
    plus O(rows) for each converted column."""
    from streamdb.arrow.cast import differences, explain

    reasons = differences(stored, table.schema, ours="the stream", theirs="the batch")
    if reasons:
        raise E.ArrowError(f"the batch's schema differs from the stream at {path!r}: "
                           f"{explain(reasons)}")
    try:
        return table.cast(stored)
    except E.ArrowError as exc:
        raise E.ArrowError(f"cannot append to the stream at {path!r}: {exc}") from exc
