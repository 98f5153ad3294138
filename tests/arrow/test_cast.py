"""`RecordBatch.cast` and `Table.cast`: lossless changes between the forms of one logical
type (utf8 / large_utf8, binary / large_binary, list / large_list, nested and inside
dictionaries), checked against pyarrow; every other difference refused with the field
and what differs named; values past int32 offsets refused."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamdb import ArrowError, arrow
from streamdb.arrow import types as at

WORDS = ["", "a", None, "héllo", "x" * 40, None, "日本", "z", "", "q", None, "w", "e"]
BLOBS = [None if w is None else w.encode() for w in WORDS]
N = len(WORDS)


def _lists(ty: Any) -> Any:
    return pa.array([None if i % 5 == 2 else [WORDS[i], WORDS[(i + 1) % N]][: i % 3]
                     for i in range(N)], ty)


def _structs(ty: Any) -> Any:
    return pa.array([None if i % 4 == 3 else
                     {"s": WORDS[i], "l": None if i % 3 == 0 else [BLOBS[i], b"k"]}
                     for i in range(N)], ty)


def _maps(ty: Any) -> Any:
    return pa.array([None if i % 6 == 1 else [(f"k{j}", WORDS[(i + j) % N]) for j in range(i % 3)]
                     for i in range(N)], ty)


def _dictionaries(ty: Any) -> Any:
    return pa.DictionaryArray.from_arrays(
        pa.array([None if i % 4 == 1 else i % 3 for i in range(N)], ty.index_type),
        pa.array(["alpha", "", "日本"], ty.value_type))


def _fixed(ty: Any) -> Any:
    return pa.array([None if i % 5 == 4 else [WORDS[i], "f"] for i in range(N)], ty)


LU, U, LB, B = pa.large_utf8(), pa.utf8(), pa.large_binary(), pa.binary()
# (make a pyarrow array of a type, the type, the type to cast it to)
PAIRS: dict[str, tuple[Any, Any, Any]] = {
    "large_utf8 to utf8": (lambda ty: pa.array(WORDS, ty), LU, U),
    "utf8 to large_utf8": (lambda ty: pa.array(WORDS, ty), U, LU),
    "large_binary to binary": (lambda ty: pa.array(BLOBS, ty), LB, B),
    "binary to large_binary": (lambda ty: pa.array(BLOBS, ty), B, LB),
    "large_list<large_utf8> to list<utf8>": (_lists, pa.large_list(LU), pa.list_(U)),
    "list<utf8> to large_list<large_utf8>": (_lists, pa.list_(U), pa.large_list(LU)),
    "list<large_utf8> to list<utf8>": (_lists, pa.list_(LU), pa.list_(U)),
    "large_list<utf8> to list<utf8>": (_lists, pa.large_list(U), pa.list_(U)),
    "struct to struct": (_structs, pa.struct([("s", LU), ("l", pa.large_list(LB))]),
                         pa.struct([("s", U), ("l", pa.list_(B))])),
    "map to map": (_maps, pa.map_(LU, LU), pa.map_(U, U)),
    "fixed_size_list": (_fixed, pa.list_(LU, 2), pa.list_(U, 2)),
    "dictionary values": (_dictionaries, pa.dictionary(pa.int16(), LU),
                          pa.dictionary(pa.int16(), U)),
    "dictionary values, widened": (_dictionaries, pa.dictionary(pa.int8(), B),
                                   pa.dictionary(pa.int8(), LB)),
}


def _schema_of(ty: Any, name: str = "c") -> arrow.Schema:
    return arrow.Table.from_pyarrow(pa.table({name: pa.array([], ty)})).schema


@pytest.mark.parametrize("offset", [0, 1, 3, 8, 9])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_cast_between_forms_matches_pyarrow(pair: str, offset: int) -> None:
    """Every pair, from a slice at any offset (bitmaps that start mid-byte, offsets that do
    not start at 0): the values pyarrow holds are the same, pyarrow's full validation
    passes, and the IPC stream written from the cast batch reads back in pyarrow."""
    make, source, target = PAIRS[pair]
    column = make(source).slice(offset)
    batch = arrow.Table.from_pyarrow(pa.table({"c": column})).batches[0]
    cast = batch.cast(_schema_of(target))
    assert cast.schema == _schema_of(target)
    got = cast.to_pyarrow().column(0)
    got.validate(full=True)
    assert got.type == target
    assert got.to_pylist() == column.to_pylist()
    sink = pa.BufferOutputStream()
    arrow.write_ipc(sink, cast, format="stream")
    back = pa.ipc.open_stream(sink.getvalue()).read_all()
    back.validate(full=True)
    assert back.column(0).to_pylist() == column.to_pylist()


def test_cast_copies_nothing_it_need_not() -> None:
    table = arrow.Table.from_pyarrow(pa.table({
        "x": pa.array(range(N), pa.int64()), "s": pa.array(WORDS, LU),
        "b": pa.array(BLOBS, B)}))
    batch = table.batches[0]
    assert batch.cast(batch.schema) is batch
    assert table.cast(table.schema) is table
    target = _schema_of(pa.int64(), "x")
    target = arrow.Schema((target.fields[0], *_schema_of(U, "s").fields,
                           *_schema_of(B, "b").fields))
    cast = batch.cast(target)
    x, s, b = cast.columns
    assert x is batch.columns[0] and b is batch.columns[2]  # the same form: kept
    data = batch.columns[1].buffers[2]
    assert data is not None and s.buffers[2] is not None
    assert np.shares_memory(s.buffers[2], data)  # only the offsets are new
    assert s.value_offsets().dtype == np.dtype("<i4")
    assert s.to_pylist() == WORDS
    assert table.cast(target).batches[0].columns[1].to_pylist() == WORDS


def _field(name: str, ty: at.DataType, nullable: bool = True,
           metadata: tuple[tuple[str, str], ...] = ()) -> at.Field:
    return at.Field(name, ty, nullable, metadata)


I32, I64, UT, LUT = arrow.int32(), arrow.int64(), arrow.utf8(), at.LargeUtf8Type()
S = arrow.struct_([_field("a", I32), _field("b", arrow.list_(UT))])
REFUSED = [  # (the target's fields, the batch's fields, what the message says)
    ([_field("x", I32)], [_field("x", I64)],
     "field 'x' is int32 in the schema, int64 in the batch"),
    ([_field("x", UT)], [_field("x", arrow.binary())],
     "field 'x' is utf8 in the schema, binary in the batch"),
    ([_field("x", I64), _field("y", UT)], [_field("x", I64)],
     "field 'y' of the schema is missing from the batch"),
    ([_field("x", I64)], [_field("x", I64), _field("z", UT)],
     "field 'z' of the batch is not in the schema"),
    ([_field("x", I64), _field("y", UT)], [_field("x", I64), _field("w", UT)],
     "field 'y' of the schema is named 'w' in the batch"),
    ([_field("x", I64), _field("y", UT)], [_field("y", UT), _field("x", I64)],
     "the fields are in the order 'x', 'y' in the schema, 'y', 'x' in the batch"),
    ([_field("x", I64, False)], [_field("x", I64)],
     "field 'x' is not nullable in the schema, nullable in the batch"),
    ([_field("x", I64, metadata=(("k", "v"),))], [_field("x", I64)],
     "field 'x' has metadata {'k': 'v'} in the schema, {} in the batch"),
    ([_field("s", S)], [_field("s", arrow.struct_([_field("a", I64),
                                                   _field("b", arrow.list_(LUT))]))],
     "field 's.a' is int32 in the schema, int64 in the batch"),
    ([_field("s", S)], [_field("s", arrow.struct_([_field("a", I32),
                                                   _field("b", arrow.list_(I32))]))],
     "field 's.b.item' is utf8 in the schema, int32 in the batch"),
    ([_field("s", S)], [_field("s", arrow.struct_([_field("a", I32)]))],
     "field 's.b' of the schema is missing from the batch"),
    ([_field("l", arrow.list_(UT))], [_field("l", at.LargeListType(_field("v", UT)))],
     "field 'l.item' of the schema is named 'v' in the batch"),
    ([_field("l", arrow.list_(UT))], [_field("l", arrow.list_(_field("item", UT, False)))],
     "field 'l.item' is nullable in the schema, not nullable in the batch"),
    ([_field("d", arrow.dictionary(I32, UT))], [_field("d", arrow.dictionary(I64, LUT))],
     "field 'd' is dictionary<values=utf8, indices=int32, ordered=False> in the schema, "
     "dictionary<values=large_utf8, indices=int64, ordered=False> in the batch"),
    ([_field("d", arrow.dictionary(I32, UT))], [_field("d", arrow.dictionary(I32, I32))],
     "the values of dictionary field 'd' are utf8 in the schema, int32 in the batch"),
    ([_field("d", arrow.dictionary(I32, UT))], [_field("d", UT)],
     "field 'd' is dictionary<values=utf8, indices=int32, ordered=False> in the schema, "
     "utf8 in the batch"),
    ([_field("f", at.FixedSizeListType(_field("item", UT), 2))],
     [_field("f", at.FixedSizeListType(_field("item", LUT), 3))],
     "field 'f' is fixed_size_list<item: utf8>[2] in the schema, "
     "fixed_size_list<item: large_utf8>[3] in the batch"),
    ([_field("m", arrow.map_(UT, I64))], [_field("m", arrow.map_(UT, I64, True))],
     "field 'm' is map<utf8, int64> with keys_sorted=False in the schema, map<utf8, int64> "
     "with keys_sorted=True in the batch"),
    ([_field("m", arrow.map_(UT, I64))], [_field("m", arrow.list_(
        _field("entries", arrow.struct_([_field("key", UT, False), _field("value", I64)]),
               False)))],
     "field 'm' is map<utf8, int64> in the schema, list<entries: struct<key: utf8, value: "
     "int64>> in the batch"),
]


@pytest.mark.parametrize(("ours", "theirs", "says"), REFUSED,
                         ids=[says[:40] for _, _, says in REFUSED])
def test_cast_refuses_other_differences_naming_the_field(
        ours: list[at.Field], theirs: list[at.Field], says: str) -> None:
    target, source = arrow.Schema(tuple(ours)), arrow.Schema(tuple(theirs))
    batch = arrow.RecordBatch(source, [arrow.array([], f.type) for f in theirs], 0)
    with pytest.raises(ArrowError) as info:
        batch.cast(target)
    assert str(info.value).startswith("cannot cast to the schema: " + says)
    with pytest.raises(ArrowError, match="cannot cast the table to the schema: "):
        arrow.Table(source, []).cast(target)  # no batches: the schema is checked still


def test_many_differences_are_named_then_counted() -> None:
    target = arrow.Schema(tuple(_field(f"c{i}", I32) for i in range(12)))
    source = arrow.Schema(tuple(_field(f"c{i}", I64) for i in range(12)))
    with pytest.raises(ArrowError) as info:
        arrow.Table(source, []).cast(target)
    message = str(info.value)
    assert "field 'c0' is int32" in message and "field 'c7' is int32" in message
    assert "'c8'" not in message and message.endswith("; and 4 more")


def _huge_strings(ends: list[int], ty: at.DataType = LUT) -> arrow.Array:
    """A large_utf8 array whose values end at `ends` (bytes), over zeroed memory that the
    system hands out lazily: nothing is touched unless read."""
    offsets = np.array([0, *ends], np.int64)
    data = np.zeros(ends[-1], np.uint8)
    return arrow.Array(ty, len(ends), [None, offsets.view(np.uint8), data])


def test_values_past_int32_offsets_are_refused_naming_the_field() -> None:
    target = arrow.Schema((_field("s", UT),))
    fits = arrow.RecordBatch(arrow.Schema((_field("s", LUT),)), [_huge_strings([2**31 - 1])])
    cast = fits.cast(target)
    assert cast.columns[0].value_offsets().tolist() == [0, 2**31 - 1]
    past = arrow.RecordBatch(arrow.Schema((_field("s", LUT),)), [_huge_strings([2**31])])
    with pytest.raises(ArrowError, match=r"field 's': its large_utf8 values span 2147483648 "
                                         r"bytes, past the 2147483647 that utf8's"):
        past.cast(target)
    # a slice is measured by what it spans, not by where its offsets start
    sliced = arrow.RecordBatch(arrow.Schema((_field("s", LUT),)),
                               [_huge_strings([2**31, 2**31 + 5]).slice(1)])
    cast = sliced.cast(target)
    assert cast.columns[0].value_offsets().tolist() == [0, 5]
    assert cast.columns[0].to_pylist() == ["\0" * 5]


def test_list_items_past_int32_offsets_are_refused_naming_the_nested_field() -> None:
    many = 2**31  # items of the null type have no buffers: nothing is allocated for them
    items = arrow.Array(arrow.null(), many, [])
    ty = at.LargeListType(_field("item", arrow.null()))
    lists = arrow.Array(ty, 1, [None, np.array([0, many], np.int64).view(np.uint8)], [items])
    inner = arrow.struct_([_field("l", ty)])
    batch = arrow.RecordBatch(arrow.Schema((_field("t", inner),)),
                              [arrow.Array(inner, 1, [None], [lists])])
    target = arrow.Schema((_field("t", arrow.struct_([_field("l", arrow.list_(
        arrow.null()))])),))
    with pytest.raises(ArrowError, match=r"field 't\.l': its large_list<item: null> values "
                                         r"span 2147483648 values"):
        batch.cast(target)


@pytest.mark.parametrize(("ours", "theirs", "says"), [
    (_field("x", I32), _field("x", I64), "field 'x' is int32 in {0}, int64 in the batch"),
    # a table and a writer take a batch of their exact schema: forms differ too
    (_field("x", UT), _field("x", LUT), "field 'x' is utf8 in {0}, large_utf8 in the batch"),
    (_field("l", arrow.list_(UT)), _field("l", arrow.list_(LUT)),
     "field 'l.item' is utf8 in {0}, large_utf8 in the batch"),
    (_field("d", arrow.dictionary(I32, LUT)), _field("d", arrow.dictionary(I32, UT)),
     "the values of dictionary field 'd' are large_utf8 in {0}, utf8 in the batch"),
], ids=["int", "utf8", "list", "dictionary"])
def test_writer_and_table_name_what_differs(ours: at.Field, theirs: at.Field, says: str
                                            ) -> None:
    schema = arrow.Schema((ours,))
    batch = arrow.RecordBatch(arrow.Schema((theirs,)), [arrow.array([], theirs.type)], 0)
    with pytest.raises(ArrowError) as info:
        arrow.Table(schema, [batch])
    assert str(info.value) == "a batch's schema differs from the table's: " + says.format(
        "the table")
    writer = arrow.StreamWriter(io.BytesIO(), schema)
    with pytest.raises(ArrowError) as info:
        writer.write_batch(batch)
    assert str(info.value) == "the batch's schema differs from the writer's: " + says.format(
        "the writer's")


# -- any nesting, against pyarrow -----------------------------------------------------------
# A shape is one logical type; `_forms` draws it in two physical forms, each node small or
# large independently, and `_values` draws values of it.

Shape = tuple[Any, ...]
_LEAVES: list[Shape] = [("utf8",), ("binary",), ("int",), ("dict",)]
_shapes = st.recursive(
    st.sampled_from(_LEAVES),
    lambda inner: st.one_of(
        st.tuples(st.just("list"), inner),
        st.tuples(st.just("fixed"), inner, st.integers(1, 3)),
        st.tuples(st.just("struct"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("map"), inner)),
    max_leaves=6)


def _pa_type(shape: Shape, large: Callable[[], bool]) -> Any:
    """The pyarrow type of `shape`, asking `large()` at each node that has two forms."""
    kind = shape[0]
    if kind == "utf8":
        return pa.large_utf8() if large() else pa.utf8()
    if kind == "binary":
        return pa.large_binary() if large() else pa.binary()
    if kind == "int":
        return pa.int64()
    if kind == "dict":
        return pa.dictionary(pa.int16(), pa.large_utf8() if large() else pa.utf8())
    if kind == "list":
        make = pa.large_list if large() else pa.list_
        return make(_pa_type(shape[1], large))
    if kind == "fixed":
        return pa.list_(_pa_type(shape[1], large), shape[2])
    if kind == "struct":
        return pa.struct([(f"f{i}", _pa_type(s, large)) for i, s in enumerate(shape[1])])
    key = pa.large_utf8() if large() else pa.utf8()
    return pa.map_(key, _pa_type(shape[1], large))


def _values(shape: Shape) -> st.SearchStrategy[Any]:
    kind = shape[0]
    if kind in ("utf8", "dict"):
        value: st.SearchStrategy[Any] = st.text(max_size=6)
    elif kind == "binary":
        value = st.binary(max_size=6)
    elif kind == "int":
        value = st.integers(-(2**63), 2**63 - 1)
    elif kind == "list":
        value = st.lists(_values(shape[1]), max_size=4)
    elif kind == "fixed":
        value = st.lists(_values(shape[1]), min_size=shape[2], max_size=shape[2])
    elif kind == "struct":
        value = st.fixed_dictionaries({f"f{i}": _values(s) for i, s in enumerate(shape[1])})
    else:
        value = st.lists(st.tuples(st.text(max_size=3), _values(shape[1])), max_size=3)
    return st.none() | value


@given(data=st.data(), shape=_shapes)
def test_cast_of_any_nesting_matches_pyarrow(data: st.DataObject, shape: Shape) -> None:
    """Any nesting of the forms, both ways, from any slice: the cast column holds what
    the source held, in the target's types, and passes pyarrow's full validation."""
    flips = data.draw(st.lists(st.booleans(), min_size=64, max_size=64))
    source_type = _pa_type(shape, iter(flips).__next__)
    target_type = _pa_type(shape, iter([not f for f in flips]).__next__)
    rows = data.draw(st.lists(_values(shape), max_size=12))
    column = pa.array(rows, source_type)
    start = data.draw(st.integers(0, len(rows)))
    column = column.slice(start, data.draw(st.integers(0, len(rows) - start)))
    batch = arrow.Table.from_pyarrow(pa.record_batch({"c": column})).batches[0]
    cast = batch.cast(_schema_of(target_type))
    got = cast.to_pyarrow().column(0)
    # pyarrow itself builds a null struct slot over a dictionary child as index 0 into a
    # dictionary that may be empty, which its full validation refuses: the cast is held
    # to the standard its source meets
    got.validate(full=_fully_valid(column))
    assert got.type == target_type
    assert got.to_pylist() == column.to_pylist()
    assert cast.cast(batch.schema).to_pyarrow().column(0).to_pylist() == column.to_pylist()


def _fully_valid(column: Any) -> bool:
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True
