"""A writer open that fails changes no file: not the database, not the log (whose recovery
writes only once the whole open has succeeded, wal rule R7), not the reader table (peeked
read-only until then), and it creates none."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import streamdb
from streamdb import Config
from streamdb.errors import CorruptionError
from wal import format as fmt

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzz_db_open as harness  # noqa: E402
import fuzzkit  # noqa: E402

CONFIG = Config(page_size=4096, durability="normal")


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def unpack(name: str, folder: Path) -> Path:
    """A corpus image written as real files: `t.db`, `t.db-wal`, `t.db-wal.1`."""
    case = harness.FuzzCase.decode(fuzzkit.read_input(harness.CORPUS_DIR / name))
    for path, data in case.files().items():
        (folder / Path(path).name).write_bytes(data)
    return folder / "t.db"


@pytest.mark.parametrize("name", ["open-failed-wal1-6e43d30eafb8.bin.gz",
                                  "open-failed-wal-3f89989d912d.bin.gz"])
def test_a_refused_log_is_left_as_it_was(tmp_path: Path, name: str) -> None:
    """The log had an unfinished batch (recovery would erase it and free segments) and a
    record the checkpoint contradicts: the open is refused and every file stays."""
    db_path = unpack(name, tmp_path)
    before = tree(tmp_path)
    with pytest.raises(CorruptionError):
        streamdb.open(db_path, CONFIG)
    assert tree(tmp_path) == before  # byte-identical; no NAME-readers, no new segment


def test_no_log_file_is_created_beside_a_database_whose_open_fails(tmp_path: Path) -> None:
    """Only `t.db-wal.1` is left of the log, and a record in it contradicts the checkpoint:
    the open is refused without creating `t.db-wal` (slot 0 of the log) or `t.db-readers`."""
    db_path = unpack("open-failed-wal1-6e43d30eafb8.bin.gz", tmp_path)
    (tmp_path / "t.db-wal").unlink()
    before = tree(tmp_path)
    with pytest.raises(CorruptionError):
        streamdb.open(db_path, CONFIG)
    assert tree(tmp_path) == before
    assert sorted(before) == ["t.db", "t.db-wal.1"]


def test_the_reader_table_is_trimmed_only_by_an_open_that_succeeds(tmp_path: Path) -> None:
    db_path = unpack("open-failed-wal1-6e43d30eafb8.bin.gz", tmp_path)
    table = tmp_path / "t.db-readers"
    with streamdb.open(tmp_path / "other.db", CONFIG) as other:  # a well-formed table
        other.write_document("/x", b"x")
    good = (tmp_path / "other.db-readers").read_bytes()
    table.write_bytes(good + b"\x01\x02\x03")  # bytes past the last whole slot: damage
    before = tree(tmp_path)
    with pytest.raises(CorruptionError):
        streamdb.open(db_path, CONFIG)
    assert tree(tmp_path) == before
    # An open that succeeds does trim it (and writes the log): a fresh database here.
    fresh = tmp_path / "fresh.db"
    (tmp_path / "fresh.db-readers").write_bytes(good + b"\x01\x02\x03")
    with streamdb.open(fresh, CONFIG):
        pass
    assert (tmp_path / "fresh.db-readers").read_bytes() == good
    assert (tmp_path / "fresh.db-wal").read_bytes()[:8] == fmt.MAGIC
