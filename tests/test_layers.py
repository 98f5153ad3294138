"""The layering rules of docs/design.md ("Layers"), checked on the source: `wal` stands
alone, the codecs import only `streamdb.errors`, and storage imports nothing above it."""

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


def own_imports(package: str) -> dict[str, set[str]]:
    """The streamdb and wal modules each file of `package` imports (`from streamdb import
    errors` counts as `streamdb.errors`)."""
    files = sorted((ROOT / package.replace(".", "/")).rglob("*.py"))
    assert files, package
    found = {}
    for path in files:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in ("streamdb", "wal"):
                    names.update(f"{node.module}.{alias.name}" for alias in node.names)
                else:
                    names.add(node.module)
        found[str(path.relative_to(ROOT))] = {
            m for m in names if m.split(".")[0] in ("streamdb", "wal")}
    return found


def test_the_codecs_import_only_the_errors_and_themselves() -> None:
    for package in ("streamdb.framing", "streamdb.arrow"):
        for name, modules in own_imports(package).items():
            bad = {m for m in modules
                   if m != "streamdb.errors" and not (m + ".").startswith(package + ".")}
            assert not bad, f"{name} imports {bad}"


def test_storage_imports_nothing_above_it() -> None:
    allowed = ("streamdb.errors", "streamdb.errmap", "streamdb.storage", "wal")
    for name, modules in own_imports("streamdb.storage").items():
        bad = {m for m in modules
               if not any(m == a or m.startswith(a + ".") for a in allowed)}
        assert not bad, f"{name} imports {bad}"
