"""Replays the database-open fuzzer (fuzz/fuzz_db_open.py) in the test suite.

Every file of fuzz/corpus/db/ and a fixed, seeded run of 300 inputs (the corpus, a few
generated images, then mutations) go through the harness target: open, list, read every
message log (from its middle, its last message, then whole), get every document, verify,
write, close, reopen, read back. Inputs are plain or compressed and/or encrypted
databases, some with message logs (inline and on pages, of each framing checksum; damaged
ones too), opened with the codec and test key their control byte names (some with the
wrong one, some in quick mode). Accepted: success or a
`streamdb.errors.StreamDbError`; the harness raises anything else (another exception, more
than 2 s or 128 MiB traced, a file growing past 64 MiB, input files changed by an open that
failed with UnsupportedError or CorruptionError, a generated valid image that does not open,
a clean session that does not read back).

Bugs the fuzzer found are replayed from minimal inputs built below (FIXED_BUGS) and from the
inputs it saved, which joined the corpus (`open-failed-*`: an open that refused damage had
already written the log; `found-*`). The seeded run tolerates no finding.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import streamdb
from streamdb.engine.checkpoint import KINDS
from streamdb.errors import CorruptionError, StreamDbError
from streamdb.storage import btree, btree_format, docio, transform
from wal.memvfs import MemoryVFS

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import db_inputs as inputs  # noqa: E402
import fuzz_db_open as harness  # noqa: E402
import fuzzkit  # noqa: E402

CORPUS = fuzzkit.input_files(harness.CORPUS_DIR)
MUTATION_SEED = 20261121
MUTATION_INPUTS = 300
GENERATED_SEEDS = 4


def _mode(path: Path) -> inputs.Mode:
    return inputs.FuzzCase.decode(fuzzkit.read_input(path)).mode


def test_corpus_is_there() -> None:
    hint = f"regenerate it: python {FUZZ_DIR / 'make_db_corpus.py'}"
    assert 70 <= len(CORPUS) <= 95, hint
    # ~275 KB of it is one encrypted message log of two 256 KiB chunks (does not compress)
    assert sum(p.stat().st_size for p in CORPUS) < 1_000_000
    modes = {str(_mode(p)) for p in CORPUS}
    assert {"plain", "zstd+aes", "snappy+aes", "aes", "lz4", "zstd", "snappy"} <= modes, hint


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_file(path: Path) -> None:
    outcome = harness.run_one(fuzzkit.read_input(path))  # raises on anything but these
    assert outcome.exception is None or isinstance(outcome.exception, StreamDbError)


def test_failed_opens_in_the_corpus_change_no_file() -> None:
    """Inputs on which a refused open once rewrote `t.db-wal` or `t.db-wal.1` (the log's
    recovery wrote before the replay found the damage). The harness raises HarnessBug when a
    failed open changes, creates or removes any file; these must all be refused."""
    found = [p for p in CORPUS if p.name.startswith("open-failed-")]
    assert len(found) >= 5
    for path in found:
        outcome = harness.run_one(fuzzkit.read_input(path), memory=False)
        assert isinstance(outcome.exception, CorruptionError), (path, str(outcome))
        assert outcome.stage in ("open", "salvage"), (path, str(outcome))


def test_valid_corpus_images_open_cleanly() -> None:
    valid = [p for p in CORPUS if p.name.startswith(("closed-", "power-loss-", "many-"))]
    assert len(valid) >= 20
    assert sum(_mode(p).transformed for p in valid) >= 6  # compressed and/or encrypted
    for path in valid:
        assert harness.run_one(fuzzkit.read_input(path), memory=False).error is None, path


def test_corpus_message_logs_are_read() -> None:
    """The images with message logs have them read; the damaged ones (a LOG record's
    table, salts or flags, a frame, an EXTEND record) fail where the harness reads logs:
    decoding the record (`info`) or reading the messages, not before."""
    valid = [p for p in CORPUS if p.name.startswith(("closed-log-", "power-loss-log-"))]
    assert len(valid) >= 7
    assert {str(_mode(p)) for p in valid} >= {"plain", "aes", "zstd+aes"}
    for path in valid:
        outcome = harness.run_one(fuzzkit.read_input(path), memory=False)
        assert outcome.error is None and outcome.messages > 0, (path, str(outcome))
    damaged = [p for p in CORPUS if p.name.startswith("log-") and "payload" not in p.name
               and p.name != "log-foreign.bin.gz"]
    assert len(damaged) >= 12
    stages = [harness.run_one(fuzzkit.read_input(p), memory=False).stage for p in damaged]
    assert set(stages) == {"info", "messages"}, dict(zip(damaged, stages, strict=True))
    assert stages.count("messages") >= len(damaged) // 2, stages


# -- known bugs: minimal inputs ---------------------------------------------------------------

_GEN, _LSN, _FILE_PAGES, _PAGE_SIZE, _PATHS_COUNT = 32, 40, 48, 12, 64 + 8


def _base(*, crash_after: bool = False) -> inputs.FuzzCase:
    """/a = b"hello", closed (the current header copy is then A, at offset 0). With
    `crash_after`, /big (70 KB, on pages) follows and the image is taken without closing."""
    vfs = MemoryVFS()
    with inputs.deterministic(1):
        db = streamdb.open(inputs.DB_PATH, inputs.CONFIG, vfs=vfs)
        db.write_document("/a", b"hello")
        if crash_after:
            db.checkpoint()
            db.write_document("/big", inputs.content("big", 70_000))
            files = [vfs.read_file(p) if vfs.exists(p) else None for p in inputs.FILES]
            db.close()
            return inputs.FuzzCase(files[0] or b"", files[1], files[2])
        db.close()
    return inputs.FuzzCase(vfs.read_file(inputs.DB_PATH))


def _header_field(offset: int, size: int, value: int) -> bytes:
    buf = bytearray(_base().db)
    buf[offset : offset + size] = value.to_bytes(size, "little")
    inputs.repair_header(buf, 0)
    return inputs.FuzzCase(bytes(buf)).encode()


def _tree_key(kind: int, old: bytes, new: bytes) -> bytes:
    buf = bytearray(_base().db)
    for at in inputs.tree_pages(buf):
        if buf[at + 3] == kind:
            buf[at : at + inputs.PAGE] = bytes(buf[at : at + inputs.PAGE]).replace(old, new, 1)
            inputs.repair_page(buf, at)
    return inputs.FuzzCase(bytes(buf)).encode()


def _document_past_eof() -> bytes:
    case = _base(crash_after=True)
    return inputs.FuzzCase(case.db[:-8192], case.wal, case.wal1).encode()


def _key(signature: str) -> str:
    """The part of a harness signature known bugs are matched on: the exception type and
    the innermost function (the caller that the full signature adds moves in refactors)."""
    return signature.split(" < ")[0]


# Bugs the fuzzer found, now fixed: _key(signature) -> (what was wrong, minimal input).
FIXED_BUGS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "ZeroDivisionError in database._open_log": (
        "header page size 0 (checksum valid) is not validated",
        lambda: _header_field(_PAGE_SIZE, 4, 0)),
    "WalInvalidArgumentError in log.skip_to": (
        "header checkpoint LSN >= 2**62 escapes as a wal error",
        lambda: _header_field(_LSN, 8, 1 << 62)),
    "OverflowError in catalog.set_base": (
        "tree entry count >= 2**63: len() of the tree overflows",
        lambda: _header_field(_PATHS_COUNT, 8, 1 << 63)),
    "MemoryError in fuzz_db_open._session": (
        "len(db) is the unchecked paths count, so list(db) presizes a huge list",
        lambda: _header_field(_PATHS_COUNT, 8, 1 << 40)),
    "error in header.pack": (
        "generation 2**64-1: the next checkpoint's header cannot be packed (struct.error)",
        lambda: _header_field(_GEN, 8, (1 << 64) - 1)),
    "huge-file": (
        "header file pages (2**30) is trusted: new pages are written 4 TiB into the file",
        lambda: _header_field(_FILE_PAGES, 8, 1 << 30)),
    "UnicodeDecodeError in database.<listcomp>": (
        "a path key that is not UTF-8 breaks search() and list(db)",
        lambda: _tree_key(1, b"/a", b"/\xff")),
    "UnicodeDecodeError in database.<genexpr>": (
        "a suffix key that is not UTF-8 breaks search_suffix()",
        lambda: _tree_key(2, b"a/", b"\xff/")),
    "ValueError in pager.read": (
        "a document extent past the end of the file raises ValueError from get()",
        _document_past_eof),
}

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
           for bug in stats.bugs]
    hint = (f"\nReproduce and save the inputs: python fuzz/fuzz_db_open.py --max-inputs "
            f"{MUTATION_INPUTS} --seed {MUTATION_SEED} --generated-seeds {GENERATED_SEEDS} "
            f"--memory-every 1\n")
    assert not new, hint + "\n\n".join(new)
    assert stats.outcomes.get("ok", 0) > 0  # the run exercises more than rejections
    # ... and compressed and encrypted databases, mutated ones included.
    transformed = {m: n for m, n in stats.modes.items() if not m.startswith("plain")}
    assert sum(transformed.values()) >= 100, stats.modes
    # (Fewer than a plain image's: a mutation that damages one header copy is repaired, but
    # a mutated header or tree page of a transformed image more often fails authentication.)
    assert sum(n for m, n in stats.modes_ok.items() if m in transformed) >= 12, stats.modes_ok
    assert {"zstd+aes", "lz4", "snappy+aes", "zstd"} <= set(transformed), stats.modes


# -- regressions: bugs the fuzzer found --------------------------------------------------------


def test_verify_bounds_decoding_by_max_document_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify() refuses to decode a compressed version that claims more than
    max_document_size, as get() does (it once decoded every kept version whatever its size:
    zstd stores 16 MiB of zeros in ~540 bytes, so a 1 MB file could cost seconds).

    Here: /x v1 is 64 MiB of zeros (a few KB stored), v2 is 5 bytes; opened with
    max_document_size 32 MiB, verify() reports v1 without decoding it."""
    vfs = MemoryVFS()
    config = dataclasses.replace(inputs.CONFIG, compression="zstd")
    with inputs.deterministic(1):
        db = streamdb.open(inputs.DB_PATH, dataclasses.replace(config, max_document_size=1 << 30),
                           vfs=vfs)
        db.write_document("/x", (bytes(1 << 20) for _ in range(64)))
        db.write_document("/x", b"small")
        db.close()
    decoded = 0
    real = transform.decompress  # what docio imported

    def counting(codec: int, data: bytes | memoryview, expected: int) -> bytes:
        nonlocal decoded
        decoded += expected
        return real(codec, data, expected)

    monkeypatch.setattr(docio, "decompress", counting)
    with streamdb.open(inputs.DB_PATH, config, vfs=vfs) as db:
        assert config.max_document_size == 32 << 20
        assert db.get("/x") == b"small"
        db.verify()  # may report v1 as a problem, but not decode it
    assert decoded <= config.max_document_size, f"verify() decoded {decoded >> 20} MiB"


