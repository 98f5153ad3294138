"""Arrow tables in the database: `put_table` stores an IPC file, `get_table` reads it back
(zero-copy from the map when the document is contiguous, uncompressed and unencrypted),
`append_batch` grows an IPC stream document in place. pyarrow checks what is stored."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import streamdb
from streamdb import Config, arrow
from tests.arrow.helpers import messages

KEY = bytes(range(32))


SCHEMA = arrow.Schema((
    arrow.Field("id", arrow.int64()), arrow.Field("value", arrow.float64()),
    arrow.Field("label", arrow.dictionary(arrow.int32(), arrow.utf8())),
    arrow.Field("tags", arrow.list_(arrow.int64()))))


def sample(rows: int = 1000, seed: int = 0) -> arrow.Table:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", None, "gamma"]
    return arrow.Table.from_pydict({
        "id": np.arange(rows, dtype=np.int64),
        "value": rng.random(rows),
        "label": [words[(i + seed) % 4] for i in range(rows)],
        "tags": [[i, i + 1] if i % 3 else None for i in range(rows)],
    }, SCHEMA)


@pytest.mark.parametrize("cfg", [
    Config(), Config(use_mmap=False), Config(compression="zstd"),
    Config(encryption_key=KEY), Config(compression="lz4", encryption_key=KEY)],
    ids=["mmap", "pread", "zstd", "aes", "lz4+aes"])
def test_put_and_get_a_table_in_every_configuration(tmp_path: Path, cfg: Config) -> None:
    table = sample()
    with streamdb.open(tmp_path / "t.db", cfg) as db:
        db.put_table("/t", table)
        db.put_table("/c", table, compression="lz4")
        for path in ("/t", "/c"):
            got = db.get_table(path)
            assert got.to_pydict() == table.to_pydict()
            assert got.to_pyarrow().equals(table.to_pyarrow())
        # the stored bytes are an Arrow IPC file that pyarrow reads
        assert pa.ipc.open_file(db.get("/t")).read_all().equals(table.to_pyarrow())
    with streamdb.open(tmp_path / "t.db", cfg) as db:
        assert db.get_table("/t").to_pydict() == table.to_pydict()
        assert db.verify().ok


def test_get_table_is_zero_copy_from_the_map(tmp_path: Path) -> None:
    table = sample(100_000)
    with streamdb.open(tmp_path / "t.db") as db:
        db.put_table("/t", table)
        got = db.get_table("/t")
        ids = got.column("id").to_numpy(zero_copy_only=True)
        assert not ids.flags.owndata and not ids.flags.writeable
        assert np.array_equal(ids, np.arange(100_000))
        # the values are a view of the document's view of the map, not of a bytes copy
        view = db.get_view("/t")
        start = np.frombuffer(view, np.uint8).ctypes.data
        assert start <= ids.ctypes.data < start + len(view)
        # and they stay valid after later writes and a checkpoint
        db.put_table("/t", sample(10, seed=1))
        db.checkpoint()
        assert np.array_equal(ids, np.arange(100_000))


def test_quick_mode_reads_without_checksums(tmp_path: Path) -> None:
    table = sample()
    with streamdb.open(tmp_path / "t.db") as db:
        db.put_table("/t", table)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            db.set_quick_mode(True)
        assert db.get_table("/t").to_pydict() == table.to_pydict()


def test_a_document_that_is_not_arrow_is_a_clear_error(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_document("/doc", b"not arrow at all" * 10)
        with pytest.raises(streamdb.ArrowFormatError, match="/doc"):
            db.get_table("/doc")
        with pytest.raises(streamdb.NotFoundError):
            db.get_table("/missing")


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes"])
def test_append_batch_grows_a_stream_in_place(tmp_path: Path, key: bytes | None) -> None:
    path = tmp_path / "t.db"
    cfg = Config(encryption_key=key)
    parts = [sample(n, seed=n) for n in (5, 1, 300, 7000, 2)]
    with streamdb.open(path, cfg) as db:
        doc_id = None
        for part in parts:
            db.append_batch("/s", part)
            info = db.info("/s")
            doc_id = doc_id or info.doc_id
            assert info.version == 1 and info.doc_id == doc_id and info.messages is None
        got = db.get_table("/s")
        assert len(got.batches) == len(parts)
        want = pa.concat_tables([p.to_pyarrow() for p in parts])
        assert got.to_pyarrow().equals(want)
        assert pa.ipc.open_stream(db.get("/s")).read_all().equals(want)  # pyarrow reads it
        with pytest.raises(streamdb.InvalidArgumentError, match="Arrow stream"):
            list(db.messages("/s"))
    with streamdb.open(path, cfg) as db:
        db.append_batch("/s", parts[0])
        assert db.get_table("/s").num_rows == sum(p.num_rows for p in parts) + 5
        assert db.verify().ok


def test_append_batch_refuses_another_schema_or_a_plain_document(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/s", sample(3))
        other = arrow.Table.from_pydict({"id": np.arange(3)})
        with pytest.raises(streamdb.ArrowError, match="schema"):
            db.append_batch("/s", other)
        db.write_document("/doc", b"x")
        with pytest.raises(streamdb.InvalidArgumentError):
            db.append_batch("/doc", other)
        db.append_message("/log", b"m")
        with pytest.raises(streamdb.InvalidArgumentError):
            db.append_batch("/log", other)
        with pytest.raises(streamdb.InvalidArgumentError):
            db.append_messages("/s", [b"x"], checksum="arrow")
        assert db.get_table("/s").num_rows == 3


def test_appends_in_a_failed_transaction_leave_nothing(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/s", sample(3))
        with pytest.raises(RuntimeError), db.transaction():
            db.append_batch("/s", sample(4))
            raise RuntimeError("boom")
        assert db.get_table("/s").num_rows == 3
        with db.transaction():
            db.append_batch("/s", sample(4))
            db.append_batch("/s", sample(5))
        assert db.get_table("/s").num_rows == 12


def _coded(words: arrow.Array, codes: list[int]) -> arrow.RecordBatch:
    ty = arrow.dictionary(arrow.int32(), arrow.utf8())
    column = arrow.Array(ty, len(codes), [None, np.array(codes, np.int32).view(np.uint8)],
                         dictionary=words)
    return arrow.RecordBatch(arrow.Schema((arrow.Field("w", ty),)), [column])


def _dictionary_messages(data: bytes) -> int:
    """How many dictionary batches the stream `data` holds."""
    return sum(kind == "dictionary" for _, _, kind in messages(data))


def test_append_batch_sends_a_dictionary_once_then_deltas(tmp_path: Path) -> None:
    """One handle's appends write a dictionary once, a grown one as a delta, a changed one
    whole; a new handle, a rolled-back transaction or a recreated document start over with
    the whole dictionary. pyarrow reads every version of the stream."""
    path = tmp_path / "t.db"
    abc = arrow.array([f"word{i:03d}" for i in range(100)])
    abcd = arrow.array([f"word{i:03d}" for i in range(101)])
    zy = arrow.array(["z", "y"])
    want: list[str] = []

    def append(db: streamdb.Database, words: arrow.Array, codes: list[int]) -> None:
        db.append_batch("/s", _coded(words, codes))
        want.extend(words.to_pylist()[c] for c in codes)
        stored = db.get("/s")
        assert pa.ipc.open_stream(stored).read_all().column("w").to_pylist() == want
        assert db.get_table("/s").column("w").to_pylist() == want

    with streamdb.open(path) as db:
        for i in range(10):
            append(db, abc, [i % 3, 2, 0])
        assert _dictionary_messages(db.get("/s")) == 1
        append(db, abcd, [3, 0])  # grown: a delta of one value
        append(db, abcd, [100])
        assert _dictionary_messages(db.get("/s")) == 2
        first, delta = [end - start for start, end, kind in messages(db.get("/s"))
                        if kind == "dictionary"]
        assert delta < first / 2  # one value, not 101
        append(db, zy, [1, 0])  # changed: whole again
        assert _dictionary_messages(db.get("/s")) == 3
        with pytest.raises(RuntimeError), db.transaction():
            db.append_batch("/s", _coded(abc, [0]))
            raise RuntimeError("rolled back")
        append(db, zy, [0])  # the stream still holds zy: nothing sent
        assert _dictionary_messages(db.get("/s")) == 3
        with db.transaction():  # inside a transaction: whole, and not remembered
            append(db, abc, [1])
        append(db, abc, [2])
        assert _dictionary_messages(db.get("/s")) == 5
    with streamdb.open(path) as db:  # a new handle cannot know: whole
        append(db, abc, [0])
        assert _dictionary_messages(db.get("/s")) == 6
        db.delete("/s")
        want.clear()
        append(db, abc, [2])
        assert _dictionary_messages(db.get("/s")) == 1


def test_pyarrow_and_polars_objects_are_stored_and_wrong_objects_refused(tmp_path: Path
                                                                         ) -> None:
    import polars as pl

    with streamdb.open(tmp_path / "t.db") as db:
        db.put_table("/p", pa.table({"x": [1, 2]}))
        assert db.get_table("/p").to_pydict() == {"x": [1, 2]}
        db.append_batch("/q", pa.record_batch({"x": [1]}))
        db.append_batch("/q", pl.DataFrame({"x": [2, 3]}))
        assert db.get_table("/q").to_pydict() == {"x": [1, 2, 3]}
        for bad in (5, "abc", [1, 2]):
            with pytest.raises(streamdb.InvalidArgumentError):
                db.append_batch("/r", bad)
            with pytest.raises(streamdb.InvalidArgumentError):
                db.put_table("/r", bad)
        assert not db.exists("/r")


def _arrow_stream(table: pa.Table) -> bytes:
    """`table` as an Arrow IPC stream written by pyarrow."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


