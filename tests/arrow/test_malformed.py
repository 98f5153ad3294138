"""Malformed Arrow IPC input: whatever the bytes, reading ends in ArrowFormatError (its
subclass ArrowLimitError) or UnsupportedError, or in a table, never in another exception,
and nothing is allocated by a size the input claims. Truncations at and between message
boundaries, every bit flip of a schema's metadata, hostile lengths and offsets in
hand-built messages, bad dictionary indices and offsets, unsupported types, random
mutations."""

from __future__ import annotations

import decimal
import io
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import lz4.frame
import numpy as np
import pyarrow as pa
import pytest
import zstandard
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from streamdb import ArrowFormatError, ArrowLimitError, StreamDbError, UnsupportedError, arrow
from streamdb.arrow import flatbuf as fb
from streamdb.arrow import metadata as md
from streamdb.arrow.array import as_bytes, pack_validity
from streamdb.arrow.reader import READ_STEP
from tests.arrow.helpers import (
    EOS,
    INT64,
    batch_message,
    frame,
    int64_stream,
    messages,
    our_write,
    pa_write,
    schema_message,
)

READ_ERRORS = (ArrowFormatError, UnsupportedError)


def _small() -> Any:
    """Three batches of a few types: dictionary, nested, strings, bits, temporal."""
    schema = pa.schema([
        pa.field("i", pa.int32()),
        pa.field("s", pa.utf8(), metadata={"k": "v"}),
        pa.field("d", pa.dictionary(pa.int8(), pa.utf8())),
        pa.field("l", pa.list_(pa.struct([("a", pa.bool_()), ("t", pa.timestamp("ms", "UTC"))]))),
        pa.field("m", pa.map_(pa.utf8(), pa.float64())),
        pa.field("dec", pa.decimal128(9, 2)),
    ], metadata={"origin": "test"})
    dictionary = pa.array(["red", "green", "blue"])
    batches = []
    for k in range(3):
        n = 5 + k
        batches.append(pa.record_batch([
            pa.array([i * k if i % 3 else None for i in range(n)], pa.int32()),
            pa.array([f"s{i}" * (i % 3) if i % 4 else None for i in range(n)]),
            pa.DictionaryArray.from_arrays(pa.array([i % 3 if i != 2 else None
                                                     for i in range(n)], pa.int8()), dictionary),
            pa.array([[{"a": i % 2 == 0, "t": i * 1000}] * (i % 3) if i != 1 else None
                      for i in range(n)], schema.field("l").type),
            pa.array([[("x", i / 2)] if i % 2 else [] for i in range(n)], schema.field("m").type),
            pa.array([decimal.Decimal(i * 101) / 100 if i % 4 else None for i in range(n)],
                     pa.decimal128(9, 2)),
        ], schema=schema))
    return pa.Table.from_batches(batches)


SMALL = _small()
OURS = arrow.Table.from_pyarrow(SMALL)
INPUTS: dict[str, bytes] = {
    "pyarrow-stream": pa_write(SMALL, "stream"),
    "pyarrow-file": pa_write(SMALL, "file"),
    "pyarrow-file-lz4": pa_write(SMALL, "file", "lz4"),
    "ours-stream-zstd": our_write(OURS, "stream", "zstd", alignment=8),
    "ours-file": our_write(OURS, "file"),
}

# one batch of four columns, for the byte-by-byte tests
FLIP = SMALL.select(["i", "s", "d", "l"]).slice(0, 5).replace_schema_metadata({"o": "t"})
FLIP_INPUTS = {"pyarrow-stream": pa_write(FLIP, "stream"),
               "ours-stream": our_write(arrow.Table.from_pyarrow(FLIP), "stream", "lz4"),
               "ours-file": our_write(arrow.Table.from_pyarrow(FLIP), "file")}


def _consume(table: arrow.Table) -> None:
    """Use what was read: every column's validity and its re-encoding by our writer. Errors
    of the library (a writer refusing something) are allowed; nothing else is."""
    for batch in table.batches:
        for column in batch.columns:
            assert column.null_count >= 0
            column.valid_mask()
    with suppress(StreamDbError):
        our_write(table, "stream")


def _outcome(data: bytes | io.BufferedReader, *, validate: bool = True) -> arrow.Table | None:
    """The table read, or None after a streamdb read error; any other exception fails."""
    try:
        table = arrow.read_ipc(data, validate=validate)
    except READ_ERRORS:
        return None
    _consume(table)
    return table


