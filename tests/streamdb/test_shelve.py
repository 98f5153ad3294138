"""streamdb.shelve: `shelve` over a StreamDB file, and why the standard library's cannot."""

from __future__ import annotations

import dataclasses
import dbm
import errno
import pickle
import shelve
from pathlib import Path
from typing import Any

import pytest

import streamdb
import streamdb.dbm as sdbm
import streamdb.shelve as sshelve


@dataclasses.dataclass(frozen=True)
class Point:  # module level, so pickle can find it
    x: int
    y: int


VALUES: dict[str, Any] = {
    "dict": {"retries": 3, "hosts": ["a", "b"]},
    "list": list(range(100)),
    "tuple": ("a", None, 1.5, True),
    "set": {1, 2, 3},
    "bytes": b"\x00\xff" * 10,
    "none": None,
    "empty": "",
    "object": Point(1, 2),
    "nested": {"p": [Point(0, 0), {"k": (1, 2)}]},
    "large": bytes(range(256)) * 4096,  # 1 MiB: stored in pages, not in the log record
    "ключ": "unicode key",
    "a\x00b": "a key with NUL",
    "/k/x": "a key that looks like a path",
}


@pytest.fixture
def name(tmp_path: Path) -> str:
    return str(tmp_path / "s.db")


def test_the_standard_library_does_not_recognise_a_streamdb_file(name: str) -> None:
    """What README says: `dbm.whichdb` returns '' and `shelve.open` raises dbm.error."""
    streamdb.open(name).close()
    assert dbm.whichdb(name) == ""
    for flag in ("r", "w", "c"):
        with pytest.raises(dbm.error[0], match="could not be determined"), \
                shelve.open(name, flag):
            pass


def test_values_round_trip_pickled_and_persist(name: str) -> None:
    with sshelve.open(name) as shelf:
        assert isinstance(shelf, shelve.Shelf)
        for key, value in VALUES.items():
            shelf[key] = value
        for key, value in VALUES.items():
            assert shelf[key] == value
    with sshelve.open(name, "r") as shelf:
        assert sorted(shelf) == sorted(VALUES)
        assert len(shelf) == len(VALUES)
        for key, value in VALUES.items():
            assert shelf[key] == value
            assert key in shelf
        assert shelf.get("missing") is None
        assert "missing" not in shelf
        with pytest.raises(KeyError):
            shelf["missing"]


def test_each_value_is_one_pickled_document(name: str) -> None:
    with sshelve.open(name, protocol=2) as shelf:
        shelf["p"] = Point(3, 4)
    with streamdb.open(name, readonly=True) as db:
        stored = db.get(sdbm.key_to_path(b"p"))
    assert stored[:2] == b"\x80\x02"  # a protocol 2 pickle
    assert pickle.loads(stored) == Point(3, 4)


def test_delete(name: str) -> None:
    with sshelve.open(name) as shelf:
        shelf["a"] = 1
        shelf["b"] = 2
        del shelf["a"]
        with pytest.raises(KeyError):
            del shelf["a"]
    with sshelve.open(name, "r") as shelf:
        assert list(shelf) == ["b"]


def test_flag_r_and_w_need_an_existing_file(name: str) -> None:
    for flag in ("r", "w"):
        with pytest.raises(sdbm.error) as info:
            sshelve.open(name, flag)
        assert info.value.errno == errno.ENOENT
    sshelve.open(name, "c").close()
    with sshelve.open(name, "w") as shelf:
        shelf["k"] = "v"
    with sshelve.open(name, "r") as shelf:
        assert shelf["k"] == "v"


def test_flag_c_keeps_and_n_truncates(name: str) -> None:
    with sshelve.open(name, "c") as shelf:
        shelf["k"] = [1]
    with sshelve.open(name, "c") as shelf:
        assert shelf["k"] == [1]
    with sshelve.open(name, "n") as shelf:
        assert len(shelf) == 0
        shelf["new"] = 1
    with sshelve.open(name) as shelf:
        assert list(shelf) == ["new"]


def test_flag_s_makes_writes_durable_on_return(name: str) -> None:
    with sshelve.open(name, "cs") as shelf:
        assert shelf.database.config.durability == "full"
    with sshelve.open(name) as shelf:
        assert shelf.database.config.durability == "normal"


def test_a_bad_flag_raises_value_error(name: str) -> None:
    with pytest.raises(ValueError):
        sshelve.open(name, "x")


