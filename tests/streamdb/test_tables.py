"""Arrow tables in the database: `put_table` stores an IPC file, `get_table` reads it back
(zero-copy from the map when the document is contiguous, uncompressed and unencrypted),
`append_batch` grows an IPC stream document in place. pyarrow checks what is stored."""

from __future__ import annotations

import warnings
from pathlib import Path

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