@contextmanager
def allocation_peak(limit: int) -> Iterator[None]:
    """Fails when Python allocations inside the block peak above `limit` bytes."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak} bytes allocated"


# -- truncation -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_truncation_at_and_between_message_boundaries(name: str) -> None:
    data = INPUTS[name]
    whole = arrow.read_ipc(data)
    assert whole.to_pyarrow().equals(SMALL)
    found = messages(data)
    assert [kind for _, _, kind in found].count("record batch") == 3
    is_file = data[:6] == b"ARROW1"
    boundaries = {start for start, _, _ in found} | {end for _, end, _ in found}
    cuts = (boundaries | {b + d for b in boundaries for d in (-1, 1, 3, 4, 5, 8, 9)}
            | set(range(0, len(data), 13)))
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        piece = data[:cut]
        if is_file or cut not in boundaries or cut == 0:
            for source in (piece, io.BufferedReader(io.BytesIO(piece))):
                with pytest.raises(ArrowFormatError):
                    arrow.read_ipc(source)
            continue
        # a stream cut at a message boundary is a shorter stream: its first batches
        complete = sum(1 for _, end, kind in found if end <= cut and kind == "record batch")
        for source in (piece, io.BufferedReader(io.BytesIO(piece))):
            table = arrow.read_ipc(source)
            assert [b.to_pydict() for b in table.batches] == [
                b.to_pydict() for b in whole.batches[:complete]]


def test_truncated_file_on_disk(tmp_path: Any) -> None:
    data = INPUTS["ours-file"]
    for cut in (0, 6, 8, len(data) // 2, len(data) - 10, len(data) - 1):
        path = tmp_path / f"cut{cut}.arrow"
        path.write_bytes(data[:cut])
        for mm in (None, False):
            with pytest.raises(ArrowFormatError):
                arrow.read_ipc(path, mmap=mm)


def test_stream_reader_on_a_truncated_file_object() -> None:
    data = INPUTS["ours-stream-zstd"]
    (_, _, _), (_, first_end, _), *_ = messages(data)
    reader = arrow.StreamReader(io.BytesIO(data[: first_end + 20]))
    with pytest.raises(ArrowFormatError):
        list(reader)


# -- bit flips ------------------------------------------------------------------------------


def _flip_region(data: bytes, start: int, end: int) -> list[str]:
    """Every single-bit flip, and every byte inverted, at each position of data[start:end];
    the unexpected outcomes, described."""
    bad = []
    outcomes = {"ok": 0, "error": 0}
    for i in range(start, end):
        for value in [data[i] ^ (1 << bit) for bit in range(8)] + [data[i] ^ 0xFF]:
            mutated = bytearray(data)
            mutated[i] = value
            try:
                result = _outcome(bytes(mutated))
            except Exception as exc:  # the failure the test is looking for
                bad.append(f"byte {i} -> {value:#04x}: {type(exc).__name__}: {exc}")
                continue
            outcomes["ok" if result is not None else "error"] += 1
    assert outcomes["error"] > 0
    return bad


@pytest.mark.parametrize("name", ["pyarrow-stream", "ours-stream"])
def test_every_byte_of_the_schema_metadata(name: str) -> None:
    data = FLIP_INPUTS[name]
    assert data[:4] == b"\xff\xff\xff\xff"
    meta_len = struct.unpack_from("<i", data, 4)[0]
    assert _flip_region(data, 4, 8 + meta_len) == []


def test_every_byte_of_a_file_footer() -> None:
    data = FLIP_INPUTS["ours-file"]
    foot_len = struct.unpack_from("<i", data, len(data) - 10)[0]
    assert _flip_region(data, len(data) - 10 - foot_len, len(data)) == []


def test_every_byte_of_a_record_batch_and_dictionary_metadata() -> None:
    data = FLIP_INPUTS["pyarrow-stream"]
    found = messages(data)
    bad = []
    for start, _, kind in found[1:3]:
        assert kind in ("dictionary", "record batch")
        meta_len = struct.unpack_from("<i", data, start + 4)[0]
        bad += _flip_region(data, start, start + 8 + meta_len)
    assert bad == []


@seed(20250101)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_mutations(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(INPUTS)), label="input")
    buf = bytearray(INPUTS[name])
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)),
                               min_size=1, max_size=8), label="edits")
    for pos, value in edits:
        buf[pos] = value
    cut = data.draw(st.none() | st.integers(0, len(buf)), label="cut")
    mutated = bytes(buf[:cut] if cut is not None else buf)
    validate = data.draw(st.booleans(), label="validate")
    _outcome(mutated, validate=validate)
    with suppress(*READ_ERRORS):
        arrow.StreamReader(io.BytesIO(mutated), validate=validate).read_all()


# -- dictionary indices ---------------------------------------------------------------------


def _dictionary_batch(indices: list[int], index: arrow.IntType,
                      valid: list[bool] | None = None) -> arrow.RecordBatch:
    """A dictionary-encoded column of the given raw indices into ["a", "b"], unchecked."""
    ty = arrow.dictionary(index, arrow.utf8())
    validity = pack_validity(np.array(valid)) if valid is not None else None
    column = arrow.Array(ty, len(indices),
                         [validity, as_bytes(np.array(indices, dtype=index.dtype))],
                         dictionary=arrow.array(["a", "b"]))
    return arrow.RecordBatch(arrow.Schema((arrow.Field("d", ty),)), [column])


@pytest.mark.parametrize(("index", "bad"), [
    (arrow.int8(), 2), (arrow.int8(), -1), (arrow.int8(), -128), (arrow.uint8(), 255),
    (arrow.int16(), 300), (arrow.int32(), -(2**31)), (arrow.int64(), 2**62),
    (arrow.uint64(), 2**64 - 1)], ids=str)
@pytest.mark.parametrize("fmt", ["file", "stream"])
def test_dictionary_index_out_of_range(index: arrow.IntType, bad: int, fmt: str) -> None:
    data = our_write(_dictionary_batch([0, 1, bad, 0], index), fmt)
    with pytest.raises(ArrowFormatError, match="dictionary index"):
        arrow.read_ipc(data)
    table = arrow.read_ipc(data, validate=False)  # read as it is, unchecked
    assert table.num_rows == 4
    _consume(table)
    # under a null slot the index does not matter
    masked = our_write(_dictionary_batch([0, bad, 1], index, [True, False, True]), fmt)
    assert arrow.read_ipc(masked).to_pydict() == {"d": ["a", None, "b"]}


def test_dictionary_index_out_of_range_written_by_pyarrow() -> None:
    column = pa.DictionaryArray.from_arrays(pa.array([0, 3], pa.int32()), pa.array(["a", "b"]),
                                            safe=False)
    for fmt in ("file", "stream"):
        with pytest.raises(ArrowFormatError):
            arrow.read_ipc(pa_write(pa.table({"d": column}), fmt))


# -- offsets --------------------------------------------------------------------------------

DATA = b"abcdef"


def _var_batch(ty: arrow.DataType, offsets: list[int]) -> arrow.RecordBatch:
    """A variable-size column (string, binary or list of int64) with the given raw offsets
    into 6 bytes (or 6 child values), unchecked."""
    wide = ty.layout in ("large_var", "large_list")
    buf = as_bytes(np.array(offsets, "<i8" if wide else "<i4"))
    n = len(offsets) - 1
    if ty.layout in ("var", "large_var"):
        column = arrow.Array(ty, n, [None, buf, as_bytes(np.frombuffer(DATA, np.uint8))])
    else:
        column = arrow.Array(ty, n, [None, buf], [arrow.array(list(range(6)), arrow.int64())])
    return arrow.RecordBatch(arrow.Schema((arrow.Field("v", ty),)), [column])


VAR_TYPES = [arrow.utf8(), arrow.LargeUtf8Type(), arrow.binary(), arrow.LargeBinaryType(),
             arrow.list_(arrow.int64()), arrow.LargeListType(arrow.Field("item", arrow.int64()))]


@pytest.mark.parametrize("ty", VAR_TYPES, ids=str)
@pytest.mark.parametrize("offsets", [[0, 4, 2, 6], [0, 2, 9, 6], [0, 6, 0, 6],
                                     [0, 2**31 - 1, 3, 6]], ids=str)
def test_offsets_decreasing(ty: arrow.DataType, offsets: list[int]) -> None:
    """Offsets that go down (or jump past the data and come back): validate=True refuses
    them; validate=False reads them, and every value stays inside the data."""
    for fmt in ("file", "stream"):
        data = our_write(_var_batch(ty, offsets), fmt)
        with pytest.raises(ArrowFormatError, match="decrease"):
            arrow.read_ipc(data)
        table = arrow.read_ipc(data, validate=False)
        _consume(table)
        column = table.batches[0].columns[0]
        values = column.to_pylist()
        assert len(values) == 3
        assert all(len(v) <= 6 for v in values)
        assert len(column.slice(1, 1).to_pylist()[0]) <= 6
        assert list(column.to_numpy(zero_copy_only=False)) == values


@pytest.mark.parametrize("ty", VAR_TYPES, ids=str)
@pytest.mark.parametrize("offsets", [[0, 2, 4, 7], [0, 2, 4, 2**31 - 1], [-1, 2, 4, 6],
                                     [3, 4, 5, 2]], ids=str)
def test_offsets_outside_the_data(ty: arrow.DataType, offsets: list[int]) -> None:
    """A first offset below 0 or a last one past the data: refused, validated or not."""
    for fmt in ("file", "stream"):
        data = our_write(_var_batch(ty, offsets), fmt)
        for validate in (True, False):
            with pytest.raises(ArrowFormatError):
                arrow.read_ipc(data, validate=validate)


@pytest.mark.parametrize("ty", [arrow.utf8(), arrow.LargeUtf8Type()], ids=str)
def test_strings_that_are_not_utf8(ty: arrow.DataType) -> None:
    """validate=True refuses string data that is not UTF-8, and offsets that split a
    character (each half alone is not UTF-8, though the data as a whole is); binary
    columns hold any bytes."""
    wide = ty.layout == "large_var"
    for data, offsets in [(b"ok\xff", [0, 2, 3]), (b"\xc3\xa9", [0, 1, 2]),
                          (b"a\xe2\x82", [0, 1, 3])]:
        column = arrow.Array(ty, 2, [None, as_bytes(np.array(offsets, "<i8" if wide else "<i4")),
                                     as_bytes(np.frombuffer(data, np.uint8))])
        batch = arrow.RecordBatch(arrow.Schema((arrow.Field("s", ty),)), [column])
        for fmt in ("file", "stream"):
            written = our_write(batch, fmt)
            with pytest.raises(ArrowFormatError, match="UTF-8"):
                arrow.read_ipc(written)
            assert arrow.read_ipc(written, validate=False).num_rows == 2
    good = arrow.RecordBatch.from_pydict({"s": arrow.array(["é", "", "日本", None], ty)})
    assert arrow.read_ipc(our_write(good, "stream")).to_pydict() == {"s": ["é", "", "日本", None]}


def test_a_layout_seen_before_is_still_checked() -> None:
    """Batches with the same metadata are planned once; the checks on their data run for
    each: a bad batch after good ones of the same layout is refused, and decoding goes on
    using each batch's own bytes."""
    ty = arrow.utf8()
    cases = {
        "dictionary": [_dictionary_batch([0, 1, 1, 0], arrow.int8()),
                       _dictionary_batch([1, 0, 0, 1], arrow.int8()),
                       _dictionary_batch([0, 1, 2, 0], arrow.int8())],
        "offsets": [_var_batch(ty, [0, 2, 4, 6]), _var_batch(ty, [0, 1, 5, 6]),
                    _var_batch(ty, [0, 4, 2, 6])]}
    for what, batches in cases.items():
        for fmt in ("file", "stream"):
            good = arrow.read_ipc(our_write(batches[:2], fmt))
            assert [b.columns[0].to_pylist() for b in good.batches] == [
                b.columns[0].to_pylist() for b in batches[:2]], what
            with pytest.raises(ArrowFormatError):
                arrow.read_ipc(our_write(batches, fmt))