def test_tree_walk_ends_on_a_cycle() -> None:
    """Tree.pages() (every page of a tree, walked by each checkpoint) checks levels and
    stops at the file's page count: an internal page that lists itself as a child once made
    it loop forever, so close() after any write hung. Found by the fuzzer ("slow").

    Here: the paths tree of the corpus's many-paths image, its root's child 1 set to the
    root; the walk must end (or raise CorruptionError) within the file's page count."""
    case = inputs.FuzzCase.decode(fuzzkit.read_input(harness.CORPUS_DIR / "many-paths.bin.gz"))
    vfs = MemoryVFS()
    vfs.write_file(inputs.DB_PATH, case.db)
    with streamdb.open(inputs.DB_PATH, inputs.CONFIG, vfs=vfs) as db:
        ref = db._engine.header.trees["paths"]
    assert ref.height == 2  # an internal root
    buf = bytearray(case.db)
    at = ref.root * inputs.PAGE + btree_format.HEADER_SIZE + 8  # child 1
    buf[at : at + 8] = ref.root.to_bytes(8, "little")
    inputs.repair_page(buf, ref.root * inputs.PAGE)
    vfs.write_file(inputs.DB_PATH, bytes(buf))
    pages = len(buf) // inputs.PAGE
    db = streamdb.open(inputs.DB_PATH, inputs.CONFIG, vfs=vfs)
    try:
        with pytest.raises(CorruptionError, match="level"):
            list(db)  # reads notice
        walk = btree.Tree(db._engine._store, ref, kind=KINDS["paths"]).pages()
        try:
            seen = list(itertools.islice(walk, pages + 1))
        except CorruptionError:
            return  # also right: the walk refuses the cycle
        assert len(seen) <= pages, f"walked {seen[:6]}... past the {pages} pages of the file"
    finally:
        db.close()  # nothing written: no checkpoint, no walk


