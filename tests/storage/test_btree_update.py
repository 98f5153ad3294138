"""Copy-on-write updates of the paged B+tree (`btree.update`, `Tree.update`): against a dict
model and against `build` of the same items, the pages they write, share and free, trees of
format 1, fill and height, stale pages, damage; and the key and text range reads."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import struct
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdb.errors import ChecksumMismatch, CorruptionError, InvalidArgumentError
from streamdb.storage import btree
from streamdb.storage.btree import EMPTY, Tree, TreeRef
from tests.storage.test_btree import KIND, MemStore, numbered

Model = dict[bytes, bytes]
Change = tuple[bytes, bytes | None]
DATA = Path(__file__).parent / "data"


def pages_of(store: MemStore, ref: TreeRef, kind: int = KIND) -> set[int]:
    pages = list(Tree(store, ref, kind=kind).pages())
    assert len(pages) == len(set(pages))
    return set(pages)


def apply(model: Model, changes: Iterable[Change]) -> None:
    for key, value in changes:
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value


def updated(store: MemStore, ref: TreeRef, changes: list[Change], model: Model,
            kind: int = KIND) -> TreeRef:
    """`update`, then every check: the new tree against the model and `_check`, the old tree
    unchanged, and the pages: written ones new, freed ones the old tree's alone, shared
    ones kept."""
    old_items = list(Tree(store, ref, kind=kind).items())
    old_pages = pages_of(store, ref, kind) if ref.height else set()
    new, freed, written = btree.update(store, ref, changes, kind=kind)
    apply(model, changes)
    tree = Tree(store, new, kind=kind)
    tree._check()
    assert list(tree.items()) == sorted(model.items())
    assert len(tree) == len(model)
    new_pages = pages_of(store, new, kind) if new.height else set()
    assert not set(written) & old_pages, "an update wrote over a page of the old tree"
    assert len(freed) == len(set(freed)) and set(freed) <= old_pages
    assert not set(freed) & new_pages
    assert new_pages == (old_pages - set(freed)) | set(written)
    old = Tree(store, ref, kind=kind)  # the old tree is whole until its pages are freed
    old._check()
    assert list(old.items()) == old_items
    return new


# ------------------------------------------------------------------------------------------
# Against a model
# ------------------------------------------------------------------------------------------

key_st = st.binary(max_size=12) | st.lists(st.sampled_from(b"ab\x00\xff"), max_size=40).map(
    bytes)
value_st = st.one_of(st.binary(max_size=64), st.binary(max_size=64),
                     st.integers(0, 3 * 4096).map(lambda n: b"v" * n))


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, Model, list[list[Change]]]:
    page_size = draw(st.sampled_from([4096, 8192]))
    model = draw(st.dictionaries(key_st, value_st, max_size=100))
    rng = random.Random(draw(st.integers(0, 2**32)))
    heads = [b"", b"a" * 200, b"b" * 300]  # long shared prefixes: long separators, 3 levels
    for _ in range(draw(st.sampled_from([0, 0, 400, 3000]))):
        tail = bytes(rng.choice(b"ab\x00\xff") for _ in range(rng.randrange(30)))
        model.setdefault(rng.choice(heads) + tail, rng.randbytes(rng.randrange(40)))
    batches = []
    for _ in range(draw(st.integers(1, 4))):
        known = sorted(model)
        changes: dict[bytes, bytes | None] = {}
        for _ in range(draw(st.sampled_from([1, 5, 50, 500]))):
            roll = rng.random()
            key = (rng.choice(known) if known and roll < 0.6
                   else rng.choice(heads) + rng.randbytes(rng.randrange(8)))
            changes[key] = None if rng.random() < draw(st.sampled_from([0.2, 0.5, 0.9])) \
                else rng.choice([b"", rng.randbytes(30), b"o" * 1100, b"O" * 9000])
        changes.update(draw(st.dictionaries(key_st, st.none() | value_st, max_size=10)))
        batches.append(sorted(changes.items()))
    return page_size, model, batches


@settings(max_examples=60, deadline=None)
@given(histories())
def test_updates_match_a_dict_and_a_build_of_the_same_items(
        history: tuple[int, Model, list[list[Change]]]) -> None:
    page_size, model, batches = history
    store = MemStore(page_size)
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    for changes in batches:
        ref = updated(store, ref, changes, model)
        rebuilt, _ = btree.build(MemStore(page_size), sorted(model.items()), kind=KIND)
        assert rebuilt.count == ref.count
        tree = Tree(store, ref, kind=KIND)
        for key, value in changes[::7]:
            assert tree.get(key) == value


@pytest.mark.parametrize("seed", range(6))
def test_random_rounds_on_trees_of_height_one_to_four(seed: int) -> None:
    rng = random.Random(seed)
    store = MemStore(4096)
    # long keys sharing prefixes: few separators per page, so 4 levels come soon
    def key(i: int) -> bytes:
        return b"%s/%06d" % (b"x" * rng.choice([10, 300, 700]), i)

    model = {key(i): rng.randbytes(rng.choice([4, 40, 400])) for i in range(0, 6000, 3)}
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    heights = {ref.height}
    for _ in range(12):
        changes: dict[bytes, bytes | None] = {}
        for _ in range(rng.choice([1, 20, 300, 1500])):
            k = key(rng.randrange(6000))
            changes[k] = None if rng.random() < 0.45 else rng.randbytes(rng.choice([4, 40, 900]))
        ref = updated(store, ref, sorted(changes.items()), model)
        heights.add(ref.height)
        # rule 7: pages at least half full, so at least half the fan-out of a build
        rebuilt, _ = btree.build(MemStore(), sorted(model.items()), kind=KIND)
        assert ref.height <= 2 * rebuilt.height
    assert max(heights) >= 4


def test_updating_the_empty_tree_and_emptying_a_tree() -> None:
    store = MemStore()
    model: Model = {}
    items = numbered(5000)
    ref = updated(store, EMPTY, items, model)  # type: ignore[arg-type]
    assert ref.height >= 2 and len(model) == 5000
    before = pages_of(store, ref)
    new, freed, written = btree.update(store, ref, [(k, None) for k, _ in items], kind=KIND)
    assert new == EMPTY and written == [] and set(freed) == before
    assert btree.update(store, EMPTY, [(b"gone", None)], kind=KIND) == (EMPTY, [], [])


def test_no_change_writes_nothing() -> None:
    store = MemStore()
    items = numbered(3000)
    ref, _ = btree.build(store, items, kind=KIND)
    for changes in ([], [(b"absent", None)], [items[5], items[2000]],
                    [(b"a", None), items[17], (b"zzz", None)]):
        writes = len(store.data)
        assert btree.update(store, ref, changes, kind=KIND) == (ref, [], [])
        assert len(store.data) == writes


def test_many_deletes_merge_underfull_pages() -> None:
    store = MemStore()
    model = dict(numbered(20_000, 40))
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    built = len(pages_of(store, ref))
    rng = random.Random(3)
    keys = sorted(model)
    while len(model) > 40:
        doomed = rng.sample(sorted(model), len(model) // 2)
        ref = updated(store, ref, sorted((k, None) for k in doomed), model)
        pages = pages_of(store, ref)
        # rule 7: no more than about twice the pages of a build of what is left
        assert len(pages) <= 2 * built_pages(model) + ref.height
        rebuilt, _ = btree.build(MemStore(), sorted(model.items()), kind=KIND)
        assert ref.height <= rebuilt.height + 1
    assert len(pages_of(store, ref)) < built
    ref = updated(store, ref, [(keys[0], b"back")], model)
    assert Tree(store, ref, kind=KIND).get(keys[0]) == b"back"


def built_pages(model: Model) -> int:
    store = MemStore()
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    return len(pages_of(store, ref))


def test_keys_of_the_maximum_size() -> None:
    store = MemStore()
    base = b"\x01" * (btree.MAX_KEY_SIZE - 1)
    model = {base + bytes([i]): b"%d" % i for i in range(0, 200, 2)}
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    ref = updated(store, ref, [(base + bytes([i]), b"new %d" % i) for i in range(1, 200, 2)],
                  model)
    assert ref.height >= 7
    ref = updated(store, ref, [(base + bytes([i]), None) for i in range(0, 200, 3)], model)
    ref = updated(store, ref, [(b"\x02" * btree.MAX_KEY_SIZE, b"v" * 2000)], model)
    ref = updated(store, ref, [(k, None) for k in sorted(model)[:-1]], model)
    assert ref.height == 1 and len(model) == 1


def test_overflow_chains_are_shared_freed_and_written_whole() -> None:
    store = MemStore()
    cap = btree.overflow_capacity(4096)
    model = dict(numbered(2000))
    model[b"key-00000100"] = b"A" * (3 * cap)  # a chain of 3 pages
    model[b"key-00000900"] = b"B" * (2 * cap)
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    chain_a = {p for p in pages_of(store, ref) if store.page(p)[4] == btree.PageType.OVERFLOW
               and store.page(p)[64] == ord("A")}
    assert len(chain_a) == 3
    # a change next to an overflow value: its leaf is rewritten, its chain shared
    new, freed, written = btree.update(store, ref, [(b"key-00000101", b"x")], kind=KIND)
    assert chain_a <= pages_of(store, new) and not chain_a & (set(freed) | set(written))
    # replacing it frees its chain without reading it; a new chain is contiguous
    store.reads = 0
    newer, freed, written = btree.update(store, new, [(b"key-00000100", b"C" * (cap + 1))],
                                         kind=KIND)
    assert chain_a <= set(freed) and store.reads <= newer.height + 1
    chain_c = [p for p in written if store.page(p)[4] == btree.PageType.OVERFLOW]
    assert chain_c == [chain_c[0], chain_c[0] + 1]
    assert Tree(store, newer, kind=KIND).get(b"key-00000100") == b"C" * (cap + 1)
    model[b"key-00000101"] = b"x"
    updated(store, newer, [(b"key-00000100", b"small"), (b"key-00000900", None)],
            {**model, b"key-00000100": b"C" * (cap + 1)})


def test_an_update_reads_and_writes_pages_in_proportion_to_its_changes() -> None:
    store = MemStore()
    items = numbered(50_000)
    ref, _ = btree.build(store, items, kind=KIND)
    assert ref.height == 3
    tree = Tree(store, ref, kind=KIND, cache_pages=0)
    rng = random.Random(1)
    changes = sorted((items[i][0], b"new") for i in rng.sample(range(50_000), 10))
    store.reads = 0
    _, freed, written = tree.update(changes)
    assert store.reads <= 10 * ref.height
    assert len(written) <= 10 + 2 * ref.height and len(freed) == len(written)
    # through a warm page cache, the pages on the way are not read again
    warm = Tree(store, ref, kind=KIND, cache_pages=256)
    for key, _ in changes:
        warm.get(key)
    store.reads = 0
    warm.update(changes)
    assert store.reads == 0


def test_write_ids_and_stale_pages() -> None:
    """An update's pages carry its own write id; shared pages keep theirs, and each
    parent names them. A lost write that leaves an older page of the same tree at a reused
    page number is refused."""
    store = MemStore()
    ref, _ = btree.build(store, numbered(3000), kind=KIND, tree_id=1)
    new, freed, written = btree.update(store, ref, [(b"key-00000005", b"x")], kind=KIND,
                                       tree_id=2)
    assert new.tree_id == 2
    ids = {p: struct.unpack_from("<I", store.page(p), 12)[0] for p in pages_of(store, new)}
    assert {ids[p] for p in written} == {2} and set(ids.values()) == {1, 2}
    # Page `freed[0]` (the old leaf) is reused by the next update, whose write is lost.
    old_leaf = next(p for p in freed if store.page(p)[4] == btree.PageType.LEAF)
    stale = store.page(old_leaf)
    reuse = [old_leaf]

    class Reusing(MemStore):
        def allocate(self, n_pages: int) -> int:
            return reuse.pop() if n_pages == 1 and reuse else super().allocate(n_pages)

    again = Reusing()
    again.data = store.data
    newer, _, written2 = btree.update(again, new, [(b"key-00002990", b"y")], kind=KIND,
                                      tree_id=3)
    assert old_leaf in written2
    Tree(again, newer, kind=KIND)._check()
    again.put(old_leaf, stale)  # the write never reached the disk
    with pytest.raises(CorruptionError, match="stale"):
        Tree(again, newer, kind=KIND)._check()
    with pytest.raises(CorruptionError, match="stale"):
        list(Tree(again, newer, kind=KIND).items(b"key-00002990"))


# ------------------------------------------------------------------------------------------
# Trees written in format 1
# ------------------------------------------------------------------------------------------


def format1_items(name: str) -> list[tuple[bytes, bytes]]:
    """What tests/storage/data/btree_format1.bin.gz holds: written by `build` in format 1,
    before copy-on-write updates existed."""
    if name == "deep":
        base = b"\x01" * (btree.MAX_KEY_SIZE - 1)
        return [(base + bytes([i]), b"%d" % i) for i in range(200)] + [
            (b"\x02" * btree.MAX_KEY_SIZE, b"last")]
    out = []
    for i in range(3000):
        v = b"v%d-" % i * 5
        if i % 97 == 5:
            v = bytes([i % 251]) * 5000 + b"end%d" % i
        elif i % 101 == 7:
            v = b"m" * 1025 + b"%d" % i
        out.append((b"key-%08d" % i, v))
    return out


def format1_store() -> tuple[MemStore, dict[str, tuple[TreeRef, int]]]:
    raw = gzip.decompress((DATA / "btree_format1.bin.gz").read_bytes())
    (size,) = struct.unpack_from("<I", raw)
    meta = json.loads(raw[4 : 4 + size])
    store = MemStore(meta["page_size"])
    store.data = bytearray(raw[4 + size :])
    trees = {name: (TreeRef.unpack(bytes.fromhex(t["ref"])), t["kind"])
             for name, t in meta["trees"].items()}
    return store, trees


@pytest.mark.parametrize("name", ["mixed", "deep"])
def test_format1_trees_are_read_and_updated(name: str) -> None:
    store, trees = format1_store()
    ref, kind = trees[name]
    assert store.page(ref.root)[2] == 1  # format 1 pages
    items = format1_items(name)
    tree = Tree(store, ref, kind=kind)
    tree._check()
    assert list(tree.items()) == items
    for key, value in items[::13]:
        assert tree.get(key) == value
    model = dict(items)
    rng = random.Random(len(items))
    for round_ in range(3):
        keys = sorted(model)
        changes: dict[bytes, bytes | None] = {}
        for k in rng.sample(keys, min(len(keys) // 3, 400)):
            changes[k] = rng.choice([None, b"new", b"N" * 5000, b"n" * 1025])
        changes[keys[0][:100] + b"+%d" % round_] = b"inserted"
        ref = updated(store, ref, sorted(changes.items()), model, kind)
        assert len(Tree(store, ref, kind=kind).prefix_keys(b"")) == len(model)
        if not round_:  # format 2 pages over shared format 1 pages
            assert {store.page(p)[2] for p in pages_of(store, ref, kind)} == {1, 2}


# ------------------------------------------------------------------------------------------
# Bad input and damage
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    [(b"b", b""), (b"a", b"")],
    [(b"a", b""), (b"a", None)],
    [(b"a", "str")],
    [("str", b"")],
    [(b"a", b"", b"extra")],
    [(b"k" * (btree.MAX_KEY_SIZE + 1), b"")],
    [(b"a", b"v"), (b"b", bytes(btree.MAX_VALUE_SIZE + 1))],
])
def test_bad_changes_are_refused_and_the_old_tree_stays(changes: list[Change]) -> None:
    store = MemStore()
    ref, _ = btree.build(store, numbered(500), kind=KIND)
    before = bytes(store.data)
    written: list[int] = []
    with pytest.raises(InvalidArgumentError):
        btree.update(store, ref, changes, kind=KIND, written=written)
    assert store.data[: len(before)] == before
    assert written == list(range(len(before) // 4096, store.page_count()))
    Tree(store, ref, kind=KIND)._check()
    with pytest.raises(InvalidArgumentError):
        btree.update(store, ref, [], kind=KIND, tree_id=0)


def reseal(store: MemStore, page: int, offset: int, new: bytes) -> None:
    store.patch(page, offset, new, reseal=True)


def test_damage_met_by_an_update_is_a_corruption_error() -> None:
    store = MemStore()
    items = numbered(3000, 40)
    ref, pages = btree.build(store, items, kind=KIND)
    pristine = bytes(store.data)
    leaves = [p for p in pages if store.page(p)[4] == btree.PageType.LEAF]
    change = [(items[1500][0], b"new")]
    target = next(p for p in leaves if items[1500][0] in store.page(p))
    rng = random.Random(4)
    for offset in [0, 4, 8, 12, 16, 64, 66, 70, 100, rng.randrange(4096), 4095]:
        store.data[:] = pristine
        store.patch(target, offset, bytes([store.page(target)[offset] ^ 0x20]))
        with pytest.raises(ChecksumMismatch):
            btree.update(store, ref, change, kind=KIND)
        for flip in (0x01, 0x80, 0xFF):  # resealed: the structural checks catch it
            store.data[:] = pristine
            reseal(store, target, offset, bytes([store.page(target)[offset] ^ flip]))
            try:
                new, _, _ = btree.update(store, ref, change, kind=KIND)
            except CorruptionError:
                continue
            # what slipped past the update's checks must be refused by a reader, or be
            # what the page still (validly) says
            with contextlib.suppress(CorruptionError):
                Tree(store, new, kind=KIND)._check()
    store.data[:] = pristine
    n = struct.unpack_from("<I", store.page(ref.root), 8)[0]  # the root's children
    reseal(store, ref.root, 64 + 8 * n + 4 * (n - 1), b"\x99\x99\x99\x99")  # the last's id
    with pytest.raises(CorruptionError, match="stale"):
        btree.update(store, ref, [(items[-1][0], b"v")], kind=KIND)
    store.data[:] = pristine
    with pytest.raises(CorruptionError):  # a count its pages contradict
        btree.update(store, TreeRef(ref.root, ref.height, 2, ref.tree_id),
                     [(k, None) for k, _ in items], kind=KIND)


# ------------------------------------------------------------------------------------------
# Key and text range reads
# ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(key_st, st.binary(max_size=30), max_size=400),
       st.lists(st.binary(max_size=4), max_size=6),
       st.lists(st.tuples(st.binary(max_size=5), st.binary(max_size=5) | st.none()), max_size=6))
def test_key_reads_match_a_sorted_list(model: Model, prefixes: list[bytes],
                                       ranges: list[tuple[bytes, bytes | None]]) -> None:
    rng = random.Random(len(model))
    for i in range(rng.choice([0, 2000])):
        model.setdefault(b"%c%06d" % (rng.choice(b"ab\xff"), i), b"")
    store = MemStore()
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    tree = Tree(store, ref, kind=KIND)
    keys = sorted(model)
    for p in [b"", *prefixes]:
        expected = [k for k in keys if k.startswith(p)]
        got = tree.prefix_keys(p)
        assert got == expected
        got.append(b"mutated")  # a new list each time
        assert tree.prefix_keys(p) == expected
    for lo, hi in ranges:
        assert tree.keys(lo, hi) == [k for k in keys if lo <= k and (hi is None or k < hi)]


def test_texts_of_paths_and_of_reversed_paths() -> None:
    paths = sorted({"/a", "/a/b", "/a/é", "/a/日本", "/b/x", "/a/" + "z" * 900} |
                   {f"/dev{i % 7}/s{i}/2026" for i in range(3000)})
    store = MemStore()
    ref, _ = btree.build(store, [(p.encode(), b"") for p in paths], kind=KIND)
    tree = Tree(store, ref, kind=KIND)
    for prefix in ["", "/a", "/a/", "/dev3/", "/dev3/s1", "/zz", "/a/日"]:
        expected = [p for p in paths if p.startswith(prefix)]
        assert tree.prefix_texts(prefix.encode()) == expected
        assert tree.prefix_texts(prefix.encode()) == expected  # from the cached leaves
    rstore = MemStore()
    rev = sorted(p.encode()[::-1] for p in paths)
    rref, _ = btree.build(rstore, [(k, b"") for k in rev], kind=KIND)
    rtree = Tree(rstore, rref, kind=KIND)
    for suffix in ["", "/2026", "é", "本", "x"]:
        got = rtree.prefix_texts(suffix.encode()[::-1], reverse=True)
        assert sorted(got) == [p for p in paths if p.endswith(suffix)]
        assert got == [k[::-1].decode() for k in rev if k.startswith(suffix.encode()[::-1])]


def test_a_key_that_is_not_utf8_is_a_corruption_error() -> None:
    """A leaf's keys are decoded together: any read of a leaf holding such a key fails."""
    store = MemStore()
    items = [(b"/a%04d" % i, b"") for i in range(1000)] + [(b"/b\xff", b""), (b"/c", b"")]
    ref, _ = btree.build(store, items, kind=KIND)
    tree = Tree(store, ref, kind=KIND)
    assert tree.prefix_texts(b"/a000") == [f"/a{i:04d}" for i in range(10)]  # other leaves
    for prefix in (b"/", b"/b", b"/c"):
        with pytest.raises(CorruptionError, match="UTF-8"):
            tree.prefix_texts(prefix)
    assert tree.prefix_keys(b"/b") == [b"/b\xff"]


