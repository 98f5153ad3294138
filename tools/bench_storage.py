"""Benchmark two storage-layer paths: prefix search, and the tree work of a checkpoint.

1. prefix search: 200,000 paths `/dev{i%200}/sensor{i}/2026-11-21` (100 B documents), in a
   StreamDB database written through `streamdb.open` (defaults: 8 KiB pages, mmap) and in
   an LMDB environment; a prefix `/devK/` (K random, seeded) matches exactly 1,000 paths.
   Measured per search, after a warm-up pass over every prefix:
   - `db.search(prefix)`, the public call (whatever the engine calls below it);
   - "engine + search_paths": what `db.search` costs once the engine calls
     `Catalog.search_paths`: the pin the engine takes (`db._enter` / `db._leave`), the
     key encoding and `search_paths`;
   - `Catalog.search_paths` and `Catalog.iter_paths` alone, on the published state;
   - the LMDB cursor of tools/bench_store.py: `set_range`, then iterate while the key
     starts with the prefix, decoding each key (the sorted list of `str`).
   The ratios are taken against the LMDB cursor, run by run (target: search_paths with
   the engine's pin at most 0.5x).
2. checkpoint: trees of N documents (N = 10,000, 100,000, 1,000,000; each a 1-version
   record of ~150 bytes, its path as above, its reversed path) built with `btree.build`
   on a `streamdb.storage` page store (`PageStore` over a `Pager`, 8 KiB pages) on the
   in-memory file layer `wal.memvfs.MemoryVFS` (`--real-file`: a real file read through
   mmap, which adds the file system's costs, mostly allocating blocks as the file grows),
   a `Catalog` over them, then 1,000 changed documents applied as logged
   operations: 800 new versions of existing documents, 100 new documents, 100 deleted
   (random, seeded: each change lands in its own leaf at 1M). Measured: the tree work of a
   checkpoint, each repetition on a fresh catalog with the same 1,000 operations, the
   pages it wrote given back afterwards:
   - "full rebuild" (what `write_checkpoint` does before incremental checkpoints): walk
     every page of the old trees (`Tree.pages`, the pages to free), then `merged_items`
     and `btree.build` of the paths, suffix and docs trees;
   - "incremental": `Catalog.next_trees`, that is `Catalog.changes` and `Tree.update` of
     the three trees (the pages to free are what `update` returns).
   Not measured (the same in both): the free tree, fsync and the header writes.
   The ratio of the incremental checkpoint at the largest N to that at 10,000 is compared
   with its target (at most 2x).

For each measured operation one more run under cProfile gives the Python function calls
it makes (per search, or per changed document for a checkpoint) and its top functions.

Timings are medians of repetitions after a warm-up; variants are interleaved run by run, a
`gc.collect()` before each, the fixtures frozen (`gc.freeze`) so that a full collection does
not walk them.
The machine may be shared and noisy: compare the ratios. Run it:

    python tools/bench_storage.py                  # the full run (about 10 minutes)
    python tools/bench_storage.py --quick          # 10k and 100k documents, fewer runs
    python tools/bench_storage.py --sections checkpoint --sizes 10000,1000000
    python tools/bench_storage.py --src DIR        # import streamdb from DIR (an export of
                                                   # an older commit: "before" numbers)

With `--src`, calls the imported code lacks (`search_paths`, `next_trees`) are skipped.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DEVICES = 200  # paths are /dev{i % DEVICES}/sensor{i}/2026-11-21
SEARCH_PATHS = 200_000
CHANGED = 1000  # documents changed before a checkpoint: 800 versions, 100 new, 100 deleted
TARGET_SEARCH_VS_LMDB = 0.5  # at most
TARGET_CHECKPOINT_GROWTH = 2.0  # incremental checkpoint at the largest N / at 10k, at most
PAGE_SIZE = 8192
LMDB_MAP_SIZE = 1 << 34


def doc_path(i: int) -> str:
    return f"/dev{i % DEVICES}/sensor{i}/2026-11-21"


@dataclass
class Measured:
    """One measured operation: per-run medians (µs), and a profile of one more run."""

    label: str
    per_run: list[float] = field(default_factory=list)  # wall-clock time
    cpu_run: list[float] = field(default_factory=list)  # this process's CPU time
    calls: float | None = None  # Python function calls per unit (search, changed document)
    top: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.per_run)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_run) if self.cpu_run else float("nan")


def profile(fn: Callable[[], object], units: int) -> tuple[float, list[str]]:
    """Python function calls per unit of one call of `fn`, and its 6 costliest functions
    (own time)."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[1] for v in entries.values())  # all calls, recursive ones included
    rows = sorted(entries.items(), key=lambda kv: -kv[1][2])[:6]
    top = [f"{func[2]} ({os.path.basename(func[0])}:{func[1]}): {v[1]} calls, "
           f"{v[2] * 1e3:.2f} ms" for func, v in rows]
    return total / units, top


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- 1. prefix search ------------------------------------------------------------------------


