"""The coverage-guided mode of every harness: atheris (libFuzzer for Python), when it is
installed (`pip install atheris`; not a dependency of the project).

The code under test (the harness's `code_dirs`: streamdb/, wal/) is instrumented, the
harness's own code is not. libFuzzer starts from a scratch directory holding the corpus
(decompressed) and inputs the harness builds, and writes the new inputs it finds there, so
the committed corpus stays as it is. Its mutations alternate with the harness's own (the
shared mutator and the format's plug-in). An input is a crash when the target raises, that
is on anything but the documented errors, as in the built-in fuzzer; with `keep_going`, the
bug is saved the built-in way (one shrunk input per signature in fuzz/crashes/) and the run
goes on instead.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import sys
import tempfile
import tracemalloc
import types
from pathlib import Path
from typing import Any

from fuzzkit.engine import Harness
from fuzzkit.inputs import load
from fuzzkit.limits import SETTINGS
from fuzzkit.mutate import Mutator

TIME_SCALE = 3.0  # instrumented code is slower: time limits are multiplied by this
HANG_SECONDS = 60  # libFuzzer's -timeout: a run (shrinking a finding included) past it hangs
LIBFUZZER_SHARE = 0.5  # of the mutations, libFuzzer's own


def instrument(atheris: Any, directories: tuple[Path, ...]) -> int:
    """Instrument every function already loaded from `directories`, and the modules of
    their packages imported from now on. Returns how many functions were instrumented."""
    prefixes = tuple(str(d) + os.sep for d in directories)
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__code__.co_filename.startswith(
                prefixes):
            atheris.instrument_func(obj)
            count += 1
    packages = [d.name for d in directories]
    atheris.instrument_imports(include=packages).__enter__()  # for the rest of the process
    return count


def run(h: Harness, args: list[str], *, crash_dir: Path, keep_going: bool = False,
        generated_seeds: int = 40, memory_every: int = 1) -> None:
    """Fuzz `h` under atheris with the libFuzzer arguments `args` (defaults added for
    -timeout, -rss_limit_mb, -max_len, -artifact_prefix and -print_final_stats; a scratch
    corpus directory unless one is given). The memory check runs on every `memory_every`-th
    input (a bug it finds is confirmed, and shrunk, with the check on). Does not return:
    libFuzzer exits."""
    atheris: Any = importlib.import_module("atheris")  # optional: not a project dependency
    count = instrument(atheris, h.code_dirs)
    print(f"instrumented {count} functions under "
          f"{', '.join(str(d) for d in h.code_dirs)}", file=sys.stderr)
    SETTINGS.watchdog = False  # libFuzzer owns SIGALRM (-timeout)
    SETTINGS.time_scale = TIME_SCALE
    rng = random.Random(0)
    seeds = load([h.corpus_dir])
    if h.generate is not None:
        seeds += [h.generate(rng) for _ in range(generated_seeds)]
    pool = seeds or [b""]
    mutator = Mutator(rng, h.fmt, lambda: rng.choice(pool))
    log = h.bug_log(crash_dir, minimize_seconds=min(h.minimize_seconds, HANG_SECONDS / 4))

    executed = 0

    def test_one_input(data: bytes) -> None:
        nonlocal executed
        executed += 1
        failure: Exception | None = None
        try:
            h.run(data, memory_every <= 1 or executed % memory_every == 0)
        except Exception as exc:
            failure = exc
        if failure is None:
            return
        bug = log.record(failure, data)  # outside the handler: reruns chain no context
        if bug is not None:
            print(f"\nBUG {bug.signature}: saved as {bug.path}", file=sys.stderr, flush=True)
        if not keep_going:
            raise failure

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng.seed(seed)
        if rng.random() < LIBFUZZER_SHARE:
            return bytes(atheris.Mutate(data, max_size))
        return mutator.mutate(data)[:max_size]

    options = [a for a in args if a.startswith("-")]
    defaults = {"-timeout=": str(HANG_SECONDS), "-rss_limit_mb=": "8192",
                "-max_len=": str(h.fmt.max_size), "-print_final_stats=": "1",
                "-report_slow_units=": str(HANG_SECONDS),  # InputTimeout catches slow ones
                "-artifact_prefix=": f"{crash_dir}{os.sep}{h.name}-"}
    argv = [sys.argv[0], *args]
    argv += [k + v for k, v in defaults.items() if not any(a.startswith(k) for a in options)]
    crash_dir.mkdir(parents=True, exist_ok=True)
    if len(options) == len(args):  # no corpus directory given
        work = tempfile.mkdtemp(prefix=f"{h.name}-atheris-")
        for i, data in enumerate(seeds):
            Path(work, f"seed-{i:04d}").write_bytes(data)
        print(f"corpus: {len(seeds)} seeds; new inputs go to {work}", file=sys.stderr)
        argv.append(work)
    if h.traces_memory and memory_every <= 1:
        tracemalloc.start()  # once for the run, not per input
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
