"""pyarrow interop, optional: pyarrow is imported only when these are called.

`to_pyarrow` hands our buffers to pyarrow (`pa.Array.from_buffers` over the numpy arrays:
no copy; pyarrow's arrays keep ours alive). `from_pyarrow` has pyarrow write its table to
an in-memory IPC stream and reads that in place (one copy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamdb.arrow import types as t
from streamdb.errors import UnsupportedError

if TYPE_CHECKING:
    import pyarrow as pa

    from streamdb.arrow.array import Array
    from streamdb.arrow.table import Table


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError as exc:
        raise UnsupportedError("pyarrow is not installed (pip install 'streamdb[interop]')"
                               ) from exc
    return pyarrow


def pa_type(pa: Any, ty: t.DataType) -> Any:
    """The pyarrow type of one of ours."""
    unit = t.UNIT_NAMES
    if isinstance(ty, t.DictionaryType):
        return pa.dictionary(pa_type(pa, ty.index), pa_type(pa, ty.value), ty.ordered)
    if isinstance(ty, t.NullType):
        return pa.null()
    if isinstance(ty, t.BoolType):
        return pa.bool_()
    if isinstance(ty, t.IntType):
        return getattr(pa, f"{'' if ty.signed else 'u'}int{ty.bits}")()
    if isinstance(ty, t.FloatType):
        return (pa.float16(), pa.float32(), pa.float64())[ty.precision]
    if isinstance(ty, t.DecimalType):
        return (pa.decimal128 if ty.bits == 128 else pa.decimal256)(ty.precision, ty.scale)
    if isinstance(ty, t.DateType):
        return pa.date32() if ty.unit == t.DAY else pa.date64()
    if isinstance(ty, t.TimeType):
        return (pa.time32 if ty.bits == 32 else pa.time64)(unit[ty.unit])
    if isinstance(ty, t.TimestampType):
        return pa.timestamp(unit[ty.unit], ty.tz)
    if isinstance(ty, t.DurationType):
        return pa.duration(unit[ty.unit])
    if isinstance(ty, t.IntervalType) and ty.unit == t.MONTH_DAY_NANO:
        return pa.month_day_nano_interval()
    if isinstance(ty, t.FixedSizeBinaryType):
        return pa.binary(ty.width)
    if isinstance(ty, t.LargeUtf8Type):
        return pa.large_utf8()
    if isinstance(ty, t.Utf8Type):
        return pa.utf8()
    if isinstance(ty, t.LargeBinaryType):
        return pa.large_binary()
    if isinstance(ty, t.BinaryType):
        return pa.binary()
    if isinstance(ty, t.MapType):
        key, item = ty.value.type.children
        return pa.map_(pa_field(pa, key), pa_field(pa, item), ty.keys_sorted)
    if isinstance(ty, t.LargeListType):
        return pa.large_list(pa_field(pa, ty.value))
    if isinstance(ty, t.ListType):
        return pa.list_(pa_field(pa, ty.value))
    if isinstance(ty, t.FixedSizeListType):
        return pa.list_(pa_field(pa, ty.value), ty.size)
    if isinstance(ty, t.StructType):
        return pa.struct([pa_field(pa, f) for f in ty.fields])
    raise UnsupportedError(f"no direct pyarrow type for {ty}")


def pa_field(pa: Any, f: t.Field) -> Any:
    if any(k == "ARROW:extension:name" for k, _ in f.metadata):
        # pyarrow makes extension types only as it reads IPC metadata
        raise UnsupportedError("an extension type")
    return pa.field(f.name, pa_type(pa, f.type), f.nullable,
                    _metadata(f.metadata) if f.metadata else None)


def _metadata(items: tuple[tuple[str, str], ...]) -> dict[bytes, bytes]:
    return {k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
            for k, v in items}


def pa_array(pa: Any, a: Array) -> Any:
    """A pyarrow array over `a`'s buffers (no copy)."""
    ty = pa_type(pa, a.type)
    if isinstance(a.type, t.DictionaryType):
        assert a.dictionary is not None
        indices = pa.Array.from_buffers(ty.index_type, a.length, _buffers(pa, a),
                                        a.null_count, a.offset)
        return pa.DictionaryArray.from_arrays(indices, pa_array(pa, a.dictionary),
                                              ordered=a.type.ordered, safe=False)
    children = [pa_array(pa, c) for c in a.children]
    return pa.Array.from_buffers(ty, a.length, _buffers(pa, a), a.null_count, a.offset,
                                 children=children or None)


def _buffers(pa: Any, a: Array) -> list[Any]:
    out = [pa.py_buffer(b) if b is not None else None for b in a.buffers]
    if a.type.layout == "null":
        return [None]
    if a.null_count == 0 and out:
        out[0] = None
    return out


def to_pyarrow(table: Table) -> pa.Table:
    pa = _pyarrow()
    if not table.schema.fields:  # rows without columns: only IPC carries their count
        return _through_ipc(pa, table)
    try:
        schema = pa.schema([pa_field(pa, f) for f in table.schema.fields],
                           _metadata(table.schema.metadata) if table.schema.metadata else None)
        batches = [pa.RecordBatch.from_arrays([pa_array(pa, c) for c in b.columns],
                                              schema=schema) for b in table.batches]
    except UnsupportedError:  # what pyarrow's constructors do not make: through IPC
        return _through_ipc(pa, table)
    return pa.Table.from_batches(batches, schema)


def _through_ipc(pa: Any, table: Table) -> pa.Table:
    import io

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
