"""streamdb.arrow against pyarrow and DuckDB: every type of the model both ways through the
IPC file and stream formats (pyarrow writes and we read; we write and pyarrow reads), with
compression and both alignments; slices at odd offsets; empty tables and schema-only
streams; metadata and extension types; dictionary deltas and replacements; memory maps
and zero-copy numpy views; DuckDB through the PyCapsule interface."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import mmap
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pytest

import streamdb
from streamdb import ArrowError, ArrowFormatError, arrow
from streamdb.arrow import types as at
from streamdb.arrow.array import aligned
from tests.arrow.helpers import (
    CASES,
    PYLIST_SKIP,
    N,
    our_write,
    pa_open,
    pa_read,
    pa_write,
    sample,
    wide_table,
)

FORMATS = ["file", "stream"]
COMPRESSIONS = [None, "lz4", "zstd"]


# -- every type, both directions ----------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_pyarrow_writes_we_read(name: str, compression: str | None) -> None:
    expected = sample(name)
    for fmt in FORMATS:
        data = pa_write(expected, fmt, compression)
        ours = arrow.read_ipc(data)
        assert ours.num_rows == N
        assert [b.num_rows for b in ours.batches] == [4, N - 4]
        assert ours.column_names == [name]
        back = ours.to_pyarrow()
        assert back.schema == expected.schema
        assert back.equals(expected), (fmt, back, expected)


@pytest.mark.parametrize(("fmt", "compression"),
                         [(f, c) for f in FORMATS for c in COMPRESSIONS], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_we_write_pyarrow_reads(name: str, fmt: str, compression: str | None) -> None:
    expected = sample(name)
    ours = arrow.Table.from_pyarrow(expected)
    for alignment in (8, 64):
        data = our_write(ours, fmt, compression, alignment)
        reader = pa_open(data, fmt)
        if fmt == "file":
            assert reader.num_record_batches == 2
        back = reader.read_all()
        back.validate(full=True)
        assert back.schema == expected.schema
        assert back.equals(expected), (alignment, back, expected)


@pytest.mark.parametrize("name", list(CASES))
def test_from_pyarrow_of_slices_at_any_offset(name: str) -> None:
    """from_pyarrow views pyarrow's buffers with pyarrow's offsets (struct children come
    sliced): slices at bit offsets that are not multiples of 8 convert back equal, and
    write as pyarrow wrote them."""
    table = sample(name)
    for offset, length in [(0, N), (1, 7), (3, 9), (9, 4), (5, 0)]:
        piece = table.slice(offset, length)
        ours = arrow.Table.from_pyarrow(piece)
        assert ours.num_rows == piece.num_rows
        assert ours.to_pyarrow().equals(piece), (offset, length)
        assert pa_read(our_write(ours, "stream"), "stream").equals(piece), (offset, length)


def test_from_pyarrow_shares_pyarrow_buffers() -> None:
    values = pa.array(np.arange(1000, dtype=np.int64))
    words = pa.array([f"w{i}" for i in range(1000)])
    table = pa.table({"v": values, "w": words, "s": pa.StructArray.from_arrays(
        [values, words], ["a", "b"])}).slice(10)
    ours = arrow.Table.from_pyarrow(table)
    v = ours.column("v").to_numpy(zero_copy_only=True)
    assert np.shares_memory(v, np.frombuffer(values.buffers()[1], np.int64))
    w = ours.batches[0].column("w")
    assert w.buffers[2] is not None and np.shares_memory(
        w.buffers[2], np.frombuffer(words.buffers()[2], np.uint8))
    s = ours.batches[0].column("s")
    assert np.shares_memory(s.children[0].values(), v)
    assert ours.to_pydict() == table.to_pydict()


@pytest.mark.parametrize("name", [
    n for n in sorted(set(CASES) - PYLIST_SKIP - {"interval[year_month]", "interval[day_time]",
                                                "struct<duplicate names>"})])
def test_to_pylist_matches_pyarrow(name: str) -> None:
    expected = sample(name)
    ours = arrow.Table.from_pyarrow(expected)
    assert ours.to_pydict() == expected.to_pydict()
    column = ours.batches[1].columns[0]
    assert column.slice(3, 3).to_pylist() == expected.column(0).chunk(1).slice(3, 3).to_pylist()
    assert column.null_count == expected.column(0).chunk(1).null_count


@pytest.mark.parametrize("name", [
    n for n in CASES if n != "struct<duplicate names>"])  # a dict holds one "x"
def test_array_of_to_pylist_round_trips(name: str) -> None:
    """array(values.to_pylist(), type) rebuilds the values (dictionaries are rebuilt too, so
    only the values are compared)."""
    column = arrow.Table.from_pyarrow(sample(name)).batches[1].columns[0]
    again = arrow.array(column.to_pylist(), column.type)
    assert again.type == column.type
    assert again.to_pylist() == column.to_pylist()
    if name in PYLIST_SKIP or name in ("interval[year_month]", "interval[day_time]"):
        return  # pyarrow cannot turn these into Python objects
    table = arrow.Table.from_pydict({name: again}).to_pyarrow()
    assert table.column(0).to_pylist() == sample(name).slice(4).column(0).to_pylist()


def test_decimal_to_pylist_keeps_every_digit() -> None:
    value = decimal.Decimal("123456789012345678901234567890.12")  # 32 digits: decimal128(38)
    expected = pa.table({"d": pa.array([value, None], pa.decimal128(38, 2))})
    ours = arrow.read_ipc(pa_write(expected, "stream"))
    assert ours.to_pyarrow().equals(expected)  # the stored bytes are right
    assert ours.to_pydict() == {"d": [value, None]}


def test_decimal_array_from_python_keeps_every_digit() -> None:
    value = decimal.Decimal("-98765432109876543210987654321.5")
    a = arrow.array([value], arrow.DecimalType(38, 1))
    back = pa_read(our_write(arrow.RecordBatch(arrow.Schema((arrow.Field("d", a.type),)), [a]),
                             "stream"), "stream")
    assert back.column("d").to_pylist() == [value]


def test_intervals_keep_their_units() -> None:
    """pyarrow cannot build year-month or day-time intervals from Python; its printing
    shows the units it read from us."""
    table = arrow.Table.from_pydict({
        "ym": arrow.array([14, None, -1], arrow.IntervalType(0)),
        "dt": arrow.array([(1, 2), None, (-3, 4)], arrow.IntervalType(1)),
        "mdn": arrow.array([(1, 2, 3), None, (-4, 5, -6)], arrow.IntervalType(2))})
    back = pa_read(our_write(table, "stream"), "stream")
    assert str(back.column("ym").type) == "month_interval"
    assert "14M" in str(back.column("ym")) and "-1M" in str(back.column("ym"))
    assert str(back.column("dt").type) == "day_time_interval"
    assert "1d2ms" in str(back.column("dt")) and "-3d4ms" in str(back.column("dt"))
    assert back.column("mdn").to_pylist() == [pa.MonthDayNano([1, 2, 3]), None,
                                              pa.MonthDayNano([-4, 5, -6])]
    again = arrow.read_ipc(pa_write(back, "file"))
    assert again.to_pydict() == table.to_pydict()


def test_model_types_match_pyarrow_names() -> None:
    ours = arrow.read_ipc(pa_write(wide_table(), "stream"))
    by_name = {f.name: f.type for f in ours.schema.fields}
    assert by_name["int8"] == arrow.int8() and by_name["uint64"] == arrow.uint64()
    assert by_name["float16"] == arrow.float16()
    assert by_name["decimal256"] == arrow.DecimalType(70, 3, 256)
    assert by_name["large_utf8"] == arrow.LargeUtf8Type()
    assert by_name["fixed_size_binary"] == arrow.FixedSizeBinaryType(3)
    assert by_name["time32[ms]"] == arrow.TimeType(1)
    assert by_name["timestamp[ns, Europe/Paris]"] == arrow.TimestampType(3, "Europe/Paris")
    assert by_name["duration[s]"] == arrow.DurationType(0)
    assert by_name["dictionary<uint16, utf8>"] == arrow.dictionary(arrow.uint16(), arrow.utf8())
    assert by_name["map"] == arrow.map_(arrow.utf8(), arrow.int64())
    assert isinstance(by_name["list<dictionary>"], arrow.ListType)
    assert isinstance(by_name["list<dictionary>"].value.type, arrow.DictionaryType)
    dup = by_name["struct<duplicate names>"]
    assert isinstance(dup, arrow.StructType)
    assert [f.name for f in dup.fields] == ["x", "x", "y"]


# -- slices ----------------------------------------------------------------------------------


def _sliceable() -> Any:
    rng = np.random.default_rng(7)
    n = 45

    def mask() -> Any:
        return rng.random(n) < 0.3

    return pa.table({
        "bool": pa.array(rng.random(n) < 0.5, mask=mask()),
        "int32": pa.array(rng.integers(-99, 99, n).astype(np.int32), mask=mask()),
        "float16": pa.array(rng.random(n).astype(np.float16), mask=mask()),
        "utf8": pa.array([str(i) * (i % 4) for i in range(n)], mask=mask()),
        "large_binary": pa.array([bytes(i % 5) for i in range(n)], pa.large_binary(),
                                 mask=mask()),
        "fsb": pa.array([bytes([i, i]) for i in range(n)], pa.binary(2), mask=mask()),
        "list": pa.array([list(range(i % 4)) for i in range(n)], pa.list_(pa.int32()),
                         mask=mask()),
        "large_list": pa.array([[j % 2 == 0 for j in range(i % 5)] for i in range(n)],
                               pa.large_list(pa.bool_()), mask=mask()),
        "fsl": pa.array([[i, None if i % 3 else i] for i in range(n)], pa.list_(pa.int64(), 2),
                        mask=mask()),
        "struct": pa.StructArray.from_arrays(
            [pa.array(rng.random(n) < 0.5, mask=mask()),
             pa.array([f"s{i}" for i in range(n)], mask=mask())],
            names=["b", "s"], mask=pa.array(mask())),
        "dictionary": pa.DictionaryArray.from_arrays(
            pa.array(rng.integers(0, 3, n).astype(np.int8), mask=mask()),
            pa.array(["a", "b", "c"])),
        "null": pa.nulls(n),
        "map": pa.array([[("k", i)] if i % 3 else [] for i in range(n)],
                        pa.map_(pa.utf8(), pa.int64()), mask=mask()),
        "list<struct>": pa.array([[{"v": i}] * (i % 3) for i in range(n)],
                                 pa.list_(pa.struct([("v", pa.int16())])), mask=mask()),
    })


SLICEABLE = _sliceable()
OURS_SLICEABLE = arrow.Table.from_pyarrow(SLICEABLE)


@pytest.mark.parametrize("offset", [0, 1, 3, 7, 8, 9, 13, 16, 31, 44, 45])
@pytest.mark.parametrize("fmt", FORMATS)
def test_sliced_columns_written_by_us(offset: int, fmt: str) -> None:
    """Slices keep their buffers and an offset: bit offsets that are not multiples of 8,
    offsets into list, string and struct children. We write them; pyarrow reads them."""
    (batch,) = OURS_SLICEABLE.batches
    for length in (0, 1, 5, 13, 45):
        piece = batch.slice(offset, length)
        assert all(c.offset == offset or c.type.layout == "null" for c in piece.columns)
        expected = SLICEABLE.slice(offset, length)
        for alignment in (8, 64):
            back = pa_read(our_write(piece, fmt, "zstd" if length == 13 else None, alignment),
                           fmt)
            assert back.equals(expected), (offset, length)
        assert piece.to_pydict() == expected.to_pydict()


def test_a_slice_of_a_slice_and_of_nested_children() -> None:
    (batch,) = OURS_SLICEABLE.batches
    inner = batch.slice(5, 30).slice(3, 20)
    back = pa_read(our_write(inner, "stream"), "stream")
    assert back.equals(SLICEABLE.slice(8, 20))
    # a struct column sliced directly, and its child arrays sliced on their own
    struct = batch.column("struct").slice(11, 9)
    one = arrow.RecordBatch(arrow.Schema((arrow.Field("s", struct.type),)), [struct])
    assert pa_read(our_write(one, "file"), "file").column(0).equals(
        SLICEABLE.column("struct").slice(11, 9))
    child = struct.children[1].slice(2, 3)
    assert child.to_pylist() == SLICEABLE.column("struct").chunk(0).field(1).slice(2, 3
                                                                                   ).to_pylist()


def test_sliced_bool_bitmaps_at_every_bit_offset() -> None:
    bits = np.random.default_rng(1).random(70) < 0.5
    valid = np.random.default_rng(2).random(70) < 0.7
    full = arrow.array(bits, arrow.bool_(), mask=~valid)
    expected = pa.array(bits, mask=~valid)
    for offset in range(17):
        for length in (1, 7, 8, 9, 50):
            piece = full.slice(offset, length)
            batch = arrow.RecordBatch(arrow.Schema((arrow.Field("b", arrow.bool_()),)), [piece])
            back = pa_read(our_write(batch, "stream", alignment=8), "stream")
            assert back.column(0).chunk(0).equals(expected.slice(offset, length)), offset


# -- table shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_tables_every_type(fmt: str) -> None:
    wide = wide_table()
    empty = wide.to_batches()[0].slice(0, 0)
    ours = arrow.read_ipc(pa_write([empty], fmt))
    assert ours.num_rows == 0 and ours.num_columns == len(CASES)
    assert len(ours.batches) == 1
    assert ours.to_pyarrow().equals(pa.Table.from_batches([empty]))
    back = pa_read(our_write(ours, fmt, "lz4"), fmt)
    assert back.num_rows == 0 and back.schema == wide.schema


@pytest.mark.parametrize("fmt", FORMATS)
def test_schema_only(fmt: str) -> None:
    """No batches at all: the schema message (and for a file the footer) alone."""
    schema = wide_table().schema
    ours = arrow.read_ipc(pa_write(pa.Table.from_batches([], schema), fmt))
    assert ours.batches == () and ours.num_rows == 0
    assert ours.to_pyarrow().schema == schema
    data = our_write(ours, fmt)
    reader = pa_open(data, fmt)
    assert reader.schema == schema
    if fmt == "file":
        assert reader.num_record_batches == 0
    assert reader.read_all().num_rows == 0
    # the model's own schema, written with no batches
    model = arrow.Table(arrow.Schema((arrow.Field("a", arrow.int8()),
                                      arrow.Field("d", arrow.dictionary(arrow.int32(),
                                                                        arrow.utf8())))))
    back = pa_read(our_write(model, fmt), fmt)
    assert back.num_rows == 0
    assert back.schema == pa.schema([("a", pa.int8()),
                                     ("d", pa.dictionary(pa.int32(), pa.utf8()))])


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_batches_both_ways(fmt: str) -> None:
    (whole,) = wide_table().to_batches()
    batches = [whole.slice(0, 3), whole.slice(3, 0), whole.slice(3, 5), whole.slice(8)]
    expected = pa.Table.from_batches(batches)
    ours = arrow.read_ipc(pa_write(batches, fmt))
    assert [b.num_rows for b in ours.batches] == [3, 0, 5, N - 8]
    assert ours.to_pyarrow().equals(expected)
    data = our_write(ours, fmt, "zstd")
    reader = pa_open(data, fmt)
    if fmt == "file":
        read = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    else:
        read = list(reader)
    assert [b.num_rows for b in read] == [3, 0, 5, N - 8]
    assert pa.Table.from_batches(read).equals(expected)


def test_stream_and_file_writer_classes() -> None:
    schema = arrow.Schema((arrow.Field("x", arrow.int64()), arrow.Field("s", arrow.utf8())))
    batches = [arrow.RecordBatch.from_pydict({"x": np.arange(i, i + 3), "s": ["a", None, "c"]},
                                             schema) for i in range(3)]
    for fmt, cls in (("stream", arrow.StreamWriter), ("file", arrow.FileWriter)):
        sink = io.BytesIO()
        with cls(sink, schema, compression="lz4", alignment=8) as w:
            for b in batches:
                w.write_batch(b)
        with pytest.raises(ArrowError):
            w.write_batch(batches[0])
        back = pa_read(sink.getvalue(), fmt)
        assert back.column("x").to_pylist() == [0, 1, 2, 1, 2, 3, 2, 3, 4]
        assert back.column("s").to_pylist() == ["a", None, "c"] * 3


def test_stream_reader_and_file_reader_classes() -> None:
    table = sample("utf8")
    stream = pa_write(table, "stream")
    reader = arrow.StreamReader(io.BytesIO(stream))
    assert reader.schema.names == ["utf8"]
    assert [b.num_rows for b in reader] == [4, N - 4]
    assert reader.read_next_batch() is None
    file = arrow.FileReader(pa_write(table, "file"))
    assert file.num_record_batches == 2
    assert file.get_batch(1).to_pydict() == table.slice(4).to_pydict()
    assert arrow.read_ipc(io.BytesIO(stream)).to_pyarrow().equals(table)


def test_file_reader_batches_from_many_threads() -> None:
    """get_batch reads each block at its own offset: threads sharing one FileReader get
    the batches they ask for."""
    batches = [pa.record_batch({"x": pa.array(np.arange(i, i + 100 + i))}) for i in range(40)]
    data = pa_write(pa.Table.from_batches(batches), "file")
    reader = arrow.FileReader(data)
    wanted = [i % 40 for i in range(2000)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often, inside get_batch too
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda i: reader.get_batch(i).column("x").to_numpy()[0],
                                wanted))
    finally:
        sys.setswitchinterval(interval)
    assert got == wanted


def test_read_from_binary_files(tmp_path: Path) -> None:
    table = sample("list<struct>")
    for fmt in FORMATS:
        path = tmp_path / f"t.{fmt}"
        path.write_bytes(pa_write(table, fmt, "zstd"))
        for mm in (None, False):
            assert arrow.read_ipc(path, mmap=mm).to_pyarrow().equals(table)
            assert arrow.read_ipc(str(path), mmap=mm).to_pyarrow().equals(table)
        with path.open("rb") as f:
            assert arrow.read_ipc(f).to_pyarrow().equals(table)
        with path.open("rb") as f:
            assert arrow.read_ipc(f, mmap=True).to_pyarrow().equals(table)


# -- metadata and extension types --------------------------------------------------------------


def _with_metadata() -> Any:
    inner = pa.field("leaf", pa.int32(), metadata={"leaf-key": "leaf-value"})
    schema = pa.schema([
        pa.field("a", pa.int64(), metadata={"unit": "m", "empty": ""}),
        pa.field("s", pa.struct([inner]), nullable=False),
        pa.field("l", pa.list_(pa.field("elem", pa.utf8(), metadata={"k": "é"}))),
    ], metadata={"origin": "streamdb tests", "json": '{"x": [1, 2]}'})
    return pa.table({"a": [1, None], "s": [{"leaf": 1}, {"leaf": None}], "l": [["x"], None]},
                    schema=schema)


@pytest.mark.parametrize("fmt", FORMATS)
def test_schema_and_field_metadata_preserved(fmt: str) -> None:
    expected = _with_metadata()
    ours = arrow.read_ipc(pa_write(expected, fmt))
    assert dict(ours.schema.metadata) == {"origin": "streamdb tests", "json": '{"x": [1, 2]}'}
    a, s, lst = ours.schema.fields
    assert dict(a.metadata) == {"unit": "m", "empty": ""}
    assert not s.nullable
    assert isinstance(s.type, arrow.StructType)
    assert s.type.fields[0].metadata == (("leaf-key", "leaf-value"),)
    assert isinstance(lst.type, arrow.ListType)
    assert lst.type.value.name == "elem" and lst.type.value.metadata == (("k", "é"),)
    assert ours.to_pyarrow().schema.equals(expected.schema, check_metadata=True)
    back = pa_read(our_write(ours, fmt), fmt)
    assert back.schema.equals(expected.schema, check_metadata=True)
    assert back.equals(expected)


def test_a_non_nullable_null_field_converts() -> None:
    """pa.field() refuses a non-nullable null-type field, but IPC carries one (a fuzzer
    finding): it converts, and pyarrow's own read of our bytes agrees."""
    schema = arrow.Schema((arrow.Field("n", arrow.null(), False),))
    table = arrow.Table(schema, [arrow.RecordBatch(schema, [arrow.Array(arrow.null(), 2, [])])])
    for fmt in FORMATS:
        assert table.to_pyarrow().equals(pa_read(our_write(table, fmt), fmt))
    assert not table.to_pyarrow().schema.field("n").nullable


