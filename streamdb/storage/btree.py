"""An immutable, paged B+tree: bulk-built from sorted items or updated copy-on-write, read
lazily page by page.

A checkpoint either builds a tree afresh (`build`) or derives the next tree from the last
one (`update`, `Tree.update`): the pages holding changed entries and their ancestors are
rewritten onto newly allocated pages, and every other page is shared, by number, with the
old tree. No page is ever changed in place: the old tree stays readable, and its pages the
new tree no longer uses are freed by the caller once no reader can see them. Opening a tree
costs O(1): a `TreeRef` (root page, height, entry count, the root's write id) is all that is
known, and every lookup reads O(height) pages through a `PageStore`.

The byte layout is in docs/format/btree.md. The rules everything here relies on:

1. Every page is exactly `page_size` bytes and starts with a 64-byte header naming the
   format version, the tree's `kind`, the page type, its level, its own page number and its
   write id: the random non-zero id of the `build` or `update` that wrote it. Its XXH3-64
   checksum covers the whole page with the checksum field zeroed. A page is used only after
   all of those match, and its write id matches the one its referrer names: the tree
   reference names the root's, an internal page each child's, a leaf each overflow chain's
   (a format 1 page names none: a format 1 tree was written by one build, so its pages
   carry their parent's id). A torn or flipped page, a page written at the wrong place, or
   a stale page left at a reused page number by any earlier write is refused.
2. Leaves are level 0; an internal page at level L has children at level L - 1 only, and the
   root is at level `height - 1`. A descent takes exactly `height` steps and cannot loop.
3. Keys are strictly ascending within a page and across pages. An internal page with n
   children holds n - 1 separators: child i holds the keys in [sep[i-1], sep[i]), the
   missing ends being the bounds the page's parent gives it, so the last key of child i-1
   < sep[i-1] <= the first key of child i. `build` makes each separator the shortest
   prefix of the child's first key that sorts above the previous child's last key;
   `update` does the same where it splits pages and keeps every other separator, which
   stays valid as keys come and go between them.
4. A value longer than `page_size // 4` lives in a chain of overflow pages, allocated
   together (contiguous), each naming the value's length and its own offset in the value;
   the leaf holds the length, the first page and (format 2) the chain's write id. A chain
   is read for exactly ceil(length / capacity) pages, so a damaged chain can neither loop
   nor make a reader allocate more than the leaf declared (at most `MAX_VALUE_SIZE`).
5. Every length or offset taken from a page is checked against the page before it is used.
   A violation raises `CorruptionError` (or its subclass `ChecksumMismatch`) naming the page;
   no reader lets IndexError, struct.error or MemoryError escape.
6. Copy-on-write: `build` and `update` write only pages the store newly allocates, never a
   page of another tree. An update shares every page it does not change (overflow chains
   of unchanged values included) and reports the old tree's pages the new tree no longer
   uses, so the old tree stays whole until its caller frees them.
7. Fill: an update splits a page that no longer fits into as few pages as hold it, evenly,
   and merges a page it rewrote that is less than half full with a sibling (splitting the
   pair evenly when it does not fit one page), until it is at least half full or has no
   sibling; an internal root has at least two children, an empty tree no page. The height
   stays O(log n) whatever the sequence of updates (`_check` verifies the structure, not
   the fill: a build leaves the last page of each level as full as it comes).

Page 0 is never part of a tree: root 0 means the empty tree, and next page 0 ends a chain.
A `Tree` may be read by many threads at once; `build` and `update` are single-threaded.
"""

from __future__ import annotations

import functools
import secrets
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import pairwise

from streamdb.errors import CorruptionError, InvalidArgumentError

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
    "update",
]
from streamdb.storage.btree_format import (  # noqa: F401 - re-exported: the public API
    EMPTY,
    FLAG_OVERFLOW,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAX_HEIGHT,
    MAX_KEY_SIZE,
    MAX_PAGE_SIZE,
    MAX_TREE_ID,
    MAX_VALUE_SIZE,
    MIN_PAGE_SIZE,
    READ_VERSIONS,
    PageStore,
    PageType,
    TreeRef,
    _check_kind,
    _check_page_size,
    _coerce,
    _leaf_start,
    inline_limit,
    overflow_capacity,
)
from streamdb.storage.btree_pages import (
    _Node,
    _Reader,
    _shortest_separator,
    _Writer,
    check_wid,
    stale,
)
from streamdb.storage.btree_update import Changes, update_tree

# ------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------


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


