"""Wrong arguments to every public method: InvalidArgumentError (or InvalidPathError for a
path) naming the argument, raised before anything is written; never a TypeError,
ValueError or AttributeError from inside the library. Also the kinds of data a document
takes (any C-contiguous buffer), the file object writer's commit rule, and what the
errors say about the situation (messages(), a second writer in one process)."""

from __future__ import annotations

import array
import asyncio
import gc
import io
import mmap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamdb
from streamdb import Config, InvalidArgumentError, InvalidPathError
from streamdb.database import Database

Call = Callable[[Database], object]


def _closed_file(tmp: Path) -> io.BufferedReader:
    (tmp / "src").write_bytes(b"data")
    f = open(tmp / "src", "rb")  # noqa: SIM115 - closed on purpose
    f.close()
    return f


# (label, call, what the message names). Each call is wrong in exactly one argument.
CASES: list[tuple[str, Call, str]] = [
    ("get offset str", lambda db: db.get("/a", offset="1"), "offset"),  # type: ignore[arg-type]
    ("get offset float", lambda db: db.get("/a", offset=1.5), "offset"),  # type: ignore[arg-type]
    ("get offset bool", lambda db: db.get("/a", offset=True), "offset"),
    ("get offset negative", lambda db: db.get("/a", offset=-1), "offset"),
    ("get length str", lambda db: db.get("/a", length="2"), "length"),  # type: ignore[arg-type]
    ("get length negative", lambda db: db.get("/a", length=-2), "length"),
    ("get version str", lambda db: db.get("/a", version="1"), "version"),  # type: ignore[arg-type]
    ("get version zero", lambda db: db.get("/a", version=0), "version"),
    ("get_stream chunk_size str", lambda db: db.get_stream("/a", chunk_size="x"),  # type: ignore[arg-type]
     "chunk_size"),
    ("get_stream chunk_size zero", lambda db: db.get_stream("/a", chunk_size=0), "chunk_size"),
    ("get_table validate", lambda db: db.get_table("/a", validate="no"), "validate"),  # type: ignore[arg-type]
    ("messages start str", lambda db: db.messages("/log", start="0"), "start"),  # type: ignore[arg-type]
    ("messages start negative", lambda db: db.messages("/log", start=-1), "start"),
    ("list_paths str", lambda db: db.list_paths("str"), "doc_id"),  # type: ignore[arg-type]
    ("list_paths bytes", lambda db: db.list_paths(b"0" * 16), "doc_id"),  # type: ignore[arg-type]
    ("bind_to_path str", lambda db: db.bind_to_path("str", "/b"), "doc_id"),  # type: ignore[arg-type]
    ("write_document str", lambda db: db.write_document("/x", "text"), "encode"),
    ("write_document int", lambda db: db.write_document("/x", 5), "not int"),
    ("write_document non-contiguous", lambda db: db.write_document(
        "/x", memoryview(bytes(10))[::2]), "C-contiguous"),
    ("write_document strided numpy", lambda db: db.write_document(
        "/x", np.arange(10)[::2]), "C-contiguous"),
    ("write_document chunks of int", lambda db: db.write_document("/x", [b"a", 5]),
     "chunks"),
    ("write_documents one-tuple", lambda db: db.write_documents([("/bad",)]), "item 0"),  # type: ignore[list-item]
    ("write_documents str item", lambda db: db.write_documents(["/bad"]), "item 0"),  # type: ignore[list-item]
    ("write_documents not iterable", lambda db: db.write_documents(5), "iterable"),  # type: ignore[arg-type]
    ("write_documents second bad", lambda db: db.write_documents(
        [("/x", b"ok"), ("/y", 5)]), "not int"),
    ("append_message str", lambda db: db.append_message("/log", "text"), "payload"),
    ("append_message int", lambda db: db.append_message("/log", 5), "payload"),
    ("append_message checksum", lambda db: db.append_message("/m", b"x", checksum="md5"),
     "checksum"),
    ("append_message checksum list", lambda db: db.append_message(
        "/m", b"x", checksum=["xxh3"]), "checksum"),  # type: ignore[arg-type]
    ("append_messages bytes", lambda db: db.append_messages("/log", b"abc"), "iterable"),
    ("append_messages int items", lambda db: db.append_messages("/log", [b"a", 1]), "message"),
    ("append_messages not iterable", lambda db: db.append_messages("/log", 5), "iterable"),  # type: ignore[arg-type]
    ("open mode", lambda db: db.open("/a", "r"), "mode"),
    ("open mode list", lambda db: db.open("/a", ["rb"]), "mode"),  # type: ignore[arg-type]
    ("open wb write str", lambda db: db.open("/w", "wb").write("str"), "encode"),  # type: ignore[arg-type]
    ("set_quick_mode str", lambda db: db.set_quick_mode("no"), "on"),  # type: ignore[arg-type]
    ("set_quick_mode int", lambda db: db.set_quick_mode(0), "on"),  # type: ignore[arg-type]
    ("backup None", lambda db: db.backup(None), "destination"),  # type: ignore[arg-type]
    ("backup overwrite", lambda db: db.backup("x.db", overwrite=1), "overwrite"),  # type: ignore[arg-type]
    ("put_table compression", lambda db: db.put_table("/t", b"", compression="gzip"),
     "compression"),
]