def test_model_metadata_read_by_pyarrow() -> None:
    schema = arrow.Schema((arrow.Field("x", arrow.int8(), False, (("k", "v"),)),),
                          (("table", "t1"), ("n", "2")))
    table = arrow.Table.from_pydict({"x": np.array([1, 2], np.int8)}, schema)
    for fmt in FORMATS:
        back = pa_read(our_write(table, fmt), fmt)
        assert back.schema.metadata == {b"table": b"t1", b"n": b"2"}
        assert back.schema.field("x").metadata == {b"k": b"v"}
        assert not back.schema.field("x").nullable


class RationalType(pa.ExtensionType):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(pa.struct([("num", pa.int32()), ("den", pa.int32())]),
                         "streamdb.test.rational")

    def __arrow_ext_serialize__(self) -> bytes:
        return b"v1"

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: Any, serialized: bytes) -> RationalType:
        assert serialized == b"v1"
        return cls()


@pytest.fixture
def rational() -> Iterator[Any]:
    ty = RationalType()
    pa.register_extension_type(ty)
    try:
        yield ty
    finally:
        pa.unregister_extension_type("streamdb.test.rational")


@pytest.mark.parametrize("fmt", FORMATS)
def test_uuid_extension_read_as_storage_with_its_metadata(fmt: str) -> None:
    values = [uuid.UUID(int=i * 7919).bytes if i % 3 else None for i in range(6)]
    expected = pa.table({"id": pa.array(values, pa.uuid())})
    ours = arrow.read_ipc(pa_write(expected, fmt, "lz4"))
    (field,) = ours.schema.fields
    assert field.type == arrow.FixedSizeBinaryType(16)
    assert ("ARROW:extension:name", "arrow.uuid") in field.metadata
    assert ours.to_pydict() == {"id": values}
    assert ours.to_pyarrow().equals(expected)
    assert ours.to_pyarrow().schema.field("id").type == pa.uuid()
    assert pa_read(our_write(ours, fmt), fmt).equals(expected)


