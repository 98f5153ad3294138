"""Maintenance that rewrites storage: checkpoints, verification and index rebuild, backup
and compaction. Each function takes an open `Database` and runs with its lock held (the
`Database` methods of the same names take it); they are kept here so that the database
module reads as the API it serves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from streamdb import errors as E
from streamdb.errmap import io_error as _io
from streamdb.storage import btree
from streamdb.storage.catalog import KIND_DOCS, KIND_FREE, KIND_PATHS, KIND_SUFFIX
from streamdb.storage.docio import DocReader, Ingest
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.header import read_copies
from streamdb.storage.logfiles import remove_log
from streamdb.storage.pager import Pager
from streamdb.storage.readers import remove_table
from streamdb.storage.records import OP_BIND, OP_VERSION, DocRecord, Op

if TYPE_CHECKING:
    from streamdb.database import Database


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    documents: int
    paths: int
    problems: tuple[str, ...]
    rebuilt: bool


def write_checkpoint(db: Database, *, force: bool = False,
                     index: dict[str, Iterator[tuple[bytes, bytes]]] | None = None) -> None:
    """D4, writer lock held and no transaction open. New trees of the published state go
    to free pages; the header that names them is written and fsynced; then the log may
    recycle, and a new catalog over the new trees is published. Readers of the old one
    go on reading it: its pages are freed (deferred) with this checkpoint's stamp.
    `index` replaces the paths and suffix streams (an index rebuild)."""
    catalog, space, pager = db._catalog, db._space, db._pager
    at = db._applied_lsn
    if not (force or catalog.d_docs or catalog.d_paths or space.pending
            or at != db._header.checkpoint_lsn or space.free_at_end()):
        return  # nothing since the last checkpoint
    db._release_space()  # the new trees may use pages freed by durable changes
    # Free pages at the end of the file are given back to the file system (cut off at the
    # end, once the new header is durable); new pages go before them.
    space.trim_end()
    leaf_max = db._page_size // 4

    def to_pages(doc: DocRecord) -> DocRecord:
        """Bytes that travelled in the log and are too big for a tree leaf go to pages."""
        versions = []
        for v in doc.versions:
            if v.inline is not None and len(v.inline) > leaf_max:
                pages = -(-len(v.inline) // db._page_size)
                start = space.allocate(pages)
                pager.write_pages(start, v.inline.ljust(pages * db._page_size, b"\x00"))
                v = replace(v, inline=None, extents=((start, pages),))
            versions.append(v)
        return replace(doc, versions=tuple(versions))

    # 1. New trees, copy-on-write, in free pages.
    old_pages = tree_pages(db, db._header.trees)
    refs: dict[str, btree.TreeRef] = {}
    streams = catalog.merged_items(at, docs=to_pages)
    streams.update(index or {})
    for name, items in streams.items():
        refs[name], _ = btree.build(db._store, items, kind=_KINDS[name])
    # 2. The free map as it will be once the new header is durable and no reader holds an
    #    older state.
    space.trim_end()  # what step 1 gave back at the end
    refs["free"] = _write_free_tree(db, old_pages)
    pager.sync()
    # 3. Both header copies (H1 in storage/header.py), then the log may forget what the
    #    trees now hold.
    header = db._header.next(checkpoint_lsn=at, file_pages=space.file_pages, trees=refs)
    db._write_headers(header, header.generation % 2)
    db._header = header
    assert db._wal is not None
    # The log may hold less than the header says (it is new, or was removed after a
    # clean close): it can only recycle what it holds.
    db._wal.checkpoint(min(at, db._wal.committed_lsn))
    # 4. What only the old header referenced is garbage once no reader holds an older state.
    stamp = (header.generation, at)
    space.durable = stamp
    for page in old_pages:
        space.defer(page, 1, stamp)
    db._catalog = db._new_catalog(refs)
    db._publish()
    db._release_space()
    end = space.file_pages * db._page_size
    if pager.file.size() > end:
        pager.truncate(end)  # nothing any header or reader uses lies past the end (D1)
    db._logged_bytes = 0
    db._count("checkpoints")


def _write_free_tree(db: Database, old_pages: list[int]) -> btree.TreeRef:
    """The free tree of the checkpoint being written: the extents free once its header is
    durable (free now, pending, and the old trees' pages), stored in pages free now (small
    extents first, `FreeSpace.take_small`), so the file does not grow by a tree per
    checkpoint. Its own pages must not be in the map it holds, and how many it needs
    depends on the map: pages are taken or given back until the count is stable (a page or
    two; a few rounds at most), else it goes past the end of the file, where writing it
    changes nothing. Pages past the end are taken too when no small extent is free. O(extents
    x list) per round."""
    space, page_size = db._space, db._page_size

    def items() -> list[tuple[bytes, bytes]]:
        will_be_free = FreeSpace(space.file_pages, space.max_pages)
        for start, count in space.extents() + [(s, c) for s, c, _ in space.pending]:
            will_be_free.free(start, count)
        for page in old_pages:
            will_be_free.free(page, 1)
        return [(s.to_bytes(8, "big"), c.to_bytes(8, "little"))
                for s, c in will_be_free.extents()]

    reserved: list[int] = []
    for _ in range(6):
        need = _pages_needed(items(), page_size)
        if need == len(reserved):
            return btree.build(_Reserved(db._store, reserved), items(),
                               kind=KIND_FREE)[0]
        if need > len(reserved):
            reserved += space.take_small(need - len(reserved))
            if len(reserved) < need:  # no more free pages: the rest past the end
                end = space.file_pages
                space.file_pages += need - len(reserved)
                reserved += range(end, space.file_pages)
        else:
            for page in reserved[need:]:
                space.free(page, 1)
            del reserved[need:]
    for page in reserved:  # no stable count: give them back and write past the end
        space.free(page, 1)
    db._store.at_end = True
    try:
        return btree.build(db._store, items(), kind=KIND_FREE)[0]
    finally:
        db._store.at_end = False


class _Counter:
    """A page store that writes nothing: counts the pages a build would take."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.pages = 0

    def page_count(self) -> int:
        return self.pages + 1

    def read_page(self, page_no: int) -> memoryview:
        raise AssertionError("a build reads nothing")

    def allocate(self, n_pages: int) -> int:
        self.pages += n_pages
        return self.pages - n_pages + 1

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        return None


