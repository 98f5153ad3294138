"""Shared pieces of the streamdb.arrow tests: a pyarrow array of every type the model
supports (with nulls), IPC writing and reading with pyarrow and with streamdb, message
boundaries found by pyarrow's MessageReader, and hand-built IPC messages (from
streamdb.arrow.metadata's FlatBuffers builders) for hostile inputs."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc

from streamdb import arrow
from streamdb.arrow import metadata as md

N = 11  # rows of each sample array: not a multiple of 8, so bitmaps end mid-byte
VALID = [i % 3 != 1 for i in range(N)]  # nulls at 1, 4, 7, 10
MASK = pa.array([not v for v in VALID])


def nullable(values: list[Any]) -> list[Any]:
    return [v if ok else None for v, ok in zip(values, VALID, strict=True)]


def _interval(unit: int, values: list[Any]) -> Any:
    """A year-month or day-time interval column. pyarrow's Python API can neither name
    these types nor hold their arrays (only tables and chunked arrays of them), so the
    column is built by the model and handed to pyarrow through the IPC stream format."""
    table = arrow.Table.from_pydict({"c": arrow.array(nullable(values), arrow.IntervalType(unit))})
    return table.to_pyarrow().column(0)


def _of(values: list[Any], ty: Any) -> Callable[[], Any]:
    """A factory of the pyarrow array of `values`."""
    return lambda: pa.array(values, ty)


def _dictionary(index: Any, values: list[Any]) -> Callable[[], Any]:
    """A factory of a dictionary array: indices of type `index` (with nulls) into `values`."""
    codes = [i % len(values) for i in range(N)]
    return lambda: pa.DictionaryArray.from_arrays(pa.array(codes, index, mask=MASK),
                                                  pa.array(values))


def _cases() -> dict[str, Callable[[], Any]]:
    c: dict[str, Callable[[], Any]] = {}
    c["null"] = lambda: pa.nulls(N)
    c["bool"] = lambda: pa.array([i % 2 == 0 for i in range(N)], mask=MASK)
    for bits in (8, 16, 32, 64):
        for signed in (True, False):
            ty = getattr(pa, f"{'' if signed else 'u'}int{bits}")()
            lo = -(2 ** (bits - 1)) if signed else 0
            hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
            c[str(ty)] = _of(nullable([lo, hi, 0, 1, 2, 3, 4, 5, 6, hi - 1, lo + 1]), ty)
    c["float16"] = lambda: pa.array(np.array([0.5 * i - 2 for i in range(N)], np.float16),
                                    mask=np.array([not v for v in VALID]))
    c["float32"] = lambda: pa.array(nullable([0.25 * i for i in range(N)]), pa.float32())
    c["float64"] = lambda: pa.array(nullable([1e300, -0.0, float("inf"), *range(8)]))
    c["decimal128"] = lambda: pa.array(
        nullable([decimal.Decimal(f"{i * 137 - 500}.{i:02d}") for i in range(N)]),
        pa.decimal128(12, 2))
    c["decimal256"] = lambda: pa.array(
        nullable([decimal.Decimal(f"-{i}{'9' * 50}.{i:03d}") for i in range(N)]),
        pa.decimal256(70, 3))
    words = ["", "a", "héllo", "x" * 40, "日本", "z", "", "q", "w", "e", "r"]
    c["utf8"] = lambda: pa.array(nullable(words), pa.utf8())
    c["large_utf8"] = lambda: pa.array(nullable(words), pa.large_utf8())
    blobs = [bytes([i]) * i for i in range(N)]
    c["binary"] = lambda: pa.array(nullable(blobs), pa.binary())
    c["large_binary"] = lambda: pa.array(nullable(blobs), pa.large_binary())
    c["fixed_size_binary"] = lambda: pa.array(nullable([bytes([i, 255 - i, 0]) for i in range(N)]),
                                              pa.binary(3))
    days = [dt.date(1970, 1, 1) + dt.timedelta(days=400 * i - 2000) for i in range(N)]
    c["date32"] = lambda: pa.array(nullable(days), pa.date32())
    c["date64"] = lambda: pa.array(nullable(days), pa.date64())
    c["time32[s]"] = lambda: pa.array(nullable([i * 3000 for i in range(N)]), pa.time32("s"))
    c["time32[ms]"] = lambda: pa.array(nullable([i * 3_000_000 for i in range(N)]),
                                       pa.time32("ms"))
    c["time64[us]"] = lambda: pa.array(nullable([i * 3_000_000_000 for i in range(N)]),
                                       pa.time64("us"))
    c["time64[ns]"] = lambda: pa.array(nullable([i * 3_000_000_000_000 for i in range(N)]),
                                       pa.time64("ns"))
    ticks = [(i - 5) * 123_456_789 for i in range(N)]
    for unit in ("s", "ms", "us", "ns"):
        for tz in (None, "UTC", "Europe/Paris", "+05:30"):
            if tz == "+05:30" and unit != "ms":
                continue
            name = f"timestamp[{unit}{', ' + tz if tz else ''}]"
            c[name] = _of(nullable(ticks), pa.timestamp(unit, tz))
        c[f"duration[{unit}]"] = _of(nullable(ticks), pa.duration(unit))
    c["interval[year_month]"] = lambda: _interval(0, list(range(-5, N - 5)))
    c["interval[day_time]"] = lambda: _interval(1, [(i, -i * 1000) for i in range(N)])
    c["interval[month_day_nano]"] = lambda: pa.array(
        nullable([pa.MonthDayNano([i, -i, i * 10**12]) for i in range(N)]),
        pa.month_day_nano_interval())
    for index in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        c[f"dictionary<{index}, utf8>"] = _dictionary(
            getattr(pa, index)(), ["alpha", "beta", None, "gamma"])
        c[f"dictionary<{index}, int64>"] = _dictionary(getattr(pa, index)(), [10, -20, 30])
    lists = nullable([list(range(i % 4)) if i % 5 else [None, i] for i in range(N)])
    c["list"] = lambda: pa.array(lists, pa.list_(pa.int64()))
    c["large_list"] = lambda: pa.array(lists, pa.large_list(pa.int16()))
    c["fixed_size_list"] = lambda: pa.array(nullable([[i, None, -i] for i in range(N)]),
                                            pa.list_(pa.int32(), 3))
    c["struct"] = lambda: pa.StructArray.from_arrays(
        [pa.array(nullable(list(range(N)))[::-1]), pa.array(nullable(words), pa.utf8())],
        names=["a", "b"], mask=pa.array([i % 4 == 3 for i in range(N)]))
    c["struct<duplicate names>"] = lambda: pa.StructArray.from_arrays(
        [pa.array(nullable(list(range(N)))), pa.array(nullable(words)),
         pa.array([i % 2 == 0 for i in range(N)])],
        names=["x", "x", "y"], mask=pa.array([i == 5 for i in range(N)]))
    c["map"] = lambda: pa.array(
        nullable([[(f"k{j}", j if j % 2 else None) for j in range(i % 3)] for i in range(N)]),
        pa.map_(pa.utf8(), pa.int64()))
    c["list<struct>"] = lambda: pa.array(
        nullable([[{"p": i, "q": "s"}, None] if i % 2 else [] for i in range(N)]),
        pa.list_(pa.struct([("p", pa.int8()), ("q", pa.utf8())])))
    c["struct<list>"] = lambda: pa.StructArray.from_arrays(
        [pa.array(lists, pa.list_(pa.int64())), pa.array(nullable(blobs))],
        names=["l", "b"], mask=pa.array([i == 2 for i in range(N)]))
    c["list<dictionary>"] = lambda: pa.ListArray.from_arrays(
        pa.array([0, 2, 2, 3, 5, 5, 6, 8, 8, 9, 11, 11], pa.int32()),
        _dictionary(pa.int16(), ["u", "v", "w"])(),
        mask=pa.array([i % 4 == 1 for i in range(N)]))
    return c


CASES = _cases()
# pyarrow cannot turn nanosecond temporal values into Python objects without pandas
PYLIST_SKIP = {name for name in CASES if "[ns" in name}


def sample(name: str) -> Any:
    """A pyarrow table of one column `name`, in two record batches."""
    column = CASES[name]()
    table = pa.table({name: column})
    return pa.Table.from_batches([b for b in (table.slice(0, 4), table.slice(4))
                                  for b in b.to_batches()])


def wide_table() -> Any:
    """Every case as one column of one pyarrow table."""
    return pa.table({name: make() for name, make in CASES.items()})


def pa_write(table: Any, fmt: str, compression: str | None = None, **options: Any) -> bytes:
    """`table` (a pyarrow Table, or a list of RecordBatches: pyarrow drops empty batches
    from tables) in the IPC `fmt` ("file" or "stream"), written by pyarrow."""
    batches = table if isinstance(table, list) else table.to_batches()
    schema = batches[0].schema if isinstance(table, list) else table.schema
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression=compression, **options)
    new = pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream
    with new(sink, schema, options=opts) as w:
        for batch in batches:
            w.write_batch(batch)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def pa_open(data: bytes, fmt: str) -> Any:
    return (pa.ipc.open_file if fmt == "file" else pa.ipc.open_stream)(pa.py_buffer(data))


def pa_read(data: bytes, fmt: str) -> Any:
    table = pa_open(data, fmt).read_all()
    table.validate(full=True)
    return table


def our_write(table: arrow.Table | arrow.RecordBatch | list[arrow.RecordBatch], fmt: str,
              compression: str | None = None, alignment: int = 64) -> bytes:
    sink = io.BytesIO()
    arrow.write_ipc(sink, table, format=fmt, compression=compression, alignment=alignment)
    return sink.getvalue()


def messages(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, type) of each message of a stream (or of a file's stream part), found by
    pyarrow's own MessageReader; type is "schema", "dictionary" or "record batch"."""
    start = 8 if data[:6] == b"ARROW1" else 0
    src = pa.BufferReader(pa.py_buffer(data[start:]))
    reader = pa.ipc.MessageReader.open_stream(src)
    out = []
    at = start
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        end = start + src.tell()
        out.append((at, end, str(message.type)))
        at = end
    return out


