"""pyarrow interop, optional: pyarrow is imported only when these are called.

Both directions go through the IPC stream format in memory: `to_pyarrow` writes our batches
and pyarrow reads them in place (its arrays are views of that buffer); `from_pyarrow` has
pyarrow write its table and reads it in place. One copy of the data each way.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from streamdb.errors import UnsupportedError

if TYPE_CHECKING:
    import pyarrow as pa

    from streamdb.arrow.table import Table


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError as exc:
        raise UnsupportedError("pyarrow is not installed (pip install 'streamdb[interop]')"
                               ) from exc
    return pyarrow


def to_pyarrow(table: Table) -> pa.Table:
    pa = _pyarrow()
    from streamdb.arrow.writer import write_ipc

    sink = io.BytesIO()
    write_ipc(sink, table, format="stream")
    return pa.ipc.open_stream(pa.py_buffer(sink.getbuffer())).read_all()


def from_pyarrow(data: pa.Table | pa.RecordBatch) -> Table:
    pa = _pyarrow()
    from streamdb.arrow.reader import read_ipc

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as w:
        w.write(data)
    return read_ipc(memoryview(sink.getvalue()))
