"""Real writer processes killed with SIGKILL: every acknowledged write survives, no
unacknowledged or half document is ever visible, and the database verifies."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import streamdb
from tests.streamdb.kill_db_writer import payload
from tests.streamdb.killing import run_and_kill

WRITER = Path(__file__).with_name("kill_db_writer.py")


def one_round(
    path: Path, seed: int, rng: random.Random, start: dict[str, bytes] | None = None
) -> dict[str, bytes]:
    """Run and kill one writer; return the recovered /doc/ documents after checking them
    against `start` (what the database held before) plus the acknowledged operations."""
    lines = run_and_kill(WRITER, [str(path), str(seed)], rng, (0.05, 0.6))
    # The model after every acknowledged operation; the one in flight may or may not show.
    model: dict[str, bytes] = dict(start or {})
    last: tuple[str, int] | None = None
    for line in lines:
        kind, *rest = line.split()
        if kind in ("W", "D"):
            key, n = rest[0], int(rest[1])
            if kind == "W":
                model[key] = payload(seed, n)
            else:
                model.pop(key, None)
            last = (key, n)
    with streamdb.open(path) as db:
        got = {p: db.get(p) for p in db if p.startswith("/doc/")}
        report = db.verify()
    assert report.ok, report.problems
    for key in set(got) | set(model):
        if got.get(key) != model.get(key):
            # Only the next write after the last acknowledged one may differ.
            n = last[1] + 1 if last else 0
            assert key == f"/doc/{n % 17}", (key, len(got.get(key) or b""))
            expect = None if n % 11 == 10 else payload(seed, n)
            assert got.get(key) == expect
    assert last is not None or not lines[1:], "the writer acknowledged nothing"
    return got


ROUNDS = int(os.environ.get("KILL_ROUNDS", "10"))


def rounds(path: Path, count: int, rng: random.Random) -> None:
    """Kill writer after writer on the same database; each round starts from what the
    previous one recovered."""
    state: dict[str, bytes] = {}
    for seed in range(count):
        state = one_round(path, seed, rng, state)


def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    rounds(tmp_path / "k.db", ROUNDS, random.Random(7))


@pytest.mark.slow
def test_sigkill_stress(tmp_path: Path) -> None:
    rounds(tmp_path / "k.db", 200, random.Random(99))
