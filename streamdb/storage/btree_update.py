"""Copy-on-write update of a paged B+tree: `Tree.update` and `update` of
`streamdb.storage.btree` (rules 6 and 7 there; layout in docs/format/btree.md).

Three passes over the pages the changes touch, nothing else:

1. Apply: each change descends from the root to its leaf (consecutive changes in one leaf
   descend once), copying every internal page on the way into an editable `_Inner` (its
   separators and child references) and the leaf into a `_Leaf`: a list of segments, each
   either a run of consecutive entries of an old leaf (a reference to the verified page
   and two indexes: nothing is sliced or decoded) or a new `_Entry`. An `_Inner` stays the
   old page plus its copied children until its children change in number. A change splits the
   leaf's untouched tail run around the entry it replaces, deletes or inserts: O(log n)
   key comparisons on the page and O(1) list operations. A new long value is written to
   its overflow chain at once.
2. Settle, bottom-up: an edited page that no longer fits is split evenly into as few pages
   as hold it (cut points found by binary search over the runs' offsets); an empty one is
   dropped; one less than half full is merged with a sibling (copied if it was not yet)
   and the pair split evenly again if it does not fit one page. The root grows a level
   when it splits and loses one when a single child is left.
3. Write, bottom-up: each edited page is written to a newly allocated page under the
   update's write id (all of them allocated in one call when the store can), in batches
   of consecutive pages; a copied page that nothing changed keeps its old page. A leaf is
   written from its segments: a run's keys, values, flags and offsets are each one slice of
   the old page, the offsets shifted at once as the 16-bit lanes of one integer, so an
   untouched entry costs no Python-level step. An internal page whose children only moved
   is the old page with their page numbers and write ids patched. A parent names each
   child's page and write id, so shared pages keep theirs.

The pages of the old tree that the new one does not use (rewritten, merged or dropped
pages, chains of deleted or replaced values) are returned, never written.
"""

from __future__ import annotations

import functools
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable
from itertools import accumulate, pairwise
from typing import TypeAlias

from streamdb.errors import CorruptionError, InvalidArgumentError
from streamdb.storage.btree_format import (
    _INTERNAL,
    _LEAF,
    _SLOT,
    EMPTY,
    FLAG_OVERFLOW,
    HEADER_SIZE,
    MAX_HEIGHT,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    PageStore,
    TreeRef,
    _coerce,
    _leaf_start,
    _to_le,
    inline_limit,
    overflow_capacity,
)
from streamdb.storage.btree_pages import (
    _NONE,
    _Node,
    _Reader,
    _shortest_separator,
    _Writer,
    internal_size,
    stale,
)

#: What `update` takes: (key, value) with strictly ascending keys; None deletes.
Changes: TypeAlias = Iterable[tuple[bytes, bytes | None]]
_Ref: TypeAlias = tuple[int, int]  # (page, write id) of a page shared with the old tree
_Run: TypeAlias = tuple[_Node, int, int]  # entries a..b-1 (a < b) of a format 2 leaf layout


class _Entry:
    """A leaf entry the update writes: its key, its value as stored (the value, or a
    format 2 overflow reference when `flag` is FLAG_OVERFLOW) and its flag; for a value
    replaced under the same key, the old page `node` and the index `orig` of the entry it
    replaces there (else None and -1)."""

    __slots__ = ("flag", "key", "node", "orig", "slot")

    def __init__(self, key: bytes, slot: bytes, flag: int, node: _Node | None = None,
                 orig: int = -1) -> None:
        self.key = key
        self.slot = slot
        self.flag = flag
        self.node = node
        self.orig = orig


_Seg: TypeAlias = _Run | _Entry


def _seg_count(seg: _Seg) -> int:
    return 1 if isinstance(seg, _Entry) else seg[2] - seg[1]


def _seg_size(seg: _Seg) -> int:
    """Bytes the segment's entries take in a leaf: 5 per entry (two offsets and a flag),
    the keys and the stored values."""
    if isinstance(seg, _Entry):
        return 5 + len(seg.key) + len(seg.slot)
    node, a, b = seg
    off, n = node.off, node.n
    return off[b] - off[a] + off[n + b] - off[n + a] + 5 * (b - a)


