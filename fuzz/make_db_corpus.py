#!/usr/bin/env python3
"""Writes fuzz/corpus/db/: the seed corpus of fuzz/fuzz_db_open.py. Deterministic.

    python fuzz/make_db_corpus.py [--out DIR]

Valid images (databases closed cleanly, with or without their log; power-loss images; a
database with enough paths for internal tree pages) and damaged ones (empty, zeros,
foreign, a torn magic, a newer format version, one or both header copies damaged,
truncations, swapped and stale tree pages, a checksum-repaired bad tree reference, a log
with a flipped payload). Files over 16 KiB are gzipped (`.bin.gz`); document bytes are
repetitive so that they compress. Inputs that expose a known bug are not included: they
live in fuzz/crashes/ until the bug is fixed, then join the corpus.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_db_open as h
import fuzzkit

PAGE = h.PAGE


def _valid() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(10):
        out[f"closed-{i:02d}"] = h.build_database(random.Random(100 + i), with_log=i % 2 == 0)
    for i, keep in enumerate(("none", "all", "random", "all", "random", "none")):
        out[f"power-loss-{keep}-{i}"] = h.build_database(random.Random(200 + i), crash=keep)
    out["many-paths"] = h.build_database(random.Random(300), many=True, with_log=False)
    out["many-paths-power-loss"] = h.build_database(random.Random(301), many=True, crash="all")
    return out


def _damage(db: bytes, change: Callable[[bytearray], None], *, log: bytes | None = None) -> bytes:
    buf = bytearray(db)
    change(buf)
    return h.FuzzCase(bytes(buf), log).encode()


def _set(at: int, value: bytes, repair: int | None = None) -> Callable[[bytearray], None]:
    def change(buf: bytearray) -> None:
        buf[at : at + len(value)] = value
        if repair is not None:
            h.repair_header(buf, repair)
    return change


def _damaged(valid: dict[str, bytes]) -> dict[str, bytes]:
    base = h.FuzzCase.decode(valid["closed-00"])
    many = h.FuzzCase.decode(valid["many-paths"])
    crashed = h.FuzzCase.decode(valid["power-loss-all-1"])
    db = base.db
    pages = h.tree_pages(db)

    def swap(buf: bytearray) -> None:
        a, b = pages[0], pages[-1]
        buf[a : a + PAGE], buf[b : b + PAGE] = buf[b : b + PAGE], buf[a : a + PAGE]

    def both(buf: bytearray) -> None:
        buf[100] ^= 0xFF
        buf[PAGE + 100] ^= 0xFF

    def stale(buf: bytearray) -> None:  # a tree page of another database at the same place
        other = many.db
        at = h.tree_pages(buf)[0]
        buf[at : at + PAGE] = other[at : at + PAGE].ljust(PAGE, b"\0")

    log = bytearray(crashed.wal or b"")
    records = h.log_records(log)
    if records:
        at, length = records[len(records) // 2]
        log[at + 40 + length // 2] ^= 0x10
    log_flipped = bytes(log)
    h.repair_log(log)
    return {
        "empty": b"",
        "zeros-8k": h.FuzzCase(bytes(2 * PAGE)).encode(),
        "foreign": h.FuzzCase(b"SQLite format 3\0".ljust(2 * PAGE, b"\0")).encode(),
        "torn-magic": h.FuzzCase(b"\x89SDB").encode(),
        "newer-version": _damage(db, _set(8, (2).to_bytes(2, "little"), repair=0)),
        "header-a-damaged": _damage(db, _set(100, bytes([db[100] ^ 0xFF]))),
        "both-headers-damaged": _damage(db, both),
        "truncated-to-headers": h.FuzzCase(db[: 2 * PAGE]).encode(),
        "truncated-mid-page": h.FuzzCase(db[: len(db) - 1000]).encode(),
        "tree-pages-swapped": _damage(db, swap),
        "stale-tree-page": _damage(db, stale),
        "tree-ref-height-0": _damage(db, _set(64 + 20, b"\0", repair=0)),
        "tree-ref-version-9": _damage(db, _set(64 + 21, b"\x09", repair=0)),
        "log-payload-flipped": h.FuzzCase(crashed.db, log_flipped, crashed.wal1).encode(),
        "log-payload-flipped-crc-repaired": h.FuzzCase(crashed.db, bytes(log),
                                                       crashed.wal1).encode(),
        "log-foreign": h.FuzzCase(db, b"not a log".ljust(100, b"\0")).encode(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=h.CORPUS_DIR)
    args = parser.parse_args()
    valid = _valid()
    inputs = valid | _damaged(valid)
    if args.out.exists():
        shutil.rmtree(args.out)
    for name, data in sorted(inputs.items()):
        h.save_input(args.out, name, data)
    files = fuzzkit.input_files(args.out)
    total = sum(p.stat().st_size for p in files)
    print(f"{len(files)} inputs, {total} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
