"""A short, seeded run of the reader-table fuzzer (fuzz/fuzz_readers.py) in the test suite,
and the damage it taught us to repair."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzz_readers as harness  # noqa: E402

from streamdb.storage import readers  # noqa: E402


def test_seeded_fuzz_run_finds_nothing() -> None:
    stats = harness.fuzz(seed=20261122, seconds=None, max_inputs=400)
    assert not stats.bugs, [b.signature for b in stats.bugs]
    assert stats.executed == 400 and stats.outcomes.get("ok", 0) > 300


def test_a_partial_trailing_slot_is_trimmed(tmp_path: Path) -> None:
    """Regression: bytes past the last whole slot made `_check()` fail for good."""
    path = tmp_path / "t.db-readers"
    path.write_bytes(readers.pack_header() + bytes(readers.SLOT_SIZE) + b"\x01" * 10)
    table = readers.FileReaderTable(str(path))
    try:
        assert os.path.getsize(path) == readers.HEADER_SIZE + readers.SLOT_SIZE
        table._check()
        slot = table.claim()
        slot.publish(harness.DB_ID, (1, 2))
        assert table.live(harness.DB_ID) == [(1, 2)]
    finally:
        table.close()


def test_every_generated_table_passes_the_target() -> None:
    rng = random.Random(5)
    for _ in range(20):
        assert harness.run_one(harness.generated(rng)) == "ok"