class _Leaf:
    """An editable leaf: a copy of an old leaf (`old` = its page and write id) or a new one
    (`old` None), as `segs` in key order; `count` entries taking `size` bytes as a page.
    While changes are applied to a copy, `node` is the old leaf (in format 2 layout) and
    `tail` the first of its entries no change has reached: the last segment is the run
    (node, tail, n) when tail < n. `dirty`: it differs from `old` and must be written."""

    __slots__ = ("count", "dirty", "node", "old", "segs", "size", "tail")
    level = 0

    def __init__(self, segs: list[_Seg], node: _Node | None = None,
                 old: _Ref | None = None) -> None:
        self.segs = segs
        self.node = node
        self.tail = 0
        self.old = old
        self.dirty = old is None
        if node is not None and segs == [(node, 0, node.n)]:
            self.count, self.size = node.n, node.off[2 * node.n]  # where its values end
        else:
            self.count = sum(map(_seg_count, segs))
            self.size = _leaf_start(0) + sum(map(_seg_size, segs))


class _Inner:
    """An editable internal page: a copy of an old one (`old`) or a new one.

    A copy starts as the old page itself (`node`) plus `touched`, the children copied so
    far by index: its separators and the other children are the page's, untouched (so a
    page whose children only change pages is written from slices of the old one). Once
    its children change in number, `materialize` gives it lists: `keys` (its separators)
    and `kids`, each an `_Inner`/`_Leaf` or a shared page's `_Ref`; a new page has only
    those. `dirty`: it differs from `old` and must be written."""

    __slots__ = ("dirty", "keys", "kids", "level", "node", "old", "touched")

    def __init__(self, level: int, keys: list[bytes] | None, kids: list[_Kid] | None,
                 old: _Ref | None = None, node: _Node | None = None) -> None:
        self.level = level
        self.keys = keys
        self.kids = kids
        self.node = node
        self.old = old
        self.dirty = old is None
        self.touched: dict[int, _Mut] = {}  # index -> the copy of that child

    def lists(self) -> tuple[list[bytes], list[_Kid]]:
        """Its separators and children as lists (made from the old page on first use,
        with the copied children in place). O(children) once."""
        if self.keys is None or self.kids is None:
            node = self.node
            assert node is not None
            kids: list[_Kid] = list(zip(node.children.tolist(), node.wids.tolist(),
                                        strict=True))
            for i, kid in self.touched.items():
                kids[i] = kid
            self.keys, self.kids = list(node.key_list()), kids
        return self.keys, self.kids

    def count(self) -> int:
        """Its number of children."""
        if self.kids is not None:
            return len(self.kids)
        assert self.node is not None
        return self.node.n

    def size(self) -> int:
        """Bytes it takes as a (format 2) page."""
        if self.keys is not None:
            return internal_size(self.keys)
        node = self.node
        assert node is not None
        return node.off[node.n - 1] + (4 * node.n if node.version < 2 else 0)


_Mut: TypeAlias = _Leaf | _Inner
_Kid: TypeAlias = _Leaf | _Inner | _Ref


