"""The catalog's incremental checkpoint stream (`changes`) and its list-returning searches,
against what the catalog reads merged (`merged_items`, `path_items`) at several LSNs."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest

from streamdb.errors import CorruptionError
from streamdb.storage import btree
from streamdb.storage.catalog import (
    KIND_DOCS,
    KIND_PATHS,
    KIND_SUFFIX,
    LATEST,
    Catalog,
)
from streamdb.storage.records import (
    OP_BIND,
    OP_CREATE,
    OP_PRUNE,
    OP_UNBIND,
    OP_VERSION,
    DocRecord,
    Op,
    Version,
    encode_doc,
)
from tests.storage.test_btree import MemStore

KINDS = {"paths": KIND_PATHS, "suffix": KIND_SUFFIX, "docs": KIND_DOCS}


def version(rng: random.Random, number: int) -> Version:
    return Version(number, 0, 4096, 1.7e9, 1.7e9, 1, 256 << 10,
                   extents=((rng.randrange(1 << 30), 1),), sums=(rng.getrandbits(64),))


def base_catalog(n: int, seed: int = 1) -> tuple[MemStore, Catalog, list[uuid.UUID],
                                                  list[bytes]]:
    """A catalog over trees of n one-path documents, built directly."""
    rng = random.Random(seed)
    store = MemStore(4096)
    ids = [uuid.UUID(bytes=rng.randbytes(16)) for _ in range(n)]
    paths = [b"/dev%d/s%05d/2026" % (i % 7, i) for i in range(n)]
    refs = {
        "docs": btree.build(store, sorted(
            (d.bytes, encode_doc(DocRecord(d, (version(rng, 1),), (p,))))
            for d, p in zip(ids, paths, strict=True)), kind=KIND_DOCS)[0],
        "paths": btree.build(store, sorted(zip(paths, (d.bytes for d in ids), strict=True)),
                             kind=KIND_PATHS)[0],
        "suffix": btree.build(store, [(k, b"") for k in sorted(p[::-1] for p in paths)],
                              kind=KIND_SUFFIX)[0],
        "free": btree.EMPTY,
    }
    catalog = Catalog(store, refs, keep=2, on_free=lambda extents, lsn: None, cache_pages=64)
    return store, catalog, ids, paths


def random_ops(rng: random.Random, ids: list[uuid.UUID], paths: list[bytes],
               count: int) -> Iterator[Op]:
    """Versions, new documents, aliases, unbinds (deleting single-path documents), prunes."""
    live = dict(zip(paths, ids, strict=True))
    for k in range(count):
        roll = rng.random()
        if roll < 0.35 or not live:
            path = rng.choice(list(live)) if live and rng.random() < 0.2 else \
                b"/new%d/%05d/x" % (rng.randrange(7), k)
            if path in live:
                yield Op(OP_VERSION, live[path], version=version(rng, 9))
                continue
            doc = uuid.UUID(bytes=rng.randbytes(16))
            live[path] = doc
            yield Op(OP_CREATE, doc, path=path, version=version(rng, 1))
        elif roll < 0.6:
            yield Op(OP_VERSION, live[rng.choice(list(live))], version=version(rng, 9))
        elif roll < 0.75:
            alias = b"/alias/%05d" % k
            live[alias] = live[rng.choice(list(live))]
            yield Op(OP_BIND, live[alias], path=alias)
        elif roll < 0.95:
            path = rng.choice(list(live))
            del live[path]
            yield Op(OP_UNBIND, path=path)
        else:
            yield Op(OP_PRUNE, live[rng.choice(list(live))], keep=1)


def next_trees(store: MemStore, catalog: Catalog, at: int) -> dict[str, btree.TreeRef]:
    """The trees of a checkpoint at `at`, by `next_trees`; each checked against
    `merged_items(at)`, what a full rebuild would write, and its pages against the old
    trees': freed ones the old trees' alone, written ones new, the rest shared."""
    merged = {name: list(items) for name, items in catalog.merged_items(at).items()}
    old_pages = {name: set(getattr(catalog, name).pages()) for name in KINDS}
    written: list[int] = []
    refs, freed = catalog.next_trees(at, written=written)
    new_pages: set[int] = set()
    for name, kind in KINDS.items():
        new = btree.Tree(store, refs[name], kind=kind)
        new._check()
        assert list(new.items()) == merged[name], name
        new_pages |= set(new.pages())
    old = set().union(*old_pages.values())
    assert len(freed) == len(set(freed)) and set(freed) <= old and not set(freed) & new_pages
    assert new_pages == (old - set(freed)) | set(written)
    return {**catalog.refs, **refs}


@pytest.mark.parametrize("seed", range(4))
def test_changes_give_the_trees_merged_items_gives(seed: int) -> None:
    rng = random.Random(seed)
    store, catalog, ids, paths = base_catalog(rng.choice([0, 50, 2000]), seed)
    ops = list(random_ops(rng, ids, paths, 600))
    for lsn, op in enumerate(ops, 1):
        catalog.apply(op, lsn)
    catalog.mark()
    for at in (0, 1, 100, 599, LATEST):
        refs = next_trees(store, catalog, at)
        following = Catalog(store, refs, keep=2, on_free=lambda extents, lsn: None)
        following._check()
        assert following.count() == catalog.count(at)
        assert following.iter_paths() == catalog.iter_paths(b"", at)
        for doc in following.iter_docs():
            assert catalog.doc(doc.doc_id.bytes, at) == doc


def test_a_checkpoint_with_no_change_writes_nothing() -> None:
    _, catalog, _, _ = base_catalog(500)
    written: list[int] = []
    refs, freed = catalog.next_trees(written=written)
    assert refs == {n: catalog.refs[n] for n in KINDS} and freed == written == []


def test_a_failing_checkpoint_reports_what_it_wrote() -> None:
    rng = random.Random(9)
    store, catalog, ids, paths = base_catalog(2000)
    for lsn, op in enumerate(random_ops(rng, ids, paths, 300), 1):
        catalog.apply(op, lsn)
    before = bytes(store.data)
    seen = 0

    def failing(doc: DocRecord) -> DocRecord:
        nonlocal seen
        seen += 1
        if seen == 50:
            raise OSError("disk full")
        return doc

    written: list[int] = []
    with pytest.raises(OSError, match="disk full"):
        catalog.next_trees(docs=failing, written=written)
    assert written and min(written) >= len(before) // store.page_size  # only new pages
    assert store.data[: len(before)] == before  # the catalog's trees untouched
    for name, kind in KINDS.items():
        btree.Tree(store, catalog.refs[name], kind=kind)._check()


def test_changes_encode_only_the_changed_records(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    _, catalog, ids, paths = base_catalog(3000)
    for lsn, op in enumerate(random_ops(rng, ids, paths, 40), 1):
        catalog.apply(op, lsn)
    from streamdb.storage import catalog as catalog_module
    encoded: list[DocRecord] = []
    real = encode_doc

    def counting(doc: DocRecord) -> bytes:
        encoded.append(doc)
        return real(doc)

    monkeypatch.setattr(catalog_module, "encode_doc", counting)
    docs = list(catalog.changes()["docs"])
    assert len(encoded) == sum(1 for _, v in docs if v is not None) <= 40
    assert len(docs) == len(catalog.d_docs)


# ------------------------------------------------------------------------------------------
# Searches
# ------------------------------------------------------------------------------------------


def expected_paths(catalog: Catalog, prefix: bytes, at: int) -> list[bytes]:
    return [k for k, _ in catalog.path_items(prefix, at)]


@pytest.mark.parametrize("changes", [0, 10, 200])
def test_searches_merge_the_delta(changes: int) -> None:
    rng = random.Random(changes)
    _, catalog, ids, paths = base_catalog(3000)
    ops = list(random_ops(rng, ids, paths, changes))
    for lsn, op in enumerate(ops, 1):
        catalog.apply(op, lsn)
    for at in {0, len(ops) // 2, LATEST}:
        everything = expected_paths(catalog, b"", at)
        for prefix in (b"", b"/", b"/dev3/", b"/dev3/s0", b"/new", b"/alias/", b"/zz",
                       b"/dev6/s02"):
            keys = expected_paths(catalog, prefix, at)
            assert catalog.iter_paths(prefix, at) == keys
            assert catalog.search_paths(prefix, at) == [k.decode() for k in keys]
        for suffix in (b"", b"/2026", b"/x", b"7/2026", b"nothing"):
            ending = [k for k in everything if k.endswith(suffix)]
            rev = sorted(k[::-1] for k in ending)
            assert catalog.reversed_keys(suffix[::-1], at) == rev
            assert catalog.iter_suffix(suffix, at) == [k[::-1] for k in rev]
            assert catalog.search_suffix(suffix, at) == sorted(k.decode() for k in ending)
        result = catalog.search_paths(b"/dev1/", at)
        result.clear()  # a new list each time
        assert catalog.search_paths(b"/dev1/", at) == [
            k.decode() for k in expected_paths(catalog, b"/dev1/", at)]


def test_a_delta_path_that_is_not_utf8_is_a_corruption_error() -> None:
    rng = random.Random(2)
    _, catalog, _, _ = base_catalog(100)
    catalog.apply(Op(OP_CREATE, uuid.UUID(bytes=rng.randbytes(16)), path=b"/bad\xff",
                     version=version(rng, 1)), 1)
    with pytest.raises(CorruptionError, match="UTF-8"):
        catalog.search_paths(b"/")
    with pytest.raises(CorruptionError, match="UTF-8"):
        catalog.search_suffix(b"")
    assert catalog.search_paths(b"/dev") and b"/bad\xff" in catalog.iter_paths(b"/")
