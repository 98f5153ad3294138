#!/usr/bin/env python3
"""dbdump: what a StreamDB database file and its log hold, for a human debugging them.

    python tools/dbdump.py FILE [--pages] [--records] [--free] [--page N]

Always printed: both header copies (which one is current, generation, checkpoint LSN, page
size, tree references), the shape of each tree of the current header (height, entries,
pages by type, and the result of the tree's own invariant check), and a summary of the log
(`FILE-wal` and its numbered siblings `FILE-wal.N`): each segment's header, its records,
batches and LSN range, where reading stopped, and how many records lie past the
checkpoint. Options add:

    --records   every path, every document record (id, paths, versions with their sizes,
                extents, checksum counts, inline or not) and every logged operation
    --free      the free extents of the free-space tree, and their totals
    --pages     a map of the file: what each run of pages belongs to (header, tree page,
                document extent, free), with pages claimed twice flagged
    --page N    a decoded header and a hex dump of page N

Read-only by construction: the files are opened O_RDONLY, nothing is written, locked or
created, and the log is read with `wal.format` and `wal.scan`, never with `wal.open` (whose
recovery writes). A damaged part is reported as `error: ...` and the rest is still printed.
Exit status: 0 when nothing was found damaged, 1 otherwise, 2 when FILE cannot be read.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import struct
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

if __package__ in (None, ""):  # run as a script from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xxhash

from streamdb.storage import btree, btree_format
from streamdb.storage import header as hdr
from streamdb.storage.catalog import KIND_DOCS, KIND_FREE, KIND_PATHS, KIND_SUFFIX
from streamdb.storage.records import (
    CHUNK_RAW,
    FRAMINGS,
    OP_BIND,
    OP_CREATE,
    OP_EXTEND,
    OP_PRUNE,
    OP_UNBIND,
    OP_VERSION,
    Version,
    decode_doc,
    decode_op,
)
from streamdb.storage.transform import CODEC_NAMES
from wal import format as fmt
from wal.log import DEFAULT_MAX_RECORD_SIZE
from wal.scan import Window, scan
from wal.vfs import Buffer, FileMap

LOG_NAMES = {number: name or "no checksum" for name, number in FRAMINGS.items()}
KINDS = {"paths": KIND_PATHS, "suffix": KIND_SUFFIX, "docs": KIND_DOCS, "free": KIND_FREE}
KIND_NAMES = {v: k for k, v in KINDS.items()}
PAGE_TYPES = {1: "leaf", 2: "internal", 3: "overflow"}
CHECKSUMS = {hdr.CHECKSUM_XXH3: "xxh3", hdr.CHECKSUM_CRC32C: "crc32c"}
OPS = {OP_VERSION: "VERSION", OP_BIND: "BIND", OP_UNBIND: "UNBIND", OP_PRUNE: "PRUNE",
       OP_CREATE: "CREATE", OP_EXTEND: "EXTEND"}
MAX_LISTED = 10_000  # entries printed per listing; the rest are counted


class ReadOnlyFile:
    """A `wal.vfs.VFile` over a descriptor opened O_RDONLY: every write and lock raises."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset) if size > 0 and offset >= 0 else b""

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def _refuse(self, *args: object) -> NoReturn:
        raise PermissionError(errno.EBADF, "dbdump never writes", self.path)

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        self._refuse()

    def truncate(self, size: int) -> None:
        self._refuse()

    def allocate(self, size: int) -> None:
        self._refuse()

    def sync(self) -> None:
        self._refuse()

    def lock(self) -> None:
        self._refuse()

    def lock_range(self, start: int, length: int, *, wait: bool = False) -> bool:
        self._refuse()

    def unlock_range(self, start: int, length: int) -> None:
        self._refuse()

    def range_locked(self, start: int, length: int) -> bool:
        self._refuse()

    def map(self, size: int) -> FileMap | None:
        return None  # dbdump reads through pread

    def identity(self) -> tuple[int, int]:
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class PageReader:
    """The `btree.PageStore` the trees are read through: whole pages of the file only."""

    def __init__(self, file: ReadOnlyFile, page_size: int) -> None:
        self.file = file
        self.page_size = page_size
        self.pages = file.size() // page_size

    def read_page(self, page_no: int) -> bytes:
        data = self.file.pread(self.page_size, page_no * self.page_size)
        if len(data) != self.page_size:
            raise ValueError(f"page {page_no} lies past the end of the file")
        return data

    def page_count(self) -> int:
        return self.pages

    def allocate(self, n_pages: int) -> int:
        raise PermissionError(errno.EBADF, "dbdump never writes")

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        raise PermissionError(errno.EBADF, "dbdump never writes")


