"""Maintenance that rewrites storage: checkpoints, verification and index rebuild, backup
and compaction. Each function takes an open `Database` and runs with its lock held (the
`Database` methods of the same names take it); they are kept here so that the database
module reads as the API it serves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from streamdb import errors as E
from streamdb.errmap import io_error as _io
from streamdb.storage import btree
from streamdb.storage.catalog import KIND_DOCS, KIND_FREE, KIND_PATHS, KIND_SUFFIX
from streamdb.storage.docio import CHUNK, DocReader, Ingest
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.logfiles import remove_log
from streamdb.storage.pager import Pager
from streamdb.storage.records import OP_BIND, OP_VERSION, Op

if TYPE_CHECKING:
    from streamdb.database import Database


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    documents: int
    paths: int
    problems: tuple[str, ...]
    rebuilt: bool


def write_checkpoint(db: Database, *, force: bool = False) -> None:
    catalog, space, pager = db._catalog, db._space, db._pager
    if not (force or catalog.d_docs or catalog.d_paths or space.pending
            or db._applied_lsn != db._header.checkpoint_lsn):
        return  # nothing since the last checkpoint
    leaf_max = db._page_size // 4
    # 1. Bytes that travelled in the log and are too big for a tree leaf go to pages.
    for key, doc in list(catalog.d_docs.items()):
        for v in doc.versions if doc is not None else ():
            if v.inline is not None and len(v.inline) > leaf_max:
                pages = -(-len(v.inline) // db._page_size)
                start = space.allocate(pages)
                pager.write_pages(start, v.inline.ljust(pages * db._page_size, b"\x00"))
                catalog.replace_version(key, v, replace(v, inline=None,
                                                        extents=((start, pages),)))
    # 2. New trees, copy-on-write, in free pages.
    old_pages = tree_pages(db, db._header.trees)
    refs: dict[str, btree.TreeRef] = {}
    for name, items in catalog.merged_items().items():
        refs[name], _ = btree.build(db._store, items, kind=_KINDS[name])
    # 3. The free map as it will be once the new header is durable, stored in pages
    #    past the end so that writing it does not change it.
    will_be_free = FreeSpace(space.file_pages, space.max_pages)
    for start, count in space.extents() + space.pending:
        will_be_free.free(start, count)
    for page in old_pages:
        will_be_free.free(page, 1)
    db._store.at_end = True
    try:
        items = ((s.to_bytes(8, "big"), c.to_bytes(8, "little"))
                 for s, c in will_be_free.extents())
        refs["free"], _ = btree.build(db._store, items, kind=KIND_FREE)
    finally:
        db._store.at_end = False
    pager.sync()
    # 4. The other header copy, then the log may forget what the trees now hold.
    header = db._header.next(checkpoint_lsn=db._applied_lsn,
                               file_pages=space.file_pages, trees=refs)
    pager.write_pages(header.generation % 2, header.pack().ljust(db._page_size, b"\x00"))
    pager.sync()
    db._header = header
    # The log may hold less than the header says (it is new, or was removed after a
    # clean close): it can only recycle what it holds.
    db._wal.checkpoint(min(db._applied_lsn, db._wal.committed_lsn))
    # 5. What the old header referenced is garbage now.
    space.release_pending()
    for page in old_pages:
        space.free(page, 1)
    catalog.set_base(refs)
    db._logged_bytes = 0
    db._counters["checkpoints"] += 1

def tree_pages(db: Database, refs: dict[str, btree.TreeRef]) -> list[int]:
    """Every page of the given trees. A damaged tree's pages cannot all be found: those
    stay allocated (leaked until `compact`) rather than risk freeing a live page."""
    pages: list[int] = []
    for name, ref in refs.items():
        try:
            pages.extend(btree.Tree(db._store, ref, kind=_KINDS[name]).pages())
        except E.CorruptionError:
            continue
    return pages

def verify(db: Database) -> VerifyReport:
    """`Database.verify`, lock held."""
    with db._lock:
        db._check_open()
        problems: list[str] = []
        damaged: set[str] = set()
        for name, ref in db._header.trees.items():
            try:
                btree.Tree(db._store, ref, kind=_KINDS[name])._check()
            except E.CorruptionError as exc:
                problems.append(f"{name} tree: {exc}")
                damaged.add(name)
        if "docs" in damaged:
            problems.append("document records are damaged: restore from a backup")
            return VerifyReport(False, 0, 0, tuple(problems), False)
        docs, owners = verify_documents(db, problems)
        if not damaged & {"paths", "suffix"}:
            problems += index_disagreements(db)
        rebuild = bool(damaged & {"paths", "suffix"}) or any(
            p.startswith("index:") for p in problems)
        problems += _overlaps(owners + [(p, 1, "tree page") for p in
                                        tree_pages(db, db._header.trees)]
                              + [(s, c, "free") for s, c in db._space.extents()])
        if rebuild and not db.readonly and db._failed is None:
            rebuild_index(db)
        return VerifyReport(not problems, docs, db._catalog.count, tuple(problems),
                            rebuild and not db.readonly)

def verify_documents(db: Database, problems: list[str]) -> tuple[int, list[tuple[int, int, str]]]:
    owners: list[tuple[int, int, str]] = []
    count = 0
    for doc in db._catalog.iter_docs():
        count += 1
        name = doc.paths[0].decode("utf-8", "replace") if doc.paths else str(doc.doc_id)
        for v in doc.versions:
            owners += [(s, c, f"{name} v{v.version}") for s, c in v.extents]
            reader = DocReader(db._pager, v, name, verify=True)
            for i in range(reader.chunk_count()):
                try:
                    reader.chunk(i)
                except E.CorruptionError as exc:
                    problems.append(f"document {name} version {v.version}: {exc}")
                    break
                except OSError as exc:
                    raise _io(exc, f"verifying {name}") from exc
    return count, owners

def index_disagreements(db: Database) -> list[str]:
    problems = []
    seen = 0
    for key, doc_id in db._catalog.path_items():
        seen += 1
        doc = db._catalog.doc(doc_id)
        if doc is None or key not in doc.paths:
            problems.append(f"index: {key!r} names a document that does not list it")
    for doc in db._catalog.iter_docs():
        problems.extend(
            f"index: {key!r} of document {doc.doc_id} is not indexed"
            for key in doc.paths
            if db._catalog.lookup(key) != doc.doc_id.bytes
        )
    if seen != db._catalog.count:
        problems.append(f"index: {seen} paths found, {db._catalog.count} counted")
    if len(list(db._catalog.reversed_keys())) != seen:
        problems.append("index: the suffix index does not match the paths")
    return problems

def rebuild_index(db: Database) -> None:
    """Replace the paths and suffix trees with ones built from the document records,
    then checkpoint. Lock held."""
    mapping = {key: doc.doc_id.bytes for doc in db._catalog.iter_docs()
               for key in doc.paths}
    catalog = db._catalog
    docs_delta = dict(catalog.d_docs)
    catalog.set_base(dict(db._header.trees, paths=btree.EMPTY, suffix=btree.EMPTY))
    catalog.d_docs = docs_delta
    for key, doc_id in mapping.items():
        catalog.d_paths[key] = doc_id
        catalog.d_suffix[key[::-1]] = True
    catalog.count = len(mapping)
    db._checkpoint(force=True)

def backup(db: Database, dest: str | os.PathLike[str]) -> None:
    """Write a consistent copy of the database to `dest` (a single .db file: it is
    checkpointed first). Written under a temporary name, fsynced, then renamed, so
    `dest` is never half written. O(file size); blocks writers meanwhile."""
    target = os.fspath(dest)
    with db._lock:
        db._check_open()
        if not db.readonly and db._failed is None:
            db._checkpoint()
        tmp = target + ".tmp-backup"
        try:
            out = db._vfs.open(tmp, create=True)
            try:
                out.truncate(0)
                size = db._space.file_pages * db._page_size
                for offset in range(0, size, 1 << 20):
                    out.pwritev([db._pager.read(offset, min(1 << 20, size - offset))],
                                offset)
                out.sync()
            finally:
                out.close()
            db._vfs.rename(tmp, target)
            db._vfs.sync_dir(os.path.dirname(os.path.abspath(target)))
        except OSError as exc:
            raise _io(exc, f"backing up to {target}") from exc

def compact(db: Database) -> None:
    """Rewrite the database into a new file holding only what is live, each version
    contiguous, and rename it over this one. Space of freed pages goes back to the
    file system. Views from `get_view` stay valid (the old file is renamed over, never
    truncated). O(live data)."""
    with db._lock:
        db._check_writable()
        db._checkpoint()
        tmp = db.path + ".compact"
        try:
            if db._vfs.exists(tmp):  # left by a compaction that did not finish
                db._vfs.remove(tmp)
            remove_log(db._vfs, tmp)
            fresh = type(db)(tmp, replace(db.config, page_size=db._page_size), vfs=db._vfs)
        except OSError as exc:
            raise _io(exc, f"compacting {db.path}") from exc
        try:
            copy_into(db, fresh)
            fresh._applied_lsn = db._applied_lsn  # LSNs keep growing
            fresh._checkpoint(force=True)
            fresh._wal.close()
            fresh._remove_log()
            # Its descriptor, which holds the lock, is taken over before the file takes
            # the name, so no other writer can slip in.
            file = fresh._pager.file
            fresh._closed = True
            db._vfs.rename(tmp, db.path)
            db._vfs.sync_dir(os.path.dirname(os.path.abspath(db.path)))
        except BaseException:
            if not fresh._closed:
                fresh._closed = True
                fresh._wal.close()
                fresh._pager.close()
            raise
        db._pager.close()
        db._header = db._read_or_create_header(file)
        db._pager = Pager(file, db._page_size, use_mmap=db.config.use_mmap)
        db._reload_state()

def copy_into(db: Database, fresh: Database) -> None:
    """Every document, every kept version (oldest first), with ids, numbers and times."""
    for doc in db._catalog.iter_docs():
        for v in reversed(doc.versions):
            ingest = Ingest(fresh._pager, fresh._space, v.checksum, max(v.size, 1))
            size, sums, inline = ingest.run(db._stream(doc.paths[0].decode(), v, CHUNK))
            assert size == v.size and sums == v.sums
            copy = replace(v, extents=tuple(ingest.extents), inline=inline)
            fresh._catalog.apply(Op(OP_VERSION, doc.doc_id, version=copy))
        for key in doc.paths:
            fresh._catalog.apply(Op(OP_BIND, doc.doc_id, path=key))
    fresh._pager.sync()



_KINDS = {"paths": KIND_PATHS, "suffix": KIND_SUFFIX, "docs": KIND_DOCS, "free": KIND_FREE}


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