SCHEMA_DIFFERENCES = [  # (the stream's table, the batch, what the error says)
    (pa.table({"x": pa.array([1], pa.int32())}), pa.table({"x": pa.array([2], pa.int64())}),
     "field 'x' is int32 in the stream, int64 in the batch"),
    (pa.table({"x": [1], "y": ["a"]}), pa.table({"x": [2]}),
     "field 'y' of the stream is missing from the batch"),
    (pa.table({"x": [1]}), pa.table({"x": [2], "z": [3.0]}),
     "field 'z' of the batch is not in the stream"),
    (pa.table({"x": [1], "y": ["a"]}), pa.table({"x": [2], "w": ["b"]}),
     "field 'y' of the stream is named 'w' in the batch"),
    (pa.table({"x": [1], "y": ["a"]}), pa.table({"y": ["b"], "x": [2]}),
     "the fields are in the order 'x', 'y' in the stream, 'y', 'x' in the batch"),
    (pa.table({"x": [1]}, pa.schema([pa.field("x", pa.int64(), False)])),
     pa.table({"x": [2]}), "field 'x' is not nullable in the stream, nullable in the batch"),
    (pa.table({"s": [{"a": 1, "b": ["p"]}]}), pa.table({"s": [{"a": 1.5, "b": ["q"]}]}),
     "field 's.a' is int64 in the stream, float64 in the batch"),
    (pa.table({"s": [{"a": 1, "b": ["p"]}]}), pa.table({"s": [{"a": 2, "b": [3]}]}),
     "field 's.b.item' is utf8 in the stream, int64 in the batch"),
    (pa.table({"s": [{"a": 1, "b": ["p"]}]}), pa.table({"s": [{"a": 2}]}),
     "field 's.b' of the stream is missing from the batch"),
    (pa.table({"x": [1]}, pa.schema([pa.field("x", pa.int64(), metadata={"unit": "m"})])),
     pa.table({"x": [2]}), "field 'x' has metadata {'unit': 'm'} in the stream, {} in the "
                           "batch"),
    (pa.table({"d": pa.array(["a"]).dictionary_encode()}),
     pa.table({"d": pa.array(["b"])}),
     "field 'd' is dictionary<values=utf8, indices=int32, ordered=False> in the stream, utf8 "
     "in the batch"),
]


