"""Bugs: what the harnesses raise, how a bug is named, shrunk, saved and counted."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from fuzzkit.inputs import save_input, slug


class HarnessBug(Exception):
    """A violated harness invariant. `kind` is short and stable: it names the bug."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class InputTimeout(HarnessBug):
    """An input ran past its time limit (the watchdog, or measured afterwards)."""


def input_timeout(message: str) -> BaseException:
    return InputTimeout("slow", message)


def where(exc: BaseException, code_dirs: Sequence[Path], depth: int = 1) -> str:
    """The `depth` innermost functions under `code_dirs` (or anywhere, if none is) that `exc`
    went through, innermost first, as `module.function` joined by " < " (called from). A
    comprehension is named with the function it runs in."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames
              if any(Path(f.filename).resolve().is_relative_to(d) for d in code_dirs)]
    chain = inside or frames
    names = []
    for i in range(len(chain) - 1, max(-1, len(chain) - 1 - depth), -1):
        name = chain[i].name
        if name.startswith("<") and name != "<module>" and i > 0:
            name = f"{chain[i - 1].name}.{name}"
        names.append(f"{Path(chain[i].filename).stem}.{name}")
    return " < ".join(names) or "?"


def signature(exc: BaseException, code_dirs: Sequence[Path], depth: int = 1) -> str:
    """A bug's stable name (no line numbers: stable across edits): a HarnessBug's kind, or
    the exception type and where it was raised (see `where`)."""
    if isinstance(exc, HarnessBug):
        return exc.kind
    return f"{type(exc).__name__} in {where(exc, code_dirs, depth)}"


def format_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@dataclasses.dataclass
class Bug:
    signature: str
    data: bytes
    error: str
    path: Path | None = None


def remove_chunks(data: bytes, fails: Callable[[bytes], bool], deadline: float, *,
                  keep: int = 0, zero: bool = False) -> bytes:
    """Shrink `data` while `fails(candidate)` holds, by removing chunks of halving sizes
    (the first `keep` bytes stay), then, with `zero`, by zeroing them; until `deadline`
    (a `time.monotonic()` value)."""
    best = data
    for zeroing in (False, True) if zero else (False,):
        chunk = max(1, (len(best) - keep) // 2)
        while chunk >= 1 and time.monotonic() < deadline:
            pos, changed = keep, False
            while pos < len(best) and time.monotonic() < deadline:
                piece = best[pos : pos + chunk]
                if zeroing and not any(piece):
                    pos += chunk
                    continue
                candidate = best[:pos] + (bytes(len(piece)) if zeroing else b"") + \
                    best[pos + chunk :]
                if fails(candidate):
                    best, changed = candidate, True
                    if zeroing:
                        pos += chunk
                else:
                    pos += chunk
            if not changed:
                chunk //= 2
    return best


def shrink(data: bytes, fails: Callable[[bytes], bool], seconds: float, *, keep: int = 0,
           zero: bool = False, first: Callable[[bytes], Sequence[bytes]] | None = None
           ) -> bytes:
    """The smallest input found in `seconds` that still `fails`: the format's own cuts
    (`first(data)`, e.g. whole messages) while one of them fails, then `remove_chunks`."""
    deadline = time.monotonic() + seconds
    best = data
    shrunk = first is not None
    while shrunk and first is not None and time.monotonic() < deadline:
        shrunk = False
        for candidate in first(best):
            if len(candidate) < len(best) and fails(candidate):
                best, shrunk = candidate, True
                break
    return remove_chunks(best, fails, deadline, keep=keep, zero=zero)


@dataclasses.dataclass
class CrashDir:
    """Where one harness saves its bugs: `<prefix>-<signature>-<sha1>.bin[.gz]` and a `.txt`
    beside it (signature, input, how to reproduce, traceback)."""

    path: Path
    prefix: str
    script: str  # the harness, as in a reproduce line: "fuzz/fuzz_x.py [options]"
    describe: Callable[[bytes], str]
    gzip_above: int = 64 << 10

    def known(self) -> set[str]:
        """The signatures saved already (the first line of each `.txt`)."""
        found = set()
        for txt in self.path.glob(f"{self.prefix}-*.txt"):
            first = txt.read_text(errors="replace").split("\n", 1)[0]
            if first.startswith("signature: "):
                found.add(first.removeprefix("signature: "))
        return found

    def save(self, bug: Bug) -> Path:
        stem = f"{self.prefix}-{slug(bug.signature)}-{hashlib.sha1(bug.data).hexdigest()[:12]}"
        path = save_input(self.path, stem, bug.data, gzip_above=self.gzip_above)
        (self.path / f"{stem}.txt").write_text(
            f"signature: {bug.signature}\ninput: {len(bug.data)} bytes: "
            f"{self.describe(bug.data)}\nreproduce: python {self.script} "
            f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
            f"\n\n{bug.error}")
        return path


@dataclasses.dataclass
class BugLog:
    """Bugs by signature: every hit is counted, the first input of a signature not seen (nor
    saved in `crashes`) is kept and, with `crashes`, shrunk and saved there."""

    signature: Callable[[BaseException], str]
    rerun: Callable[[bytes], BaseException | None]  # the exception an input raises, if any
    crashes: CrashDir | None = None
    minimize_seconds: float = 10.0
    keep: int = 0
    zero: bool = False
    first: Callable[[bytes], Sequence[bytes]] | None = None
    hits: dict[str, int] = dataclasses.field(default_factory=dict)
    bugs: list[Bug] = dataclasses.field(default_factory=list)
    _known: set[str] | None = None

    def record(self, exc: BaseException, data: bytes) -> Bug | None:
        """Count `exc`, raised by `data`; returns the Bug if its signature is new."""
        sig = self.signature(exc)
        self.hits[sig] = self.hits.get(sig, 0) + 1
        if self._known is None:
            self._known = self.crashes.known() if self.crashes is not None else set()
        if sig in self._known:
            return None
        self._known.add(sig)
        bug = Bug(sig, data, format_error(exc))
        if self.crashes is not None:
            small = shrink(data, self._fails_as(sig), self.minimize_seconds, keep=self.keep,
                           zero=self.zero, first=self.first)
            if small != data:
                again = self.rerun(small)
                bug.data = small
                bug.error = (format_error(again) if again is not None else "?") + \
                    f"\n(minimized from {len(data)} bytes)"
            bug.path = self.crashes.save(bug)
        self.bugs.append(bug)
        return bug

    def _fails_as(self, sig: str) -> Callable[[bytes], bool]:
        def fails(candidate: bytes) -> bool:
            exc = self.rerun(candidate)
            return exc is not None and self.signature(exc) == sig
        return fails