def test_damaged_pages_make_key_reads_raise_corruption_errors_only() -> None:
    store = MemStore()
    items = [(b"/p/%06d" % i, b"v" * 20) for i in range(3000)]
    ref, pages = btree.build(store, items, kind=KIND)
    pristine = bytes(store.data)
    rng = random.Random(8)
    for page in pages:
        for offset in [*range(0, 64, 4), 64, 66, 68, 200, *rng.sample(range(64, 4096), 6)]:
            for flip, sealed in ((0x10, False), (0x01, True), (0xFF, True)):
                store.data[:] = pristine
                page_bytes = store.page(page)
                new = bytes([page_bytes[offset] ^ flip])
                if 24 <= offset < 32:
                    continue
                store.patch(page, offset, new, reseal=sealed)
                for read in ("prefix_keys", "prefix_texts", "keys"):
                    tree = Tree(store, ref, kind=KIND)
                    try:
                        if read == "keys":
                            tree.keys(b"/p/000100", b"/p/002000")
                        else:
                            getattr(tree, read)(b"/p/00")
                    except CorruptionError:
                        pass


def test_texts_checksum_every_page() -> None:
    store = MemStore()
    ref, pages = btree.build(store, [(b"/k%05d" % i, b"") for i in range(2000)], kind=KIND)
    leaf = pages[3]
    store.patch(leaf, 300, bytes([store.page(leaf)[300] ^ 1]))
    with pytest.raises(ChecksumMismatch):
        Tree(store, ref, kind=KIND).prefix_texts(b"/k")