# -- hostile lengths --------------------------------------------------------------------------


def test_the_hand_built_stream_is_valid() -> None:
    assert arrow.read_ipc(int64_stream()).to_pydict() == {"x": [7, 8]}
    assert pa.ipc.open_stream(int64_stream()).read_all().to_pydict() == {"x": [7, 8]}


HOSTILE: dict[str, tuple[bytes, type[Exception]]] = {
    "metadata length 2**31-1": (b"\xff\xff\xff\xff" + struct.pack("<i", 2**31 - 1) + bytes(64),
                                ArrowLimitError),
    "metadata length 2**31-1, no continuation": (struct.pack("<i", 2**31 - 1) + bytes(64),
                                                 ArrowLimitError),
    "metadata length just over the limit": (
        b"\xff\xff\xff\xff" + struct.pack("<i", md.Limits().max_metadata + 8) + bytes(64),
        ArrowLimitError),
    "metadata length negative": (b"\xff\xff\xff\xff" + struct.pack("<i", -8) + bytes(64),
                                 ArrowFormatError),
    "metadata length past the input": (b"\xff\xff\xff\xff" + struct.pack("<i", 4096) + bytes(64),
                                       ArrowFormatError),
    "body length 2**62": (int64_stream(body_length=2**62), ArrowLimitError),
    "body length 2**39, past the input": (int64_stream(body_length=2**39), ArrowFormatError),
    "body length negative": (int64_stream(body_length=-16), ArrowLimitError),
    "batch length 2**62": (schema_message(INT64) + batch_message(
        2**62, [(2, 0)], [(0, 0), (0, 16)], bytes(16)) + EOS, ArrowLimitError),
    "batch length negative": (schema_message(INT64) + batch_message(
        -1, [(2, 0)], [(0, 0), (0, 16)], bytes(16)) + EOS, ArrowLimitError),
    "batch longer than its column": (schema_message(INT64) + batch_message(
        3, [(2, 0)], [(0, 0), (0, 16)], bytes(16)) + EOS, ArrowFormatError),
    "node length 2**62": (int64_stream(nodes=[(2**62, 0)]), ArrowFormatError),
    "node length 2**40 (the row limit)": (int64_stream(nodes=[(2**40, 0)]), ArrowFormatError),
    "node length negative": (int64_stream(nodes=[(-1, 0)]), ArrowFormatError),
    "node null count above its length": (int64_stream(nodes=[(2, 3)]), ArrowFormatError),
    "node with nulls, no validity": (int64_stream(nodes=[(2, 1)]), ArrowFormatError),
    "no nodes": (int64_stream(nodes=[]), ArrowFormatError),
    "no buffers": (int64_stream(buffers=[]), ArrowFormatError),
    "one buffer": (int64_stream(buffers=[(0, 0)]), ArrowFormatError),
    "values buffer too short": (int64_stream(buffers=[(0, 0), (0, 8)]), ArrowFormatError),
    "buffer offset past the body": (int64_stream(buffers=[(0, 0), (8, 16)]), ArrowFormatError),
    "buffer offset 2**62": (int64_stream(buffers=[(0, 0), (2**62, 16)]), ArrowFormatError),
    "buffer offset 2**63-1": (int64_stream(buffers=[(0, 0), (2**63 - 1, 2**63 - 1)]),
                              ArrowFormatError),
    "buffer offset negative": (int64_stream(buffers=[(0, 0), (-8, 16)]), ArrowFormatError),
    "buffer length 2**62": (int64_stream(buffers=[(0, 0), (0, 2**62)]), ArrowFormatError),
    "buffer length negative": (int64_stream(buffers=[(0, 0), (0, -16)]), ArrowFormatError),
    "validity past the body": (int64_stream(nodes=[(2, 1)], buffers=[(16, 1), (0, 16)]),
                               ArrowFormatError),
    "first message a record batch": (batch_message(2, [(2, 0)], [(0, 0), (0, 16)], bytes(16)),
                                     ArrowFormatError),
    "a second schema message": (schema_message(INT64) + schema_message(INT64), ArrowFormatError),
    "no schema": (EOS, ArrowFormatError),
    "empty": (b"", ArrowFormatError),
    "only a continuation marker": (b"\xff\xff\xff\xff", ArrowFormatError),
    "file magic only": (b"ARROW1\x00\x00ARROW1", ArrowFormatError),
}


