"""pyarrow interop, optional: pyarrow is imported only when these are called.

`to_pyarrow` hands our buffers to pyarrow (`pa.Array.from_buffers` over the numpy arrays:
no copy; pyarrow's arrays keep ours alive). `from_pyarrow` is the way back: our arrays are
`np.frombuffer` views of pyarrow's buffers (no copy; ours keep pyarrow's alive), under the
schema our reader makes of pyarrow's serialized schema. `from_arrow` takes any Arrow
PyCapsule stream (Polars, DuckDB, ...) through pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from streamdb.arrow import types as t
from streamdb.arrow.array import Array, pack_validity, unpack_bits
from streamdb.errors import InvalidArgumentError, UnsupportedError

if TYPE_CHECKING:
    import pyarrow as pa

    from streamdb.arrow.table import RecordBatch, Table


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
    out = pa.field(f.name, pa_type(pa, f.type), True,
                   _metadata(f.metadata) if f.metadata else None)
    # pa.field refuses a non-nullable null-type field, which IPC (and with_nullable) allow
    return out if f.nullable else out.with_nullable(False)


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
    from streamdb.arrow.reader import read_ipc, read_stream_schema
    from streamdb.arrow.table import RecordBatch, Table

    # The schema through its IPC message: our reader maps every type, extension types to
    # their storage with the metadata kept, and refuses what it does not support.
    meta = data.schema.serialize().to_pybytes()
    schema = read_stream_schema(lambda off, n: meta[off : off + n])
    batches = data.to_batches() if isinstance(data, pa.Table) else [data]
    # (Rows without columns: only IPC carries their count.)
    if schema.fields and all(_wrappable(f.type) for f in data.schema):
        return Table(schema, [RecordBatch._trusted(
            schema, [_our_array(pa, c, f.type) for c, f in zip(
                b.columns, schema.fields, strict=True)], b.num_rows) for b in batches])
    sink = pa.BufferOutputStream()  # one copy, through an IPC stream in memory
    with pa.ipc.new_stream(sink, data.schema) as w:
        w.write(data)
    return read_ipc(memoryview(sink.getvalue()))


# pyarrow's type ids of year-month and day-time intervals: it reads them from IPC but cannot
# hand out their arrays (nor those of types holding them)
_UNWRAPPABLE = {21, 22}


def _wrappable(ty: Any) -> bool:
    """Whether pyarrow can hand out arrays of pyarrow type `ty`."""
    if ty.id in _UNWRAPPABLE:
        return False
    inner = getattr(ty, "storage_type", None) or getattr(ty, "value_type", None)
    if inner is not None and not _wrappable(inner):
        return False
    return all(_wrappable(ty.field(i).type) for i in range(ty.num_fields))


_OWN_BUFFERS = {"fixed": 2, "bool": 2, "var": 3, "large_var": 3, "list": 2, "large_list": 2,
                "fixed_list": 1, "struct": 1}


def _our_array(pa: Any, arr: Any, ty: t.DataType) -> Array:
    """One of ours over the buffers of pyarrow array `arr` (no copy; a struct at a non-zero
    offset gets a re-based copy of its validity bitmap)."""
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    n, nulls = len(arr), arr.null_count
    if ty.layout == "null":
        return Array(ty, n, [])
    if isinstance(ty, t.DictionaryType):
        indices = arr.indices
        bufs = _np_buffers(indices.buffers()[:2])
        return Array(ty, n, [bufs[0] if nulls else None, bufs[1]], offset=indices.offset,
                     null_count=nulls, dictionary=_our_array(pa, arr.dictionary, ty.value))
    layout = ty.layout
    bufs = _np_buffers(arr.buffers()[: _OWN_BUFFERS[layout]])
    if not nulls:
        bufs[0] = None
    offset = arr.offset
    children: list[Array] = []
    if layout in ("var", "large_var", "list", "large_list"):
        width = 8 if layout.startswith("large") else 4
        if bufs[1] is None or len(bufs[1]) < (offset + n + 1) * width:  # empty, omitted
            bufs[1] = np.zeros((offset + n + 1) * width, np.uint8)
        if layout in ("var", "large_var") and bufs[2] is None:
            bufs[2] = np.zeros(0, np.uint8)
    if layout in ("list", "large_list", "fixed_list"):
        children = [_our_array(pa, arr.values, ty.children[0].type)]  # the whole child
    elif layout == "struct":
        # pyarrow hands out struct children sliced to the struct's rows: re-base
        children = [_our_array(pa, arr.field(i), f.type) for i, f in enumerate(ty.children)]
        if offset and bufs[0] is not None:
            bufs[0] = pack_validity(unpack_bits(bufs[0], offset, n))
        offset = 0
    return Array(ty, n, bufs, children, offset=offset, null_count=nulls)


def _np_buffers(buffers: list[Any]) -> list[Any]:
    return [np.frombuffer(b, np.uint8) if b is not None else None for b in buffers]


def from_arrow(data: Any) -> Table:
    from streamdb.arrow.table import RecordBatch, Table

    if isinstance(data, Table):
        return data
    if isinstance(data, RecordBatch):
        return Table(data.schema, [data])
    pa = _pyarrow()
    if isinstance(data, pa.Table | pa.RecordBatch):
        table = data
    elif hasattr(data, "__arrow_c_stream__"):
        table = pa.RecordBatchReader.from_stream(data).read_all()
    elif hasattr(data, "__arrow_c_array__"):
        table = pa.Table.from_batches([pa.record_batch(data)])
    else:
        raise InvalidArgumentError(f"{type(data).__name__} has neither __arrow_c_stream__ "
                                   "nor __arrow_c_array__: not Arrow data")
    # Polars and others hand out string views, which this library does not read yet: cast
    # them to their offset-based forms (a copy of those columns only).
    schema = pa.schema([f.with_type(_without_views(pa, f.type)) for f in table.schema],
                       metadata=table.schema.metadata)
    if schema.equals(table.schema):
        return from_pyarrow(table)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return from_pyarrow(table.cast(schema))


def _without_views(pa: Any, ty: Any) -> Any:
    """`ty` with string and binary views as large_utf8 and large_binary. (List views stay:
    pyarrow's cast of them to lists is unreliable; reading them is UnsupportedError.)"""
    pt = pa.types
    if pt.is_string_view(ty):
        return pa.large_string()
    if pt.is_binary_view(ty):
        return pa.large_binary()
    if pt.is_list(ty) or pt.is_large_list(ty):
        make = pa.list_ if pt.is_list(ty) else pa.large_list
        return make(ty.value_field.with_type(_without_views(pa, ty.value_type)))
    if pt.is_fixed_size_list(ty):
        return pa.list_(ty.value_field.with_type(_without_views(pa, ty.value_type)),
                        ty.list_size)
    if pt.is_struct(ty):
        return pa.struct([f.with_type(_without_views(pa, f.type)) for f in ty])
    if pt.is_map(ty):
        return pa.map_(ty.key_field.with_type(_without_views(pa, ty.key_type)),
                       ty.item_field.with_type(_without_views(pa, ty.item_type)),
                       ty.keys_sorted)
    if pt.is_dictionary(ty):
        return pa.dictionary(ty.index_type, _without_views(pa, ty.value_type), ty.ordered)
    return ty


def batch_to_pyarrow(batch: RecordBatch) -> pa.RecordBatch:
    from streamdb.arrow.table import Table

    pa = _pyarrow()
    table = to_pyarrow(Table(batch.schema, [batch]))
    batches = table.to_batches()  # the one batch, as it is; none when it has no rows
    if batches:
        return batches[0]
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in table.schema],
                                      schema=table.schema)


def array_to_pyarrow(a: Array) -> pa.Array:
    pa = _pyarrow()
    try:
        return pa_array(pa, a)
    except UnsupportedError:  # through a one-column batch, as to_pyarrow does
        from streamdb.arrow.table import RecordBatch

        schema = t.Schema((t.Field("", a.type),))
        return batch_to_pyarrow(RecordBatch(schema, [a])).column(0)


def schema_to_pyarrow(schema: t.Schema) -> pa.Schema:
    from streamdb.arrow.table import Table

    return to_pyarrow(Table(schema, [])).schema
