"""Appends to a LOG version: framed messages added in place, without a new version.

The new bytes go after the version's last byte: into the unused part of its last page and
extent, then into new extents (allocated doubling, so a long log has few; the file is
extended over a new extent at once, since replay takes logged pages past the end of the
file for damage). The old last chunk is read back verified before its checksum is
recomputed, so an append never hides damage. Pages holding
committed bytes are only ever written after those bytes, never over them; like SQLite's
WAL and LevelDB's log, this relies on a write leaving the earlier bytes of its sector
intact. The pages are fdatasync'ed before the log record that makes the new size visible
(the caller commits), so a crash leaves the previous size: the bytes past it are unused.
Readers of the previous version read only up to its size, which stays valid.

A small log stays INLINE in its record (rewritten whole by each append) up to LOG_INLINE.
"""

from __future__ import annotations

from dataclasses import replace

from streamdb.storage.docio import CHUNK, checksum
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.pager import Pager
from streamdb.storage.records import NO_FRAME, LogTable, Version, chunks

LOG_INLINE = 4 << 10  # a log's bytes stay in its record up to this size
FIRST_EXTENT = 64 << 10  # then go to extents of 64 KiB, doubling up to MAX_EXTENT
MAX_EXTENT = 64 << 20


class LogAppend:
    """One append to one LOG version. `extents` lists the extents it allocated, for the
    caller to give back if the append is undone; `wrote_pages` says whether pages must be
    synced before the commit."""

    def __init__(self, pager: Pager, space: FreeSpace) -> None:
        self.pager = pager
        self.space = space
        self._extents: list[tuple[int, int]] = []
        self._wrote = False

    @property
    def extents(self) -> list[tuple[int, int]]:
        return self._extents

    @property
    def wrote_pages(self) -> bool:
        return self._wrote

    def run(self, v: Version, frames: bytes | bytearray, starts: list[tuple[int, int]],
            count: int, lsn: int, now: float) -> Version:
        """The version `v` grown by `frames` (framed messages). `starts[i]` is the entry
        of chunk `v.size // CHUNK + i` for the new frames ((index, offset in the chunk) of
        the first that starts there, or (0, NO_FRAME)); the message count becomes
        `count`. Writes pages (OSError, StorageFullError). O(len(frames) + CHUNK)."""
        assert v.log is not None and not v.table
        size = v.size + len(frames)
        first = v.size // CHUNK  # the first chunk whose checksum changes
        old_tail = self._read(v, first * CHUNK, v.size - first * CHUNK)
        if size <= LOG_INLINE and (v.inline is not None or not v.extents):
            inline: bytes | None = (v.inline or b"") + bytes(frames)
            extents = v.extents
        else:
            inline = None
            extents = self._write(v, frames)
        tail = memoryview(old_tail + bytes(frames))
        sums = list(v.sums[:first])
        for start, length in chunks(size - first * CHUNK, CHUNK):
            sums.append(checksum(v.checksum, tail[start : start + length]))
        n_chunks = len(sums)
        merged = list(v.log.starts[:first])
        for i in range(first, n_chunks):
            old = v.log.starts[i] if i < len(v.log.starts) else (0, NO_FRAME)
            new = starts[i - first] if i - first < len(starts) else (0, NO_FRAME)
            merged.append(old if old[1] != NO_FRAME else new)
        log = LogTable(v.log.framing, count, tuple(merged))
        return replace(v, lsn=lsn, size=size, modified=now, extents=extents,
                       sums=tuple(sums), inline=inline, log=log)

    def _read(self, v: Version, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if v.inline is not None:
            return v.inline[offset : offset + length]
        from streamdb.storage.docio import DocReader  # the plain reader of stored bytes

        # Verified: a checksum over damaged bytes would hide the damage.
        return DocReader(self.pager, v, "", verify=True).read(offset, length)

    def _write(self, v: Version, frames: bytes | bytearray) -> tuple[tuple[int, int], ...]:
        """Write the new bytes (and an inline log's old ones, moving to pages) after
        `v`'s last byte; the extents that hold them all."""
        page = self.pager.page_size
        extents = list(v.extents)
        data = memoryview((v.inline or b"") + bytes(frames)) if v.inline is not None \
            else memoryview(frames)
        at = 0 if v.inline is not None else v.size  # where `data` starts in the log
        capacity = sum(n for _, n in extents) * page
        while data:
            if at >= capacity:
                want = max(FIRST_EXTENT, min(MAX_EXTENT, capacity), len(data))
                pages = -(-want // page)
                start = self.space.allocate(pages)
                extents.append((start, pages))
                self._extents.append((start, pages))
                capacity += pages * page
                # The file must cover the whole extent before the record naming it commits:
                # log replay takes pages past the end of the file for damage.
                end = (start + pages) * page
                if end > self.pager.size:
                    self.pager.write(end - 1, [b"\x00"])
            base = 0
            for first, count in extents:  # the extent holding byte `at`
                if at < base + count * page:
                    room = base + count * page - at
                    part, data = data[:room], data[room:]
                    self.pager.write(first * page + at - base, [part])
                    at += len(part)
                    break
                base += count * page
        self._wrote = True
        return tuple(extents)
