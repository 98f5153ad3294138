"""streamdb.dbm: the behaviours of CPython's dbm objects, the key encoding, and shelve."""

from __future__ import annotations

import errno
import os
import shelve
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamdb
import streamdb.dbm as sdbm
from streamdb.paths import path_key

HOSTILE_KEYS = [
    b"",
    b"\x00",
    b"\x00\x00",
    b"a\x00b",
    b"/",
    b"//",
    b"%",
    b"%00",
    b"\xff\xfe",
    b"\xff",
    b"\x80",
    b"\xed\xa0\x80",  # an encoded surrogate: not valid UTF-8
    b"\xc4\x80",  # U+0100, the binary form's stand-in for NUL, as a text key
    b"/k/abc",
    b"/x/abc",
    b"/x/\xc4\x80",
    b"abc",
    b"\x01\x7f",
    b"a" * sdbm.MAX_TEXT_KEY,
    b"\xff" * sdbm.MAX_BINARY_KEY,
    b"\x00" * sdbm.MAX_BINARY_KEY,
    b"\xff" + b"a" * (1024 - 3 - 2),  # a binary key whose path is exactly 1,024 bytes
]
TOO_LONG = [
    b"a" * (sdbm.MAX_TEXT_KEY + 1),
    b"\xff" * (sdbm.MAX_BINARY_KEY + 1),
    b"\x00" * (sdbm.MAX_BINARY_KEY + 1),
    b"\xff" + b"a" * (1024 - 3 - 1),
]


@pytest.fixture
def name(tmp_path: Path) -> str:
    return str(tmp_path / "t.db")


@pytest.fixture
def d(name: str) -> Iterator[sdbm.StreamDbm]:
    with sdbm.open(name, "c") as handle:
        yield handle


# -- the key map ----------------------------------------------------------------------


def test_hostile_keys_map_to_valid_distinct_paths_and_back() -> None:
    paths = [sdbm.key_to_path(k) for k in HOSTILE_KEYS]
    assert len(set(paths)) == len(HOSTILE_KEYS)
    for key, path in zip(HOSTILE_KEYS, paths, strict=True):
        path_key(path)  # valid: starts with "/", UTF-8, no NUL, <= 1,024 bytes
        assert sdbm.path_to_key(path) == key
    assert sdbm.key_to_path(b"abc") == "/k/abc"
    assert sdbm.key_to_path(b"a\x00\xff") == "/x/a\u0100\xff"


def test_too_long_keys_raise_error_naming_the_limit() -> None:
    for key in TOO_LONG:
        with pytest.raises(sdbm.error, match="1024"):
            sdbm.key_to_path(key)


def test_foreign_and_non_canonical_paths_have_no_key() -> None:
    for path in ["/", "/other", "/k", "/x", "/x/abc", "/x/\u0101", "/x/a\u0100b\u20ac",
                 "/K/abc", "/k\ud800", "/k/\ud800", "/x/\ud800"]:
        assert sdbm.path_to_key(path) is None, path
    assert sdbm.path_to_key("/x/\u0100") == b"\x00"


@given(st.binary(max_size=300))
def test_key_path_round_trip(key: bytes) -> None:
    path = sdbm.key_to_path(key)
    path_key(path)
    assert sdbm.path_to_key(path) == key


@given(st.lists(st.binary(max_size=300), unique=True, max_size=20))
def test_key_path_map_is_injective(keys: list[bytes]) -> None:
    assert len({sdbm.key_to_path(k) for k in keys}) == len(keys)


@given(st.text(max_size=60))
def test_path_to_key_is_a_partial_inverse(text: str) -> None:
    # Whatever path a key decodes from, that key encodes back to the same path: so no two
    # paths share a key, and iteration never shows a key twice.
    for path in (text, "/k/" + text, "/x/" + text):
        key = sdbm.path_to_key(path)
        if key is not None:
            assert sdbm.key_to_path(key) == path


# -- flags and files ------------------------------------------------------------------


def test_error_is_an_oserror_and_a_streamdb_error() -> None:
    assert issubclass(sdbm.error, OSError)
    assert issubclass(sdbm.error, streamdb.StreamDbError)


def test_r_and_w_on_a_missing_file_raise_error(name: str) -> None:
    for flag in ("r", "w"):
        with pytest.raises(sdbm.error) as info:
            sdbm.open(name, flag)
        assert info.value.errno == errno.ENOENT
    assert not os.path.exists(name)