def test_pages_in_a_row_are_written_together() -> None:
    class Counting(MemStore):
        calls = 0

        def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
            self.calls += 1
            super().write_pages(page_no, data)

    store = Counting()
    ref, pages = btree.build(store, numbered(20_000), kind=KIND)
    assert store.calls <= len(pages) // 100
    store.calls = 0
    new, _, written = btree.update(store, ref, [(k, b"x") for k, _ in numbered(20_000)[::50]],
                                   kind=KIND)
    assert store.calls <= len(written) // 50
    Tree(store, new, kind=KIND)._check()


def test_merged_leaves_keep_each_entry_with_its_own_key() -> None:
    """A leaf whose changes left a run of its old entries is merged with the next one, whose
    first entry replaces the value under that leaf's own old key: each key must come from
    its own old page."""
    store = MemStore()
    model = {b"k%02d" % i: bytes([65 + i]) * 1000 for i in range(9)}  # 3 entries per leaf
    ref, _ = btree.build(store, sorted(model.items()), kind=KIND)
    assert len([p for p in pages_of(store, ref) if store.page(p)[4] == 1]) == 3
    changes: list[Change] = [(b"k01", None), (b"k02", None), (b"k03", None), (b"k04", b"x")]
    ref = updated(store, ref, changes, model)
    assert Tree(store, ref, kind=KIND).keys() == [b"k00", b"k04", b"k05", b"k06", b"k07",
                                                   b"k08"]


def test_a_build_leaves_room_in_its_leaves_for_the_first_updates() -> None:
    store = MemStore()
    items = [(b"doc-%08d" % i, b"r" * 150) for i in range(20_000)]
    ref, pages = btree.build(store, items, kind=KIND)
    leaves = [p for p in pages if store.page(p)[4] == btree.PageType.LEAF]
    used = [struct.unpack_from("<H", store.page(p), 64 + 2 * 2 * store.page(p)[8])[0]
            for p in leaves]  # where each leaf's values end: off[2n]
    assert max(used) <= 4096 - 4096 // 8 and min(used[:-1]) > 4096 * 3 // 4
    # a record growing by 100 bytes in each of 50 leaves: 50 pages (and their parents), no split
    changes = [(items[i][0], b"r" * 250) for i in range(0, 20_000, 400)]
    new, _, written = btree.update(store, ref, changes, kind=KIND)
    leaves_written = [p for p in written if store.page(p)[4] == btree.PageType.LEAF]
    assert len(leaves_written) == len(changes) and new.height == ref.height
