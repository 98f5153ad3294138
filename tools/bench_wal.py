"""Benchmark the write-ahead log (`wal`) against the baselines it has to beat.

Everything is measured side by side in one process and one run, on the same filesystem
(by default a temporary directory inside the project; `--dir` to choose another). Variants
are interleaved within each run, their order rotating from run to run, and `os.sync()` runs
before each measurement so that one variant's dirty pages do not slow the next one down.

1. Durable commit latency of one 4 KiB record:
   - `wal`, sync="full": `log.append(rec); log.commit()` (one fdatasync per commit);
   - raw `os.write` + `os.fsync` of the same 4 KiB to an append-only file;
   - raw `os.write` + `os.fdatasync` (an extra reference row, no target);
   - sqlite3 with `PRAGMA journal_mode=WAL` and `PRAGMA synchronous=FULL`: a one-row
     transaction (INSERT of a 4 KiB blob, commit).
2. Commits per second, sync="full", with 1 and with 8 threads all committing to one log
   (each thread loops `append(4 KiB)` + `commit()` for a fixed time). The log does group
   commit: `commit()` releases its lock during fsync, so batches written meanwhile share
   the next fsync.
3. sync="off" throughput of 1 MiB `bytes` records (`append` + `commit` per record) against
   raw sequential `os.write` of 1 MiB buffers to a file (no fsync), in MB/s (10^6 bytes/s).

Latency rows report the median and p99 (nearest rank) of single operations pooled over all
runs, after a warm-up in each run. Throughput rows report the median of the per-run
throughputs, and the p99 latency of single operations pooled over the runs. Each ratio is
computed per run (the variants of one run ran back to back) and the median over runs is
compared with its target; the range over runs is shown next to it. Data is seeded random
bytes (`--seed`). The logs are opened with the default segment size and never
checkpointed, so segment rolls (new zero-filled segment files) are part of what is measured.

Run it (`make bench` runs the first line):

    python tools/bench_wal.py                 # the full run (under a minute on a small VM)
    python tools/bench_wal.py --quick         # smoke run, a few seconds
    python tools/bench_wal.py --runs 9 --dir /mnt/nvme/tmp

It prints the machine facts and a Markdown table for docs/benchmarks.md. The machine it
runs on may be shared and noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from benchkit import (
    Ratio,
    Series,
    add_common_arguments,
    cpu_model,
    filesystem,
    load_average,
    machine_table,
    ratio,
    ratio_table,
    run_text,
    write_all,
)

import wal
from wal.vfs import OsFile, OsVFS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

RECORD_SIZE = 4 << 10  # section 1 and 2
BULK_SIZE = 1 << 20  # section 3
RECORD_POOL = 64  # distinct seeded records cycled through
BULK_POOL = 4

# Targets, as ratios of medians (see the module docstring).
TARGET_COMMIT_VS_FSYNC = 1.1
TARGET_COMMIT_VS_SQLITE = 1.1
TARGET_THREAD_SCALING = 4.0
TARGET_OFF_VS_WRITE = 0.7


@dataclass(frozen=True)
class Config:
    runs: int
    warmup: int  # operations per variant and run before measuring (sections 1 and 2)
    latency_ops: int  # measured commits per variant and run (section 1)
    thread_seconds: float  # measured time per thread count and run (section 2)
    threads: int  # the "many threads" count (section 2)
    bulk_mib: int  # MiB written per variant and run (section 3)
    seed: int


FULL = Config(runs=7, warmup=200, latency_ops=5000, thread_seconds=2.0, threads=8,
              bulk_mib=256, seed=20240601)
QUICK = Config(runs=2, warmup=20, latency_ops=200, thread_seconds=0.15, threads=8,
               bulk_mib=16, seed=20240601)


# -- section 1: commit latency --------------------------------------------------------------


class Committer(Protocol):
    def commit(self, payload: bytes) -> None: ...

    def close(self) -> None: ...


class WalCommitter:
    def __init__(self, path: str) -> None:
        self.log = wal.open(path, sync="full")

    def commit(self, payload: bytes) -> None:
        self.log.append(payload)
        self.log.commit()

    def close(self) -> None:
        self.log.close()


class RawCommitter:
    def __init__(self, path: str, sync: Callable[[int], None]) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.sync = sync

    def commit(self, payload: bytes) -> None:
        write_all(self.fd, payload)
        self.sync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class SqliteCommitter:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"sqlite3 refused journal_mode=WAL (got {mode!r})")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        self.db.commit()

    def commit(self, payload: bytes) -> None:
        # The sqlite3 module opens the transaction implicitly before the INSERT.
        self.db.execute("INSERT INTO t (v) VALUES (?)", (payload,))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def fdatasync(fd: int) -> None:
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # macOS has no fdatasync
        os.fsync(fd)


LATENCY_VARIANTS: dict[str, tuple[str, Callable[[str], Committer]]] = {
    "wal": ("wal append+commit, sync=full", WalCommitter),
    "fsync": ("raw os.write + os.fsync", lambda p: RawCommitter(p, os.fsync)),
    "fdatasync": ("raw os.write + os.fdatasync (reference)", lambda p: RawCommitter(p, fdatasync)),
    "sqlite": ("sqlite3 WAL, synchronous=FULL, 1-row txn", SqliteCommitter),
}


def bench_latency(cfg: Config, workdir: str, records: list[bytes]) -> dict[str, Series]:
    results = {key: Series(label, "µs") for key, (label, _) in LATENCY_VARIANTS.items()}
    keys = list(LATENCY_VARIANTS)
    for run in range(cfg.runs):
        rundir = tempfile.mkdtemp(prefix=f"latency-{run}-", dir=workdir)
        order = keys[run % len(keys):] + keys[: run % len(keys)]
        for key in order:
            os.sync()
            committer = LATENCY_VARIANTS[key][1](os.path.join(rundir, key))
            try:
                for i in range(cfg.warmup):
                    committer.commit(records[i % len(records)])
                samples = []
                clock = time.perf_counter_ns
                for i in range(cfg.latency_ops):
                    payload = records[i % len(records)]
                    start = clock()
                    committer.commit(payload)
                    samples.append((clock() - start) / 1000.0)
            finally:
                committer.close()
            results[key].samples_us += samples
            results[key].per_run.append(statistics.median(samples))
        shutil.rmtree(rundir)
        progress(f"latency run {run + 1}/{cfg.runs}: " + ", ".join(
            f"{k} {results[k].per_run[-1]:.1f} µs" for k in keys))
    return results


# -- section 2: commits per second with 1 and N threads --------------------------------------


SLOW_FSYNC = 0.001  # added to every fsync in the "slow disk" variant


class SlowFile(OsFile):
    """A real file whose fsync takes 1 ms longer, as on a disk without a write cache."""

    def sync(self) -> None:
        super().sync()
        time.sleep(SLOW_FSYNC)


class SlowSyncVFS(OsVFS):
    def open(self, path: str, *, create: bool = False) -> OsFile:
        real = super().open(path, create=create)
        return SlowFile(real.path, real.fileno())


def commit_threads(path: str, nthreads: int, seconds: float, warmup: int,
                   records: list[bytes], vfs: wal.VFS | None = None) -> tuple[float, list[float]]:
    """Commits per second of `nthreads` threads sharing one log, and every commit's latency."""
    log = wal.open(path, sync="full", vfs=vfs)
    try:
        for i in range(warmup):
            log.append(records[i % len(records)])
            log.commit()
        start_box: list[float] = []
        barrier = threading.Barrier(nthreads, action=lambda: start_box.append(time.perf_counter()))
        counts = [0] * nthreads
        ends = [0.0] * nthreads
        latencies: list[list[float]] = [[] for _ in range(nthreads)]
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            try:
                mine = latencies[index]
                clock = time.perf_counter
                n = index * 7  # threads start at different records
                barrier.wait()
                deadline = start_box[0] + seconds
                now = clock()
                while now < deadline:
                    log.append(records[n % len(records)])
                    log.commit()
                    done = clock()
                    mine.append((done - now) * 1e6)
                    now = done
                    n += 1
                counts[index] = len(mine)
                ends[index] = now
            except BaseException as exc:  # re-raised in the main thread
                errors.append(exc)
                barrier.abort()

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        if errors:
            raise errors[0]
    finally:
        log.close()
    elapsed = max(ends) - start_box[0]
    return sum(counts) / elapsed, [x for per_thread in latencies for x in per_thread]


