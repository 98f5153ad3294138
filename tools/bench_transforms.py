"""Benchmark StreamDB's value transforms (compression, AES-256-GCM) and its pread path.

Everything runs in one process and one run, on one filesystem (by default a temporary
directory inside the project, as tools/bench_store.py; `--dir` to choose another), with
StreamDB's defaults apart from the option measured (`durability="full"`, XXH3-64 checksums
verified on every read, `page_cache_size` 2,048 pages of 8 KiB).

Data: "telemetry" is generated JSON lines of simulated sensor telemetry (timestamp, site,
device out of 500, firmware, sequence number, temperature, humidity, battery voltage,
status, and now and then a message), seeded; "random" is seeded random bytes
(`random.Random(seed).randbytes`), which no codec shrinks.

1. Transforms (T rows): one database per variant (codec none / snappy / lz4 / zstd,
   encryption off / on; and lz4 on random data, which StreamDB stores RAW, chunk by chunk,
   since compressing does not shrink it). Per run and variant: `write_document` of the
   64 MiB document (replacing the previous version; pages plus one fdatasync) and the raw
   write loop, then one untimed `get_stream` pass (it maps the new version's pages), then
   three rounds of one full `get_stream` pass (default 256 KiB chunks) and one raw read
   loop (the per-run figure is the median of the three). The raw libraries do the same
   work on the same 256 KiB chunks (`streamdb.storage.docio.CHUNK`) in a Python loop, each
   output dropped at once as a stream reader would: writing, compress each chunk
   (`snappy.compress`, `lz4.block.compress(store_size=False)`, zstandard level 3 with the
   content size) and/or `AESGCM.encrypt` it (a 12-byte nonce and a 51-byte associated data
   built per chunk); reading, `AESGCM.decrypt` and/or decompress each chunk prepared
   beforehand (`snappy.uncompress`, `lz4.block.decompress(uncompressed_size=)`,
   `ZstdDecompressor.decompress`). The raw loop has no RAW fallback: on random data it still
   decompresses every lz4 block. Codec none without encryption has no raw counterpart.
   Stored / size is `info().stored_size` over the document size.
2. pread against mmap (M rows): one 64 MiB uncompressed document. Per run the database is
   opened twice at once, read-only (two handles on one file), with `use_mmap=True` and with
   `use_mmap=False` (default page cache, which holds 16 MiB); each reads the document once
   with `get_stream` (warm-up), then three rounds of a `get_stream` pass on each and a `get`
   of the whole document on each (per-run figure: the median of the three).
3. The page cache (C rows, `use_mmap=False`, default `page_cache_size`), from `stats()`
   deltas, each measurement in a freshly opened database: a sequential `get_stream` re-read
   of an 8 MiB document right after a first read; the sequential first `get_stream` read of
   the 64 MiB document (read-ahead); 10,000 random 4 KiB range reads
   (`get(path, offset=, length=4096)`, offsets 4 KiB-aligned, seeded) over the 64 MiB
   document, and the same reads with mmap as a reference. Hit rate = hits / (hits +
   misses), in pages; a page served by read-ahead counts as a hit. The pages held
   (`cache_pages`) are checked against `page_cache_size` after every measurement (every
   1,000 reads for the random reads).

Variants are interleaved within each run, their order rotating from run to run (ours and
raw alternate which goes first), and `os.sync()` runs before each measurement. Every figure
is the median of the per-run values; each ratio is computed within a run and the median over
runs is compared with its target, with the range over runs next to it.

Run it (`make bench` runs the first line):

    python tools/bench_transforms.py               # the full run (about a minute on a 2-vCPU VM)
    python tools/bench_transforms.py --quick       # smoke run, a few seconds
    python tools/bench_transforms.py --runs 9 --dir /mnt/nvme/tmp --sections transforms

It prints the machine facts and a Markdown section for docs/benchmarks.md. The machine may
be shared and noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import random
import shlex
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import lz4
import lz4.block
import snappy
import xxhash
import zstandard
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
    ratio_table,
    rotate,
)
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import streamdb
from streamdb.storage.docio import CHUNK
from streamdb.storage.transform import ZSTD_LEVEL

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADING = "## Compression, encryption and the pread path (tools/bench_transforms.py)"

KiB = 1 << 10
MiB = 1 << 20
DOC = "/bench/doc"
SMALL = "/bench/small"
NONCE = struct.Struct("<III")  # as StreamDB's: chunk index, seal, 0
AAD_HEAD = b"SDB1" + bytes(range(32)) + bytes(11)  # 47 bytes; + the chunk index u32 = 51

# Targets, as ratios of per-run values; the median over runs is compared.
TARGET_COMPRESSED_READ = 0.8  # get_stream / raw decompression loop (MB/s), at least
TARGET_ENCRYPTED_READ = 0.7  # get_stream / raw AES-GCM decryption (+ decompression) loop
TARGET_PREAD_VS_MMAP = 0.5  # use_mmap=False / use_mmap=True, 64 MiB document, MB/s
TARGET_REREAD_HIT_RATE = 90.0  # %, sequential re-read of a document that fits the cache

SECTIONS = ("transforms", "pread", "cache")


@dataclass(frozen=True)
class Config:
    runs: int
    doc_size: int  # the large document
    small_size: int  # the document that fits the page cache (section 3)
    random_reads: int  # section 3, per run
    read_size: int  # of each random range read
    passes: int  # timed read passes per variant and run (sections 1 and 2)
    seed: int


FULL = Config(runs=9, doc_size=64 * MiB, small_size=8 * MiB, random_reads=10_000,
              read_size=4 * KiB, passes=3, seed=20261123)
QUICK = Config(runs=1, doc_size=8 * MiB, small_size=1 * MiB, random_reads=1_000,
               read_size=4 * KiB, passes=1, seed=20261123)


@dataclass(frozen=True)
class Variant:
    key: str
    codec: str | None
    encrypted: bool
    random_data: bool = False

    @property
    def label(self) -> str:
        parts = [self.codec or ("no compression" if not self.encrypted else "")]
        if self.encrypted:
            parts.append("AES-256-GCM")
        return " + ".join(p for p in parts if p)

    @property
    def data_name(self) -> str:
        return "random" if self.random_data else "telemetry"


VARIANTS = (
    Variant("none", None, False),
    Variant("snappy", "snappy", False),
    Variant("lz4", "lz4", False),
    Variant("zstd", "zstd", False),
    Variant("aes", None, True),
    Variant("snappy+aes", "snappy", True),
    Variant("lz4+aes", "lz4", True),
    Variant("zstd+aes", "zstd", True),
    Variant("lz4-random", "lz4", False, random_data=True),
)


# -- data -----------------------------------------------------------------------------------

SITES = ("fra1", "ams2", "lhr1", "iad3", "sfo2", "sin1", "syd1", "gru1")
STATUSES = ("ok", "ok", "ok", "ok", "ok", "ok", "warn", "error")
MESSAGES = ("battery low", "sensor recalibrated", "link retry", "clock drift corrected",
            "threshold exceeded: temperature", "firmware update pending")


def telemetry(size: int, seed: int) -> bytes:
    """`size` bytes of JSON lines of simulated sensor telemetry (the last line cut)."""
    rng = random.Random(seed)
    devices = [(f"{rng.choice(SITES)}-dev-{i:04d}", f"{rng.randrange(1, 4)}.{rng.randrange(10)}."
                f"{rng.randrange(30)}") for i in range(500)]
    lines: list[str] = []
    total = 0
    ts = 1_795_219_200_000  # 2026-11-21T00:00:00Z, in ms
    seq = 0
    while total < size:
        ts += rng.randrange(1, 40)
        seq += 1
        name, firmware = devices[rng.randrange(len(devices))]
        clock = time.gmtime(ts // 1000)
        line = (
            f'{{"ts":"{clock.tm_year:04d}-{clock.tm_mon:02d}-{clock.tm_mday:02d}T'
            f'{clock.tm_hour:02d}:{clock.tm_min:02d}:{clock.tm_sec:02d}.{ts % 1000:03d}Z",'
            f'"site":"{name[:4]}","device":"{name}","fw":"{firmware}","seq":{seq},'
            f'"temp_c":{rng.gauss(21.0, 4.0):.2f},"humidity_pct":{rng.uniform(20, 90):.1f},'
            f'"battery_v":{rng.uniform(3.3, 4.2):.3f},"status":"{rng.choice(STATUSES)}"'
        )
        if rng.random() < 0.05:
            line += f',"msg":"{rng.choice(MESSAGES)}"'
        line += "}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


# -- raw library loops ----------------------------------------------------------------------

Compress = Callable[[bytes | memoryview], bytes]
Decompress = Callable[[bytes, int], bytes]  # (frame, uncompressed length)


def raw_codec(name: str) -> tuple[Compress, Decompress]:
    """The calls streamdb/storage/transform.py makes, without its checks."""
    if name == "snappy":
        return snappy.compress, lambda data, _n: snappy.uncompress(data)
    if name == "lz4":
        return (lambda data: lz4.block.compress(data, store_size=False),
                lambda data, n: lz4.block.decompress(data, uncompressed_size=n))
    if name == "zstd":
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        dctx = zstandard.ZstdDecompressor()
        return cctx.compress, lambda data, _n: dctx.decompress(data)
    raise ValueError(f"unknown codec {name}")


class RawWork:
    """The raw libraries doing a variant's work on the document's 256 KiB chunks."""

    def __init__(self, variant: Variant, data: bytes, key: bytes) -> None:
        view = memoryview(data)
        self.inputs = [view[at : at + CHUNK] for at in range(0, len(data), CHUNK)]
        self.compress: Compress | None = None
        self.decompress: Decompress | None = None
        if variant.codec is not None:
            self.compress, self.decompress = raw_codec(variant.codec)
        self.aead = AESGCM(key) if variant.encrypted else None
        self.stored = self._transformed()  # what the read loop decodes
        for i in (0, len(self.inputs) - 1):
            if self._decode(i, self.stored[i]) != self.inputs[i]:
                raise AssertionError(f"raw {variant.key}: chunk {i} does not round-trip")

    def _transformed(self) -> list[bytes]:
        out = []
        for i, chunk in enumerate(self.inputs):
            data = self.compress(chunk) if self.compress is not None else bytes(chunk)
            if self.aead is not None:
                data = self.aead.encrypt(NONCE.pack(i, 0, 0), data,
                                         AAD_HEAD + i.to_bytes(4, "little"))
            out.append(data)
        return out

    def _decode(self, i: int, data: bytes) -> bytes:
        if self.aead is not None:
            data = self.aead.decrypt(NONCE.pack(i, 0, 0), data, AAD_HEAD + i.to_bytes(4, "little"))
        if self.decompress is not None:
            data = self.decompress(data, len(self.inputs[i]))
        return data

    def write_pass(self) -> float:
        """Seconds to transform every chunk (each output dropped at once)."""
        compress, aead, pack = self.compress, self.aead, NONCE.pack
        clock = time.perf_counter_ns
        start = clock()
        if aead is None:
            assert compress is not None
            for chunk in self.inputs:
                out = compress(chunk)
        elif compress is None:
            for i, chunk in enumerate(self.inputs):
                out = aead.encrypt(pack(i, 0, 0), chunk, AAD_HEAD + i.to_bytes(4, "little"))
        else:
            for i, chunk in enumerate(self.inputs):
                out = aead.encrypt(pack(i, 0, 0), compress(chunk),
                                   AAD_HEAD + i.to_bytes(4, "little"))
        elapsed = clock() - start
        del out
        return elapsed / 1e9

    def read_pass(self) -> float:
        """Seconds to decode every prepared chunk (each output dropped at once)."""
        decompress, aead, pack = self.decompress, self.aead, NONCE.pack
        sizes = [len(c) for c in self.inputs]
        clock = time.perf_counter_ns
        start = clock()
        if aead is None:
            assert decompress is not None
            for data, n in zip(self.stored, sizes, strict=True):
                out = decompress(data, n)
        elif decompress is None:
            for i, data in enumerate(self.stored):
                out = aead.decrypt(pack(i, 0, 0), data, AAD_HEAD + i.to_bytes(4, "little"))
        else:
            for i, data in enumerate(self.stored):
                out = decompress(aead.decrypt(pack(i, 0, 0), data,
                                              AAD_HEAD + i.to_bytes(4, "little")), sizes[i])
        elapsed = clock() - start
        del out
        return elapsed / 1e9


# -- StreamDB measurements ------------------------------------------------------------------


def settle() -> None:
    gc.collect()
    os.sync()


def timed_write(db: streamdb.Database, path: str, data: bytes) -> float:
    start = time.perf_counter_ns()
    db.write_document(path, data)
    return (time.perf_counter_ns() - start) / 1e9


def timed_stream(db: streamdb.Database, path: str, size: int) -> float:
    n = 0
    clock = time.perf_counter_ns
    start = clock()
    for chunk in db.get_stream(path):
        n += len(chunk)
    elapsed = clock() - start
    if n != size:
        raise AssertionError(f"get_stream({path!r}) returned {n} bytes, not {size}")
    return elapsed / 1e9


def timed_get(db: streamdb.Database, path: str, size: int) -> float:
    clock = time.perf_counter_ns
    start = clock()
    value = db.get(path)
    elapsed = clock() - start
    if len(value) != size:
        raise AssertionError(f"get({path!r}) returned {len(value)} bytes, not {size}")
    return elapsed / 1e9


def mb_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


# -- section 1: transforms ------------------------------------------------------------------


@dataclass
class TransformResult:
    variant: Variant
    write: Series
    read: Series
    raw_write: Series | None
    raw_read: Series | None
    stored: int = 0
    size: int = 0


def db_config(variant: Variant, key: bytes) -> streamdb.Config:
    return streamdb.Config(compression=variant.codec,  # type: ignore[arg-type]
                           encryption_key=key if variant.encrypted else None)


def bench_transforms(cfg: Config, workdir: str, text: bytes, noise: bytes,
                     key: bytes) -> dict[str, TransformResult]:
    results: dict[str, TransformResult] = {}
    raws: dict[str, RawWork] = {}
    dbs: dict[str, streamdb.Database] = {}
    try:
        for v in VARIANTS:
            data = noise if v.random_data else text
            has_raw = v.codec is not None or v.encrypted
            results[v.key] = TransformResult(
                v, Series(f"{v.label}: write_document", "MB/s"),
                Series(f"{v.label}: get_stream", "MB/s"),
                Series(f"{v.label}: raw write loop", "MB/s") if has_raw else None,
                Series(f"{v.label}: raw read loop", "MB/s") if has_raw else None,
                size=len(data))
            if has_raw:
                raws[v.key] = RawWork(v, data, key)
                raws[v.key].write_pass()  # warm-up
                raws[v.key].read_pass()
            db = dbs[v.key] = streamdb.open(os.path.join(workdir, f"t-{v.key}.db"),
                                            db_config(v, key))
            db.write_document(DOC, data)  # warm-up, and the round-trip check
            if b"".join(db.get_stream(DOC)) != data:
                raise AssertionError(f"{v.key}: get_stream does not return the document")
            info = db.info(DOC)
            if info.encrypted != v.encrypted or info.codec != v.codec:
                raise AssertionError(f"{v.key}: info() says codec {info.codec}, "
                                     f"encrypted={info.encrypted}")
            results[v.key].stored = info.stored_size
            progress(f"transforms: {v.key} ready (stored {info.stored_size / len(data):.1%})")
        for run in range(cfg.runs):
            for v in rotate(VARIANTS, run):
                r, db = results[v.key], dbs[v.key]
                data = noise if v.random_data else text
                work = raws.get(v.key)
                ours_first = run % 2 == 0
                for side in ("ours", "raw") if ours_first else ("raw", "ours"):
                    settle()
                    if side == "ours":
                        r.write.per_run.append(mb_s(len(data), timed_write(db, DOC, data)))
                    elif work is not None and r.raw_write is not None:
                        r.raw_write.per_run.append(mb_s(len(data), work.write_pass()))
                timed_stream(db, DOC, len(data))  # maps the new version's pages
                settle()
                ours: list[float] = []
                raw: list[float] = []
                for _ in range(cfg.passes):
                    for side in ("ours", "raw") if ours_first else ("raw", "ours"):
                        if side == "ours":
                            ours.append(mb_s(len(data), timed_stream(db, DOC, len(data))))
                        elif work is not None:
                            raw.append(mb_s(len(data), work.read_pass()))
                r.read.per_run.append(statistics.median(ours))
                if r.raw_read is not None:
                    r.raw_read.per_run.append(statistics.median(raw))
            progress(f"transforms run {run + 1}/{cfg.runs}: read ours/raw " + ", ".join(
                f"{k} {r.read.per_run[-1] / r.raw_read.per_run[-1]:.2f}x"
                for k, r in results.items() if r.raw_read is not None))
    finally:
        for db in dbs.values():
            db.close()
    return results


# -- section 2: pread against mmap ----------------------------------------------------------


@dataclass
class PreadResult:
    stream: dict[bool, Series]  # use_mmap -> get_stream MB/s
    get: dict[bool, Series]  # use_mmap -> get MB/s


def bench_pread(cfg: Config, workdir: str, text: bytes) -> PreadResult:
    name = os.path.join(workdir, "pread.db")
    db = streamdb.open(name)
    db.write_document(DOC, text)
    db.close()
    result = PreadResult(
        {m: Series(f"get_stream, use_mmap={m}", "MB/s") for m in (True, False)},
        {m: Series(f"get, use_mmap={m}", "MB/s") for m in (True, False)},
    )
    size = len(text)
    for run in range(cfg.runs):
        settle()
        # Both open at once (read-only, so that two handles may share the file), their
        # passes interleaved: noise from elsewhere on the machine hits both alike.
        dbs = {m: streamdb.open(name, streamdb.Config(use_mmap=m), readonly=True)
               for m in (True, False)}
        try:
            order = rotate([True, False], run)
            for mapped in order:
                if run == 0 and dbs[mapped].get(DOC) != text:
                    raise AssertionError(f"use_mmap={mapped}: get does not return the document")
                timed_stream(dbs[mapped], DOC, size)  # warm-up
            streams: dict[bool, list[float]] = {True: [], False: []}
            gets: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(cfg.passes):
                for mapped in order:
                    streams[mapped].append(mb_s(size, timed_stream(dbs[mapped], DOC, size)))
                for mapped in order:
                    gets[mapped].append(mb_s(size, timed_get(dbs[mapped], DOC, size)))
        finally:
            for db in dbs.values():
                db.close()
        for mapped in (True, False):
            result.stream[mapped].per_run.append(statistics.median(streams[mapped]))
            result.get[mapped].per_run.append(statistics.median(gets[mapped]))
        progress(f"pread run {run + 1}/{cfg.runs}: pread/mmap get_stream "
                 f"{result.stream[False].per_run[-1] / result.stream[True].per_run[-1]:.2f}x, "
                 f"get {result.get[False].per_run[-1] / result.get[True].per_run[-1]:.2f}x")
    return result


# -- section 3: the page cache --------------------------------------------------------------


@dataclass
class CacheRow:
    label: str
    rate: Series  # MB/s or reads/s
    hits: list[int] = field(default_factory=list)
    misses: list[int] = field(default_factory=list)
    prefetches: list[int] = field(default_factory=list)
    evictions: list[int] = field(default_factory=list)
    max_pages: int = 0

    @property
    def hit_rates(self) -> list[float]:
        return [100.0 * h / (h + m) if h + m else 0.0
                for h, m in zip(self.hits, self.misses, strict=True)]


@dataclass
class CacheResult:
    rows: dict[str, CacheRow]
    capacity: int
    mmap_random: Series


class Counters:
    """`stats()` page-cache deltas, and the most pages seen held."""

    def __init__(self, db: streamdb.Database) -> None:
        self.db = db
        self.start = db.stats()
        self.max_pages = self.start.cache_pages

    def check(self) -> None:
        self.max_pages = max(self.max_pages, self.db.stats().cache_pages)

    def record(self, row: CacheRow) -> None:
        end = self.db.stats()
        self.max_pages = max(self.max_pages, end.cache_pages)
        row.hits.append(end.cache_hits - self.start.cache_hits)
        row.misses.append(end.cache_misses - self.start.cache_misses)
        row.prefetches.append(end.cache_prefetches - self.start.cache_prefetches)
        row.evictions.append(end.cache_evictions - self.start.cache_evictions)
        row.max_pages = max(row.max_pages, self.max_pages)


def random_reads(db: streamdb.Database, offsets: Sequence[int], length: int,
                 counters: Counters | None, text: bytes) -> float:
    """Seconds for the range reads, in segments of 1,000 (the page count checked between)."""
    get = db.get
    clock = time.perf_counter_ns
    total = 0
    for first in range(0, len(offsets), 1000):
        segment = offsets[first : first + 1000]
        start = clock()
        for offset in segment:
            value = get(DOC, offset=offset, length=length)
        total += clock() - start
        if value != text[segment[-1] : segment[-1] + length]:
            raise AssertionError(f"range read at {segment[-1]} returned the wrong bytes")
        if counters is not None:
            counters.check()
    return total / 1e9


def bench_cache(cfg: Config, workdir: str, text: bytes) -> CacheResult:
    name = os.path.join(workdir, "cache.db")
    small = text[: cfg.small_size]
    db = streamdb.open(name)
    db.write_documents([(SMALL, small), (DOC, text)])
    db.close()
    pread = streamdb.Config(use_mmap=False)
    n_small, n_big, n = size_label(cfg.small_size), size_label(cfg.doc_size), cfg.random_reads
    rows = {
        "reread": CacheRow(f"sequential re-read of {n_small} (get_stream, right after a "
                           "first read)", Series("MB/s", "MB/s")),
        "first": CacheRow(f"sequential first read of {n_big} after reopening (get_stream)",
                          Series("MB/s", "MB/s")),
        "random": CacheRow(f"{n:,} random {size_label(cfg.read_size)} range reads over "
                           f"{n_big} (get with offset, length)", Series("reads/s", "reads/s")),
    }
    mmap_random = Series(f"{n:,} random {size_label(cfg.read_size)} range reads, use_mmap=True",
                         "reads/s")
    size = len(text)
    for run in range(cfg.runs):
        rng = random.Random(cfg.seed * 100 + run)
        offsets = [rng.randrange(size // cfg.read_size) * cfg.read_size for _ in range(n)]
        steps: list[str] = ["reread", "first", "random", "mmap"]
        for step in rotate(steps, run):
            settle()
            db = streamdb.open(name, streamdb.Config() if step == "mmap" else pread)
            try:
                if step == "reread":
                    timed_stream(db, SMALL, len(small))
                    counters = Counters(db)
                    seconds = timed_stream(db, SMALL, len(small))
                    counters.record(rows[step])
                    rows[step].rate.per_run.append(mb_s(len(small), seconds))
                elif step == "first":
                    counters = Counters(db)
                    seconds = timed_stream(db, DOC, size)
                    counters.record(rows[step])
                    rows[step].rate.per_run.append(mb_s(size, seconds))
                elif step == "random":
                    counters = Counters(db)
                    seconds = random_reads(db, offsets, cfg.read_size, counters, text)
                    counters.record(rows[step])
                    rows[step].rate.per_run.append(n / seconds)
                else:
                    seconds = random_reads(db, offsets, cfg.read_size, None, text)
                    mmap_random.per_run.append(n / seconds)
            finally:
                db.close()
        progress(f"cache run {run + 1}/{cfg.runs}: hit rates " + ", ".join(
            f"{k} {row.hit_rates[-1]:.1f}%" for k, row in rows.items()))
    return CacheResult(rows, pread.page_cache_size, mmap_random)


# -- machine facts --------------------------------------------------------------------------


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return ", ".join(f for f in ("aes", "vaes", "pclmulqdq", "avx2", "avx512f")
                                     if f in have) or "none of aes, vaes, pclmulqdq, avx2"
    except OSError:
        pass
    return "unknown"


def machine_facts(workdir: str) -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    zstd_c = ".".join(str(x) for x in zstandard.ZSTD_VERSION)
    return [
        ("CPU", f"{os.cpu_count()} logical CPUs ({usable} usable), {cpu_model()}"),
        ("CPU flags (crypto, SIMD)", cpu_flags()),
        ("Memory", memory()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Libraries", f"python-snappy {package_version('python-snappy')}; lz4 "
                      f"{package_version('lz4')} (LZ4 {lz4.library_version_string()}); "
                      f"zstandard {package_version('zstandard')} (zstd {zstd_c}); "
                      f"cryptography {package_version('cryptography')} "
                      f"({openssl_backend.openssl_version_text()}); "
                      f"xxhash {package_version('xxhash')} (xxHash {xxhash.XXHASH_VERSION})"),
        ("Benchmark directory", "a temporary directory in the project checkout"
         if os.path.dirname(os.path.abspath(workdir)) == ROOT else workdir),
        ("Filesystem", filesystem(workdir)),
        ("streamdb code", code_version()),
        ("Load average at start", load_average()),
    ]


# -- report ---------------------------------------------------------------------------------


def size_label(size: int) -> str:
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size:,} B"


def per_run_ratios(top: Series, bottom: Series) -> list[float]:
    return [a / b for a, b in zip(top.per_run, bottom.per_run, strict=True)]


def fmt_range(values: list[float], unit: str = "x", digits: int = 2) -> str:
    return f"{min(values):.{digits}f}{unit} .. {max(values):.{digits}f}{unit}"


def describe(cfg: Config, text: bytes) -> str:
    lines = text.count(b"\n")
    example = text.split(b"\n", 1)[0].decode()
    return (
        f"{cfg.runs} runs, seed {cfg.seed}. Documents: {size_label(cfg.doc_size)} "
        f"(section 3 also {size_label(cfg.small_size)}, its first bytes). Data: \"telemetry\" "
        f"= JSON lines of simulated sensor telemetry, {lines:,} lines of about "
        f"{len(text) / max(1, lines):.0f} B, e.g. `{example}`; "
        "\"random\" = seeded random bytes. Raw loops: the same 256 KiB chunks, the same "
        f"library calls (zstd level {ZSTD_LEVEL}), outputs dropped at once. "
        f"Section 3: {cfg.random_reads:,} random {size_label(cfg.read_size)} reads per run; "
        f"Sections 1 and 2: {cfg.passes} timed pass(es) of each read per run (the per-run "
        "value is their median), after a warm-up pass."
    )


def report_transforms(results: dict[str, TransformResult], ratios: list[Ratio]) -> list[str]:
    out = [
        "Transforms: `write_document` (durability full: pages + fdatasync) and a full "
        "`get_stream`, MB/s (10^6 bytes/s of the document) as the median over runs; raw = the "
        "codec / AES-GCM calls alone in a Python loop over the same 256 KiB chunks:", "",
        "| # | variant | data | stored / size | write MB/s | raw write MB/s | write ours/raw "
        "| read MB/s | raw read MB/s | read ours/raw (range) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, r in enumerate(results.values(), 1):
        v = r.variant
        stored = f"{r.stored / r.size:.1%}"
        if r.raw_write is None or r.raw_read is None:
            raw_cells = "— | — | " + f"{r.read.median:,.0f} | — | —"
        else:
            w = per_run_ratios(r.write, r.raw_write)
            rd = per_run_ratios(r.read, r.raw_read)
            raw_cells = (f"{r.raw_write.median:,.0f} | {statistics.median(w):.2f}x | "
                         f"{r.read.median:,.0f} | {r.raw_read.median:,.0f} | "
                         f"{statistics.median(rd):.2f}x ({fmt_range(rd)})")
            if v.random_data:
                ratios.append(judge(f"read, {v.label} on random data (stored RAW) / raw "
                                    "lz4 decompression", rd, None))
            elif v.encrypted:
                what = "AES-GCM decryption" + (f" + {v.codec} decompression" if v.codec else "")
                ratios.append(judge(f"read, {v.label} / raw {what}", rd,
                                    TARGET_ENCRYPTED_READ))
            else:
                ratios.append(judge(f"read, {v.label} / raw {v.codec} decompression", rd,
                                    TARGET_COMPRESSED_READ))
        out.append(f"| T{number} | {v.label} | {v.data_name} | {stored} | "
                   f"{r.write.median:,.0f} | {raw_cells} |")
    out.append("")
    return out


def report_pread(p: PreadResult, cfg: Config, ratios: list[Ratio]) -> list[str]:
    n = size_label(cfg.doc_size)
    out = [f"pread against mmap: the {n} document stored uncompressed, MB/s as the median over "
           "runs (default page cache: it cannot hold the document):", "",
           "| # | read | use_mmap=True MB/s | use_mmap=False MB/s | pread / mmap (range) |",
           "|---|---|---:|---:|---:|"]
    for number, (what, series) in enumerate((("get_stream (256 KiB chunks)", p.stream),
                                             (f"get (the whole {n})", p.get)), 1):
        values = per_run_ratios(series[False], series[True])
        out.append(f"| M{number} | {what} | {series[True].median:,.0f} | "
                   f"{series[False].median:,.0f} | {statistics.median(values):.2f}x "
                   f"({fmt_range(values)}) |")
        ratios.append(judge(f"{n} {what.split(' ')[0]}: use_mmap=False / use_mmap=True (MB/s)",
                            values, TARGET_PREAD_VS_MMAP))
    out.append("")
    return out


def report_cache(c: CacheResult, ratios: list[Ratio]) -> list[str]:
    out = [f"Page cache (`use_mmap=False`, `page_cache_size` {c.capacity:,} pages of 8 KiB): "
           "`stats()` deltas in pages, medians over runs; hit rate = hits / (hits + misses); "
           "max held = the most `cache_pages` seen over all runs:", "",
           "| # | workload | speed | hits | misses | prefetches | evictions | hit rate (range) "
           "| max held / capacity |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for number, (key, row) in enumerate(c.rows.items(), 1):
        rates = row.hit_rates
        speed = f"{row.rate.median:,.0f} {row.rate.unit}"
        out.append(f"| C{number} | {row.label} | {speed} | {statistics.median(row.hits):,.0f} | "
                   f"{statistics.median(row.misses):,.0f} | "
                   f"{statistics.median(row.prefetches):,.0f} | "
                   f"{statistics.median(row.evictions):,.0f} | {statistics.median(rates):.1f}% "
                   f"({fmt_range(rates, '%', 1)}) | {row.max_pages:,} / {c.capacity:,} "
                   f"{'(ok)' if row.max_pages <= c.capacity else '(**over**)'} |")
        bound = TARGET_REREAD_HIT_RATE if key == "reread" else None
        ratios.append(judge(f"page cache hit rate: {row.label}", rates, bound, unit="%"))
    random_row = c.rows["random"]
    out.append(f"| C{len(c.rows) + 1} | the same random reads, use_mmap=True (reference) | "
               f"{c.mmap_random.median:,.0f} reads/s | — | — | — | — | — | — |")
    out.append("")
    ratios.append(judge("random 4 KiB range reads: use_mmap=False / use_mmap=True (reads/s)",
                        per_run_ratios(random_row.rate, c.mmap_random), None))
    return out


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_arguments(parser, full_runs=FULL.runs, quick_runs=QUICK.runs, seed=FULL.seed,
                         root=ROOT, quick_takes="a few seconds")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    cfg = Config(runs=args.runs if args.runs is not None else base.runs,
                 doc_size=base.doc_size, small_size=base.small_size,
                 random_reads=base.random_reads, read_size=base.read_size,
                 passes=base.passes, seed=args.seed)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if cfg.runs < 1 or not sections or any(s not in SECTIONS for s in sections):
        parser.error(f"--runs must be >= 1 and --sections a subset of {','.join(SECTIONS)}")
    if 256 * KiB != CHUNK:
        progress(f"note: streamdb's CHUNK is {size_label(CHUNK)}, not 256 KiB")
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([".venv/bin/python", "tools/bench_transforms.py", *shown])

    started = time.perf_counter()
    text = telemetry(cfg.doc_size, cfg.seed)
    seeded = random.Random(cfg.seed + 1)
    noise = seeded.randbytes(cfg.doc_size)
    key = seeded.randbytes(32)
    progress(f"data generated: {size_label(len(text))} of telemetry, "
             f"{size_label(len(noise))} random")

    workdir = tempfile.mkdtemp(prefix=".bench-transforms-", dir=args.dir)
    transforms: dict[str, TransformResult] | None = None
    pread: PreadResult | None = None
    cache: CacheResult | None = None
    try:
        facts = machine_facts(workdir)
        if "transforms" in sections:
            transforms = bench_transforms(cfg, workdir, text, noise, key)
        if "pread" in sections:
            pread = bench_pread(cfg, workdir, text)
        if "cache" in sections:
            cache = bench_cache(cfg, workdir, text)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    out = [
        HEADING,
        "",
        f"Command, on {datetime.date.today().isoformat()}:",
        "",
        "```sh",
        command,
        "```",
        "",
        *machine_table(facts),
        "",
        describe(cfg, text),
        "",
    ]
    ratios: list[Ratio] = []
    if transforms is not None:
        out += report_transforms(transforms, ratios)
    if pread is not None:
        out += report_pread(pread, cfg, ratios)
    if cache is not None:
        out += report_cache(cache, ratios)
    out += ratio_table(ratios)
    out += ["", f"Each ratio is computed within a run and the median over the {cfg.runs} runs "
            f"is compared with its target. Wall time {wall:.0f} s (data generation included); "
            f"load average at the end {load_average()}."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