@dataclass
class Copy:
    """One header copy as found: its status and, when it checks out, the parsed header."""

    name: str
    offset: int
    raw: bytes
    status: str
    header: hdr.Header | None = None


def _ranges(numbers: Sequence[int]) -> str:
    """'2-5, 9, 11-12' for sorted page numbers."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


def _short(key: bytes, limit: int = 80) -> str:
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + key[:limit].hex() + ("..." if len(key) > limit else "")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw)) if len(raw) == 16 else "bytes:" + raw.hex()


def read_copy(file: ReadOnlyFile, name: str, offset: int) -> Copy:
    raw = file.pread(hdr.HEADER_SIZE, offset)
    if len(raw) < hdr.HEADER_SIZE:
        return Copy(name, offset, raw, f"missing ({len(raw)} of {hdr.HEADER_SIZE} bytes)")
    if not any(raw):
        return Copy(name, offset, raw, "blank (all zero)")
    if raw[:8] != hdr.MAGIC:
        return Copy(name, offset, raw, "no StreamDB magic")
    try:
        parsed = hdr.parse(raw)
    except Exception as exc:  # UnsupportedError, or a bug: shown either way
        return Copy(name, offset, raw, f"unusable: {exc}")
    if parsed is None:
        return Copy(name, offset, raw, "damaged (checksum mismatch or bad header size)")
    return Copy(name, offset, raw, "ok", parsed)


@dataclass
class Dump:
    """Collects the findings; every section catches its own errors."""

    path: str
    file: ReadOnlyFile
    out: Callable[[str], None] = print
    problems: list[str] = field(default_factory=list)
    current: hdr.Header | None = None
    store: PageReader | None = None
    owners: dict[int, list[str]] = field(default_factory=dict)

    def error(self, where: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.problems.append(f"{where}: {text}")
        self.out(f"  error ({where}): {text}")

    def own(self, pages: range, what: str) -> None:
        """Record who claims `pages`; pages past the end of the file are only reported."""
        end = self.store.pages if self.store else 0
        for page in range(max(pages.start, 0), min(pages.stop, end)):
            self.owners.setdefault(page, []).append(what)
        if pages.stop > end:
            self.error("page map", f"{what} claims pages {pages.start}-{pages.stop - 1}, past "
                       f"the end of the file ({end} pages)")

    # -- headers --------------------------------------------------------------------------

    def headers(self) -> None:
        size = self.file.size()
        self.out(f"file {self.path}: {size} bytes")
        a = read_copy(self.file, "A", 0)
        sizes = [a.header.page_size] if a.header else [4096 << i for i in range(5)]
        copies = [a]
        for page_size in sizes:  # where B is, as the database looks for it
            b = read_copy(self.file, "B", page_size)
            if b.header or page_size == sizes[-1]:
                copies.append(b)
                break
        good = [c for c in copies if c.header is not None]
        if a.header is not None:
            good = [c for c in good if c.header and c.header.db_id == a.header.db_id]
        best = max(good, key=lambda c: c.header.generation if c.header else -1, default=None)
        self.current = best.header if best else None
        for copy in copies:
            self.show_copy(copy, copy is best)
        if self.current is None:
            self.error("headers", "no usable header copy: the database cannot be opened")
            return
        page_size = self.current.page_size
        try:
            btree_format._check_page_size(page_size)
        except Exception as exc:
            self.error("headers", exc)
            return
        self.out(f"current: header {best.name if best else '?'}, page size {page_size}, "
                 f"{size // page_size} whole pages in the file"
                 + (f" + {size % page_size} bytes" if size % page_size else "")
                 + f", {self.current.file_pages} in use per the header")
        if self.current.file_pages * page_size > size:
            self.error("headers", "the header counts more pages than the file holds")
        self.store = PageReader(self.file, page_size)
        self.own(range(hdr.HEADER_PAGES), "header")

    def show_copy(self, copy: Copy, current: bool) -> None:
        label = " CURRENT" if current else ""
        self.out(f"header {copy.name} (offset {copy.offset}): {copy.status}{label}")
        if len(copy.raw) < hdr.HEADER_SIZE or copy.raw[:8] != hdr.MAGIC:
            return
        (_, version, size, page_size, db_id, gen, lsn, pages, algo, flags,
         _) = hdr._FIXED.unpack_from(copy.raw)
        stored = int.from_bytes(copy.raw[-8:], "little")
        actual = xxhash.xxh3_64_intdigest(copy.raw[:-8])
        self.out(f"  format {version}, header size {size}, page size {page_size}, "
                 f"database id {uuid.UUID(bytes=db_id)}")
        self.out(f"  generation {gen}, checkpoint LSN {lsn}, file pages {pages}, "
                 f"checksum {CHECKSUMS.get(algo, f'unknown ({algo})')}, flags {flags:#x}, "
                 f"header checksum {'ok' if stored == actual else f'BAD ({stored:#x})'}")
        if flags & hdr.FLAG_ENCRYPTED:
            check = copy.raw[hdr.KEY_CHECK]
            self.out(f"  encrypted: scheme {check[0]}, key salt {check[16:32].hex()}")
        for i, name in enumerate(hdr.TREES):
            at = 64 + 24 * i
            root, count, tree_id, height, ver, _ = btree_format._REF.unpack_from(copy.raw, at)
            self.out(f"  {name:<6} root {root}, height {height}, {count} entries, "
                     f"tree id {tree_id:#010x}, format {ver}")

    # -- trees ------------------------------------------------------------------------------

    def tree(self, name: str) -> btree.Tree:
        assert self.current is not None and self.store is not None
        return btree.Tree(self.store, self.current.trees[name], kind=KINDS[name], cache_pages=0)

    def trees(self, list_pages: bool) -> None:
        if self.current is None or self.store is None:
            return
        self.out(f"trees (as of checkpoint LSN {self.current.checkpoint_lsn}):")
        for name in hdr.TREES:
            ref = self.current.trees[name]
            if not ref.height:
                self.out(f"  {name:<6} empty")
                continue
            by_type: dict[str, list[int]] = {}
            tree: btree.Tree | None = None
            try:
                tree = self.tree(name)
                for page in tree.pages():
                    raw = self.store.read_page(page)
                    kind = PAGE_TYPES.get(raw[4], f"type {raw[4]}")
                    by_type.setdefault(kind, []).append(page)
                    self.own(range(page, page + 1), f"{name} tree {kind}")
            except Exception as exc:
                self.error(f"{name} tree", exc)
            total = sum(map(len, by_type.values()))
            parts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_type.items()))
            self.out(f"  {name:<6} {ref.count} entries, height {ref.height}, {total} pages "
                     f"({parts or 'none read'}), root {ref.root}")
            if list_pages:
                for kind, pages in sorted(by_type.items()):
                    self.out(f"         {kind} pages: {_ranges(sorted(pages))}")
            try:
                if tree is not None:
                    tree._check()
            except Exception as exc:
                self.error(f"{name} tree check", exc)

    # -- records ----------------------------------------------------------------------------

    def documents(self, show: bool) -> None:
        """Document extents feed the page map; with `show`, paths and records are printed."""
        if self.current is None or self.store is None:
            return
        paths: dict[bytes, bytes] = {}
        if show:
            self.out("paths:")
        try:
            for n, (key, doc_id) in enumerate(self.tree("paths").items()):
                paths[key] = doc_id
                if show and n < MAX_LISTED:
                    self.out(f"  {_short(key)} -> {_uuid(doc_id)}")
        except Exception as exc:
            self.error("paths tree", exc)
        if show and len(paths) > MAX_LISTED:
            self.out(f"  ... {len(paths) - MAX_LISTED} more")
        try:
            reversed_keys = {key[::-1] for key, _ in self.tree("suffix").items()}
            if reversed_keys != set(paths):
                self.error("suffix tree", f"{len(reversed_keys)} suffix keys do not match "
                           f"the {len(paths)} paths")
        except Exception as exc:
            self.error("suffix tree", exc)
        if show:
            self.out("documents:")
        seen: set[bytes] = set()
        try:
            for n, (key, value) in enumerate(self.tree("docs").items()):
                seen.add(key)
                try:
                    doc = decode_doc(uuid.UUID(bytes=key), value)
                except Exception as exc:
                    self.error(f"document {_uuid(key)}", exc)
                    continue
                names = ", ".join(_short(p) for p in doc.paths) or "(no path)"
                if show and n < MAX_LISTED:
                    self.out(f"  {doc.doc_id}: {len(doc.versions)} version(s), paths {names}")
                for v in doc.versions:
                    if show and n < MAX_LISTED:
                        self.out("    " + self.version_line(v))
                    label = "doc " + (doc.paths[0].decode(errors="replace") if doc.paths
                                      else key.hex())
                    for first, count in v.extents:
                        self.own(range(first, first + count), f"{label} v{v.version}")
        except Exception as exc:
            self.error("docs tree", exc)
        dangling = sorted({d for d in paths.values()} - seen)
        if dangling:
            self.error("paths tree", f"{len(dangling)} path(s) name a missing document")

    def version_line(self, v: Version) -> str:
        where = (f"inline ({len(v.inline)} bytes)" if v.inline is not None
                 else f"extents {', '.join(f'{a}+{c}' for a, c in v.extents) or 'none'}")
        page_size, size = (self.store.page_size if self.store else 4096), self.file.size()
        past, left = [], v.stored  # extents whose stored bytes run past the end of the file
        for first, count in v.extents if v.inline is None else ():
            span = min(count * page_size, max(left, 0))
            if first * page_size + span > size:
                past.append(first)
            left -= span
        codec = CODEC_NAMES.get(v.codec, f"codec {v.codec}") if v.codec else "no codec"
        raw = sum(1 for _, flags, _ in v.table if flags & CHUNK_RAW)
        sealed = ", encrypted" if v.salt else ""
        if v.log is not None and v.log.salts:
            sealed += f" under {len(set(v.log.salts))} append key(s)"
        table = f" ({raw} stored raw){sealed}" if v.table else ""
        log = "" if v.log is None else (
            f"message log ({LOG_NAMES.get(v.log.framing, v.log.framing)}, "
            f"{v.log.count} messages), ")
        return (f"v{v.version}: {log}lsn {v.lsn}, size {v.size}, stored {v.stored}, "
                f"{codec}{table}, "
                f"{CHECKSUMS.get(v.checksum, f'checksum {v.checksum}')} x {len(v.sums)} "
                f"(chunk {v.chunk_size}), {where}"
                + (f"  <- {len(past)} extent(s) past the end of the file" if past else ""))

    # -- free space -------------------------------------------------------------------------

    def free(self, show: bool) -> None:
        if self.current is None or self.store is None:
            return
        extents: list[tuple[int, int]] = []
        try:
            for key, value in self.tree("free").items():
                extents.append((int.from_bytes(key, "big"), int.from_bytes(value, "little")))
        except Exception as exc:
            self.error("free tree", exc)
        for start, count in extents:
            self.own(range(start, start + count), "free")
        if show:
            self.out("free extents (first page + count):")
            for start, count in extents[:MAX_LISTED]:
                self.out(f"  {start}+{count} (pages {start}-{start + count - 1})")
            total = sum(c for _, c in extents)
            largest = max((c for _, c in extents), default=0)
            self.out(f"  {len(extents)} extent(s), {total} free pages "
                     f"({total * self.store.page_size} bytes), largest {largest} pages, "
                     f"of {self.current.file_pages} pages in use per the header")
        end = self.current.file_pages
        for start, count in extents:
            if start < hdr.HEADER_PAGES or start + count > end or count <= 0:
                self.error("free tree", f"extent {start}+{count} is outside pages "
                           f"{hdr.HEADER_PAGES}..{end - 1}")

    # -- page map and single pages ----------------------------------------------------------

    def page_map(self) -> None:
        if self.store is None:
            return
        self.out("page map:")
        runs: list[tuple[int, int, str]] = []
        for page in range(self.store.pages):
            owner = " + ".join(self.owners.get(page, ["unreferenced at the checkpoint"]))
            if runs and runs[-1][2] == owner and runs[-1][1] == page - 1:
                runs[-1] = (runs[-1][0], page, owner)
            else:
                runs.append((page, page, owner))
        for a, b, owner in runs:
            self.out(f"  {a if a == b else f'{a}-{b}':>11}  {owner}")
        shared = sorted(p for p, o in self.owners.items() if len(o) > 1)
        if shared:
            self.error("page map", f"{len(shared)} page(s) claimed twice: {_ranges(shared)[:200]}")

    def page(self, page_no: int) -> None:
        page_size = self.store.page_size if self.store else 4096
        raw = self.file.pread(page_size, page_no * page_size)
        self.out(f"page {page_no} (offset {page_no * page_size}, {len(raw)} bytes"
                 f"{', page size assumed' if self.store is None else ''}):")
        if not raw:
            self.error(f"page {page_no}", "past the end of the file")
            return
        if page_no < hdr.HEADER_PAGES:
            self.out("  a header page (decoded above)")
        elif raw[:2] == btree_format.MAGIC and len(raw) >= btree_format.HEADER_SIZE:
            self.tree_page(raw)
        else:
            self.out("  no tree page header: document bytes, free or unused space")
        if page_no in self.owners:
            self.out(f"  belongs to: {' + '.join(self.owners[page_no])}")
        previous, skipping = b"", False
        for at in range(0, len(raw), 16):
            row = raw[at : at + 16]
            if row == previous and at + 16 < len(raw):
                if not skipping:
                    self.out("  *")
                skipping = True
                continue
            previous, skipping = row, False
            text = "".join(chr(c) if 32 <= c < 127 else "." for c in row)
            self.out(f"  {at:06x}  {row[:8].hex(' ')}  {row[8:].hex(' '):<23}  |{text}|")

    def tree_page(self, raw: bytes) -> None:
        (_, version, kind, ptype, level, flags, count, tree_id, number, stored, nxt, voff, vlen,
         _) = btree_format._HEADER.unpack_from(raw)
        actual = btree_format._page_checksum(raw)
        self.out(f"  tree page: format {version}, kind {KIND_NAMES.get(kind, kind)}, "
                 f"{PAGE_TYPES.get(ptype, f'type {ptype}')}, level {level}, flags {flags:#x}, "
                 f"count {count}, write id {tree_id:#010x}, says page {number}")
        check = "ok" if stored == actual else f"BAD (stored {stored:#x}, computed {actual:#x})"
        chain = f", next {nxt}, value offset {voff}, value length {vlen}" if ptype == 3 else ""
        self.out(f"  checksum {check}{chain}")
        try:
            if ptype == 1:
                n = count
                off = struct.unpack_from(f"<{2 * n + 1}H", raw, btree_format.HEADER_SIZE)
                for i in range(min(n, 50)):
                    key, value = raw[off[i] : off[i + 1]], raw[off[n + i] : off[n + i + 1]]
                    flag = raw[btree_format.HEADER_SIZE + 2 * (2 * n + 1) + i]
                    name = (_uuid(key) if kind == KIND_DOCS
                            else f"page {int.from_bytes(key, 'big')}" if kind == KIND_FREE
                            else _short(key, 60))
                    overflow = flag & btree_format.FLAG_OVERFLOW
                    self.out(f"    {name}: {len(value)}-byte value"
                             + (" (overflow reference)" if overflow else ""))
            elif ptype == 2:
                n = count
                at = btree_format.HEADER_SIZE + 8 * n
                children = struct.unpack_from(f"<{n}Q", raw, btree_format.HEADER_SIZE)
                # format 2 names each child's write id; a format 1 page's children carry its own
                wids = (struct.unpack_from(f"<{n}I", raw, at) if version >= 2 else (tree_id,) * n)
                off = struct.unpack_from(f"<{n}H", raw, at + (4 * n if version >= 2 else 0))
                seps = [raw[a:b] for a, b in itertools.pairwise(off)]
                for i in range(min(n, 50)):
                    low = _short(seps[i - 1], 60) if i else "(lower bound)"
                    self.out(f"    child {children[i]} (write id {wids[i]:#010x}) from {low}")
        except (struct.error, IndexError) as exc:
            self.error("page entries", exc)

    # -- the log ----------------------------------------------------------------------------

    def log(self, show_ops: bool) -> None:
        base = self.path + "-wal"
        directory, name = os.path.split(base)
        numbers = sorted(int(n[len(name) + 1 :]) for n in os.listdir(directory or ".")
                         if n.startswith(name + ".") and n[len(name) + 1 :].isdigit())
        slots = [base] * os.path.exists(base) + [f"{base}.{n}" for n in numbers]
        if not slots:
            self.out(f"log {base}: absent")
            return
        checkpoint = self.current.checkpoint_lsn if self.current else 0
        lsns: list[int] = []
        after = 0
        for path in slots:
            try:
                lsns_here, after_here = self.segment(path, checkpoint, show_ops)
                lsns += lsns_here
                after += after_here
            except Exception as exc:
                self.error(f"log {path}", exc)
        span = f"LSN {min(lsns)}..{max(lsns)}" if lsns else "no records"
        self.out(f"log summary: {len(slots)} segment file(s), {span}; "
                 f"{after} data record(s) after the checkpoint LSN {checkpoint}")

    def segment(self, path: str, checkpoint: int, show_ops: bool) -> tuple[list[int], int]:
        file = ReadOnlyFile(path)
        try:
            size = file.size()
            raw = file.pread(fmt.SEGMENT_HEADER_SIZE, 0)
            self.out(f"log {path}: {size} bytes")
            if fmt.is_blank(raw):
                self.out("  blank (no header yet): a free slot")
                return [], 0
            seg = fmt.parse_segment_header(raw)  # WalFormatError / WalCorruptionError
            if seg is None:
                self.error(f"log {path}", "segment header fails its CRC (torn or damaged)")
                return [], 0
            state = "FREE" if seg.free else f"live, sequence {seg.seq}"
            self.out(f"  header: {state}, salt {seg.salt:#018x}, base LSN {seg.base_lsn}, "
                     f"previous LSN {seg.prev_lsn}")
            window = Window(file, size)
            lsns: list[int] = []
            data = close = batches = after = payload = 0
            end = fmt.SEGMENT_HEADER_SIZE
            for found in scan(window, seg, max_record_size=DEFAULT_MAX_RECORD_SIZE,
                              payloads=show_ops):
                head = found.header
                lsns.append(head.lsn)
                end, payload = found.end, payload + head.length
                batches += head.end
                if head.kind == fmt.KIND_CLOSE:
                    close += 1
                    continue
                data += 1
                after += head.lsn > checkpoint
                if show_ops and found.payload is not None:
                    self.out("    " + self.op_line(head.lsn, found.payload, checkpoint))
            rest = size - end
            tail = window.read(end, min(rest, 1 << 20))
            why = ("end of file" if rest <= 0
                   else f"zero-filled space ({rest} bytes)" if not any(tail)
                   else "a record of this segment that does not validate (torn or damaged)"
                   if bytes(tail[:4]) == seg.tag.to_bytes(4, "little")
                   else f"bytes of an earlier use of the file (another salt), {rest} bytes")
            span = f", LSN {lsns[0]}..{lsns[-1]}" if lsns else ""
            self.out(f"  records: {data} data + {close} close in {batches} batch(es){span}, "
                     f"{payload} payload bytes; reading stopped at {end}: {why}")
            return ([] if seg.free else lsns), (0 if seg.free else after)
        finally:
            file.close()

    def op_line(self, lsn: int, payload: bytes, checkpoint: int) -> str:
        state = "in checkpoint" if lsn <= checkpoint else "to replay"
        try:
            op = decode_op(payload)
        except Exception as exc:
            return f"LSN {lsn} ({state}): undecodable: {exc}"
        text = f"LSN {lsn} ({state}): {OPS.get(op.kind, op.kind)}"
        if op.kind in (OP_VERSION, OP_BIND, OP_PRUNE, OP_CREATE, OP_EXTEND):
            text += f" doc {op.doc_id}"
        if op.kind in (OP_BIND, OP_UNBIND, OP_CREATE):
            text += f" path {_short(op.path)}"
        if op.kind == OP_PRUNE:
            text += f" keep {op.keep}"
        if op.version is not None:
            text += " " + self.version_line(op.version)
        return text


def dump(path: str, *, pages: bool = False, records: bool = False, free: bool = False,
         page: int | None = None, out: Callable[[str], None] = print) -> list[str]:
    """Print the report for the database at `path`; returns the problems found. Raises
    OSError only when the database file itself cannot be opened."""
    file = ReadOnlyFile(path)
    try:
        d = Dump(path, file, out)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("headers", d.headers), ("trees", lambda: d.trees(pages)),
            ("records", lambda: d.documents(records)), ("free", lambda: d.free(free)),
        ]
        if pages:
            steps.append(("page map", d.page_map))
        if page is not None:
            steps.append((f"page {page}", lambda: d.page(page)))
        steps.append(("log", lambda: d.log(records)))
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # a section's own bug or damage it did not expect
                d.error(name, exc)
        out(f"problems: {len(d.problems)}" + "".join(f"\n  {p}" for p in d.problems))
        return d.problems
    finally:
        file.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("file", help="the database file (its log is FILE-wal)")
    parser.add_argument("--pages", action="store_true", help="page map and tree page lists")
    parser.add_argument("--records", action="store_true", help="paths, documents, log operations")
    parser.add_argument("--free", action="store_true", help="free extents and totals")
    parser.add_argument("--page", type=int, metavar="N", help="decode and hex-dump page N")
    args = parser.parse_args(argv)
    try:
        problems = dump(args.file, pages=args.pages, records=args.records, free=args.free,
                        page=args.page)
    except OSError as exc:
        print(f"dbdump: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