def bench_threads(
    cfg: Config, workdir: str, records: list[bytes]
) -> dict[tuple[int, bool], Series]:
    """Keys are (threads, slow disk). The slow-disk variant adds 1 ms to every fsync: there
    the fsync, not Python, is the bottleneck, which is what group commit is for."""
    variants = [(n, slow) for slow in (False, True) for n in (1, cfg.threads)]
    results = {
        (n, slow): Series(
            f"wal commits/s, sync=full, {n} thread{'s' * (n > 1)}"
            + (", fsync + 1 ms (simulated)" if slow else ""),
            "commits/s",
        )
        for n, slow in variants
    }
    for run in range(cfg.runs):
        rundir = tempfile.mkdtemp(prefix=f"threads-{run}-", dir=workdir)
        for n, slow in variants if run % 2 == 0 else variants[::-1]:
            os.sync()
            rate, samples = commit_threads(
                os.path.join(rundir, f"wal-{n}-{slow}"), n, cfg.thread_seconds, cfg.warmup,
                records, SlowSyncVFS() if slow else None,
            )
            results[n, slow].per_run.append(rate)
            results[n, slow].samples_us += samples
        shutil.rmtree(rundir)
        progress(f"threads run {run + 1}/{cfg.runs}: " + ", ".join(
            f"{n} thr{' slow' * slow} {results[n, slow].per_run[-1]:,.0f}/s"
            for n, slow in variants))
    return results


