"""An immutable, paged B+tree: bulk-built from sorted items, read lazily page by page.

The database builds a fresh tree at every checkpoint (copy-on-write onto newly allocated
pages) and frees the old tree's pages once no reader can see them, so a tree is never changed
in place. Opening one costs O(1): a `TreeRef` (root page, height, entry count, tree id) is all
that is known, and every lookup reads O(height) pages through a `PageStore`.

The byte layout is in docs/format/btree.md. The rules everything here relies on:

1. Every page is exactly `page_size` bytes and starts with a 64-byte header naming the
   format version, the tree's `kind`, the page type, its level, its own page number and the
   tree id. Its XXH3-64 checksum covers the whole page with the checksum field zeroed. A page
   is used only after all of those match: a torn or flipped page, a page written at the
   wrong place, or a stale page of an older tree (another tree id) is refused.
2. Leaves are level 0; an internal page at level L has children at level L - 1 only, and the
   root is at level `height - 1`. A descent takes exactly `height` steps and cannot loop.
3. Keys are strictly ascending within a page and across pages. An internal page with n
   children holds n - 1 separators: child i holds the keys in [sep[i-1], sep[i]), the
   missing ends being the bounds the page's parent gives it. A separator is the shortest
   prefix of a child's first key that sorts above the previous child's last key.
4. A value longer than `page_size // 4` lives in a chain of overflow pages, allocated
   together (contiguous), each naming the value's length and its own offset in the value;
   the leaf holds the length and the first page. A chain is read for exactly
   ceil(length / capacity) pages, so a damaged chain can neither loop nor make a reader
   allocate more than the leaf declared (at most `MAX_VALUE_SIZE`).
5. Every length or offset taken from a page is checked against the page before it is used.
   A violation raises `CorruptionError` (or its subclass `ChecksumMismatch`) naming the page;
   no reader lets IndexError, struct.error or MemoryError escape.

Page 0 is never part of a tree: root 0 means the empty tree, and next page 0 ends a chain.
A `Tree` may be read by many threads at once; `build` is single-threaded.
"""

from __future__ import annotations

import functools
import operator
import secrets
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from itertools import accumulate, pairwise
from typing import Any

import xxhash

from streamdb.errors import (
    ChecksumMismatch,
    CorruptionError,
    InvalidArgumentError,
)

__all__ = [
    "EMPTY",
    "FORMAT_VERSION",
    "MAX_HEIGHT",
    "MAX_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "PageStore",
    "PageType",
    "Tree",
    "TreeRef",
    "build",
    "inline_limit",
    "overflow_capacity",
]
from streamdb.storage.btree_format import (  # noqa: F401 - re-exported: the public API
    _BIG_ENDIAN,
    _CHECKSUM_AT,
    _HEADER,
    _INTERNAL,
    _LEAF,
    _OVERFLOW,
    _OVERFLOW_BATCH,
    _REF,
    _SEARCHES_BEFORE_KEY_LIST,
    _SLOT,
    _ZERO8,
    EMPTY,
    FLAG_OVERFLOW,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    MAX_HEIGHT,
    MAX_KEY_SIZE,
    MAX_PAGE_SIZE,
    MAX_TREE_ID,
    MAX_VALUE_SIZE,
    MIN_PAGE_SIZE,
    OFFSET_LIMIT,
    PageStore,
    PageType,
    TreeRef,
    _check_kind,
    _check_page_size,
    _coerce,
    _from_le,
    _internal_start,
    _leaf_start,
    _page_checksum,
    _to_le,
    inline_limit,
    overflow_capacity,
)

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


class _Level:
    """The internal page being filled at one level of a build."""

    __slots__ = ("children", "level", "low", "seps", "used", "written")

    def __init__(self, level: int) -> None:
        self.level = level
        self.children: list[int] = []
        self.seps: list[bytes] = []
        self.low = b""  # lower bound of the page: the separator of its first child
        self.used = HEADER_SIZE
        self.written = 0


