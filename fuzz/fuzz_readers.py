#!/usr/bin/env python3
"""Fuzzer for the reader table file (`NAME-readers`): hostile bytes must be used, repaired or
refused with a documented error, never crash, hang or hand out a wrong stamp.

    python fuzz/fuzz_readers.py --seconds 60        # mutate generated tables
    python fuzz/fuzz_readers.py FILE...             # replay inputs

Target: the input becomes the table file; then a `FileReaderTable` opens it, claims a slot,
publishes, lists the live stamps (which reclaims dead slots), runs `_check()`, and closes.
Accepted: success, UnsupportedError (another format version or slot size) and
CorruptionError (a damaged header while a slot lock is held, which cannot happen here as no
other process holds one). Anything else is a bug, and so is a published stamp that `live()`
does not report, or a table `_check()` rejects after the open repaired or accepted it.
Crashes are written to fuzz/crashes/.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fuzzkit

from streamdb.errors import CorruptionError, UnsupportedError
from streamdb.storage import readers

CRASH_DIR = Path(__file__).resolve().parent / "crashes"
DB_ID = bytes(range(1, 17))
ACCEPTED = (UnsupportedError, CorruptionError)


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


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        if choice < 0.4 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice < 0.6:
            del buf[rng.randrange(len(buf) + 1):]
        elif choice < 0.8:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 100))
        else:
            buf += bytes(rng.randint(1, 300))
    return bytes(buf)


def run_one(data: bytes) -> str:
    """The target. Returns the outcome's name; raises on a bug."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.db-readers")
        with open(path, "wb") as f:
            f.write(data)
        try:
            table = readers.FileReaderTable(path)
        except ACCEPTED as exc:
            with open(path, "rb") as f:
                if f.read() != data:
                    raise AssertionError("a refused table was modified") from exc
            return type(exc).__name__
        try:
            before = table.live(DB_ID)  # reclaims what dead owners left, garbled or not
            table._check()
            slot = table.claim()
            slot.publish(DB_ID, (7, 42))
            stamps = table.live(DB_ID)
            if (7, 42) not in stamps or table.oldest(DB_ID) != min(stamps):
                raise AssertionError(f"published stamp missing: {stamps}")
            if any(s not in stamps for s in before if s != (0, 0)):
                raise AssertionError("a claim changed other live stamps")
            table._check()
            slot.release()
            if table.live(DB_ID):
                raise AssertionError("stamps of dead owners survive a scan")
        finally:
            table.close()
    return "ok"


def fuzz(seed: int, seconds: float | None, max_inputs: int | None) -> fuzzkit.FuzzStats:
    rng = random.Random(seed)
    stats = fuzzkit.FuzzStats()
    pool = [generated(rng) for _ in range(16)]
    start = time.monotonic()
    while (seconds is None or time.monotonic() - start < seconds) and (
            max_inputs is None or stats.executed < max_inputs):
        data = mutate(rng.choice(pool), rng)
        try:
            with fuzzkit.watchdog(2.0, AssertionError):
                outcome = run_one(data)
        except Exception as exc:
            sig = f"{type(exc).__name__}: {str(exc)[:60]}"
            stats.hits[sig] = stats.hits.get(sig, 0) + 1
            CRASH_DIR.mkdir(exist_ok=True)
            out = CRASH_DIR / f"readers-{fuzzkit.slug(sig)}.bin"
            out.write_bytes(data)
            stats.bugs.append(fuzzkit.Bug(sig, data, traceback.format_exc(), out))
            continue
        stats.executed += 1
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        if outcome == "ok" and len(pool) < 256:
            pool.append(data)
    stats.seconds = time.monotonic() - start
    stats.pool = len(pool)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help="replay these files")
    parser.add_argument("--seconds", type=float, help="fuzz for this long")
    parser.add_argument("--max-inputs", type=int, help="stop after this many inputs")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    args = parser.parse_args(argv)
    if args.inputs:
        for path in args.inputs:
            print(f"{path}: {run_one(fuzzkit.read_input(path))}")
        return 0
    if args.seconds is None and args.max_inputs is None:
        parser.error("give --seconds N (or --max-inputs N), or input files to replay")
    seed = args.seed if args.seed is not None else time.time_ns() % (1 << 32)
    stats = fuzz(seed, args.seconds, args.max_inputs)
    print(f"seed {seed}: {stats.executed} inputs in {stats.seconds:.0f} s, pool {stats.pool}")
    for label, count in sorted(stats.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:8d}  {label}")
    for sig, count in sorted(stats.hits.items(), key=lambda kv: -kv[1]):
        print(f"BUG {sig}: {count} inputs, one in {CRASH_DIR}")
    return 1 if stats.bugs else 0


if __name__ == "__main__":
    sys.exit(main())
