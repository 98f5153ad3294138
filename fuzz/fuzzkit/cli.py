"""The command line every harness shares:

    python fuzz/fuzz_X.py --seconds 60 [--seed S] [options]     the built-in fuzzer
    python fuzz/fuzz_X.py FILE_OR_DIR...                        replay inputs, print outcomes
    python fuzz/fuzz_X.py --atheris [--keep-going] [-- ARGS]    coverage-guided (atheris);
                                                                ARGS go to libFuzzer
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fuzzkit import engine, libfuzzer
from fuzzkit.bugs import format_error
from fuzzkit.inputs import expand, read_input

CRASH_DIR = Path(__file__).resolve().parents[1] / "crashes"


@dataclasses.dataclass(frozen=True)
class Defaults:
    """A harness's defaults for the built-in fuzzer's knobs."""

    coverage: bool = False
    memory_every: int = 1
    atheris_memory_every: int = 4  # tracemalloc costs more under instrumentation
    generated_seeds: int = 40
    strict_option: bool = False  # the harness has round-trip checks --no-strict turns off


def main(make: Callable[[bool], engine.Harness], doc: str | None,
         argv: Sequence[str] | None = None, defaults: Defaults = Defaults()) -> int:
    """The harness command line. `make(strict)` builds the harness."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help="replay these files or folders")
    parser.add_argument("--seconds", type=float, help="fuzz for this long")
    parser.add_argument("--max-inputs", type=int, help="stop after this many inputs")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument("--corpus", type=Path, action="append",
                        help="seed directories (default: the harness's corpus)")
    parser.add_argument("--crashes", "--crash-dir", type=Path, default=CRASH_DIR,
                        help="where bugs are saved (default: fuzz/crashes/)")
    parser.add_argument("--no-save", action="store_true", help="do not write --crashes")
    parser.add_argument("--coverage", action=argparse.BooleanOptionalAction,
                        default=defaults.coverage,
                        help="keep inputs reaching new line edges in the code under test")
    parser.add_argument("--memory-every", type=int, default=None,
                        help="the memory check on every Nth input (default: "
                        f"{defaults.memory_every}, with --atheris {defaults.atheris_memory_every})")
    parser.add_argument("--generated-seeds", type=int, default=defaults.generated_seeds,
                        help="inputs built at start-up to seed the pool")
    if defaults.strict_option:
        parser.add_argument("--no-strict", action="store_true",
                            help="skip the round-trip checks")
    parser.add_argument("--address-space-mb", type=int, default=8192,
                        help="RLIMIT_AS of the built-in fuzzer's process (0: leave as is)")
    parser.add_argument("--atheris", action="store_true",
                        help="coverage-guided with atheris; arguments after -- go to libFuzzer")
    parser.add_argument("--keep-going", action="store_true",
                        help="with --atheris: save each bug and go on instead of stopping")
    extra: list[str] = []
    if "--" in args_in:
        at = args_in.index("--")
        args_in, extra = args_in[:at], args_in[at + 1 :]
    args = parser.parse_args(args_in)
    h = make(not getattr(args, "no_strict", False))
    if args.atheris:
        libfuzzer.run(h, extra, crash_dir=args.crashes, keep_going=args.keep_going,
                      generated_seeds=args.generated_seeds,
                      memory_every=args.memory_every or defaults.atheris_memory_every)
        return 0
    if extra:
        parser.error("arguments after -- go to libFuzzer: give --atheris")
    if args.inputs:
        return replay(h, expand(args.inputs))
    if args.seconds is None and args.max_inputs is None:
        parser.error("give --seconds N (or --max-inputs N), input files to replay, "
                     "or --atheris")
    if args.address_space_mb:
        limit_address_space(args.address_space_mb)
    seed = args.seed if args.seed is not None else time.time_ns() % (1 << 32)
    print(f"seed {seed}", flush=True)
    stats = engine.fuzz(h, seed=seed, seconds=args.seconds, max_inputs=args.max_inputs,
                        corpus_dirs=args.corpus, generated_seeds=args.generated_seeds,
                        crash_dir=None if args.no_save else args.crashes,
                        coverage=args.coverage,
                        memory_every=args.memory_every or defaults.memory_every,
                        progress=print_progress)
    report(stats)
    return 1 if stats.bugs else 0


def limit_address_space(megabytes: int) -> None:
    """Lower RLIMIT_AS to `megabytes` (POSIX): a runaway allocation fails as MemoryError, a
    bug the fuzzer reports, instead of taking the machine's memory."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    limit = megabytes << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def replay(h: engine.Harness, paths: list[Path]) -> int:
    failed = 0
    for path in paths:
        try:
            outcome = h.run(read_input(path), True)
        except Exception as exc:
            failed += 1
            print(f"{path}: BUG {h.signature(exc)}\n{format_error(exc)}")
        else:
            print(f"{path}: {outcome}")
    return 1 if failed else 0


def print_progress(stats: engine.FuzzStats) -> None:
    rate = stats.executed / stats.seconds if stats.seconds else 0.0
    edges = f"edges {stats.edges}" if stats.edges else "line coverage off (--coverage)"
    print(f"[{stats.seconds:6.0f}s] {stats.executed} inputs ({rate:.0f}/s), pool {stats.pool}, "
          f"{edges}, bugs {len(stats.bugs)}", flush=True)


def report(stats: engine.FuzzStats) -> None:
    print_progress(stats)
    print("outcomes:")
    for label, count in sorted(stats.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:8d}  {label}")
    if stats.modes:
        print("inputs by mode (ended without error):")
        for mode, count in sorted(stats.modes.items(), key=lambda kv: -kv[1]):
            print(f"  {count:8d}  {mode} ({stats.modes_ok.get(mode, 0)})")
    if stats.hits:
        print("bug signatures (inputs hitting each):")
        for sig, count in sorted(stats.hits.items(), key=lambda kv: -kv[1]):
            print(f"  {count:8d}  {sig}")
    for bug in stats.bugs:
        print(f"NEW BUG {bug.signature}: {bug.path or '(not saved)'}")
