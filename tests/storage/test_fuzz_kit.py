"""The machinery the fuzz harnesses share (fuzz/fuzzkit/): input files, bug names,
shrinking, the bug log and the mutator."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzzkit  # noqa: E402
from fuzzkit.bugs import BugLog, CrashDir, shrink  # noqa: E402
from fuzzkit.inputs import pack_files, unpack_files  # noqa: E402


@pytest.mark.parametrize("files", [[b"a"], [b"", None, b"xyz"], [b"12345", b"", b"z"],
                                   [b"db", b"wal", None]])
def test_files_round_trip(files: list[bytes | None]) -> None:
    assert unpack_files(pack_files(files), [f is not None for f in files]) == files


def test_a_cut_length_prefix_reads_as_zero_padded() -> None:
    assert unpack_files(b"\x02", [True, True]) == [b"", b""]
    assert unpack_files(b"\x02\x00\x00\x00ab", [True, True]) == [b"ab", b""]


def _fails_in_here(data: bytes) -> None:
    if b"BUG" in data:
        raise ValueError("found")


def test_signature_names_the_kind_or_the_type_and_where() -> None:
    assert fuzzkit.signature(fuzzkit.HarnessBug("slow", "3 s"), [FUZZ_DIR]) == "slow"
    with pytest.raises(ValueError) as info:
        _fails_in_here(b"BUG")
    assert fuzzkit.signature(info.value, [Path(__file__).parent]) == (
        "ValueError in test_fuzz_kit._fails_in_here")
    assert fuzzkit.signature(info.value, [Path(__file__).parent], depth=2).startswith(
        "ValueError in test_fuzz_kit._fails_in_here < test_fuzz_kit.")


def test_shrink_keeps_the_failure_and_the_leading_bytes() -> None:
    data = b"\x07" + bytes(range(40)) + b"BUG" + bytes(100)
    small = shrink(data, lambda d: b"BUG" in d, seconds=10, keep=1)
    assert small == b"\x07BUG"
    cuts = shrink(data, lambda d: b"BUG" in d, seconds=10, first=lambda d: [d[40:]])
    assert cuts == b"BUG"


def _rerun(data: bytes) -> BaseException | None:
    try:
        _fails_in_here(data)
    except ValueError as exc:
        return exc
    return None


def test_bug_log_keeps_one_shrunk_input_per_signature(tmp_path: Path) -> None:
    def make_log() -> BugLog:
        crashes = CrashDir(tmp_path, "kit", "fuzz/fuzz_kit.py", lambda d: f"{len(d)} bytes")
        return BugLog(lambda e: fuzzkit.signature(e, [Path(__file__).parent]), _rerun,
                      crashes, minimize_seconds=10)

    log = make_log()
    for data in (b"xxBUGyy", b"BUGzz"):
        exc = _rerun(data)
        assert exc is not None
        log.record(exc, data)
    assert log.hits == {"ValueError in test_fuzz_kit._fails_in_here": 2}
    assert [bug.data for bug in log.bugs] == [b"BUG"]
    assert log.bugs[0].path is not None and log.bugs[0].path.read_bytes() == b"BUG"
    text = log.bugs[0].path.with_suffix(".txt").read_text()
    assert text.startswith("signature: ValueError in test_fuzz_kit._fails_in_here\n")
    again = make_log()  # a later run: the saved signature is known, nothing new is kept
    exc = _rerun(b"BUG")
    assert exc is not None and again.record(exc, b"BUG") is None and not again.bugs


def test_mutator_is_deterministic_and_bounded() -> None:
    class Small(fuzzkit.Format):
        max_size = 64

    def outputs(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        m = fuzzkit.Mutator(rng, Small(), lambda: bytes(range(50)))
        out, data = [], b"seed input"
        for _ in range(300):
            data = m.mutate(data)
            out.append(data)
        return out

    first = outputs(1)
    assert first == outputs(1) and first != outputs(2)
    assert all(len(d) <= 64 for d in first) and len(set(first)) > 100
