#!/usr/bin/env python3
"""Fuzzer for framed message streams and TLV (`streamdb.framing`): hostile bytes must decode to
payloads or stop with a documented error, the same whatever the pieces they arrive in, in
bounded memory and time.

    python fuzz/fuzz_framing.py --seconds 60        # mutate the corpus and generated streams
    python fuzz/fuzz_framing.py FILE_OR_DIR...      # replay inputs, print their outcomes
    python fuzz/fuzz_framing.py --atheris [-- ARGS] # coverage-guided (atheris)

Input: byte 0 is a control byte, the rest is the stream S (an empty input is an empty stream).

    bits 0-2   the deframer, value mod 5: 0 DefaultDeframer; ChecksumDeframer with 1 XXH3-64,
               2 CRC-32, 3 CRC-16, 4 a custom 3-byte checksum (Adler-32, stored mod 2**24)
    bit 3      small limits: max_frame_len and the TLV max_value_len are SMALL_LIMIT bytes
               (otherwise the defaults, 2 GiB and 16 MiB)
    bits 4-7   unused (the same stream again)

Piece sizes, read sizes and buffer sizes come from a generator seeded with the CRC-32 of the
input, so a replay is exact. The target (`run_one`) runs, on S:

1. `FrameDecoder` fed S in one piece: the reference (payloads, then a clean end or one error);
2. `FrameDecoder` fed S byte by byte (short inputs), in pieces of 1..16 bytes and in random
   pieces of any size, as bytes, bytearray (overwritten once fed) and memoryview;
3. `StreamReader`: `messages()` over `io.BytesIO` (a random and the default read size),
   `read_message()` over a source giving short reads, `messages()` over an
   `io.BufferedReader` (the read semantics of a real file, in memory), `process_all`, and
   `read_message()` called at random between the items of one `messages()` iterator;
4. re-framing what came out with the matching framer: `StreamWriter.write_many` and `write()`
   (random buffer sizes; `BoundedFramer` under small limits) and `frame()`, the payloads as
   bytes, bytearray, or memoryviews of bytes or of 2- and 4-byte items;
5. `recover(io.BytesIO(S))`, with and without `truncate=True`, against an oracle written from
   the rules of docs/format/framing.md ("Recovery"): a backward pass over every offset after
   the point where decoding stopped, finding the first chain of valid frames that proves
   the bytes there corrupt rather than torn;
6. `TlvDecoder` on S, in one piece and in random pieces, and `TlvEncoder` on what came out.

Accepted: payloads, then a clean end, `UnexpectedEof`, `FrameTooLarge` or `ChecksumMismatch`
(TLV: the first two); from `recover`, also `TailNotTorn` where the rules refuse the tail. A
bug (`HarnessBug`, or an exception named after its type and the innermost `streamdb`
function): any other exception; payloads, error type or offset, or consumed prefix that
differ from the reference in any step; re-framed payloads that are not the consumed prefix of
S byte for byte; error details that do not match the bytes (offset, `FrameTooLarge.length`,
`ChecksumMismatch.expected`/`computed`); a payload that is writable or changes after it was
handed out (zero copy: a view stays valid); `recover` disagreeing with the reference or the
oracle (cutting a tail that valid frames follow, a refusal naming another frame, a refusal
for the work limit when all of the search is within it), raising after changing the file, or
truncating anything but a torn tail; a step whose tracemalloc peak passes
`MEMORY_BASE + MEMORY_PER_BYTE * len(input)` (a claimed length must not size a buffer); an
input running past `TIME_LIMIT` seconds (watchdog). Bugs are saved to fuzz/crashes/
(`framing-<signature>-<sha1>.bin`, minimized, with a `.txt` traceback).

The seed corpus is fuzz/corpus/framing/ (written by fuzz/make_framing_corpus.py); the
fuzzer adds streams it generates itself. The input model and its mutations are in
fuzz/framing_inputs.py, the machinery every harness shares (the mutator, bugs, the fuzzer
loops, the command line, atheris) in fuzz/fuzzkit/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from framing_inputs import (  # noqa: E402
    Case,
    FramedStream,
    generated,
)
from fuzzkit import HarnessBug  # noqa: E402
from fuzzkit.limits import tracing_memory  # noqa: E402

import streamdb.framing as fr  # noqa: E402
from streamdb.errors import (  # noqa: E402
    ChecksumMismatch,
    CorruptionError,
    FrameTooLarge,
    UnexpectedEof,
)
from streamdb.framing.recover import (  # noqa: E402
    CANDIDATE_WORK,
    SCAN_WORK_MAX,
    SCAN_WORK_PER_BYTE,
    UNCHECKED_TAIL,
)

CORPUS_DIR = FUZZ_DIR / "corpus" / "framing"
LIB_DIR = Path(fr.__file__).resolve().parents[1]  # streamdb/

TIME_LIMIT = 2.0  # seconds per input
MEMORY_BASE = 1 << 20  # traced bytes a step may peak at, plus MEMORY_PER_BYTE per input byte
MEMORY_PER_BYTE = 64
BYTE_BY_BYTE = 512  # inputs up to this long are also fed one byte at a time
MAX_READ_SIZE = 64 << 10  # of sources that allocate what they are asked for

ACCEPTED: tuple[type[Exception], ...] = (UnexpectedEof, FrameTooLarge, ChecksumMismatch)
TLV_ACCEPTED: tuple[type[Exception], ...] = (UnexpectedEof, FrameTooLarge)
# -- decoding, step by step -------------------------------------------------------------------


@dataclasses.dataclass
class Decoded:
    """What one way of decoding S gave: payloads (and TLV tags), how it ended, and where."""

    payloads: list[bytes]
    tags: list[int]
    error: Exception | None
    consumed: int

    @property
    def ending(self) -> str:
        return "clean" if self.error is None else type(self.error).__name__

    @property
    def error_offset(self) -> int | None:
        return None if self.error is None else getattr(self.error, "offset", None)


class Views:
    """Handed-out payloads: a copy taken at once, and the view, compared again at the end."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.views: list[memoryview] = []
        self.copies: list[bytes] = []

    def add(self, view: memoryview) -> None:
        if not isinstance(view, memoryview):
            raise HarnessBug(f"payload-type: {self.step}", f"a {type(view).__name__}")
        if not view.readonly:
            raise HarnessBug(f"writable-payload: {self.step}", f"payload {len(self.views)}")
        self.views.append(view)
        self.copies.append(bytes(view))

    def check(self) -> list[bytes]:
        for i, (view, copy) in enumerate(zip(self.views, self.copies, strict=True)):
            if view != copy:
                raise HarnessBug(f"payload-changed: {self.step}",
                                 f"payload {i} changed after it was handed out")
        return self.copies


