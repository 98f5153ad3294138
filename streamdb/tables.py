"""Arrow tables in the database: `Database.append_batch`, which grows an Arrow IPC stream
document (a message log of framing "arrow") in place."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from streamdb import errors as E
from streamdb import logs
from streamdb.paths import path_key
from streamdb.storage.records import ARROW_STREAM

if TYPE_CHECKING:
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
    batches = list(batch.batches) if isinstance(batch, ArrowTable) else [batch]
    if not batches:
        return
    schema = batches[0].schema
    with db._writing() as tx:
        doc_key = db._catalog.lookup(path_key(path))
        doc = db._catalog.doc(doc_key) if doc_key is not None else None
        # The writer of this handle's last append knows which dictionaries the stream
        # holds, if that append is still the document's latest version. Appends inside
        # a transaction (which may roll back) neither use nor remember it.
        own = not tx.user
        last = db._ipc_appends.pop(path, None) if own else None
        writer = None
        if doc is not None:
            v = doc.latest
            if v.log is None or v.log.framing != ARROW_STREAM:
                raise E.InvalidArgumentError(f"{path!r} is not an Arrow stream document")
            if last is not None and last[0] == (doc_key, v.lsn, v.size):
                writer = last[1]
                stored = writer.schema
            else:
                stored = read_stream_schema(
                    lambda off, n: db.get(path, offset=off, length=n))
            if stored.fields != schema.fields:
                raise E.ArrowError(f"the batch's schema differs from the stream at {path!r}")
        if writer is None:
            writer = IpcWriter(io.BytesIO(), schema, alignment=8)
            if doc is not None:  # the schema is there already
                writer.sink = io.BytesIO()
        for b in batches:
            writer.write_batch(b)
        logs.append_messages(db, path, [writer.sink.getbuffer()], "arrow", arrow=True)
        writer.sink = io.BytesIO()
        doc_key = db._catalog.lookup(path_key(path))
        latest = db._catalog.doc(doc_key).latest  # type: ignore[arg-type, union-attr]
    if own:
        if len(db._ipc_appends) >= 64:
            del db._ipc_appends[next(iter(db._ipc_appends))]
        db._ipc_appends[path] = ((doc_key, latest.lsn, latest.size), writer)