PATH_CASES: list[tuple[str, Call]] = [
    ("get int", lambda db: db.get(5)),  # type: ignore[arg-type]
    ("get relative", lambda db: db.get("a")),
    ("write_document None", lambda db: db.write_document(None, b"x")),  # type: ignore[arg-type]
    ("write_documents bad path", lambda db: db.write_documents([("/ok", b"1"), (7, b"2")])),  # type: ignore[list-item]
    ("delete bytes", lambda db: db.delete(b"/a")),  # type: ignore[arg-type]
    ("bind_to_path path", lambda db: db.bind_to_path(db.get_id_by_path("/a"), "rel")),
    ("search int", lambda db: db.search(5)),  # type: ignore[arg-type]
    ("search_suffix None", lambda db: db.search_suffix(None)),  # type: ignore[arg-type]
    ("append_message path", lambda db: db.append_message("nope", b"x")),
    ("open path", lambda db: db.open(3, "wb")),  # type: ignore[arg-type]
    ("info NUL", lambda db: db.info("/a\x00")),
]


def state(db: Database) -> dict[str, Any]:
    return {p: (db.get(p) if db.info(p).messages is None else list(map(bytes, db.messages(p))),
                db.versions(p)) for p in db}


@pytest.fixture
def db(tmp_path: Path) -> Any:
    with streamdb.open(tmp_path / "a.db") as database:
        database.write_document("/a", b"alpha")
        database.append_message("/log", b"m1")
        yield database


@pytest.mark.parametrize("label", [c[0] for c in CASES])
def test_wrong_arguments_are_invalid_argument_errors(db: Database, label: str) -> None:
    _, call, named = next(c for c in CASES if c[0] == label)
    before = state(db)
    commits = db.stats().commits
    with pytest.raises(InvalidArgumentError) as info:
        call(db)
    assert named in str(info.value), str(info.value)
    assert state(db) == before and db.stats().commits == commits  # nothing written
    db.write_document("/after", b"usable")  # and the database goes on


@pytest.mark.parametrize("label", [c[0] for c in PATH_CASES])
def test_wrong_paths_are_invalid_path_errors(db: Database, label: str) -> None:
    _, call = next(c for c in PATH_CASES if c[0] == label)
    before = state(db)
    with pytest.raises(InvalidPathError):
        call(db)
    assert state(db) == before


def test_snapshots_check_like_the_database(db: Database) -> None:
    with db.snapshot() as snap:
        for call in (lambda: snap.get("/a", offset="1"), lambda: snap.get("/a", version="1"),  # type: ignore[arg-type]
                     lambda: snap.get_stream("/a", chunk_size=1.0),  # type: ignore[arg-type]
                     lambda: snap.list_paths("x"), lambda: snap.messages("/log", start=None)):  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                call()


def test_a_closed_file_object_is_an_argument_error(db: Database, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot be read"):
        db.write_document("/x", _closed_file(tmp_path))
    with open(tmp_path / "w", "wb") as wonly, pytest.raises(InvalidArgumentError):
        db.write_document("/x", wonly)
    assert not db.exists("/x")


@pytest.mark.parametrize("kwargs", [
    {"page_size": "8k"}, {"page_size": 8192.0}, {"versions_to_keep": None},
    {"lock_timeout": "1"}, {"lock_timeout": float("nan")}, {"lock_timeout": True},
    {"encryption_key": "k" * 32}, {"encryption_key": b"k" * 31}, {"use_mmap": "no"},
    {"use_mmap": 1}, {"compression": "gzip"}, {"compression": ["zstd"]},
    {"checksum": "md5"}, {"durability": 1}, {"max_document_size": None},
    {"page_cache_size": -1}, {"max_db_size": "big"},
])
def test_config_fields_are_checked(kwargs: dict[str, object]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(InvalidArgumentError, match=name):
        Config(**kwargs)  # type: ignore[arg-type]


def test_an_encryption_key_may_be_any_32_bytes() -> None:
    assert Config(encryption_key=bytearray(32)).encryption_key == bytes(32)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", [
    lambda p: streamdb.open(p, {"compression": "zstd"}),  # type: ignore[arg-type]
    lambda p: streamdb.open(None),  # type: ignore[arg-type]
    lambda p: streamdb.open(5),  # type: ignore[arg-type]
    lambda p: streamdb.open(""),
    lambda p: streamdb.open(p, readonly="yes"),  # type: ignore[arg-type]
    lambda p: streamdb.open(p, recover="please"),
])
def test_open_arguments_are_checked(tmp_path: Path, call: Callable[[Path], object]) -> None:
    with pytest.raises(InvalidArgumentError):
        call(tmp_path / "n.db")
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_get_version_names_the_argument_not_a_missing_version(db: Database) -> None:
    with pytest.raises(InvalidArgumentError, match="version must be an int"):
        db.get("/a", version="1")  # type: ignore[arg-type]
    numpy_one: Any = np.int64(1)  # numpy integers are integers
    assert db.get("/a", version=numpy_one) == b"alpha"