class _Builder(_Writer):
    """Writes the pages of one build, bottom-up, one page per level in memory."""

    def __init__(self, store: PageStore, kind: int, wid: int, pages: list[int]) -> None:
        super().__init__(store, kind, wid, pages)
        self.levels: list[_Level] = []  # levels[i] fills a page at level i + 1

    def push(self, level_no: int, sep: bytes, child: int) -> None:
        """Add `child` (whose keys are all >= sep) to the page being filled at level_no."""
        if len(self.levels) < level_no:
            self.levels.append(_Level(level_no))
        lv = self.levels[level_no - 1]
        need = 14 + len(sep)  # page number, write id, offset, separator
        if lv.children and lv.used + need > self.limit:
            self.close(lv)
        if not lv.children:  # the first child's separator is the page's own lower bound
            lv.low, need = sep, 14
        else:
            lv.seps.append(sep)
        lv.children.append(child)
        lv.used += need

    def close(self, lv: _Level) -> None:
        """Write the internal page being filled at `lv`; push it to the level above."""
        page = self.internal(lv.level, lv.children, [self.wid] * len(lv.children), lv.seps)
        low = lv.low
        lv.children, lv.seps, lv.used = [], [], HEADER_SIZE
        lv.written += 1
        self.push(lv.level + 1, low, page)

    def finish(self, count: int) -> TreeRef:
        """Flush the partly filled page of every level; the top level's one child is root."""
        for lv in self.levels:  # grows while flushing: a flush may add the next level up
            if lv.written == 0 and len(lv.children) == 1:
                return TreeRef(lv.children[0], lv.level, count, self.wid)
            self.close(lv)
        raise AssertionError("unreachable: the top level holds a single child")


def _build_fill(limit: int) -> int:
    """How full `build` fills a leaf: 7/8 of the page, so that the first updates of a
    freshly built tree (a record growing by a version, a few inserts) fit their leaf
    instead of splitting it (rule 7)."""
    return limit - limit // 8


def _new_wid(tree_id: int | None) -> int:
    return secrets.randbelow(MAX_TREE_ID) + 1 if tree_id is None else check_wid(tree_id)


def build(store: PageStore, items: Iterable[tuple[bytes, bytes]], *, kind: int,
          tree_id: int | None = None, written: list[int] | None = None,
          ) -> tuple[TreeRef, list[int]]:
    """Write a new tree holding `items`; return its reference and every page it wrote.

    `items` must be strictly ascending by key; keys are bytes of 0..MAX_KEY_SIZE, values
    bytes of 0..MAX_VALUE_SIZE (other bytes-like objects are copied). It is consumed once,
    as a stream: memory is O(page_size * height) beyond the item in hand and the returned
    page list. `kind` (0..255) is stored in every page; `tree_id` (1..2**32-1), the write id
    of every page, defaults to a random one. O(n) time. Leaves are filled to 7/8 of the
    page, internal pages to the page (the last of each level holds what is left).

    I/O: one `allocate(1)` and one `write_pages` per leaf or internal page; one
    `allocate(n)` per overflow value (its chain is contiguous), written about 1 MiB at a
    time. Nothing is read, flushed or fsynced. If `written` is given, every page number is
    appended to it as soon as it is allocated, so that after an exception the caller can
    still free what was written; it is also the list returned.

    Raises InvalidArgumentError for keys out of order, oversized keys or values, items that
    are not (bytes, bytes) pairs, a bad kind, tree_id or page_size, or a tree deeper than
    MAX_HEIGHT. Whatever the store or the iterable raise passes through.
    """
    _check_page_size(store.page_size)
    kind = _check_kind(kind)
    wid = _new_wid(tree_id)
    pages = written if written is not None else []
    b = _Builder(store, kind, wid, pages)
    limit, inline_max = _build_fill(b.limit), inline_limit(store.page_size)
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
            # empty leaf, even filled to 7/8, so the leaf being closed is not empty.
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
    ref = b.finish(count)
    b.flush()
    return ref, pages