def test_c_creates_at_exactly_the_name_with_its_log_beside(tmp_path: Path, name: str) -> None:
    with sdbm.open(name, "c") as d:
        d[b"k"] = b"v"
    names = set(os.listdir(tmp_path))
    assert "t.db" in names
    assert all(n in ("t.db", "t.db-readers") or n.startswith("t.db-wal") for n in names), names
    assert "t.db-wal" in names


def test_c_keeps_content_and_n_truncates(name: str) -> None:
    with sdbm.open(name, "c") as d:
        d[b"k"] = b"v"
    with sdbm.open(name, "c") as d:
        assert d[b"k"] == b"v"
    with sdbm.open(name, "w") as d:
        assert d[b"k"] == b"v"
    with sdbm.open(name, "n") as d:
        assert len(d) == 0
        d[b"new"] = b"1"
    with sdbm.open(name, "r") as d:
        assert d.keys() == [b"new"]


def test_n_removes_the_log_and_its_siblings(tmp_path: Path, name: str) -> None:
    with sdbm.open(name, "c") as d:
        d[b"k"] = b"v"
    stray = tmp_path / "t.db-wal.7"
    stray.write_bytes(b"junk" * 100)
    other = tmp_path / "t.db-walrus"
    other.write_bytes(b"not ours")
    with sdbm.open(name, "n") as d:
        assert not stray.exists()
        assert k_missing(d, b"k")
    assert other.read_bytes() == b"not ours"


def k_missing(d: sdbm.StreamDbm, key: bytes) -> bool:
    return key not in d and d.get(key) is None


def test_n_replaces_a_file_that_is_not_a_database(name: str) -> None:
    Path(name).write_bytes(b"not a StreamDB file" * 1000)
    with pytest.raises(sdbm.error):
        sdbm.open(name, "c")
    assert Path(name).read_bytes() == b"not a StreamDB file" * 1000  # never modified
    with sdbm.open(name, "n") as d:
        d[b"k"] = b"v"
    with sdbm.open(name) as d:
        assert d[b"k"] == b"v"


@pytest.mark.parametrize("flag", ["w", "c", "n"])
def test_an_empty_file_opens_as_a_new_database(name: str, flag: str) -> None:
    Path(name).touch()
    Path(name + "-wal").write_bytes(b"stale log" * 10)  # must not be replayed
    with sdbm.open(name, flag) as d:
        assert len(d) == 0
        d[b"k"] = b"v"
    with sdbm.open(name) as d:
        assert d.keys() == [b"k"]


def test_r_on_an_empty_file_raises_error(name: str) -> None:
    Path(name).touch()
    with pytest.raises(sdbm.error):
        sdbm.open(name, "r")


def test_n_refuses_a_database_open_elsewhere(name: str) -> None:
    with sdbm.open(name, "c") as d:
        d[b"k"] = b"v"
        with pytest.raises(sdbm.error):
            sdbm.open(name, "n")
        with pytest.raises(sdbm.error):
            sdbm.open(name, "c")
        assert d[b"k"] == b"v"
    with sdbm.open(name) as d:
        assert d[b"k"] == b"v"


@pytest.mark.parametrize("flag", ["", "x", "rw", "cz", "C", "fc"])
def test_a_bad_flag_raises_value_error(name: str, flag: str) -> None:
    with pytest.raises(ValueError, match="flag"):
        sdbm.open(name, flag)


def test_modifiers_are_accepted_and_s_is_synchronous(name: str) -> None:
    with sdbm.open(name, "cfu") as d:
        assert d.database.config.durability == "normal"
        d[b"k"] = b"v"
    with sdbm.open(name, "ws") as d:
        assert d.database.config.durability == "full"
        d[b"k2"] = b"v2"
        d.sync()
    with sdbm.open(name, "ru") as d:
        assert sorted(d.keys()) == [b"k", b"k2"]
        d.sync()  # a no-op when read-only


def test_mode_applies_to_new_files_and_their_log(tmp_path: Path, name: str) -> None:
    old = os.umask(0o027)
    try:
        with sdbm.open(name, "c", 0o666) as d:
            d[b"k"] = b"v"
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o640
        assert stat.S_IMODE(os.stat(name + "-wal").st_mode) == 0o640
        private = str(tmp_path / "p.db")
        with sdbm.open(private, "n", 0o600) as d:
            d[b"k"] = b"v"
        for n in os.listdir(tmp_path):
            if n.startswith("p.db"):
                assert stat.S_IMODE(os.stat(tmp_path / n).st_mode) == 0o600, n
        # An existing file keeps its permissions; a log recreated beside it copies them.
        os.chmod(name, 0o600)
        for n in os.listdir(tmp_path):
            if n.startswith("t.db-wal"):
                os.remove(tmp_path / n)
        with sdbm.open(name, "c", 0o666) as d:
            assert d[b"k"] == b"v"
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(name + "-wal").st_mode) == 0o600
    finally:
        os.umask(old)


