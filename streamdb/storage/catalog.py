"""The catalog: which paths name which documents, and each document's versions.

State = the trees of the last checkpoint (read lazily from pages) + an in-memory delta of
everything committed since (rebuilt from the log on open). `apply` is the only function
that changes it, for live commits and for log replay alike, so replay reproduces exactly
the state the writer had.

Invariants (`_check`): every path in the delta names a document that exists and lists the
path; every document lists at least one path; the path count matches the paths.
"""

from __future__ import annotations

import heapq
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import cast

from sortedcontainers import SortedDict

from streamdb.errors import CorruptionError
from streamdb.storage import btree
from streamdb.storage.records import (
    OP_BIND,
    OP_PRUNE,
    OP_UNBIND,
    OP_VERSION,
    DocRecord,
    Op,
    Version,
    decode_doc,
    encode_doc,
)

KIND_PATHS, KIND_SUFFIX, KIND_DOCS, KIND_FREE = 1, 2, 3, 4
_ABSENT = object()

Freed = Callable[[tuple[tuple[int, int], ...]], None]


class Catalog:
    def __init__(
        self,
        store: btree.PageStore,
        refs: dict[str, btree.TreeRef],
        *,
        keep: int,
        on_free: Freed,
        cache_pages: int = 64,
    ) -> None:
        self.store = store
        self.keep = keep
        self.cache_pages = cache_pages
        self._records: OrderedDict[bytes, DocRecord] = OrderedDict()  # decoded, from the tree
        self.on_free = on_free  # called with extents no version uses any more
        self.set_base(refs)

    def set_base(self, refs: dict[str, btree.TreeRef]) -> None:
        """Adopt checkpointed trees and start an empty delta."""
        self.refs = refs
        # The page cache is shared out: most lookups touch paths and docs, few the suffixes.
        pages = max(16, self.cache_pages // 5)
        self.paths = btree.Tree(self.store, refs["paths"], kind=KIND_PATHS, cache_pages=2 * pages)
        self.suffix = btree.Tree(self.store, refs["suffix"], kind=KIND_SUFFIX, cache_pages=pages)
        self.docs = btree.Tree(self.store, refs["docs"], kind=KIND_DOCS, cache_pages=2 * pages)
        self._records.clear()
        self.d_paths: SortedDict = SortedDict()  # path key -> doc id bytes | None
        self.d_suffix: SortedDict = SortedDict()  # reversed key -> True | None
        self.d_docs: dict[bytes, DocRecord | None] = {}
        self.count = len(self.paths)

    # -- reads -----------------------------------------------------------------------------

    def lookup(self, key: bytes) -> bytes | None:
        """The doc id a path key names, or None. O(log n)."""
        hit = self.d_paths.get(key, _ABSENT)
        if hit is not _ABSENT:
            return cast(bytes | None, hit)
        return self.paths.get(key)

    def doc(self, doc_id: bytes) -> DocRecord | None:
        hit = self.d_docs.get(doc_id, _ABSENT)
        if hit is not _ABSENT:
            return hit  # type: ignore[return-value]
        record = self._records.get(doc_id)
        if record is not None:
            self._records.move_to_end(doc_id)
            return record
        raw = self.docs.get(doc_id)
        if raw is None:
            return None
        record = decode_doc(uuid.UUID(bytes=doc_id), raw)
        self._records[doc_id] = record
        if len(self._records) > 4 * self.cache_pages:
            self._records.popitem(last=False)
        return record

    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the trees' page caches."""
        stats = [t.cache_stats() for t in (self.paths, self.suffix, self.docs)]
        return sum(h for h, _ in stats), sum(m for _, m in stats)

    def path_items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(path key, doc id) for paths starting with `prefix`, ascending. O(log n + k)."""
        if not self.d_paths:  # nothing changed since the checkpoint: no merge needed
            return self.paths.prefix(prefix)
        return _merge_items(self.paths.prefix(prefix), _delta_range(self.d_paths, prefix))

    def iter_paths(self, prefix: bytes = b"") -> Iterator[bytes]:
        """Path keys starting with `prefix`, ascending. O(log n + k)."""
        return (key for key, _ in self.path_items(prefix))

    def reversed_keys(self, rev_prefix: bytes = b"") -> Iterator[bytes]:
        """Reversed path keys starting with `rev_prefix`, ascending. O(log n + k)."""
        base = self.suffix.prefix(rev_prefix)
        if not self.d_suffix:
            return (k for k, _ in base)
        return (k for k, _ in _merge_items(base, _delta_range(self.d_suffix, rev_prefix)))

    def iter_suffix(self, suffix: bytes) -> Iterator[bytes]:
        """Path keys ending with `suffix`, in reversed-key order. O(log n + k)."""
        return (key[::-1] for key in self.reversed_keys(suffix[::-1]))

    def iter_docs(self) -> Iterator[DocRecord]:
        """Every document, ordered by id."""
        base = ((k, v) for k, v in self.docs.items())
        delta = sorted(self.d_docs.items())
        for key, value in _merge_items(base, delta):
            yield value if isinstance(value, DocRecord) else decode_doc(uuid.UUID(bytes=key), value)

    # -- changes ---------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        """Apply one logged operation. Raises CorruptionError when the log contradicts the
        state (a replayed log that does not fit the checkpoint it follows)."""
        if op.kind == OP_VERSION:
            assert op.doc_id is not None and op.version is not None
            key = op.doc_id.bytes
            doc = self.doc(key) or DocRecord(op.doc_id, ())
            versions = (op.version, *doc.versions)
            self._put_doc(DocRecord(doc.doc_id, versions[: self.keep], doc.paths),
                          versions[self.keep :])
        elif op.kind == OP_BIND:
            assert op.doc_id is not None
            key = op.doc_id.bytes
            if self.doc(key) is None:
                raise CorruptionError(f"log binds {op.path!r} to a missing document {op.doc_id}")
            old = self.lookup(op.path)
            if old == key:
                return
            if old is not None:
                self._drop_path(old, op.path)
            else:
                self.count += 1
                self.d_suffix[op.path[::-1]] = True
            self.d_paths[op.path] = key
            bound = self.doc(key)
            assert bound is not None
            self._put_doc(DocRecord(bound.doc_id, bound.versions,
                                    tuple(sorted((*bound.paths, op.path)))), ())
        elif op.kind == OP_UNBIND:
            old = self.lookup(op.path)
            if old is None:
                raise CorruptionError(f"log unbinds {op.path!r}, which names nothing")
            self._drop_path(old, op.path)
            self.d_paths[op.path] = None
            self.d_suffix[op.path[::-1]] = None
            self.count -= 1
        elif op.kind == OP_PRUNE:
            assert op.doc_id is not None
            pruned = self.doc(op.doc_id.bytes)
            if pruned is not None and len(pruned.versions) > op.keep >= 1:
                self._put_doc(replace(pruned, versions=pruned.versions[: op.keep]),
                              pruned.versions[op.keep :])
        else:
            raise CorruptionError(f"unknown log operation {op.kind}")

    def _drop_path(self, doc_key: bytes, path: bytes) -> None:
        doc = self.doc(doc_key)
        if doc is None:
            raise CorruptionError(f"path {path!r} names a missing document")
        paths = tuple(p for p in doc.paths if p != path)
        if paths:
            self._put_doc(replace(doc, paths=paths), ())
        else:  # no path left: the document is deleted
            self.d_docs[doc_key] = None
            self.on_free(tuple(e for v in doc.versions for e in v.extents))

    def _put_doc(self, doc: DocRecord, dropped: Iterable[Version]) -> None:
        self.d_docs[doc.doc_id.bytes] = doc
        self.on_free(tuple(e for v in dropped for e in v.extents))

    def replace_version(self, doc_id: bytes, old: Version, new: Version) -> None:
        """Swap a version's storage (checkpoint moves inline bytes to pages)."""
        doc = self.doc(doc_id)
        assert doc is not None
        self.d_docs[doc_id] = replace(doc, versions=tuple(new if v is old else v
                                                           for v in doc.versions))

    # -- checkpoint ------------------------------------------------------------------------

    def merged_items(self) -> dict[str, Iterator[tuple[bytes, bytes]]]:
        """The next checkpoint's trees, as sorted (key, value) streams."""
        paths = self.path_items()
        suffix = ((k, b"") for k in self.reversed_keys())
        docs = ((d.doc_id.bytes, encode_doc(d)) for d in self.iter_docs())
        return {"paths": paths, "suffix": suffix, "docs": docs}

    def _check(self) -> None:
        count = 0
        for key in self.iter_paths():
            count += 1
            doc_id = self.lookup(key)
            doc = self.doc(doc_id) if doc_id else None
            assert doc is not None and key in doc.paths, key
        assert count == self.count, (count, self.count)
        for doc in self.iter_docs():
            assert doc.paths and doc.versions, doc.doc_id
            for p in doc.paths:
                assert self.lookup(p) == doc.doc_id.bytes, p


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _delta_range(delta: SortedDict, prefix: bytes) -> Iterator[tuple[bytes, object]]:
    stop = _prefix_end(prefix)
    keys = delta.irange(prefix, stop, inclusive=(True, False)) if stop else delta.irange(prefix)
    return ((k, delta[k]) for k in keys)


def _merge_items(
    base: Iterable[tuple[bytes, object]], delta: Iterable[tuple[bytes, object]]
) -> Iterator[tuple[bytes, bytes]]:
    """Merge two ascending streams; delta wins on equal keys; a None delta value deletes."""
    tagged_base = ((k, 1, v) for k, v in base)
    tagged_delta = ((k, 0, v) for k, v in delta)
    last: bytes | None = None
    for key, _rank, value in heapq.merge(tagged_delta, tagged_base, key=lambda t: (t[0], t[1])):
        if key == last:
            continue
        last = key
        if value is not None:
            yield key, value  # type: ignore[misc]
