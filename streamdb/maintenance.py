"""`Database.verify`: every checksum and structure checked through the engine's public
methods, and the path index rebuilt from the document records when it is damaged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamdb import errors as E
from streamdb.errmap import io_error

if TYPE_CHECKING:
    from streamdb.engine import Engine
    from streamdb.storage.catalog import Catalog


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    documents: int
    paths: int
    problems: tuple[str, ...]
    rebuilt: bool


def verify(engine: Engine) -> VerifyReport:
    """`Database.verify`, the engine's writer lock held."""
    problems = engine.header_problems()
    damaged: set[str] = set()
    for name in engine.header.trees:
        try:
            engine.tree(name)._check()
        except E.CorruptionError as exc:
            problems.append(f"{name} tree: {exc}")
            damaged.add(name)
    if "docs" in damaged:
        problems.append("document records are damaged: restore from a backup")
        return VerifyReport(False, 0, 0, tuple(problems), False)
    catalog = engine.catalog
    docs, owners = verify_documents(engine, problems)
    if not damaged & {"paths", "suffix"}:
        problems += index_disagreements(catalog)
    rebuild = bool(damaged & {"paths", "suffix"}) or any(
        p.startswith("index:") for p in problems)
    problems += _overlaps(owners + [(p, 1, "tree page") for p in engine.tree_pages()]
                          + [(s, c, "free") for s, c in engine.free_extents()])
    if rebuild and not engine.readonly and engine.failed is None:
        engine.rebuild_index(sorted((key, doc.doc_id.bytes) for doc in catalog.iter_docs()
                                    for key in doc.paths))
    return VerifyReport(not problems, docs, engine.catalog.count(), tuple(problems),
                        rebuild and not engine.readonly)

def verify_documents(engine: Engine, problems: list[str]
                     ) -> tuple[int, list[tuple[int, int, str]]]:
    """Every chunk of every kept version read and checked; (documents, page owners)."""
    owners: list[tuple[int, int, str]] = []
    count = 0
    published = engine.published()
    for doc in engine.catalog.iter_docs():
        count += 1
        name = doc.paths[0].decode("utf-8", "replace") if doc.paths else str(doc.doc_id)
        for v in doc.versions:
            owners += [(s, c, f"{name} v{v.version}") for s, c in v.extents]
            try:
                reader = engine.doc_reader(published, name, v)
            except E.CorruptionError as exc:  # not decoded: it claims too much
                problems.append(f"document {name} version {v.version}: {exc}")
                continue
            reader.verify = True
            for i in range(reader.chunk_count()):  # writer lock held
                try:
                    reader.stored_chunk(i, verify=True)
                    reader.chunk(i)
                except E.CorruptionError as exc:
                    problems.append(f"document {name} version {v.version}: {exc}")
                    break
                except OSError as exc:
                    raise io_error(exc, f"verifying {name}") from exc
    return count, owners

def index_disagreements(catalog: Catalog) -> list[str]:
    """Paths and document records that do not agree."""
    problems = []
    seen = 0
    for key, doc_id in catalog.path_items():
        seen += 1
        doc = catalog.doc(doc_id)
        if doc is None or key not in doc.paths:
            problems.append(f"index: {key!r} names a document that does not list it")
    for doc in catalog.iter_docs():
        problems.extend(
            f"index: {key!r} of document {doc.doc_id} is not indexed"
            for key in doc.paths
            if catalog.lookup(key) != doc.doc_id.bytes
        )
    if seen != catalog.count():
        problems.append(f"index: {seen} paths found, {catalog.count()} counted")
    if len(list(catalog.reversed_keys())) != seen:
        problems.append("index: the suffix index does not match the paths")
    return problems

def _overlaps(owners: list[tuple[int, int, str]]) -> list[str]:
    """Problems for pages claimed twice. O(n log n)."""
    problems = []
    end, last = -1, ""
    for start, count, who in sorted(owners):
        if start < end:
            problems.append(f"page {start} belongs to both {last} and {who}")
        if start + count > end:
            end, last = start + count, who
    return problems[:100]