def test_accepts_path_like_and_bytes_names(tmp_path: Path) -> None:
    with sdbm.open(tmp_path / "a.db", "c") as d:
        d[b"k"] = b"v"
    with sdbm.open(os.fsencode(tmp_path / "a.db"), "r") as d:
        assert d[b"k"] == b"v"


# -- the mapping ------------------------------------------------------------------------


def test_str_keys_and_values_are_utf8(d: sdbm.StreamDbm) -> None:
    d["ключ"] = "значение"
    assert d["ключ".encode()] == "значение".encode()
    assert d["ключ"] == "значение".encode()
    assert "ключ" in d  # type: ignore[comparison-overlap]
    d[b"ba"] = bytearray(b"xy")
    d[bytearray(b"mv")] = memoryview(b"z")
    assert d[b"ba"] == b"xy"
    assert d[b"mv"] == b"z"
    assert isinstance(d[b"mv"], bytes)


def test_wrong_types_raise_type_error(d: sdbm.StreamDbm) -> None:
    with pytest.raises(TypeError):
        d[1] = b"v"  # type: ignore[index]
    with pytest.raises(TypeError):
        d[b"k"] = 1  # type: ignore[assignment]
    with pytest.raises(TypeError):
        d[b"k"] = [b"chunks"]  # type: ignore[assignment]
    with pytest.raises(TypeError):
        1 in d  # type: ignore[comparison-overlap]  # noqa: B015


def test_hostile_keys_round_trip_and_persist(name: str) -> None:
    with sdbm.open(name, "c") as d:
        for i, key in enumerate(HOSTILE_KEYS):
            d[key] = b"value %d" % i
        assert len(d) == len(HOSTILE_KEYS)
        assert set(d.keys()) == set(HOSTILE_KEYS)
    with sdbm.open(name, "r") as d:
        assert len(d.keys()) == len(HOSTILE_KEYS)
        for i, key in enumerate(HOSTILE_KEYS):
            assert key in d
            assert d[key] == b"value %d" % i


def test_too_long_keys_cannot_be_stored_or_found(d: sdbm.StreamDbm) -> None:
    for key in TOO_LONG:
        with pytest.raises(sdbm.error, match="limit"):
            d[key] = b"v"
        with pytest.raises(KeyError):
            d[key]
        with pytest.raises(KeyError):
            del d[key]
        assert key not in d
        assert d.get(key, b"dflt") == b"dflt"
    assert len(d) == 0


def test_empty_value_is_not_an_absent_key(d: sdbm.StreamDbm) -> None:
    d[b"k"] = b""
    assert b"k" in d
    assert d[b"k"] == b""
    assert d.get(b"k") == b""
    assert d.keys() == [b"k"]
    d[b""] = b""
    assert b"" in d
    assert len(d) == 2


def test_missing_keys_raise_key_error(d: sdbm.StreamDbm) -> None:
    with pytest.raises(KeyError) as info:
        d[b"nope"]
    assert info.value.args == (b"nope",)
    with pytest.raises(KeyError):
        del d[b"nope"]
    with pytest.raises(KeyError):
        d["\xff-text"]
    d[b"k"] = b"v"
    del d[b"k"]
    with pytest.raises(KeyError):
        del d[b"k"]
    assert b"k" not in d


def test_get_and_setdefault(d: sdbm.StreamDbm) -> None:
    assert d.get(b"k") is None
    assert d.get(b"k", b"x") == b"x"
    assert d.setdefault(b"k") == b""
    assert d[b"k"] == b""
    assert d.setdefault(b"k", b"other") == b""
    assert d.setdefault(b"s", "ü") == "ü".encode()
    assert d[b"s"] == "ü".encode()
    d[b"k"] = b"v"
    assert d.get(b"k") == b"v"
    assert d.get("k") == b"v"  # type: ignore[call-overload]


