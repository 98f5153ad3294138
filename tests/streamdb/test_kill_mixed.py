"""Writer processes killed with SIGKILL in the middle of a mixed workload (documents of every
size class, overwrites, deletes, aliases, transactions, message appends, Arrow table
appends, checkpoints, gc): after each kill the database holds exactly the state after the
last acknowledged operation, or after the one in flight too, and verifies. Each round
starts from what the previous one recovered. `make test` runs a few rounds; `make stress`
(KILL_ROUNDS, default 1,000 there) runs many."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest

import streamdb
from tests.streamdb.killing import run_and_kill
from tests.streamdb.mixed_workload import Model, operations

WRITER = Path(__file__).with_name("kill_mixed_writer.py")


def one_round(path: Path, seed: int, rng: random.Random, start: Model) -> Model:
    lines = run_and_kill(WRITER, [str(path), str(seed)], rng, (0.05, 0.8))
    acked = [int(line.split()[1]) for line in lines if line.startswith("A ")]
    done = acked[-1] + 1 if acked else 0
    ops = list(itertools.islice(operations(seed), done + 1))
    before = start.copy()
    for op in ops[:done]:
        before.apply(op)
    after = before.copy()
    after.apply(ops[done])  # the operation in flight may have committed
    with streamdb.open(path) as db:
        got = Model.of(db)
        report = db.verify()
        db._engine._check()
    assert report.ok, report.problems
    assert got.view() in (before.view(), after.view()), (
        f"seed {seed}: after {done} acknowledged operations (then {ops[done].kind}) the "
        f"database holds {sorted(got.view())}, expected {sorted(before.view())}")
    return got


def rounds(path: Path, count: int, seed: int) -> int:
    rng = random.Random(seed)
    state = Model()
    for i in range(count):
        state = one_round(path, seed * 100_000 + i, rng, state)
    return count


def test_sigkill_mid_mixed_workload(tmp_path: Path) -> None:
    assert rounds(tmp_path / "m.db", int(os.environ.get("KILL_MIXED_ROUNDS", "6")), 1) > 0


@pytest.mark.slow
def test_sigkill_mid_mixed_workload_stress(tmp_path: Path) -> None:
    count = int(os.environ.get("KILL_MIXED_ROUNDS", "1000"))
    assert rounds(tmp_path / "m.db", count, 2) == count