class _Builder:
    """Encodes and writes the pages of one build, bottom-up, one page per level in memory."""

    def __init__(self, store: PageStore, kind: int, tree_id: int, pages: list[int]) -> None:
        self.store = store
        self.page_size = store.page_size
        self.limit = min(self.page_size, OFFSET_LIMIT)
        self.kind = kind
        self.tree_id = tree_id
        self.pages = pages
        self.levels: list[_Level] = []  # levels[i] fills a page at level i + 1

    def _allocate(self, n: int) -> int:
        first = self.store.allocate(n)
        if not isinstance(first, int) or first < 1:
            raise InvalidArgumentError(f"page store allocated page {first!r}; pages start at 1")
        self.pages.extend(range(first, first + n))
        return first

    def _header(self, buf: bytearray, at: int, ptype: int, level: int, count: int,
                page_no: int, nxt: int = 0, voff: int = 0, vlen: int = 0) -> None:
        _HEADER.pack_into(buf, at, MAGIC, FORMAT_VERSION, self.kind, ptype, level, 0, count,
                          self.tree_id, page_no, 0, nxt, voff, vlen, 0)

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
        self.store.write_pages(page_no, buf)
        return page_no

    def leaf(self, keys: list[bytes], values: list[bytes], flags: bytearray) -> int:
        n = len(keys)
        lengths = [*map(len, keys), *map(len, values)]
        offsets = array("H", accumulate(lengths, initial=_leaf_start(n)))
        return self._write_node(_LEAF, 0, n, _to_le(offsets) + flags,
                                b"".join(keys) + b"".join(values))

    def overflow(self, value: bytes) -> bytes:
        """Write `value` to a fresh contiguous chain; returns the leaf's 16-byte reference."""
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
        return _SLOT.pack(total, first)

    def push(self, level_no: int, sep: bytes, child: int) -> None:
        """Add `child` (whose keys are all >= sep) to the page being filled at level_no."""
        if len(self.levels) < level_no:
            self.levels.append(_Level(level_no))
        lv = self.levels[level_no - 1]
        need = 10 + len(sep)
        if lv.children and lv.used + need > self.limit:
            self.flush(lv)
        if not lv.children:  # the first child's separator is the page's own lower bound
            lv.low, need = sep, 10
        else:
            lv.seps.append(sep)
        lv.children.append(child)
        lv.used += need

    def flush(self, lv: _Level) -> None:
        if lv.level >= MAX_HEIGHT:
            raise InvalidArgumentError(f"the tree would be deeper than {MAX_HEIGHT} levels")
        n = len(lv.children)
        offsets = array("H", accumulate(map(len, lv.seps), initial=_internal_start(n)))
        page = self._write_node(_INTERNAL, lv.level, n,
                                _to_le(array("Q", lv.children)) + _to_le(offsets),
                                b"".join(lv.seps))
        low = lv.low
        lv.children, lv.seps, lv.used = [], [], HEADER_SIZE
        lv.written += 1
        self.push(lv.level + 1, low, page)

    def finish(self, count: int) -> TreeRef:
        """Flush the partly filled page of every level; the top level's one child is root."""
        for lv in self.levels:  # grows while flushing: a flush may add the next level up
            if lv.written == 0 and len(lv.children) == 1:
                return TreeRef(lv.children[0], lv.level, count, self.tree_id)
            self.flush(lv)
        raise AssertionError("unreachable: the top level holds a single child")


