"""The built-in mutation fuzzer that every harness runs, and what it needs of a harness."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from fuzzkit.bugs import BugLog, CrashDir, HarnessBug, signature
from fuzzkit.inputs import load
from fuzzkit.limits import LineCoverage, tracing_memory
from fuzzkit.mutate import Format, Mutator


def _no_mode(outcome: Any) -> str | None:
    return None


@dataclasses.dataclass
class Harness:
    """What the shared machinery needs of one harness. `run(data, memory)` is the target:
    it returns the outcome of an accepted run and raises on a bug (with `memory`, it also
    checks traced memory)."""

    name: str  # the prefix of its crash files
    script: str  # how a reproduce line runs it: "fuzz/fuzz_x.py [options]"
    corpus_dir: Path
    code_dirs: tuple[Path, ...]  # the code under test: signatures, coverage, instrumentation
    run: Callable[[bytes, bool], Any]
    fmt: Format  # its mutation plug-in
    generate: Callable[[random.Random], bytes] | None = None  # a fresh, plausible input
    describe: Callable[[bytes], str] = lambda data: "raw"
    label: Callable[[Any], str] = str  # how outcomes are counted
    features: Callable[[Any], Hashable] | None = None  # the pool keeps new ones (else label)
    mode: Callable[[Any], str | None] = _no_mode  # inputs are also counted by this
    check_generated: Callable[[Any], None] | None = None  # raises if a built input failed
    depth: int = 1  # functions a signature names
    keep: int = 0  # leading bytes a shrink keeps (a control byte)
    shrink_zero: bool = False  # shrinking also zeroes chunks
    shrink_first: Callable[[bytes], Sequence[bytes]] | None = None  # the format's own cuts
    minimize_seconds: float = 10.0
    time_limit: float = 2.0  # seconds per input (atheris's -timeout is derived from it)
    gzip_above: int = 64 << 10  # saved inputs larger than this are gzipped
    pool_limit: int = 4096
    pool_input_limit: int | None = None  # larger inputs do not join the pool
    fresh_rate: float = 0.02  # of the inputs after the seeds, newly built ones
    traces_memory: bool = True  # run() checks traced memory (tracemalloc is kept on)

    def signature(self, exc: BaseException) -> str:
        return signature(exc, self.code_dirs, self.depth)

    def failure(self, data: bytes) -> BaseException | None:
        """The exception `data` raises (a bug), or None."""
        try:
            self.run(data, True)
        except Exception as exc:
            return exc
        return None

    def bug_log(self, crash_dir: Path | None, minimize_seconds: float | None = None) -> BugLog:
        crashes = None if crash_dir is None else CrashDir(
            crash_dir, self.name, self.script, self.describe, self.gzip_above)
        return BugLog(self.signature, self.failure, crashes,
                      self.minimize_seconds if minimize_seconds is None else minimize_seconds,
                      self.keep, self.shrink_zero, self.shrink_first)


@dataclasses.dataclass
class FuzzStats:
    executed: int = 0
    seconds: float = 0.0
    pool: int = 0
    edges: int = 0  # line-coverage edges, with coverage on
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    # Inputs by how they were opened (the harness's mode, if it has modes), and of those
    # the ones that ended without error.
    modes: dict[str, int] = dataclasses.field(default_factory=dict)
    modes_ok: dict[str, int] = dataclasses.field(default_factory=dict)
    bugs: list[Any] = dataclasses.field(default_factory=list)  # fuzzkit.Bug
    hits: dict[str, int] = dataclasses.field(default_factory=dict)  # signature -> inputs

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


def fuzz(h: Harness, *, seed: int, seconds: float | None = None,
         max_inputs: int | None = None, corpus_dirs: Sequence[Path] | None = None,
         generated_seeds: int = 20, crash_dir: Path | None = None,
         coverage: bool = False, memory_every: int = 1, minimize_seconds: float | None = None,
         progress: Callable[[FuzzStats], None] | None = None) -> FuzzStats:
    """Run `h` on every seed once (the corpus, then `generated_seeds` inputs it builds, each
    of which must pass `h.check_generated`), then on mutations of the pool, and now and then
    (`h.fresh_rate`) on a newly built input. Stops after `seconds` or `max_inputs` (whichever
    comes first); deterministic for a seed and `max_inputs`.

    The pool keeps inputs with new outcome features and, with `coverage`, new line edges in
    `h.code_dirs` (`LineCoverage`: traced runs skip the memory check, which an untraced rerun
    of a failing or kept input makes; the untraced verdict counts). The memory check runs on
    every `memory_every`-th input. Bugs are counted by signature; the first input of each
    is kept and, with `crash_dir`, shrunk and saved there."""
    if seconds is None and max_inputs is None:
        raise ValueError("give seconds or max_inputs")
    rng = random.Random(seed)
    stats = FuzzStats()
    log = h.bug_log(crash_dir, minimize_seconds)
    stats.bugs, stats.hits = log.bugs, log.hits
    corpus = load([h.corpus_dir] if corpus_dirs is None else corpus_dirs)
    built = [h.generate(rng) for _ in range(generated_seeds)] if h.generate else []
    pool = [*corpus, *built] or [b""]
    queue = [(d, False) for d in corpus] + [(d, True) for d in built]
    queue.reverse()  # popped from the end
    mutator = Mutator(rng, h.fmt, lambda: rng.choice(pool))
    features = h.features or h.label
    seen: set[Hashable] = set()
    cov = LineCoverage(h.code_dirs) if coverage else None
    started = last = time.monotonic()
    # tracemalloc on for the whole run rather than started for each input, where it can be
    with tracing_memory(h.traces_memory and cov is None and memory_every <= 1):
        while max_inputs is None or stats.executed < max_inputs:
            now = time.monotonic()
            if seconds is not None and now - started >= seconds:
                break
            if progress is not None and now - last >= 10:
                stats.seconds, stats.pool, last = now - started, len(pool), now
                stats.edges = len(cov.edges) if cov is not None else 0
                progress(stats)
            if queue:
                data, built_here = queue.pop()
            elif h.generate is not None and rng.random() < h.fresh_rate:
                data, built_here = h.generate(rng), True
            else:
                data, built_here = mutator.mutate(rng.choice(pool)), False
            stats.executed += 1
            memory = memory_every <= 1 or stats.executed % memory_every == 0
            outcome, new = _attempt(h, data, cov, memory, seen, features)
            if isinstance(outcome, BaseException):
                log.record(outcome, data)
                stats.count(stats.outcomes, f"BUG {h.signature(outcome)}")
                continue
            if built_here and h.check_generated is not None:
                try:
                    h.check_generated(outcome)
                except HarnessBug as exc:
                    log.record(exc, data)
                    continue
            stats.count(stats.outcomes, h.label(outcome))
            mode = h.mode(outcome)
            if mode is not None:
                stats.count(stats.modes, mode)
                if h.label(outcome) == "ok":
                    stats.count(stats.modes_ok, mode)
            if new and (h.pool_input_limit is None or len(data) <= h.pool_input_limit):
                if len(pool) < h.pool_limit:
                    pool.append(data)
                else:
                    pool[rng.randrange(len(corpus) + len(built), len(pool))] = data
    stats.seconds, stats.pool = time.monotonic() - started, len(pool)
    stats.edges = len(cov.edges) if cov is not None else 0
    return stats


def _attempt(h: Harness, data: bytes, cov: LineCoverage | None, memory: bool,
             seen: set[Hashable], features: Callable[[Any], Hashable]
             ) -> tuple[Any, bool]:
    """(outcome or the bug's exception, whether the input is new to the pool)."""
    new_edges, checked = 0, cov is None
    if cov is not None:
        with cov.tracing():
            try:
                outcome = h.run(data, False)
            except Exception:
                outcome = None
        new_edges = cov.commit()
        if outcome is None:  # confirm untraced (tracing makes runs several times slower)
            try:
                outcome = h.run(data, True)
            except Exception as exc:
                return exc, False
            checked = True
    else:
        try:
            outcome = h.run(data, memory)
        except Exception as exc:
            return exc, False
    key = features(outcome)
    new = new_edges > 0 or key not in seen
    seen.add(key)
    if not checked and (new or memory):  # the memory check, untraced
        failure = h.failure(data)
        if failure is not None:
            return failure, False
    return outcome, new