def test_len_iter_keys_and_order(d: sdbm.StreamDbm) -> None:
    keys = [b"b", b"a", b"\xff", b"\x00", b"\x01", b"a\x00", b"\xe2\x82\xac"]
    for key in keys:
        d[key] = key
    # Text keys first (bytewise), then binary keys (bytewise, NUL after 0xFF).
    expected = [b"\x01", b"a", b"b", b"\xe2\x82\xac", b"a\x00", b"\xff", b"\x00"]
    assert d.keys() == expected
    assert list(d) == expected
    assert len(d) == len(keys)
    d[b"a"] = b"again"  # overwriting adds no key
    assert len(d) == len(keys)
    for key in list(d):
        del d[key]
    assert len(d) == 0
    assert d.keys() == []


def test_other_documents_in_the_file_are_ignored(name: str) -> None:
    with sdbm.open(name, "c") as d:
        d[b"mine"] = b"1"
    with streamdb.open(name) as db:
        for path in ["/other", "/x/abc", "/x/\u0101", "/k"]:
            db.write_document(path, b"foreign")
    with sdbm.open(name, "w") as d:
        assert d.keys() == [b"mine"]
        assert len(d) == 1
        assert b"abc" not in d


def test_read_only_refuses_writes_with_error(name: str) -> None:
    with sdbm.open(name, "c") as d:
        d[b"k"] = b"v"
    with sdbm.open(name, "r") as d:
        assert d[b"k"] == b"v"
        with pytest.raises(sdbm.error):
            d[b"k"] = b"w"
        with pytest.raises(sdbm.error):
            d[b"new"] = b"w"
        with pytest.raises(sdbm.error):
            del d[b"k"]
        with pytest.raises(sdbm.error):
            d.setdefault(b"missing", b"x")
        assert d.setdefault(b"k", b"x") == b"v"
        assert d.keys() == [b"k"]
    with sdbm.open(name, "r") as d:
        assert d[b"k"] == b"v"


def test_closed_object_raises_error(name: str) -> None:
    d = sdbm.open(name, "c")
    d[b"k"] = b"v"
    d.close()
    d.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: d[b"k"],
        lambda: d.__setitem__(b"k", b"v"),
        lambda: d.__delitem__(b"k"),
        lambda: b"k" in d,
        lambda: len(d),
        lambda: iter(d),
        lambda: d.keys(),
        lambda: d.get(b"k"),
        lambda: d.setdefault(b"k"),
        lambda: d.sync(),
        lambda: d.database,
    ]
    for call in calls:
        with pytest.raises(sdbm.error, match="closed"):
            call()
    assert "closed" in repr(d)


def test_context_manager_closes(name: str) -> None:
    with sdbm.open(name, "c") as d:
        d[b"k"] = b"v"
    with pytest.raises(sdbm.error):
        d[b"k"]


def test_writes_survive_a_process_that_never_closes(name: str) -> None:
    script = (
        "import os, sys, streamdb.dbm as s\n"
        "d = s.open(sys.argv[1], 'c')\n"
        "d[b'k'] = b'v'\n"
        "d.sync()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, name], check=True, timeout=60)
    with sdbm.open(name, "r") as d:
        assert d[b"k"] == b"v"


def test_mutable_mapping_mixins(d: sdbm.StreamDbm) -> None:
    d.update({b"a": b"1", b"b": b"2"})
    assert dict(d.items()) == {b"a": b"1", b"b": b"2"}
    assert list(d.values()) == [b"1", b"2"]
    assert d.pop(b"a") == b"1"
    assert d.pop(b"a", None) is None
    d.clear()
    assert len(d) == 0


# -- shelve -----------------------------------------------------------------------------


def shelf_on(name: str, flag: str, writeback: bool = False) -> shelve.Shelf[Any]:
    return shelve.Shelf(sdbm.open(name, flag), writeback=writeback)


def test_shelve_on_top(name: str) -> None:
    with shelf_on(name, "c") as shelf:
        shelf["config"] = {"retries": 3, "hosts": ["a", "b"]}
        shelf["numbers"] = list(range(10))
        shelf["ключ"] = ("tuple", None, 1.5)
        shelf["gone"] = 0
        del shelf["gone"]
    with shelf_on(name, "w", writeback=True) as shelf:
        assert sorted(shelf.keys()) == ["config", "numbers", "ключ"]
        assert shelf["config"] == {"retries": 3, "hosts": ["a", "b"]}
        assert shelf["numbers"] == list(range(10))
        assert shelf["ключ"] == ("tuple", None, 1.5)
        assert "gone" not in shelf
        assert shelf.get("gone") is None
        shelf["numbers"].append(10)  # written back at close
    with shelf_on(name, "r") as shelf:
        assert shelf["numbers"] == list(range(11))
        assert len(shelf) == 3
        with pytest.raises(sdbm.error):
            shelf["config"] = {}