def test_read_only_shelf_refuses_writes_with_dbm_error(name: str) -> None:
    with sshelve.open(name) as shelf:
        shelf["k"] = {"a": 1}
    for writeback in (False, True):
        with sshelve.open(name, "r", writeback=writeback) as shelf:
            assert shelf.readonly
            with pytest.raises(sdbm.error, match="read-only") as info:
                shelf["k"] = {"a": 2}
            assert isinstance(info.value, OSError)
            assert isinstance(info.value, streamdb.StreamDbError)
            with pytest.raises(sdbm.error, match="read-only"):
                shelf["new"] = 1
            with pytest.raises(sdbm.error, match="read-only"):
                del shelf["k"]
            assert shelf["k"] == {"a": 1}  # the refused value is not cached either
            assert "new" not in shelf
    with sshelve.open(name, "r") as shelf:
        assert dict(shelf) == {"k": {"a": 1}}


def test_read_only_writeback_shelf_closes_cleanly(name: str) -> None:
    """The standard library's Shelf would write its cache back at close and fail; the
    database would stay open. Here the cache is dropped and the database closed."""
    with sshelve.open(name) as shelf:
        shelf["k"] = [1]
    shelf = sshelve.open(name, "r", writeback=True)
    shelf["k"].append(2)  # mutates the cached object only
    assert shelf["k"] == [1, 2]
    db = shelf.database
    shelf.close()  # no error
    with pytest.raises(streamdb.ClosedError):
        db.exists("/k/k")  # the database was closed
    with pytest.raises(sdbm.error, match="closed"):
        _ = shelf.database
    with sshelve.open(name) as again:
        assert again["k"] == [1]


def test_writeback_writes_mutations_back_at_sync_and_close(name: str) -> None:
    with sshelve.open(name, writeback=True) as shelf:
        shelf["list"] = [1]
        shelf["list"].append(2)
        shelf.sync()
        assert shelf.cache == {}
        with sshelve.open(name, "r") as reader:  # another open sees what sync wrote
            assert reader["list"] == [1, 2]
        shelf["list"].append(3)  # read again, cached again
    with sshelve.open(name, "r") as shelf:
        assert shelf["list"] == [1, 2, 3]


def test_without_writeback_mutations_are_not_stored(name: str) -> None:
    with sshelve.open(name) as shelf:
        shelf["list"] = [1]
        shelf["list"].append(2)  # a fresh copy, mutated and dropped
        assert shelf["list"] == [1]
        item = shelf["list"]
        item.append(2)
        shelf["list"] = item  # the documented way
    with sshelve.open(name, "r") as shelf:
        assert shelf["list"] == [1, 2]


def test_close_is_idempotent_and_a_closed_shelf_raises_value_error(name: str) -> None:
    shelf = sshelve.open(name)
    shelf["k"] = 1
    shelf.close()
    shelf.close()
    for call in (lambda: shelf["k"], lambda: shelf.__setitem__("k", 2),
                 lambda: shelf.__delitem__("k"), lambda: len(shelf), lambda: list(shelf)):
        with pytest.raises(ValueError, match="closed shelf"):
            call()
    with sshelve.open(name) as again:  # closing released the writer lock
        assert again["k"] == 1


def test_context_manager_closes_and_releases_the_database(name: str) -> None:
    with sshelve.open(name) as shelf:
        shelf["k"] = 1
    with pytest.raises(ValueError):
        shelf["k"]
    with streamdb.open(name) as db:  # no LockedError
        assert db.exists(sdbm.key_to_path(b"k"))


def test_close_closes_the_database_even_when_writing_back_fails(name: str) -> None:
    shelf = sshelve.open(name, writeback=True)
    shelf["ok"] = 1
    shelf["bad"] = []
    shelf["bad"].append(lambda: None)  # cannot be pickled: the write-back fails
    with pytest.raises((pickle.PicklingError, AttributeError)):
        shelf.close()
    shelf.close()  # idempotent after a failed close too
    with sshelve.open(name, "w") as again:  # the writer lock was released
        assert again["ok"] == 1
        assert again["bad"] == []


def test_a_reader_shelf_alongside_a_writer_shelf(name: str) -> None:
    with sshelve.open(name) as writer:
        writer["a"] = 1
        with sshelve.open(name, "r") as reader:
            assert reader["a"] == 1
            writer["b"] = 2
            assert "b" not in reader  # the state as of the reader's open
        with pytest.raises(sdbm.error):
            sshelve.open(name, "w")  # one writer at a time


def test_config_is_passed_through(name: str) -> None:
    key = bytes(range(32))
    with sshelve.open(name, config=streamdb.Config(encryption_key=key)) as shelf:
        shelf["secret"] = {"pin": 1234}
    with pytest.raises(sdbm.error):
        sshelve.open(name, "r")  # no key: EncryptionError, as dbm.error
    with sshelve.open(name, "r", config=streamdb.Config(encryption_key=key)) as shelf:
        assert shelf["secret"] == {"pin": 1234}