def update(store: PageStore, ref: TreeRef, changes: Changes, *, kind: int,
           tree_id: int | None = None, written: list[int] | None = None,
           ) -> tuple[TreeRef, list[int], list[int]]:
    """`Tree(store, ref, kind=kind, cache_pages=0).update(changes, ...)`: the tree `ref`
    with `changes` applied, copy-on-write. See `Tree.update`."""
    return Tree(store, ref, kind=kind, cache_pages=0).update(
        changes, tree_id=tree_id, written=written)


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


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
    """Read access to one tree, and `update` to derive the next one. Opening costs O(1)
    and reads nothing.

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
        self._store = store
        self._reader = _Reader(store, _check_kind(kind))
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

    def _expect(self, node: _Node, level: int, wid: int) -> _Node:
        """`node` if it is at `level` with write id `wid` (rules 1 and 2)."""
        if node.level != level:
            raise self._corrupt_level(node, level)
        if node.wid != wid:
            raise stale(node.page_no, node.wid, wid)
        return node

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
        if node.level != level or node.wid != ref.tree_id:
            self._expect(node, level, ref.tree_id)
        while level:
            level -= 1
            i = node.search(key, True)
            wid = node.wids[i]
            node = load(node.children[i])
            if node.level != level or node.wid != wid:
                self._expect(node, level, wid)
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

    def keys(self, start: bytes = b"", stop: bytes | None = None) -> list[bytes]:
        """The keys k with start <= k < stop (stop None: to the end), ascending, as a new
        list; no value is read.

        O(log n + k) time and page reads for k keys: a descent, then each leaf's cached key
        list sliced (a C-level copy). Every leaf's first and last key are checked against
        the bounds its parents give it. Raises CorruptionError, InvalidArgumentError for
        bounds that are not bytes-like.
        """
        if type(start) is not bytes:
            start = _coerce(start, "start")
        if stop is not None and type(stop) is not bytes:
            stop = _coerce(stop, "stop")
        out: list[bytes] = []
        for node, i0, i1 in self._spans(start, stop):
            out += node.key_list()[i0:i1]
        return out

    def prefix_keys(self, prefix: bytes) -> list[bytes]:
        """The keys starting with `prefix`, ascending, as a new list. Same costs as `keys`."""
        if type(prefix) is not bytes:
            prefix = _coerce(prefix, "prefix")
        return self.keys(prefix, _successor(prefix))

    def prefix_texts(self, prefix: bytes, *, reverse: bool = False) -> list[str]:
        """The keys starting with `prefix`, in key order, each decoded from UTF-8 (reversed
        first, with `reverse`: a tree of reversed texts gives the texts back), as a new
        list; no value is read.

        O(log n + k) for k keys: a descent, then each leaf's cached list of decoded keys
        sliced. A leaf's list is built once while it stays cached, from one decoded string
        when its keys are ASCII (one object per key). Raises CorruptionError for a damaged
        page or a leaf read that holds a key that is not UTF-8 (a leaf is decoded whole),
        InvalidArgumentError for a prefix that is not bytes-like.
        """
        if type(prefix) is not bytes:
            prefix = _coerce(prefix, "prefix")
        out: list[str] = []
        for node, i0, i1 in self._spans(prefix, _successor(prefix)):
            texts = node.text_list(reverse)
            out += texts if i0 == 0 and i1 == node.n else texts[i0:i1]
        return out

    def _spans(self, start: bytes, stop: bytes | None) -> Iterator[tuple[_Node, int, int]]:
        """(leaf, i0, i1) for each leaf holding keys in [start, stop), ascending: its keys
        i0..i1-1 are those. Each page's level and write id are checked (rules 1, 2), each
        internal page's separators and each leaf's first and last key against the bounds
        its parents give it (rule 3). O(log n + leaves), O(height) memory."""
        ref, load = self._ref, self._load
        if not ref.height or (stop is not None and stop <= start):
            return
        path: list[_Step] = []
        node = self._expect(load(ref.root), ref.height - 1, ref.tree_id)
        lo: bytes = b""
        hi: bytes | None = None
        seek: bytes | None = start
        while True:
            if node.level:  # descend: to `seek`'s child, or leftmost after a climb
                keys = node.key_list()
                if keys and (keys[0] < lo or (hi is not None and keys[-1] >= hi)):
                    raise CorruptionError("keys outside the bounds its parent gives",
                                          page=node.page_no)
                i = bisect_right(keys, seek) if seek is not None else 0
                path.append((node, i, keys, lo, hi))
                lo, hi = (keys[i - 1] if i else lo), (keys[i] if i < len(keys) else hi)
                node = self._expect(load(node.children[i]), node.level - 1, node.wids[i])
                continue
            first, last = node.first_last()
            if first < lo or (hi is not None and last >= hi):
                raise CorruptionError("keys outside the bounds its parent gives",
                                      page=node.page_no)
            n = node.n
            i0 = node.search(seek, False) if seek is not None and seek > first else 0
            i1 = n if stop is None or last < stop else node.search(stop, False)
            seek = None
            yield node, i0, max(i0, i1)
            if i1 < n or (stop is not None and hi is not None and stop <= hi):
                return  # reached `stop` (the next leaf holds only keys >= hi)
            while path and path[-1][1] + 1 >= path[-1][0].n:
                path.pop()  # climb past exhausted internal pages
            if not path:
                return
            parent, i, pkeys, plo, phi = path[-1]
            i += 1
            path[-1] = (parent, i, pkeys, plo, phi)
            lo, hi = pkeys[i - 1], (pkeys[i] if i < len(pkeys) else phi)
            node = self._expect(load(parent.children[i]), parent.level - 1, parent.wids[i])

    def _items(self, start: bytes, stop: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        reader = self._reader
        for node, i0, i1 in self._spans(start, stop):
            keys = node.key_list()
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

    def update(self, changes: Changes, *, tree_id: int | None = None,
               written: list[int] | None = None) -> tuple[TreeRef, list[int], list[int]]:
        """The next tree: this one with `changes` applied, copy-on-write (rules 6, 7).

        `changes` is an iterable of (key, value) with strictly ascending keys; value None
        deletes the key (nothing happens if it is absent), bytes sets it. Returns
        `(ref, freed, written)`: the new tree's reference; `freed`, the pages of this tree
        the new one does not use (rewritten and merged pages, overflow chains of deleted
        or replaced values), each once; and `written`, every page written (all of them in
        the new tree). Every other page of this tree is shared with the new one, which
        therefore needs this tree's pages until `freed` are freed. This tree, its reference
        and its readers are unaffected: the caller frees `freed` once nothing reads this
        tree any more, and keeps the others.

        Cost: O(c log n) for c changes, independent of the tree's size: each changed leaf
        and its ancestors are read (through this tree's page cache) and rewritten once,
        with the siblings an underfull page is merged with; untouched entries are copied
        as stored bytes (never decoded), and untouched overflow chains are shared.
        Memory O(pages rewritten). `tree_id` (1..2**32-1), the write id of every page
        written, defaults to a random one.

        I/O: page reads of the descent, one `allocate(1)` and `write_pages` per page
        written, one `allocate(n)` per new overflow value; nothing is flushed or fsynced.
        If `written` is given, each page is appended to it as soon as it is allocated (it
        is also the list returned), so that after an exception the caller can free them.

        Raises InvalidArgumentError for changes out of order, oversized keys or values,
        items that are not (bytes, bytes or None) pairs, a bad tree_id, or a tree that
        would be deeper than MAX_HEIGHT; CorruptionError for a damaged page of this tree
        (or an entry count that disagrees with its pages). This tree is never changed;
        pages already written are in `written`.
        """
        return update_tree(self._store, self._reader, self._load, self._ref, changes,
                           _new_wid(tree_id), written if written is not None else [])

    def pages(self) -> Iterator[int]:
        """Every page of the tree, each once: internal, leaf and overflow pages.

        Reads and verifies every page, bypassing the cache: O(pages) reads, O(height *
        fanout) memory. Raises CorruptionError.
        """
        reader = self._reader
        # Each child one level below its parent, and no more pages than the file holds: a
        # damaged tree whose pages refer back up (a cycle) or share children still ends.
        ref = self._ref
        stack = [(ref.root, ref.height - 1, ref.tree_id)] if ref.height else []
        budget = reader.store.page_count()
        while stack:
            page, level, wid = stack.pop()
            node = self._expect(reader.node(page), level, wid)
            budget -= 1
            if budget < 0:
                raise CorruptionError("tree lists more pages than the file holds", page=page)
            yield page
            if node.level:
                stack.extend(zip(reversed(node.children), [level - 1] * node.n,
                                 reversed(node.wids), strict=True))
                continue
            for i in range(node.n):
                if node.flags[i]:
                    length, first, chain = node.overflow_ref(i)
                    for ov, _, _ in reader.chain(length, first, page, chain):
                        yield ov

    def _check(self) -> None:
        """Assert every structural invariant, reading every page afresh (no cache).

        Checksums, headers and write ids against each referrer's (rule 1), levels against
        the height (2), key order within and across pages and each page's keys against its
        parent's separators (3), overflow chains (4), the root's fan-out, entry count,
        inline value sizes, zero unused bytes, and that no page is reachable twice. O(pages)
        reads. Raises CorruptionError naming the first bad page.
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

        # (page, its parent, expected level, write id, lower bound, upper bound or None)
        stack: list[tuple[int, int | None, int, int, bytes, bytes | None]] = [
            (ref.root, None, ref.height - 1, ref.tree_id, b"", None)]
        while stack:
            page, parent, level, wid, lo, hi = stack.pop()
            visit(page, parent)
            node = self._expect(reader.node(page), level, wid)
            keys, off, n = node.key_list(), node.off, node.n
            zero_tail(node.buf, off[-1], page)
            if level:
                if parent is None and n < 2:
                    raise CorruptionError("internal root with a single child", page=page)
                if keys and (keys[0] <= lo or (hi is not None and keys[-1] >= hi)):
                    raise CorruptionError("separators outside the parent's bounds", page=page)
                lows, highs = [lo, *keys], [*keys, hi]
                stack.extend((node.children[i], page, level - 1, node.wids[i], lows[i],
                              highs[i]) for i in reversed(range(n)))
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
                length, first, chain = node.overflow_ref(i)
                referrer = page
                for ov, raw, used in reader.chain(length, first, page, chain):
                    visit(ov, referrer)
                    zero_tail(memoryview(raw), used, ov)
                    referrer = ov
        if count != ref.count:
            raise CorruptionError(f"tree holds {count} entries, its reference {ref.count}",
                                  page=ref.root)
