"""Input files: reading, listing, saving and rebuilding a corpus directory."""

from __future__ import annotations

import argparse
import gzip
import random
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol


def read_input(path: Path) -> bytes:
    """An input file: raw, or gzip-compressed when named *.gz (large reproducers)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def input_files(directory: Path) -> list[Path]:
    """The inputs (`*.bin`, `*.bin.gz`) of a directory, sorted; none if it does not exist."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith((".bin", ".bin.gz")))


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as they are, directories as their inputs."""
    return [p for arg in paths for p in (input_files(arg) if arg.is_dir() else [arg])]


def load(directories: Iterable[Path]) -> list[bytes]:
    return [read_input(p) for d in directories for p in input_files(d)]


def save_input(directory: Path, stem: str, data: bytes, *, gzip_above: int = 64 << 10) -> Path:
    """Write an input as `stem.bin`, or gzipped as `stem.bin.gz` when over `gzip_above`."""
    directory.mkdir(parents=True, exist_ok=True)
    if len(data) > gzip_above:
        path = directory / f"{stem}.bin.gz"
        path.write_bytes(gzip.compress(data, 9, mtime=0))
    else:
        path = directory / f"{stem}.bin"
        path.write_bytes(data)
    return path


def slug(text: str) -> str:
    """A file-name-safe form of a bug signature."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80]


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


def corpus_main(doc: str | None, build: Callable[[random.Random], Mapping[str, Encodable]], *,
                seed: int, out: Path, run_one: Callable[[bytes], object],
                signature: Callable[[BaseException], str], width: int = 40) -> int:
    """The command line of a corpus builder: `--out DIR` (default `out`), `--check` (print
    each file's outcome); writes `build(random.Random(seed))` with `write_corpus`."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--check", action="store_true", help="print each file's outcome")
    args = parser.parse_args()
    return write_corpus(args.out, build(random.Random(seed)), check=args.check,
                        run_one=run_one, signature=signature, width=width)
