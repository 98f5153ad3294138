"""The catalog: which paths name which documents, and each document's versions.

A catalog is the trees of one checkpoint (read lazily from pages, immutable) plus a
multi-version delta of everything committed since (rebuilt from the log on open). Every
delta entry carries the LSN of the operation that wrote it, so one catalog serves every
state since its checkpoint: a read *at* LSN `at` sees the newest entry with `lsn <= at`
and falls through to the trees when there is none. That makes a snapshot O(1): an LSN.

`apply` is the only function that changes it, for live commits and log replay alike, so
replay reproduces exactly the state the writer had. A checkpoint does not change a catalog:
it starts a new one over the new trees, and readers of the old one go on using it. The new
trees come from `changes` (what the delta holds as of an LSN, per tree, for
`btree.Tree.update`: copy-on-write, cost proportional to the changes) or, for a full rebuild,
from `merged_items` (every item, for `btree.build`).

Searches (`iter_paths`, `search_paths`, `reversed_keys`, `iter_suffix`, `search_suffix`)
return new lists: the trees' leaves are sliced (`btree.Tree.prefix_keys`, `prefix_texts`) and
the delta keys under the prefix bisected in.

Concurrency: one writer (the caller serialises `apply` and `rollback`), any number of
reader threads. A history list is only ever appended to or replaced whole, never edited
where a reader may be walking it; adding or removing a key of a sorted delta happens under
`_mutex`, and range reads copy the keys they need under it. Readers never wait for I/O.

History is folded as it grows: an entry older than the newest one at or below `horizon` (the
oldest LSN any reader of this catalog may still read at) can never be read again. Entries
are appended in place (readers walk a history backwards by index, so an append never
disturbs them), and a history is replaced by a folded copy once half of it is unreachable:
O(1) amortised per change.

Invariants (`_check(at)`): every path names a document that exists and lists the path;
every document lists at least one path and one version; the path count matches the paths.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, cast

from sortedcontainers import SortedDict

from streamdb.errors import CorruptionError
from streamdb.storage import btree
from streamdb.storage.records import (
    OP_BIND,
    OP_CREATE,
    OP_EXTEND,
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
LATEST = (1 << 63) - 1  # read at this LSN to see every entry
_ABSENT: Any = object()

# Called with the extents no version uses any more, and the LSN of the operation.
Freed = Callable[[tuple[tuple[int, int], ...], int], None]
History = list[tuple[int, Any]]


def _at(history: History | None, at: int) -> Any:
    """The value of the newest entry with lsn <= at, or _ABSENT. O(entries after `at`)."""
    if history is not None:
        for lsn, value in reversed(history):
            if lsn <= at:
                return value
    return _ABSENT


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
        self.refs = refs
        self.keep = keep
        self.on_free = on_free
        # The page cache is shared out. Every read by path and every prefix search reads the
        # paths tree (a searched leaf keeps its decoded keys while cached: a search of cached
        # leaves only copies references); records read by id are cached decoded below, so
        # the docs tree's pages matter less; the suffix tree serves suffix searches only.
        self.paths = btree.Tree(store, refs["paths"], kind=KIND_PATHS,
                                cache_pages=max(32, cache_pages // 2))
        self.suffix = btree.Tree(store, refs["suffix"], kind=KIND_SUFFIX,
                                 cache_pages=max(16, cache_pages // 8))
        self.docs = btree.Tree(store, refs["docs"], kind=KIND_DOCS,
                               cache_pages=max(32, cache_pages * 3 // 8))
        # Decoded records and path lookups of the (immutable) trees, a few hundred bytes
        # each: many more of them than pages.
        entries = 16 * max(16, cache_pages)
        self._base_doc = functools.lru_cache(maxsize=entries)(self._decode)
        self._base_path = functools.lru_cache(maxsize=entries)(self.paths.get)
        self._mutex = threading.Lock()
        self.d_paths: SortedDict = SortedDict()  # path key -> history of doc id | None
        self.d_suffix: SortedDict = SortedDict()  # reversed key -> history of bool
        self.d_docs: dict[bytes, History] = {}  # doc id -> history of DocRecord | None
        self._counts: History = [(0, len(self.paths))]
        self.horizon = 0
        self._undo: list[tuple[dict[bytes, History] | None, bytes]] = []

    # -- reads -----------------------------------------------------------------------------

    def _decode(self, doc_id: bytes) -> DocRecord | None:
        raw = self.docs.get(doc_id)
        if raw is None:
            return None
        if len(doc_id) != 16:  # a damaged paths tree names it
            raise CorruptionError(f"a document id of {len(doc_id)} bytes: {doc_id[:32]!r}")
        return decode_doc(uuid.UUID(bytes=doc_id), raw)

    def lookup(self, key: bytes, at: int = LATEST) -> bytes | None:
        """The doc id a path key names at LSN `at`, or None. O(log n)."""
        hit = _at(self.d_paths.get(key), at)
        if hit is not _ABSENT:
            return cast(bytes | None, hit)
        return self._base_path(key)

    def doc(self, doc_id: bytes, at: int = LATEST) -> DocRecord | None:
        """A document's record at LSN `at`, or None. O(log n); decoded records are cached."""
        hit = _at(self.d_docs.get(doc_id), at)
        if hit is not _ABSENT:
            return cast(DocRecord | None, hit)
        return self._base_doc(doc_id)

    def count(self, at: int = LATEST) -> int:
        """Number of paths at LSN `at`. O(1) amortised."""
        return cast(int, _at(self._counts, at))

    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the trees' page caches and the decoded-record cache."""
        stats = [t.cache_stats() for t in (self.paths, self.suffix, self.docs)]
        for cache in (self._base_doc, self._base_path):
            info = cache.cache_info()
            stats.append((info.hits, info.misses))
        return sum(h for h, _ in stats), sum(m for _, m in stats)

    def _delta_range(self, delta: SortedDict, prefix: bytes, at: int) -> list[tuple[bytes, Any]]:
        stop = _prefix_end(prefix)
        with self._mutex:
            keys = list(delta.irange(prefix, stop, inclusive=(True, False)) if stop
                        else delta.irange(prefix))
        found = []
        for key in keys:
            value = _at(delta.get(key), at)
            if value is not _ABSENT:
                found.append((key, value))
        return found

    def path_items(self, prefix: bytes = b"", at: int = LATEST
                   ) -> Iterator[tuple[bytes, bytes]]:
        """(path key, doc id) for paths starting with `prefix` at LSN `at`, ascending.
        O(log n + k) plus O(delta keys under the prefix), copied at the call."""
        delta = self._delta_range(self.d_paths, prefix, at) if self.d_paths else []
        if not delta:  # nothing changed here since the checkpoint: no merge needed
            return self.paths.prefix(prefix)
        return _merge_items(self.paths.prefix(prefix), delta)

    def iter_paths(self, prefix: bytes = b"", at: int = LATEST) -> list[bytes]:
        """Path keys starting with `prefix` at LSN `at`, ascending, as a new list.

        O(log n + k) for k keys in the tree (their leaves' cached key lists sliced, no value
        read), plus O(d log k) for the d delta keys under the prefix (each bisected into
        the list; a merge and sort past `_BISECT_MAX`). Raises CorruptionError."""
        keys = self.paths.prefix_keys(prefix)
        delta = self._delta_range(self.d_paths, prefix, at) if self.d_paths else []
        if delta:
            _apply_delta(keys, [(k, v is not None) for k, v in delta])
        return keys

    def search_paths(self, prefix: bytes, at: int = LATEST) -> list[str]:
        """The paths (as text) whose key starts with `prefix` at LSN `at`, sorted, as a new
        list: what `Database.search` returns, in one call.

        O(log n + k), as `iter_paths`, but each leaf's keys are decoded once while it stays
        cached (`Tree.prefix_texts`), so a search of cached leaves copies k references and
        decodes only its delta keys. Raises CorruptionError (a stored key that is not
        UTF-8 among them)."""
        texts = self.paths.prefix_texts(prefix)
        delta = self._delta_range(self.d_paths, prefix, at) if self.d_paths else []
        if delta:
            _apply_delta(texts, [(_text(k), v is not None) for k, v in delta])
        return texts

    def reversed_keys(self, rev_prefix: bytes = b"", at: int = LATEST) -> list[bytes]:
        """Reversed path keys starting with `rev_prefix` at LSN `at`, ascending, as a new
        list. Same costs as `iter_paths`."""
        keys = self.suffix.prefix_keys(rev_prefix)
        delta = self._delta_range(self.d_suffix, rev_prefix, at) if self.d_suffix else []
        if delta:
            _apply_delta(keys, [(k, bool(v)) for k, v in delta])
        return keys

    def iter_suffix(self, suffix: bytes, at: int = LATEST) -> list[bytes]:
        """Path keys ending with `suffix`, in reversed-key order, as a new list.
        O(log n + k)."""
        return [key[::-1] for key in self.reversed_keys(suffix[::-1], at)]

    def search_suffix(self, suffix: bytes, at: int = LATEST) -> list[str]:
        """The paths (as text) whose key ends with `suffix` at LSN `at`, sorted, as a new
        list: what `Database.search_suffix` returns, in one call.

        O(log n + k log k): the suffix tree's leaves give the paths (decoded once per cached
        leaf, `Tree.prefix_texts`) in reversed-key order, then they are sorted; delta keys
        as in `iter_paths`. Raises CorruptionError."""
        rev = suffix[::-1]
        texts = self.suffix.prefix_texts(rev, reverse=True)
        texts.sort()
        delta = self._delta_range(self.d_suffix, rev, at) if self.d_suffix else []
        if delta:
            _apply_delta(texts, [(_text(k[::-1]), bool(v)) for k, v in delta])
        return texts

    def iter_docs(self, at: int = LATEST) -> Iterator[DocRecord]:
        """Every document at LSN `at`, ordered by id. O(n) reads, O(delta) memory."""
        with self._mutex:
            keys = sorted(self.d_docs)
        delta = [(k, v) for k in keys if (v := _at(self.d_docs.get(k), at)) is not _ABSENT]
        for key, value in _merge_items(self.docs.items(), delta):
            if isinstance(value, DocRecord):
                yield value
                continue
            if len(key) != 16:
                raise CorruptionError(f"the docs tree holds a key of {len(key)} bytes, not a "
                                      f"16-byte document id: {key[:32]!r}")
            yield decode_doc(uuid.UUID(bytes=key), value)

    # -- changes ---------------------------------------------------------------------------

    def apply(self, op: Op, lsn: int) -> None:
        """Apply one logged operation with LSN `lsn` (above every LSN applied before).
        Raises CorruptionError when the log contradicts the state (a replayed log that does
        not fit the checkpoint it follows); the state is then unchanged by this op."""
        if op.kind == OP_VERSION:
            assert op.doc_id is not None and op.version is not None
            doc = self.doc(op.doc_id.bytes) or DocRecord(op.doc_id, ())
            versions = (op.version, *doc.versions)
            self._put_doc(DocRecord(doc.doc_id, versions[: self.keep], doc.paths),
                          versions[self.keep :], lsn)
        elif op.kind == OP_BIND:
            assert op.doc_id is not None
            key = op.doc_id.bytes
            bound = self.doc(key)
            if bound is None:
                raise CorruptionError(f"log binds {op.path!r} to a missing document {op.doc_id}")
            old = self.lookup(op.path)
            if old == key:
                return
            if old is not None:
                self._drop_path(old, op.path, lsn)
            else:
                self._count(+1, lsn)
                self._set(self.d_suffix, op.path[::-1], True, lsn)
            self._set(self.d_paths, op.path, key, lsn)
            self._put_doc(DocRecord(bound.doc_id, bound.versions,
                                    tuple(sorted((*bound.paths, op.path)))), (), lsn)
        elif op.kind == OP_UNBIND:
            old = self.lookup(op.path)
            if old is None:
                raise CorruptionError(f"log unbinds {op.path!r}, which names nothing")
            self._drop_path(old, op.path, lsn)
            self._set(self.d_paths, op.path, None, lsn)
            self._set(self.d_suffix, op.path[::-1], False, lsn)
            self._count(-1, lsn)
        elif op.kind == OP_CREATE:
            assert op.doc_id is not None and op.version is not None
            key = op.doc_id.bytes
            if self.doc(key) is not None or self.lookup(op.path) is not None:
                raise CorruptionError(f"log creates {op.doc_id} at {op.path!r}, which exist")
            self._set(self.d_docs, key, DocRecord(op.doc_id, (op.version,), (op.path,)), lsn)
            self._set(self.d_paths, op.path, key, lsn)
            self._set(self.d_suffix, op.path[::-1], True, lsn)
            self._count(+1, lsn)
        elif op.kind == OP_EXTEND:
            assert op.doc_id is not None and op.version is not None
            grown = self.doc(op.doc_id.bytes)
            if grown is None or grown.latest.version != op.version.version:
                raise CorruptionError(f"log extends a version of {op.doc_id} that is not there")
            self._put_doc(replace(grown, versions=(op.version, *grown.versions[1:])), (), lsn)
            # The same pages and more, but for an encrypted log's rewritten last chunk.
            freed = extents_minus(grown.latest.extents, op.version.extents)
            if freed:
                self.on_free(freed, lsn)
        elif op.kind == OP_PRUNE:
            assert op.doc_id is not None
            pruned = self.doc(op.doc_id.bytes)
            if pruned is not None and len(pruned.versions) > op.keep >= 1:
                self._put_doc(replace(pruned, versions=pruned.versions[: op.keep]),
                              pruned.versions[op.keep :], lsn)
        else:
            raise CorruptionError(f"unknown log operation {op.kind}")

    def _drop_path(self, doc_key: bytes, path: bytes, lsn: int) -> None:
        doc = self.doc(doc_key)
        if doc is None:
            raise CorruptionError(f"path {path!r} names a missing document")
        paths = tuple(p for p in doc.paths if p != path)
        if paths:
            self._put_doc(replace(doc, paths=paths), (), lsn)
        else:  # no path left: the document is deleted
            self._set(self.d_docs, doc_key, None, lsn)
            self.on_free(tuple(e for v in doc.versions for e in v.extents), lsn)

    def _put_doc(self, doc: DocRecord, dropped: tuple[Version, ...], lsn: int) -> None:
        self._set(self.d_docs, doc.doc_id.bytes, doc, lsn)
        if dropped:
            self.on_free(tuple(e for v in dropped for e in v.extents), lsn)

    def _append(self, history: History, entry: tuple[int, Any]) -> History:
        """`history` plus `entry`: appended in place (a reader walking the list backwards
        from its end, by index, never sees the new entry move anything), or, once at least
        half of it is unreachable, a new folded list. O(1) amortised."""
        if len(history) >= 4 and history[1][0] <= self.horizon:
            i = bisect.bisect_right(history, self.horizon, key=lambda e: e[0])
            if 2 * (i - 1) >= len(history):  # fold: a new list, readers keep the old one
                return [*history[i - 1 :], entry]
        history.append(entry)
        return history

    def _set(self, delta: Any, key: bytes, value: object, lsn: int) -> None:
        history = delta.get(key)
        self._undo.append((delta, key))
        if history is None:
            with self._mutex:
                delta[key] = [(lsn, value)]
        else:
            folded = self._append(history, (lsn, value))
            if folded is not history:
                delta[key] = folded

    def _count(self, change: int, lsn: int) -> None:
        self._undo.append((None, b""))
        self._counts = self._append(self._counts, (lsn, self.count() + change))

    def mark(self) -> None:
        """Forget the undo information: everything applied so far is committed."""
        self._undo.clear()

    def undo_mark(self) -> int:
        """A savepoint for `rollback`: how much undo information there is now."""
        return len(self._undo)

    def rollback(self, upto: int, mark: int = 0) -> None:
        """Drop the entries with an LSN above `upto` that were made after the savepoint
        `mark` (default: since `mark()`): the catalog is as it was at `upto`.
        O(entries dropped). Freed extents are the caller's to restore."""
        for delta, key in reversed(self._undo[mark:]):
            if delta is None:
                self._counts = [e for e in self._counts if e[0] <= upto]
                continue
            history = delta.get(key)
            if history is None:
                continue
            kept = [e for e in history if e[0] <= upto]
            if kept:
                delta[key] = kept
            else:
                with self._mutex:
                    del delta[key]
        del self._undo[mark:]

    # -- checkpoint ------------------------------------------------------------------------

    def merged_items(self, at: int = LATEST,
                     docs: Callable[[DocRecord], DocRecord] | None = None,
                     ) -> dict[str, Iterator[tuple[bytes, bytes]]]:
        """The next checkpoint's trees at LSN `at`, as sorted (key, value) streams; `docs`
        may transform each record on its way into the tree."""
        change = docs or (lambda d: d)
        return {
            "paths": self.path_items(b"", at),
            "suffix": self._suffix_items(at),
            "docs": ((d.doc_id.bytes, encode_doc(change(d))) for d in self.iter_docs(at)),
        }

    def _suffix_items(self, at: int) -> Iterator[tuple[bytes, bytes]]:
        """The suffix tree's next items, streamed: nothing is read before the first."""
        delta = self._delta_range(self.d_suffix, b"", at) if self.d_suffix else []
        present = [(k, b"" if v else None) for k, v in delta]
        yield from _merge_items(self.suffix.items(), present)

    def changes(self, at: int = LATEST,
                docs: Callable[[DocRecord], DocRecord] | None = None,
                ) -> dict[str, Iterator[tuple[bytes, bytes | None]]]:
        """What changed in each tree ("paths", "suffix", "docs") since this catalog's
        checkpoint, as of LSN `at`: per tree, (key, new value) with strictly ascending keys,
        value None for a key deleted (or never there: deleting it changes nothing). Feed
        each to `btree.Tree.update` of the same tree (`self.paths`, `self.suffix`,
        `self.docs`) to get the next checkpoint's trees; `merged_items` gives the same
        trees whole, for a full rebuild. `docs` may transform each changed record on its
        way into the tree.

        O(d log d) for d delta keys, independent of the trees' size: a docs record is
        encoded only if it changed; nothing is read from the trees. The key lists are taken
        at the call, under the delta's lock; the streams are lazy and must be consumed
        before the next change is applied (the writer lock held, as a checkpoint is).
        """
        change = docs or (lambda d: d)
        with self._mutex:
            path_keys = list(self.d_paths)
            suffix_keys = list(self.d_suffix)
            doc_keys = sorted(self.d_docs)

        def paths() -> Iterator[tuple[bytes, bytes | None]]:
            for key in path_keys:
                value = _at(self.d_paths.get(key), at)
                if value is not _ABSENT:
                    yield key, value

        def suffix() -> Iterator[tuple[bytes, bytes | None]]:
            for key in suffix_keys:
                value = _at(self.d_suffix.get(key), at)
                if value is not _ABSENT:
                    yield key, b"" if value else None

        def records() -> Iterator[tuple[bytes, bytes | None]]:
            for key in doc_keys:
                value = _at(self.d_docs.get(key), at)
                if value is not _ABSENT:
                    yield key, None if value is None else encode_doc(change(value))

        return {"paths": paths(), "suffix": suffix(), "docs": records()}

    def next_trees(self, at: int = LATEST,
                   docs: Callable[[DocRecord], DocRecord] | None = None,
                   written: list[int] | None = None,
                   ) -> tuple[dict[str, btree.TreeRef], list[int]]:
        """The next checkpoint's "paths", "suffix" and "docs" trees as of LSN `at`, derived
        copy-on-write from this catalog's trees: `changes(at, docs)` fed to each tree's
        `btree.Tree.update`. Returns (refs, freed): the three new references, and the pages
        of this catalog's trees that they no longer use.

        The new trees share every other page with this catalog's trees, which stay whole:
        readers of this catalog go on reading them. The caller frees `freed` (deferred, as
        D1 says) once the header naming the new trees is durable and no reader holds this
        catalog; the pages of the trees it keeps must never be freed. The free tree is the
        caller's to write. Every page written is appended to `written` as it is allocated:
        after an exception, the caller frees those (nothing durable names them) and this
        catalog is unchanged.

        Cost: O(d log n) for d changed keys, whatever the trees' size: each changed leaf and
        its ancestors read (through the trees' page caches) and rewritten once. I/O: page
        reads, allocations and writes through the store; no fsync. Raises CorruptionError
        for a damaged tree page, StorageFullError from the store, and whatever `docs`
        raises.
        """
        written = [] if written is None else written
        trees = {"paths": self.paths, "suffix": self.suffix, "docs": self.docs}
        refs: dict[str, btree.TreeRef] = {}
        freed: list[int] = []
        for name, changes in self.changes(at, docs).items():
            refs[name], dropped, _ = trees[name].update(changes, written=written)
            freed += dropped
        return refs, freed

    def _check(self, at: int = LATEST) -> None:
        count = 0
        for key, doc_id in self.path_items(b"", at):
            count += 1
            doc = self.doc(doc_id, at)
            assert doc is not None and key in doc.paths, key
        assert count == self.count(at), (count, self.count(at))
        assert sum(1 for _ in self.reversed_keys(b"", at)) == count
        for doc in self.iter_docs(at):
            assert doc.paths and doc.versions, doc.doc_id
            for p in doc.paths:
                assert self.lookup(p, at) == doc.doc_id.bytes, p
        for history in (*self.d_paths.values(), *self.d_suffix.values(),
                        *self.d_docs.values(), self._counts):
            assert history and all(a[0] <= b[0] for a, b in itertools.pairwise(history))


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def extents_minus(old: tuple[tuple[int, int], ...], new: tuple[tuple[int, int], ...]
                  ) -> tuple[tuple[int, int], ...]:
    """The page runs of `old` that `new` does not cover. O((n + m) log m)."""
    cover = sorted(new)
    out = []
    for first, count in old:
        at, end = first, first + count
        i = max(0, bisect.bisect_right(cover, (at, 1 << 62)) - 1)
        while at < end and i < len(cover):
            c_first, c_count = cover[i]
            if c_first + c_count <= at:
                i += 1
                continue
            if c_first >= end:
                break
            if c_first > at:
                out.append((at, c_first - at))
            at = max(at, c_first + c_count)
            i += 1
        if at < end:
            out.append((at, end - at))
    return tuple(out)


