"""Replays the database-open fuzzer (fuzz/fuzz_db_open.py) in the test suite.

Every file of fuzz/corpus/db/ and a fixed, seeded run of 150 mutated inputs go through the
harness target: open, list, get every document, verify, write, close, reopen, read back.
Accepted: success or a `streamdb.errors.StreamDbError`; the harness raises anything else
(another exception, more than 2 s or 128 MiB traced, a file growing past 64 MiB, input
files changed by an open that failed with UnsupportedError or CorruptionError, a generated
valid image that does not open, a clean session that does not read back).

Bugs the fuzzer found are replayed from minimal inputs built below (FIXED_BUGS). The seeded
run tolerates only the signatures in TOLERATED.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import streamdb
from streamdb.errors import StreamDbError
from wal.memvfs import MemoryVFS

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzz_db_open as harness  # noqa: E402
import fuzzkit  # noqa: E402

CORPUS = fuzzkit.input_files(harness.CORPUS_DIR)
MUTATION_SEED = 20261121
MUTATION_INPUTS = 150
GENERATED_SEEDS = 4


def test_corpus_is_there() -> None:
    hint = f"regenerate it: python {FUZZ_DIR / 'make_db_corpus.py'}"
    assert 25 <= len(CORPUS) <= 40, hint
    assert sum(p.stat().st_size for p in CORPUS) < 400_000


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_file(path: Path) -> None:
    outcome = harness.run_one(fuzzkit.read_input(path))  # raises on anything but these
    assert outcome.exception is None or isinstance(outcome.exception, StreamDbError)


def test_valid_corpus_images_open_cleanly() -> None:
    valid = [p for p in CORPUS if p.name.startswith(("closed-", "power-loss-", "many-"))]
    assert len(valid) >= 15
    for path in valid:
        assert harness.run_one(fuzzkit.read_input(path), memory=False).error is None, path


# -- known bugs: minimal inputs ---------------------------------------------------------------

_GEN, _LSN, _FILE_PAGES, _PAGE_SIZE, _PATHS_COUNT = 32, 40, 48, 12, 64 + 8


def _base(*, crash_after: bool = False) -> harness.FuzzCase:
    """/a = b"hello", closed (the current header copy is then A, at offset 0). With
    `crash_after`, /big (70 KB, on pages) follows and the image is taken without closing."""
    vfs = MemoryVFS()
    with harness.deterministic(1):
        db = streamdb.open(harness.DB_PATH, harness.CONFIG, vfs=vfs)
        db.write_document("/a", b"hello")
        if crash_after:
            db.checkpoint()
            db.write_document("/big", harness.content("big", 70_000))
            files = [vfs.read_file(p) if vfs.exists(p) else None for p in harness.FILES]
            db.close()
            return harness.FuzzCase(files[0] or b"", files[1], files[2])
        db.close()
    return harness.FuzzCase(vfs.read_file(harness.DB_PATH))


def _header_field(offset: int, size: int, value: int) -> bytes:
    buf = bytearray(_base().db)
    buf[offset : offset + size] = value.to_bytes(size, "little")
    harness.repair_header(buf, 0)
    return harness.FuzzCase(bytes(buf)).encode()


def _tree_key(kind: int, old: bytes, new: bytes) -> bytes:
    buf = bytearray(_base().db)
    for at in harness.tree_pages(buf):
        if buf[at + 3] == kind:
            buf[at : at + harness.PAGE] = bytes(buf[at : at + harness.PAGE]).replace(old, new, 1)
            harness.repair_page(buf, at)
    return harness.FuzzCase(bytes(buf)).encode()


def _document_past_eof() -> bytes:
    case = _base(crash_after=True)
    return harness.FuzzCase(case.db[:-8192], case.wal, case.wal1).encode()


def _key(signature: str) -> str:
    """The part of a harness signature known bugs are matched on: the exception type and
    the innermost function (the caller that the full signature adds moves in refactors)."""
    return signature.split(" in ")[0]


# Bugs the fuzzer found, now fixed: _key(signature) -> (what was wrong, minimal input).
FIXED_BUGS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "ZeroDivisionError@database._open_log": (
        "header page size 0 (checksum valid) is not validated",
        lambda: _header_field(_PAGE_SIZE, 4, 0)),
    "WalInvalidArgumentError@log.skip_to": (
        "header checkpoint LSN >= 2**62 escapes as a wal error",
        lambda: _header_field(_LSN, 8, 1 << 62)),
    "OverflowError@catalog.set_base": (
        "tree entry count >= 2**63: len() of the tree overflows",
        lambda: _header_field(_PATHS_COUNT, 8, 1 << 63)),
    "MemoryError@fuzz_db_open._session": (
        "len(db) is the unchecked paths count, so list(db) presizes a huge list",
        lambda: _header_field(_PATHS_COUNT, 8, 1 << 40)),
    "error@header.pack": (
        "generation 2**64-1: the next checkpoint's header cannot be packed (struct.error)",
        lambda: _header_field(_GEN, 8, (1 << 64) - 1)),
    "huge-file": (
        "header file pages (2**30) is trusted: new pages are written 4 TiB into the file",
        lambda: _header_field(_FILE_PAGES, 8, 1 << 30)),
    "UnicodeDecodeError@database.<listcomp>": (
        "a path key that is not UTF-8 breaks search() and list(db)",
        lambda: _tree_key(1, b"/a", b"/\xff")),
    "UnicodeDecodeError@database.<genexpr>": (
        "a suffix key that is not UTF-8 breaks search_suffix()",
        lambda: _tree_key(2, b"a/", b"\xff/")),
    "ValueError@pager.read": (
        "a document extent past the end of the file raises ValueError from get()",
        _document_past_eof),
}

# Tolerated, not fixed: when the database file turns out damaged, the log's recovery has
# already written (freeing segments past a torn tail, erasing an unfinished batch). Only
# uncommitted log bytes change; the database file is never touched.
TOLERATED = {"open-failed-but-modified-t.db-wal", "open-failed-but-modified-t.db-wal.1"}


@pytest.mark.parametrize("sig", list(FIXED_BUGS))
def test_fixed_bug_stays_fixed(sig: str) -> None:
    """The minimal input of each fixed bug ends in success or a StreamDbError (run_one
    raises anything else)."""
    _, make = FIXED_BUGS[sig]
    harness.run_one(make())


def test_seeded_mutation_run() -> None:
    stats = harness.fuzz(seed=MUTATION_SEED, max_inputs=MUTATION_INPUTS,
                         corpus_dirs=[harness.CORPUS_DIR], crash_dir=None, memory_every=1,
                         generated_seeds=GENERATED_SEEDS)
    assert stats.executed == MUTATION_INPUTS
    new = [f"{bug.signature}: {len(bug.data)}-byte input\n{bug.error}"
           for bug in stats.bugs if _key(bug.signature) not in TOLERATED]
    hint = (f"\nReproduce and save the inputs: python fuzz/fuzz_db_open.py --max-inputs "
            f"{MUTATION_INPUTS} --seed {MUTATION_SEED} --generated-seeds {GENERATED_SEEDS} "
            f"--memory-every 1\n")
    assert not new, hint + "\n\n".join(new)
    assert stats.outcomes.get("ok", 0) > 0  # the run exercises more than rejections
