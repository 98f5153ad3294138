"""Replays the log recovery fuzzer (fuzz/fuzz_wal_recovery.py) in the test suite.

Every file of fuzz/corpus/wal/ and a fixed, seeded run of 300 mutated inputs go through the
harness target: open, replay, append, commit, close, reopen, replay. The only acceptable
outcomes are success or a `wal.WalError`; the harness raises anything else (another
exception, more than 2 s or 64 MiB traced for an input, a file changed by an open that
failed with WalFormatError, a log that does not read back what a clean session wrote).

The fuzzer saves inputs that find a bug under fuzz/crashes/ (not tracked); once the bug is
fixed, the input joins the corpus (lsn-overflow-*.bin are two such; found-*.bin are kept
when the corpus is rebuilt: found-close-without-end.bin is a CLOSE record without END after
the last commit, which recovery once left in place, so that after a roll to a new segment
the next open stopped at it and lost that segment's committed records;
found-search-flood.bin.gz is a segment whose damaged rest is full of the segment's tag,
which made the torn-or-corrupt search take seconds, now refused as corruption in
milliseconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import wal

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzz_wal_recovery as harness  # noqa: E402
import fuzzkit  # noqa: E402

CORPUS = fuzzkit.input_files(harness.CORPUS_DIR)
MUTATION_SEED = 20240611
MUTATION_INPUTS = 300
GENERATED_SEEDS = 10


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 30, f"regenerate it: python {FUZZ_DIR / 'make_wal_corpus.py'}"
    assert sum(p.stat().st_size for p in CORPUS) < 300_000


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_file(path: Path) -> None:
    outcome = harness.run_one(fuzzkit.read_input(path))  # raises on anything but a WalError
    assert outcome.exception is None or isinstance(outcome.exception, wal.WalError)


def test_seeded_mutation_run() -> None:
    stats = harness.fuzz(
        seed=MUTATION_SEED,
        max_inputs=MUTATION_INPUTS,
        corpus_dirs=[harness.CORPUS_DIR],
        crash_dir=None,  # collect, do not write
        coverage=False,  # deterministic whatever tracer pytest runs under
        memory_every=1,
        generated_seeds=GENERATED_SEEDS,
    )
    assert stats.executed == MUTATION_INPUTS
    bugs = [
        f"{bug.signature}: {len(bug.data)}-byte input {bug.data[:32].hex()}...\n{bug.error}"
        for bug in stats.bugs
    ]
    hint = (
        f"\nReproduce and save minimized inputs: python fuzz/fuzz_wal_recovery.py "
        f"--max-inputs {MUTATION_INPUTS} --seed {MUTATION_SEED} --generated-seeds "
        f"{GENERATED_SEEDS} --no-coverage --memory-every 1\n"
    )
    assert not bugs, hint + "\n\n".join(bugs)
    assert stats.outcomes.get("ok", 0) > 0  # the run exercises more than rejections