@pytest.mark.parametrize(("first", "then", "says"), SCHEMA_DIFFERENCES,
                         ids=[says[:40] for _, _, says in SCHEMA_DIFFERENCES])
def test_append_batch_says_how_the_schema_differs(tmp_path: Path, first: pa.Table,
                                                  then: pa.Table, says: str) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/t", first)
        before = db.get("/t")
        with pytest.raises(streamdb.ArrowError) as info:
            db.append_batch("/t", then)
        assert str(info.value) == f"the batch's schema differs from the stream at '/t': {says}"
        assert db.get("/t") == before
        assert db.get_table("/t").to_pyarrow().equals(first)


def test_polars_frames_append_to_a_utf8_stream_and_back(tmp_path: Path) -> None:
    """Polars hands out string views, large lists and structs of them: they are stored in
    the forms of a stream that pyarrow's strings created, and the other way round."""
    import polars as pl

    schema = pa.schema([("id", pa.int64()), ("name", pa.string()),
                        ("tags", pa.list_(pa.string())),
                        ("who", pa.struct([("first", pa.string()), ("age", pa.int64())]))])
    first: dict[str, list[Any]] = {
        "id": [1, 2], "name": ["ann", None], "tags": [["a"], []],
        "who": [{"first": "Ann", "age": 30}, None]}
    then: dict[str, list[Any]] = {
        "id": [3, 4, 5], "name": ["bob", "日本", None], "tags": [None, ["b", "c"], [None]],
        "who": [{"first": None, "age": 4}, {"first": "Bo", "age": None}, None]}
    both = {k: first[k] + then[k] for k in first}
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/t", pa.table(first, schema))
        db.append_batch("/t", pl.DataFrame(then))
        got = db.get_table("/t")
        assert got.to_pyarrow().equals(pa.table(both, schema))
        assert pa.ipc.open_stream(db.get("/t")).read_all().equals(pa.table(both, schema))
        # a stream Polars created holds large_utf8; pyarrow's strings follow it
        db.append_batch("/p", pl.DataFrame(first))
        stored = db.get_table("/p").schema
        assert str(stored.field("name").type) == "large_utf8"
        db.append_batch("/p", pa.table(then, schema))
        db.append_batch("/p", pl.DataFrame(then))
        want = pa.table({k: first[k] + then[k] + then[k] for k in first}).cast(
            db.get_table("/p").to_pyarrow().schema)
        assert db.get_table("/p").to_pyarrow().equals(want)
        assert db.verify().ok


