"""The B+tree's page codec: verifying and decoding pages (`_Reader`, `_Node`) and encoding
and writing them (`_Writer`), shared by `build` and `Tree` in `streamdb.storage.btree` and by
`update` in `streamdb.storage.btree_update` (layout: docs/format/btree.md).

The underscore names are private to the B+tree: these modules are one concept split in
files for size. The rules they keep are numbered in `streamdb.storage.btree`.
"""

from __future__ import annotations

import operator
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate, pairwise
from typing import Any

import xxhash

from streamdb.errors import (
    ChecksumMismatch,
    CorruptionError,
    InvalidArgumentError,
)
from streamdb.storage.btree_format import (
    _CHECKSUM_AT,
    _HEADER,
    _INTERNAL,
    _LEAF,
    _OVERFLOW,
    _OVERFLOW_BATCH,
    _SEARCHES_BEFORE_KEY_LIST,
    _SLOT,
    _SLOT_V1,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    MAX_HEIGHT,
    MAX_KEY_SIZE,
    MAX_TREE_ID,
    MAX_VALUE_SIZE,
    OFFSET_LIMIT,
    READ_VERSIONS,
    PageStore,
    _from_le,
    _internal_start,
    _leaf_start,
    _page_checksum,
    _to_le,
    inline_limit,
    overflow_capacity,
)

# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


