"""Time and memory bounds of one input, and line coverage for the built-in fuzzer."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from fuzzkit.bugs import HarnessBug, input_timeout, where

T = TypeVar("T")


@dataclasses.dataclass
class Settings:
    """Process-wide: `watchdog` off where another owner has SIGALRM (libFuzzer's -timeout
    under atheris); `time_scale` multiplies every time limit (instrumented code is slower)."""

    watchdog: bool = True
    time_scale: float = 1.0


SETTINGS = Settings()


@contextlib.contextmanager
def watchdog(seconds: float, error: Callable[[str], BaseException] = input_timeout
             ) -> Iterator[None]:
    """Raise `error(message)` in the main thread after `seconds` (SIGALRM): catches real
    hangs, which a timer measured afterwards never sees. A no-op when SETTINGS.watchdog is
    off."""
    if not SETTINGS.watchdog:
        yield
        return
    seconds *= SETTINGS.time_scale

    def fire(signum: int, frame: FrameType | None) -> None:
        raise error(f"still running after {seconds:.1f}s (watchdog)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def tracing_memory(on: bool) -> Iterator[None]:
    """tracemalloc on for the duration (when `on` and not on already)."""
    started = on and not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def bounded(run: Callable[[], T], *, size: int, time_limit: float,
            memory_limit: int | None = None, hang_after: float | None = None) -> T:
    """`run()` within `time_limit` seconds (measured) and, with `memory_limit`, a peak of
    traced memory within it (tracemalloc, started if it is off); an `InputTimeout` or a
    HarnessBug "memory" otherwise. With `hang_after`, a hang is interrupted then (the
    watchdog: main thread only)."""
    with tracing_memory(memory_limit is not None):
        if memory_limit is not None:
            tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0] if memory_limit is not None else 0
        start = time.perf_counter()
        guard = watchdog(hang_after) if hang_after is not None else contextlib.nullcontext()
        with guard:
            result = run()
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - base if memory_limit is not None else 0
    if elapsed > time_limit * SETTINGS.time_scale:
        raise input_timeout(f"{elapsed:.2f}s for a {size}-byte input ({result})")
    if memory_limit is not None and peak > memory_limit:
        raise HarnessBug("memory", f"peak {peak >> 20} MiB traced for a {size}-byte input "
                         f"({result})")
    return result


@contextlib.contextmanager
def step(name: str, budget: int, code_dirs: tuple[Path, ...],
         passes: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """One step of a target: an exception that is neither a HarnessBug nor one of `passes`
    becomes a HarnessBug named after its type, where it was raised and the step (the part of
    `name` before ": "); the step's traced peak must stay within `budget` bytes (when
    tracemalloc is on), whether it ends normally or with one of `passes`."""

    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
    short = name.split(": ")[0]
    buggy = False
    try:
        yield
    except HarnessBug:
        buggy = True
        raise
    except passes:
        raise
    except Exception as exc:
        buggy = True
        raise HarnessBug(f"{type(exc).__name__} in {where(exc, code_dirs)} ({short})",
                         f"{name}: {exc!r}") from exc
    finally:
        if tracing and not buggy:  # a refusal (one of `passes`) is bounded too
            peak = tracemalloc.get_traced_memory()[1] - before
            if peak > budget:
                raise HarnessBug(f"memory: {short}", f"{name}: traced peak {peak:,} bytes, "
                                 f"above the budget of {budget:,}")


class LineCoverage:
    """AFL-style line-to-line edges executed in the files under `directories`
    (sys.settrace, those frames only). Several times slower than an untraced run."""

    def __init__(self, directories: tuple[Path, ...]) -> None:
        self.edges: set[int] = set()
        self._hits: set[int] = set()
        self._prefixes = tuple(str(d) + os.sep for d in directories)
        self._prev = 0

    def _global(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if frame.f_code.co_filename.startswith(self._prefixes):
            return self._local
        return None

    def _local(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if event == "line":
            here = (id(frame.f_code) << 14) + frame.f_lineno
            self._hits.add(here ^ self._prev)
            self._prev = here >> 1
        return self._local

    @contextlib.contextmanager
    def tracing(self) -> Iterator[None]:
        self._hits, self._prev = set(), 0
        previous = sys.gettrace()
        sys.settrace(self._global)
        try:
            yield
        finally:
            sys.settrace(previous)

    def commit(self) -> int:
        """Merge what the last traced run found; returns how many edges were new."""
        new = self._hits - self.edges
        self.edges |= new
        self._hits = set()
        return len(new)