def _file_with_footer_length(value: int) -> bytes:
    data = bytearray(INPUTS["ours-file"])
    struct.pack_into("<i", data, len(data) - 10, value)
    return bytes(data)


for _v in (2**31 - 1, 0, -1, len(INPUTS["ours-file"]) - 17, len(INPUTS["ours-file"])):
    HOSTILE[f"footer length {_v}"] = (_file_with_footer_length(_v), ArrowFormatError)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_lengths(name: str) -> None:
    data, error = HOSTILE[name]
    with allocation_peak(4 << 20):
        with pytest.raises(error):
            arrow.read_ipc(data)
        if data[:6] != b"ARROW1" and data:
            with pytest.raises(error):
                arrow.StreamReader(io.BytesIO(data)).read_all()
    # A buffered file reads in steps of READ_STEP (16 MiB), which BufferedReader.read
    # allocates in full: a constant, whatever length the input claims.
    with allocation_peak(READ_STEP + (4 << 20)), pytest.raises(error):
        arrow.read_ipc(io.BufferedReader(io.BytesIO(data)))


def _patched(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, (data.count(old), old)
    return data.replace(old, new)


def test_hostile_vector_counts() -> None:
    """The count of the nodes or buffers vector (FlatBuffers) far past the metadata."""
    data = int64_stream(5)
    node = struct.pack("<I", 1) + struct.pack("<qq", 5, 0)
    buffers = struct.pack("<I", 2) + struct.pack("<qqqq", 0, 0, 0, 40)
    for count in (1000, 2**31 - 1, 2**32 - 1):
        for old in (node, buffers):
            new = struct.pack("<I", count) + old[4:]
            with allocation_peak(4 << 20), pytest.raises(ArrowFormatError):
                arrow.read_ipc(_patched(data, old, new))


def _meta(data: bytes, start: int = 0) -> tuple[int, int]:
    """(start, length) of the metadata of the message at `start`."""
    return start + 8, struct.unpack_from("<i", data, start + 4)[0]


@pytest.mark.parametrize("message", [0, 1], ids=["schema", "record batch"])
def test_flatbuffer_offsets_pointing_outside(message: int) -> None:
    data = int64_stream()
    at = 0 if message == 0 else messages(data)[1][0]
    meta_start, meta_len = _meta(data, at)
    root = struct.unpack_from("<I", data, meta_start)[0]
    table = meta_start + root
    soffset = struct.unpack_from("<i", data, table)[0]
    vtable = table - soffset
    cases: list[tuple[int, bytes]] = [
        (meta_start, struct.pack("<I", 2**32 - 1)),  # the root table far outside
        (meta_start, struct.pack("<I", meta_len - 2)),  # the root table at the very end
        (meta_start, struct.pack("<I", root + 1)),  # a misaligned root table
        (table, struct.pack("<i", 2**31 - 1)),  # the vtable before the buffer
        (table, struct.pack("<i", -(2**31))),  # the vtable past its end
        (table, struct.pack("<i", -(meta_len - root))),  # the vtable at the very end
        (table, struct.pack("<i", soffset + 1)),  # a misaligned vtable
        (vtable, struct.pack("<H", 0xFFFE)),  # a vtable longer than the buffer
        (vtable, struct.pack("<H", 2)),  # a vtable shorter than its header
        (vtable + 2, struct.pack("<H", 0xFFFC)),  # a table larger than the buffer
    ]
    # every field offset of the vtable pointed past its table
    vt_len = struct.unpack_from("<H", data, vtable)[0]
    cases += [(vtable + i, struct.pack("<H", 0xFFF0)) for i in range(4, vt_len, 2)]
    for pos, value in cases:
        mutated = bytearray(data)
        mutated[pos : pos + len(value)] = value
        with allocation_peak(4 << 20), pytest.raises(ArrowFormatError):
            arrow.read_ipc(bytes(mutated))


def _our_file_blocks() -> tuple[bytes, list[tuple[int, int, int]]]:
    sink = io.BytesIO()
    with arrow.FileWriter(sink, OURS.schema) as w:
        for batch in OURS.batches:
            w.write_batch(batch)
    return sink.getvalue(), w.dictionary_blocks + w.batch_blocks


def test_hostile_file_blocks() -> None:
    data, blocks = _our_file_blocks()
    assert arrow.read_ipc(data).to_pyarrow().equals(SMALL)
    n = len(data)
    for block in blocks:
        offset, meta_len, body_len = block
        old = md.BLOCK.pack(*block)
        for new in [(2**62, meta_len, body_len), (n, meta_len, body_len), (n + 8, meta_len, 8),
                    (offset + 1, meta_len, body_len), (0, meta_len, body_len),
                    (-8, meta_len, body_len), (offset, meta_len + 8, body_len),
                    (offset, -1, body_len), (offset, meta_len, body_len + 8),
                    (offset, meta_len, 2**62), (offset, meta_len, -8), (8, 2**31 - 1, 2**62)]:
            with allocation_peak(4 << 20), pytest.raises(ArrowFormatError):
                arrow.read_ipc(_patched(data, old, md.BLOCK.pack(*new)))
    # a record batch block pointing at the dictionary message, and the other way round
    dictionary, first = blocks[0], blocks[1]
    swapped = _patched(data, md.BLOCK.pack(*first), md.BLOCK.pack(*dictionary))
    with pytest.raises(ArrowFormatError):
        arrow.read_ipc(swapped)
    swapped = _patched(data, md.BLOCK.pack(*dictionary), md.BLOCK.pack(*first))
    with pytest.raises(ArrowFormatError):
        arrow.read_ipc(swapped)


# -- compressed buffers --------------------------------------------------------------------


def _compressed_stream(codec: int, buffer: bytes, length: int = 2) -> bytes:
    """INT64 with one batch whose values buffer is `buffer` (prefix included)."""
    return (schema_message(INT64)
            + batch_message(length, [(length, 0)], [(0, 0), (0, len(buffer))],
                            buffer + bytes(-len(buffer) % 8), codec=codec)
            + EOS)


def _lz4(data: bytes, store_size: bool = True) -> bytes:
    out: bytes = lz4.frame.compress(data, store_size=store_size)
    return out


def _zstd(data: bytes) -> bytes:
    out: bytes = zstandard.ZstdCompressor().compress(data)
    return out


CODECS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "lz4": (md.LZ4_FRAME, _lz4), "zstd": (md.ZSTD, _zstd)}
VALUES = struct.pack("<2q", 7, 8)