def step(name: str, budget: int) -> contextlib.AbstractContextManager[None]:
    """One step of the target: any exception is a bug named after the step (see
    `fuzzkit.step`), and its traced peak must stay within `budget` bytes."""
    return fuzzkit.step(name, budget, (LIB_DIR,))


def split(data: bytes, rng: random.Random, low: int, high: int) -> list[bytes]:
    pieces, pos = [], 0
    span, draw = high - low + 1, rng.random
    while pos < len(data):
        n = low + int(draw() * span)
        pieces.append(data[pos : pos + n])
        pos += n
    return pieces


def splittings(data: bytes, rng: random.Random) -> list[tuple[str, list[bytes]]]:
    out: list[tuple[str, list[bytes]]] = []
    if len(data) <= BYTE_BY_BYTE:
        out.append(("byte by byte", [data[i : i + 1] for i in range(len(data))]))
    out.append(("pieces of 1..16 bytes", split(data, rng, 1, 16)))
    out.append(("random pieces", split(data, rng, 1, max(1, len(data)))))
    # Empty pieces among short ones.
    out.append(("with empty pieces", [b"", *split(data, rng, 0, 40), b""]))
    return out


def feed_kinds(pieces: list[bytes], rng: random.Random) -> Iterator[bytes | bytearray
                                                                   | memoryview]:
    """Each piece as bytes, a bytearray or a memoryview of one; a mutable piece is
    overwritten once the consumer has had it (the decoder must have copied it)."""
    for piece in pieces:
        roll = rng.random()
        if roll < 0.4:
            yield piece
            continue
        scratch = bytearray(piece)
        yield scratch if roll < 0.7 else memoryview(scratch)
        scratch[:] = b"\xa5" * len(scratch)


