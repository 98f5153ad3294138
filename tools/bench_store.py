"""Benchmark the storage engine (`streamdb`) against the embedded stores a user would pick instead.

The peers: sqlite3 (`journal_mode=WAL`, a table `docs (path TEXT PRIMARY KEY, data BLOB)`,
with `synchronous=NORMAL` and with `synchronous=FULL`), LMDB (`lmdb`, sync on), RocksDB
(`rocksdict`, raw mode, compression off, every write batch with `sync=True`) and diskcache
(its defaults: sqlite WAL, synchronous=NORMAL, values >= 32 KiB in files of their own). Plain
files are the reference for large documents. StreamDB runs with its defaults
(`durability="full"`, XXH3-64 checksums verified on every read). Everything runs in one
process and one run, on one filesystem (by default a temporary directory inside the project;
`--dir` to choose another), except "open" which starts a fresh process per measurement.

1. fill: batches of documents through `write_documents` (the peers: one transaction or
   write batch per batch), 1,000 documents per batch for 100 B, 4 KiB and 64 KiB
   documents and 8 per batch for 16 MiB documents, into an empty store. One warm-up batch
   (other paths) first. docs/s and MB/s, from the summed batch times (close not included;
   it is timed separately).
2. random reads: the filled stores are closed and reopened, then read by path, uniformly at
   random (seeded), after a warm-up pass, in docs/s. sqlite3 FULL is not read (same file
   layout as NORMAL). For 16 MiB documents plain files (one per document, written with
   fsync) are the reference: `open(f, "rb", buffering=0).read()`.
3. streaming: one 256 MiB document read with `get_stream` (default chunking, checksums on)
   against a `readinto` loop over a plain file of the same size with a reused buffer of the
   same chunk size. Both are in the page cache (a warm-up pass each).
4. prefix search: 200,000 paths `/dev{i%200}/sensor{i}/2026-11-21` (100 B documents); a
   prefix `/devK/` matches exactly 1,000 of them. StreamDB `search(prefix)` against an LMDB
   cursor (`set_range`, then iterate while the key starts with the prefix) and sqlite3
   `SELECT path ... WHERE path >= ? AND path < ?`; each returns the sorted list of `str`.
5. open plus first get, with 200,000 and 1,000,000 paths (the databases of 4, built once per
   invocation in batches of 10,000 and closed): a fresh Python process imports everything,
   then times `open` + one `get` of a random path, prints the time and exits at once
   (`os._exit`, so that StreamDB's close-time checkpoint is not paid per measurement). The
   page cache is warm. The build is reported too.
6. durable single write: the latency of writing one new 4 KiB document with StreamDB
   `write_document` (durability "full") against raw `os.write` + `os.fsync` to an
   append-only file, a one-row sqlite3 FULL transaction, an LMDB write transaction (sync on)
   and (reference) a RocksDB `put` with `sync=True`.

Variants are interleaved within each run, their order rotating from run to run, and
`os.sync()` runs before each measurement. Throughput rows report the median of the per-run
throughputs and the p99 (nearest rank) of single operations pooled over all runs; latency
rows report the median and p99 of single operations pooled over all runs. Each ratio is
computed within a run and the median over runs is compared with its target; the range over
runs is shown next to it.

Run it:

    python tools/bench_store.py               # the full run (about 7 minutes on a 2-vCPU VM)
    python tools/bench_store.py --quick       # smoke run, well under a minute
    python tools/bench_store.py --runs 5 --dir /mnt/nvme/tmp --sections fill,stream
    python tools/bench_store.py --sections open --large-paths 500000

Most of a full run (about 4 of 7 minutes here) is building the 1,000,000-path StreamDB
database; `--large-paths` picks a smaller scale for the open measurement.

It needs the `bench` extra (`pip install -e '.[bench]'`). It prints the machine facts and
Markdown tables for docs/benchmarks.md. The machine may be shared and noisy: compare the
ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from benchkit import (
    Ratio,
    Series,
    add_common_arguments,
    code_version,
    cpu_model,
    filesystem,
    judge,
    load_average,
    machine_table,
    memory,
    package_version,
    progress,
    ratio,
    ratio_table,
    rotate,
    write_all,
)

import streamdb

try:
    import diskcache
    import lmdb
    import rocksdict
except ImportError as missing:  # pragma: no cover - depends on the environment
    sys.exit(f"bench_store.py needs the bench extra (pip install -e '.[bench]'): {missing}")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

KiB = 1 << 10
MiB = 1 << 20
BIG = 16 * MiB  # the "16 MiB documents" of section 1-2
CHUNK = 256 * KiB  # get_stream's default chunk; the plain-file loop reads the same
LMDB_MAP_SIZE = 1 << 36  # 64 GiB of address space (sparse)
WRITE_SIZE = 4 * KiB  # section 6
POOL_SIZE = BIG + 4 * MiB  # seeded bytes that documents are sliced from
DEVICES = 200  # paths are /dev{i % DEVICES}/sensor{i}/2026-11-21

# Targets, as ratios of per-run values; the median over runs is compared.
TARGET_READ_VS_SQLITE = 2.5  # 4 KiB random reads, docs/s, at least
TARGET_READ_VS_LMDB = 0.4  # at least
TARGET_FILL_VS_SQLITE = 2.0  # batched 4 KiB writes vs sqlite3 WAL NORMAL, docs/s, at least
TARGET_BIG_VS_FILE = 0.5  # 16 MiB get and 256 MiB get_stream vs plain file, MB/s, at least
TARGET_SEARCH_VS_LMDB = 1.0  # prefix search time, at most
TARGET_OPEN_VS_SQLITE = 10.0  # open + first get time with 1M paths, at most
TARGET_OPEN_MS = 10.0  # "about 10 ms"
TARGET_WRITE_VS_FSYNC = 1.2  # durable single 4 KiB write latency, at most

SECTIONS = ("fill", "stream", "search", "open", "write")  # "fill" includes the reads


@dataclass(frozen=True)
class Config:
    runs: int
    fill: dict[int, tuple[int, int]]  # document size -> (documents, per batch)
    reads: dict[int, int]  # document size -> measured random gets per store and run
    stream_size: int  # bytes of the get_stream document
    stream_passes: int  # measured passes per variant and run
    index_paths: tuple[int, int]  # (search + open, open only)
    index_batch: int
    opens: int  # fresh processes per store, scale and run
    searches: int  # measured prefix searches per store and run
    write_warmup: int  # section 6
    write_ops: int
    seed: int


FULL = Config(
    runs=3,
    fill={100: (50_000, 1000), 4 * KiB: (20_000, 1000), 64 * KiB: (4_000, 1000), BIG: (32, 8)},
    reads={100: 20_000, 4 * KiB: 20_000, 64 * KiB: 5_000, BIG: 64},
    stream_size=256 * MiB,
    stream_passes=2,
    index_paths=(200_000, 1_000_000),
    index_batch=10_000,
    opens=3,
    searches=200,
    write_warmup=100,
    write_ops=1_000,
    seed=20261121,
)
QUICK = Config(
    runs=1,
    fill={100: (2_000, 1000), 4 * KiB: (2_000, 1000), 64 * KiB: (500, 250), BIG: (4, 2)},
    reads={100: 2_000, 4 * KiB: 2_000, 64 * KiB: 500, BIG: 8},
    stream_size=32 * MiB,
    stream_passes=1,
    index_paths=(20_000, 40_000),
    index_batch=10_000,
    opens=1,
    searches=20,
    write_warmup=20,
    write_ops=100,
    seed=20261121,
)


# -- results --------------------------------------------------------------------------------



# -- documents ------------------------------------------------------------------------------


def doc_path(i: int) -> str:
    return f"/dev{i % DEVICES}/sensor{i}/2026-11-21"


def doc_data(pool: bytes, i: int, size: int) -> bytes:
    """Document i of the given size: a seeded slice of the pool (a copy, made untimed)."""
    start = (i * 4099) % (len(pool) - size + 1)
    return pool[start : start + size]


# -- stores ---------------------------------------------------------------------------------


class Store(Protocol):
    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None: ...

    def write_one(self, path: str, data: bytes) -> None: ...

    def get(self, path: str) -> bytes: ...

    def close(self) -> None: ...


class Searchable(Store, Protocol):
    def search(self, prefix: str) -> list[str]: ...


class StreamStore:
    """StreamDB with its defaults: durability "full", XXH3-64 checksums verified on read."""

    def __init__(self, directory: str) -> None:
        self.db = streamdb.open(os.path.join(directory, "store.db"))

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.db.write_documents(items)

    def write_one(self, path: str, data: bytes) -> None:
        self.db.write_document(path, data)

    def get(self, path: str) -> bytes:
        return self.db.get(path)

    def search(self, prefix: str) -> list[str]:
        return self.db.search(prefix)

    def close(self) -> None:
        self.db.close()


class SqliteStore:
    def __init__(self, directory: str, synchronous: str) -> None:
        self.db = sqlite3.connect(os.path.join(directory, "store.sqlite"), isolation_level=None)
        mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"sqlite3 refused journal_mode=WAL (got {mode!r})")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("CREATE TABLE IF NOT EXISTS docs (path TEXT PRIMARY KEY, data BLOB)")

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR REPLACE INTO docs (path, data) VALUES (?, ?)", items)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def write_one(self, path: str, data: bytes) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.execute("INSERT OR REPLACE INTO docs (path, data) VALUES (?, ?)", (path, data))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get(self, path: str) -> bytes:
        row = self.db.execute("SELECT data FROM docs WHERE path = ?", (path,)).fetchone()
        if row is None:
            raise KeyError(path)
        return cast(bytes, row[0])

    def search(self, prefix: str) -> list[str]:
        rows = self.db.execute(
            "SELECT path FROM docs WHERE path >= ? AND path < ? ORDER BY path",
            (prefix, prefix_end(prefix)),
        )
        return [cast(str, row[0]) for row in rows]

    def close(self) -> None:
        self.db.close()


def prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with `prefix` (non-empty, and
    not ending in the highest code point)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class LmdbStore:
    """LMDB with its defaults (sync and metasync on): one write transaction per batch, one
    read transaction per get."""

    def __init__(self, directory: str) -> None:
        self.env = lmdb.open(os.path.join(directory, "store.lmdb"), map_size=LMDB_MAP_SIZE)

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for path, data in items:
                txn.put(path.encode(), data)

    def write_one(self, path: str, data: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(path.encode(), data)

    def get(self, path: str) -> bytes:
        with self.env.begin() as txn:
            value = txn.get(path.encode())
        if value is None:
            raise KeyError(path)
        return bytes(value)

    def search(self, prefix: str) -> list[str]:
        key = prefix.encode()
        found: list[str] = []
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if cursor.set_range(key):
                for k in cursor.iternext(keys=True, values=False):
                    if not k.startswith(key):
                        break
                    found.append(k.decode())
        return found

    def close(self) -> None:
        self.env.close()


class RocksStore:
    """RocksDB through rocksdict: raw bytes, compression off, every write with sync=True."""

    def __init__(self, directory: str) -> None:
        options = rocksdict.Options(raw_mode=True)
        options.set_compression_type(rocksdict.DBCompressionType.none())
        self.db = rocksdict.Rdict(os.path.join(directory, "store.rocksdb"), options)
        self.sync = rocksdict.WriteOptions()
        self.sync.sync = True

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for path, data in items:
            batch.put(path.encode(), data)
        self.db.write(batch, self.sync)

    def write_one(self, path: str, data: bytes) -> None:
        self.db.put(path.encode(), data, self.sync)

    def get(self, path: str) -> bytes:
        return cast(bytes, self.db[path.encode()])

    def close(self) -> None:
        self.db.close()


class DiskcacheStore:
    """diskcache.Cache with its defaults (no size limit in practice): one transaction per
    batch."""

    def __init__(self, directory: str) -> None:
        self.cache = diskcache.Cache(os.path.join(directory, "store.diskcache"),
                                     size_limit=1 << 40)

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self.cache.transact():
            for path, data in items:
                self.cache.set(path, data)

    def write_one(self, path: str, data: bytes) -> None:
        self.cache.set(path, data)

    def get(self, path: str) -> bytes:
        return cast(bytes, self.cache[path])

    def close(self) -> None:
        self.cache.close()


class FileStore:
    """Plain files, one per document (its path below a root directory), each written and
    fsynced; the directories written to are fsynced once per batch."""

    def __init__(self, directory: str) -> None:
        self.root = os.path.join(directory, "files")
        os.makedirs(self.root, exist_ok=True)

    def _file(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        parents: set[str] = set()
        for path, data in items:
            name = self._file(path)
            parent = os.path.dirname(name)
            os.makedirs(parent, exist_ok=True)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            parents.add(parent)
        for parent in parents:
            fsync_dir(parent)

    def write_one(self, path: str, data: bytes) -> None:
        self.write_batch([(path, data)])

    def get(self, path: str) -> bytes:
        with open(self._file(path), "rb", buffering=0) as f:
            return f.read()

    def close(self) -> None:
        pass


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STORES: dict[str, tuple[str, Callable[[str], Store]]] = {
    "streamdb": ("StreamDB (durability full)", StreamStore),
    "sqlite-normal": ("sqlite3 WAL, synchronous=NORMAL",
                      lambda d: SqliteStore(d, "NORMAL")),
    "sqlite-full": ("sqlite3 WAL, synchronous=FULL", lambda d: SqliteStore(d, "FULL")),
    "lmdb": ("LMDB (sync on)", LmdbStore),
    "rocksdb": ("RocksDB (rocksdict, sync=True)", RocksStore),
    "diskcache": ("diskcache (defaults)", DiskcacheStore),
    "files": ("plain files (one per document, fsync each)", FileStore),
}
FILL_KEYS = ("streamdb", "sqlite-normal", "sqlite-full", "lmdb", "rocksdb", "diskcache")
INDEX_KEYS = ("streamdb", "sqlite-normal", "lmdb")


def open_store(key: str, directory: str) -> Store:
    os.makedirs(directory, exist_ok=True)
    return STORES[key][1](directory)


def size_name(size: int) -> str:
    if size >= MiB:
        return f"{size // MiB} MiB"
    if size >= KiB:
        return f"{size // KiB} KiB"
    return f"{size} B"


# -- sections 1 and 2: fill and random reads ------------------------------------------------


@dataclass
class DocResults:
    fill: dict[tuple[int, str], Series]
    reads: dict[tuple[int, str], Series]


def fill_store(store: Store, pool: bytes, size: int, count: int, batch: int,
               series: Series) -> None:
    warm = min(batch, max(1, 4 * MiB // size))
    store.write_batch([(f"/warmup/{i}", doc_data(pool, count + i, size)) for i in range(warm)])
    clock = time.perf_counter_ns
    total = 0
    for first in range(0, count, batch):
        items = [(doc_path(i), doc_data(pool, i, size)) for i in range(first,
                                                                       min(count, first + batch))]
        start = clock()
        store.write_batch(items)
        elapsed = clock() - start
        total += elapsed
        series.samples_us.append(elapsed / 1000.0)
        del items
    series.per_run.append(count / (total / 1e9))


def read_store(store: Store, pool: bytes, size: int, count: int, picks: list[int],
               warm: list[int], series: Series) -> None:
    for n, i in enumerate(warm):
        value = store.get(doc_path(i))
        if n < 8 and value != doc_data(pool, i, size):
            raise AssertionError(f"{series.label}: wrong bytes for {doc_path(i)}")
    paths = [doc_path(i) for i in picks]
    clock = time.perf_counter_ns
    samples = []
    get = store.get
    total = 0
    for path in paths:
        start = clock()
        value = get(path)
        elapsed = clock() - start
        total += elapsed
        samples.append(elapsed / 1000.0)
        if len(value) != size:
            raise AssertionError(f"{series.label}: {path} has {len(value)} bytes, not {size}")
    del value
    series.samples_us += samples
    series.per_run.append(len(paths) / (total / 1e9))


def bench_docs(cfg: Config, workdir: str, pool: bytes) -> DocResults:
    fill: dict[tuple[int, str], Series] = {}
    reads: dict[tuple[int, str], Series] = {}
    for size in cfg.fill:
        keys = [*FILL_KEYS, "files"] if size == BIG else list(FILL_KEYS)
        for key in keys:
            fill[size, key] = Series(STORES[key][0], "docs/s")
            if key != "sqlite-full":
                reads[size, key] = Series(STORES[key][0], "docs/s")
    for run in range(cfg.runs):
        for size, (count, batch) in cfg.fill.items():
            keys = [*FILL_KEYS, "files"] if size == BIG else list(FILL_KEYS)
            order = rotate(keys, run)
            rundir = tempfile.mkdtemp(prefix=f"docs-{size}-{run}-", dir=workdir)
            for key in order:
                os.sync()
                store = open_store(key, os.path.join(rundir, key))
                try:
                    fill_store(store, pool, size, count, batch, fill[size, key])
                finally:
                    start = time.perf_counter()
                    store.close()
                    fill[size, key].extra.append(time.perf_counter() - start)
                del store
                gc.collect()
            rng = random.Random(cfg.seed * 1000 + run * 10 + size)
            n_reads = cfg.reads[size]
            picks = [rng.randrange(count) for _ in range(n_reads)]
            warm = list(range(count)) if size == BIG else [
                rng.randrange(count) for _ in range(max(100, n_reads // 5))]
            for key in order:
                if key == "sqlite-full":
                    continue
                os.sync()
                store = open_store(key, os.path.join(rundir, key))
                try:
                    read_store(store, pool, size, count, picks, warm, reads[size, key])
                finally:
                    store.close()
                del store
                gc.collect()
            shutil.rmtree(rundir)
            progress(f"docs {size_name(size)} run {run + 1}/{cfg.runs}: fill " + ", ".join(
                f"{k} {fill[size, k].per_run[-1]:,.0f}/s" for k in keys) + "; reads " + ", ".join(
                f"{k} {reads[size, k].per_run[-1]:,.0f}/s" for k in keys if k != "sqlite-full"))
    return DocResults(fill, reads)


# -- section 3: streaming one 256 MiB document -----------------------------------------------


def stream_streamdb(db: streamdb.Database, path: str, size: int) -> tuple[float, list[float]]:
    clock = time.perf_counter_ns
    samples = []
    n = 0
    begin = now = clock()
    for chunk in db.get_stream(path):
        n += len(chunk)
        done = clock()
        samples.append((done - now) / 1000.0)
        now = done
    elapsed = now - begin
    if n != size:
        raise AssertionError(f"get_stream returned {n} bytes, not {size}")
    return size / (elapsed / 1e9) / 1e6, samples


def stream_file(name: str, size: int) -> tuple[float, list[float]]:
    clock = time.perf_counter_ns
    samples = []
    buf = bytearray(CHUNK)
    n = 0
    begin = now = clock()
    with open(name, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            done = clock()
            if not got:
                break
            samples.append((done - now) / 1000.0)
            now = done
            n += got
    elapsed = now - begin
    if n != size:
        raise AssertionError(f"readinto read {n} bytes, not {size}")
    return size / (elapsed / 1e9) / 1e6, samples


def bench_stream(cfg: Config, workdir: str, seed: int) -> dict[str, Series]:
    results = {
        "streamdb": Series(f"StreamDB get_stream of {size_name(cfg.stream_size)} "
                           f"({size_name(CHUNK)} chunks, checksums on)", "MB/s"),
        "file": Series(f"plain file readinto loop ({size_name(CHUNK)} buffer)", "MB/s"),
    }
    rundir = tempfile.mkdtemp(prefix="stream-", dir=workdir)
    rng = random.Random(seed)
    data = b"".join(rng.randbytes(min(BIG, cfg.stream_size - at))
                    for at in range(0, cfg.stream_size, BIG))
    name = os.path.join(rundir, "plain.bin")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    db = streamdb.open(os.path.join(rundir, "stream.db"))
    try:
        db.write_document("/stream/big", data)
        del data
        gc.collect()
        stream_streamdb(db, "/stream/big", cfg.stream_size)  # warm-up
        stream_file(name, cfg.stream_size)
        keys = list(results)
        for run in range(cfg.runs):
            for key in rotate(keys, run):
                os.sync()
                rates = []
                for _ in range(cfg.stream_passes):
                    if key == "streamdb":
                        rate, samples = stream_streamdb(db, "/stream/big", cfg.stream_size)
                    else:
                        rate, samples = stream_file(name, cfg.stream_size)
                    rates.append(rate)
                    results[key].samples_us += samples
                results[key].per_run.append(statistics.median(rates))
            progress(f"stream run {run + 1}/{cfg.runs}: " + ", ".join(
                f"{k} {results[k].per_run[-1]:,.0f} MB/s" for k in keys))
    finally:
        db.close()
        shutil.rmtree(rundir)
    return results


# -- sections 4 and 5: the path index (prefix search, open + first get) ---------------------


@dataclass
class IndexResults:
    build: dict[tuple[int, str], Series]  # per_run: docs/s of the build; extra: close s
    search: dict[str, Series]
    opens: dict[tuple[int, str], Series]
    search_paths: int
    matches: int


def index_dir(workdir: str, n: int, key: str) -> str:
    return os.path.join(workdir, f"index-{n}", key)


def store_file(key: str, directory: str) -> str:
    """What the child process opens."""
    names = {"streamdb": "store.db", "sqlite-normal": "store.sqlite", "lmdb": "store.lmdb"}
    return os.path.join(directory, names[key])


def build_index(cfg: Config, workdir: str, n: int, payload: bytes) -> dict[str, Series]:
    """The databases of n paths, built once per invocation (batches of cfg.index_batch)."""
    results = {}
    for key in INDEX_KEYS:
        series = Series(f"{STORES[key][0]}: build", "docs/s")
        os.sync()
        store = open_store(key, index_dir(workdir, n, key))
        clock = time.perf_counter_ns
        total = 0
        for first in range(0, n, cfg.index_batch):
            items = [(doc_path(i), payload) for i in range(first, min(n, first + cfg.index_batch))]
            start = clock()
            store.write_batch(items)
            elapsed = clock() - start
            total += elapsed
            series.samples_us.append(elapsed / 1000.0)
        series.per_run.append(n / (total / 1e9))
        start = clock()
        store.close()
        series.extra.append((clock() - start) / 1e9)
        del store
        gc.collect()
        results[key] = series
        progress(f"built {n:,} paths in {key}: {total / 1e9:.1f} s "
                 f"({series.per_run[-1]:,.0f} docs/s), close {series.extra[-1]:.1f} s")
    return results


def bench_search(cfg: Config, workdir: str, n: int) -> tuple[dict[str, Series], int]:
    results = {key: Series(STORES[key][0], "µs") for key in INDEX_KEYS}
    matches = n // DEVICES
    rng = random.Random(cfg.seed + 4)
    for run in range(cfg.runs):
        prefixes = [f"/dev{rng.randrange(DEVICES)}/" for _ in range(cfg.searches)]
        for key in rotate(INDEX_KEYS, run):
            os.sync()
            store = cast(Searchable, open_store(key, index_dir(workdir, n, key)))
            try:
                expected = sorted(doc_path(i) for i in range(3, n, DEVICES))
                found = store.search("/dev3/")
                if found != expected:
                    raise AssertionError(f"{key}: search('/dev3/') returned {len(found)} paths, "
                                         f"not the {len(expected)} expected (or not sorted)")
                for prefix in prefixes[: max(10, cfg.searches // 5)]:  # warm-up
                    store.search(prefix)
                clock = time.perf_counter_ns
                samples = []
                for prefix in prefixes:
                    start = clock()
                    found = store.search(prefix)
                    samples.append((clock() - start) / 1000.0)
                    if len(found) != matches:
                        raise AssertionError(f"{key}: {prefix} matched {len(found)} paths")
            finally:
                store.close()
            del store
            gc.collect()
            results[key].samples_us += samples
            results[key].per_run.append(statistics.median(samples))
        progress(f"search run {run + 1}/{cfg.runs}: " + ", ".join(
            f"{k} {results[k].per_run[-1]:,.0f} µs" for k in INDEX_KEYS))
    return results, matches


def child_open(key: str, name: str, path: str) -> None:
    """In a fresh process: time open + one get, print nanoseconds and length, exit at once."""
    clock = time.perf_counter_ns
    start = clock()
    if key == "streamdb":
        db = streamdb.open(name)
        value = db.get(path)
    elif key == "sqlite-normal":
        con = sqlite3.connect(name)
        row = con.execute("SELECT data FROM docs WHERE path = ?", (path,)).fetchone()
        value = cast(bytes, row[0])
    elif key == "lmdb":
        env = lmdb.open(name, map_size=LMDB_MAP_SIZE)
        with env.begin() as txn:
            value = cast(bytes, txn.get(path.encode()))
    else:
        raise SystemExit(f"unknown store {key}")
    elapsed = clock() - start
    print(elapsed, len(value), flush=True)
    os._exit(0)  # no close: StreamDB's close() checkpoints, which is not what is measured


def time_open(key: str, directory: str, path: str) -> float:
    """Microseconds of open + first get, measured in a fresh process."""
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child-open", key,
         store_file(key, directory), path],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"open child for {key} failed: {done.stderr.strip()[-2000:]}")
    elapsed_ns, length = done.stdout.split()
    if int(length) != 100:
        raise AssertionError(f"{key}: first get returned {length} bytes")
    return int(elapsed_ns) / 1000.0


def bench_open(cfg: Config, workdir: str, sizes: Sequence[int]) -> dict[tuple[int, str], Series]:
    results = {(n, key): Series(STORES[key][0], "µs") for n in sizes for key in INDEX_KEYS}
    rng = random.Random(cfg.seed + 5)
    for run in range(cfg.runs):
        for n in sizes:
            for key in rotate(INDEX_KEYS, run):
                os.sync()
                samples = [time_open(key, index_dir(workdir, n, key), doc_path(rng.randrange(n)))
                           for _ in range(cfg.opens)]
                results[n, key].samples_us += samples
                results[n, key].per_run.append(statistics.median(samples))
        progress(f"open run {run + 1}/{cfg.runs}: " + ", ".join(
            f"{n:,} {k} {results[n, k].per_run[-1] / 1000:.2f} ms"
            for n in sizes for k in INDEX_KEYS))
    return results


# -- section 6: durable single write --------------------------------------------------------


class RawFsync:
    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.fd = os.open(os.path.join(directory, "append.bin"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        for path, data in items:
            self.write_one(path, data)

    def write_one(self, path: str, data: bytes) -> None:
        write_all(self.fd, data)
        os.fsync(self.fd)

    def get(self, path: str) -> bytes:
        # A baseline for durable writes only: it keeps no index to read back by path.
        raise RuntimeError("the raw write+fsync baseline is write-only")

    def close(self) -> None:
        os.close(self.fd)


WRITE_VARIANTS: dict[str, tuple[str, Callable[[str], Store]]] = {
    "streamdb": ("StreamDB write_document, durability full", StreamStore),
    "fsync": ("raw os.write + os.fsync (append-only file)", RawFsync),
    "sqlite-full": ("sqlite3 WAL, synchronous=FULL, 1-row txn",
                    lambda d: SqliteStore(d, "FULL")),
    "lmdb": ("LMDB write txn (sync on)", LmdbStore),
    "rocksdb": ("RocksDB put, sync=True (reference)", RocksStore),
}


def bench_write(cfg: Config, workdir: str, pool: bytes) -> dict[str, Series]:
    results = {key: Series(label, "µs") for key, (label, _) in WRITE_VARIANTS.items()}
    keys = list(WRITE_VARIANTS)
    payloads = [doc_data(pool, i, WRITE_SIZE) for i in range(64)]
    for run in range(cfg.runs):
        rundir = tempfile.mkdtemp(prefix=f"write-{run}-", dir=workdir)
        for key in rotate(keys, run):
            os.sync()
            directory = os.path.join(rundir, key)
            os.makedirs(directory)
            store = WRITE_VARIANTS[key][1](directory)
            try:
                for i in range(cfg.write_warmup):
                    store.write_one(f"/warmup/{i}", payloads[i % len(payloads)])
                clock = time.perf_counter_ns
                samples = []
                for i in range(cfg.write_ops):
                    path, payload = doc_path(i), payloads[i % len(payloads)]
                    start = clock()
                    store.write_one(path, payload)
                    samples.append((clock() - start) / 1000.0)
            finally:
                store.close()
            results[key].samples_us += samples
            results[key].per_run.append(statistics.median(samples))
        shutil.rmtree(rundir)
        progress(f"write run {run + 1}/{cfg.runs}: " + ", ".join(
            f"{k} {results[k].per_run[-1]:.1f} µs" for k in keys))
    return results


# -- machine facts --------------------------------------------------------------------------


def machine_facts(workdir: str) -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lmdb_c = ".".join(str(x) for x in lmdb.version())
    return [
        ("CPU", f"{os.cpu_count()} logical CPUs ({usable} usable), {cpu_model()}"),
        ("Memory", memory()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Peers", f"sqlite3 {sqlite3.sqlite_version}; lmdb {package_version('lmdb')} "
                  f"(LMDB {lmdb_c}); rocksdict {package_version('rocksdict')}; "
                  f"diskcache {package_version('diskcache')}"),
        ("Benchmark directory", workdir),
        ("Filesystem", filesystem(workdir)),
        ("streamdb code", code_version()),
        ("Load average at start", load_average()),
    ]


# -- report ---------------------------------------------------------------------------------


def fmt_us(value: float) -> str:
    if value < 1000:
        return f"{value:,.1f} µs"
    if value < 1_000_000:
        return f"{value / 1000:,.2f} ms"
    return f"{value / 1e6:,.2f} s"


def fmt_rate(docs_per_s: float, size: int) -> tuple[str, str]:
    return f"{docs_per_s:,.0f}", f"{docs_per_s * size / 1e6:,.1f}"


def describe(cfg: Config) -> str:
    fills = "; ".join(f"{size_name(s)}: {c:,} docs in batches of {b:,}, {cfg.reads[s]:,} gets"
                      for s, (c, b) in cfg.fill.items())
    small, large = cfg.index_paths
    return (
        f"{cfg.runs} runs, seed {cfg.seed}. Per store and run: {fills}. Streaming: "
        f"{size_name(cfg.stream_size)}, {cfg.stream_passes} pass(es) per run. Index: "
        f"{small:,} and {large:,} paths of 100 B, built once in batches of "
        f"{cfg.index_batch:,}; {cfg.searches} prefix searches per run; {cfg.opens} fresh-process "
        f"opens per store, scale and run. Durable writes: {cfg.write_warmup} warm-up then "
        f"{cfg.write_ops:,} measured per run."
    )


def report_docs(docs: DocResults, cfg: Config) -> list[str]:
    lines = [
        "| # | size | store | fill docs/s | fill MB/s | p99 batch | close after fill | "
        "random get docs/s | get MB/s | p99 get |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    number = 0
    for size in cfg.fill:
        for (s, key), series in docs.fill.items():
            if s != size:
                continue
            number += 1
            docs_s, mb_s = fmt_rate(series.median, size)
            close = statistics.median(series.extra)
            read = docs.reads.get((size, key))
            if read is None:
                read_cells = "not read (same file as NORMAL) | — | —"
            else:
                r_docs, r_mb = fmt_rate(read.median, size)
                read_cells = f"{r_docs} | {r_mb} | {fmt_us(read.p99_us)}"
            lines.append(f"| F{number} | {size_name(size)} | {series.label} | {docs_s} | {mb_s} | "
                         f"{fmt_us(series.p99_us)} | {fmt_us(close * 1e6)} | {read_cells} |")
    return lines


def report_latency(rows: Sequence[tuple[str, Series]], tag: str, unit_note: str) -> list[str]:
    lines = [
        f"| # | {unit_note} | median | p99 | max | measured |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for number, (label, series) in enumerate(rows, 1):
        lines.append(f"| {tag}{number} | {label} | {fmt_us(statistics.median(series.samples_us))} "
                     f"| {fmt_us(series.p99_us)} | {fmt_us(series.max_us)} | "
                     f"{len(series.samples_us):,} |")
    return lines


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_arguments(parser, full_runs=FULL.runs, quick_runs=QUICK.runs, seed=FULL.seed,
                         root=ROOT, quick_takes="well under a minute")
    parser.add_argument("--large-paths", type=int, default=None,
                        help="the large open-test scale (default 1,000,000; 40,000 with --quick)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} "
                             "(fill includes the random reads)")
    parser.add_argument("--child-open", nargs=3, metavar=("STORE", "FILE", "PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_open:
        child_open(*args.child_open)
        return 0
    base = QUICK if args.quick else FULL
    small, large = base.index_paths
    cfg = Config(
        runs=args.runs if args.runs is not None else base.runs,
        fill=base.fill, reads=base.reads, stream_size=base.stream_size,
        stream_passes=base.stream_passes,
        index_paths=(small, args.large_paths if args.large_paths is not None else large),
        index_batch=base.index_batch, opens=base.opens, searches=base.searches,
        write_warmup=base.write_warmup, write_ops=base.write_ops, seed=args.seed,
    )
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if cfg.runs < 1 or any(s not in SECTIONS for s in sections):
        parser.error(f"--runs must be >= 1 and --sections a subset of {','.join(SECTIONS)}")

    rng = random.Random(cfg.seed)
    pool = rng.randbytes(POOL_SIZE)
    payload = doc_data(pool, 7, 100)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "tools/bench_store.py", *shown])

    workdir = tempfile.mkdtemp(prefix=".bench-store-", dir=args.dir)
    docs: DocResults | None = None
    stream: dict[str, Series] | None = None
    builds: dict[tuple[int, str], Series] = {}
    search: dict[str, Series] | None = None
    matches = 0
    opens: dict[tuple[int, str], Series] | None = None
    writes: dict[str, Series] | None = None
    try:
        facts = machine_facts(workdir)
        started = time.perf_counter()
        if "write" in sections:
            writes = bench_write(cfg, workdir, pool)
        if "fill" in sections:
            docs = bench_docs(cfg, workdir, pool)
        if "stream" in sections:
            stream = bench_stream(cfg, workdir, cfg.seed + 3)
        scales = []
        if "search" in sections:
            scales.append(small)
        if "open" in sections:
            scales = sorted({small, cfg.index_paths[1]})
        for n in scales:
            for key, series in build_index(cfg, workdir, n, payload).items():
                builds[n, key] = series
        if "search" in sections:
            search, matches = bench_search(cfg, workdir, small)
        if "open" in sections:
            opens = bench_open(cfg, workdir, scales)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    out: list[str] = [
        "## Storage engine (tools/bench_store.py)",
        "",
        f"Command: `{command}`",
        "",
        *machine_table(facts),
        "",
        describe(cfg),
        "",
    ]
    ratios: list[Ratio] = []
    if docs is not None:
        out += ["Fill and random reads (docs/s and MB/s: median of the per-run values; p99 of "
                "single batches or gets pooled over the runs; MB = 10^6 bytes):", ""]
        out += report_docs(docs, cfg)
        out.append("")
        mid = 4 * KiB
        if (mid, "streamdb") in docs.reads:
            ratios += [
                ratio("4 KiB random reads: StreamDB / sqlite3 (docs/s)",
                      docs.reads[mid, "streamdb"], docs.reads[mid, "sqlite-normal"],
                      TARGET_READ_VS_SQLITE, at_most=False),
                ratio("4 KiB random reads: StreamDB / LMDB (docs/s)",
                      docs.reads[mid, "streamdb"], docs.reads[mid, "lmdb"],
                      TARGET_READ_VS_LMDB, at_most=False),
                ratio("4 KiB batched writes: StreamDB / sqlite3 WAL NORMAL (docs/s)",
                      docs.fill[mid, "streamdb"], docs.fill[mid, "sqlite-normal"],
                      TARGET_FILL_VS_SQLITE, at_most=False),
                ratio("4 KiB batched writes: StreamDB / sqlite3 WAL FULL (docs/s)",
                      docs.fill[mid, "streamdb"], docs.fill[mid, "sqlite-full"], None,
                      at_most=False),
                ratio("4 KiB batched writes: StreamDB / LMDB (docs/s)",
                      docs.fill[mid, "streamdb"], docs.fill[mid, "lmdb"], None, at_most=False),
            ]
        if (BIG, "streamdb") in docs.reads:
            ratios.append(ratio("16 MiB random reads: StreamDB get / plain file read (MB/s)",
                                docs.reads[BIG, "streamdb"], docs.reads[BIG, "files"],
                                TARGET_BIG_VS_FILE, at_most=False))
    if stream is not None:
        out += ["Streaming (MB/s: median over runs; p99 of single chunks pooled over runs):", ""]
        out += ["| # | variant | MB/s | p99 per chunk | chunks measured |",
                "|---|---|---:|---:|---:|"]
        for number, series in enumerate(stream.values(), 1):
            out.append(f"| S{number} | {series.label} | {series.median:,.0f} | "
                       f"{fmt_us(series.p99_us)} | {len(series.samples_us):,} |")
        out.append("")
        ratios.append(ratio(f"{size_name(cfg.stream_size)} get_stream / plain file readinto "
                            "(MB/s)", stream["streamdb"], stream["file"], TARGET_BIG_VS_FILE,
                            at_most=False))
    if builds:
        out += ["Building the index databases (once per invocation; close includes "
                "StreamDB's checkpoint):", ""]
        out += ["| # | paths | store | build docs/s | p99 batch | close |",
                "|---|---:|---|---:|---:|---:|"]
        for number, ((n, _key), series) in enumerate(sorted(builds.items()), 1):
            out.append(f"| B{number} | {n:,} | {STORES[_key][0]} | {series.median:,.0f} | "
                       f"{fmt_us(series.p99_us)} | {fmt_us(series.extra[0] * 1e6)} |")
        out.append("")
    if search is not None:
        out += [f"Prefix search returning {matches:,} of {small:,} paths:", ""]
        out += report_latency([(s.label, s) for s in search.values()], "P", "store")
        out.append("")
        ratios += [
            ratio(f"prefix search {matches:,} of {small:,}: StreamDB / LMDB cursor (time)",
                  search["streamdb"], search["lmdb"], TARGET_SEARCH_VS_LMDB, at_most=True),
            ratio(f"prefix search {matches:,} of {small:,}: StreamDB / sqlite3 (time)",
                  search["streamdb"], search["sqlite-normal"], None, at_most=True),
        ]
    if opens is not None:
        out += ["Open plus first get, in a fresh process (warm page cache):", ""]
        out += report_latency([(f"{n:,} paths: {s.label}", s) for (n, _), s in opens.items()],
                              "O", "paths: store")
        out.append("")
        big_n = cfg.index_paths[1]
        for n in scales:
            ratios.append(ratio(f"open + first get, {n:,} paths: StreamDB / sqlite3 (time)",
                                opens[n, "streamdb"], opens[n, "sqlite-normal"],
                                TARGET_OPEN_VS_SQLITE if n == big_n else None, at_most=True))
        ratios.append(judge(f"open + first get, {big_n:,} paths: StreamDB (absolute)",
                            [v / 1000.0 for v in opens[big_n, "streamdb"].per_run],
                            TARGET_OPEN_MS, at_most=True, unit=" ms"))
    if writes is not None:
        out += ["Durable single write of a 4 KiB document (a new path each time):", ""]
        out += report_latency([(s.label, s) for s in writes.values()], "W", "variant")
        out.append("")
        ratios += [
            ratio("durable 4 KiB write: StreamDB / raw write+fsync (median latency)",
                  writes["streamdb"], writes["fsync"], TARGET_WRITE_VS_FSYNC, at_most=True),
            ratio("durable 4 KiB write: StreamDB / sqlite3 FULL (median latency)",
                  writes["streamdb"], writes["sqlite-full"], None, at_most=True),
            ratio("durable 4 KiB write: StreamDB / LMDB (median latency)",
                  writes["streamdb"], writes["lmdb"], None, at_most=True),
        ]
    out += ratio_table(ratios)
    out += ["", f"Wall time {wall:.0f} s; load average at the end {load_average()}."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