class _Layout:
    """Entry positions across a leaf's segments: entry e (0 <= e < count) of the leaf,
    its key, and the bytes of entries [0, e). O(segments) to build, O(log segments) per
    question."""

    def __init__(self, segs: list[_Seg]) -> None:
        self.segs = segs
        self.counts = [0, *accumulate(map(_seg_count, segs))]
        self.bytes = [0, *accumulate(map(_seg_size, segs))]
        self.count = self.counts[-1]
        self.total = self.bytes[-1]

    def _find(self, e: int) -> tuple[int, int]:
        s = bisect_right(self.counts, e) - 1
        return s, e - self.counts[s]

    def cum(self, e: int) -> int:
        """Bytes of entries [0, e)."""
        if e >= self.count:
            return self.total
        s, r = self._find(e)
        seg = self.segs[s]
        if isinstance(seg, _Entry) or not r:
            return self.bytes[s]
        node, a, _ = seg
        off, n, c = node.off, node.n, a + r
        return self.bytes[s] + off[c] - off[a] + off[n + c] - off[n + a] + 5 * r

    def key(self, e: int) -> bytes:
        s, r = self._find(e)
        seg = self.segs[s]
        return seg.key if isinstance(seg, _Entry) else seg[0].key_at(seg[1] + r)

    def slice(self, e0: int, e1: int) -> list[_Seg]:
        """The segments of entries [e0, e1)."""
        out: list[_Seg] = []
        s = bisect_right(self.counts, e0) - 1
        while s < len(self.segs) and self.counts[s] < e1:
            seg, base = self.segs[s], self.counts[s]
            if isinstance(seg, _Entry):
                out.append(seg)
            else:
                node, a, b = seg
                lo, hi = a + max(0, e0 - base), min(b, a + e1 - base)
                if lo < hi:
                    out.append((node, lo, hi))
            s += 1
        return out


