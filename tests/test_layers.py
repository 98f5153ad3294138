"""The layering rules of docs/design.md ("Layers"), checked on the source (the AST of every
module of `wal` and `streamdb`; tools, fuzz and tests are not checked):

1. `wal` never imports `streamdb`, and imports nothing but the standard library and
   `crc32c`.
2. The codecs, `streamdb.framing` and `streamdb.arrow`, import of `streamdb` only
   `streamdb.errors` and their own package; of the rest, the standard library, numpy, lz4,
   zstandard, xxhash and crc32c, and `streamdb.arrow` pyarrow, lazily (in a function or
   for type checking only: it is optional).
3. `streamdb.storage` imports nothing of `streamdb` above it: `streamdb.errors`,
   `streamdb.errmap` and itself (and `wal`).
4. The parts of `streamdb` import only the parts `PART_EDGES` allows them (the place for
   the façade -> engine -> storage rule, filled in when `streamdb/engine/` lands).
5. Only the file layer touches the OS: no module but `wal/vfs.py` imports mmap, fcntl,
   shutil, tempfile, pathlib (or the platform modules under os), refers to a file or
   descriptor function of `os` or `os.path`, or opens a file (`open`, `io.open`,
   `io.FileIO`), except those in `OS_EXCEPTIONS`, each with its reason. Every exception
   must still be needed: one that is not fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDLIB = frozenset(sys.stdlib_module_names)


def sources(*packages: str) -> Iterator[Path]:
    """Every module of the packages (dotted names), sorted."""
    for package in packages:
        files = sorted((ROOT / package.replace(".", "/")).rglob("*.py"))
        assert files, package
        yield from files


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@dataclass(frozen=True)
class Import:
    module: str  # `from streamdb import errors` counts as `streamdb.errors`
    lazy: bool  # inside a function, or under `if TYPE_CHECKING:`


def imports(path: Path, package: str | None = None) -> list[Import]:
    """The imports of a module, by full names, relative ones resolved against `package`
    (by default the package the file is in: `streamdb/engine/x.py` -> streamdb.engine)."""
    found: list[Import] = []
    anchors = (package or ".".join(rel(path).split("/")[:-1])).split(".")

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    visit_one(stmt, True)
                for stmt in child.orelse:
                    visit_one(stmt, lazy)
                continue
            visit_one(child, inner)

    def visit_one(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                anchor = anchors[: len(anchors) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base in ("streamdb", "wal") or (node.level and not node.module):
                found.extend(Import(f"{base}.{a.name}", lazy) for a in node.names)
            else:
                found.append(Import(base, lazy))
        visit(node, lazy)

    visit(tree(path), False)
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# ---- 1-3: wal, the codecs, storage ----------------------------------------------------------


def test_wal_never_imports_streamdb() -> None:
    for path in sources("wal"):
        bad = {i.module for i in imports(path) if top(i.module) == "streamdb"}
        assert not bad, f"{rel(path)} imports {bad}"


def test_wal_imports_only_the_standard_library_and_its_declared_dependency() -> None:
    allowed = STDLIB | {"wal", "crc32c"}
    for path in sources("wal"):
        extra = {i.module for i in imports(path) if top(i.module) not in allowed}
        assert not extra, f"{rel(path)} imports {extra}"


CODEC_LIBRARIES = frozenset({"numpy", "lz4", "zstandard", "xxhash", "crc32c"})
CODEC_LAZY_LIBRARIES = {"streamdb.arrow": frozenset({"pyarrow"})}  # optional: interop


def test_the_codecs_import_only_the_errors_themselves_and_their_libraries() -> None:
    for package in ("streamdb.framing", "streamdb.arrow"):
        lazy_ok = CODEC_LAZY_LIBRARIES.get(package, frozenset())
        for path in sources(package):
            for i in imports(path):
                if top(i.module) in ("streamdb", "wal"):
                    ok = i.module == "streamdb.errors" or within(i.module, package)
                else:
                    ok = top(i.module) in STDLIB | CODEC_LIBRARIES or (
                        i.lazy and top(i.module) in lazy_ok)
                assert ok, f"{rel(path)} imports {i.module}" + " (lazily)" * i.lazy


def test_storage_imports_nothing_above_it() -> None:
    allowed = ("streamdb.errors", "streamdb.errmap", "streamdb.storage", "wal")
    for path in sources("streamdb.storage"):
        bad = {i.module for i in imports(path)
               if top(i.module) in ("streamdb", "wal")
               and not any(within(i.module, a) for a in allowed)}
        assert not bad, f"{rel(path)} imports {bad}"


# ---- 4: the parts of streamdb ---------------------------------------------------------------

# The façade -> engine -> storage rule: TO BE FILLED IN WHEN streamdb/engine/ LANDS.
#
# A module's *part* is the package it lives in under `streamdb` ("storage", "framing",
# "arrow", later "engine"), or, for a module directly in `streamdb/`, its own name
# ("errors", "database", ...). A part listed here may import only itself and the parts
# given; a part not listed is not checked yet (today: the façade and the engine's modules,
# which all live directly in streamdb/). When streamdb/engine/ lands, add "engine" (what
# it may use: storage, the codecs and the shared leaves) and the façade's modules (the
# engine, not storage), so that imports point down only. `wal` is left to rules 1-3.
PART_EDGES: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "errmap": frozenset({"errors"}),
    "checks": frozenset({"errors"}),
    "paths": frozenset({"errors"}),
    "config": frozenset({"errors", "checks"}),
    "framing": frozenset({"errors"}),
    "arrow": frozenset({"errors"}),
    "storage": frozenset({"errors", "errmap"}),
    # The engine owns the state; it knows nothing of the features or the façade above it.
    "engine": frozenset({"errors", "errmap", "config", "paths", "storage"}),
    # Features on the engine's public methods (and the storage layer's types).
    "reads": frozenset({"errors", "errmap", "checks", "paths", "engine", "storage", "logs",
                        "arrow"}),
    "logs": frozenset({"errors", "errmap", "paths", "engine", "storage", "framing"}),
    "tables": frozenset({"errors", "paths", "storage", "logs", "arrow", "database"}),
    "fileobj": frozenset({"errors", "engine", "storage", "database"}),
    "maintenance": frozenset({"errors", "errmap", "engine", "storage"}),
    "backup": frozenset({"errors", "errmap", "engine", "storage"}),
    # The façade: argument checks, and delegation to the engine and the features.
    "database": frozenset({"errors", "checks", "config", "paths", "engine", "storage",
                           "reads", "logs", "tables", "maintenance", "backup", "fileobj",
                           "arrow"}),
    "dbm": frozenset({"errors", "config", "database", "checks", "paths"}),
    "shelve": frozenset({"errors", "config", "dbm", "database"}),
}


def part(module_or_path: str) -> str:
    """The part of `streamdb.x.y` or of `streamdb/x/y.py`: "x"; of `streamdb`: ""."""
    pieces = module_or_path.removesuffix(".py").replace("/", ".").split(".")
    return pieces[1] if len(pieces) > 1 and pieces[1] != "__init__" else ""


def test_the_parts_of_streamdb_import_only_the_parts_they_may() -> None:
    for path in sources("streamdb"):
        mine = part(rel(path))
        if mine not in PART_EDGES:
            continue
        for i in imports(path):
            if top(i.module) == "streamdb":
                theirs = part(i.module)
                assert theirs == mine or theirs in PART_EDGES[mine], (
                    f"{rel(path)} ({mine}) imports {i.module} ({theirs})")


def test_the_engine_has_its_edges_once_it_exists() -> None:
    if (ROOT / "streamdb" / "engine").is_dir():
        assert "engine" in PART_EDGES, (
            "streamdb/engine/ has landed: fill in PART_EDGES (tests/test_layers.py) with "
            "the parts the engine and the façade may import")


def test_every_part_with_edges_exists() -> None:
    parts = {part(rel(p)) for p in sources("streamdb")}
    assert set(PART_EDGES) <= parts, set(PART_EDGES) - parts
    assert all(edges <= parts for edges in PART_EDGES.values())


# ---- 5: only the file layer touches the OS -------------------------------------------------

OS_MODULES = frozenset({"mmap", "fcntl", "shutil", "tempfile", "pathlib", "posix", "nt",
                        "msvcrt", "_io"})
# Functions of os (and os.path) that touch files, directories or descriptors. Process,
# environment and pure path functions (getpid, fspath, path.join, path.abspath) are fine.
OS_FILE_FUNCTIONS = frozenset({
    "open", "close", "closerange", "read", "write", "pread", "pwrite", "preadv", "pwritev",
    "readv", "writev", "lseek", "fstat", "stat", "lstat", "fstatvfs", "statvfs", "truncate",
    "ftruncate", "fsync", "fdatasync", "sync", "replace", "rename", "renames", "remove",
    "unlink", "rmdir", "removedirs", "listdir", "scandir", "walk", "fwalk", "mkdir",
    "makedirs", "posix_fallocate", "posix_fadvise", "link", "symlink", "readlink", "dup",
    "dup2", "sendfile", "copy_file_range", "splice", "chmod", "fchmod", "lchmod", "chown",
    "fchown", "lchown", "utime", "access", "mkfifo", "mknod", "memfd_create", "fdopen",
    "pipe", "pipe2", "openpty", "chdir", "fchdir", "chroot", "lockf", "get_inheritable",
    "set_inheritable", "get_blocking", "set_blocking", "device_encoding", "isatty",
})
OS_PATH_FILE_FUNCTIONS = frozenset({
    "exists", "lexists", "isfile", "isdir", "islink", "ismount", "isjunction", "getsize",
    "getmtime", "getatime", "getctime", "samefile", "sameopenfile", "realpath",
})
IO_OPENERS = frozenset({"open", "open_code", "FileIO"})


def os_uses(path: Path) -> set[str]:
    """What a module does with the OS, as names: an imported OS module ("mmap"), a file
    function of os ("os.fstat", also through `from os import fstat` or an alias),
    `os.path.exists`, the builtin or io `open`. References count, calls or not."""
    module = tree(path)
    used: set[str] = set()
    os_names: set[str] = set()
    path_names: set[str] = set()
    io_names: set[str] = set()
    module_binds_open = False
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if top(alias.name) in OS_MODULES:
                    used.add(top(alias.name))
                elif alias.name == "os.path" and alias.asname:
                    path_names.add(alias.asname)
                elif top(alias.name) == "os":
                    os_names.add(bound)
                elif alias.name == "io":
                    io_names.add(bound)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if top(node.module) in OS_MODULES:
                used.add(top(node.module))
            for alias in node.names:
                name = alias.asname or alias.name
                if name == "open":
                    module_binds_open = True
                if node.module == "os" and alias.name == "path":
                    path_names.add(name)
                elif node.module == "os" and alias.name in OS_FILE_FUNCTIONS:
                    used.add(f"os.{alias.name}")
                elif node.module == "os.path" and alias.name in OS_PATH_FILE_FUNCTIONS:
                    used.add(f"os.path.{alias.name}")
                elif node.module in ("io", "builtins") and alias.name in IO_OPENERS:
                    used.add(f"{node.module}.{alias.name}")
    for stmt in module.body:  # a module-level `def open` (streamdb.open) is not the builtin
        if isinstance(stmt, ast.FunctionDef | ast.ClassDef) and stmt.name == "open":
            module_binds_open = True
        if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "open" for t in stmt.targets):
            module_binds_open = True
    for node in ast.walk(module):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = node.value.id
            if owner in os_names and node.attr in OS_FILE_FUNCTIONS:
                used.add(f"os.{node.attr}")
            elif owner in path_names and node.attr in OS_PATH_FILE_FUNCTIONS:
                used.add(f"os.path.{node.attr}")
            elif owner in io_names and node.attr in IO_OPENERS:
                used.add(f"io.{node.attr}")
            elif owner == "builtins" and node.attr in IO_OPENERS:
                used.add(f"builtins.{node.attr}")
        elif (isinstance(node, ast.Attribute) and node.attr in OS_PATH_FILE_FUNCTIONS
              and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
              and isinstance(node.value.value, ast.Name) and node.value.value.id in os_names):
            used.add(f"os.path.{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "open" and not module_binds_open):
            used.add("open")
    return used


@dataclass(frozen=True)
class OsException:
    places: tuple[str, ...]  # where the module lives (more than one while it moves)
    uses: frozenset[str]  # as os_uses() names them
    why: str


OS_EXCEPTIONS = [
    OsException(("wal/vfs.py",), frozenset(), "the file layer itself: anything goes"),
    OsException(
        ("streamdb/framing/recover.py",), frozenset({"open", "os.fsync"}),
        "recover() works on the user's file: a seekable binary file object (its file "
        "interface is Python's io protocol, so it runs on in-memory files too), or a path "
        "it opens with open() and fsyncs after cutting a torn tail. A codec imports only "
        "streamdb.errors (rule 2), not wal.vfs, and no database file passes through it"),
    OsException(
        ("streamdb/arrow/reader.py",), frozenset({"open", "mmap", "os.fstat"}),
        "read_ipc() reads the user's Arrow file: a path it maps, or a file object's "
        "descriptor it maps on request (columns are views of the map); as for framing, a "
        "codec, on files no database owns"),
    OsException(
        ("streamdb/arrow/writer.py",), frozenset({"open", "os.remove"}),
        "write_ipc() writes the user's Arrow file at a path, and removes what it wrote "
        "when the write fails; a codec, on files no database owns"),
    OsException(
        ("streamdb/fileobj.py", "streamdb/engine/fileobj.py"), frozenset({"tempfile"}),
        "a document writer spools what it is given in a SpooledTemporaryFile until it "
        "commits: scratch memory that spills to a private temporary file, never database "
        "state, so crash and fault tests have nothing to simulate in it"),
    OsException(
        ("streamdb/dbm.py",), frozenset({"os.open", "os.stat", "os.path.exists"}),
        "the dbm module's own OsVFS subclass (_ModeVFS) opens files with a mode, and "
        "dbm.open() reads the database file's permissions and tests its existence as "
        "dbm.open's flags require; OsVFS(mode=...) now does what _ModeVFS does, so the "
        "os.open can go when dbm.py uses it"),
]


def exception_for(name: str) -> OsException | None:
    return next((e for e in OS_EXCEPTIONS if name in e.places), None)


def test_only_the_file_layer_touches_the_os() -> None:
    for path in sources("wal", "streamdb"):
        used = os_uses(path)
        allowed = exception_for(rel(path))
        if allowed is not None and not allowed.uses:
            continue  # the file layer
        extra = used - (allowed.uses if allowed is not None else frozenset())
        assert not extra, (
            f"{rel(path)} touches the OS directly ({sorted(extra)}): go through wal.vfs, "
            f"or list it in OS_EXCEPTIONS with the reason")


def test_every_os_exception_is_still_needed() -> None:
    for exception in OS_EXCEPTIONS:
        present = [p for p in exception.places if (ROOT / p).is_file()]
        assert len(present) == 1, (exception.places, present)
        used = os_uses(ROOT / present[0])
        if exception.uses:
            assert exception.uses <= used, (
                f"{present[0]} no longer uses {sorted(exception.uses - used)}: "
                f"shrink its entry in OS_EXCEPTIONS")
        else:
            assert used, present[0]


def test_the_checkers_see_every_way_in(tmp_path: Path) -> None:
    """The detectors themselves, on modules written for them: each line is one way in."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\nimport os.path as osp\nimport io as _io2\nimport mmap\n"
        "from os import pread, path\nfrom fcntl import flock\nimport shutil.util\n"
        "os.fstat(0)\nosp.exists('x')\npath.isfile('x')\nos.path.getsize('x')\n"
        "cb = os.replace\nopen('x')\n_io2.FileIO('x')\n"
        "os.getpid()\nos.path.join('a', 'b')\nos.fspath('x')\n")
    assert os_uses(probe) == {
        "os.fstat", "os.path.exists", "os.path.isfile", "os.path.getsize", "os.replace",
        "os.pread", "open", "io.FileIO", "mmap", "fcntl", "shutil"}
    relative = tmp_path / "relative.py"
    relative.write_text("from . import txn\nfrom .reads import x\nfrom ..storage import pager\n"
                        "from .. import errors\n")
    assert [i.module for i in imports(relative, "streamdb.engine")] == [
        "streamdb.engine.txn", "streamdb.engine.reads", "streamdb.storage",
        "streamdb.errors"]
    shadowed = tmp_path / "shadowed.py"
    shadowed.write_text("def open(p):\n    return p\n\nopen('x')\n")
    assert os_uses(shadowed) == set()