class _Node:
    """A verified leaf or internal page.

    Leaf of n entries: `off` holds 2n+1 offsets; key i is buf[off[i]:off[i+1]] and value i
    is buf[off[n+i]:off[n+i+1]]. Internal page of n children: `children` holds n page
    numbers and `wids` their n write ids (a version 1 page names none: its children carry
    its own), `off` n offsets around the n-1 separators. `wid` is the page's own write id:
    its referrer checks it (rule 1). Until a page has been searched
    `_SEARCHES_BEFORE_KEY_LIST` times (a cold lookup), it is searched over its offsets,
    touching O(log n) keys, each offset pair checked; then its key list is built (and fully
    checked), and searches are a C-level bisect.
    """

    __slots__ = ("buf", "children", "flags", "inline_only", "keys", "level", "n", "nkeys",
                 "off", "page_no", "rtexts", "searches", "texts", "version", "wid", "wids")

    def __init__(self, page_no: int, level: int, n: int, buf: bytes, off: array[int],
                 children: array[int], wids: array[int], flags: bytes, version: int,
                 wid: int) -> None:
        self.page_no = page_no
        self.level = level
        self.n = n
        self.nkeys = n if level == 0 else n - 1
        self.buf = buf
        self.off = off
        self.children = children
        self.wids = wids
        self.flags = flags
        self.version = version
        self.wid = wid
        self.inline_only = flags.count(0) == len(flags)
        self.keys: list[bytes] | None = None
        self.texts: list[str] | None = None
        self.rtexts: list[str] | None = None
        self.searches = 0

    def _corrupt(self, what: str) -> CorruptionError:
        return CorruptionError(what, page=self.page_no)

    def key_bounds(self) -> list[int]:
        """The nkeys + 1 key offsets, checked non-decreasing (so every key lies in the
        page: `_Reader.node` checked the ends). O(n)."""
        bounds = self.off[: self.nkeys + 1].tolist()
        if bounds != sorted(bounds):
            raise self._corrupt("key offsets out of order")
        return bounds

    def key_list(self) -> list[bytes]:
        """All keys (separators of an internal page), checked: offsets in order, keys
        strictly ascending and at most MAX_KEY_SIZE long. O(n) once, then cached. Callers
        must not change the list."""
        keys = self.keys
        if keys is None:
            bounds, buf = self.key_bounds(), self.buf
            keys = [buf[a:b] for a, b in pairwise(bounds)]
            if not all(map(operator.lt, keys, keys[1:])):
                raise self._corrupt("keys not strictly ascending")
            if keys and max(map(operator.sub, bounds[1:], bounds)) > MAX_KEY_SIZE:
                raise self._corrupt("key longer than the maximum")
            self.keys = keys
        return keys

    def text_list(self, reverse: bool) -> list[str]:
        """All keys of a leaf decoded as UTF-8 text (each key reversed first if `reverse`),
        in key order. O(n) once per direction, then cached; callers must not change the
        list. ASCII keys are sliced out of one decoded string: one object per key.

        Checks the offsets (rule 5) but not the keys' order or lengths (`key_list` does).
        Raises CorruptionError for offsets out of order or a key that is not UTF-8.
        """
        texts = self.rtexts if reverse else self.texts
        if texts is not None:
            return texts
        bounds, buf = self.key_bounds(), self.buf
        end = bounds[-1]
        if buf[bounds[0] : end].isascii():  # byte offsets are character offsets
            s = buf[:end].decode("latin-1")
            if reverse:
                texts = [s[b - 1 : a - 1 : -1] for a, b in pairwise(bounds)]
            else:
                texts = [s[a:b] for a, b in pairwise(bounds)]
        else:
            try:
                if reverse:
                    texts = [buf[a:b][::-1].decode() for a, b in pairwise(bounds)]
                else:
                    texts = [buf[a:b].decode() for a, b in pairwise(bounds)]
            except UnicodeDecodeError as exc:
                raise self._corrupt(f"a key is not UTF-8 text: {exc}") from exc
        if reverse:
            self.rtexts = texts
        else:
            self.texts = texts
        return texts

    def key_at(self, i: int) -> bytes:
        off = self.off
        a, b = off[i], off[i + 1]
        if not off[0] <= a <= b <= off[self.nkeys]:
            raise self._corrupt(f"offsets of key {i} out of order")
        return self.buf[a:b]

    def first_last(self) -> tuple[bytes, bytes]:
        """The first and last key (the page must hold one). O(1) once the key list is
        built, else two checked slices."""
        keys = self.keys
        if keys is not None:
            return keys[0], keys[-1]
        return self.key_at(0), self.key_at(self.nkeys - 1)

    def search(self, key: bytes, right: bool) -> int:
        """bisect_right (right) or bisect_left of key among the keys: O(log n) compares."""
        keys = self.keys
        if keys is None:
            self.searches += 1
            if self.searches > _SEARCHES_BEFORE_KEY_LIST:
                keys = self.key_list()
            else:
                off, buf, nkeys = self.off, self.buf, self.nkeys
                first, last = off[0], off[nkeys]
                lo, hi = 0, nkeys
                while lo < hi:
                    mid = (lo + hi) >> 1
                    a, b = off[mid], off[mid + 1]
                    if not first <= a <= b <= last:  # as key_at checks
                        raise self._corrupt(f"offsets of key {mid} out of order")
                    probe = buf[a:b]
                    if probe < key or (right and probe == key):
                        lo = mid + 1
                    else:
                        hi = mid
                return lo
        return bisect_right(keys, key) if right else bisect_left(keys, key)

    def value_slot(self, i: int) -> bytes:
        """The bytes stored for value i: the value, or its overflow reference (flags[i])."""
        off, n = self.off, self.n
        a, b = off[n + i], off[n + i + 1]
        if not off[n] <= a <= b <= off[2 * n]:
            raise self._corrupt(f"offsets of value {i} out of order")
        return self.buf[a:b]

    def slot_list(self) -> list[bytes]:
        """Every value slot of a leaf, as stored (a value or an overflow reference), its
        offsets checked. O(n); not cached."""
        off, n, buf = self.off, self.n, self.buf
        bounds = off[n : 2 * n + 1].tolist()
        if bounds != sorted(bounds):
            raise self._corrupt("value offsets out of order")
        return [buf[a:b] for a, b in pairwise(bounds)]

    def overflow_ref(self, i: int) -> tuple[int, int, int]:
        """(value length, first page, write id of the chain) of entry i, an overflow value.
        A version 1 leaf's chains carry the leaf's own write id."""
        return parse_overflow_ref(self.value_slot(i), self.version, self.wid, self.page_no)


def parse_overflow_ref(slot: bytes, version: int, wid: int, page: int,
                       ) -> tuple[int, int, int]:
    """(length, first page, write id) of an overflow reference stored in a leaf of format
    `version` whose write id is `wid`. Raises CorruptionError for a wrong size."""
    fmt = _SLOT if version >= 2 else _SLOT_V1
    if len(slot) != fmt.size:
        raise CorruptionError(f"overflow reference of {len(slot)} bytes", page=page)
    if version >= 2:
        length, first, chain = _SLOT.unpack(slot)
        return length, first, chain
    length, first = _SLOT_V1.unpack(slot)
    return length, first, wid