# -- section 3: sync=off bulk throughput ----------------------------------------------------


def bulk_wal(path: str, count: int, blobs: list[bytes]) -> tuple[float, list[float]]:
    clock = time.perf_counter
    with wal.open(path, sync="off") as log:
        log.append(blobs[-1])  # warm-up: one record
        log.commit()
        samples = []
        start = now = clock()
        for i in range(count):
            log.append(blobs[i % len(blobs)])
            log.commit()
            done = clock()
            samples.append((done - now) * 1e6)
            now = done
        elapsed = now - start
    return count * BULK_SIZE / elapsed / 1e6, samples


def bulk_raw(path: str, count: int, blobs: list[bytes]) -> tuple[float, list[float]]:
    clock = time.perf_counter
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, blobs[-1])  # warm-up: one buffer
        samples = []
        start = now = clock()
        for i in range(count):
            write_all(fd, blobs[i % len(blobs)])
            done = clock()
            samples.append((done - now) * 1e6)
            now = done
        elapsed = now - start
    finally:
        os.close(fd)
    return count * BULK_SIZE / elapsed / 1e6, samples


BulkFn = Callable[[str, int, list[bytes]], tuple[float, list[float]]]
BULK_VARIANTS: dict[str, tuple[str, BulkFn]] = {
    "wal": ("wal append+commit 1 MiB, sync=off", bulk_wal),
    "raw": ("raw os.write 1 MiB, no fsync", bulk_raw),
}


def bench_bulk(cfg: Config, workdir: str, blobs: list[bytes]) -> dict[str, Series]:
    results = {key: Series(label, "MB/s") for key, (label, _) in BULK_VARIANTS.items()}
    keys = list(BULK_VARIANTS)
    for run in range(cfg.runs):
        rundir = tempfile.mkdtemp(prefix=f"bulk-{run}-", dir=workdir)
        for key in keys if run % 2 == 0 else keys[::-1]:
            os.sync()
            rate, samples = BULK_VARIANTS[key][1](os.path.join(rundir, key), cfg.bulk_mib, blobs)
            results[key].per_run.append(rate)
            results[key].samples_us += samples
        shutil.rmtree(rundir)  # dirty pages of deleted files are dropped, never written
        progress(f"bulk run {run + 1}/{cfg.runs}: " + ", ".join(
            f"{k} {results[k].per_run[-1]:,.0f} MB/s" for k in keys))
    return results


# -- machine facts --------------------------------------------------------------------------