def decode_frames(case: Case, pieces: list[bytes], rng: random.Random, name: str) -> Decoded:
    decoder = fr.FrameDecoder(case.deframer())
    views = Views(name)
    error: Exception | None = None
    try:
        for piece in feed_kinds(pieces, rng):
            decoder.feed(piece)
            while (payload := decoder.next_payload()) is not None:
                views.add(payload)
        decoder.end()
        if decoder.next_payload() is not None:
            raise HarnessBug(f"payload-after-end: {name}", "next_payload() after end()")
    except ACCEPTED as exc:
        error = exc
    payloads = views.check()
    if decoder.frames != len(payloads):
        raise HarnessBug(f"frame-count: {name}", f"frames {decoder.frames}, {len(payloads)} "
                         "payloads")
    return Decoded(payloads, [], error, decoder.buffer.offset)


class ShortReads:
    """A socket-like source (`recv`) returning 1..n bytes per call, sometimes a bytearray."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self.data, self.pos, self.rng = data, 0, rng

    def recv(self, n: int) -> bytes | bytearray:
        k = self.rng.randint(1, max(1, n))
        out = self.data[self.pos : self.pos + k]
        self.pos += len(out)
        return bytearray(out) if self.rng.random() < 0.2 else out


def read_stream(case: Case, source: Any, how: str, read_size: int | None, name: str,
                rng: random.Random) -> Decoded:
    kwargs = {} if read_size is None else {"read_size": read_size}
    reader = fr.StreamReader(source, case.deframer(), **kwargs)
    views = Views(name)
    error: Exception | None = None
    try:
        if how == "mixed":  # read_message() calls between the items of one messages()
            items = reader.messages()
            while True:
                if rng.random() < 0.4:
                    if (message := reader.read_message()) is None:
                        if next(items, None) is not None:
                            raise HarnessBug(f"payload-after-end: {name}",
                                             "messages() went on after read_message() ended")
                        break
                    views.add(message)
                elif (item := next(items, None)) is not None:
                    views.add(item)
                else:
                    break
        elif how == "messages":
            for payload in reader.messages():
                views.add(payload)
        elif how == "iter":
            for payload in reader:
                views.add(payload)
        elif how == "process_all":
            reader.process_all(views.add)
        else:
            while (message := reader.read_message()) is not None:
                views.add(message)
            if reader.read_message() is not None:
                raise HarnessBug(f"payload-after-end: {name}", "read_message() after None")
    except ACCEPTED as exc:
        error = exc
    return Decoded(views.check(), [], error, reader._decoder.buffer.offset)


def decode_tlv(case: Case, pieces: list[bytes], rng: random.Random, name: str) -> Decoded:
    decoder = fr.TlvDecoder(case.tlv_limit)
    views = Views(name)
    tags: list[int] = []
    error: Exception | None = None
    try:
        for piece in feed_kinds(pieces, rng):
            decoder.feed(piece)
            for record in decoder.records():
                if not 0 <= record.tag <= 255:
                    raise HarnessBug(f"tlv-tag: {name}", f"tag {record.tag}")
                tags.append(record.tag)
                views.add(record.value)
        decoder.end()
    except TLV_ACCEPTED as exc:
        error = exc
    return Decoded(views.check(), tags, error, decoder.buffer.offset)


# -- the oracle -------------------------------------------------------------------------------


def same(ref: Decoded, got: Decoded, name: str) -> None:
    """`got` must be `ref`: payloads, tags, ending, error offset and consumed prefix."""
    if got.payloads != ref.payloads or got.tags != ref.tags:
        first = next((i for i, (a, b) in enumerate(zip(ref.payloads, got.payloads, strict=False))
                      if a != b), min(len(ref.payloads), len(got.payloads)))
        raise HarnessBug(f"payloads-differ: {name}",
                         f"{len(got.payloads)} payloads against {len(ref.payloads)} in one "
                         f"piece, first difference at {first}")
    if (got.ending, got.error_offset, got.consumed) != (ref.ending, ref.error_offset,
                                                        ref.consumed):
        raise HarnessBug(f"ending-differs: {name}",
                         f"{got.ending} at {got.error_offset}, consumed {got.consumed}; in one "
                         f"piece {ref.ending} at {ref.error_offset}, consumed {ref.consumed}")


def check_reference(case: Case, ref: Decoded) -> None:
    """The reference decoding against the bytes themselves."""
    s, hs, limit = case.stream, case.header_size, case.limit
    name = "FrameDecoder, one piece"
    if ref.error is None:
        if ref.consumed != len(s):
            raise HarnessBug(f"clean-end-short: {name}", f"{ref.consumed} of {len(s)} bytes")
        return
    at = ref.error_offset
    if at != ref.consumed:
        raise HarnessBug(f"error-offset: {name}", f"{ref.ending} at {at}, consumed "
                         f"{ref.consumed}")
    rest = len(s) - at
    length = struct.unpack_from("<I", s, at)[0] if rest >= 4 else None
    if isinstance(ref.error, UnexpectedEof):
        if rest <= 0 or (length is not None and length <= limit and hs + length <= rest):
            raise HarnessBug(f"eof-on-whole-frame: {name}", f"{rest} bytes left at {at}")
    elif isinstance(ref.error, FrameTooLarge):
        if length is None or length <= limit or (ref.error.length, ref.error.limit) != (
                length, limit):
            raise HarnessBug(f"frame-too-large-details: {name}",
                             f"length {length} at {at}, error {ref.error}")
    elif isinstance(ref.error, ChecksumMismatch):
        checksum = case.checksum()
        if checksum is None or length is None or hs + length > rest:
            raise HarnessBug(f"checksum-mismatch-without-frame: {name}", str(ref.error))
        stored = int.from_bytes(s[at + 4 : at + hs], "little")
        computed = checksum.compute(s[at + hs : at + hs + length]) % (1 << 8 * checksum.size)
        if (ref.error.expected, ref.error.computed) != (stored, computed) or stored == computed:
            raise HarnessBug(f"checksum-mismatch-details: {name}",
                             f"stored {stored:#x}, computed {computed:#x}, error {ref.error}")


def as_buffer(payload: bytes, rng: random.Random) -> bytes | bytearray | memoryview:
    """`payload` as bytes, a bytearray, or a memoryview of bytes or of wider items (which
    frame their `nbytes`, not their item count)."""
    roll = rng.random()
    if roll < 0.4:
        return payload
    if roll < 0.6:
        return bytearray(payload)
    view = memoryview(payload)
    if roll < 0.8 and payload and len(payload) % 4 == 0:
        return view.cast("I" if roll < 0.7 else "H")
    return view


def check_reframed(case: Case, ref: Decoded, rng: random.Random, budget: int) -> None:
    want = case.stream[: ref.consumed]
    payloads = [as_buffer(p, rng) for p in ref.payloads]
    for how in ("write_many", "write"):
        name = f"StreamWriter.{how}"
        with step(name, budget):
            out = io.BytesIO()
            writer = fr.StreamWriter(out, case.framer(),
                                     buffer_size=rng.choice([0, 1, 7, 64, 4096, 64 << 10]))
            if how == "write_many":
                count = writer.write_many(iter(payloads))
                if count != len(payloads):
                    raise HarnessBug(f"write-many-count: {name}", f"{count} of {len(payloads)}")
            else:
                for payload in payloads:
                    writer.write(payload)
            writer.flush()
            if writer.messages != len(payloads):
                raise HarnessBug(f"writer-messages: {name}", f"{writer.messages}")
            got = out.getvalue()
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False))
                       if a != b), min(len(got), len(want)))
            raise HarnessBug(f"reframed-differs: {name}",
                             f"{len(got)} bytes against the {len(want)} consumed; first "
                             f"difference at {at}")
    framer = case.framer()
    inner = framer.inner if isinstance(framer, fr.BoundedFramer) else framer
    assert isinstance(inner, fr.DefaultFramer)
    if b"".join(inner.frame(p) for p in payloads) != want:
        raise HarnessBug("reframed-differs: Framer.frame", "the frames are not the prefix")


ORACLE_HASH_CAP = 64 << 20  # bytes the recover oracle hashes at most (else it checks less)


@dataclasses.dataclass
class TailVerdict:
    """What the rules of docs/format/framing.md ("Recovery") make of the bytes after the last
    good frame when the decoding stopped inside a frame: `torn` (cut them), or refused with
    `frame_offset` (the first valid frame of a chain proving corruption) or without.
    `work` bounds the work `recover`'s search may spend (each frame checked once)."""

    torn: bool
    frame_offset: int | None
    work: int
    exact: bool  # False: the oracle did not hash everything (too costly), verdict unknown