def _pages_needed(items: list[tuple[bytes, bytes]], page_size: int) -> int:
    counter = _Counter(page_size)
    btree.build(counter, items, kind=KIND_FREE)
    return counter.pages


class _Reserved:
    """The database's page store, but new pages come from `pages`, in order."""

    def __init__(self, store: btree.PageStore, pages: list[int]) -> None:
        self._store = store
        self._pages = iter(sorted(pages))
        self.page_size = store.page_size

    def page_count(self) -> int:
        return self._store.page_count()

    def read_page(self, page_no: int) -> memoryview:
        return self._store.read_page(page_no)  # type: ignore[return-value]

    def allocate(self, n_pages: int) -> int:
        assert n_pages == 1, "a free tree has no overflow values"
        return next(self._pages)

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        self._store.write_pages(page_no, data)

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
    """`Database.verify`, writer lock held."""
    problems = header_problems(db)
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
    return VerifyReport(not problems, docs, db._catalog.count(), tuple(problems),
                        rebuild and not db.readonly)

def header_problems(db: Database) -> list[str]:
    """Damaged header copies: those found (and rewritten) at open, and those found now. A
    writer also rewrites copies that do not both hold its current header (H4). A reader
    looks three times before it reports a copy that a checkpoint may be rewriting."""
    problems = [f"{p}; it was rewritten from the other copy at open" for p in db._header_damage]
    db._header_damage = []  # reported once
    for _ in range(1 if not db.readonly else 3):
        try:
            copies = read_copies(db._pager.file.pread)
        except (OSError, E.UnsupportedError) as exc:
            problems.append(f"the header copies cannot be read: {exc}")
            return problems
        if not copies.damage():
            break
    now = copies.damage()
    if db.readonly:
        return problems + now
    if copies.a != db._header or copies.b != db._header:
        try:
            db._write_headers(db._header, 0 if copies.a != db._header else 1)
        except OSError as exc:
            raise _io(exc, f"rewriting the headers of {db.path}") from exc
        problems += [f"{p}; it was rewritten from the current header" for p in now]
        if not now:
            problems.append("the header copies differed; both were rewritten")
    return problems