def stale(page: int, found: int, expected: int) -> CorruptionError:
    """The error for a page whose write id is not the one its referrer names (rule 1)."""
    return CorruptionError(f"page of another tree (stale page): write id {found:#x}, its "
                           f"referrer names {expected:#x}", page=page)


class _Reader:
    """Reads and verifies the pages of one tree. Holds no reference to the Tree (no cycle)."""

    def __init__(self, store: PageStore, kind: int) -> None:
        self.store = store
        self.page_size = store.page_size
        self.limit = min(self.page_size, OFFSET_LIMIT)
        self.kind = kind

    def check_page_no(self, page_no: int, referrer: int | None) -> None:
        if not 1 <= page_no < self.store.page_count():
            raise CorruptionError(f"page number {page_no} lies outside the file",
                                  page=page_no if referrer is None else referrer)

    def read(self, page_no: int, ptypes: tuple[int, ...],
             ) -> tuple[bytes | memoryview, tuple[Any, ...]]:
        """Read a page; verify its checksum and common header fields. One page read. The
        write id is the caller's to check against the referrer's (rule 1)."""
        raw = self.store.read_page(page_no)
        if len(raw) != self.page_size:
            raise CorruptionError(f"page read returned {len(raw)} bytes", page=page_no)
        hdr = _HEADER.unpack_from(raw, 0)
        if hdr[9] != _page_checksum(raw):
            raise ChecksumMismatch("page checksum mismatch", page=page_no)
        magic, version, kind, ptype, _, flags, _, wid, number = hdr[:9]
        problem = (
            "not a B-tree page" if magic != MAGIC
            else f"page format version {version}" if version not in READ_VERSIONS
            else f"page of tree kind {kind}, expected {self.kind}" if kind != self.kind
            else f"page says it is page {number}" if number != page_no
            else "page with write id 0" if not wid
            else f"unexpected page type {ptype}" if ptype not in ptypes
            else f"unknown page flags {flags:#x}" if flags
            else "overflow fields set in a tree page" if ptype != _OVERFLOW and any(hdr[10:13])
            else None
        )
        if problem:
            raise CorruptionError(problem, page=page_no)
        return raw, hdr

    def node(self, page_no: int, referrer: int | None = None) -> _Node:
        """Read, verify and decode a leaf or internal page. One page read, O(n) C-level work.

        `page_no` is first checked to lie inside the file (naming `referrer` if not).
        """
        self.check_page_no(page_no, referrer)
        raw, hdr = self.read(page_no, (_LEAF, _INTERNAL))
        buf = raw if type(raw) is bytes else bytes(raw)
        version, ptype, level, n, wid = hdr[1], hdr[3], hdr[4], hdr[6], hdr[7]
        if ptype == _LEAF:
            start = _leaf_start(n)
            if level != 0 or n < 1 or start > self.limit:
                raise CorruptionError(f"leaf of level {level} with {n} entries", page=page_no)
            off = _from_le("H", buf[HEADER_SIZE : start - n])
            flags = buf[start - n : start]
            if flags.translate(None, b"\x00\x01"):
                raise CorruptionError("unknown entry flags", page=page_no)
            children = wids = _NONE
            ends_ok = start == off[0] <= off[n] <= off[2 * n] <= self.limit
        else:
            start = _internal_start(n, version)
            if not 1 <= level < MAX_HEIGHT or n < 1 or start > self.limit:
                raise CorruptionError(f"internal page of level {level} with {n} children",
                                      page=page_no)
            at = HEADER_SIZE + 8 * n
            children = _from_le("Q", buf[HEADER_SIZE:at])
            if version >= 2:
                wids = _from_le("I", buf[at : at + 4 * n])
                at += 4 * n
            else:
                wids = array("I", (wid,)) * n
            off = _from_le("H", buf[at:start])
            flags = b""
            ends_ok = start == off[0] <= off[n - 1] <= self.limit
        if not ends_ok:
            raise CorruptionError("entry offsets outside the page", page=page_no)
        return _Node(page_no, level, n, buf, off, children, wids, flags, version, wid)

    def chain(self, length: int, first: int, leaf: int, wid: int,
              ) -> Iterator[tuple[int, bytes | memoryview, int]]:
        """(page, raw page, bytes used) of each page of an overflow chain, verified.

        Exactly ceil(length / capacity) page reads: each page must carry the next offset
        of the value and the write id `wid` the leaf names, so a chain can neither loop nor
        run longer than the leaf declares.
        """
        if not inline_limit(self.page_size) < length <= MAX_VALUE_SIZE:
            raise CorruptionError(f"overflow value length {length}", page=leaf)
        cap = overflow_capacity(self.page_size)
        page, pos, referrer = first, 0, leaf
        while pos < length:
            self.check_page_no(page, referrer)
            raw, hdr = self.read(page, (_OVERFLOW,))
            if hdr[7] != wid:
                raise stale(page, hdr[7], wid)
            chunk = min(cap, length - pos)
            if (hdr[4], hdr[6], hdr[11], hdr[12]) != (0, chunk, pos, length):
                raise CorruptionError("overflow page does not continue its value", page=page)
            if (hdr[10] == 0) != (pos + chunk == length):
                raise CorruptionError("overflow chain and value length disagree", page=page)
            yield page, raw, HEADER_SIZE + chunk
            pos += chunk
            page, referrer = hdr[10], page

    def value(self, node: _Node, i: int) -> bytes:
        """Value i of a leaf; an overflow value costs its chain's page reads."""
        if not node.flags[i]:
            return node.value_slot(i)
        length, first, wid = node.overflow_ref(i)
        return b"".join([memoryview(raw)[HEADER_SIZE:used]
                         for _, raw, used in self.chain(length, first, node.page_no, wid)])


