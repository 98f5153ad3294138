"""The layering rules of DESIGN section 3, checked on the source: `wal` stands alone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_wal_never_imports_streamdb() -> None:
    files = sorted((ROOT / "wal").glob("*.py"))
    assert files
    for path in files:
        bad = {m for m in imported_modules(path) if m.split(".")[0] == "streamdb"}
        assert not bad, f"{path.name} imports {bad}"


def test_wal_imports_only_the_standard_library_and_its_declared_dependency() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {"wal", "crc32c"}
    for path in sorted((ROOT / "wal").glob("*.py")):
        extra = {m for m in imported_modules(path) if m.split(".")[0] not in allowed}
        assert not extra, f"{path.name} imports {extra}"
