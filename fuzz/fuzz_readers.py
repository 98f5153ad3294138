#!/usr/bin/env python3
"""Fuzzer for the reader table file (`NAME-readers`): hostile bytes must be used, repaired or
refused with a documented error, never crash, hang or hand out a wrong stamp.

    python fuzz/fuzz_readers.py --seconds 60        # mutate generated tables
    python fuzz/fuzz_readers.py FILE_OR_DIR...      # replay inputs
    python fuzz/fuzz_readers.py --atheris [-- ARGS] # coverage-guided (atheris)

Target: the input becomes the table file; then a `FileReaderTable` opens it, claims a slot,
publishes, lists the live stamps (which reclaims dead slots), runs `_check()`, and closes.
Accepted: success, UnsupportedError (another format version or slot size) and
CorruptionError (a damaged header while a slot lock is held, which cannot happen here as no
other process holds one). Anything else is a bug, and so is a published stamp that `live()`
does not report, a table `_check()` rejects after the open repaired or accepted it, a refused
table that was modified, or an input running past `TIME_LIMIT` seconds (watchdog). Bugs are
saved to fuzz/crashes/ (`readers-<signature>-<sha1>.bin`, shrunk, with a `.txt`); inputs
that found one are replayed from fuzz/corpus/readers/ (`found-*.bin`).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from fuzzkit import HarnessBug, Part  # noqa: E402
from fuzzkit.cli import Defaults  # noqa: E402

import streamdb  # noqa: E402
from streamdb.errors import CorruptionError, UnsupportedError  # noqa: E402
from streamdb.storage import readers  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus" / "readers"
CODE_DIRS = (Path(streamdb.__file__).resolve().parent,)
DB_ID = bytes(range(1, 17))
ACCEPTED = (UnsupportedError, CorruptionError)
TIME_LIMIT = 2.0


def generated(rng: random.Random) -> bytes:
    """A plausible table: the header and a few slots, some in use by (dead) owners."""
    out = bytearray(readers.pack_header())
    for _ in range(rng.randint(0, 70)):
        if rng.random() < 0.3:
            out += bytes(readers.SLOT_SIZE)
            continue
        stamp = (rng.randrange(1 << 20), rng.randrange(1 << 40))
        db_id = DB_ID if rng.random() < 0.5 else rng.randbytes(16)
        out += readers.pack_slot(readers.SlotRecord(rng.randrange(1 << 31), readers.IN_USE,
                                                    db_id, stamp, time.time()))
    return bytes(out)


def slot_points(data: bytes | bytearray) -> list[int]:
    """The header's end and every slot boundary."""
    return list(range(readers.HEADER_SIZE, len(data) + 1, readers.SLOT_SIZE))


def append_zeros(m: fuzzkit.Mutator, buf: bytearray) -> bytearray:
    """Free space at the end: whole slots or a partial one."""
    return buf + bytes(m.rng.choice([readers.SLOT_SIZE, m.rng.randint(1, 300)]))


class TableFormat(fuzzkit.Format):
    """The table is one part; positions favour slot boundaries."""

    rounds = (1, 2, 3, 4, 5, 6)
    max_size = 64 << 10

    def part(self, m: fuzzkit.Mutator, data: bytes) -> Part:
        return Part(data, ops=[(1.5, append_zeros)], points=slot_points)


def run_one(data: bytes) -> str:
    """The target. Returns the outcome's name; raises on a bug."""
    with fuzzkit.watchdog(TIME_LIMIT), tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.db-readers")
        with open(path, "wb") as f:
            f.write(data)
        try:
            table = readers.FileReaderTable(path)
        except ACCEPTED as exc:
            with open(path, "rb") as f:
                if f.read() != data:
                    raise HarnessBug("refused-table-modified", f"{exc!r}") from exc
            return type(exc).__name__
        try:
            before = table.live(DB_ID)  # reclaims what dead owners left, garbled or not
            table._check()
            slot = table.claim()
            slot.publish(DB_ID, (7, 42))
            stamps = table.live(DB_ID)
            if (7, 42) not in stamps or table.oldest(DB_ID) != min(stamps):
                raise HarnessBug("published-stamp-missing", f"{stamps}")
            if any(s not in stamps for s in before if s != (0, 0)):
                raise HarnessBug("claim-changed-stamps", f"{before} then {stamps}")
            table._check()
            slot.release()
            if table.live(DB_ID):
                raise HarnessBug("dead-stamps-survive", "stamps of dead owners survive a scan")
        finally:
            table.close()
    return "ok"


HARNESS = fuzzkit.Harness(
    name="readers", script="fuzz/fuzz_readers.py", corpus_dir=CORPUS_DIR, code_dirs=CODE_DIRS,
    run=lambda data, memory: run_one(data), fmt=TableFormat(), generate=generated,
    describe=lambda data: f"{max(0, len(data) - readers.HEADER_SIZE) / readers.SLOT_SIZE:g} "
    "slots after the header", time_limit=TIME_LIMIT, pool_limit=256, fresh_rate=0.3,
    traces_memory=False)


def fuzz(seed: int, seconds: float | None = None, max_inputs: int | None = None, *,
         crash_dir: Path | None = None) -> fuzzkit.FuzzStats:
    """The built-in fuzzer (see `fuzzkit.fuzz`) on 16 generated tables and their mutations."""
    return fuzzkit.fuzz(HARNESS, seed=seed, seconds=seconds, max_inputs=max_inputs,
                        generated_seeds=16, crash_dir=crash_dir)


if __name__ == "__main__":
    from fuzzkit.cli import main

    sys.exit(main(lambda strict: HARNESS, __doc__, defaults=Defaults(generated_seeds=16)))