@pytest.mark.parametrize("codec", list(CODECS))
def test_hand_built_compressed_batches(codec: str) -> None:
    code, compress = CODECS[codec]
    prefix = struct.Struct("<q").pack
    ok = _compressed_stream(code, prefix(16) + compress(VALUES))
    assert arrow.read_ipc(ok).to_pydict() == {"x": [7, 8]}
    assert pa.ipc.open_stream(ok).read_all().to_pydict() == {"x": [7, 8]}
    assert arrow.read_ipc(_compressed_stream(code, prefix(-1) + VALUES)).to_pydict() == {
        "x": [7, 8]}
    bad: dict[str, tuple[bytes, type[Exception]]] = {
        "size above the limit": (prefix(2**40) + compress(VALUES), ArrowLimitError),
        "size 2**62": (prefix(2**62) + compress(VALUES), ArrowLimitError),
        "negative size": (prefix(-2) + compress(VALUES), ArrowLimitError),
        "size smaller than the frame": (prefix(8) + compress(VALUES), ArrowFormatError),
        "size larger than the frame": (prefix(24) + compress(VALUES), ArrowFormatError),
        "garbage frame": (prefix(16) + b"\x00garbage-not-a-frame", ArrowFormatError),
        "truncated frame": (prefix(16) + compress(VALUES)[:12], ArrowFormatError),
        "empty frame": (prefix(16), ArrowFormatError),
        "shorter than the prefix": (b"\x10\x00\x00", ArrowFormatError),
        "no buffer at all": (b"", ArrowFormatError),  # a fuzzer finding
        "stored raw, too short": (prefix(-1) + VALUES[:8], ArrowFormatError),
        "other codec's frame": (prefix(16) + (_zstd if codec == "lz4" else _lz4)(VALUES),
                                ArrowFormatError),
    }
    for what, (buffer, error) in bad.items():
        with allocation_peak(4 << 20), pytest.raises(error):
            arrow.read_ipc(_compressed_stream(code, buffer))
        assert what
    limits = md.Limits(max_decompressed=8)
    with pytest.raises(ArrowLimitError):
        arrow.read_ipc(ok, limits=limits)