def test_set_quick_mode_takes_only_bools(db: Database) -> None:
    with pytest.raises(InvalidArgumentError):
        db.set_quick_mode("no")  # type: ignore[arg-type]
    assert not db._engine.quick
    with pytest.warns(UserWarning):
        db.set_quick_mode(True)
    assert db._engine.quick
    db.set_quick_mode(np.bool_(False))
    assert not db._engine.quick


# -- buffers as data ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: np.arange(10, dtype=np.int32),
    lambda: np.arange(100_000, dtype=np.float64),  # 800 KB: on pages
    lambda: np.zeros((3, 4), dtype=np.uint16),
    lambda: array.array("d", [1.5, 2.5, 3.5]),
    lambda: np.frombuffer(b"abcdef", dtype=np.uint8)[1:4],  # contiguous slice
])
def test_any_contiguous_buffer_is_document_data(db: Database, make: Callable[[], Any]) -> None:
    value = make()
    db.write_document("/buf", value)
    assert db.get("/buf") == memoryview(value).tobytes()
    db.write_documents([("/buf2", value), ("/buf3", [value, value])])
    assert db.get("/buf3") == memoryview(value).tobytes() * 2
    db.append_message("/mlog", value)
    assert bytes(list(db.messages("/mlog"))[-1]) == memoryview(value).tobytes()
    with db.open("/w", "wb") as f:
        f.write(value)
    assert db.get("/w") == memoryview(value).tobytes()


def test_an_mmap_is_document_data(db: Database) -> None:
    m = mmap.mmap(-1, 100_000)
    m[:5] = b"hello"
    db.write_document("/m", m)
    assert db.get("/m") == bytes(m)
    m.close()


# -- db.open(path, "wb") commits only when closed ---------------------------------------------


def test_an_abandoned_writer_commits_nothing(db: Database) -> None:
    w = db.open("/w", "wb")
    w.write(b"half written")
    del w
    gc.collect()
    assert not db.exists("/w")


def test_a_writer_left_by_an_exception_commits_nothing(db: Database) -> None:
    def work() -> None:
        w = db.open("/w", "wb")
        w.write(b"half written")
        raise KeyError("interrupted")

    with pytest.raises(KeyError):
        work()
    gc.collect()
    assert not db.exists("/w")
    with db.open("/w", "wb") as w:  # a clean exit commits
        w.write(b"whole")
    w2 = db.open("/w2", "wb")
    w2.write(b"closed")
    w2.close()  # and so does close()
    assert db.get("/w") == b"whole" and db.get("/w2") == b"closed"


# -- errors that say what happened -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inline", "paged", "zstd", "aes", "table", "stream"])
def test_messages_of_a_document_that_is_not_a_log_raises_at_the_call(
        tmp_path: Path, kind: str) -> None:
    from streamdb import arrow

    key = bytes(range(32))
    config = Config(compression="zstd" if kind == "zstd" else None,
                    encryption_key=key if kind == "aes" else None)
    with streamdb.open(tmp_path / "m.db", config) as db:
        if kind == "table":
            db.put_table("/d", arrow.Table.from_pydict({"a": [1, 2]}))
        elif kind == "stream":
            db.append_batch("/d", arrow.Table.from_pydict({"a": [1, 2]}))
        else:
            db.write_document("/d", b"x" * (200_000 if kind == "paged" else 10))
        with pytest.raises(InvalidArgumentError, match="not a message log"):
            db.messages("/d")  # at the call, not at the first next()
        assert db.stats().snapshots == 0  # the pin the call took is released


def test_a_second_writer_in_one_process_is_told_so(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    with streamdb.open(path) as first:
        with pytest.raises(streamdb.LockedError, match="already open for writing in this process"):
            streamdb.open(path)
        with pytest.raises(streamdb.LockedError, match="this process"):
            streamdb.open(str(path.parent / "." / "w.db"))
        first.write_document("/a", b"still mine")
    with streamdb.open(path) as again:  # closed: it opens
        assert again.get("/a") == b"still mine"


def test_get_async_checks_its_argument(db: Database) -> None:
    with pytest.raises(InvalidPathError):
        asyncio.run(db.get_async(5))  # type: ignore[arg-type]


def test_doc_ids_are_uuids(db: Database) -> None:
    doc = db.get_id_by_path("/a")
    assert isinstance(doc, uuid.UUID)
    db.bind_to_path(doc, "/alias")
    assert db.list_paths(doc) == ["/a", "/alias"]