def build(store: PageStore, items: Iterable[tuple[bytes, bytes]], *, kind: int,
          tree_id: int | None = None, written: list[int] | None = None,
          ) -> tuple[TreeRef, list[int]]:
    """Write a new tree holding `items`; return its reference and every page it wrote.

    `items` must be strictly ascending by key; keys are bytes of 0..MAX_KEY_SIZE, values
    bytes of 0..MAX_VALUE_SIZE (other bytes-like objects are copied). It is consumed once,
    as a stream: memory is O(page_size * height) beyond the item in hand and the returned
    page list. `kind` (0..255) is stored in every page; `tree_id` (1..2**32-1) defaults to
    a random one. O(n) time.

    I/O: one `allocate(1)` and one `write_pages` per leaf or internal page; one
    `allocate(n)` per overflow value (its chain is contiguous), written about 1 MiB at a
    time. Nothing is flushed or fsynced. If `written` is given, every page number is
    appended to it as soon as it is allocated, so that after an exception the caller can
    still free what was written; it is also the list returned.

    Raises InvalidArgumentError for keys out of order, oversized keys or values, items that
    are not (bytes, bytes) pairs, a bad kind, tree_id or page_size, or a tree deeper than
    MAX_HEIGHT. Whatever the store or the iterable raise passes through.
    """
    _check_page_size(store.page_size)
    kind = _check_kind(kind)
    if tree_id is None:
        tree_id = secrets.randbelow(MAX_TREE_ID) + 1
    elif not isinstance(tree_id, int) or not 1 <= tree_id <= MAX_TREE_ID:
        raise InvalidArgumentError(f"tree_id must be in 1..{MAX_TREE_ID}: {tree_id!r}")
    pages = written if written is not None else []
    b = _Builder(store, kind, tree_id, pages)
    limit, inline_max = b.limit, inline_limit(store.page_size)
    keys: list[bytes] = []
    values: list[bytes] = []
    flags = bytearray()
    used = _leaf_start(0)
    low = b""  # lower bound of the leaf being filled
    prev = b""
    count = 0
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"item {count} is not a (key, value) pair") from exc
        if type(key) is not bytes:
            key = _coerce(key, "key")
        if type(value) is not bytes:
            value = _coerce(value, "value")
        if len(key) > MAX_KEY_SIZE:
            raise InvalidArgumentError(f"key of {len(key)} bytes exceeds {MAX_KEY_SIZE}")
        if count and key <= prev:
            raise InvalidArgumentError(
                f"keys not strictly ascending: {key[:64]!r} after {prev[:64]!r}")
        flag = 0
        if len(value) > inline_max:
            if len(value) > MAX_VALUE_SIZE:
                raise InvalidArgumentError(
                    f"value of {len(value)} bytes exceeds {MAX_VALUE_SIZE}")
            value, flag = b.overflow(value), FLAG_OVERFLOW
        need = 5 + len(key) + len(value)
        if used + need > limit:
            # A key (<= 2048 bytes) and an inline value (<= page_size / 4) always fit an
            # empty leaf, so the leaf being closed is not empty.
            b.push(1, low, b.leaf(keys, values, flags))
            low = _shortest_separator(prev, key)
            keys, values, flags, used = [], [], bytearray(), _leaf_start(0)
        keys.append(key)
        values.append(value)
        flags.append(flag)
        used += need
        prev = key
        count += 1
    if not count:
        return EMPTY, pages
    b.push(1, low, b.leaf(keys, values, flags))
    return b.finish(count), pages


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