STRING_FORMS = [  # (the stream's type, a batch's type)
    (pa.string(), pa.large_string()), (pa.string(), pa.string_view()),
    (pa.large_string(), pa.string()), (pa.large_string(), pa.string_view()),
    (pa.binary(), pa.large_binary()), (pa.binary(), pa.binary_view()),
    (pa.large_binary(), pa.binary()),
    (pa.list_(pa.string()), pa.large_list(pa.large_string())),
    (pa.large_list(pa.binary()), pa.list_(pa.binary_view())),
    (pa.map_(pa.string(), pa.list_(pa.string())),
     pa.map_(pa.large_string(), pa.large_list(pa.string_view()))),
    (pa.dictionary(pa.int32(), pa.string()), pa.dictionary(pa.int32(), pa.large_string())),
]


def _values(ty: pa.DataType, seed: int) -> pa.Array:
    words = [f"w{seed}", None, "", "héllo" * seed, "日本"]
    if pa.types.is_dictionary(ty):
        return pa.array(words, ty.value_type).dictionary_encode().cast(ty)
    if pa.types.is_map(ty):
        return pa.array([[(w or "k", [w, "v"])] if w is not None else None for w in words], ty)
    if pa.types.is_list(ty) or pa.types.is_large_list(ty):
        value = ty.value_type
        blobs = [w.encode() if w is not None else None for w in words]
        items = blobs if pa.types.is_binary(value) or pa.types.is_binary_view(value) else words
        return pa.array([items[:i] if i != 1 else None for i in range(len(items))], ty)
    if pa.types.is_binary(ty) or pa.types.is_large_binary(ty) or pa.types.is_binary_view(ty):
        return pa.array([w.encode() if w is not None else None for w in words], ty)
    return pa.array(words, ty)


@pytest.mark.parametrize(("stored", "given"), STRING_FORMS, ids=[
    f"{given} into {stored}" for stored, given in STRING_FORMS])
def test_append_batch_converts_forms_of_the_same_type(tmp_path: Path, stored: pa.DataType,
                                                      given: pa.DataType) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/t", pa.table({"c": _values(stored, 1), "n": [1, 2, 3, 4, 5]}))
        db.append_batch("/t", pa.table({"c": _values(given, 2), "n": [6, 7, 8, 9, 10]}))
        db.append_batch("/t", pa.record_batch({"c": _values(given, 3), "n": [0] * 5}))
        want = pa.table({"c": pa.concat_arrays([_values(stored, i) for i in (1, 2, 3)]),
                         "n": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 0, 0, 0]})
        # (dictionaries compare by their values: the reader's may hold them differently)
        for got in (db.get_table("/t").to_pyarrow(), pa.ipc.open_stream(db.get("/t")).read_all()):
            got.validate(full=True)
            assert got.schema == want.schema
            assert got.to_pylist() == want.to_pylist()