_NONE: array[int] = array("Q")

# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def _shortest_separator(prev: bytes, first: bytes) -> bytes:
    """Shortest prefix s of `first` with prev < s <= first (given prev < first).

    O(log len) slice comparisons: a binary search for the common prefix length.
    """
    lo, hi = 0, min(len(prev), len(first))
    while lo < hi:  # invariant: prev[:lo] == first[:lo]
        mid = (lo + hi + 1) >> 1
        if prev[:mid] == first[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return first[: lo + 1]


def leaf_size(keys: list[bytes], slots: list[bytes]) -> int:
    """Bytes a leaf of these keys and value slots uses. O(n)."""
    return _leaf_start(len(keys)) + sum(map(len, keys)) + sum(map(len, slots))


def internal_size(seps: list[bytes]) -> int:
    """Bytes a (version 2) internal page of len(seps) + 1 children uses. O(n)."""
    return _internal_start(len(seps) + 1) + sum(map(len, seps))


class _Writer:
    """Encodes and writes the pages of one build or update, all under one write id, in
    format version 2. Every page is allocated from the store (never written where another
    page lies) and listed in `pages` as soon as it is allocated.

    Leaf and internal pages are written in batches: consecutive page numbers (what a run of
    single-page allocations from one free extent gives) go to the store as one
    `write_pages` of up to about 1 MiB, so `flush()` must follow the last page. Nothing
    reads a page a build or update is writing (rule 6), so holding them back is safe."""

    def __init__(self, store: PageStore, kind: int, wid: int, pages: list[int]) -> None:
        self.store = store
        self.page_size = store.page_size
        self.limit = min(self.page_size, OFFSET_LIMIT)
        self.kind = kind
        self.wid = wid
        self.pages = pages
        self._batch: list[bytes | bytearray] = []  # pages held back, consecutive
        self._batch_at = 0  # the first one's page number
        self._batch_max = max(1, _OVERFLOW_BATCH // self.page_size)
        self._pool: list[int] = []  # pages `reserve` allocated, the next one last

    def _emit(self, page_no: int, page: bytearray) -> None:
        """Write `page` at `page_no`, batched with the pages just before it."""
        batch = self._batch
        if batch and (page_no != self._batch_at + len(batch) or len(batch) >= self._batch_max):
            self.flush()
        if not batch:
            self._batch_at = page_no
        batch.append(page)

    def flush(self) -> None:
        """Write the pages held back. One `write_pages` call."""
        batch = self._batch
        if batch:
            self.store.write_pages(self._batch_at,
                                   batch[0] if len(batch) == 1 else b"".join(batch))
            batch.clear()

    def reserve(self, n: int) -> None:
        """The next n single-page allocations are made now, in one call, if the store has
        `allocate_pages(n)` (a list of n page numbers); else each is made when needed."""
        many = getattr(self.store, "allocate_pages", None)
        if many is None or n <= 1:
            return
        pages = many(n)
        if len(pages) != n or not all(isinstance(p, int) and p >= 1 for p in pages):
            raise InvalidArgumentError(f"page store allocated {pages[:8]!r}...; pages start at 1")
        self.pages.extend(pages)
        self._pool.extend(reversed(pages))

    def _allocate(self, n: int) -> int:
        if n == 1 and self._pool:
            return self._pool.pop()
        first = self.store.allocate(n)
        if not isinstance(first, int) or first < 1:
            raise InvalidArgumentError(f"page store allocated page {first!r}; pages start at 1")
        self.pages.extend(range(first, first + n))
        return first

    def _header(self, buf: bytearray, at: int, ptype: int, level: int, count: int,
                page_no: int, nxt: int = 0, voff: int = 0, vlen: int = 0) -> None:
        _HEADER.pack_into(buf, at, MAGIC, FORMAT_VERSION, self.kind, ptype, level, 0, count,
                          self.wid, page_no, 0, nxt, voff, vlen, 0)

    def _seal(self, buf: bytearray, at: int) -> None:
        """Store the checksum of the page at buf[at:]; its checksum field is still zero."""
        ps = self.page_size
        struct.pack_into("<Q", buf, at + _CHECKSUM_AT,
                         xxhash.xxh3_64_intdigest(memoryview(buf)[at : at + ps]))

    def _write_node(self, ptype: int, level: int, n: int, index: bytes, data: bytes) -> int:
        page_no = self._allocate(1)
        buf = bytearray(self.page_size)
        self._header(buf, 0, ptype, level, n, page_no)
        end = HEADER_SIZE + len(index)
        buf[HEADER_SIZE:end] = index
        buf[end : end + len(data)] = data
        assert end + len(data) <= self.limit
        self._seal(buf, 0)
        self._emit(page_no, buf)
        return page_no

    def leaf(self, keys: list[bytes], slots: list[bytes], flags: bytes | bytearray) -> int:
        """Write a leaf; `slots` are the values as stored (overflow references for the
        entries flagged FLAG_OVERFLOW). Returns its page number."""
        n = len(keys)
        lengths = [*map(len, keys), *map(len, slots)]
        offsets = array("H", accumulate(lengths, initial=_leaf_start(n)))
        return self._write_node(_LEAF, 0, n, _to_le(offsets) + flags,
                                b"".join(keys) + b"".join(slots))

    def internal(self, level: int, children: list[int], wids: list[int],
                 seps: list[bytes]) -> int:
        """Write an internal page at `level` (1..MAX_HEIGHT-1) over `children` (their write
        ids `wids`) and the len(children) - 1 separators between them."""
        if level >= MAX_HEIGHT:
            raise InvalidArgumentError(f"the tree would be deeper than {MAX_HEIGHT} levels")
        n = len(children)
        offsets = array("H", accumulate(map(len, seps), initial=_internal_start(n)))
        index = _to_le(array("Q", children)) + _to_le(array("I", wids)) + _to_le(offsets)
        return self._write_node(_INTERNAL, level, n, index, b"".join(seps))

    def overflow(self, value: bytes) -> bytes:
        """Write `value` to a fresh contiguous chain; returns the leaf's 20-byte reference."""
        ps = self.page_size
        cap = overflow_capacity(ps)
        total = len(value)
        n = -(-total // cap)
        first = self._allocate(n)
        per_write = max(1, _OVERFLOW_BATCH // ps)
        src = memoryview(value)
        for b0 in range(0, n, per_write):
            b1 = min(n, b0 + per_write)
            buf = bytearray((b1 - b0) * ps)
            for i in range(b0, b1):
                at, pos = (i - b0) * ps, i * cap
                chunk = src[pos : pos + cap]
                nxt = first + i + 1 if i + 1 < n else 0
                self._header(buf, at, _OVERFLOW, 0, len(chunk), first + i, nxt, pos, total)
                buf[at + HEADER_SIZE : at + HEADER_SIZE + len(chunk)] = chunk
                self._seal(buf, at)
            self.store.write_pages(first + b0, buf)
        return _SLOT.pack(total, first, self.wid)


def check_wid(wid: object) -> int:
    """A write id given by a caller: an int in 1..MAX_TREE_ID."""
    if not isinstance(wid, int) or not 1 <= wid <= MAX_TREE_ID:
        raise InvalidArgumentError(f"tree_id must be in 1..{MAX_TREE_ID}: {wid!r}")
    return wid