def test_unknown_compression_codec() -> None:
    data = _compressed_stream(2, struct.pack("<q", -1) + VALUES)
    with pytest.raises(ArrowFormatError):
        arrow.read_ipc(data)


@pytest.mark.parametrize("codec", list(CODECS))
def test_compressed_buffer_claiming_a_large_size_allocates_little(codec: str) -> None:
    code, compress = CODECS[codec]
    frame_ = _lz4(VALUES, store_size=False) if codec == "lz4" else compress(VALUES)
    claimed = 256 << 20
    if codec == "zstd":  # a frame header that declares the claimed size as well
        frame_ = (struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", claimed)
                  + bytes([0x81, 0x00, 0x00]) + VALUES)
    data = _compressed_stream(code, struct.pack("<q", claimed) + frame_)
    with allocation_peak(32 << 20), pytest.raises(ArrowFormatError):
        arrow.read_ipc(data)


# -- limits ----------------------------------------------------------------------------------


def _nested_list(depth: int) -> arrow.DataType:
    ty: arrow.DataType = arrow.int8()
    for _ in range(depth):
        ty = arrow.list_(ty)
    return ty


def test_configured_limits() -> None:
    def schema_only(*fields: arrow.Field) -> bytes:
        return our_write(arrow.Table(arrow.Schema(fields)), "stream")

    deep = schema_only(arrow.Field("deep", _nested_list(70)))
    with pytest.raises(ArrowLimitError):
        arrow.read_ipc(deep)
    assert arrow.read_ipc(schema_only(arrow.Field("ok", _nested_list(20)))).num_columns == 1
    with pytest.raises(ArrowLimitError):
        arrow.read_ipc(schema_only(arrow.Field("d", _nested_list(5))),
                       limits=md.Limits(max_depth=3))
    wide = schema_only(arrow.Field("s", arrow.struct_(
        [arrow.Field(f"f{i}", arrow.int8()) for i in range(20)])))
    with pytest.raises(ArrowLimitError):
        arrow.read_ipc(wide, limits=md.Limits(max_fields=10))
    for limits in (md.Limits(max_rows=6), md.Limits(max_dictionary=2),
                   md.Limits(max_metadata=64), md.Limits(max_buffers=4), md.Limits(max_body=64)):
        for name in ("ours-file", "pyarrow-stream", "ours-stream-zstd"):
            if name == "ours-file" and limits.max_metadata == 64:
                continue  # see test_a_footer_over_max_metadata_is_a_limit_error
            with pytest.raises(ArrowLimitError):
                arrow.read_ipc(INPUTS[name], limits=limits)
    assert arrow.read_ipc(INPUTS["ours-file"], limits=md.Limits(max_rows=7)).num_rows == 18