def test_append_batch_refuses_values_past_int32_offsets(tmp_path: Path) -> None:
    """A large_utf8 column whose values span more than 2**31 - 1 bytes cannot go into a
    utf8 stream: the error names the path and the field, and nothing is written. (The
    values are zeroed memory the system hands out lazily; nothing reads them.)"""
    big = arrow.Array(arrow.LargeUtf8Type(), 2, [
        None, np.array([0, 3, 2**31 + 3], np.int64).view(np.uint8), np.zeros(2**31 + 3, np.uint8)])
    batch = arrow.RecordBatch(arrow.Schema((arrow.Field("s", arrow.LargeUtf8Type()),)), [big])
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/t", pa.table({"s": ["a"]}))
        before = db.get("/t")
        with pytest.raises(streamdb.ArrowError, match=r"^cannot append to the stream at '/t': "
                                                      r"field 's': its large_utf8 values span "
                                                      r"2147483651 bytes"):
            db.append_batch("/t", batch)
        assert db.get("/t") == before
        db.append_batch("/t", batch.slice(0, 1))  # the first value alone fits
        assert db.get_table("/t").column("s").to_pylist() == ["a", "\0\0\0"]


def test_append_batch_to_a_plain_document_says_how_to_make_a_stream(tmp_path: Path) -> None:
    """An IPC stream stored with write_document (or a table stored with put_table) is a
    plain document, which append_batch does not grow; its error says how to store the
    table so that appends work, and doing what it says works."""
    first = pa.table({"x": [1, 2], "s": ["a", "b"]})
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_document("/t", _arrow_stream(first))
        db.put_table("/f", first)
        for path in ("/t", "/f"):
            with pytest.raises(streamdb.InvalidArgumentError) as info:
                db.append_batch(path, pa.table({"x": [3], "s": ["c"]}))
            assert str(info.value) == (
                f"'{path}' holds a plain document (written with write_document or put_table); "
                f"append_batch grows only a stream it created itself. To turn an Arrow table "
                f"stored there into such a stream, in one transaction: "
                f"table = db.get_table('{path}'); db.delete('{path}'); "
                f"db.append_batch('{path}', table)")
            assert db.get_table(path).to_pyarrow().equals(first)
            with db.transaction():
                table = db.get_table(path)
                db.delete(path)
                db.append_batch(path, table)
            assert db.info(path).version == 1  # a new document: the stream
            db.append_batch(path, pa.table({"x": [3], "s": ["c"]}))
            want = pa.table({"x": [1, 2, 3], "s": ["a", "b", "c"]})
            assert db.get_table(path).to_pyarrow().equals(want)
            assert pa.ipc.open_stream(db.get(path)).read_all().equals(want)
        db.append_message("/log", b"m")
        with pytest.raises(streamdb.InvalidArgumentError, match=r"^'/log' is a message log "
                                                                r"\(written with append_message"):
            db.append_batch("/log", first)


def test_append_batch_of_a_table_without_batches_creates_the_stream(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.int64()), ("s", pa.string())])
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/p", pa.Table.from_batches([], schema))
        ours = arrow.Table(arrow.Schema((arrow.Field("x", arrow.int64()),)), [])
        db.append_batch("/o", ours)
        for path, want in (("/p", schema), ("/o", pa.schema([("x", pa.int64())]))):
            got = db.get_table(path)
            assert got.num_rows == 0 and got.batches == ()
            assert got.to_pyarrow().schema == want
            assert pa.ipc.open_stream(db.get(path)).read_all().schema == want
        size = db.info("/p").size
        db.append_batch("/p", pa.Table.from_batches([], schema))  # nothing to write
        assert db.info("/p").size == size
        with pytest.raises(streamdb.ArrowError, match="field 'x' is int64 in the stream"):
            db.append_batch("/p", pa.Table.from_batches([], pa.schema([("x", pa.int32()),
                                                                       ("s", pa.string())])))
        db.append_batch("/p", pa.table({"x": [1], "s": ["a"]}, schema))
        assert db.get_table("/p").to_pyarrow().equals(pa.table({"x": [1], "s": ["a"]}, schema))
    with streamdb.open(tmp_path / "t.db") as db:
        db.append_batch("/o", ours)
        assert db.get_table("/o").num_rows == 0
        assert db.verify().ok