def code_version() -> str:
    """The commit benchmarked, flagging uncommitted changes under wal/."""
    head = run_text(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    if head is None:
        return "unknown (not a git checkout)"
    dirty = run_text(["git", "-C", ROOT, "status", "--porcelain", "--", "wal"])
    return head.strip() + (" + uncommitted changes in wal/" if dirty else "")


def machine_facts(workdir: str) -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("CPU", f"{os.cpu_count()} logical CPUs ({usable} usable), {cpu_model()}"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("sqlite3", sqlite3.sqlite_version),
        ("Benchmark directory", workdir),
        ("Filesystem", filesystem(workdir)),
        ("wal code", code_version()),
        ("Load average at start", load_average()),
    ]


# -- report ---------------------------------------------------------------------------------


def fmt_value(value: float, unit: str) -> str:
    if unit == "µs":
        return f"{value:,.1f} µs" if value < 1000 else f"{value / 1000:,.2f} ms"
    return f"{value:,.0f} {unit}"


def report(cfg: Config, command: str, facts: list[tuple[str, str]],
           rows: list[Series], ratios: list[Ratio]) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        *machine_table(facts),
        "",
        f"{cfg.runs} runs; per run and variant: {cfg.warmup} warm-up commits then "
        f"{cfg.latency_ops} measured commits (latency), {cfg.thread_seconds:g} s of committing "
        f"(threads), {cfg.bulk_mib} x 1 MiB after one warm-up record (sync=off); seed {cfg.seed}.",
        "",
        "| # | measurement | median | p99 (single op) | max (single op) | ops measured |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for number, series in enumerate(rows, 1):
        lines.append(
            f"| {number} | {series.label} | {fmt_value(series.median, series.unit)} | "
            f"{fmt_value(series.p99_us, 'µs')} | {fmt_value(series.max_us, 'µs')} | "
            f"{len(series.samples_us):,} |"
        )
    lines += [
        "",
        "Latency rows: median, p99 and max of single commits pooled over all runs. "
        "Throughput rows: median of the per-run throughputs; p99 and max of single operations "
        "(append+commit, or one write) pooled over all runs.",
        "",
        *ratio_table(ratios),
    ]
    return "\n".join(lines)


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_arguments(parser, full_runs=FULL.runs, quick_runs=QUICK.runs, seed=FULL.seed,
                         root=ROOT, quick_takes="a few seconds")
    parser.add_argument("--threads", type=int, default=FULL.threads,
                        help="thread count of the multi-thread commit measurement")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    cfg = Config(
        runs=args.runs if args.runs is not None else cfg.runs,
        warmup=cfg.warmup,
        latency_ops=cfg.latency_ops,
        thread_seconds=cfg.thread_seconds,
        threads=args.threads,
        bulk_mib=cfg.bulk_mib,
        seed=args.seed,
    )
    if cfg.runs < 1 or cfg.threads < 2:
        parser.error("--runs must be >= 1 and --threads >= 2")

    rng = random.Random(cfg.seed)
    records = [rng.randbytes(RECORD_SIZE) for _ in range(RECORD_POOL)]
    blobs = [rng.randbytes(BULK_SIZE) for _ in range(BULK_POOL)]
    command = shlex.join(["python", "tools/bench_wal.py", *sys.argv[1:]]) if argv is None \
        else shlex.join(["python", "tools/bench_wal.py", *argv])

    workdir = tempfile.mkdtemp(prefix=".bench-wal-", dir=args.dir)
    try:
        facts = machine_facts(workdir)
        started = time.perf_counter()
        latency = bench_latency(cfg, workdir, records)
        threads = bench_threads(cfg, workdir, records)
        bulk = bench_bulk(cfg, workdir, blobs)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    one, many = threads[1, False], threads[cfg.threads, False]
    rows = [*latency.values(), *threads.values(), *bulk.values()]
    ratios = [
        ratio("wal commit / raw write+fsync (median latency)", latency["wal"], latency["fsync"],
              TARGET_COMMIT_VS_FSYNC, at_most=True),
        ratio("wal commit / sqlite3 commit (median latency)", latency["wal"], latency["sqlite"],
              TARGET_COMMIT_VS_SQLITE, at_most=True),
        ratio("wal commit / raw write+fdatasync (median latency)", latency["wal"],
              latency["fdatasync"], None, at_most=True),
        ratio(f"{cfg.threads} threads / 1 thread (commits/s)", many, one,
              TARGET_THREAD_SCALING, at_most=False),
        ratio(f"{cfg.threads} threads / 1 thread, fsync + 1 ms (simulated)",
              threads[cfg.threads, True], threads[1, True], TARGET_THREAD_SCALING,
              at_most=False),
        ratio("wal sync=off / raw os.write (MB/s)", bulk["wal"], bulk["raw"],
              TARGET_OFF_VS_WRITE, at_most=False),
    ]
    print("## Write-ahead log (tools/bench_wal.py)")
    print()
    print(report(cfg, command, facts, rows, ratios))
    print()
    print(f"Wall time {wall:.1f} s; load average at the end {load_average()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
