"""verify(): every checksum and structure, and the index rebuilt from document records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import streamdb
from streamdb import Config
from streamdb.reads import version_at

CONFIG = Config(page_size=4096)


def build(path: Path) -> dict[str, bytes]:
    """A database with aliases, overwrites, a deletion and documents of several sizes."""
    model: dict[str, bytes] = {}
    with streamdb.open(path, CONFIG) as db:
        for i in range(300):
            data = os.urandom(i * 37 % 3000)
            db.write_document(f"/docs/{i:04d}.bin", data)
            model[f"/docs/{i:04d}.bin"] = data
        big = os.urandom(200_000)
        db.write_document("/big", big)
        db.bind_to_path(db.get_id_by_path("/big"), "/alias/big")
        model["/big"] = model["/alias/big"] = big
        db.write_document("/gone", b"deleted later")
        db.checkpoint()
        db.delete("/gone")
        db.write_document("/docs/0001.bin", b"new version")
        model["/docs/0001.bin"] = b"new version"
        report = db.verify()
        assert report.ok, report.problems
        assert not report.rebuilt and report.paths == len(model)
    return model


def tree_pages(path: Path, name: str) -> list[int]:
    with streamdb.open(path, CONFIG) as db:
        return db._engine._tree_pages({name: db._engine.header.trees[name]})


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def test_a_healthy_database_verifies(tmp_path: Path) -> None:
    build(tmp_path / "t.db")


@pytest.mark.parametrize("tree", ["paths", "suffix"])
def test_a_damaged_index_is_reported_and_rebuilt(tmp_path: Path, tree: str) -> None:
    path = tmp_path / "t.db"
    model = build(path)
    pages = tree_pages(path, tree)
    assert len(pages) > 1
    flip(path, pages[len(pages) // 2] * 4096 + 100)
    with streamdb.open(path, CONFIG) as db:
        report = db.verify()
        assert not report.ok and report.rebuilt
        assert any(tree in p for p in report.problems)
        assert {p: db.get(p) for p in db} == model  # "/gone" stays gone
        assert db.search_suffix(".bin")[:2] == ["/docs/0000.bin", "/docs/0001.bin"]
        again = db.verify()
        assert again.ok, again.problems
    with streamdb.open(path, CONFIG) as db:
        assert {p: db.get(p) for p in db} == model


def test_a_flipped_document_byte_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    build(path)
    with streamdb.open(path, CONFIG) as db:
        (first, _), = version_at(db._engine._pins.current, "/big", None).extents
    flip(path, first * 4096 + 5000)
    with streamdb.open(path, CONFIG) as db:
        report = db.verify()
        assert not report.ok and not report.rebuilt
        assert any("/alias/big" in p or "/big" in p for p in report.problems), report.problems


def test_damaged_document_records_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    build(path)
    pages = tree_pages(path, "docs")
    flip(path, pages[0] * 4096 + 200)
    with streamdb.open(path, CONFIG) as db:
        report = db.verify()
        assert not report.ok and not report.rebuilt
        assert any("docs tree" in p for p in report.problems)
