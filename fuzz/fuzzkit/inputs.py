"""Input files: reading, listing, saving and rebuilding a corpus directory."""

from __future__ import annotations

import argparse
import gzip
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def unpack_files(data: bytes, present: Sequence[bool]) -> list[bytes | None]:
    """The files an input holds after its control byte, one per entry of `present` (None
    where it is False): in order, each but the last prefixed by its length (u32
    little-endian, zero-padded when cut short), the last taking the rest."""
    files: list[bytes | None] = [None] * len(present)
    last = max((i for i, p in enumerate(present) if p), default=-1)
    for i in range(last + 1):
        if not present[i]:
            continue
        if i == last:
            files[i], data = data, b""
        else:
            n = int.from_bytes(data[:4].ljust(4, b"\0"), "little")
            files[i], data = data[4 : 4 + n], data[4 + n :]
    return files


def pack_files(files: Sequence[bytes | None]) -> bytes:
    """The files that are not None, as `unpack_files` reads them."""
    there = [f for f in files if f is not None]
    return b"".join(len(f).to_bytes(4, "little") + f for f in there[:-1]) + (
        there[-1] if there else b"")


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
