"""Real writer processes killed with SIGKILL: every acknowledged write survives, no
unacknowledged or half document is ever visible, and the database verifies. Plain, and
compressed (zstd) and encrypted (AES-256-GCM): writer and parent open with the same
config, named on the writer's command line."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import streamdb
from tests.streamdb.kill_db_writer import CONFIGS, payload
from tests.streamdb.killing import run_and_kill

WRITER = Path(__file__).with_name("kill_db_writer.py")


def one_round(
    path: Path, seed: int, rng: random.Random, start: dict[str, bytes] | None = None,
    config: str = "plain",
) -> dict[str, bytes]:
    """Run and kill one writer; return the recovered /doc/ documents after checking them
    against `start` (what the database held before) plus the acknowledged operations."""
    lines = run_and_kill(WRITER, [str(path), str(seed), config], rng, (0.05, 0.6))
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
    transform = CONFIGS[config]
    with streamdb.open(path, transform) as db:
        got = {p: db.get(p) for p in db if p.startswith("/doc/")}
        infos = [db.info(p) for p in got]
        report = db.verify()
    assert report.ok, report.problems
    if transform.encryption_key is not None:  # the writer did transform what it wrote
        assert all(i.encrypted and i.codec == transform.compression for i in infos)
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
TRANSFORM_ROUNDS = int(os.environ.get("KILL_ROUNDS", "4"))  # the zstd+aes variant: short


def rounds(path: Path, count: int, rng: random.Random, config: str = "plain") -> None:
    """Kill writer after writer on the same database; each round starts from what the
    previous one recovered."""
    state: dict[str, bytes] = {}
    for seed in range(count):
        state = one_round(path, seed, rng, state, config)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path, config: str) -> None:
    count = ROUNDS if config == "plain" else TRANSFORM_ROUNDS
    rounds(tmp_path / "k.db", count, random.Random(7), config)


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGS))
def test_sigkill_stress(tmp_path: Path, config: str) -> None:
    rounds(tmp_path / "k.db", 200, random.Random(99), config)