def test_a_footer_over_max_metadata_is_a_limit_error() -> None:
    with pytest.raises(ArrowLimitError):
        arrow.read_ipc(INPUTS["ours-file"], limits=md.Limits(max_metadata=64))


# -- unsupported input ----------------------------------------------------------------------


def _unsupported() -> dict[str, Callable[[], Any]]:
    cases: dict[str, Callable[[], Any]] = {
        "sparse union": lambda: pa.UnionArray.from_sparse(
            pa.array([0, 1, 0], pa.int8()), [pa.array([1, 2, 3]), pa.array(["a", "b", "c"])]),
        "dense union": lambda: pa.UnionArray.from_dense(
            pa.array([0, 1], pa.int8()), pa.array([0, 0], pa.int32()),
            [pa.array([1]), pa.array(["a"])]),
        "run-end encoded": lambda: pa.RunEndEncodedArray.from_arrays(
            pa.array([2, 5], pa.int32()), pa.array(["x", None])),
        "string_view": lambda: pa.array(["a", None, "long enough to be out of line"],
                                        pa.string_view()),
        "binary_view": lambda: pa.array([b"a", None], pa.binary_view()),
        "list_view": lambda: pa.array([[1], None, []], pa.list_view(pa.int64())),
        "large_list_view": lambda: pa.array([[1], None], pa.large_list_view(pa.int64())),
    }
    if hasattr(pa, "decimal32"):
        cases["decimal32"] = lambda: pa.array([decimal.Decimal("1.5"), None], pa.decimal32(5, 1))
        cases["decimal64"] = lambda: pa.array([decimal.Decimal("1.5"), None], pa.decimal64(15, 1))
    return cases


UNSUPPORTED = _unsupported()


@pytest.mark.parametrize("nesting", ["top", "list", "struct"])
@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_types(name: str, nesting: str) -> None:
    column = UNSUPPORTED[name]()
    if nesting == "list":
        column = pa.ListArray.from_arrays(pa.array([0, 1, len(column)], pa.int32()), column)
    elif nesting == "struct":
        column = pa.StructArray.from_arrays([pa.array(range(len(column))), column],
                                            names=["ok", "bad"])
    table = pa.table({"ok": pa.array(range(len(column))), "c": column})
    for fmt in ("file", "stream"):
        data = pa_write(table, fmt)
        with pytest.raises(UnsupportedError):
            arrow.read_ipc(data)
        with pytest.raises(UnsupportedError):
            arrow.StreamReader(io.BytesIO(pa_write(table, "stream")))


def test_unsupported_messages_and_byte_order() -> None:
    field = md.field_table(arrow.Field("x", arrow.int64()), [])
    big_endian = md.message(md.SCHEMA, fb.T([("h", 1), fb.Tables([field]), None]), 0)
    with pytest.raises(UnsupportedError, match="big-endian"):
        arrow.read_ipc(frame(big_endian) + EOS)
    v3 = fb.Builder().finish(fb.T([("h", 2), ("B", md.SCHEMA), md.schema_table(INT64),
                                   ("q", 0)]))
    with pytest.raises(UnsupportedError):
        arrow.read_ipc(frame(v3) + EOS)
    tensor = fb.Builder().finish(fb.T([("h", md.V5), ("B", 4), fb.T([]), ("q", 0)]))
    with pytest.raises(UnsupportedError):
        arrow.read_ipc(schema_message(INT64) + frame(tensor) + EOS)
    unknown_header = fb.Builder().finish(fb.T([("h", md.V5), ("B", 9), fb.T([]), ("q", 0)]))
    with pytest.raises(ArrowFormatError):
        arrow.read_ipc(schema_message(INT64) + frame(unknown_header) + EOS)
    for type_id in (0, 27, 99):
        bad_type = fb.T(["x", ("?", True), ("B", type_id), fb.T([]), None, fb.Tables([]), None])
        schema = md.message(md.SCHEMA, fb.T([("h", 0), fb.Tables([bad_type]), None]), 0)
        with pytest.raises(ArrowFormatError):
            arrow.read_ipc(frame(schema) + EOS)


