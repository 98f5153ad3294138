"""Benchmark streamdb.arrow's IPC writer and reader against pyarrow and lightstream-io.

Everything runs in one process and one run, in a temporary directory (by default inside
the project; `--dir` to choose another). Tables are generated with numpy from a seed.

1. Write and read (W and R rows): 10,000,000 rows x {int64, float64, int32,
   dictionary<int32, utf8> of 1,000 words}, one batch, in the file and the stream formats.
   Writing: `streamdb.arrow.write_ipc(path, table, format=)` against pyarrow's
   `ipc.new_file` / `new_stream` writing the same table (as a pyarrow table) to a path;
   lightstream-io's `write(path)` for the file format. Reading: open and read the whole
   table from the path: `read_ipc(path)` (memory-mapped) against
   `pa.ipc.open_file(pa.memory_map(path)).read_all()` (or `open_stream`), and
   lightstream-io's `read(path).read_all()` for the file format.
2. Many batches (B row): a stream of 1,000 batches of 10,000 rows (the same columns),
   read from a memory map: `read_ipc(path)` against pyarrow's `open_stream(memory_map)`.
3. The memory-mapped read (M rows): 100,000,000 rows x 4 numeric columns (int64, float64,
   int32, float32; 2.4 GB), one batch, written by pyarrow in the file format. Open and read
   all of it: `read_ipc(path)`, pyarrow's `open_file(memory_map(path)).read_all()`, and
   lightstream-io's `read(path).read_all()`. Each reads only metadata; the columns are
   views of the map, so the time is O(metadata).
4. The database (D rows): the table of 3 stored with `db.put_table` (one uncompressed
   document, max_document_size raised to hold it), read with `db.get_table` in quick mode
   and with checksums verified (every page of the 2.4 GB document read and hashed),
   against the plain-file read of 3.

Every measurement is repeated `runs` times (variants interleaved, their order rotating);
figures are medians, ratios are computed within a run. A read that takes well under a
millisecond counts, per run, as the median of 21 calls. The garbage collector is off while
a call is timed (as `timeit` does) and a read's result is dropped after the clock stops.
Reads validate as they do by default: ours checks every dictionary index (O(rows), which
also touches every index page of the map); pyarrow's `read_all` does not. The batch read
is also reported with `validate=False`, which checks what pyarrow checks.

Targets: the memory-mapped read at most 1x pyarrow's time; writing at least 0.7x pyarrow's
throughput; the stream read of 1,000 batches at least 0.5x pyarrow's; `db.get_table` in
quick mode within 2x of the plain-file read.

    python tools/bench_arrow.py             # the full run (a few minutes; 5 GB of disk)
    python tools/bench_arrow.py --quick     # smoke run, seconds
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchkit import (
    ROOT,
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

import streamdb
from streamdb import arrow

HEADING = "## Arrow IPC (tools/bench_arrow.py)"
TARGET_MMAP = 1.0  # our memory-mapped read time / pyarrow's, at most
TARGET_WRITE = 0.7  # our write throughput / pyarrow's, at least
TARGET_BATCHES = 0.5  # our 1,000-batch stream read throughput / pyarrow's, at least
TARGET_DB = 2.0  # get_table in quick mode / the plain-file read, time, at most


@dataclass(frozen=True)
class Config:
    runs: int
    rows: int  # section 1
    batches: tuple[int, int]  # section 2: count, rows each
    big_rows: int  # sections 3 and 4
    seed: int


FULL = Config(runs=5, rows=10_000_000, batches=(1_000, 10_000), big_rows=100_000_000,
              seed=20261122)
QUICK = Config(runs=1, rows=100_000, batches=(50, 1_000), big_rows=1_000_000, seed=20261122)


def mixed(rows: int, seed: int) -> arrow.Table:
    rng = np.random.default_rng(seed)
    words = arrow.array([f"word{i:04d}" for i in range(1_000)])
    codes = rng.integers(0, 1_000, rows, dtype=np.int32)
    label = arrow.Array(arrow.dictionary(arrow.int32(), arrow.utf8()), rows,
                        [None, codes.view(np.uint8)], dictionary=words)
    data: dict[str, np.ndarray[Any, Any]] = {
        "i64": rng.integers(0, 1 << 40, rows), "f64": rng.random(rows),
        "i32": rng.integers(0, 1 << 30, rows, dtype=np.int32)}
    cols = [arrow.from_numpy(v) for v in data.values()] + [label]
    fields = tuple(arrow.Field(n, c.type) for n, c in zip([*data, "label"], cols, strict=True))
    return arrow.Table(arrow.Schema(fields), [arrow.RecordBatch(arrow.Schema(fields), cols)])


def numeric(rows: int, seed: int) -> Any:
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    return pa.table({"i64": rng.integers(0, 1 << 40, rows), "f64": rng.random(rows),
                     "i32": rng.integers(0, 1 << 30, rows, dtype=np.int32),
                     "f32": rng.random(rows, dtype=np.float32)})


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Seconds `fn` takes, the median of `repeat` calls, the garbage collector off as
    `timeit` has it (a collection of the whole heap would land on whichever call triggers
    it); what it returns is dropped after the clock stops (unmapping is not reading)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
        del result
    return statistics.median(times)


def measure(cfg: Config, workdir: str) -> tuple[dict[str, Series], list[Ratio]]:
    import lightstream
    import pyarrow as pa

    s: dict[str, Series] = {}

    def series(key: str, unit: str = "s") -> Series:
        return s.setdefault(key, Series(key, unit))

    table = mixed(cfg.rows, cfg.seed)
    pa_table = table.to_pyarrow()
    paths = {fmt: os.path.join(workdir, f"mixed.{fmt}") for fmt in ("file", "stream")}
    pa_paths = {fmt: os.path.join(workdir, f"mixed-pa.{fmt}") for fmt in ("file", "stream")}
    ls_path = os.path.join(workdir, "mixed-ls.arrow")

    def pa_write(fmt: str) -> None:
        new = pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream
        with pa.OSFile(pa_paths[fmt], "wb") as sink, new(sink, pa_table.schema) as w:
            w.write_table(pa_table)

    def pa_read(fmt: str, path: str) -> Any:
        source = pa.memory_map(path)
        opener = pa.ipc.open_file if fmt == "file" else pa.ipc.open_stream
        return opener(source).read_all()

    def ls_write() -> None:
        with lightstream.write(ls_path) as w:
            w.write(pa_table)

    # Section 2 data: many batches in a stream.
    count, each = cfg.batches
    many = mixed(each, cfg.seed + 1)
    many_path = os.path.join(workdir, "many.stream")
    with open(many_path, "wb") as f, arrow.StreamWriter(f, many.schema) as w:
        for _ in range(count):
            w.write_batch(many.batches[0])

    # Sections 3 and 4: the big numeric table, by pyarrow, and in a database.
    big = numeric(cfg.big_rows, cfg.seed + 2)
    big_path = os.path.join(workdir, "big.arrow")
    with pa.OSFile(big_path, "wb") as sink, pa.ipc.new_file(sink, big.schema) as w:
        w.write_table(big)
    del big
    db_path = os.path.join(workdir, "big.db")
    size = os.path.getsize(big_path)
    db_cfg = streamdb.Config(max_document_size=max(size * 2, 256 << 20))
    with streamdb.open(db_path, db_cfg) as db:
        db.put_table("/big", arrow.read_ipc(big_path))
    progress(f"data ready: {cfg.rows:,} mixed rows, {count:,} x {each:,} batches, "
             f"{cfg.big_rows:,} numeric rows ({size / 1e9:.1f} GB)")

    db = streamdb.open(db_path, db_cfg)
    quick_db = streamdb.open(db_path, db_cfg, readonly=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quick_db.set_quick_mode(True)
    try:
        for run in range(cfg.runs):
            steps: list[tuple[str, Callable[[], object]]] = []
            for fmt in ("file", "stream"):
                steps += [
                    (f"write {fmt}: ours", lambda fmt=fmt: arrow.write_ipc(  # type: ignore[misc]
                        paths[fmt], table, format=fmt)),
                    (f"write {fmt}: pyarrow", lambda fmt=fmt: pa_write(fmt)),  # type: ignore[misc]
                ]
            steps.append(("write file: lightstream-io", ls_write))
            for key, fn in rotate(steps, run):
                series(key).per_run.append(timed(fn))
            reads: list[tuple[str, Callable[[], object]]] = []
            for fmt in ("file", "stream"):
                reads += [
                    (f"read {fmt}: ours", lambda fmt=fmt: arrow.read_ipc(  # type: ignore[misc]
                        paths[fmt])),
                    (f"read {fmt}: pyarrow", lambda fmt=fmt: pa_read(  # type: ignore[misc]
                        fmt, pa_paths[fmt])),
                ]
            reads += [
                ("read file: lightstream-io", lambda: lightstream.read(ls_path).read_all()),
                ("batches: ours", lambda: arrow.read_ipc(many_path)),
                ("batches: ours, validate=False",
                 lambda: arrow.read_ipc(many_path, validate=False)),
                ("batches: pyarrow", lambda: pa_read("stream", many_path)),
                ("mmap: ours", lambda: arrow.read_ipc(big_path)),
                ("mmap: pyarrow", lambda: pa_read("file", big_path)),
                ("mmap: lightstream-io", lambda: lightstream.read(big_path).read_all()),
                ("db: get_table, quick mode", lambda: quick_db.get_table("/big")),
                ("db: get_table, checksums", lambda: db.get_table("/big")),
            ]
            for key, fn in rotate(reads, run):
                # sub-millisecond reads: the median of 21 calls per run
                fast = key.startswith(("mmap: ours", "mmap: pyarrow", "db: get_table, quick",
                                       "read"))
                repeat = 21 if fast and "lightstream" not in key else 1
                if key.startswith("batches"):
                    repeat = 5  # tens of ms each
                series(key).per_run.append(timed(fn, repeat))
            progress(f"run {run + 1}/{cfg.runs}: mmap ours {s['mmap: ours'].per_run[-1] * 1e3:.2f}"
                     f" ms, pyarrow {s['mmap: pyarrow'].per_run[-1] * 1e3:.2f} ms")
    finally:
        db.close()
        quick_db.close()

    def r(name: str, top: str, bottom: str, bound: float | None, at_most: bool) -> Ratio:
        values = [a / b for a, b in zip(s[top].per_run, s[bottom].per_run, strict=True)]
        return judge(name, values, bound, at_most=at_most)

    ratios = [
        r("memory-mapped read of the numeric table, time: ours / pyarrow", "mmap: ours",
          "mmap: pyarrow", TARGET_MMAP, True),
        r("memory-mapped read, time: lightstream-io / pyarrow (reference)",
          "mmap: lightstream-io", "mmap: pyarrow", None, False),
        r("write, file format, throughput: ours / pyarrow", "write file: pyarrow",
          "write file: ours", TARGET_WRITE, False),
        r("write, stream format, throughput: ours / pyarrow", "write stream: pyarrow",
          "write stream: ours", TARGET_WRITE, False),
        r("read, file format, time: ours / pyarrow (reference)", "read file: ours",
          "read file: pyarrow", None, False),
        r("read, stream format, time: ours / pyarrow (reference)", "read stream: ours",
          "read stream: pyarrow", None, False),
        r(f"stream of {count:,} batches from a map, throughput: ours / pyarrow",
          "batches: pyarrow", "batches: ours", TARGET_BATCHES, False),
        r("the same, ours without the O(rows) checks (as pyarrow reads), throughput "
          "(reference)", "batches: pyarrow", "batches: ours, validate=False", None, False),
        r("db.get_table in quick mode / plain-file read, time", "db: get_table, quick mode",
          "mmap: ours", TARGET_DB, True),
        r("db.get_table with checksums / plain-file read, time (reference)",
          "db: get_table, checksums", "mmap: ours", None, False),
    ]
    return s, ratios


def report(cfg: Config, s: dict[str, Series]) -> list[str]:
    out = ["Median time per operation over runs (range):", "",
           "| operation | median | range |", "|---|---:|---:|"]
    for key, series in s.items():
        out.append(f"| {key} | {fmt_time(series.median)} | {fmt_time(min(series.per_run))} .. "
                   f"{fmt_time(max(series.per_run))} |")
    out.append("")
    return out


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_arguments(parser, full_runs=FULL.runs, quick_runs=QUICK.runs, seed=FULL.seed,
                         root=ROOT, quick_takes="seconds")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    cfg = Config(runs=args.runs or base.runs, rows=base.rows, batches=base.batches,
                 big_rows=base.big_rows, seed=args.seed)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([".venv/bin/python", "tools/bench_arrow.py", *shown])
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix=".bench-arrow-", dir=args.dir)
    try:
        facts = [
            ("CPU", f"{os.cpu_count()} logical CPUs, {cpu_model()}"),
            ("Memory", memory()),
            ("OS", platform.platform()),
            ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
            ("Libraries", f"numpy {package_version('numpy')}; pyarrow "
                          f"{package_version('pyarrow')}; lightstream-io "
                          f"{package_version('lightstream-io')}"),
            ("Filesystem", filesystem(workdir)),
            ("streamdb code", code_version()),
            ("Load average at start", load_average()),
        ]
        series, ratios = measure(cfg, workdir)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    count, each = cfg.batches
    out = [
        HEADING, "",
        f"Command, on {datetime.date.today().isoformat()}:", "",
        "```sh", command, "```", "",
        *machine_table(facts), "",
        f"{cfg.runs} runs, seed {cfg.seed}. Mixed table: {cfg.rows:,} rows x (int64, float64, "
        f"int32, dictionary<int32, utf8> of 1,000 words); batches: {count:,} x {each:,} rows "
        f"of the same; numeric table: {cfg.big_rows:,} rows x (int64, float64, int32, "
        "float32), written by pyarrow; the database holds it as one document.", "",
        *report(cfg, series),
        *ratio_table(ratios), "",
        f"Each ratio is computed within a run; the median over the {cfg.runs} runs is compared "
        f"with its target. Wall time {wall:.0f} s; load average at the end {load_average()}.",
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
