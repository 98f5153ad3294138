"""The repository's documentation stands on its own: nothing cites a document or a tracker
that users of the repository do not have, and design citations name docs/design.md and
what it holds. Then what README.md says about the files on disk and durability, checked."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

import streamdb
from streamdb.config import Durability
from wal.memvfs import MemoryVFS

ROOT = Path(__file__).resolve().parents[1]
TREES = ("streamdb", "wal", "tests", "tools", "fuzz", "docs")
TOP = ("README.md", "Makefile", "pyproject.toml")

FORBIDDEN = {
    "a path into a directory outside the repository": re.compile(r"\.\./shared"),
    "the external design reference (cite docs/design.md)": re.compile(r"\bDESIGN\b"),
    "an issue number": re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE),
}


def text_files() -> list[Path]:
    files = [ROOT / name for name in TOP if (ROOT / name).exists()]
    for tree in TREES:
        files += sorted(p for p in (ROOT / tree).rglob("*")
                        if p.suffix in (".py", ".md") and "__pycache__" not in p.parts)
    return files


def test_the_trees_are_there() -> None:
    files = text_files()
    for tree in TREES:
        assert any(p.is_relative_to(ROOT / tree) for p in files), tree
    assert (ROOT / "docs" / "design.md") in files


@pytest.mark.parametrize("path", text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_citation_of_anything_outside_the_repository(path: Path) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for what, pattern in FORBIDDEN.items()
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_patterns_catch_what_they_are_for() -> None:
    # Each example in two parts, so that this file does not hold it.
    bad = ["".join(parts) for parts in [("see ../", "shared/notes.md"),
                                        ("DESIG", "N section 3, invariant 7"),
                                        ("DESIG", "N.md"), ("(iss", "ue 3)"),
                                        ("Iss", "ue #12"), ("iss", "ues 4 and 5")]]
    good = ["docs/design.md, invariant 7 (single writer, many readers)", "a design issue",
            "the issues it raises", "(docs/design.md, section 5)"]
    for line in bad:
        assert any(p.search(line) for p in FORBIDDEN.values()), line
    for line in good:
        assert not any(p.search(line) for p in FORBIDDEN.values()), line


SECTIONS = re.compile(r"^## (\d+)\. ", re.MULTILINE)
INVARIANTS = re.compile(r"^(\d)\. \*\*(.+?)\*\*", re.MULTILINE)
CITED = re.compile(r"docs/design\.md, (?:section (\d+)|invariants? (\d)(?:-(\d))?)")


def test_citations_of_docs_design_name_what_is_there() -> None:
    """Every "docs/design.md, section N" and "docs/design.md, invariant N" cited in the code
    names a section or an invariant that the document has."""
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    sections = {int(n) for n in SECTIONS.findall(design)}
    invariants = {int(n) for n, _ in INVARIANTS.findall(design)}
    assert sections == set(range(1, 10)), sections
    assert invariants == set(range(1, 8)), invariants
    for rule in ("D1", "D2", "D3", "D4", "D5", "C1", "C2", "C3"):
        assert f"**{rule}**" in design, rule
    cited = 0
    for path in text_files():
        for match in CITED.finditer(path.read_text(encoding="utf-8")):
            cited += 1
            section, first, last = match.groups()
            if section is not None:
                assert int(section) in sections, (path, match.group(0))
            else:
                for n in range(int(first), int(last or first) + 1):
                    assert n in invariants, (path, match.group(0))
    assert cited


# -- what README.md says about the files and the defaults, checked --------------------


def test_readme_files_of_a_database(tmp_path: Path) -> None:
    name = tmp_path / "data.db"
    streamdb.open(name).close()
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert sizes == {"data.db": 16384, "data.db-wal": 1 << 20, "data.db-readers": 64}
    with streamdb.open(name) as db:
        db.write_document("/a", b"x" * 1000)
        db.checkpoint()
        assert (tmp_path / "data.db-wal.1").stat().st_size == 2 << 20
    streamdb.open(name, readonly=True).close()
    assert (tmp_path / "data.db-readers").stat().st_size == 64 + 64 * 64
    lazy = tmp_path / "lazy.db"
    streamdb.open(lazy, streamdb.Config(durability="normal")).close()
    assert (tmp_path / "lazy.db-wal").stat().st_size < 4096  # not zero-filled


def test_readme_after_a_clean_close_the_db_file_alone_holds_every_commit(
        tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    big = bytes(range(256)) * 4096
    with streamdb.open(tmp_path / "a" / "data.db") as db:
        db.write_document("/small", b"s")
        db.write_document("/big", big)
    shutil.copy(tmp_path / "a" / "data.db", tmp_path / "b" / "data.db")
    with streamdb.open(tmp_path / "b" / "data.db") as db:
        assert db.get("/small") == b"s"
        assert db.get("/big") == big
        assert db.verify().ok


def test_readme_durability_normal_leaves_a_quiet_writers_last_commit_unsynced() -> None:
    cases: list[tuple[Durability, bool]] = [("full", True), ("normal", False)]
    for durability, survives in cases:
        mem = MemoryVFS()
        config = streamdb.Config(durability=durability)
        db = streamdb.open("/d/t.db", config, vfs=mem)
        db.write_document("/a", b"1")
        time.sleep(1.2)  # longer than the 1 s of "normal": nothing syncs a quiet writer
        with streamdb.open("/d/t.db", config, vfs=mem.crash(keep="none")) as after:
            assert ("/a" in after) is survives, durability
        with streamdb.open("/d/t.db", config, vfs=mem.crash(keep="all")) as after:
            assert "/a" in after  # a killed process loses nothing
        db.flush()
        with streamdb.open("/d/t.db", config, vfs=mem.crash(keep="none")) as after:
            assert "/a" in after
        db.close()