#: Up to this many delta keys are bisected into a search's sorted list one by one; more are
#: merged by a filter and a sort (two sorted runs: linear).
_BISECT_MAX = 32


def _apply_delta(items: list[Any], changes: list[tuple[Any, bool]]) -> None:
    """Make the sorted, duplicate-free `items` hold each key of `changes` whose flag is
    True and none whose flag is False (`changes` in any order, each key once). O(d log k +
    d k) memory moves for d <= _BISECT_MAX changes, else O(k + d log d)."""
    if len(changes) <= _BISECT_MAX:
        for key, present in changes:
            i = bisect.bisect_left(items, key)
            found = i < len(items) and items[i] == key
            if present and not found:
                items.insert(i, key)
            elif found and not present:
                del items[i]
        return
    changed = {key for key, _ in changes}
    kept = [key for key in items if key not in changed]
    kept += sorted(key for key, present in changes if present)
    kept.sort()
    items[:] = kept


def _text(key: bytes) -> str:
    """A path key as text: stored keys are UTF-8, so anything else is damage."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptionError(f"a stored path is not UTF-8: {key[:80]!r}") from exc


def _merge_items(
    base: Iterable[tuple[bytes, object]], delta: Iterable[tuple[bytes, object]]
) -> Iterator[tuple[bytes, Any]]:
    """Merge two ascending streams; delta wins on equal keys; a None delta value deletes."""
    tagged_base = ((k, 1, v) for k, v in base)
    tagged_delta = ((k, 0, v) for k, v in delta)
    last: bytes | None = None
    for key, _rank, value in heapq.merge(tagged_delta, tagged_base, key=lambda t: (t[0], t[1])):
        if key == last:
            continue
        last = key
        if value is not None:
            yield key, value