def test_registered_extension_type(rational: Any) -> None:
    storage = pa.array([{"num": 1, "den": 2}, None, {"num": -3, "den": 4}],
                       pa.struct([("num", pa.int32()), ("den", pa.int32())]))
    expected = pa.table({"r": pa.ExtensionArray.from_storage(rational, storage)})
    for fmt in FORMATS:
        ours = arrow.read_ipc(pa_write(expected, fmt))
        (field,) = ours.schema.fields
        assert isinstance(field.type, arrow.StructType)
        assert dict(field.metadata) == {"ARROW:extension:name": "streamdb.test.rational",
                                        "ARROW:extension:metadata": "v1"}
        assert ours.to_pydict() == {"r": storage.to_pylist()}
        back = pa_read(our_write(ours, fmt), fmt)
        assert back.schema.field("r").type == rational
        assert back.equals(expected)


# -- dictionaries across batches --------------------------------------------------------------


def _dict_batch(codes: list[int | None], values: list[Any], value_type: Any = None) -> Any:
    return pa.record_batch({"d": pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int32()), pa.array(values, value_type))})


def _pa_dictionary_stream(batches: list[Any], fmt: str = "stream", **options: Any
                          ) -> tuple[bytes, Any]:
    sink = pa.BufferOutputStream()
    new = pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream
    with new(sink, batches[0].schema, options=pa.ipc.IpcWriteOptions(**options)) as w:
        for b in batches:
            w.write_batch(b)
    return sink.getvalue().to_pybytes(), w.stats


