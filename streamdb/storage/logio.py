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

An encrypted log cannot grow its last sealed chunk in place: its tag binds the old size.
So each append opens that chunk and seals it again, with the new frames, as new chunks
under a key of the append's own (a fresh salt, recorded per chunk: an append that a crash
undid can never have used the same key and nonce), written to new pages. Its chunks hold
`CHUNK - TAG` bytes, so a full sealed chunk fills whole pages and the pages before the
last chunk stay as they are; the pages the last chunk held are freed by the commit.
"""

from __future__ import annotations

from dataclasses import replace

from streamdb.storage.docio import DocReader, checksum
from streamdb.storage.freespace import FreeSpace
from streamdb.storage.pager import Pager
from streamdb.storage.records import NO_FRAME, Version, chunks
from streamdb.storage.transform import Cipher

LOG_INLINE = 4 << 10  # a log's bytes stay in its record up to this size
FIRST_EXTENT = 64 << 10  # then go to extents of 64 KiB, doubling up to MAX_EXTENT
MAX_EXTENT = 64 << 20


class LogAppend:
    """One append to one LOG version. `extents` lists the extents it allocated, for the
    caller to give back if the append is undone; `wrote_pages` says whether pages must be
    synced before the commit. `cipher` is the database's, for encrypted logs."""

    def __init__(self, pager: Pager, space: FreeSpace, cipher: Cipher | None = None) -> None:
        self.pager = pager
        self.space = space
        self.cipher = cipher
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
        of chunk `v.size // v.chunk_size + i` for the new frames ((index, offset in the
        chunk) of the first that starts there, or (0, NO_FRAME)); the message count becomes
        `count`. Writes pages (OSError, StorageFullError). O(len(frames) + chunk)."""
        assert v.log is not None
        grown = self._sealed(v, frames) if v.salt else self._plain(v, frames)
        base = v.size // v.chunk_size  # the chunk `starts[0]` is for
        first = max(0, len(v.sums) - 1) if v.salt else base  # the first chunk rewritten
        merged = list(v.log.starts[:first])
        for i in range(first, len(grown.sums)):
            old = v.log.starts[i] if i < len(v.log.starts) else (0, NO_FRAME)
            new = starts[i - base] if 0 <= i - base < len(starts) else (0, NO_FRAME)
            merged.append(old if old[1] != NO_FRAME else new)
        assert grown.log is not None
        return replace(grown, lsn=lsn, modified=now,
                       log=replace(grown.log, count=count, starts=tuple(merged)))

    def _plain(self, v: Version, frames: bytes | bytearray) -> Version:
        """Checksummed frames written after the last byte; the last chunk's checksum is
        recomputed over its old bytes, read back verified first."""
        cs = v.chunk_size
        size = v.size + len(frames)
        first = v.size // cs  # the first chunk whose checksum changes
        old_tail = self._read(v, first * cs, v.size - first * cs)
        if size <= LOG_INLINE and (v.inline is not None or not v.extents):
            inline: bytes | None = (v.inline or b"") + bytes(frames)
            extents = v.extents
        else:
            inline = None
            extents = self._write(v, frames)
        tail = memoryview(old_tail + bytes(frames))
        sums = list(v.sums[:first])
        for start, length in chunks(size - first * cs, cs):
            sums.append(checksum(v.checksum, tail[start : start + length]))
        return replace(v, size=size, extents=extents, sums=tuple(sums), inline=inline)

    def _sealed(self, v: Version, frames: bytes | bytearray) -> Version:
        """An encrypted log: the last chunk (which the old size and count are bound to) is
        opened and, with the new frames, sealed again as new chunks under a key of this
        append's own, then written to new pages; the pages it held are freed by the
        commit (OP_EXTEND). Committed pages are never written over. O(len(frames) + chunk).
        """
        assert v.log is not None and self.cipher is not None and not v.codec
        cipher, cs = self.cipher, v.chunk_size
        first = max(0, len(v.sums) - 1)
        old_tail = (bytes(DocReader(self.pager, v, "", verify=True, cipher=cipher).chunk(first))
                    if v.sums else b"")
        data = memoryview(old_tail + bytes(frames))
        size = first * cs + len(data)
        salt = cipher.new_salt()
        aead = cipher.version_key(v.doc, v.version, salt)
        pieces = list(chunks(len(data), cs)) or [(0, 0)]
        n = first + len(pieces)
        sealed = []
        for j, (start, length) in enumerate(pieces):
            i = first + j
            aad = cipher.associated(v.doc, v.version, i, 0, 0, (n, size) if i == n - 1 else None)
            sealed.append(aead.encrypt(cipher.nonce(i, 0), data[start : start + length], aad))
        keep = v.offsets[first] if v.sums else 0  # stored bytes that stay as they are
        new = b"".join(sealed)
        stored = keep + len(new)
        if stored <= LOG_INLINE and (v.inline is not None or not v.extents):
            inline: bytes | None = (v.inline or b"")[:keep] + new
            extents = v.extents
        else:
            inline = None
            extents = self._rewrite(v, keep, new)
        return replace(
            v, size=size, stored_size=stored if stored != size else -1, extents=extents,
            inline=inline, salt=salt,
            sums=v.sums[:first] + tuple(checksum(v.checksum, s) for s in sealed),
            table=v.table[:first] + tuple((len(s), 0, 0) for s in sealed),
            log=replace(v.log, salts=v.log.salts[:first] + (salt,) * len(sealed)))

    def _read(self, v: Version, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if v.inline is not None:
            return v.inline[offset : offset + length]
        # Verified: a checksum over damaged bytes would hide the damage.
        return DocReader(self.pager, v, "", verify=True).read(offset, length)

    def _rewrite(self, v: Version, keep: int, new: bytes) -> tuple[tuple[int, int], ...]:
        """The extents of `v`'s stored bytes [0, keep) followed by `new`: whole pages
        before `keep` stay; the rest (the part of a page before `keep`, then `new`) goes to
        one new extent."""
        page = self.pager.page_size
        if v.inline is not None:
            kept: list[tuple[int, int]] = []
            head = v.inline[:keep]
        else:
            whole = keep // page
            kept = []
            for first, count in v.extents:
                if whole <= 0:
                    break
                kept.append((first, min(count, whole)))
                whole -= count
            head = b"".join(DocReader(self.pager, v, "", verify=False)._physical(
                keep // page * page, keep % page)) if keep % page else b""
        data = head + new
        pages = -(-len(data) // page)
        start = self._allocate(pages)
        self.pager.write(start * page, [data])
        self._wrote = True
        return (*kept, (start, pages))

    def _allocate(self, pages: int) -> int:
        """A new extent of `pages` pages, inside the file at once: log replay takes pages
        past the end of the file for damage, so the file must cover the whole extent
        before the record naming it commits."""
        start = self.space.allocate(pages)
        self._extents.append((start, pages))
        end = (start + pages) * self.pager.page_size
        if end > self.pager.size:
            self.pager.write(end - 1, [b"\x00"])
        return start

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
                extents.append((self._allocate(pages), pages))
                capacity += pages * page
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
