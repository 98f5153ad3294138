"""The engine's checkpoints (D4), space release (D1) and compaction.

D4, as `_write_checkpoint` carries it out, in this order:
1. New trees of the published state, copy-on-write, in free pages: the changed leaves and
   their ancestors rewritten, every other page shared (the current header's trees are
   untouched).
2. The free map as it will be once the new header is durable, in pages free now.
3. fsync the file; the header to one copy, fsync; the same header to the other copy, fsync
   (H1, storage/header.py). Only then may the log forget what the trees hold.
4. The old trees' pages wait (stamped with the new generation) until no reader holds an
   older state; free pages at the end of the file are cut off.
A crash anywhere before the first header write leaves the previous header and its trees,
and the log replays what they lack; between the two header writes, the newer copy and the
still unrecycled log; after, the new header.

Compaction writes the published state into a new file (no log, no reader table: it has
nothing to replay), renames it over the database and adopts it; readers of the old file go
on reading it until they let it go.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace

import wal
from streamdb import errors as E
from streamdb.engine.base import EngineFields
from streamdb.engine.pins import drain_all
from streamdb.errmap import io_error, wal_error
from streamdb.storage import btree
from streamdb.storage.catalog import (
    KIND_DOCS,
    KIND_FREE,
    KIND_PATHS,
    KIND_SUFFIX,
    LATEST,
    Catalog,
)
from streamdb.storage.docio import DocReader, Ingest
from streamdb.storage.freespace import FreeSpace, Stamp
from streamdb.storage.header import HEADER_PAGES, TREES
from streamdb.storage.logfiles import remove_log
from streamdb.storage.pager import Pager
from streamdb.storage.pagestore import PageStore
from streamdb.storage.readers import remove_table
from streamdb.storage.records import OP_BIND, OP_VERSION, DocRecord, Op

RELEASE_INTERVAL = 0.05  # seconds between reader-table scans when the file would grow
KINDS = {"paths": KIND_PATHS, "suffix": KIND_SUFFIX, "docs": KIND_DOCS, "free": KIND_FREE}


class Checkpoints(EngineFields):
    """The checkpoint, space and compaction part of `Engine`."""

    # -- checkpoints (D4) ---------------------------------------------------------------

    def _checkpoint(self, *, force: bool = False,
                    index: dict[str, Iterator[tuple[bytes, bytes]]] | None = None) -> None:
        """A checkpoint, writer lock held and no transaction open; a failure refuses
        writes until the database is reopened (what was committed is in the log)."""
        try:
            self._write_checkpoint(force=force, index=index)
        except OSError as exc:
            self._failed = f"a checkpoint failed ({exc})"
            raise io_error(exc, f"checkpointing {self.path}") from exc
        except wal.WalError as exc:
            self._failed = f"a checkpoint failed ({exc})"
            raise wal_error(exc, f"checkpointing {self.path}") from exc

    def _write_checkpoint(self, *, force: bool = False,
                          index: dict[str, Iterator[tuple[bytes, bytes]]] | None = None,
                          ) -> None:
        """D4 (module docstring). `index` replaces the paths and suffix streams (an index
        rebuild). O(changes x log n) for the trees, O(free extents) for the free tree.
        Raises OSError, WalError, CorruptionError (a damaged tree page met on the way)."""
        catalog, space, pager = self._catalog, self._space, self._pager
        at = self._applied_lsn
        if not (force or catalog.d_docs or catalog.d_paths or space.pending
                or at != self._header.checkpoint_lsn or space.free_at_end()):
            return  # nothing since the last checkpoint
        self._release_space()  # the new trees may use pages freed by durable changes
        # Free pages at the end of the file are given back to the file system (cut off at
        # the end, once the new header is durable); new pages go before them.
        space.trim_end()
        leaf_max = self._page_size // 4
        moved = _PageWrites(pager)

        def to_pages(doc: DocRecord) -> DocRecord:
            """Bytes that travelled in the log and are too big for a leaf go to pages
            (written in runs of adjacent pages, one pwritev each, before the fsync)."""
            versions = []
            for v in doc.versions:
                if v.inline is not None and len(v.inline) > leaf_max:
                    pages = -(-len(v.inline) // self._page_size)
                    start = space.allocate(pages)
                    moved.add(start, pages, v.inline)
                    v = replace(v, inline=None, extents=((start, pages),))
                versions.append(v)
            return replace(doc, versions=tuple(versions))

        # 1. New trees, copy-on-write, in free pages: only the changed leaves and their
        #    ancestors are written (O(changes x log n)); every other page is shared with
        #    the current trees, which stay whole for their readers.
        old_free = self._header.trees["free"]
        written: list[int] = []
        try:
            if index is None:
                refs, old_pages = catalog.next_trees(at, docs=to_pages, written=written)
            else:  # an index rebuild: new paths and suffix trees, the docs tree updated
                old_pages = self._tree_pages({n: self._header.trees[n]
                                              for n in ("paths", "suffix")})
                refs = {name: btree.build(self._store, index[name], kind=KINDS[name],
                                          written=written)[0] for name in ("paths", "suffix")}
                refs["docs"], dropped, _ = catalog.docs.update(
                    catalog.changes(at, to_pages)["docs"], written=written)
                old_pages += dropped
            moved.flush()
        except BaseException:
            for page in written:  # nothing durable names them
                space.free(page, 1)
            raise
        old_pages += self._tree_pages({"free": old_free})
        # 2. The free map as it will be once the new header is durable (the old trees'
        #    pages the new ones do not share count as free in it).
        space.trim_end()  # what step 1 gave back at the end
        refs["free"] = write_free_tree(self._store, space, old_pages)
        pager.sync()
        # 3. Both header copies (H1), then the log may forget what the trees now hold.
        header = self._header.next(checkpoint_lsn=at, file_pages=space.file_pages, trees=refs)
        self._write_headers(header, header.generation % 2)
        self._header = header
        assert self._wal is not None
        # The log may hold less than the header says (it is new, or was removed after a
        # clean close): it can only recycle what it holds.
        self._wal.checkpoint(min(at, self._wal.committed_lsn))
        # 4. What only the old header referenced (the old trees' pages the new ones do not
        #    share) is garbage once no reader holds an older state.
        stamp = (header.generation, at)
        space.durable = stamp
        for page in old_pages:
            space.defer(page, 1, stamp)
        self._catalog = self._new_catalog(refs)
        self._publish(set())  # the same documents: cached locations stay
        self._release_space()
        end = space.file_pages * self._page_size
        if pager.file.size() > end:
            pager.truncate(end)  # nothing any header or reader uses lies past the end (D1)
        self._logged_bytes = 0
        self._count("checkpoints")

    def _tree_pages(self, refs: dict[str, btree.TreeRef]) -> list[int]:
        """Every page of the given trees. A damaged tree's pages cannot all be found: those
        stay allocated (leaked until `compact`) rather than risk freeing a live page."""
        pages: list[int] = []
        for name, ref in refs.items():
            try:
                pages.extend(btree.Tree(self._store, ref, kind=KINDS[name]).pages())
            except E.CorruptionError:
                continue
        return pages

    def rebuild_index(self, mapping: list[tuple[bytes, bytes]]) -> None:
        """Replace the paths and suffix trees with ones built from (path key, doc id)
        pairs, sorted, by a forced checkpoint. Writer lock held."""
        suffix = sorted(key[::-1] for key, _ in mapping)
        self._checkpoint(force=True, index={"paths": iter(mapping),
                                            "suffix": ((k, b"") for k in suffix)})

    def checkpoint(self) -> None:
        """`Database.checkpoint`."""
        with self._write_lock:
            self.check_writable()
            self.check_no_tx("checkpoint()")
            self._checkpoint()

    # -- space (D1) -----------------------------------------------------------------------

    def _defer_free(self, extents: tuple[tuple[int, int], ...], lsn: int) -> None:
        stamp = (self._header.generation, lsn)
        for start, count in extents:
            self._space.defer(start, count, stamp)

    def _oldest_reader(self) -> Stamp | None:
        """The oldest state any reader holds: in this process, or in the reader table."""
        assert self._table is not None
        drain_all()  # views dropped a moment ago, in any database of this process
        stamps = [s for s in (self._pins.oldest(),
                              self._table.oldest(self._header.db_id.bytes)) if s is not None]
        return min(stamps, default=None)

    def _release_space(self) -> None:
        """Make pending pages no reader can see allocatable (D1). Writer lock held."""
        self._last_scan = time.monotonic()
        self._space.release(self._oldest_reader())
        # Durable pages still pending are held by a reader: asking again at once is futile.
        self._scan_blocked = self._space.releasable()

    def _on_short(self) -> None:
        """The file would grow while freed pages wait (D1). Those whose change is durable
        are released if no reader sees them (unless a reader held them at the last look,
        less than RELEASE_INTERVAL ago). With durability "normal" or "off" they may still
        wait for the log's fsync: once they are a quarter of the file, the log is synced
        rather than the file grown."""
        space = self._space
        if not space.releasable():
            if (self._wal is None or self.readonly
                    or 4 * space.pending_pages() < space.file_pages):
                return
            try:
                self._wal.sync()
            except wal.WalError as exc:
                self._after_log_failure(exc)
                raise wal_error(exc, f"syncing the log of {self.path}") from exc
            self._note_durable()
            self._scan_blocked = False
        if not self._scan_blocked or time.monotonic() - self._last_scan >= RELEASE_INTERVAL:
            self._release_space()

    # -- compaction ---------------------------------------------------------------------

    def compact(self) -> None:
        """`Database.compact`: the published state into a new file renamed over this one,
        adopted; readers of the old file keep it until they let it go. O(live data)."""
        with self._write_lock:
            self.check_writable()
            self.check_no_tx("compact()")
            self._checkpoint()
            tmp = self.path + ".compact"
            pager = self.write_copy(tmp)
            try:
                # The new file's descriptor, which holds the lock, is ours before the file
                # takes the name, so no other writer can slip in.
                self._vfs.rename(tmp, self.path)
                self._vfs.sync_dir(os.path.dirname(os.path.abspath(self.path)))
            except OSError as exc:
                pager.close()
                raise io_error(exc, f"compacting {self.path}") from exc
            old = self._pager
            self._header = self._read_or_create_header(pager.file)
            self._pager = pager
            self._reload_state()
            self._retire(old)

    def write_copy(self, tmp: str) -> Pager:
        """A new database file at `tmp` holding the published state: every kept version of
        every document as stored (codec, seals and checksums unchanged, each chunk verified
        as it is copied, each version in one extent), trees over them, both header copies
        with this database's id, the next generation and the published LSN; fsynced.
        Returns its pager (the file open and locked). O(live data). Raises
        StorageIOError, StorageFullError, CorruptionError (a damaged chunk)."""
        vfs = self._vfs
        try:
            if vfs.exists(tmp):  # left by a copy that did not finish
                vfs.remove(tmp)
            remove_log(vfs, tmp)
            remove_table(vfs, tmp)
            file = vfs.open(tmp, create=True)
        except OSError as exc:
            raise io_error(exc, f"writing {tmp}") from exc
        # Written through a pager of its own (no map: the file is empty, and a pager's
        # read path is fixed when it is made); the pager returned maps the written file.
        pager = Pager(file, self._page_size, use_mmap=False, cache_pages=0)
        try:
            file.lock()
            space = FreeSpace(HEADER_PAGES, self._space.max_pages)
            store = PageStore(pager, space)
            catalog = Catalog(store, dict.fromkeys(TREES, btree.EMPTY), keep=1 << 30,
                              on_free=_nothing_freed, cache_pages=16)
            state = self._pins.acquire(op=False)
            try:
                _copy_documents(state.catalog.iter_docs(state.lsn), state.pager, pager,
                                space, catalog)
                lsn = state.lsn
            finally:
                self._pins.release(state, op=False)
            refs = {name: btree.build(store, items, kind=KINDS[name])[0]
                    for name, items in catalog.merged_items(LATEST).items()}
            refs["free"] = write_free_tree(store, space, [])
            pager.sync()
            # Same database, the next generation, LSNs growing on: stamps stay comparable.
            header = self._header.next(checkpoint_lsn=lsn, file_pages=space.file_pages,
                                       trees=refs)
            page = header.pack().ljust(self._page_size, b"\x00")
            pager.write(0, [page, page])
            pager.sync()
            vfs.sync_dir(os.path.dirname(os.path.abspath(tmp)))
            return Pager(file, self._page_size, use_mmap=self.config.use_mmap,
                         cache_pages=self.config.page_cache_size)
        except BaseException as exc:
            pager.close()
            if isinstance(exc, OSError) and not isinstance(exc, E.StreamDbError):
                raise io_error(exc, f"writing {tmp}") from exc
            raise

    def copy_to(self, tmp: str) -> None:
        """A backup at `tmp`: a writer checkpoints (unless failed), then copies its file; a
        reader writes the state it reads into a new file (`write_copy`). Fsynced. Raises
        OSError and the errors of a checkpoint or a copy."""
        if self.readonly:
            self.write_copy(tmp).close()
            return
        if self._failed is None:
            self._checkpoint()
        self.copy_file(tmp)

    def copy_file(self, tmp: str) -> None:
        """The database file up to its last used page, into a new file at `tmp`, fsynced
        (a backup after a checkpoint). O(file size). Raises OSError."""
        out = self._vfs.open(tmp, create=True)
        try:
            out.truncate(0)
            size = self._space.file_pages * self._page_size
            for offset in range(0, size, 1 << 20):
                out.pwritev([self._pager.read(offset, min(1 << 20, size - offset))], offset)
            out.sync()
        finally:
            out.close()


class _PageWrites:
    """Documents bound for pages, written in runs of adjacent pages: one pwritev per run of
    at most RUN_BUFFERS buffers (each document, then the zeros that fill its last page)."""

    RUN_BUFFERS = 1024

    def __init__(self, pager: Pager) -> None:
        self._pager = pager
        self._page = pager.page_size
        self._zeros = bytes(self._page)
        self._start = self._next = 0  # the run: pages [start, next)
        self._buffers: list[bytes] = []

    def add(self, start: int, pages: int, data: bytes) -> None:
        if self._buffers and (start != self._next or len(self._buffers) >= self.RUN_BUFFERS):
            self.flush()
        if not self._buffers:
            self._start = start
        self._buffers.append(data)
        pad = pages * self._page - len(data)
        if pad:
            self._buffers.append(self._zeros[:pad])
        self._next = start + pages

    def flush(self) -> None:
        """Write the run so far (OSError passes through)."""
        if self._buffers:
            self._pager.write(self._start * self._page, self._buffers)
            self._buffers = []


def _nothing_freed(extents: tuple[tuple[int, int], ...], lsn: int) -> None:
    raise AssertionError("a copy keeps every version it is given")


def _copy_documents(docs: Iterator[DocRecord], source: Pager, pager: Pager,
                    space: FreeSpace, catalog: Catalog) -> None:
    """Every kept version of `docs` (oldest first) copied as stored into `pager`'s file, with
    ids, numbers and times, and its paths, into `catalog` at LSN 0 (the new file's base)."""
    for doc in docs:
        for v in reversed(doc.versions):
            reader = DocReader(source, v, str(doc.doc_id), verify=True)
            ingest = Ingest(pager, space, v.checksum, max(v.stored, 1))
            try:
                stored = ingest.copy(reader)  # as stored: codec, seals and sums unchanged
            except OSError as exc:
                raise io_error(exc, f"copying {doc.doc_id}") from exc
            copy = replace(v, extents=tuple(ingest.extents), inline=stored.inline)
            catalog.apply(Op(OP_VERSION, doc.doc_id, version=copy), 0)
        for key in doc.paths:
            catalog.apply(Op(OP_BIND, doc.doc_id, path=key), 0)
    catalog.mark()


def write_free_tree(store: PageStore, space: FreeSpace, old_pages: list[int]
                    ) -> btree.TreeRef:
    """The free tree of a checkpoint: the extents free once its header is durable (free now,
    pending, and the old trees' pages), stored in pages free now (small extents first,
    `FreeSpace.take_small`), so the file does not grow by a tree per checkpoint. Its own
    pages must not be in the map it holds, and how many it needs depends on the map: pages
    are taken or given back until the count is stable (a page or two; a few rounds at
    most), else it goes past the end of the file, where writing it changes nothing. Pages
    past the end are taken too when no small extent is free. O(extents x list) per round."""
    page_size = store.page_size

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
            return btree.build(_Reserved(store, reserved), items(), kind=KIND_FREE)[0]
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
    store.at_end = True
    try:
        return btree.build(store, items(), kind=KIND_FREE)[0]
    finally:
        store.at_end = False


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
    """A page store whose new pages come from `pages`, in order."""

    def __init__(self, store: PageStore, pages: list[int]) -> None:
        self._store = store
        self._pages = iter(sorted(pages))
        self.page_size = store.page_size

    def page_count(self) -> int:
        return self._store.page_count()

    def read_page(self, page_no: int) -> memoryview:
        return self._store.read_page(page_no)

    def allocate(self, n_pages: int) -> int:
        assert n_pages == 1, "a free tree has no overflow values"
        return next(self._pages)

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        self._store.write_pages(page_no, data)