@pytest.mark.parametrize("fmt", FORMATS)
def test_pyarrow_delta_dictionary(fmt: str) -> None:
    batches = [_dict_batch([0, 1, None], ["a", "b"]),
               _dict_batch([2, 0, 3], ["a", "b", "c", "d"]),
               _dict_batch([4, None], ["a", "b", "c", "d", "e"])]
    data, stats = _pa_dictionary_stream(batches, fmt, emit_dictionary_deltas=True)
    assert stats.num_dictionary_deltas == 2 and stats.num_replaced_dictionaries == 0
    ours = arrow.read_ipc(data)
    assert ours.column("d").to_pylist() == ["a", "b", None, "c", "a", "d", "e", None]
    if fmt == "stream":  # each batch keeps the dictionary it was sent with
        assert [len(b.columns[0].dictionary or []) for b in ours.batches] == [2, 4, 5]
    expected = pa.Table.from_batches(batches)
    assert ours.to_pyarrow().column("d").to_pylist() == expected.column("d").to_pylist()
    back = pa_read(our_write(ours, fmt), fmt)
    assert back.column("d").to_pylist() == expected.column("d").to_pylist()


def test_pyarrow_replacement_dictionary_stream() -> None:
    batches = [_dict_batch([0, 1, None], ["a", "b"]), _dict_batch([1, 0], ["x", "y"]),
               _dict_batch([0, 0], ["x", "y"]), _dict_batch([2], ["p", "q", "r"])]
    data, stats = _pa_dictionary_stream(batches)
    assert stats.num_replaced_dictionaries == 2
    ours = arrow.read_ipc(data)
    assert ours.column("d").to_pylist() == ["a", "b", None, "y", "x", "x", "x", "r"]
    assert [b.columns[0].dictionary.to_pylist() for b in ours.batches  # type: ignore[union-attr]
            ] == [["a", "b"], ["x", "y"], ["x", "y"], ["p", "q", "r"]]
    assert ours.to_pyarrow().equals(pa.Table.from_batches(batches))


