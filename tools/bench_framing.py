"""Benchmark framed message streams (`streamdb.framing`) against bare Python loops.

Everything runs in one process and one run. Messages: 64 B and 1 KiB payloads (1,000,000
and 200,000 of them by default), seeded random bytes (4,096 distinct payloads, cycled). For
each framer (none, XXH3-64, CRC-32, CRC-16) and each medium:

- memory: `StreamWriter` into a fresh `io.BytesIO`, `StreamReader` over the stream's `bytes`
  (read in place, as the bare loop does), and also over `io.BytesIO(stream)`, whose reads
  copy (reported, no target);
- file: a real file in a temporary directory (by default inside the project, as the other
  benchmarks; `--dir` to choose another), written with `open(path, "wb")` (buffered, no
  fsync: the page cache is measured, not the disk) and read back with `open(path, "rb")`;

it measures messages/s of

- `write_many(payloads)` and a per-call `write(payload)` loop (default `buffer_size`, then
  `flush()`; for the file, open to close, starting from no file);
- `StreamReader.messages()` (default `read_size`, each payload dropped at once; for the
  file, open to close);
- the baseline, the simplest Python loop doing the same work: writing, `struct.pack_into`
  of the header (length and, with a checksum, the same checksum call as the framer's) into a
  preallocated bytearray plus a memoryview slice assignment of the payload; reading,
  `struct.unpack_from` of the header plus a memoryview slice of the payload (and the same
  checksum call, compared with the stored value). In memory the baseline has no I/O; for
  the file it adds one `f.write` of the whole buffer (open to close), or one `f.read()` of
  the whole file before the loop.

Every pass is checked once, untimed, beforehand (the streams written are byte-identical to
the baseline's, and both readers give back every payload). Variants are interleaved within
each run, their order rotating from run to run; `gc.collect()` runs before each timed pass.
Every figure is the median of the per-run values; each ratio is computed within a run and
the median over runs is compared with its target, with the range over runs next to it.

Targets: `StreamReader` >= 0.9x the bare read loop; `write_many` >= 0.9x the bare write loop;
per-call `write()` >= 0.6x; the XXH3-64-verifying read >= 0.75x the read without checksum.

Run it (`make bench` runs the first line):

    python tools/bench_framing.py               # the full run (about 2 minutes on 2 vCPUs)
    python tools/bench_framing.py --quick       # smoke run, a few seconds
    python tools/bench_framing.py --runs 9 --dir /mnt/nvme/tmp

It prints the machine facts and a Markdown section for docs/benchmarks.md. The machine may
be shared and noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import binascii
import datetime
import gc
import inspect
import io
import os
import platform
import random
import shlex
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import xxhash
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
)

import streamdb
import streamdb.framing as fr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADING = "## Framed message streams (tools/bench_framing.py)"

KiB = 1 << 10
DISTINCT = 4096  # distinct payloads per size, cycled

# Targets, as ratios of per-run messages/s; the median over runs is compared.
TARGET_READ = 0.9  # StreamReader.messages() / bare read loop, at least
TARGET_WRITE_MANY = 0.9  # write_many / bare write loop
TARGET_WRITE = 0.6  # per-call write() / bare write loop
TARGET_XXH3_READ = 0.75  # StreamReader with XXH3-64 / StreamReader without checksum

TARGET_APPENDS = 1.0  # database appends of 64 B messages, batched: million messages/s

# Sections: "streams" (framing over memory and files), "appends" (message logs in a
# database).
SECTIONS = ("streams", "appends")
MEDIA = ("memory", "file")
OPS = ("write_many", "write", "bare write", "read", "bare read", "read BytesIO")


def ops(medium: str) -> tuple[str, ...]:
    return OPS if medium == "memory" else OPS[:-1]


@dataclass(frozen=True)
class Config:
    runs: int
    counts: tuple[tuple[int, int], ...]  # (payload size, messages)
    seed: int
    appends: tuple[int, int, int] = (1_000_000, 100_000, 1_000)  # total, batch, singles


FULL = Config(runs=5, counts=((64, 1_000_000), (KiB, 200_000)), seed=20261122)
QUICK = Config(runs=1, counts=((64, 50_000), (KiB, 10_000)), seed=20261122,
               appends=(20_000, 5_000, 50))


@dataclass(frozen=True)
class Framing:
    key: str
    label: str
    checksum: fr.Checksum | None
    header: struct.Struct  # the length, and the checksum value
    function: Callable[[bytes | memoryview], int] | None  # what the bare loops call

    def framer(self) -> fr.Framer:
        return fr.DefaultFramer() if self.checksum is None else fr.ChecksumFramer(self.checksum)

    def deframer(self) -> fr.DefaultDeframer:
        if self.checksum is None:
            return fr.DefaultDeframer()
        return fr.ChecksumDeframer(self.checksum)


FRAMINGS = (
    Framing("none", "no checksum", None, struct.Struct("<I"), None),
    Framing("xxh3", "XXH3-64", fr.XxHash64(), struct.Struct("<IQ"), xxhash.xxh3_64_intdigest),
    Framing("crc32", "CRC-32", fr.Crc32(), struct.Struct("<II"), zlib.crc32),
    Framing("crc16", "CRC-16", fr.Crc16(), struct.Struct("<IH"), None),  # crc_hqx(p, 0)
)


# -- the bare loops -------------------------------------------------------------------------


def bare_write(f: Framing, payloads: Sequence[bytes], total: int) -> bytearray:
    """The stream, framed by the simplest loop: pack_into plus a memoryview slice assignment."""
    buf = bytearray(total)
    mv = memoryview(buf)
    pack_into = f.header.pack_into
    hs = f.header.size
    off = 0
    if f.key == "none":
        for p in payloads:
            n = len(p)
            pack_into(buf, off, n)
            start = off + hs
            off = start + n
            mv[start:off] = p
    elif f.key == "crc16":
        crc_hqx = binascii.crc_hqx
        for p in payloads:
            n = len(p)
            pack_into(buf, off, n, crc_hqx(p, 0))
            start = off + hs
            off = start + n
            mv[start:off] = p
    else:
        compute = f.function
        assert compute is not None
        for p in payloads:
            n = len(p)
            pack_into(buf, off, n, compute(p))
            start = off + hs
            off = start + n
            mv[start:off] = p
    mv.release()
    return buf


def bare_read(f: Framing, data: bytes | bytearray) -> int:
    """Walk the stream with unpack_from and memoryview slices (verifying checksums);
    returns how many frames."""
    mv = memoryview(data)
    unpack_from = f.header.unpack_from
    hs = f.header.size
    end = len(data)
    off = 0
    count = 0
    if f.key == "none":
        while off < end:
            n = unpack_from(data, off)[0]
            start = off + hs
            off = start + n
            payload = mv[start:off]
            count += 1
    elif f.key == "crc16":
        crc_hqx = binascii.crc_hqx
        while off < end:
            n, stored = unpack_from(data, off)
            start = off + hs
            off = start + n
            payload = mv[start:off]
            if crc_hqx(payload, 0) != stored:
                raise AssertionError(f"checksum mismatch at {start - hs}")
            count += 1
    else:
        compute = f.function
        assert compute is not None
        while off < end:
            n, stored = unpack_from(data, off)
            start = off + hs
            off = start + n
            payload = mv[start:off]
            if compute(payload) != stored:
                raise AssertionError(f"checksum mismatch at {start - hs}")
            count += 1
    if count:
        del payload
    mv.release()
    return count


# -- the timed passes -----------------------------------------------------------------------

Clock = Callable[[], int]


@dataclass
class Workload:
    size: int
    count: int
    payloads: list[bytes]
    streams: dict[str, bytes] = field(default_factory=dict)  # framing key -> stream
    path: str = ""


def timed(op: str, f: Framing, w: Workload, medium: str) -> float:
    """Seconds for one pass of `op`. A file pass starts with the file as it needs it:
    absent for a write (removing the previous one is not timed), holding this framing's
    stream for a read."""
    if medium == "file" and os.path.exists(w.path):
        os.remove(w.path)
    gc.collect()
    clock = time.perf_counter_ns
    payloads = w.payloads
    stream = w.streams[f.key]
    if op in ("write_many", "write"):
        start = clock()
        sink: io.BytesIO | io.BufferedWriter = (io.BytesIO() if medium == "memory"
                                                else open(w.path, "wb"))  # noqa: SIM115
        with sink:
            writer = fr.StreamWriter(sink, f.framer())
            if op == "write_many":
                writer.write_many(payloads)
            else:
                write = writer.write
                for p in payloads:
                    write(p)
            writer.flush()
            if medium == "memory":
                assert isinstance(sink, io.BytesIO)
                written = sink.getbuffer().nbytes
        elapsed = clock() - start
        if medium == "file":
            written = os.path.getsize(w.path)
        if written != len(stream):
            raise AssertionError(f"{op} wrote {written} bytes, not {len(stream)}")
        return elapsed / 1e9
    if op == "bare write":
        start = clock()
        buf = bare_write(f, payloads, len(stream))
        if medium == "file":
            with open(w.path, "wb") as out:
                out.write(buf)
        elapsed = clock() - start
        if len(buf) != len(stream):
            raise AssertionError("bare write: wrong size")
        return elapsed / 1e9
    if medium == "file":  # the file holds this framing's stream
        with open(w.path, "wb") as out:
            out.write(stream)
        gc.collect()
    if op == "read" and medium == "memory":
        start = clock()
        for _payload in fr.StreamReader(stream, f.deframer()).messages():
            pass
        return (clock() - start) / 1e9
    if op in ("read", "read BytesIO"):
        start = clock()
        source: io.BytesIO | io.BufferedReader = (io.BytesIO(stream) if medium == "memory"
                                                  else open(w.path, "rb"))  # noqa: SIM115
        with source:
            for _payload in fr.StreamReader(source, f.deframer()).messages():
                pass
        return (clock() - start) / 1e9
    assert op == "bare read"
    start = clock()
    if medium == "memory":
        n = bare_read(f, stream)
    else:
        with open(w.path, "rb") as src:
            n = bare_read(f, src.read())
    elapsed = clock() - start
    if n != w.count:
        raise AssertionError(f"bare read: {n} frames, not {w.count}")
    return elapsed / 1e9


def check(f: Framing, w: Workload) -> None:
    """Untimed: both writers make the same bytes, both readers give back every payload."""
    out = io.BytesIO()
    with fr.StreamWriter(out, f.framer()) as writer:
        writer.write_many(w.payloads)
    stream = out.getvalue()
    if bytes(bare_write(f, w.payloads, len(stream))) != stream:
        raise AssertionError(f"{f.key}: the bare loop frames differently")
    for source in (stream, io.BytesIO(stream)):
        got = fr.StreamReader(source, f.deframer()).messages()
        for i, (payload, want) in enumerate(zip(got, w.payloads, strict=True)):
            if payload != want:
                raise AssertionError(f"{f.key}: payload {i} reads back wrong")
    if bare_read(f, stream) != w.count:
        raise AssertionError(f"{f.key}: the bare loop finds another count")
    w.streams[f.key] = stream


Key = tuple[int, str, str, str]  # payload size, framing key, medium, operation


def bench_streams(cfg: Config, workdir: str) -> dict[Key, Series]:
    rng = random.Random(cfg.seed)
    results: dict[Key, Series] = {}
    workloads = []
    for size, count in cfg.counts:
        distinct = [rng.randbytes(size) for _ in range(min(DISTINCT, count))]
        w = Workload(size, count, [distinct[i % len(distinct)] for i in range(count)],
                     path=os.path.join(workdir, f"stream-{size}.bin"))
        for f in FRAMINGS:
            check(f, w)
            for medium in MEDIA:
                for op in ops(medium):
                    results[size, f.key, medium, op] = Series(
                        f"{size_label(size)}, {f.label}, {medium}: {op}", "msg/s")
        workloads.append(w)
        progress(f"streams: {size_label(size)} x {count:,} ready "
                 f"({len(w.streams['none']) / 1e6:.0f} MB unchecked stream)")
    for run in range(cfg.runs):
        for w in rotate(workloads, run):
            for f in rotate(FRAMINGS, run):
                for medium in rotate(MEDIA, run):
                    for op in rotate(ops(medium), run):
                        seconds = timed(op, f, w, medium)
                        results[w.size, f.key, medium, op].per_run.append(w.count / seconds)
        last = {key: series.per_run[-1] for key, series in results.items()}
        progress(f"streams run {run + 1}/{cfg.runs}: in memory, read / bare read " + ", ".join(
            f"{size_label(w.size)} {f.key} {last[w.size, f.key, 'memory', 'read'] / last[w.size, f.key, 'memory', 'bare read']:.2f}x"  # noqa: E501
            for w in workloads for f in FRAMINGS))
    return results


# -- section 2: database appends -----------------------------------------------------------

APPEND_KINDS = ("batched", "one commit each, durability full", "one commit each, normal",
                "scan", "batched, encrypted", "one commit each, encrypted", "scan, encrypted")
KEY = bytes(range(32))  # the encrypted database's key (AES-256-GCM)


def bench_appends(cfg: Config, workdir: str) -> dict[str, Series]:
    """`db.append_messages` of 64 B messages in batches of `batch`, one commit per message
    (full and normal durability), and a full `db.messages()` scan after reopening; then
    the batched, single (full durability) and scan passes in an encrypted database.
    Messages/s per run."""
    rng = random.Random(cfg.seed)
    payloads = [rng.randbytes(64) for _ in range(DISTINCT)]
    total, batch, singles = cfg.appends
    results = {kind: Series(f"database appends: {kind}", "msg/s") for kind in APPEND_KINDS}

    def append(db: streamdb.Database, kind: str, log: str) -> None:
        started = time.perf_counter()
        if kind.startswith("batched"):
            for first in range(0, total, batch):
                db.append_messages(log, (payloads[i % DISTINCT]
                                         for i in range(first, first + batch)))
            count = total
        else:
            for i in range(singles):
                db.append_message(log, payloads[i % DISTINCT])
            count = singles
        results[kind].per_run.append(count / (time.perf_counter() - started))

    def scan(path: str, key: bytes | None, kind: str) -> None:
        with streamdb.open(path, streamdb.Config(encryption_key=key)) as db:
            started = time.perf_counter()
            n = sum(1 for _ in db.messages("/batched"))
            results[kind].per_run.append(n / (time.perf_counter() - started))
        if n != total:
            raise AssertionError(f"{kind}: {n} messages, not {total}")

    for run in range(cfg.runs):
        for key in rotate((None, KEY), run):
            path = os.path.join(workdir, f"appends-{run}-{'aes' if key else 'plain'}.db")
            kinds = [k for k in APPEND_KINDS if not k.startswith("scan")
                     and k.endswith("encrypted") == (key is not None)]
            for kind in rotate(kinds, run):
                config = streamdb.Config(durability="normal" if kind.endswith("normal")
                                         else "full", encryption_key=key)
                with streamdb.open(path, config) as db:
                    append(db, kind, "/" + kind.split(",")[0].replace(" ", "-"))
            scan(path, key, "scan, encrypted" if key else "scan")
            os.remove(path)
        progress(f"appends run {run + 1}/{cfg.runs}: " + ", ".join(
            f"{kind} {results[kind].per_run[-1] / 1e6:.3f} M/s" for kind in APPEND_KINDS))
    return results


def report_appends(cfg: Config, results: dict[str, Series], ratios: list[Ratio]) -> list[str]:
    total, batch, singles = cfg.appends
    out = [
        f"Database message logs, 64 B messages with XXH3-64 (the default), one new "
        f"database per run: {total:,} messages in batches of {batch:,} "
        f"(`append_messages`, one commit each), {singles:,} single appends "
        f"(`append_message`, one commit each), and a full `messages()` scan of the batched "
        f"log after reopening; then the same in an encrypted database (AES-256-GCM; its "
        f"single appends at durability full). Messages per second, median over runs "
        f"(range):", "",
        "| # | operation | messages/s |", "|---|---|---:|",
    ]
    for number, kind in enumerate(APPEND_KINDS, 1):
        r = results[kind]
        out.append(f"| A{number} | {kind} | {count_rate(r.median)} "
                   f"({count_rate(min(r.per_run))} .. {count_rate(max(r.per_run))}) |")
    ratios.append(judge("64 B database appends, batched (million messages/s)",
                        [v / 1e6 for v in results["batched"].per_run], TARGET_APPENDS,
                        unit=" M"))
    out.append("")
    return out


# -- report ---------------------------------------------------------------------------------


def size_label(size: int) -> str:
    if size >= KiB * KiB and size % (KiB * KiB) == 0:
        return f"{size // (KiB * KiB)} MiB"
    return f"{size // KiB} KiB" if size >= KiB and size % KiB == 0 else f"{size} B"


def rate(value: float) -> str:
    return f"{value / 1e6:.2f} M"


def count_rate(value: float) -> str:
    return rate(value) if value >= 1e6 else f"{value:,.0f}"


def describe(cfg: Config) -> str:
    counts = " and ".join(f"{count:,} messages of {size_label(size)}"
                          for size, count in cfg.counts)
    writes = size_label(default("StreamWriter", "buffer_size"))
    reads = size_label(default("StreamReader", "read_size"))
    smallest = min((size + 4) * count for size, count in cfg.counts) / 1e6
    largest = max((size + 12) * count for size, count in cfg.counts) / 1e6
    return (
        f"{cfg.runs} runs, seed {cfg.seed}. Messages: {counts} (seeded random payloads, "
        f"{DISTINCT:,} distinct ones cycled), one pass of each operation per run after an "
        f"untimed check. Writers: default `buffer_size` ({writes}); readers: default "
        f"`read_size` ({reads}). Bare loops: `struct.pack_into` into a preallocated "
        "bytearray plus a memoryview slice assignment (writing), `struct.unpack_from` plus "
        "a memoryview slice (reading), with the same checksum call as the framer "
        "(`xxhash.xxh3_64_intdigest`, `zlib.crc32`, `binascii.crc_hqx(p, 0)`); for the file "
        "they add one `write` of the whole buffer, or one `read()` of the whole file, so "
        f"they also pay for faulting in a fresh buffer of the whole stream ({smallest:.0f} to "
        f"{largest:.0f} MB), which the streaming writers and readers do not: ratios above 1 "
        "in the file rows come from that. File passes run open to close (a write pass "
        "starts from no file), without fsync."
    )


def default(cls: str, name: str) -> int:
    """The default of a keyword argument of a streamdb.framing class."""
    value = inspect.signature(getattr(fr, cls)).parameters[name].default
    assert isinstance(value, int)
    return value


def report_streams(cfg: Config, results: dict[Key, Series], ratios: list[Ratio]) -> list[str]:
    out = [
        "Messages per second (M = 10^6), median over runs; bare = the bare Python loop; "
        "ratios within each run, median (range):", "",
        "| # | payload | checksum | medium | write_many | write() | bare write | "
        "write_many / bare | write() / bare | read | bare read | read / bare | "
        "read from BytesIO |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    number = 0
    for size, _count in cfg.counts:
        for f in FRAMINGS:
            for medium in MEDIA:
                number += 1
                s = {op: results[size, f.key, medium, op] for op in ops(medium)}
                what = f"{size_label(size)}, {f.label}, {medium}"
                many = ratio(f"{what}: write_many / bare write loop", s["write_many"],
                             s["bare write"], TARGET_WRITE_MANY, False)
                one = ratio(f"{what}: write() / bare write loop", s["write"], s["bare write"],
                            TARGET_WRITE, False)
                read = ratio(f"{what}: StreamReader / bare read loop", s["read"],
                             s["bare read"], TARGET_READ, False)
                ratios += [many, one, read]
                out.append(
                    f"| F{number} | {size_label(size)} | {f.label} | {medium} | "
                    f"{rate(s['write_many'].median)} | {rate(s['write'].median)} | "
                    f"{rate(s['bare write'].median)} | {cell(many)} | {cell(one)} | "
                    f"{rate(s['read'].median)} | {rate(s['bare read'].median)} | "
                    f"{cell(read)} | "
                    f"{rate(s['read BytesIO'].median) if 'read BytesIO' in s else '-'} |")
    for size, _count in cfg.counts:
        for medium in MEDIA:
            ratios.append(ratio(
                f"{size_label(size)}, {medium}: StreamReader with XXH3-64 / without checksum",
                results[size, "xxh3", medium, "read"], results[size, "none", medium, "read"],
                TARGET_XXH3_READ, False))
    out.append("")
    return out


def cell(r: Ratio) -> str:
    return f"{r.median:.2f}x ({min(r.per_run):.2f} .. {max(r.per_run):.2f})"


def machine_facts(workdir: str) -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("CPU", f"{os.cpu_count()} logical CPUs ({usable} usable), {cpu_model()}"),
        ("Memory", memory()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Libraries", f"xxhash {package_version('xxhash')} (xxHash {xxhash.XXHASH_VERSION}); "
                      f"zlib {zlib.ZLIB_RUNTIME_VERSION}"),
        ("Benchmark directory", "a temporary directory in the project checkout"
         if os.path.dirname(os.path.abspath(workdir)) == ROOT else workdir),
        ("Filesystem", filesystem(workdir)),
        ("streamdb code", code_version()),
        ("Load average at start", load_average()),
    ]


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_arguments(parser, full_runs=FULL.runs, quick_runs=QUICK.runs, seed=FULL.seed,
                         root=ROOT, quick_takes="a few seconds")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    cfg = Config(runs=args.runs if args.runs is not None else base.runs, counts=base.counts,
                 seed=args.seed, appends=base.appends)
    if cfg.runs < 1:
        parser.error("--runs must be >= 1")
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([".venv/bin/python", "tools/bench_framing.py", *shown])

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix=".bench-framing-", dir=args.dir)
    try:
        facts = machine_facts(workdir)
        streams = bench_streams(cfg, workdir)
        appends = bench_appends(cfg, workdir)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ratios: list[Ratio] = []
    out = [
        HEADING, "",
        f"Command, on {datetime.date.today().isoformat()}:", "",
        "```sh", command, "```", "",
        *machine_table(facts), "",
        describe(cfg), "",
        *report_streams(cfg, streams, ratios),
        *report_appends(cfg, appends, ratios),
        *ratio_table(ratios), "",
        f"Each ratio is computed within a run and the median over the {cfg.runs} runs is "
        f"compared with its target. Wall time {wall:.0f} s; load average at the end "
        f"{load_average()}.",
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
