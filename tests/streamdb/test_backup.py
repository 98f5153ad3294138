"""`Database.backup` (rules B1-B3 in streamdb/backup.py): never onto the database's own files,
however spelled; an existing file only with overwrite=True; a failed backup leaves nothing
half written and no temporary file behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import streamdb
from streamdb import Config, InvalidArgumentError
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS

DOCS = {"/a": b"first", "/big": bytes(range(256)) * 1000}


def fill(db: streamdb.Database) -> None:
    for path, data in DOCS.items():
        db.write_document(path, data)


def still_works(path: Path) -> None:
    """The database lost nothing and takes writes, durably."""
    with streamdb.open(path) as db:
        assert {p: db.get(p) for p in db} == {**DOCS, "/later": b"x"}
        assert db.verify().ok


def own_files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path))


@pytest.mark.parametrize("name", ["b.db", "b.db-wal", "b.db-wal.1", "b.db-wal.7",
                                  "b.db-readers", "b.db.compact"])
@pytest.mark.parametrize("readonly", [False, True])
def test_the_database_own_files_are_refused(tmp_path: Path, name: str, readonly: bool) -> None:
    path = tmp_path / "b.db"
    with streamdb.open(path) as db:
        fill(db)
        for _ in range(3):  # the log rolls into NAME-wal.1 at checkpoints
            db.write_document("/pad", os.urandom(70_000))
            db.checkpoint()
        db.delete("/pad")
    assert (tmp_path / "b.db-wal.1").exists()
    before = {n: (tmp_path / n).read_bytes() for n in own_files(tmp_path)}
    with streamdb.open(path, readonly=readonly) as db:
        for spelling in (tmp_path / name, f"{tmp_path}/./{name}",
                         f"{tmp_path}/../{tmp_path.name}/{name}"):
            with pytest.raises(InvalidArgumentError, match="one of the files of the database"):
                db.backup(spelling, overwrite=True)
    if readonly:  # nothing was written at all
        after = {n: (tmp_path / n).read_bytes() for n in own_files(tmp_path)}
        assert after.keys() == before.keys()
        assert after["b.db"] == before["b.db"]
    with streamdb.open(path) as db:
        db.write_document("/later", b"x")
    still_works(path)


def test_links_to_the_database_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    other = tmp_path / "elsewhere"
    other.mkdir()
    with streamdb.open(path) as db:
        fill(db)
        os.link(path, other / "hard.db")
        os.symlink(path, other / "soft.db")
        os.symlink(tmp_path / "b.db-wal", other / "soft-wal")
        os.link(tmp_path / "b.db-wal", other / "hard-wal")
        for link in ("hard.db", "soft.db", "soft-wal", "hard-wal"):
            with pytest.raises(InvalidArgumentError, match="one of the files"):
                db.backup(other / link, overwrite=True)
        db.write_document("/later", b"x")
    still_works(path)


def test_the_reported_cases(tmp_path: Path) -> None:
    """A backup onto the open database and onto its log: both refused, nothing lost."""
    for dest in ("b.db", "b.db-wal"):
        path = tmp_path / "b.db"
        with streamdb.open(path) as db:
            fill(db)
            with pytest.raises(InvalidArgumentError):
                db.backup(tmp_path / dest)
            db.write_document("/later", b"x")
        still_works(path)
        for name in own_files(tmp_path):
            os.remove(tmp_path / name)


def test_an_existing_file_needs_overwrite(tmp_path: Path) -> None:
    path, dest = tmp_path / "b.db", tmp_path / "copy.db"
    dest.write_bytes(b"precious")
    with streamdb.open(path) as db:
        fill(db)
        with pytest.raises(InvalidArgumentError, match="overwrite=True"):
            db.backup(dest)
        assert dest.read_bytes() == b"precious"
        db.backup(dest, overwrite=True)
    with streamdb.open(dest, readonly=True) as copy:
        assert {p: copy.get(p) for p in copy} == DOCS


def test_a_backup_opens_on_its_own(tmp_path: Path) -> None:
    path, dest = tmp_path / "b.db", tmp_path / "sub" / "copy.db"
    dest.parent.mkdir()
    with streamdb.open(path) as db:
        fill(db)
        db.backup(dest)
        reader = streamdb.open(path, readonly=True)
        reader.backup(tmp_path / "sub" / "from-reader.db")
        reader.close()
    assert sorted(os.listdir(dest.parent)) == ["copy.db", "from-reader.db"]
    for name in ("copy.db", "from-reader.db"):
        with streamdb.open(dest.parent / name) as copy:
            assert {p: copy.get(p) for p in copy} == DOCS and copy.verify().ok


@pytest.mark.parametrize("bad", [None, 5, b"x.db", "", ["x.db"]])
def test_bad_destinations_are_argument_errors(tmp_path: Path, bad: object) -> None:
    with streamdb.open(tmp_path / "b.db") as db:
        with pytest.raises(InvalidArgumentError):
            db.backup(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            db.backup(tmp_path / "ok.db", overwrite="yes")  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["b.db", "b.db-readers", "b.db-wal"]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_failed_backup_leaves_nothing_half_written(readonly: bool) -> None:
    """Fail each file call of a backup in turn (EIO, then ENOSPC): the destination keeps
    its old bytes, no temporary file is left, and the database is intact."""
    config = Config(page_size=4096)
    mem = MemoryVFS()
    with streamdb.open("/d/b.db", config, vfs=mem) as db:
        fill(db)
    mem.write_file("/d/copy.db", b"old copy")

    def attempt(fail_at: int | None, code: int = errno.EIO) -> tuple[int, bool]:
        disk = mem.crash(keep="all")
        faulty = FaultyVFS(disk, errno=code)
        db = streamdb.open("/d/b.db", config, readonly=readonly, vfs=faulty)
        before = faulty.calls
        faulty.fail_at = None if fail_at is None else before + fail_at
        try:
            db.backup("/d/copy.db", overwrite=True)
            ok = True
        except (streamdb.StorageIOError, streamdb.StorageFullError):
            ok = False
        calls = faulty.calls - before
        faulty.fail_at = None
        db.close()
        names = sorted(disk.listdir("/d"))
        assert not [n for n in names if n.endswith(".backup")], names
        # The old bytes, or (once the rename happened, before a failed directory fsync) a
        # whole copy: never a part of one.
        whole = ok or disk.read_file("/d/copy.db") != b"old copy"
        for name in ["/d/b.db"] + (["/d/copy.db"] if whole else []):
            with streamdb.open(name, config, readonly=True, vfs=disk) as check:
                assert {p: check.get(p) for p in check} == DOCS
        return calls, ok

    total, ok = attempt(None)
    assert ok and total > 3
    failures = 0
    for code in (errno.EIO, errno.ENOSPC):
        for n in range(1, total + 1):
            _, ok = attempt(n, code)
            failures += not ok
    assert failures >= total  # the sweep did fail backups
