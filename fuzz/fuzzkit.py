"""What the fuzz harnesses in fuzz/ share: input files, bug records, run statistics and a
watchdog against hangs."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Protocol


@dataclasses.dataclass
class Bug:
    signature: str
    data: bytes
    error: str
    path: Path | None = None


@dataclasses.dataclass
class FuzzStats:
    executed: int = 0
    seconds: float = 0.0
    pool: int = 0
    edges: int = 0  # line-coverage edges, where the harness traces them
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    # Inputs by how they were opened (the harness's mode, if it has modes), and of those
    # the ones that ended without error.
    modes: dict[str, int] = dataclasses.field(default_factory=dict)
    modes_ok: dict[str, int] = dataclasses.field(default_factory=dict)
    bugs: list[Bug] = dataclasses.field(default_factory=list)
    hits: dict[str, int] = dataclasses.field(default_factory=dict)  # signature -> inputs


def read_input(path: Path) -> bytes:
    """An input file: raw, or gzip-compressed when named *.gz (large reproducers)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def input_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith((".bin", ".bin.gz")))


def slug(text: str) -> str:
    """A file-name-safe form of a bug signature."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80]


@contextlib.contextmanager
def watchdog(seconds: float, error: Callable[[str], BaseException]) -> Iterator[None]:
    """Raise `error(message)` in the main thread after `seconds` (SIGALRM): catches real
    hangs, which a timer measured afterwards never sees."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise error(f"still running after {seconds:.1f}s (watchdog)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Encodable(Protocol):
    def encode(self) -> bytes: ...


def write_corpus(out: Path, corpus: Mapping[str, Encodable], *, check: bool,
                 run_one: Callable[[bytes], object], signature: Callable[[BaseException], str],
                 width: int = 40) -> int:
    """Replace the `*.bin` files of `out` with `corpus` (name -> case), keeping fuzzer
    findings saved by hand as `found-*.bin`; with `check`, print each file's outcome under
    `run_one`. Returns 0 (a main()'s exit status)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bin"):
        if not old.name.startswith("found-"):
            old.unlink()
    total = 0
    for name, case in sorted(corpus.items()):
        data = case.encode()
        (out / f"{name}.bin").write_bytes(data)
        total += len(data)
        if check:
            try:
                outcome: object = run_one(data)
            except Exception as exc:  # the corpus shows bugs rather than stopping on one
                outcome = f"BUG {signature(exc)}"
            print(f"{name:{width}s} {len(data):7d}  {outcome}")
    print(f"{len(corpus)} files, {total} bytes in {out}")
    return 0


def remove_chunks(data: bytes, fails: Callable[[bytes], bool], deadline: float, *,
                  keep: int = 0) -> bytes:
    """Shrink `data` while `fails(candidate)` holds, by removing chunks of halving sizes
    (the first `keep` bytes stay), until `deadline` (a `time.monotonic()` value)."""
    best = data
    chunk = max(1, (len(best) - keep) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        pos, changed = keep, False
        while pos < len(best) and time.monotonic() < deadline:
            candidate = best[:pos] + best[pos + chunk :]
            if fails(candidate):
                best, changed = candidate, True
            else:
                pos += chunk
        if not changed:
            chunk //= 2
    return best


# -- what the byte-level harnesses (framing, Arrow) share ------------------------------------


class HarnessBug(Exception):
    """A violated harness invariant. `kind` is short and stable (it names the bug)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class InputTimeout(HarnessBug):
    pass


def input_timeout(message: str) -> BaseException:
    return InputTimeout("timeout", message)


def where(exc: BaseException, lib_dir: Path) -> str:
    """The innermost function under `lib_dir` (or anywhere) that `exc` went through; a
    comprehension is named with the function it runs in."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve().is_relative_to(lib_dir)]
    chain = inside or frames
    if not chain:
        return "?"
    at = chain[-1]
    name = at.name
    if name.startswith("<") and len(chain) > 1:
        name = f"{chain[-2].name}.{name}"
    return f"{Path(at.filename).stem}.{name}"


def signature(exc: BaseException, lib_dir: Path) -> str:
    """A bug's stable name: its kind, or the exception type and where it was raised."""
    if isinstance(exc, HarnessBug):
        return exc.kind
    return f"{type(exc).__name__} in {where(exc, lib_dir)}"


class LineCoverage:
    """AFL-style line-to-line edges executed in the files under `directory` (sys.settrace,
    those frames only). Several times slower than an untraced run."""

    def __init__(self, directory: Path) -> None:
        self.edges: set[int] = set()
        self._hits: set[int] = set()
        self._prefix = str(directory) + os.sep
        self._prev = 0

    def _global(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if frame.f_code.co_filename.startswith(self._prefix):
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