def build_search_dbs(sd: Any, workdir: str, n: int) -> tuple[str, str]:
    import lmdb

    name = os.path.join(workdir, "search.db")
    env_dir = os.path.join(workdir, "search.lmdb")
    rng = random.Random(7)
    data = rng.randbytes(100)
    start = time.perf_counter()
    with sd.open(name) as db:
        for base in range(0, n, 10_000):
            db.write_documents([(doc_path(i), data) for i in range(base, min(n, base + 10_000))])
    env = lmdb.open(env_dir, map_size=LMDB_MAP_SIZE)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(doc_path(i).encode(), data)
    env.close()
    progress(f"built {n:,} paths in StreamDB and LMDB: {time.perf_counter() - start:.1f} s")
    return name, env_dir


def bench_search(sd: Any, workdir: str, runs: int, searches: int) -> dict[str, Measured]:
    import lmdb

    name, env_dir = build_search_dbs(sd, workdir, SEARCH_PATHS)
    db = sd.open(name)
    env = lmdb.open(env_dir, map_size=LMDB_MAP_SIZE, readonly=True)
    catalog_cls = type(db._pins.current.catalog)
    has_texts = hasattr(catalog_cls, "search_paths")

    def lmdb_search(prefix: str) -> list[str]:
        key = prefix.encode()
        found: list[str] = []
        with env.begin() as txn:
            cursor = txn.cursor()
            if cursor.set_range(key):
                for k in cursor.iternext(keys=True, values=False):
                    if not k.startswith(key):
                        break
                    found.append(k.decode())
        return found

    def engine_search(prefix: str) -> list[str]:
        key = prefix.encode("utf-8")
        state = db._enter()
        try:
            return state.catalog.search_paths(key, state.lsn)  # type: ignore[no-any-return]
        finally:
            db._leave(state)

    def catalog_texts(prefix: str) -> list[str]:
        state = db._pins.current
        return state.catalog.search_paths(prefix.encode(), state.lsn)  # type: ignore[no-any-return]

    def catalog_keys(prefix: str) -> list[bytes]:
        state = db._pins.current
        return list(state.catalog.iter_paths(prefix.encode(), state.lsn))

    variants: dict[str, tuple[str, Callable[[str], object]]] = {
        "db.search": ("StreamDB db.search(prefix)", db.search),
        "engine": ("engine pin + Catalog.search_paths", engine_search),
        "search_paths": ("Catalog.search_paths (no pin)", catalog_texts),
        "iter_paths": ("Catalog.iter_paths (bytes, no pin)", catalog_keys),
        "lmdb": ("LMDB cursor (decoded keys)", lmdb_search),
    }
    if not has_texts:
        del variants["engine"], variants["search_paths"]
    results = {key: Measured(label) for key, (label, _) in variants.items()}
    expected = sorted(doc_path(i) for i in range(3, SEARCH_PATHS, DEVICES))
    for key, (_, fn) in variants.items():
        found = fn("/dev3/")
        as_text = [k.decode() if isinstance(k, bytes) else k for k in found]  # type: ignore[attr-defined]
        if as_text != expected:
            raise AssertionError(f"{key}: search('/dev3/') returned {len(as_text)} paths")
    rng = random.Random(11)
    clock = time.perf_counter_ns
    for run in range(runs):
        prefixes = [f"/dev{rng.randrange(DEVICES)}/" for _ in range(searches)]
        keys = list(variants)
        keys = keys[run % len(keys):] + keys[: run % len(keys)]
        for key in keys:
            fn = variants[key][1]
            for p in (f"/dev{d}/" for d in range(DEVICES)):  # warm-up: every prefix once
                fn(p)
            gc.collect()
            samples = []
            for prefix in prefixes:
                t0 = clock()
                fn(prefix)
                samples.append((clock() - t0) / 1000)
            results[key].per_run.append(statistics.median(samples))
        progress(f"search run {run + 1}/{runs}: " + ", ".join(
            f"{k} {results[k].per_run[-1]:.0f} µs" for k in keys))
    for key, (_, fn) in variants.items():

        def one(fn: Callable[[str], object] = fn) -> object:
            return fn("/dev17/")

        results[key].calls, results[key].top = profile(one, 1)
    db.close()
    env.close()
    return results