class _Node:
    """A verified leaf or internal page.

    Leaf of n entries: `off` holds 2n+1 offsets; key i is buf[off[i]:off[i+1]] and value i
    is buf[off[n+i]:off[n+i+1]]. Internal page of n children: `children` holds n page
    numbers, `off` n offsets around the n-1 separators. Until a page has been searched
    `_SEARCHES_BEFORE_KEY_LIST` times (a cold lookup), it is searched over its offsets,
    touching O(log n) keys, each offset pair checked; then its key list is built (and fully
    checked), and searches are a C-level bisect.
    """

    __slots__ = ("buf", "children", "flags", "inline_only", "keys", "level", "n", "nkeys",
                 "off", "page_no", "searches")

    def __init__(self, page_no: int, level: int, n: int, buf: bytes, off: array[int],
                 children: array[int], flags: bytes) -> None:
        self.page_no = page_no
        self.level = level
        self.n = n
        self.nkeys = n if level == 0 else n - 1
        self.buf = buf
        self.off = off
        self.children = children
        self.flags = flags
        self.inline_only = flags.count(0) == len(flags)
        self.keys: list[bytes] | None = None
        self.searches = 0

    def _corrupt(self, what: str) -> CorruptionError:
        return CorruptionError(what, page=self.page_no)

    def key_list(self) -> list[bytes]:
        """All keys (separators of an internal page), checked. O(n) once, then cached."""
        keys = self.keys
        if keys is None:
            off, nk, buf = self.off, self.nkeys, self.buf
            bounds = off[: nk + 1]
            if bounds.tolist() != sorted(bounds):
                raise self._corrupt("key offsets out of order")
            keys = [buf[a:b] for a, b in pairwise(bounds)]
            if not all(map(operator.lt, keys, keys[1:])):
                raise self._corrupt("keys not strictly ascending")
            if keys and max(map(len, keys)) > MAX_KEY_SIZE:
                raise self._corrupt("key longer than the maximum")
            self.keys = keys
        return keys

    def key_at(self, i: int) -> bytes:
        off = self.off
        a, b = off[i], off[i + 1]
        if not off[0] <= a <= b <= off[self.nkeys]:
            raise self._corrupt(f"offsets of key {i} out of order")
        return self.buf[a:b]

    def search(self, key: bytes, right: bool) -> int:
        """bisect_right (right) or bisect_left of key among the keys: O(log n) compares."""
        keys = self.keys
        if keys is None:
            self.searches += 1
            if self.searches > _SEARCHES_BEFORE_KEY_LIST:
                keys = self.key_list()
            else:
                lo, hi = 0, self.nkeys
                while lo < hi:
                    mid = (lo + hi) >> 1
                    probe = self.key_at(mid)
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

    def overflow_ref(self, i: int) -> tuple[int, int]:
        slot = self.value_slot(i)
        if len(slot) != _SLOT.size:
            raise self._corrupt(f"overflow reference of entry {i} is {len(slot)} bytes")
        length, first = _SLOT.unpack(slot)
        return length, first