def tail_verdict(case: Case, ref: Decoded) -> TailVerdict:
    """The oracle, written from the documented rules, independently of recover.py: a
    backward pass over every offset after the bad point, each frame checked once."""
    s, hs, good = case.stream, case.header_size, ref.consumed
    checksum = case.checksum()
    if checksum is None or checksum.size == 0:
        largest = max((len(p) for p in ref.payloads), default=0)
        too_long = len(s) - good > max(UNCHECKED_TAIL, hs + largest)
        return TailVerdict(not too_long, None, 0, True)
    k = checksum.size
    need = -(-32 // (8 * k))  # frames carrying 32 bits of checksum in all
    end = len(s)
    lengths: dict[int, int] = {}
    work = hashed = 0
    for pos in range(good + 1, end - hs + 1):
        n = struct.unpack_from("<I", s, pos)[0]
        if n <= case.limit and pos + hs + n <= end:
            lengths[pos] = n
            work += CANDIDATE_WORK + n
            hashed += n
    if hashed > ORACLE_HASH_CAP:
        return TailVerdict(False, None, work, False)
    # chain[pos] = (evidence frames, at most `need`; whether the chain ends exactly at the end)
    chain: dict[int, tuple[int, bool]] = {end: (0, True)}
    for pos in range(end - 1, good, -1):
        n = lengths.get(pos)
        if n is None:
            chain[pos] = (0, False)
            continue
        stored = int.from_bytes(s[pos + 4 : pos + hs], "little")
        payload = s[pos + hs : pos + hs + n]
        if checksum.compute(payload) % (1 << 8 * k) != stored:
            chain[pos] = (0, False)
            continue
        own = 0 if stored == 0 and payload == bytes(n) else 1  # zero fill proves nothing
        evidence, at_end = chain[pos + hs + n]
        chain[pos] = (min(need, own + evidence), at_end)
    for pos in range(good + 1, end - hs + 1):
        if s[pos : pos + hs] == bytes(hs):  # a chain never starts in zero fill
            continue
        evidence, at_end = chain[pos]
        if evidence >= need or (at_end and evidence >= 1 and evidence + 1 >= need):
            return TailVerdict(False, pos, work, True)
    return TailVerdict(True, None, work, True)


def proves(case: Case, pos: int) -> bool:
    """Whether the chain of valid frames from `pos` proves valid data (forward walk)."""
    s, hs = case.stream, case.header_size
    checksum = case.checksum()
    assert checksum is not None
    need = -(-32 // (8 * checksum.size))
    evidence = 0
    while pos + hs <= len(s):
        n = struct.unpack_from("<I", s, pos)[0]
        if n > case.limit or pos + hs + n > len(s):
            return False
        stored = int.from_bytes(s[pos + 4 : pos + hs], "little")
        payload = s[pos + hs : pos + hs + n]
        if checksum.compute(payload) % (1 << 8 * checksum.size) != stored:
            return False
        evidence += 0 if stored == 0 and payload == bytes(n) else 1
        pos += hs + n
        if evidence >= need or (pos == len(s) and evidence >= 1 and evidence + 1 >= need):
            return True
    return False


def check_recover(case: Case, ref: Decoded, budget: int) -> str:
    """`recover` against the reference decoding and the oracle: damage reported (a length
    above the limit included, wherever it ends), a torn tail cut only with `truncate`, and
    TailNotTorn, leaving the file as it was, exactly when the rules refuse the tail. Returns
    what recover did: clean, damage, torn, corrupt (valid frames follow) or refused."""
    s = case.stream
    stopped_inside = isinstance(ref.error, UnexpectedEof)
    error = None if stopped_inside else ref.error
    verdict = tail_verdict(case, ref) if stopped_inside else None
    tail = len(s) - ref.consumed
    outcome = "clean" if ref.error is None else "damage" if error is not None else "torn"
    for truncate in (False, True):
        name = f"recover(truncate={truncate})"
        refused: fr.TailNotTorn | None = None
        with step(name, budget):
            file = io.BytesIO(s)
            try:
                result = fr.recover(file, case.deframer(), truncate=truncate)
            except fr.TailNotTorn as exc:
                refused = exc
            after = file.getvalue()
        if refused is not None:
            if after != s:
                raise HarnessBug(f"recover-modified: {name}",
                                 f"raised {refused!r} and left {len(after)} of {len(s)} bytes")
            check_refusal(case, ref, verdict, refused, name)
            outcome = "refused" if refused.frame_offset is None else "corrupt"
            continue
        torn = stopped_inside
        if verdict is not None and verdict.exact and not verdict.torn:
            raise HarnessBug(f"recover-cut-untorn: {name}",
                             f"{tail} bytes at {ref.consumed} are not a torn tail (valid "
                             f"frame at {verdict.frame_offset}), recover said torn")
        expect = (len(ref.payloads), ref.consumed, len(s), torn, truncate and torn)
        got = (result.frames, result.good_offset, result.size, result.torn, result.truncated)
        if got != expect:
            raise HarnessBug(f"recover-differs: {name}", f"(frames, good_offset, size, torn, "
                             f"truncated) {got}, expected {expect} ({ref.ending})")
        if type(result.error) is not type(error) or (
                error is not None and getattr(result.error, "offset", None) != ref.consumed):
            raise HarnessBug(f"recover-error-differs: {name}",
                             f"{result.error!r}, expected {error!r}")
        if result.clean != (error is None and not torn):
            raise HarnessBug(f"recover-clean: {name}", f"{result}")
        if after != (s[: ref.consumed] if truncate and torn else s):
            raise HarnessBug(f"recover-modified: {name}",
                             f"{len(after)} bytes left of {len(s)}, torn={torn}")
    return outcome


def check_refusal(case: Case, ref: Decoded, verdict: TailVerdict | None,
                  exc: fr.TailNotTorn, name: str) -> None:
    """TailNotTorn must be what the oracle says, or a search that passed its work limit."""
    s, tail = case.stream, len(case.stream) - ref.consumed
    if verdict is None:
        raise HarnessBug(f"recover-refused-damage: {name}", f"{exc!r} after {ref.ending}")
    if not isinstance(exc, CorruptionError) or (exc.offset, exc.tail) != (ref.consumed, tail):
        raise HarnessBug(f"recover-refusal-details: {name}",
                         f"{exc!r}: offset {exc.offset}, tail {exc.tail}; expected "
                         f"{ref.consumed}, {tail}")
    found = exc.frame_offset
    if found is not None:
        if verdict.exact:
            right = found == verdict.frame_offset
        else:  # at least a chain that proves, not starting in zero fill
            right = (ref.consumed < found and proves(case, found)
                     and any(s[found : found + case.header_size]))
        if not right:
            raise HarnessBug(f"recover-refusal-frame: {name}",
                             f"valid frame at {found}, expected {verdict.frame_offset}")
        return
    if case.checksum() is None:  # a deframer without checksums: the size rule
        if verdict.torn:
            raise HarnessBug(f"recover-refused-torn: {name}", f"{exc!r}")
        return
    budget = min(SCAN_WORK_MAX, SCAN_WORK_PER_BYTE * tail)
    if verdict.work <= budget:  # the search cannot have passed its limit
        raise HarnessBug(f"recover-refused-within-budget: {name}",
                         f"{exc!r}; all of the search is {verdict.work} of {budget}")


def check_tlv(case: Case, ref: Decoded) -> None:
    s, limit = case.stream, case.tlv_limit
    name = "TlvDecoder, one piece"
    if ref.error is None:
        if ref.consumed != len(s):
            raise HarnessBug(f"clean-end-short: {name}", f"{ref.consumed} of {len(s)} bytes")
    else:
        at = ref.error_offset
        rest = len(s) - ref.consumed
        length = struct.unpack_from("<I", s, ref.consumed + 1)[0] if rest >= 5 else None
        if at != ref.consumed:
            raise HarnessBug(f"error-offset: {name}", f"{ref.ending} at {at}")
        if isinstance(ref.error, FrameTooLarge):
            if length is None or length <= limit or ref.error.length != length:
                raise HarnessBug(f"frame-too-large-details: {name}", str(ref.error))
        elif rest <= 0 or (length is not None and length <= limit and 5 + length <= rest):
            raise HarnessBug(f"eof-on-whole-record: {name}", f"{rest} bytes left at {at}")
    encoder = fr.TlvEncoder()
    want = s[: ref.consumed]
    joined = b"".join(encoder.encode(t, v) for t, v in zip(ref.tags, ref.payloads, strict=True))
    into = bytearray()
    for t, v in zip(ref.tags, ref.payloads, strict=True):
        encoder.encode_into(into, t, memoryview(v))
    if joined != want or into != want:
        raise HarnessBug("reencoded-differs: TlvEncoder", "the records are not the prefix")


def run_one(data: bytes, memory: bool = True) -> str:
    """The target. Returns the outcome's name; raises on a bug. With `memory`, every step's
    traced peak is checked (tracemalloc is started if it is off)."""
    with tracing_memory(memory), fuzzkit.watchdog(TIME_LIMIT):
        return _run(data)


def _run(data: bytes) -> str:
    case = Case.decode(data)
    s = case.stream
    rng = random.Random(zlib.crc32(data))
    budget = MEMORY_BASE + MEMORY_PER_BYTE * len(data)

    name = "FrameDecoder, one piece"
    with step(name, budget):
        ref = decode_frames(case, [s], rng, name)
    check_reference(case, ref)
    for label, pieces in splittings(s, rng):
        name = f"FrameDecoder, {label}"
        with step(name, budget):
            same(ref, decode_frames(case, pieces, rng, name), name)

    read_size = rng.randint(1, max(1, len(s) + 5))
    tiny = 1 if len(s) <= 4096 else 64  # one read per byte: short inputs only
    readers: list[tuple[str, Callable[[], Any], str, int | None]] = [
        ("StreamReader.messages, BytesIO, random read_size",
         lambda: io.BytesIO(s), "messages", read_size),
        ("StreamReader.messages, BytesIO, default read_size",
         lambda: io.BytesIO(s), "messages", None),
        ("StreamReader.read_message, short reads", lambda: ShortReads(s, rng), "read_message",
         rng.choice([tiny, 3, 64, 4096])),
        ("StreamReader.process_all, BytesIO, small read_size", lambda: io.BytesIO(s),
         "process_all", tiny),
        ("StreamReader, messages() and read_message() interleaved", lambda: io.BytesIO(s),
         "mixed", rng.randint(1, 80)),
        ("StreamReader, messages() and read_message() interleaved, short reads",
         lambda: ShortReads(s, rng), "mixed", rng.choice([16, 64, 4096])),
        ("StreamReader over BufferedReader: messages()",
         lambda: io.BufferedReader(io.BytesIO(s), rng.choice([tiny, 16, 8192])), "messages",
         rng.choice([tiny, 7, 4096, MAX_READ_SIZE])),
        ("StreamReader over BufferedReader: iter, default buffer",
         lambda: io.BufferedReader(io.BytesIO(s)), "iter", rng.choice([5, 100, 8192])),
    ]
    for name, make, how, size in readers:
        with step(name, budget + (size or 0)):
            same(ref, read_stream(case, make(), how, size, name, rng), name)

    check_reframed(case, ref, rng, budget)
    recovered = check_recover(case, ref, budget)

    name = "TlvDecoder, one piece"
    with step(name, budget):
        tlv = decode_tlv(case, [s], rng, name)
    check_tlv(case, tlv)
    for label, pieces in splittings(s, rng)[-2:]:
        name = f"TlvDecoder, {label}"
        with step(name, budget):
            same(tlv, decode_tlv(case, pieces, rng, name), name)

    frames = "0" if not ref.payloads else "1" if len(ref.payloads) == 1 else "2+"
    return f"{case.kind}{'/small' if case.small else ''}: {frames} frames, {ref.ending}; " \
           f"recover {recovered}; TLV {tlv.ending}"


# -- the harness ----------------------------------------------------------------------------------


HARNESS = fuzzkit.Harness(
    name="framing", script="fuzz/fuzz_framing.py", corpus_dir=CORPUS_DIR, code_dirs=(LIB_DIR,),
    run=lambda data, memory: run_one(data, memory), fmt=FramedStream(), generate=generated,
    describe=lambda data: f"{Case.decode(data).describe()}, control byte "
    f"{data[:1].hex() or 'none'}, stream {data[1:65].hex()}{'...' if len(data) > 65 else ''}",
    keep=1, minimize_seconds=5.0, time_limit=TIME_LIMIT, pool_limit=1024, fresh_rate=0.0)
signature = HARNESS.signature


def fuzz(seed: int, seconds: float | None = None, max_inputs: int | None = None, *,
         corpus: bool = True, generated_seeds: int = 40, crash_dir: Path | None = None
         ) -> fuzzkit.FuzzStats:
    """The built-in fuzzer (`fuzzkit.fuzz`): every seed once, then mutations of the pool."""
    return fuzzkit.fuzz(HARNESS, seed=seed, seconds=seconds, max_inputs=max_inputs,
                        corpus_dirs=None if corpus else [], generated_seeds=generated_seeds,
                        crash_dir=crash_dir)


if __name__ == "__main__":
    from fuzzkit.cli import main

    sys.exit(main(lambda strict: HARNESS, __doc__))
