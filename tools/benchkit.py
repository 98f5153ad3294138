"""What the benchmarks in tools/ share: the measured series, percentiles, the common
command-line options, a raw-write helper, and facts about the machine for the tables in
docs/benchmarks.md."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TypeVar

T = TypeVar("T")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STARTED = time.monotonic()


def rotate(items: Sequence[T], run: int) -> list[T]:
    """`items` rotated by `run`: each run starts with another variant."""
    k = run % len(items)
    return [*items[k:], *items[:k]]


def progress(message: str) -> None:
    """A progress line on stderr, with the seconds since the benchmark started."""
    print(f"  .. [{time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def run_text(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout

def filesystem(path: str) -> str:
    """`ext4 on /dev/vda mounted at / (rw,relatime,...)`, or what can be found of it."""
    out = run_text(["df", "-T", path])
    if out is not None:
        fields = " ".join(out.splitlines()[1:]).split()
        if len(fields) >= 7:
            device, fstype, mountpoint = fields[0], fields[1], fields[-1]
            options = ""
            with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
                for line in mounts:
                    parts = line.split()
                    if len(parts) >= 4 and parts[1] == mountpoint and parts[0] == device:
                        options = f" ({parts[3]})"
            return f"{fstype} on {device} mounted at {mountpoint}{options}"
    out = run_text(["stat", "-f", "-c", "%T", path])
    return out.strip() if out else "unknown"

def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    out = run_text(["sysctl", "-n", "machdep.cpu.brand_string"])
    return out.strip() if out else (platform.processor() or "unknown")

def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "unknown"


@dataclass
class Series:
    """One measured variant: a headline value per run and pooled single-op latencies."""

    label: str
    unit: str  # of the per-run values: "µs", "commits/s", "docs/s", "MB/s"
    per_run: list[float] = field(default_factory=list)
    samples_us: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)  # e.g. close times, per run

    @property
    def median(self) -> float:
        return statistics.median(self.per_run)

    @property
    def p99_us(self) -> float:
        return percentile(self.samples_us, 99.0)

    @property
    def max_us(self) -> float:
        return max(self.samples_us)


@dataclass(frozen=True)
class Ratio:
    """A ratio measured once per run, and its target (`met` None: reference only)."""

    name: str
    per_run: list[float]
    target: str
    met: bool | None
    unit: str = "x"

    @property
    def median(self) -> float:
        return statistics.median(self.per_run)


def judge(name: str, values: list[float], bound: float | None, *, at_most: bool = False,
          unit: str = "x") -> Ratio:
    """`values` per run; their median compared with `bound` (at least, or at most)."""
    if bound is None:
        return Ratio(name, values, "—", None, unit)
    med = statistics.median(values)
    met = med <= bound if at_most else med >= bound
    return Ratio(name, values, f"{'≤' if at_most else '≥'} {bound:g}{unit}", met, unit)


def ratio(name: str, top: Series, bottom: Series, bound: float | None, at_most: bool) -> Ratio:
    """`top` / `bottom` run by run, judged against `bound`."""
    values = [a / b for a, b in zip(top.per_run, bottom.per_run, strict=True)]
    return judge(name, values, bound, at_most=at_most)


def ratio_table(ratios: Sequence[Ratio]) -> list[str]:
    """The markdown table of ratios against their targets (one decimal for percentages)."""
    lines = [
        "| ratio | measured (median over runs) | range over runs | target | result |",
        "|---|---:|---:|---:|---|",
    ]
    for item in ratios:
        verdict = "reference" if item.met is None else "**met**" if item.met else "**not met**"
        u, digits = item.unit, 1 if item.unit == "%" else 2
        lines.append(f"| {item.name} | {item.median:.{digits}f}{u} | "
                     f"{min(item.per_run):.{digits}f}{u} .. {max(item.per_run):.{digits}f}{u} | "
                     f"{item.target} | {verdict} |")
    return lines


def machine_table(facts: Sequence[tuple[str, str]]) -> list[str]:
    """The markdown table of the machine facts a benchmark section starts with."""
    return ["| machine | |", "|---|---|", *(f"| {key} | {value} |" for key, value in facts)]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def add_common_arguments(
    parser: argparse.ArgumentParser, *, full_runs: int, quick_runs: int, seed: int, root: str,
    quick_takes: str,
) -> None:
    """--quick, --runs, --dir and --seed, as every benchmark here takes them."""
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run of {quick_takes} (numbers are not meaningful)")
    parser.add_argument("--runs", type=int, default=None,
                        help=f"repetitions of every measurement (default {full_runs}, "
                             f"{quick_runs} with --quick)")
    parser.add_argument("--dir", default=root,
                        help="where to create the temporary directory (default: the project "
                             "directory, i.e. its filesystem)")
    parser.add_argument("--seed", type=int, default=seed, help="seed of the data")


def memory() -> str:
    """Total and available memory, from /proc/meminfo."""
    try:
        with open("/proc/meminfo") as info:
            fields = dict(line.split(":", 1) for line in info)
        total = int(fields["MemTotal"].split()[0]) // 1024
        available = int(fields["MemAvailable"].split()[0]) // 1024
        return f"{total:,} MiB ({available:,} MiB available at start)"
    except (OSError, KeyError, ValueError):
        return "unknown"


def code_version() -> str:
    """The commit benchmarked, flagging uncommitted changes under streamdb/ or wal/."""
    head = run_text(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    if head is None:
        return "unknown (not a git checkout)"
    dirty = run_text(["git", "-C", ROOT, "status", "--porcelain", "--", "streamdb", "wal"])
    if not dirty:
        return head.strip()
    files = sorted(line[3:] for line in dirty.splitlines())
    return head.strip() + f" + uncommitted changes in {', '.join(files)}"


def package_version(name: str) -> str:
    """The installed version of a distribution, or "unknown"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"