def verify_documents(db: Database, problems: list[str]) -> tuple[int, list[tuple[int, int, str]]]:
    owners: list[tuple[int, int, str]] = []
    count = 0
    for doc in db._catalog.iter_docs():
        count += 1
        name = doc.paths[0].decode("utf-8", "replace") if doc.paths else str(doc.doc_id)
        for v in doc.versions:
            owners += [(s, c, f"{name} v{v.version}") for s, c in v.extents]
            try:
                reader = db._doc_reader(db._pins.current, name, v)
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
    if seen != db._catalog.count():
        problems.append(f"index: {seen} paths found, {db._catalog.count()} counted")
    if len(list(db._catalog.reversed_keys())) != seen:
        problems.append("index: the suffix index does not match the paths")
    return problems

def rebuild_index(db: Database) -> None:
    """Replace the paths and suffix trees with ones built from the document records, by a
    checkpoint. Writer lock held."""
    mapping = sorted((key, doc.doc_id.bytes) for doc in db._catalog.iter_docs()
                     for key in doc.paths)
    suffix = sorted(key[::-1] for key, _ in mapping)
    db._checkpoint(force=True, index={"paths": iter(mapping),
                                      "suffix": ((k, b"") for k in suffix)})

def compact(db: Database) -> None:
    """Rewrite the database into a new file holding only what is live, each version
    contiguous, and rename it over this one. Space of freed pages goes back to the
    file system. States held before (snapshots, streams, views, reader processes) go on
    reading the old file, which is renamed over, never truncated. O(live data). Writer
    lock held."""
    db._checkpoint()
    tmp = db.path + ".compact"
    pager = write_copy(db, tmp)
    try:
        # The new file's descriptor, which holds the lock, is ours before the file takes
        # the name, so no other writer can slip in.
        db._vfs.rename(tmp, db.path)
        db._vfs.sync_dir(os.path.dirname(os.path.abspath(db.path)))
    except OSError as exc:
        pager.close()
        raise _io(exc, f"compacting {db.path}") from exc
    old = db._pager
    db._header = db._read_or_create_header(pager.file)
    db._pager = pager
    db._reload_state()
    db._retire(old)


def write_copy(db: Database, tmp: str) -> Pager:
    """A new database file at `tmp` holding the published state of `db`, with the same
    database id, the next header generations and the same LSNs, fsynced; its log and
    reader table removed. Returns its pager (the file open and locked). O(live data)."""
    try:
        if db._vfs.exists(tmp):  # left by a copy that did not finish
            db._vfs.remove(tmp)
        remove_log(db._vfs, tmp)
        remove_table(db._vfs, tmp)
        fresh = type(db)(tmp, replace(db.config, page_size=db._page_size), vfs=db._vfs)
    except OSError as exc:
        raise _io(exc, f"writing {tmp}") from exc
    try:
        copy_into(db, fresh)
        # Same database, next generations, LSNs growing on: stamps stay comparable. Both
        # header copies are rewritten, so neither names the file's creation-time id.
        fresh._header = replace(fresh._header, db_id=db._header.db_id,
                                generation=db._header.generation, flags=db._header.flags,
                                key_check=db._header.key_check)
        fresh._cipher = db._cipher
        fresh._applied_lsn = db._pins.current.lsn
        fresh._checkpoint(force=True)  # writes both copies (H1)
        fresh._detach()
    except BaseException:
        fresh._detach(close_file=True)
        raise
    return fresh._pager


def copy_into(db: Database, fresh: Database) -> None:
    """Every document of the published state, every kept version (oldest first), with
    ids, numbers and times. Catalog entries get LSN 0: they are the new file's base."""
    state = db._pins.acquire(op=False)
    try:
        for doc in state.catalog.iter_docs(state.lsn):
            for v in reversed(doc.versions):
                reader = DocReader(state.pager, v, str(doc.doc_id), verify=True)
                ingest = Ingest(fresh._pager, fresh._space, v.checksum, max(v.stored, 1))
                stored = ingest.copy(reader)  # as stored: codec, seals and sums unchanged
                copy = replace(v, extents=tuple(ingest.extents), inline=stored.inline)
                fresh._catalog.apply(Op(OP_VERSION, doc.doc_id, version=copy), 0)
            for key in doc.paths:
                fresh._catalog.apply(Op(OP_BIND, doc.doc_id, path=key), 0)
    finally:
        db._pins.release(state, op=False)
    fresh._catalog.mark()
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