def _logged_extent_past_eof() -> bytes:
    """A plain database whose log holds /big (70 KB, pages 2..19), its logged extent
    rewritten to start 16 GiB into the file and run 64 GiB, the log's CRCs repaired."""
    vfs = MemoryVFS()
    with inputs.deterministic(1):
        db = streamdb.open(inputs.DB_PATH, inputs.CONFIG, vfs=vfs)
        db.write_document("/big", inputs.noise("big", 70_000))
        doc = db._engine.catalog.doc(db.get_id_by_path("/big").bytes)
        assert doc is not None
        ((first, count),) = doc.latest.extents
        image = vfs.crash(keep="all")
        db.close()
    log = bytearray(image.read_file(inputs.DB_PATH + "-wal"))
    at = log.find(struct.pack("<QI", first, count))
    log[at : at + 12] = struct.pack("<QI", 1 << 22, 1 << 24)
    inputs.repair_log(log)
    return inputs.FuzzCase(image.read_file(inputs.DB_PATH), bytes(log)).encode()


def test_logged_extent_past_the_file_does_not_grow_it() -> None:
    """Log replay claims only the pages of a logged extent that lie in the file: pages of
    a logged version are synced before its record, so an extent past the end is damage
    (get() says so), and it once moved the file's end so that the next checkpoint wrote
    ~80 GiB into the file. Found by the fuzzer ("huge-file")."""
    harness.run_one(_logged_extent_past_eof())


def test_damage_is_never_blamed_on_the_caller() -> None:
    """Two fuzzer findings: a header with an all-zero database id (checksum valid) was
    passed on to the reader table, which refused it as InvalidArgumentError; a log whose
    size field claims more than 4 GiB made messages() build a deframer with an invalid
    limit (InvalidArgumentError). Both are damage: the header copy is not taken, and the
    log reads as CorruptionError."""
    outcome = harness.run_one(_header_field(16, 16, 0))
    assert not isinstance(outcome.exception, streamdb.InvalidArgumentError), str(outcome)
    log = harness.run_one(fuzzkit.read_input(harness.CORPUS_DIR / "log-size-past-extents.bin.gz"),
                          memory=False)
    assert isinstance(log.exception, CorruptionError), str(log)