# -- 2. checkpoint ---------------------------------------------------------------------------


class Recycled:
    """The fixture's page store for what a checkpoint writes: single pages come from a
    list of pages given back by earlier runs (lowest first), the file growing only when
    it runs out, so that every run writes over pages the file already has and the free
    space policy (which spares large free extents for documents) is not what is measured.
    Overflow chains (none in these trees) would come from the real store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.page_size = store.page_size
        self.spare: list[int] = []  # descending: the lowest last

    def page_count(self) -> int:
        return int(self.store.page_count())

    def read_page(self, page_no: int) -> Any:
        return self.store.read_page(page_no)

    def write_pages(self, page_no: int, data: Any) -> None:
        self.store.write_pages(page_no, data)

    def allocate(self, n_pages: int) -> int:
        if n_pages == 1 and self.spare:
            return self.spare.pop()
        return int(self.store.allocate(n_pages))

    def allocate_pages(self, n_pages: int) -> list[int]:
        return [self.allocate(1) for _ in range(n_pages)]

    def give_back(self, pages: list[int]) -> None:
        self.spare = sorted({*self.spare, *pages}, reverse=True)


@dataclass
class Fixture:
    store: Any
    space: Any
    refs: dict[str, Any]
    ops: list[Any]
    pager: Any
    file: Any


def build_fixture(sd: Any, workdir: str, n: int, real_file: bool = False) -> Fixture:
    from streamdb.storage import btree
    from streamdb.storage.catalog import KIND_DOCS, KIND_PATHS, KIND_SUFFIX
    from streamdb.storage.freespace import FreeSpace
    from streamdb.storage.header import HEADER_PAGES
    from streamdb.storage.pager import Pager
    from streamdb.storage.pagestore import PageStore
    from streamdb.storage.records import (
        OP_CREATE,
        OP_UNBIND,
        OP_VERSION,
        DocRecord,
        Op,
        Version,
        encode_doc,
    )
    from wal.memvfs import MemoryVFS
    from wal.vfs import OsVFS

    start = time.perf_counter()
    rng = random.Random(n)
    path = os.path.join(workdir, f"trees-{n}.db")
    file = (OsVFS() if real_file else MemoryVFS()).open(path, create=True)
    pager = Pager(file, PAGE_SIZE, use_mmap=real_file)
    space = FreeSpace(HEADER_PAGES, 1 << 40)
    base = PageStore(pager, space)

    def version(number: int, lsn: int) -> Any:
        return Version(number, lsn, 4096, 1.7e9, 1.7e9, 1, 256 << 10,
                       extents=((rng.randrange(1 << 30), 1),), sums=(rng.getrandbits(64),))

    ids = [uuid.UUID(bytes=rng.randbytes(16)) for _ in range(n)]
    paths = [doc_path(i).encode() for i in range(n)]
    docs = sorted((d.bytes, encode_doc(DocRecord(d, (version(1, 1),), (p,))))
                  for d, p in zip(ids, paths, strict=True))
    refs: dict[str, Any] = {}
    refs["docs"], _ = btree.build(base, docs, kind=KIND_DOCS)
    del docs
    refs["paths"], _ = btree.build(base, sorted(zip(paths, (d.bytes for d in ids),
                                                     strict=True)), kind=KIND_PATHS)
    refs["suffix"], _ = btree.build(base, ((p, b"") for p in sorted(p[::-1] for p in paths)),
                                    kind=KIND_SUFFIX)
    refs["free"] = btree.EMPTY
    if real_file:
        pager.sync()
    store = Recycled(base)
    picks = rng.sample(range(n), 900)
    ops = [Op(OP_VERSION, ids[i], version=version(2, 0)) for i in picks[:800]]
    ops += [Op(OP_UNBIND, ids[i], path=paths[i]) for i in picks[800:]]
    ops += [Op(OP_CREATE, uuid.UUID(bytes=rng.randbytes(16)),
               path=f"/dev{rng.randrange(DEVICES)}/new{k}/2026-11-21".encode(),
               version=version(1, 0)) for k in range(100)]
    rng.shuffle(ops)
    progress(f"built the trees of {n:,} documents: {space.file_pages:,} pages, "
             f"{time.perf_counter() - start:.1f} s")
    return Fixture(store, space, refs, ops, pager, file)


def fresh_catalog(fx: Fixture) -> Any:
    from streamdb.storage.catalog import Catalog

    catalog = Catalog(fx.store, dict(fx.refs), keep=2, on_free=lambda extents, lsn: None,
                      cache_pages=2048)
    for lsn, op in enumerate(fx.ops, 1):
        catalog.apply(op, lsn)
    catalog.mark()
    return catalog


def full_rebuild(fx: Fixture, catalog: Any) -> list[int]:
    from streamdb.storage import btree
    from streamdb.storage.catalog import KIND_DOCS, KIND_PATHS, KIND_SUFFIX

    kinds = {"paths": KIND_PATHS, "suffix": KIND_SUFFIX, "docs": KIND_DOCS}
    old_pages: list[int] = []
    for name, kind in kinds.items():
        old_pages += btree.Tree(fx.store, fx.refs[name], kind=kind).pages()
    written: list[int] = []
    for name, items in catalog.merged_items(len(fx.ops)).items():
        btree.build(fx.store, items, kind=kinds[name], written=written)
    return written


def incremental(fx: Fixture, catalog: Any) -> list[int]:
    written: list[int] = []
    catalog.next_trees(len(fx.ops), written=written)  # Catalog.changes + Tree.update
    return written


def give_back(fx: Fixture, written: list[int]) -> None:
    """After a measured run: its pages are free again, and the file synced (MemoryVFS keeps
    every unsynced write until then)."""
    fx.store.give_back(written)
    fx.pager.sync()


def bench_checkpoint(sd: Any, workdir: str, sizes: list[int], runs: int,
                     full_runs: int, real_file: bool) -> dict[int, dict[str, Measured]]:
    """Every size's fixture is built first; then each run measures every size and variant,
    sizes in rotating order, so that a noisy moment hits them alike. Run 0 warms up (the
    incremental variant only: a full rebuild reads everything anyway). A full rebuild
    runs `full_runs` times, once at 1M documents (about a minute each there)."""
    from streamdb.storage.catalog import Catalog

    has_update = hasattr(Catalog, "next_trees")
    fixtures = {n: build_fixture(sd, workdir, n, real_file) for n in sizes}
    gc.collect()
    gc.freeze()  # the fixtures are old objects: no full collection walks them again
    variants: dict[str, tuple[str, Callable[[Fixture, Any], list[int]]]] = {
        "full": ("full rebuild", full_rebuild),
        "incremental": ("incremental (changes + update)", incremental),
    }
    if not has_update:
        del variants["incremental"]

    def reps(key: str, n: int) -> int:
        return runs if key == "incremental" else 1 if n >= 1_000_000 else full_runs

    out = {n: {k: Measured(label) for k, (label, _) in variants.items()} for n in sizes}
    for run in range(runs + 1):
        for n in sizes[run % len(sizes):] + sizes[: run % len(sizes)]:
            fx = fixtures[n]
            for key, (_, fn) in variants.items():
                if run > reps(key, n) or (run == 0 and key != "incremental"):
                    continue
                catalog = fresh_catalog(fx)
                gc.collect()
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                written = fn(fx, catalog)
                elapsed = (time.perf_counter_ns() - t0) / 1000
                cpu = (time.process_time_ns() - c0) / 1000
                give_back(fx, written)
                if run:
                    out[n][key].per_run.append(elapsed)
                    out[n][key].cpu_run.append(cpu)
                    progress(f"checkpoint run {run}, {n:,} documents, {key}: "
                             f"{elapsed / 1000:.1f} ms (CPU {cpu / 1000:.1f} ms)")
    for n, fx in fixtures.items():
        for key, (_, fn) in variants.items():
            if key == "full" and n > 100_000:
                continue  # minutes under the profiler; its calls grow with n (see 100k)
            catalog = fresh_catalog(fx)
            pages: list[int] = []

            def call(fn: Callable[[Fixture, Any], list[int]] = fn, fx: Fixture = fx,
                     catalog: Any = catalog, pages: list[int] = pages) -> None:
                pages.extend(fn(fx, catalog))

            out[n][key].calls, out[n][key].top = profile(call, CHANGED)
            out[n][key].top.insert(0, f"{len(pages):,} pages written")
            give_back(fx, pages)
        fx.pager.close()
    return out


# -- report ----------------------------------------------------------------------------------


def fmt_us(us: float) -> str:
    return f"{us / 1000:,.1f} ms" if us >= 10_000 else f"{us:,.1f} µs"


def report(search: dict[str, Measured] | None,
           checkpoint: dict[int, dict[str, Measured]] | None, src: str, real_file: bool) -> str:
    lines = [f"streamdb imported from {src}", ""]
    if search is not None:
        lines += [f"## Prefix search: 1,000 of {SEARCH_PATHS:,} paths", "",
                  "| variant | median per search | Python calls per search |",
                  "|---|---:|---:|"]
        lines += [f"| {m.label} | {fmt_us(m.median)} | {m.calls or 0:,.0f} |"
                  for m in search.values()]
        lmdb = search["lmdb"]
        lines += ["", "| ratio (median of per-run ratios) | measured | target |", "|---|---:|---:|"]
        for key in ("db.search", "engine", "search_paths"):
            if key in search:
                ratios = [a / b for a, b in zip(search[key].per_run, lmdb.per_run, strict=True)]
                target = f"≤ {TARGET_SEARCH_VS_LMDB}x" if key == "engine" else "—"
                lines.append(f"| {search[key].label} / LMDB | "
                             f"{statistics.median(ratios):.2f}x | {target} |")
        lines += ["", "Profiles (one search, top functions by own time):"]
        for m in search.values():
            lines += [f"- {m.label}:"] + [f"  - {t}" for t in m.top]
        lines.append("")
    if checkpoint is not None:
        where = "a real file (mmap)" if real_file else "wal.memvfs.MemoryVFS"
        lines += [f"## Checkpoint tree work after {CHANGED:,} changed documents ({where})", "",
                  "| documents | variant | runs | median | median CPU | per changed document |"
                  " Python calls per changed document |", "|---:|---|---:|---:|---:|---:|---:|"]
        for n, results in checkpoint.items():
            lines += [f"| {n:,} | {m.label} | {len(m.per_run)} | {fmt_us(m.median)} | "
                      f"{fmt_us(m.cpu)} | {m.median / CHANGED:,.1f} µs | "
                      f"{'—' if m.calls is None else f'{m.calls:,.0f}'} |"
                      for m in results.values()]
        sizes = list(checkpoint)
        if len(sizes) > 1 and all("incremental" in checkpoint[n] for n in sizes):
            small, large = sizes[0], sizes[-1]
            lines.append("")
            for what in ("per_run", "cpu_run"):
                a = getattr(checkpoint[large]["incremental"], what)
                b = getattr(checkpoint[small]["incremental"], what)
                ratios = [x / y for x, y in zip(a, b, strict=True)]
                growth = statistics.median(ratios)
                verdict = "met" if growth <= TARGET_CHECKPOINT_GROWTH else "not met"
                lines.append(
                    f"Incremental checkpoint at {large:,} / at {small:,} documents "
                    f"({'wall-clock' if what == 'per_run' else 'CPU'} time, median of per-run "
                    f"ratios, range {min(ratios):.2f}x .. {max(ratios):.2f}x): {growth:.2f}x "
                    f"(target ≤ {TARGET_CHECKPOINT_GROWTH}x: {verdict})")
        lines += ["", "Profiles (one checkpoint, top functions by own time):"]
        for n, results in checkpoint.items():
            for m in results.values():
                lines += [f"- {n:,} documents, {m.label}:"] + [f"  - {t}" for t in m.top]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k documents, fewer runs")
    parser.add_argument("--sections", default="search,checkpoint")
    parser.add_argument("--sizes", default=None, help="checkpoint sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where the benchmark files go")
    parser.add_argument("--src", default=ROOT, help="the directory streamdb is imported from")
    parser.add_argument("--real-file", action="store_true",
                        help="checkpoint trees on a real file (mmap) instead of MemoryVFS: "
                             "adds the file system's costs (block allocation as it grows)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.src))
    sd = importlib.import_module("streamdb")
    if not os.path.abspath(sd.__file__ or "").startswith(os.path.abspath(args.src)):
        sys.exit(f"streamdb was imported from {sd.__file__}, not from {args.src}")
    sections = set(args.sections.split(","))
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    runs = args.runs or (3 if args.quick else 7)
    workdir = tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir)
    try:
        search = (bench_search(sd, workdir, runs, 50 if args.quick else 200)
                  if "search" in sections else None)
        checkpoint = (bench_checkpoint(sd, workdir, sizes, runs, max(1, runs // 3),
                                       args.real_file)
                      if "checkpoint" in sections else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(search, checkpoint, os.path.dirname(os.path.abspath(sd.__file__ or "")),
                 args.real_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
