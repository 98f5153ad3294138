"""Copy-on-write update of a paged B+tree: `Tree.update` and `update` of
`streamdb.storage.btree` (rules 6 and 7 there; layout in docs/format/btree.md).

Three passes over the pages the changes touch, nothing else:

1. Apply: each change descends from the root to its leaf (consecutive changes in one leaf
   descend once), copying every page on the way into a `_Mut`, an editable copy made of
   the page's stored bytes: keys, value slots as stored (an overflow reference stays a
   reference: no value or record is ever decoded) and child references. The change is
   applied to the leaf's lists; a new long value is written to its overflow chain at once.
2. Settle, bottom-up: an edited page that no longer fits is split evenly into as few pages
   as hold it; an empty one is dropped; one less than half full is merged with a sibling
   (read if it was not copied yet) and the pair split evenly again if it does not fit
   one page. The root grows a level when it splits and loses one when a single child is
   left.
3. Write, bottom-up: each edited page is written to a newly allocated page under the
   update's write id; a copied page that nothing changed keeps its old page. A parent
   names each child's page and write id, so the pages the update shares keep theirs.

The pages of the old tree that the new one does not use (rewritten, merged or dropped
pages, chains of deleted or replaced values) are returned, never written.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from itertools import accumulate, pairwise
from typing import TypeAlias

from streamdb.errors import CorruptionError, InvalidArgumentError
from streamdb.storage.btree_format import (
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
    inline_limit,
    overflow_capacity,
)
from streamdb.storage.btree_pages import (
    _Node,
    _Reader,
    _shortest_separator,
    _Writer,
    internal_size,
    leaf_size,
    parse_overflow_ref,
    stale,
)

#: What `update` takes: (key, value) with strictly ascending keys; None deletes.
Changes: TypeAlias = Iterable[tuple[bytes, bytes | None]]
_Ref: TypeAlias = tuple[int, int]  # (page, write id) of a page shared with the old tree


class _Mut:
    """An editable page: a copy of an old page (`old` = its page and write id) or a new
    one (`old` None). A leaf holds `keys`, `slots` (values as stored) and `flags`; an
    internal page `keys` (its separators) and `kids`, each a `_Mut` or a shared page's
    `_Ref`. `dirty`: it differs from `old` and must be written."""

    __slots__ = ("dirty", "flags", "keys", "kids", "level", "old", "slots")

    def __init__(self, level: int, keys: list[bytes], slots: list[bytes],
                 flags: bytearray, kids: list[_Mut | _Ref], old: _Ref | None) -> None:
        self.level = level
        self.keys = keys
        self.slots = slots
        self.flags = flags
        self.kids = kids
        self.old = old
        self.dirty = old is None


_Kid: TypeAlias = _Mut | _Ref


def _cuts(prefix: list[int], cap: int, size: Callable[[int, int], int]) -> list[int]:
    """Where to cut n items (prefix[i]: the weight of items [0, i)) into as few pieces as
    fit `cap` by `size(a, b)` (the exact size of items [a, b)), as even as can be: k even
    cuts for the least k that fits. Every single item fits, so k = n always does.
    O(k log n) per k tried; rarely more than one k."""
    n = len(prefix) - 1
    total = prefix[-1]
    k = max(2, -(-total // cap))
    while True:
        cuts: list[int] = []
        last = 0
        for j in range(1, k):
            target = total * j // k
            top = n - (k - j)  # leave an item for each later piece
            c = min(bisect_left(prefix, target, last + 1, top), top)
            if c - 1 > last and target - prefix[c - 1] < prefix[c] - target:
                c -= 1
            cuts.append(c)
            last = c
        if all(size(a, b) <= cap for a, b in pairwise([0, *cuts, n])):
            return cuts
        k += 1
        assert k <= n, "an item larger than a page"


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
        level and write id (rules 1, 2), keys within the bounds its parent gives (3)."""
        page, wid = ref
        self.reader.check_page_no(page, referrer)
        node = self.load(page)
        if node.level != level:
            raise CorruptionError(f"page at level {node.level}, expected {level}", page=page)
        if node.wid != wid:
            raise stale(page, node.wid, wid)
        keys = node.key_list()
        if keys and (keys[0] < lo or (hi is not None and keys[-1] >= hi)):
            raise CorruptionError("keys outside the bounds its parent gives", page=page)
        if level:
            kids: list[_Kid] = list(zip(node.children.tolist(), node.wids.tolist(),
                                        strict=True))
            return _Mut(level, list(keys), [], bytearray(), kids, ref)
        slots = node.slot_list()
        flags = bytearray(node.flags)
        if not node.inline_only:  # references in format 2, naming their chain's write id
            i = flags.find(FLAG_OVERFLOW)
            while i >= 0:
                slots[i] = _SLOT.pack(*parse_overflow_ref(slots[i], node.version, node.wid,
                                                          page))
                i = flags.find(FLAG_OVERFLOW, i + 1)
        return _Mut(0, list(keys), slots, flags, [], ref)

    def descend(self, root: _Mut, key: bytes) -> tuple[_Mut, bytes | None]:
        """The leaf `key` belongs in, copying the pages on the way; and the leaf's upper
        bound (None: no bound). O(height) bisects, a page copy per page not copied yet."""
        node, lo, hi = root, b"", None
        while node.level:
            seps = node.keys
            i = bisect_right(seps, key)
            klo = seps[i - 1] if i else lo
            khi = seps[i] if i < len(seps) else hi
            kid = node.kids[i]
            if not isinstance(kid, _Mut):
                kid = node.kids[i] = self.copy(kid, node.level - 1, klo, khi,
                                               node.old[0] if node.old else None)
            node, lo, hi = kid, klo, khi
        return node, hi

    def drop_value(self, leaf: _Mut, j: int) -> None:
        """Entry j's value is deleted or replaced: its overflow chain, if any, is freed.
        Its pages follow from rule 4 (ceil(length / capacity) contiguous pages); none is
        read."""
        if not leaf.flags[j]:
            return
        length, first, _ = _SLOT.unpack(leaf.slots[j])
        pages = -(-length // self.capacity)
        if (not self.inline_max < length <= MAX_VALUE_SIZE or first < 1
                or first + pages > self.store.page_count()):
            raise CorruptionError(f"overflow reference of length {length} at page {first}",
                                  page=leaf.old[0] if leaf.old else None)
        self.freed.extend(range(first, first + pages))

    def apply(self, root: _Mut, changes: Changes) -> int:
        """Apply every change to the copies of the leaves; returns the change in entries."""
        delta = 0
        leaf: _Mut | None = None
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
            keys = leaf.keys
            j = bisect_left(keys, key)
            found = j < len(keys) and keys[j] == key
            if value is None:
                if found:
                    self.drop_value(leaf, j)
                    del keys[j], leaf.slots[j], leaf.flags[j]
                    leaf.dirty = True
                    delta -= 1
                continue
            if len(value) > self.inline_max:
                if len(value) > MAX_VALUE_SIZE:
                    raise InvalidArgumentError(
                        f"value of {len(value)} bytes exceeds {MAX_VALUE_SIZE}")
                slot, flag = self.w.overflow(value), FLAG_OVERFLOW
            elif found and not leaf.flags[j] and leaf.slots[j] == value:
                continue  # unchanged
            else:
                slot, flag = value, 0
            if found:
                self.drop_value(leaf, j)
                leaf.slots[j] = slot
                leaf.flags[j] = flag
            else:
                keys.insert(j, key)
                leaf.slots.insert(j, slot)
                leaf.flags.insert(j, flag)
                delta += 1
            leaf.dirty = True
        return delta

    # -- pass 2: settle --------------------------------------------------------------------

    def free(self, m: _Mut) -> None:
        """`m` will not be written: the page it copies, if any, is the old tree's alone."""
        if m.old is not None:
            self.freed.append(m.old[0])
            m.old = None

    def size(self, m: _Mut) -> int:
        return leaf_size(m.keys, m.slots) if not m.level else internal_size(m.keys)

    def split(self, m: _Mut) -> tuple[list[_Kid], list[bytes]]:
        """`m` as the pages that hold it: none if it is empty, itself if it fits, else
        evenly cut pieces (rule 7); and the separators between them."""
        if not m.level:
            n = len(m.keys)
            if not n:
                return [], []
            sizes = [5 + len(k) + len(v) for k, v in zip(m.keys, m.slots, strict=True)]
            prefix = list(accumulate(sizes, initial=0))
            if prefix[-1] <= self.limit - _leaf_start(0):
                return [m], []
            cuts = _cuts(prefix, self.limit - _leaf_start(0), lambda a, b: prefix[b] - prefix[a])
            self.free(m)
            pieces: list[_Kid] = [_Mut(0, m.keys[a:b], m.slots[a:b], m.flags[a:b], [], None)
                                  for a, b in pairwise([0, *cuts, n])]
            return pieces, [_shortest_separator(m.keys[c - 1], m.keys[c]) for c in cuts]
        n, seps = len(m.kids), m.keys
        if not n:
            return [], []
        if internal_size(seps) <= self.limit:
            return [m], []
        lens = [0, *map(len, seps)]  # the separator left of each child
        prefix = list(accumulate((14 + x for x in lens), initial=0))
        cuts = _cuts(prefix, self.limit - HEADER_SIZE,
                     lambda a, b: prefix[b] - prefix[a] - lens[a])  # seps[a - 1] moves up
        self.free(m)
        pieces = [_Mut(m.level, seps[a : b - 1], [], bytearray(), m.kids[a:b], None)
                  for a, b in pairwise([0, *cuts, n])]
        return pieces, [seps[c - 1] for c in cuts]

    def join(self, a: _Mut, sep: bytes, b: _Mut) -> _Mut:
        """Siblings a and b (separated by `sep` in their parent) as one new page."""
        self.free(a)
        self.free(b)
        if not a.level:
            return _Mut(0, a.keys + b.keys, a.slots + b.slots, a.flags + b.flags, [], None)
        return _Mut(a.level, [*a.keys, sep, *b.keys], [], bytearray(), a.kids + b.kids, None)

    def settle(self, m: _Mut, lo: bytes, hi: bytes | None) -> None:
        """Make the children of the internal page `m` fit (split, drop, merge: rule 7),
        its edited descendants first. Marks `m` dirty if any child changed."""
        seps, kids = m.keys, m.kids
        if m.level > 1:
            for i, kid in enumerate(kids):
                if isinstance(kid, _Mut):
                    self.settle(kid, seps[i - 1] if i else lo, seps[i] if i < len(seps) else hi)
        out: list[_Kid] = []
        out_seps: list[bytes] = []
        changed = False
        for i, kid in enumerate(kids):
            pieces: list[_Kid] = [kid]
            inner: list[bytes] = []
            if isinstance(kid, _Mut) and kid.dirty:
                changed = True
                pieces, inner = self.split(kid)
                if not pieces:
                    self.free(kid)
                    continue
            if out:
                out_seps.append(seps[i - 1])  # the child's own lower bound
            out += pieces
            out_seps += inner
        j = 0
        while len(out) > 1 and j < len(out):
            kid = out[j]
            if not isinstance(kid, _Mut) or not kid.dirty or self.size(kid) >= self.half:
                j += 1
                continue
            # Merge with a sibling, preferring one already copied (no read).
            right = j + 1 < len(out)
            a = j if right and (isinstance(out[j + 1], _Mut) or not j
                                or not isinstance(out[j - 1], _Mut)) else j - 1
            left_m = self.editable(out, out_seps, a, m.level - 1, lo, hi, m)
            right_m = self.editable(out, out_seps, a + 1, m.level - 1, lo, hi, m)
            pieces, inner = self.split(self.join(left_m, out_seps[a], right_m))
            out[a : a + 2] = pieces
            out_seps[a : a + 1] = inner
            changed = True
            j = a if len(pieces) == 1 else a + len(pieces)
        m.keys, m.kids = out_seps, out
        if changed:
            m.dirty = True

    def editable(self, out: list[_Kid], out_seps: list[bytes], x: int, level: int,
                 lo: bytes, hi: bytes | None, parent: _Mut) -> _Mut:
        """Child x of a page being settled, copied if it is still shared."""
        kid = out[x]
        if isinstance(kid, _Mut):
            return kid
        klo = out_seps[x - 1] if x else lo
        khi = out_seps[x] if x < len(out_seps) else hi
        copy = out[x] = self.copy(kid, level, klo, khi, parent.old[0] if parent.old else None)
        return copy

    # -- pass 3: write ---------------------------------------------------------------------

    def write(self, kid: _Kid) -> _Ref:
        """Write `kid` and its edited descendants, children first; its (page, write id)."""
        if not isinstance(kid, _Mut):
            return kid
        if kid.level:
            refs = [self.write(k) for k in kid.kids]
            if not kid.dirty and kid.old is not None:
                return kid.old
            page = self.w.internal(kid.level, [p for p, _ in refs], [w for _, w in refs],
                                   kid.keys)
        else:
            if not kid.dirty and kid.old is not None:
                return kid.old
            page = self.w.leaf(kid.keys, kid.slots, kid.flags)
        self.free(kid)
        return page, self.w.wid


def update_tree(store: PageStore, reader: _Reader, load: Callable[[int], _Node],
                ref: TreeRef, changes: Changes, wid: int, written: list[int],
                ) -> tuple[TreeRef, list[int], list[int]]:
    """`Tree.update` (its docstring): the tree `ref`, read through `load` (the tree's
    page cache) and `reader`, with `changes` applied under write id `wid`."""
    u = _Updater(store, reader, load, wid, written)
    if ref.height:
        root = u.copy((ref.root, ref.tree_id), ref.height - 1, b"", None, None)
    else:
        root = _Mut(0, [], [], bytearray(), [], None)
        root.dirty = False
    count = ref.count + u.apply(root, changes)
    if root.level:
        u.settle(root, b"", None)
    if not root.dirty:
        return ref, u.freed, written  # nothing changed
    pieces, inner = u.split(root)
    level = root.level
    while len(pieces) > 1:  # the root split: a new level above it
        level += 1
        if level >= MAX_HEIGHT:
            raise InvalidArgumentError(f"the tree would be deeper than {MAX_HEIGHT} levels")
        pieces, inner = u.split(_Mut(level, inner, [], bytearray(), pieces, None))
    if not pieces:
        u.free(root)
        if count:
            raise CorruptionError(f"the tree's reference counts {ref.count} entries, its "
                                  f"pages {ref.count - count}", page=ref.root)
        return EMPTY, u.freed, written
    top = pieces[0]
    while isinstance(top, _Mut) and top.level and len(top.kids) == 1:  # a root of one child
        u.free(top)
        top, level = top.kids[0], level - 1
    page, top_wid = u.write(top)
    try:
        return TreeRef(page, level + 1, count, top_wid), u.freed, written
    except InvalidArgumentError as exc:
        raise CorruptionError(f"the tree's reference counts {ref.count} entries, which its "
                              f"pages contradict", page=ref.root) from exc