def _cuts(n: int, cum: Callable[[int], int], cap: int,
          size: Callable[[int, int], int]) -> list[int]:
    """Where to cut n items (cum(i): the weight of items [0, i), non-decreasing) into as
    few pieces as fit `cap` by `size(a, b)` (the exact size of items [a, b)), as even as
    can be: k even cuts for the least k that fits. Every single item fits, so k = n always
    does. O(k log n) evaluations per k tried; rarely more than one k."""
    total = cum(n)
    k = max(2, -(-total // cap))
    while True:
        cuts: list[int] = []
        last = 0
        for j in range(1, k):
            target = total * j // k
            lo, hi = last + 1, n - (k - j)  # leave an item for each later piece
            while lo < hi:  # the first cut at or past the target
                mid = (lo + hi) >> 1
                if cum(mid) < target:
                    lo = mid + 1
                else:
                    hi = mid
            if lo - 1 > last and target - cum(lo - 1) < cum(lo) - target:
                lo -= 1
            cuts.append(lo)
            last = lo
        if all(size(a, b) <= cap for a, b in pairwise([0, *cuts, n])):
            return cuts
        k += 1
        assert k <= n, "an item larger than a page"


@functools.lru_cache(maxsize=1024)
def _lanes(m: int) -> int:
    """1 in each of m 16-bit lanes: adding d * _lanes(m) adds d to every lane."""
    return ((1 << (16 * m)) - 1) // 0xFFFF


def _shifted(node: _Node, i: int, j: int, d: int) -> bytes:
    """Offsets i..j-1 of `node`, each plus d, as u16 little-endian bytes. A page's offsets
    are read as one integer of 16-bit lanes and d added to every lane at once: no carry or
    borrow crosses a lane, since every result is an offset in the new page (0..65535), and
    the offsets are non-decreasing (checked when the page was copied). O(j - i) in C."""
    if j <= i:
        return b""
    if node.off.typecode != "H":  # a leaf converted from format 1 (`_as_format2`)
        return _to_le(array("H", map(d.__add__, node.off[i:j])))
    lanes = int.from_bytes(node.buf[HEADER_SIZE + 2 * i : HEADER_SIZE + 2 * j], "little")
    return (lanes + d * _lanes(j - i)).to_bytes(2 * (j - i), "little")


def _as_format2(node: _Node) -> _Node:
    """A format 1 leaf holding overflow references, as an in-memory leaf in format 2 layout
    (20-byte references naming the leaf's write id), so that its entries can be copied as
    runs. O(n); never written as such."""
    keys, slots = node.key_list(), node.slot_list()
    flags = bytes(node.flags)
    i = flags.find(FLAG_OVERFLOW)
    while i >= 0:
        slots[i] = _SLOT.pack(*node.overflow_ref(i))
        i = flags.find(FLAG_OVERFLOW, i + 1)
    n = node.n
    off = array("I", accumulate([*map(len, keys), *map(len, slots)], initial=_leaf_start(n)))
    buf = bytes(HEADER_SIZE) + bytes(off[0] - HEADER_SIZE - n) + flags + b"".join(keys) + \
        b"".join(slots)
    copy = _Node(node.page_no, 0, n, buf, off, _NONE, _NONE, flags, 2, node.wid)
    copy.keys = keys
    return copy


class _Updater:
    """One update: the state of the three passes (module docstring)."""

    def __init__(self, store: PageStore, reader: _Reader, load: Callable[[int], _Node],
                 wid: int, written: list[int]) -> None:
        self.store = store
        self.reader = reader
        self.load = load
        self.w = _Writer(store, reader.kind, wid, written)
        self.limit = self.w.limit
        self.half = self.limit // 2
        self.inline_max = inline_limit(store.page_size)
        self.capacity = overflow_capacity(store.page_size)
        self.freed: list[int] = []

    # -- pass 1: apply ---------------------------------------------------------------------

    def copy(self, ref: _Ref, level: int, lo: bytes, hi: bytes | None,
             referrer: int | None) -> _Mut:
        """An editable copy of the shared page `ref`, checked like a reader checks it:
        level and write id (rules 1, 2), first and last key within the bounds its parent
        gives (3), and (a leaf) its offsets in order, as runs copy them (5)."""
        page, wid = ref
        self.reader.check_page_no(page, referrer)
        node = self.load(page)
        if node.level != level:
            raise CorruptionError(f"page at level {node.level}, expected {level}", page=page)
        if node.wid != wid:
            raise stale(page, node.wid, wid)
        if level:
            keys = node.key_list()
            if keys and (keys[0] < lo or (hi is not None and keys[-1] >= hi)):
                raise CorruptionError("keys outside the bounds its parent gives", page=page)
            return _Inner(level, None, None, ref, node)
        first, last = node.first_last()
        if first < lo or (hi is not None and last >= hi):
            raise CorruptionError("keys outside the bounds its parent gives", page=page)
        offsets = node.off.tolist()
        if offsets != sorted(offsets):
            raise CorruptionError("entry offsets out of order", page=page)
        if node.version < 2 and not node.inline_only:
            node = _as_format2(node)
        return _Leaf([(node, 0, node.n)], node, ref)

    def descend(self, root: _Mut, key: bytes) -> tuple[_Leaf, bytes | None]:
        """The leaf `key` belongs in, copying the pages on the way; and the leaf's upper
        bound (None: no bound). O(height) bisects, a page copy per page not copied yet."""
        node: _Mut = root
        lo: bytes = b""
        hi: bytes | None = None
        while isinstance(node, _Inner):  # a copy, its structure still the old page's
            old = node.node
            assert old is not None
            seps = old.key_list()
            i = bisect_right(seps, key)
            klo = seps[i - 1] if i else lo
            khi = seps[i] if i < len(seps) else hi
            kid = node.touched.get(i)
            if kid is None:
                kid = node.touched[i] = self.copy((old.children[i], old.wids[i]),
                                                  node.level - 1, klo, khi, old.page_no)
            node, lo, hi = kid, klo, khi
        return node, hi

    def drop_value(self, node: _Node, j: int) -> None:
        """Entry j of the old leaf `node` is deleted or replaced: its overflow chain, if
        any, is freed. Its pages follow from rule 4 (ceil(length / capacity) contiguous
        pages); none is read."""
        if not node.flags[j]:
            return
        length, first, _ = node.overflow_ref(j)
        pages = -(-length // self.capacity)
        if (not self.inline_max < length <= MAX_VALUE_SIZE or first < 1
                or first + pages > self.store.page_count()):
            raise CorruptionError(f"overflow reference of length {length} at page {first}",
                                  page=node.page_no)
        self.freed.extend(range(first, first + pages))

    def stored(self, key: bytes, value: bytes, node: _Node | None = None,
               orig: int = -1) -> _Entry:
        """The entry for `value` under `key` (replacing entry `orig` of `node`, if given),
        inline or (longer than page_size / 4) in a new overflow chain, written now."""
        if len(value) <= self.inline_max:
            return _Entry(key, value, 0, node, orig)
        if len(value) > MAX_VALUE_SIZE:
            raise InvalidArgumentError(f"value of {len(value)} bytes exceeds {MAX_VALUE_SIZE}")
        return _Entry(key, self.w.overflow(value), FLAG_OVERFLOW, node, orig)

    def change(self, leaf: _Leaf, key: bytes, value: bytes | None) -> int:
        """Apply one change to a copied leaf (or the empty tree's new root); returns the
        change in entries. O(log n) comparisons and O(1) list operations."""
        node = leaf.node
        if node is None:  # the empty tree's root: inserts only, in ascending order
            if value is None:
                return 0
            first = self.stored(key, value)
            leaf.segs.append(first)
            leaf.size += 5 + len(key) + len(first.slot)
            leaf.count += 1
            leaf.dirty = True
            return 1
        n, p = node.n, leaf.tail
        j = node.search(key, False)
        if j < p:  # a key sorted below one of the changes before it
            raise CorruptionError("keys not strictly ascending", page=node.page_no)
        keys = node.keys
        found = j < n and (keys[j] if keys is not None else node.key_at(j)) == key
        entry: _Entry | None = None
        if value is not None:
            if (found and not node.flags[j] and len(value) <= self.inline_max
                    and node.value_slot(j) == value):
                return 0  # unchanged
            entry = self.stored(key, value, node, j) if found else self.stored(key, value)
        elif not found:
            return 0  # deleting what is not there
        if found:
            self.drop_value(node, j)
            off = node.off
            leaf.size -= 5 + off[j + 1] - off[j] + off[n + j + 1] - off[n + j]
            leaf.count -= 1
        if entry is not None:
            leaf.size += 5 + len(key) + len(entry.slot)
            leaf.count += 1
        segs = leaf.segs
        if p < n:
            segs.pop()  # the tail run (node, p, n)
        if j > p:
            segs.append((node, p, j))
        if entry is not None:
            segs.append(entry)
        leaf.tail = j + found
        if leaf.tail < n:
            segs.append((node, leaf.tail, n))
        leaf.dirty = True
        return (entry is not None) - found

    def apply(self, root: _Mut, changes: Changes) -> int:
        """Apply every change to the copies of the leaves; returns the change in entries."""
        delta = 0
        leaf: _Leaf | None = None
        hi: bytes | None = None
        prev: bytes | None = None
        for n, item in enumerate(changes):
            try:
                key, value = item
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"change {n} is not a (key, value) pair") from exc
            if type(key) is not bytes:
                key = _coerce(key, "key")
            if value is not None and type(value) is not bytes:
                value = _coerce(value, "value")
            if len(key) > MAX_KEY_SIZE:
                raise InvalidArgumentError(f"key of {len(key)} bytes exceeds {MAX_KEY_SIZE}")
            if prev is not None and key <= prev:
                raise InvalidArgumentError(
                    f"keys not strictly ascending: {key[:64]!r} after {prev[:64]!r}")
            prev = key
            if leaf is None or (hi is not None and key >= hi):
                leaf, hi = self.descend(root, key)
            delta += self.change(leaf, key, value)
        return delta

    # -- pass 2: settle --------------------------------------------------------------------

    def free(self, m: _Mut) -> None:
        """`m` will not be written: the page it copies, if any, is the old tree's alone."""
        if m.old is not None:
            self.freed.append(m.old[0])
            m.old = None

    def size(self, m: _Mut) -> int:
        return m.size if isinstance(m, _Leaf) else m.size()

    def split(self, m: _Mut) -> tuple[list[_Kid], list[bytes]]:
        """`m` as the pages that hold it: none if it is empty, itself if it fits, else
        evenly cut pieces (rule 7); and the separators between them."""
        if isinstance(m, _Leaf):
            if not m.count:
                return [], []
            if m.size <= self.limit:
                return [m], []
            lay = _Layout(m.segs)
            cap = self.limit - _leaf_start(0)
            cuts = _cuts(lay.count, lay.cum, cap, lambda a, b: lay.cum(b) - lay.cum(a))
            self.free(m)
            leaves: list[_Kid] = [_Leaf(lay.slice(a, b))
                                  for a, b in pairwise([0, *cuts, lay.count])]
            return leaves, [_shortest_separator(lay.key(c - 1), lay.key(c)) for c in cuts]
        if m.keys is None:  # the old page's structure: it fits
            return [m], []
        seps, kids = m.lists()
        n = len(kids)
        if not n:
            return [], []
        if internal_size(seps) <= self.limit:
            return [m], []
        lens = [0, *map(len, seps)]  # the separator left of each child
        prefix = list(accumulate((14 + x for x in lens), initial=0))
        cuts = _cuts(n, prefix.__getitem__, self.limit - HEADER_SIZE,
                     lambda a, b: prefix[b] - prefix[a] - lens[a])  # seps[a - 1] moves up
        self.free(m)
        pieces: list[_Kid] = [_Inner(m.level, seps[a : b - 1], kids[a:b])
                              for a, b in pairwise([0, *cuts, n])]
        return pieces, [seps[c - 1] for c in cuts]

    def join(self, a: _Mut, sep: bytes, b: _Mut) -> _Mut:
        """Siblings a and b (separated by `sep` in their parent) as one new page."""
        self.free(a)
        self.free(b)
        if isinstance(a, _Leaf) and isinstance(b, _Leaf):
            return _Leaf(a.segs + b.segs)
        assert isinstance(a, _Inner) and isinstance(b, _Inner)
        a_keys, a_kids = a.lists()
        b_keys, b_kids = b.lists()
        return _Inner(a.level, [*a_keys, sep, *b_keys], a_kids + b_kids)

    def settle(self, m: _Inner, lo: bytes, hi: bytes | None) -> None:
        """Make the children of the internal page `m` (a copy) fit: split, drop, merge
        (rule 7), its copied descendants first; mark `m` dirty if any child changed. O(1)
        Python steps per copied child while the children stay as many (their pages change,
        not the old page's structure); else O(children copied + merges), the others moved
        in slices."""
        old = m.node
        assert old is not None
        seps = old.key_list()
        touched = sorted(m.touched)
        reshape = False
        for i in touched:
            kid = m.touched[i]
            if isinstance(kid, _Inner):
                self.settle(kid, seps[i - 1] if i else lo, seps[i] if i < len(seps) else hi)
            if kid.dirty:
                m.dirty = True
                size = self.size(kid)
                reshape = reshape or (size > self.limit or size < self.half
                                      or not (kid.count if isinstance(kid, _Leaf)
                                              else kid.count()))
        if reshape:
            self.reshape(m, touched, lo, hi)

    def reshape(self, m: _Inner, touched: list[int], lo: bytes, hi: bytes | None) -> None:
        """`settle` for a page whose children change in number."""
        seps, kids = m.lists()
        out: list[_Kid] = []
        out_seps: list[bytes] = []
        edited: list[int] = []  # where in `out` the pages of edited children are
        done = 0  # kids[:done] are in `out`

        def take(upto: int) -> None:  # kids[done:upto], as they are, each with its bound
            if done < upto:
                out_seps.extend(seps[done - 1 if out else done : upto - 1])
                out.extend(kids[done:upto])

        for i in touched:
            kid = kids[i]
            if isinstance(kid, tuple) or not kid.dirty:
                continue
            take(i)
            done = i + 1
            pieces, inner = self.split(kid)
            if not pieces:
                self.free(kid)
                continue
            if out:
                out_seps.append(seps[i - 1])  # the child's own lower bound
            edited.extend(range(len(out), len(out) + len(pieces)))
            out += pieces
            out_seps += inner
        take(len(kids))
        # Right to left: merges on the right of a page leave its position alone; a chain of
        # merges leftwards ends at `reached`, the pages it swallowed (edited ones among
        # them) are that one.
        reached = len(out)
        for j in reversed(edited):
            j = min(j, reached)
            while len(out) > 1:
                kid = out[j]
                if isinstance(kid, tuple) or not kid.dirty or self.size(kid) >= self.half:
                    break
                # Merge with a sibling, preferring one already copied (no read).
                right = j + 1 < len(out)
                a = j if right and (not isinstance(out[j + 1], tuple) or not j
                                    or isinstance(out[j - 1], tuple)) else j - 1
                left_m = self.editable(out, out_seps, a, m, lo, hi)
                right_m = self.editable(out, out_seps, a + 1, m, lo, hi)
                pieces, inner = self.split(self.join(left_m, out_seps[a], right_m))
                out[a : a + 2] = pieces
                out_seps[a : a + 1] = inner
                j = a
                if len(pieces) > 1:
                    break
            reached = j
        m.keys, m.kids = out_seps, out
        m.touched = {}
        m.dirty = True

    def editable(self, out: list[_Kid], out_seps: list[bytes], x: int, parent: _Inner,
                 lo: bytes, hi: bytes | None) -> _Mut:
        """Child x of a page being settled, copied if it is still shared."""
        kid = out[x]
        if not isinstance(kid, tuple):
            return kid
        klo = out_seps[x - 1] if x else lo
        khi = out_seps[x] if x < len(out_seps) else hi
        copy = self.copy(kid, parent.level - 1, klo, khi,
                         parent.node.page_no if parent.node else None)
        out[x] = copy
        return copy

    # -- pass 3: write ---------------------------------------------------------------------

    def write_leaf(self, leaf: _Leaf) -> int:
        """Write a leaf from its segments: per run one slice each of the old page's keys,
        values, flags and offsets (those shifted by `_shifted`, in C). A value replaced
        under the same key leaves the keys one run. O(entries) C-level work, O(segments)
        Python steps."""
        segs = leaf.segs
        n = leaf.count
        pos = _leaf_start(n)
        index = [pos.to_bytes(2, "little")]
        parts: list[bytes] = []
        run: _Node | None = None  # keys run[a:b) not yet added
        a = b = 0
        for seg in segs:  # keys
            if isinstance(seg, _Entry):
                if run is not None and run is seg.node and seg.orig == b:
                    b += 1  # its key is the old page's next one
                    continue
                if run is not None:
                    start, end = run.off[a], run.off[b]
                    parts.append(run.buf[start:end])
                    index.append(_shifted(run, a + 1, b + 1, pos - start))
                    pos += end - start
                    run = None
                parts.append(seg.key)
                pos += len(seg.key)
                index.append(pos.to_bytes(2, "little"))
                continue
            if run is seg[0] and seg[1] == b:
                b = seg[2]
                continue
            if run is not None:
                start, end = run.off[a], run.off[b]
                parts.append(run.buf[start:end])
                index.append(_shifted(run, a + 1, b + 1, pos - start))
                pos += end - start
            run, a, b = seg
        if run is not None:
            start, end = run.off[a], run.off[b]
            parts.append(run.buf[start:end])
            index.append(_shifted(run, a + 1, b + 1, pos - start))
            pos += end - start
        flags: list[bytes] = []
        for seg in segs:  # values
            if isinstance(seg, _Entry):
                parts.append(seg.slot)
                pos += len(seg.slot)
                index.append(pos.to_bytes(2, "little"))
                flags.append(b"\x01" if seg.flag else b"\x00")
                continue
            node, a, b = seg
            m = node.n
            start, end = node.off[m + a], node.off[m + b]
            parts.append(node.buf[start:end])
            index.append(_shifted(node, m + a + 1, m + b + 1, pos - start))
            pos += end - start
            flags.append(node.flags[a:b])
        return self.w._write_node(_LEAF, 0, n, b"".join(index) + b"".join(flags),
                                  b"".join(parts))

    def to_write(self, kid: _Kid) -> int:
        """How many pages `write(kid)` will write. O(pages copied)."""
        if isinstance(kid, tuple):
            return 0
        below = 0
        if isinstance(kid, _Inner):
            kids = kid.touched.values() if kid.kids is None else kid.kids
            below = sum(self.to_write(k) for k in kids if not isinstance(k, tuple))
        return below + (kid.dirty or kid.old is None)

    def write_patched(self, m: _Inner, written: dict[int, _Ref]) -> int:
        """Write an internal page whose children are the old page's but for `written`:
        its child arrays copied and patched, its separators and their offsets one slice
        each of the old page (format 1 offsets shifted past the write ids). O(children)
        C-level work, O(children written) Python steps."""
        node = m.node
        assert node is not None
        n = node.n
        children, wids = array("Q", node.children), array("I", node.wids)
        for i, (page, wid) in written.items():
            children[i] = page
            wids[i] = wid
        if node.version >= 2:
            at = HEADER_SIZE + 12 * n
            offsets = node.buf[at : at + 2 * n]
        else:
            offsets = _shifted(node, 4 * n, 5 * n, 4 * n)  # bytes 64 + 8n .. 64 + 10n
        return self.w._write_node(_INTERNAL, m.level, n,
                                  _to_le(children) + _to_le(wids) + offsets,
                                  node.buf[node.off[0] : node.off[n - 1]])

    def write(self, kid: _Kid) -> _Ref:
        """Write `kid` and its edited descendants, children first; its (page, write id)."""
        if isinstance(kid, tuple):
            return kid
        if isinstance(kid, _Inner) and kid.kids is None:  # the old page, children replaced
            written = {i: self.write(k) for i, k in kid.touched.items()}
            if not kid.dirty and kid.old is not None:
                return kid.old
            page = self.write_patched(kid, written)
        elif isinstance(kid, _Inner):
            assert kid.keys is not None and kid.kids is not None
            refs = [k if isinstance(k, tuple) else self.write(k) for k in kid.kids]
            if not kid.dirty and kid.old is not None:
                return kid.old
            pages, wids = zip(*refs, strict=True)
            page = self.w.internal(kid.level, list(pages), list(wids), kid.keys)
        else:
            if not kid.dirty and kid.old is not None:
                return kid.old
            page = self.write_leaf(kid)
        self.free(kid)
        return page, self.w.wid


def update_tree(store: PageStore, reader: _Reader, load: Callable[[int], _Node],
                ref: TreeRef, changes: Changes, wid: int, written: list[int],
                ) -> tuple[TreeRef, list[int], list[int]]:
    """`Tree.update` (its docstring): the tree `ref`, read through `load` (the tree's
    page cache) and `reader`, with `changes` applied under write id `wid`."""
    u = _Updater(store, reader, load, wid, written)
    root: _Mut
    if ref.height:
        root = u.copy((ref.root, ref.tree_id), ref.height - 1, b"", None, None)
    else:
        root = _Leaf([])
        root.dirty = False
    count = ref.count + u.apply(root, changes)
    if isinstance(root, _Inner):
        u.settle(root, b"", None)
    if not root.dirty:
        return ref, u.freed, written  # nothing changed
    pieces, inner = u.split(root)
    level = root.level
    while len(pieces) > 1:  # the root split: a new level above it
        level += 1
        if level >= MAX_HEIGHT:
            raise InvalidArgumentError(f"the tree would be deeper than {MAX_HEIGHT} levels")
        pieces, inner = u.split(_Inner(level, inner, pieces))
    if not pieces:
        u.free(root)
        if count:
            raise CorruptionError(f"the tree's reference counts {ref.count} entries, its "
                                  f"pages {ref.count - count}", page=ref.root)
        return EMPTY, u.freed, written
    top = pieces[0]
    while isinstance(top, _Inner) and top.count() == 1:  # a root of one child
        u.free(top)
        top, level = top.lists()[1][0], level - 1
    u.w.reserve(u.to_write(top))
    page, top_wid = u.write(top)
    u.w.flush()
    assert not u.w._pool, "reserved pages left unwritten"
    try:
        return TreeRef(page, level + 1, count, top_wid), u.freed, written
    except InvalidArgumentError as exc:
        raise CorruptionError(f"the tree's reference counts {ref.count} entries, which its "
                              f"pages contradict", page=ref.root) from exc
