"""Replays the framing fuzzer (fuzz/fuzz_framing.py) in the test suite, and the bugs it found.

Every file of fuzz/corpus/framing/ and a fixed, seeded run of 400 inputs (the corpus, 20
generated streams, then mutations) go through the harness target: `FrameDecoder` in one
piece and in many, `StreamReader` over several sources, re-framing, `recover` (against an
oracle of the rules of docs/format/framing.md, "Recovery"), `TlvDecoder`. Accepted:
payloads, then a clean end or `UnexpectedEof`, `FrameTooLarge`, `ChecksumMismatch` (from
`recover`, also `TailNotTorn` where the rules refuse); the harness raises on anything else
(another exception, results that depend on the piece sizes, re-framed payloads that are not
the consumed input, a step tracing more than 1 MiB + 64 bytes per input byte, more than 2 s
for an input).
"""

from __future__ import annotations

import array
import io
import socket
import struct
import sys
import tracemalloc
from pathlib import Path

import pytest

import streamdb.framing as fr
from streamdb.errors import UnexpectedEof

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import fuzz_framing as harness  # noqa: E402

CORPUS = sorted(harness.CORPUS_DIR.glob("*.bin"))
SEED = 20261122
INPUTS = 400


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 60, f"regenerate it: python {FUZZ_DIR / 'make_framing_corpus.py'}"
    assert sum(p.stat().st_size for p in CORPUS) < 300_000


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_file(path: Path) -> None:
    harness.run_one(path.read_bytes())  # raises on a bug


def test_seeded_fuzz_run() -> None:
    stats = harness.fuzz(SEED, max_inputs=INPUTS, generated_seeds=20, crash_dir=None)
    assert stats.executed == INPUTS
    bugs = [f"{bug.signature} ({stats.hits[bug.signature]} inputs): {len(bug.data)}-byte "
            f"input {bug.data[:40].hex()}...\n{bug.error}" for bug in stats.bugs]
    hint = (f"\nReproduce and save minimized inputs: python fuzz/fuzz_framing.py "
            f"--max-inputs {INPUTS} --seed {SEED}\n")
    assert not bugs, hint + "\n\n".join(bugs)
    endings = {label.split("; ")[0].split(", ")[-1] for label in stats.outcomes}
    assert {"clean", "UnexpectedEof", "FrameTooLarge", "ChecksumMismatch"} <= endings
    recovered = {label.split("; ")[1] for label in stats.outcomes}
    assert {f"recover {r}" for r in ("clean", "damage", "torn", "corrupt")} <= recovered


# -- bugs the fuzzer found ---------------------------------------------------------------------
# The first four were fixed in f84104e; the last fails until messages() notices that
# read_message() moved it to another buffer.

HOSTILE = struct.pack("<I", 0x7FFF_FFF0) + b"x" * 10  # claims 2 GiB - 16 bytes, holds 10


def traced_peak(read: object) -> int:
    tracemalloc.start()
    try:
        reader = fr.StreamReader(read)
        with pytest.raises(UnexpectedEof):
            list(reader.messages())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_claimed_length_does_not_size_a_file_read(tmp_path: Path) -> None:
    """A 14-byte file whose length claims 2 GiB (below the default max_frame_len) must not
    make the reader allocate 2 GiB: `BufferedReader.read(n)` (like `socket.recv(n)`)
    allocates n bytes before reading, so reads are sized by what has arrived, never by the
    claimed length (it once asked for the whole claimed frame at once)."""
    path = tmp_path / "hostile.bin"
    path.write_bytes(HOSTILE)
    with open(path, "rb") as f:
        peak = traced_peak(f)
    assert peak < 1 << 20, f"traced peak {peak:,} bytes for a {len(HOSTILE)}-byte file"


def test_a_claimed_length_does_not_size_a_socket_read() -> None:
    a, b = socket.socketpair()
    try:
        a.sendall(HOSTILE)
        a.close()
        peak = traced_peak(b)
    finally:
        b.close()
    assert peak < 1 << 20, f"traced peak {peak:,} bytes for {len(HOSTILE)} bytes received"


def test_write_many_frames_the_bytes_of_a_multibyte_memoryview() -> None:
    """`write()` frames `nbytes`; `write_many()` packs `len()`, the item count, for the plain
    framer: a memoryview of 3 u32 gets a length of 3 and 12 bytes of payload."""
    payload = memoryview(array.array("I", [1, 2, 3]))
    one, many = io.BytesIO(), io.BytesIO()
    with fr.StreamWriter(one) as w:
        w.write(payload)
    with fr.StreamWriter(many) as w:
        w.write_many([payload])
    assert one.getvalue() == struct.pack("<I", 12) + payload.tobytes()
    assert many.getvalue() == one.getvalue()


def test_recover_truncates_a_bytesio() -> None:
    """`recover(truncate=True)` on an in-memory file truncates it, then raises
    io.UnsupportedOperation from `fileno()` (for the fsync), losing the Recovery."""
    framed = fr.DefaultFramer().frame(b"abc")
    f = io.BytesIO(framed + framed[:5])
    result = fr.recover(f, truncate=True)
    assert (result.frames, result.good_offset, result.torn, result.truncated) == (
        1, len(framed), True, True)
    assert f.getvalue() == framed


def test_messages_resumed_after_read_message_moved_to_a_new_buffer() -> None:
    """`messages()` resumes its inline loop when `b.pos == stop`, but read_message() may
    have joined a new buffer where the read position happens to equal `stop` again: the
    loop then goes on over the old buffer, repeating F3 and F4, and sets `b.pos` from it,
    losing F6 and F7 (the stream still ends cleanly)."""
    payloads = [b"F1__", b"F2__", b"F3__", b"F4__", b"F5" + b"_" * 10, b"F6__", b"F7__"]
    data = b"".join(fr.DefaultFramer().frame(p) for p in payloads)
    # The first read holds F1..F4 and F5's length: F5 (12 bytes) ends at 16 in the joined
    # buffer, where F2 ended in the first one.
    reader = fr.StreamReader(io.BytesIO(data), read_size=36)
    items = reader.messages()
    got = [bytes(next(items)), bytes(next(items))]  # F1 (a refill), F2 (the inline loop)
    got += [bytes(m) for m in (reader.read_message(), reader.read_message(),
                               reader.read_message()) if m is not None]
    got += [bytes(p) for p in items]
    assert got == payloads