def test_pyarrow_replacement_and_delta_in_one_stream() -> None:
    batches = [_dict_batch([0, 1], ["a", "b"]), _dict_batch([2], ["a", "b", "c"]),
               _dict_batch([0], ["z"]), _dict_batch([1, 0], ["z", "y"])]
    data, stats = _pa_dictionary_stream(batches, emit_dictionary_deltas=True)
    assert stats.num_dictionary_deltas == 2 and stats.num_replaced_dictionaries == 1
    ours = arrow.read_ipc(data)
    assert ours.column("d").to_pylist() == ["a", "b", "c", "z", "y", "z"]


def _ours_dict(values: list[Any], ty: arrow.DataType | None = None) -> arrow.RecordBatch:
    dty = arrow.dictionary(arrow.int16(), ty or arrow.utf8())
    return arrow.RecordBatch.from_pydict({"d": arrow.array(values, dty)})


def test_our_stream_writer_replaces_a_changed_dictionary() -> None:
    batches = [_ours_dict(["a", "b", None]), _ours_dict(["b", "c"]), _ours_dict(["q"])]
    data = our_write(batches, "stream")
    reader = pa_open(data, "stream")
    back = reader.read_all()
    assert back.column("d").to_pylist() == ["a", "b", None, "b", "c", "q"]
    assert reader.stats.num_replaced_dictionaries == 2
    assert arrow.read_ipc(data).column("d").to_pylist() == ["a", "b", None, "b", "c", "q"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_our_writer_sends_a_grown_dictionary_as_a_delta(fmt: str) -> None:
    batches = [_ours_dict(["a", "b"]), _ours_dict(["a", "b", "c"]), _ours_dict(["a", "b", "c"])]
    data = our_write(batches, fmt)
    reader = pa_open(data, fmt)
    back = reader.read_all()
    assert back.column("d").to_pylist() == ["a", "b", "a", "b", "c", "a", "b", "c"]
    assert reader.stats.num_dictionary_deltas == 1
    assert reader.stats.num_dictionary_batches == 2


def test_our_file_writer_refuses_a_replaced_dictionary() -> None:
    batches = [_ours_dict(["a", "b"]), _ours_dict(["x"])]
    with pytest.raises(ArrowError, match="cannot replace"):
        our_write(batches, "file")
    table = arrow.Table.from_pyarrow(pa.Table.from_batches(
        [_dict_batch([0], ["a"]), _dict_batch([0], ["b"])]))
    with pytest.raises(ArrowError) as info:
        our_write(table, "file")
    assert not isinstance(info.value, ArrowFormatError)
    assert pa_read(our_write(table, "stream"), "stream").column("d").to_pylist() == ["a", "b"]


def test_our_file_writer_accepts_equal_dictionaries_with_nan() -> None:
    ty = arrow.float64()
    batches = [_ours_dict([1.5, float("nan")], ty), _ours_dict([1.5, float("nan")], ty)]
    back = pa_read(our_write(batches, "file"), "file")
    assert back.num_rows == 4


@pytest.mark.parametrize("value_type", ["time32[s]", "time32[ms]", "time64[us]"])
def test_delta_dictionary_of_time_values(value_type: str) -> None:
    ty = {"time32[s]": pa.time32("s"), "time32[ms]": pa.time32("ms"),
          "time64[us]": pa.time64("us")}[value_type]
    batches = [_dict_batch([0, 1], [1, 2], ty), _dict_batch([2, 0], [1, 2, 3], ty)]
    data, stats = _pa_dictionary_stream(batches, emit_dictionary_deltas=True)
    assert stats.num_dictionary_deltas == 1
    assert arrow.read_ipc(data).to_pyarrow().equals(pa.Table.from_batches(batches))


def test_delta_dictionary_of_far_timestamps() -> None:
    ty = pa.timestamp("s")
    far = 400_000_000_000  # year ~14,600: valid int64 seconds, beyond datetime.MAXYEAR
    batches = [_dict_batch([0], [far], ty), _dict_batch([1, 0], [far, 0], ty)]
    data, _ = _pa_dictionary_stream(batches, emit_dictionary_deltas=True)
    assert arrow.read_ipc(data).to_pyarrow().equals(pa.Table.from_batches(batches))


# -- to_pylist of valid data -------------------------------------------------------------------


def test_map_with_other_field_names() -> None:
    ty = pa.map_(pa.field("k", pa.utf8(), nullable=False), pa.field("v", pa.int64()))
    expected = pa.table({"m": pa.array([[("a", 1)], None, []], ty)})
    ours = arrow.read_ipc(pa_write(expected, "stream"))
    assert ours.to_pyarrow().equals(expected)  # the layout is right
    assert ours.to_pydict() == {"m": [[("a", 1)], None, []]}


def test_binary_custom_metadata_from_pyarrow() -> None:
    table = pa.table({"x": [1]}).replace_schema_metadata({b"blob": b"\xff\x00\xfe"})
    ours = arrow.read_ipc(pa_write(table, "stream"))
    assert ours.num_rows == 1


# -- memory maps and zero-copy -----------------------------------------------------------------


def _base(a: np.ndarray[Any, Any]) -> object:
    obj: object = a
    while isinstance(obj, np.ndarray):
        obj = obj.base
    return obj


@pytest.mark.parametrize("writer", ["ours", "pyarrow"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_memory_mapped_columns_are_views_of_the_file(tmp_path: Path, fmt: str,
                                                     writer: str) -> None:
    x = np.arange(1000, dtype=np.int64) * 3
    path = tmp_path / "t.arrow"
    if writer == "ours":
        arrow.write_ipc(path, arrow.Table.from_pydict({"x": x, "s": ["v"] * 1000}), format=fmt)
    else:
        path.write_bytes(pa_write(pa.table({"x": x, "s": ["v"] * 1000}), fmt))
    table = arrow.read_ipc(path)
    column = table.column("x").chunks[0]
    values = column.to_numpy()
    np.testing.assert_array_equal(values, x)
    base = _base(values)
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
    whole = np.frombuffer(base.obj, np.uint8)
    assert np.shares_memory(values, whole)
    assert np.shares_memory(column.buffers[1], whole)
    assert not values.flags.writeable
    strings = table.column("s").chunks[0]
    assert np.shares_memory(strings.buffers[2], whole)
    # mmap=False reads the file into memory instead
    copy = _base(arrow.read_ipc(path, mmap=False).column("x").chunks[0].to_numpy())
    assert not (isinstance(copy, memoryview) and isinstance(copy.obj, mmap.mmap))


def test_to_numpy_is_zero_copy_without_nulls() -> None:
    x = np.arange(50, dtype=np.float32)
    ts = np.arange(50).astype("datetime64[ms]")
    data = pa_write(pa.table({"x": x, "ts": ts, "n": pa.array([1.0, None] * 25)}), "stream")
    table = arrow.read_ipc(data)
    whole = np.frombuffer(data, np.uint8)
    values = table.column("x").to_numpy(zero_copy_only=True)
    assert values.dtype == np.float32 and np.shares_memory(values, whole)
    np.testing.assert_array_equal(values, x)
    times = table.column("ts").to_numpy(zero_copy_only=True)
    assert times.dtype == np.dtype("datetime64[ms]") and np.shares_memory(times, whole)
    np.testing.assert_array_equal(times, ts)
    sliced = table.column("x").chunks[0].slice(7, 5).to_numpy()
    assert np.shares_memory(sliced, whole) and sliced.tolist() == [7, 8, 9, 10, 11]
    with pytest.raises(ArrowError):
        table.column("n").to_numpy(zero_copy_only=True)
    with_nulls = table.column("n").to_numpy(zero_copy_only=False)
    assert not np.shares_memory(with_nulls, whole)
    assert np.isnan(with_nulls[1::2]).all() and (with_nulls[::2] == 1).all()


def test_from_numpy_is_zero_copy_when_aligned() -> None:
    buf = aligned(8 * 100).view(np.int64)
    buf[:] = np.arange(100)
    a = arrow.from_numpy(buf)
    assert np.shares_memory(a.to_numpy(), buf)
    data = our_write(arrow.RecordBatch(arrow.Schema((arrow.Field("x", a.type),)), [a]), "file")
    assert pa_read(data, "file").column("x").to_pylist() == list(range(100))


# -- DuckDB and the PyCapsule interface ---------------------------------------------------------


def test_duckdb_queries_our_table_through_the_capsule() -> None:
    t = arrow.Table.from_batches([
        arrow.RecordBatch.from_pydict({"x": np.arange(0, 500, dtype=np.int64),
                                       "g": ["a", "b"] * 250}),
        arrow.RecordBatch.from_pydict({"x": np.arange(500, 1000, dtype=np.int64),
                                       "g": ["a", "b"] * 250})])
    assert hasattr(t, "__arrow_c_stream__")
    total = duckdb.sql("select sum(x) from t")
    assert total is not None and total.fetchall() == [(499500,)]
    groups = duckdb.sql("select g, count(*), max(x) from t group by g order by g")
    assert groups is not None
    assert groups.fetchall() == [("a", 500, 998), ("b", 500, 999)]
    assert pa.table(t).equals(t.to_pyarrow())
    assert pa.schema(t) == t.to_pyarrow().schema


def test_duckdb_queries_our_ipc_file() -> None:
    source = arrow.Table.from_pydict({
        "x": arrow.array([1, None, 3, 4], arrow.int32()),
        "when": arrow.array([dt.datetime(2024, 1, i + 1) for i in range(4)],
                            arrow.TimestampType(2)),
        "tag": arrow.array(["p", "q", None, "p"], arrow.dictionary(arrow.int8(), arrow.utf8())),
        "items": arrow.array([[1, 2], [], None, [3]], arrow.list_(arrow.int64()))})
    data = our_write(source, "file", "zstd")
    pt = pa.ipc.open_file(pa.py_buffer(data)).read_all()  # noqa: F841 (DuckDB finds it)
    for sql, expected in [
            ("select sum(x), count(*) from pt", [(8, 4)]),
            ("select count(*) from pt where tag = 'p'", [(2,)]),
            ("select sum(len(items)) from pt", [(3,)]),
            ('select max("when") from pt', [(dt.datetime(2024, 1, 4),)])]:
        rel = duckdb.sql(sql)
        assert rel is not None and rel.fetchall() == expected, sql


def _polars_sample() -> arrow.Table:
    return arrow.Table.from_pydict({
        "x": arrow.array([1, None, 3, 4], arrow.int64()),
        "f": np.array([0.5, 1.5, -2.0, 8.25]),
        "s": ["p", None, "q", "é"],
        "tag": arrow.array(["a", "b", None, "a"], arrow.dictionary(arrow.int32(), arrow.utf8())),
        "items": arrow.array([[1, 2], [], None, [3]], arrow.list_(arrow.int64())),
        "when": arrow.array([dt.datetime(2024, 1, i + 1) for i in range(4)],
                            arrow.TimestampType(2))})


def test_polars_reads_our_table_batch_and_array_through_the_capsule() -> None:
    ours = _polars_sample()
    df = pl.DataFrame(ours)  # __arrow_c_stream__
    assert df.equals(pl.DataFrame(ours.to_pyarrow()))
    assert df.columns == ours.column_names and df.height == 4
    assert df["x"].to_list() == [1, None, 3, 4]
    assert df["tag"].to_list() == ["a", "b", None, "a"]
    assert df["items"].to_list() == [[1, 2], [], None, [3]]
    assert df.filter(pl.col("tag") == "a")["f"].sum() == 8.75
    batch = ours.batches[0]
    assert pl.DataFrame(batch).equals(df)  # __arrow_c_array__ of a batch
    series = pl.Series(batch.column("s"))  # __arrow_c_array__ of an array
    assert series.to_list() == ["p", None, "q", "é"]
    assert pl.Series(batch.column("x").slice(1, 2)).to_list() == [None, 3]


def test_tables_from_polars_and_duckdb_through_the_capsule() -> None:
    ours = _polars_sample()
    back = arrow.Table.from_arrow(pl.DataFrame(ours))
    for name in ("x", "f", "s", "items", "when", "tag"):
        assert back.column(name).to_pylist() == ours.column(name).to_pylist(), name
    rel = duckdb.sql("select range::int64 as x from range(5)")
    assert arrow.Table.from_arrow(rel).column("x").to_pylist() == list(range(5))
    assert arrow.Table.from_arrow(ours.to_pyarrow()).equals(ours)
    with pytest.raises(streamdb.InvalidArgumentError):
        arrow.Table.from_arrow([1, 2, 3])
    assert arrow.Table.from_arrow(ours) is ours
    assert arrow.Table.from_arrow(ours.batches[0]).equals(ours)
    struct_array = pa.array([{"a": 1}, {"a": 2}])  # __arrow_c_array__ of a struct array
    assert arrow.Table.from_arrow(struct_array).to_pydict() == {"a": [1, 2]}
    # view types (which Polars hands out) arrive as their offset-based forms, nested too
    views = pa.table({
        "s": pa.array(["a", None, "bc"], pa.string_view()),
        "b": pa.array([b"x", b"", None], pa.binary_view()),
        "l": pa.array([["p"], None, ["q", None]], pa.list_(pa.string_view())),
        "st": pa.array([{"k": "v"}, None, {"k": None}], pa.struct([("k", pa.string_view())]))})
    got = arrow.Table.from_arrow(pa.RecordBatchReader.from_batches(views.schema,
                                                                   views.to_batches()))
    assert [str(f.type) for f in got.schema.fields] == [
        "large_utf8", "large_binary", "list<item: large_utf8>",
        "struct<k: large_utf8>"]
    assert got.to_pydict() == views.to_pydict()
    with pytest.raises(streamdb.UnsupportedError):
        arrow.Table.from_arrow(pa.table({"lv": pa.array([[1], None], pa.list_view(pa.int8()))}))


def test_from_arrow_reads_views_of_pyarrow_tables_and_batches() -> None:
    """pyarrow tables and batches holding string and binary views arrive as large_utf8
    and large_binary, as other producers' do."""
    words = ["a", None, "", "日本"]
    blobs = [b"x", None, b"", b"\0"]
    table = pa.table({"s": pa.array(words, pa.string_view()),
                      "b": pa.array(blobs, pa.binary_view()),
                      "l": pa.array([[w] for w in words], pa.list_(pa.string_view()))})
    for data in (table, table.to_batches()[0]):
        got = arrow.Table.from_arrow(data)
        assert [str(f.type) for f in got.schema.fields] == [
            "large_utf8", "large_binary", "list<item: large_utf8>"]
        assert got.to_pydict() == table.to_pydict()


def test_schema_and_batch_capsules() -> None:
    ours = _polars_sample()
    assert pa.schema(ours.schema) == ours.to_pyarrow().schema
    assert pa.record_batch(ours.batches[0]).equals(ours.to_pyarrow().to_batches()[0])
    assert pa.array(ours.batches[0].column("x")).to_pylist() == [1, None, 3, 4]
    empty = ours.batches[0].slice(0, 0)
    assert pa.record_batch(empty).num_rows == 0
    assert pa.record_batch(empty).schema == ours.to_pyarrow().schema


def test_duckdb_result_read_back() -> None:
    rel = duckdb.sql("select range::int64 as x, range % 3 = 0 as b from range(20)")
    assert rel is not None
    expected = rel.to_arrow_table()
    ours = arrow.read_ipc(pa_write(expected, "stream"))
    assert ours.column("x").to_pylist() == list(range(20))
    assert ours.to_pyarrow().equals(expected)


def test_a_failed_file_write_leaves_no_file_and_checks_arguments_first(tmp_path: Path) -> None:
    words = arrow.dictionary(arrow.int16(), arrow.utf8())
    schema = arrow.Schema((arrow.Field("w", words),))
    batches = [arrow.RecordBatch.from_pydict({"w": arrow.array(values, words)}, schema)
               for values in (["a", "b"], ["c", "a"])]  # the second replaces the dictionary
    target = tmp_path / "t.arrow"
    with pytest.raises(streamdb.ArrowError, match="replace"):
        arrow.write_ipc(target, batches, format="file")
    assert not target.exists()
    sink = io.BytesIO()
    with pytest.raises(streamdb.InvalidArgumentError):
        arrow.FileWriter(sink, schema, alignment=16)
    assert sink.getvalue() == b""
    with pytest.raises(streamdb.ArrowError), arrow.FileWriter(sink, schema) as w:
        for b in batches:
            w.write_batch(b)
    assert not sink.getvalue().endswith(b"ARROW1")  # no footer: nothing looks complete


def test_to_pyarrow_shares_our_buffers() -> None:
    """Fixed-width columns, strings and nested children reach pyarrow without a copy."""
    table = arrow.Table.from_pydict({"x": np.arange(1000, dtype=np.int64),
                                     "s": [f"w{i}" for i in range(1000)]})
    got = table.to_pyarrow()
    ours = table.column("x").to_numpy()
    theirs = got.column("x").chunk(0).to_numpy(zero_copy_only=True)
    assert np.shares_memory(ours, theirs)
    data = table.batches[0].columns[1].buffers[2]
    assert data is not None
    assert got.column("s").chunk(0).buffers()[2].address == data.ctypes.data
    assert got.to_pydict() == table.to_pydict()


# -- building arrays from Python and numpy values (review findings) --------------------------


def test_from_pydict_with_a_schema_takes_columns_by_name() -> None:
    schema = arrow.Schema((arrow.Field("a", arrow.int64()), arrow.Field("b", arrow.utf8())))
    t = arrow.Table.from_pydict({"b": ["x"], "a": [2]}, schema)
    assert t.to_pydict() == {"a": [2], "b": ["x"]}
    for bad in ({"a": [2], "zzz": ["x"]}, {"a": [2]}, {"a": [1], "b": ["x"], "c": [3]}):
        with pytest.raises(ArrowError):
            arrow.Table.from_pydict(bad, schema)


def test_inference_of_ints_and_floats_together() -> None:
    assert arrow.array([1, 2.5]).to_pylist() == [1.0, 2.5]
    assert arrow.array([1, None, 2]).type == arrow.int64()
    assert arrow.array([[1], [2.5]]).to_pylist() == [[1.0], [2.5]]
    assert arrow.array([1, 2.5]).to_pylist() == pa.array([1, 2.5]).to_pylist()
    with pytest.raises(ArrowError):
        arrow.array([1, "a"])


def test_datetime64_values_take_the_type_unit_and_nat_is_null() -> None:
    secs = np.array(["2020-01-01T00:00:01", "NaT"], "M8[s]")
    for unit in range(4):
        ours = arrow.array(secs, arrow.TimestampType(unit))
        assert ours.to_pyarrow().equals(pa.array(secs, pa.timestamp(at.UNIT_NAMES[unit])))
        assert ours.null_count == 1
    days = np.array(["2020-01-01", "NaT", "1969-12-31"], "M8[D]")
    for date, pty in ((arrow.DateType(at.DAY), pa.date32()),
                      (arrow.DateType(at.MILLI), pa.date64())):
        assert arrow.array(days, date).to_pylist() == pa.array(days, pty).to_pylist()
    span = np.array([1500, 2], "m8[ms]")
    assert arrow.array(span, arrow.DurationType(0)).to_pylist() == pa.array(
        span.astype("m8[s]"), pa.duration("s")).to_pylist()


def test_numpy_values_that_do_not_fit_are_refused() -> None:
    for values, ty in [(np.array([300, -1]), arrow.int8()), (np.array([-1]), arrow.uint64()),
                       (np.array([1.5, np.nan]), arrow.int64())]:
        with pytest.raises(ArrowError):
            arrow.array(values, ty)
    assert arrow.array(np.array([3, -1]), arrow.int8()).to_pylist() == [3, -1]
    masked = arrow.from_numpy(np.array([1.0, np.nan]), arrow.int32(), mask=np.array([0, 1]))
    assert masked.to_pylist() == [1, None]
    with pytest.raises(ArrowError):
        arrow.from_numpy(np.arange(10), mask=np.array([True, False]))


def test_values_of_the_wrong_kind_are_arrow_errors() -> None:
    cases: list[tuple[list[Any], arrow.DataType | None]] = [
        ([5, 2], arrow.utf8()), ([b"\xff"], arrow.utf8()), ([1], arrow.binary()),
        ([2**64], None), ([300], arrow.int8()),
        ([dt.datetime(2020, 1, 1)], arrow.DateType(at.DAY))]
    for values, ty in cases:
        with pytest.raises(ArrowError):
            arrow.array(values, ty)
    assert arrow.array([b"x", "y"], arrow.utf8()).to_pylist() == ["x", "y"]