# -- hand-built messages ----------------------------------------------------------------------


def frame(meta: bytes, body: bytes = b"") -> bytes:
    """One encapsulated message: continuation, padded metadata length, metadata, body."""
    pad = -len(meta) % 8
    return b"\xff\xff\xff\xff" + struct.pack("<i", len(meta) + pad) + meta + bytes(pad) + body


EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def schema_message(schema: arrow.Schema) -> bytes:
    return frame(md.message(md.SCHEMA, md.schema_table(schema), 0))


def batch_message(length: int, nodes: list[tuple[int, int]], buffers: list[tuple[int, int]],
                  body: bytes, *, codec: int | None = None, body_length: int | None = None
                  ) -> bytes:
    rb = md.record_batch_table(length, nodes, buffers, codec)
    declared = len(body) if body_length is None else body_length
    return frame(md.message(md.RECORD_BATCH, rb, declared), body)


INT64 = arrow.Schema((arrow.Field("x", arrow.int64()),))


def int64_stream(length: int = 2, nodes: list[tuple[int, int]] | None = None,
                 buffers: list[tuple[int, int]] | None = None, body: bytes | None = None,
                 **kw: Any) -> bytes:
    """A stream of INT64 with one hand-built batch (by default a valid one: [7, 8])."""
    values = struct.pack(f"<{length}q", *range(7, 7 + length)) if body is None else body
    return (schema_message(INT64)
            + batch_message(length, nodes if nodes is not None else [(length, 0)],
                            buffers if buffers is not None else [(0, 0), (0, 8 * length)],
                            values, **kw)
            + EOS)