@pytest.mark.parametrize(("precision", "bits"), [(0, 128), (39, 128), (77, 256)])
def test_decimal_precision_out_of_range(precision: int, bits: int) -> None:
    data = our_write(arrow.Table(arrow.Schema((
        arrow.Field("d", arrow.DecimalType(precision, 0, bits)),))), "stream")
    with pytest.raises(pa.ArrowInvalid):
        pa.ipc.open_stream(data)  # pyarrow refuses it
    with pytest.raises(ArrowFormatError):
        arrow.read_ipc(data)


# -- dictionary messages out of place -------------------------------------------------------


def test_dictionary_messages_out_of_place() -> None:
    data = INPUTS["pyarrow-stream"]
    found = messages(data)
    (s0, s1, _), (d0, d1, dkind), (b0, b1, bkind) = found[:3]
    assert (dkind, bkind) == ("dictionary", "record batch")
    schema, dictionary, batch = data[s0:s1], data[d0:d1], data[b0:b1]
    with pytest.raises(ArrowFormatError, match="dictionary"):
        arrow.read_ipc(schema + batch + EOS)  # the batch before its dictionary
    with pytest.raises(ArrowFormatError, match="dictionary"):
        arrow.read_ipc(schema_message(INT64) + dictionary + EOS)  # no such dictionary id
    assert arrow.read_ipc(schema + dictionary + dictionary + batch + EOS).num_rows == 5
    delta_table = pa.Table.from_batches([
        pa.record_batch({"d": pa.DictionaryArray.from_arrays(pa.array([0]), pa.array(v))})
        for v in (["a"], ["a", "b"])])
    delta = pa_write(delta_table, "stream", emit_dictionary_deltas=True)
    parts = messages(delta)
    assert [k for _, _, k in parts] == ["schema", "dictionary", "record batch", "dictionary",
                                        "record batch"]
    (s0, s1, _), _, _, (x0, x1, _), (y0, y1, _) = parts
    with pytest.raises(ArrowFormatError, match="delta"):
        arrow.read_ipc(delta[s0:s1] + delta[x0:x1] + delta[y0:y1] + EOS)


def test_api_misuse_is_invalid_argument() -> None:
    """Ordinary mistakes get InvalidArgumentError, not a raw Python exception."""
    data = int64_stream()
    for source in (5, [1], io.StringIO("text"), memoryview(bytes(16)).cast("B")[::2]):
        with pytest.raises(StreamDbError):
            arrow.read_ipc(source)
    with pytest.raises(StreamDbError):
        arrow.read_ipc(io.BytesIO(data), mmap=True)  # no file descriptor to map
    with pytest.raises(StreamDbError):
        arrow.read_ipc(data, limits={"max_rows": 1})  # type: ignore[arg-type]
    with pytest.raises(StreamDbError):
        md.Limits(max_rows=-1)
    with pytest.raises(StreamDbError):
        arrow.FileReader(io.BytesIO(data))  # type: ignore[arg-type]
    table = arrow.read_ipc(np.frombuffer(data, np.uint8))  # any buffer is bytes-like
    assert table.to_pydict() == {"x": [7, 8]}
    sink = io.BytesIO()
    for bad in ("abc", None, 5, [1, 2]):
        with pytest.raises(StreamDbError):
            arrow.write_ipc(sink, bad)  # type: ignore[arg-type]
    with pytest.raises(StreamDbError):
        arrow.StreamWriter(sink, table)  # type: ignore[arg-type]
    with arrow.StreamWriter(io.BytesIO(), table.schema) as w, pytest.raises(StreamDbError):
        w.write_batch(table)  # type: ignore[arg-type]
    # pyarrow (and any Arrow stream) is written as ours
    arrow.write_ipc(sink, pa.table({"x": [1, 2]}), format="stream")
    assert arrow.read_ipc(sink.getvalue()).to_pydict() == {"x": [1, 2]}


@pytest.mark.parametrize(("name", "storage", "ok"), [
    ("arrow.uuid", pa.binary(16), True), ("arrow.uuid", pa.binary(4), False),
    ("arrow.uuid", pa.binary(0), False), ("arrow.bool8", pa.int8(), True),
    ("arrow.bool8", pa.uint8(), False), ("arrow.json", pa.large_string(), True),
    ("arrow.json", pa.int32(), False), ("example.other", pa.binary(3), True),
])
def test_canonical_extension_types_on_another_storage_are_refused(
        name: str, storage: Any, ok: bool) -> None:
    """A fuzzer finding: arrow.uuid over fixed_size_binary(0) was read, then pyarrow refused
    it. Canonical extension types with a fixed storage are checked at read."""
    field = pa.field("x", storage, metadata={"ARROW:extension:name": name,
                                             "ARROW:extension:metadata": ""})
    sink = io.BytesIO()
    # Through pyarrow's writer as plain storage with the metadata set: what another
    # producer may send. pyarrow writes the field metadata as given.
    with pa.ipc.new_stream(sink, pa.schema([field])) as w:
        w.write_table(pa.table({"x": pa.array([], storage)}, schema=pa.schema([field])))
    if ok:
        assert arrow.read_ipc(sink.getvalue()).schema.fields[0].name == "x"
    else:
        with pytest.raises(ArrowFormatError, match=name):
            arrow.read_ipc(sink.getvalue())
