"""The repository's documentation stands on its own: nothing cites a document or a tracker
that users of the repository do not have. Design citations name docs/design.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
