"""Read-only opens: following a database that another process (or object) writes.

A read-only database takes no lock. It reads the current header's trees and the committed
batches of the log after the header's checkpoint (`wal.LogTail`, which never writes), and
publishes in its reader-table slot the oldest state it holds, so the writer leaves those
pages alone. `refresh()` reads the batches committed since, or starts over from a newer
checkpoint.

Rules (the writer's side is `Database._release_space`):
F1. The slot is published *before* the state is read, with the header's stamp, and the header
    is read again afterwards: if it changed, the writer may have missed the slot and freed
    the pages of the old trees, so the load starts over. The writer frees pages only after
    writing a newer header and then reading the table, so a load that saw the same header
    twice is safe.
F2. The log is read only up to complete batches (END); bytes being written look like a torn
    tail and are left for the next refresh.
F3. A load also starts over when the path now names another file (a compaction renamed a
    new file over it): log records after that belong to the new file.
F4. The slot's stamp is the oldest of the held states (snapshots, streams, views, reads in
    flight) and the published one, rewritten when that changes.
F5. Without mmap, the page cache may hold free pages it read ahead, which the writer may
    since have rewritten: it is emptied whenever a newer state is read, before the pages
    that state makes visible are read (a read racing the emptying does not cache).
"""

from __future__ import annotations

import contextlib
import time

import wal
from streamdb import errors as E
from streamdb.engine.base import EngineFields
from streamdb.engine.writes import touched
from streamdb.errmap import io_error, wal_error
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.pager import Pager
from streamdb.storage.pagestore import PageStore
from streamdb.storage.records import decode_op

ATTEMPTS = 1000  # loads that may start over (F1, F3) before giving up
UNPROVEN_ATTEMPTS = 25  # reads of a lone pre-mirroring header copy before giving up (H3)


class Follower(EngineFields):
    """The read-only part of `Engine` (rules F1-F5)."""

    def _same_file(self) -> bool:
        """True while the path still names the file we have open (F3)."""
        try:
            return self._vfs.identity(self.path) == self._pager.file.identity()
        except OSError as exc:
            raise io_error(exc, f"checking {self.path}") from exc

    def _reopen(self) -> None:
        """Open the file the path names now; the old one stays open for held states."""
        try:
            file = self._vfs.open(self.path, create=False)
        except FileNotFoundError as exc:
            raise E.NotFoundError(f"no database at {self.path}") from exc
        except OSError as exc:
            raise io_error(exc, f"opening {self.path}") from exc
        old = self._pager
        self._pager = Pager(file, self._page_size, use_mmap=self.config.use_mmap,
                            cache_pages=self.config.page_cache_size)
        if getattr(self, "_pins", None) is not None:
            self._retire(old)  # closed once no state over it is held or published
        else:
            old.close()

    def _load(self) -> None:
        """Read the last committed state from scratch and publish it (F1-F3). O(log bytes
        since the last checkpoint). Raises CorruptionError if no consistent state could be
        read in ATTEMPTS tries (a writer checkpointing faster than we can read)."""
        assert self._slot is not None
        unproven = 0
        for _ in range(ATTEMPTS):
            if not self._same_file():
                self._reopen()
            header = self._read_or_create_header(self._pager.file)
            why = self._unproven_copy()
            if why is not None:
                # H3. A copy the writer is rewriting right now also looks damaged: look again.
                unproven += 1
                if unproven >= UNPROVEN_ATTEMPTS:
                    raise E.CorruptionError(why, page=0 if self._copies.a is None else 1)
                time.sleep(0.002)
                continue
            if header.page_size != self._page_size:
                raise E.CorruptionError(f"{self.path} changed its page size", page=0)
            # Until the new state is published, reads still pin the published one: the slot
            # keeps protecting it (and every held state) too.
            stamps = [(header.generation, header.checkpoint_lsn)]
            if getattr(self, "_pins", None) is not None:
                stamps.append(self._pins.current.stamp)
                stamps += [s for s in (self._pins.oldest(),) if s is not None]
            self._slot.publish(header.db_id.bytes, min(stamps))
            if self._read_or_create_header(self._pager.file) != header:
                continue
            self._header = header
            self._pager.forget_cached()  # (F5) pages read ahead may since have been rewritten
            self._pager.notice_shrink()  # a checkpoint may have cut free pages off the end
            self._space = FreeSpace(header.file_pages, self._space.max_pages)
            self._store = PageStore(self._pager, self._space)
            self._catalog = self._new_catalog(header.trees)
            self._applied_lsn = header.checkpoint_lsn
            self._close_tail()
            self._tail = wal.LogTail(self.path + "-wal", from_lsn=header.checkpoint_lsn + 1,
                                     vfs=self._vfs)
            try:
                self._follow()
            except wal.WalRecycledError:
                continue
            if not self._same_file():
                continue
            self._publish()
            self._publish_oldest()
            return
        raise E.CorruptionError(f"{self.path}: no consistent state after {ATTEMPTS} attempts")

    def _follow(self) -> set[bytes]:
        """Apply the batches committed since the last poll (F2); the path keys whose
        documents they changed. O(new log bytes)."""
        try:
            assert self._tail is not None
            records = self._tail.poll()
        except wal.WalRecycledError:
            raise
        except wal.WalError as exc:
            raise wal_error(exc, f"reading the log of {self.path}") from exc
        if records:  # (F5) their pages were written after anything the cache read ahead
            self._pager.forget_cached()
        catalog = self._catalog
        catalog.horizon = self._horizon()
        changed: set[bytes] = set()
        for record in records:
            op = decode_op(record.payload)
            if op.version is not None:  # VERSION, CREATE
                for start, count in op.version.extents:
                    self._space.claim(start, count)  # keeps page numbers in range
            touched(catalog, op, changed)
            catalog.apply(op, record.lsn)
            self._applied_lsn = record.lsn
        catalog.mark()
        return changed

    def _refresh_follower(self) -> None:
        """Move on to the last committed state: the new log batches, or a full `load` when a
        checkpoint or a compaction happened since."""
        with self._refresh_lock:
            header = self._read_or_create_header(self._pager.file)
            if header != self._header or not self._same_file():
                self._load()
                return
            try:
                changed = self._follow()
            except wal.WalRecycledError:
                self._load()
                return
            if not self._same_file():  # F3: what was just read may be the new file's log
                self._load()
                return
            self._publish(changed)
            self._publish_oldest()

    def _publish_oldest(self) -> None:
        """Rewrite the slot with the oldest state held or published (F4). One pwrite."""
        slot = self._slot
        if slot is None:
            return
        current = self._pins.current.stamp
        held = self._pins.oldest()
        with contextlib.suppress(OSError):  # a failed rewrite leaves an older stamp: safe
            slot.publish(self._header.db_id.bytes, min(current, held) if held else current)

    def _close_tail(self) -> None:
        """Close the log tail (its descriptors only: a tail never writes)."""
        tail, self._tail = self._tail, None
        if tail is not None:
            tail.close()