class _Reader:
    """Reads and verifies the pages of one tree. Holds no reference to the Tree (no cycle)."""

    def __init__(self, store: PageStore, kind: int, tree_id: int) -> None:
        self.store = store
        self.page_size = store.page_size
        self.limit = min(self.page_size, OFFSET_LIMIT)
        self.kind = kind
        self.tree_id = tree_id

    def check_page_no(self, page_no: int, referrer: int | None) -> None:
        if not 1 <= page_no < self.store.page_count():
            raise CorruptionError(f"page number {page_no} lies outside the file",
                                  page=page_no if referrer is None else referrer)

    def read(self, page_no: int, ptypes: tuple[int, ...],
             ) -> tuple[bytes | memoryview, tuple[Any, ...]]:
        """Read a page; verify its checksum and common header fields. One page read."""
        raw = self.store.read_page(page_no)
        if len(raw) != self.page_size:
            raise CorruptionError(f"page read returned {len(raw)} bytes", page=page_no)
        hdr = _HEADER.unpack_from(raw, 0)
        if hdr[9] != _page_checksum(raw):
            raise ChecksumMismatch("page checksum mismatch", page=page_no)
        magic, version, kind, ptype, _, flags, _, tree_id, number = hdr[:9]
        problem = (
            "not a B-tree page" if magic != MAGIC
            else f"page format version {version}" if version != FORMAT_VERSION
            else f"page of tree kind {kind}, expected {self.kind}" if kind != self.kind
            else f"page says it is page {number}" if number != page_no
            else "page of another tree (stale page)" if tree_id != self.tree_id
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
        ptype, level, n = hdr[3], hdr[4], hdr[6]
        if ptype == _LEAF:
            start = _leaf_start(n)
            if level != 0 or n < 1 or start > self.limit:
                raise CorruptionError(f"leaf of level {level} with {n} entries", page=page_no)
            off = _from_le("H", buf[HEADER_SIZE : start - n])
            flags = buf[start - n : start]
            if flags.translate(None, b"\x00\x01"):
                raise CorruptionError("unknown entry flags", page=page_no)
            children = array("Q")
            ends_ok = start == off[0] <= off[n] <= off[2 * n] <= self.limit
        else:
            start = _internal_start(n)
            if not 1 <= level < MAX_HEIGHT or n < 1 or start > self.limit:
                raise CorruptionError(f"internal page of level {level} with {n} children",
                                      page=page_no)
            children = _from_le("Q", buf[HEADER_SIZE : HEADER_SIZE + 8 * n])
            off = _from_le("H", buf[HEADER_SIZE + 8 * n : start])
            flags = b""
            ends_ok = start == off[0] <= off[n - 1] <= self.limit
        if not ends_ok:
            raise CorruptionError("entry offsets outside the page", page=page_no)
        return _Node(page_no, level, n, buf, off, children, flags)

    def chain(self, length: int, first: int, leaf: int,
              ) -> Iterator[tuple[int, bytes | memoryview, int]]:
        """(page, raw page, bytes used) of each page of an overflow chain, verified.

        Exactly ceil(length / capacity) page reads: each page must carry the next offset
        of the value, so a chain can neither loop nor run longer than the leaf declares.
        """
        if not inline_limit(self.page_size) < length <= MAX_VALUE_SIZE:
            raise CorruptionError(f"overflow value length {length}", page=leaf)
        cap = overflow_capacity(self.page_size)
        page, pos, referrer = first, 0, leaf
        while pos < length:
            self.check_page_no(page, referrer)
            raw, hdr = self.read(page, (_OVERFLOW,))
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
        length, first = node.overflow_ref(i)
        return b"".join([memoryview(raw)[HEADER_SIZE:used]
                         for _, raw, used in self.chain(length, first, node.page_no)])


def _successor(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with prefix (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


# One step of a descent: an internal page, the index of the child being visited, its
# separators, and its own bounds.
_Step = tuple[_Node, int, list[bytes], bytes, bytes | None]


class Tree:
    """Read access to one built tree. Opening costs O(1) and reads nothing.

    Keeps an LRU of up to `cache_pages` decoded leaf and internal pages (overflow pages are
    never cached), so a hot page is read and verified once. Safe for concurrent readers.
    """

    def __init__(self, store: PageStore, ref: TreeRef, *, kind: int,
                 cache_pages: int = 64) -> None:
        """No I/O. Raises InvalidArgumentError for a bad page size, kind or cache size,
        CorruptionError when the root lies outside the file."""
        _check_page_size(store.page_size)
        if not isinstance(cache_pages, int) or cache_pages < 0:
            raise InvalidArgumentError(f"cache_pages must be an int >= 0: {cache_pages!r}")
        self._ref = ref
        self._reader = _Reader(store, _check_kind(kind), ref.tree_id)
        if ref.root:
            self._reader.check_page_no(ref.root, None)
        self._load = functools.lru_cache(maxsize=cache_pages)(self._reader.node)

    @property
    def ref(self) -> TreeRef:
        return self._ref

    def __len__(self) -> int:
        """Number of entries. O(1), no I/O."""
        return self._ref.count

    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the page cache since the tree was opened."""
        info = self._load.cache_info()
        return info.hits, info.misses

    def _corrupt_level(self, node: _Node, level: int) -> CorruptionError:
        return CorruptionError(f"page at level {node.level}, expected {level}",
                               page=node.page_no)

    def get(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None.

        O(height) = O(log n) page reads on a cold cache, none on a warm one; O(log n)
        comparisons. An overflow value costs ceil(len / (page_size - 64)) more reads.
        Raises CorruptionError (ChecksumMismatch) for a damaged page, InvalidArgumentError
        for a key that is not bytes-like.
        """
        if type(key) is not bytes:
            key = _coerce(key, "key")
        ref, load = self._ref, self._load
        level = ref.height - 1
        if level < 0:
            return None
        node = load(ref.root)
        if node.level != level:
            raise self._corrupt_level(node, level)
        while level:
            level -= 1
            node = load(node.children[node.search(key, True)])
            if node.level != level:
                raise self._corrupt_level(node, level)
        i = node.search(key, False)
        if i == node.n:
            return None
        keys = node.keys
        if (keys[i] if keys is not None else node.key_at(i)) != key:
            return None
        return self._reader.value(node, i)

    def items(self, start: bytes = b"", stop: bytes | None = None,
              ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with start <= key < stop (stop None: to the end), in ascending order.

        Lazy: pages are read as the iterator advances. O(log n + k) time and page reads for
        k entries (plus their overflow pages), O(height) memory. Every leaf's keys are
        checked against the bounds its parents give it. Raises CorruptionError, and
        InvalidArgumentError (at once) for bounds that are not bytes-like.
        """
        if type(start) is not bytes:
            start = _coerce(start, "start")
        if stop is not None and type(stop) is not bytes:
            stop = _coerce(stop, "stop")
        return self._items(start, stop)

    def prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with `prefix`, ascending. Same costs as `items`."""
        if type(prefix) is not bytes:
            prefix = _coerce(prefix, "prefix")
        return self._items(prefix, _successor(prefix))

    def _items(self, start: bytes, stop: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        ref, load, reader = self._ref, self._load, self._reader
        if not ref.height or (stop is not None and stop <= start):
            return
        path: list[_Step] = []
        node, lo, hi = load(ref.root), b"", None
        seek: bytes | None = start
        while True:
            level = ref.height - 1 - len(path)
            if node.level != level:
                raise self._corrupt_level(node, level)
            keys = node.key_list()
            if keys and (keys[0] < lo or (hi is not None and keys[-1] >= hi)):
                raise CorruptionError("keys outside the bounds its parent gives",
                                      page=node.page_no)
            if level:  # descend: to `seek`'s child, or leftmost after a climb
                i = bisect_right(keys, seek) if seek is not None else 0
                path.append((node, i, keys, lo, hi))
                lo, hi = (keys[i - 1] if i else lo), (keys[i] if i < len(keys) else hi)
                node = load(node.children[i])
                continue
            i0 = bisect_left(keys, seek) if seek is not None else 0
            i1 = len(keys) if stop is None else bisect_left(keys, stop, i0)
            seek = None
            if node.inline_only:
                off, n, buf = node.off, node.n, node.buf
                bounds = off[n + i0 : n + i1 + 1]
                if (bounds.tolist() != sorted(bounds) or bounds[0] < off[n]
                        or bounds[-1] > off[2 * n]):
                    raise CorruptionError("value offsets out of order", page=node.page_no)
                values = [buf[a:b] for a, b in pairwise(bounds)]
                yield from zip(keys[i0:i1], values, strict=True)
            else:
                for i in range(i0, i1):
                    yield keys[i], reader.value(node, i)
            if i1 < len(keys) or (stop is not None and hi is not None and stop <= hi):
                return  # reached `stop` (the next leaf holds only keys >= hi)
            while path and path[-1][1] + 1 >= path[-1][0].n:
                path.pop()  # climb past exhausted internal pages
            if not path:
                return
            parent, i, pkeys, plo, phi = path[-1]
            i += 1
            path[-1] = (parent, i, pkeys, plo, phi)
            lo, hi = pkeys[i - 1], (pkeys[i] if i < len(pkeys) else phi)
            node = load(parent.children[i])

    def pages(self) -> Iterator[int]:
        """Every page of the tree, each once: internal, leaf and overflow pages.

        Reads and verifies every page, bypassing the cache: O(pages) reads, O(height *
        fanout) memory. Raises CorruptionError.
        """
        reader = self._reader
        # Each child one level below its parent, and no more pages than the file holds: a
        # damaged tree whose pages refer back up (a cycle) or share children still ends.
        stack = [(self._ref.root, self._ref.height - 1)] if self._ref.height else []
        budget = reader.store.page_count()
        while stack:
            page, level = stack.pop()
            node = reader.node(page)
            if node.level != level:
                raise self._corrupt_level(node, level)
            budget -= 1
            if budget < 0:
                raise CorruptionError("tree lists more pages than the file holds", page=page)
            yield page
            if node.level:
                stack.extend((child, level - 1) for child in reversed(node.children))
                continue
            for i in range(node.n):
                if node.flags[i]:
                    length, first = node.overflow_ref(i)
                    for ov, _, _ in reader.chain(length, first, page):
                        yield ov

    def _check(self) -> None:
        """Assert every structural invariant, reading every page afresh (no cache).

        Checksums and headers (rule 1), levels against the height (2), key order within
        and across pages and each page's keys against its parent's separators (3), overflow
        chains (4), the root's fan-out, entry count, inline value sizes, zero unused bytes,
        and that no page is reachable twice. O(pages) reads. Raises CorruptionError naming
        the first bad page.
        """
        ref, reader = self._ref, self._reader
        if not ref.height:
            return
        seen: set[int] = set()
        count, last = 0, None
        inline_max = inline_limit(reader.page_size)

        def visit(page: int, referrer: int | None) -> None:
            reader.check_page_no(page, referrer)
            if page in seen:
                raise CorruptionError("page reachable twice", page=page)
            seen.add(page)

        def zero_tail(buf: bytes | memoryview, used: int, page: int) -> None:
            tail = bytes(buf[used:])
            if tail.count(0) != len(tail):
                raise CorruptionError("unused bytes are not zero", page=page, offset=used)

        # (page, its parent, expected level, lower bound, upper bound or None)
        stack: list[tuple[int, int | None, int, bytes, bytes | None]] = [
            (ref.root, None, ref.height - 1, b"", None)]
        while stack:
            page, parent, level, lo, hi = stack.pop()
            visit(page, parent)
            node = reader.node(page)
            if node.level != level:
                raise self._corrupt_level(node, level)
            keys, off, n = node.key_list(), node.off, node.n
            zero_tail(node.buf, off[-1], page)
            if level:
                if parent is None and n < 2:
                    raise CorruptionError("internal root with a single child", page=page)
                if keys and (keys[0] <= lo or (hi is not None and keys[-1] >= hi)):
                    raise CorruptionError("separators outside the parent's bounds", page=page)
                lows, highs = [lo, *keys], [*keys, hi]
                stack.extend((node.children[i], page, level - 1, lows[i], highs[i])
                             for i in reversed(range(n)))
                continue
            if keys[0] < lo or (hi is not None and keys[-1] >= hi):
                raise CorruptionError("keys outside the parent's separators", page=page)
            if last is not None and keys[0] <= last:
                raise CorruptionError("keys not ascending across leaves", page=page)
            if off[n:].tolist() != sorted(off[n:]):
                raise CorruptionError("value offsets out of order", page=page)
            last = keys[-1]
            count += n
            for i in range(n):
                if not node.flags[i]:
                    if len(node.value_slot(i)) > inline_max:
                        raise CorruptionError(f"inline value {i} is too long", page=page)
                    continue
                length, first = node.overflow_ref(i)
                referrer = page
                for ov, raw, used in reader.chain(length, first, page):
                    visit(ov, referrer)
                    zero_tail(memoryview(raw), used, ov)
                    referrer = ov
        if count != ref.count:
            raise CorruptionError(f"tree holds {count} entries, its reference {ref.count}",
                                  page=ref.root)
