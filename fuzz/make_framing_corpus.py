#!/usr/bin/env python3
"""Write the seed corpus of the framing fuzzer into `fuzz/corpus/framing/`.

Deterministic: every stream is framed by `streamdb.framing` itself from seeded payloads, then
torn or damaged on purpose. Files are harness inputs (a control byte naming the deframer and
the limits, then the stream: see `fuzz_framing`), named after what they hold.

    python fuzz/make_framing_corpus.py            # rewrite the corpus
    python fuzz/make_framing_corpus.py --check    # and print each file's outcome

tests/framing/test_fuzz_framing.py replays every file; each must decode to payloads or end
in a documented error. Inputs that expose bugs belong in `fuzz/crashes/`, not here.
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_framing as harness
import fuzzkit
from framing_inputs import KINDS, SMALL_LIMIT, Case, frame_all

import streamdb.framing as fr

SEED = 20261122
U32 = struct.Struct("<I")


def flip(data: bytes, at: int, bit: int = 0) -> bytes:
    buf = bytearray(data)
    buf[at] ^= 1 << bit
    return bytes(buf)


def build(rng: random.Random) -> dict[str, Case]:
    corpus: dict[str, Case] = {}
    sizes = (0, 1, 3, 16, 64, 100, 255, 1000, 2, 0)
    payloads = [rng.randbytes(n) for n in sizes]
    small_payloads = [rng.randbytes(n) for n in (0, 1, 7, 63, SMALL_LIMIT, 5)]

    for kind in KINDS:
        hs = Case(kind, False, b"").header_size
        valid = frame_all(kind, payloads)
        last = len(valid) - (hs + len(payloads[-2]) + hs)  # where the second last frame starts
        corpus[f"valid-{kind}"] = Case(kind, False, valid)
        corpus[f"valid-{kind}-small"] = Case(kind, True, frame_all(kind, small_payloads))
        corpus[f"empty-payloads-{kind}"] = Case(kind, False, frame_all(kind, [b""] * 12))
        corpus[f"torn-length-{kind}"] = Case(kind, False, valid + U32.pack(5)[:2])
        if hs > 4:
            corpus[f"torn-checksum-{kind}"] = Case(kind, False,
                                                   valid + frame_all(kind, [b"abcde"])[:hs - 1])
            corpus[f"flipped-checksum-{kind}"] = Case(kind, False, flip(valid, last + 4, 3))
            corpus[f"flipped-payload-{kind}"] = Case(kind, False, flip(valid, last + hs, 7))
        corpus[f"torn-payload-{kind}"] = Case(kind, False,
                                              valid + frame_all(kind, [b"0123456789"])[:-3])
        corpus[f"last-byte-missing-{kind}"] = Case(kind, False, valid[:-1])
        # Lengths: past the small limit but the frame is there (damage, not a torn tail);
        # past the default limit; past the end by one; claiming GiBs the input does not hold.
        over = frame_all(kind, [rng.randbytes(SMALL_LIMIT + 1)])
        corpus[f"over-small-limit-fits-{kind}"] = Case(kind, True, over + valid)
        corpus[f"over-small-limit-torn-{kind}"] = Case(kind, True, over[:-1])
        corpus[f"length-4GiB-minus-1-{kind}"] = Case(kind, False,
                                                     valid + U32.pack(0xFFFFFFFF) + bytes(12))
        corpus[f"length-past-eof-by-1-{kind}"] = Case(
            kind, False, valid + U32.pack(20 - hs + 1) + bytes(20 - 4))
        # A length past the end with whole frames after it (frame 4 of 10): corruption that
        # recover must refuse to cut for a checksummed deframer.
        corrupt = bytearray(valid)
        corrupt[4 * hs + sum(sizes[:4]) + 2] = 0x40
        corpus[f"length-past-eof-frames-follow-{kind}"] = Case(kind, False, bytes(corrupt))
    # A "torn tail" longer than one frame, for a deframer that cannot check frames.
    corpus["unchecked-tail-over-4KiB-default"] = Case(
        "default", False, frame_all("default", [b"x" * 10]) + U32.pack(1 << 20) + b"y" * 5000)
    # Past the default limit of 2 GiB, at it, and lengths below it that claim more than the
    # input holds (UnexpectedEof, and no buffer sized from them).
    corpus["length-2GiB-plus-1-default"] = Case("default", False,
                                                U32.pack(fr.MAX_FRAME_LEN + 1) + bytes(8))
    corpus["length-2GiB-xxh3"] = Case("xxh3", False, U32.pack(fr.MAX_FRAME_LEN) + bytes(16))
    corpus["length-1GiB-crc32"] = Case("crc32", False, frame_all("crc32", payloads[:3])
                                       + U32.pack(1 << 30) + bytes(10))
    corpus["length-16MiB-crc16-small"] = Case("crc16", True, U32.pack(16 << 20) + bytes(3))
    # Frames larger than the read and buffer sizes of the readers.
    corpus["large-frames-default"] = Case("default", False,
                                          frame_all("default", [rng.randbytes(20_000),
                                                                b"x" * 9000, b""]))
    corpus["large-frame-xxh3"] = Case("xxh3", False, frame_all("xxh3", [rng.randbytes(17_000)]))

    # Not framed streams at all.
    corpus["empty"] = Case("default", False, b"")
    corpus["empty-small-crc16"] = Case("crc16", True, b"")
    corpus["zeros-default"] = Case("default", False, bytes(64))
    corpus["zeros-crc32"] = Case("crc32", False, bytes(64))
    corpus["all-ff-xxh3"] = Case("xxh3", False, b"\xff" * 40)
    corpus["text-crc16"] = Case("crc16", False, b"this is not a framed stream\n" * 3)

    # TLV records (every input also goes through the TLV decoder).
    values = [rng.randbytes(n) for n in (0, 1, 5, 64, 300)]
    tlv = b"".join(fr.encode_tlv(tag, v) for tag, v in zip((0, 1, 7, 200, 255), values,
                                                              strict=True))
    corpus["tlv-valid"] = Case("default", False, tlv)
    corpus["tlv-valid-small"] = Case("default", True, b"".join(
        fr.encode_tlv(9, v) for v in values[:4]))
    corpus["tlv-torn-header"] = Case("default", False, tlv + b"\x05\x01\x00")
    corpus["tlv-torn-value"] = Case("default", False, tlv + fr.encode_tlv(3, b"abcdef")[:-2])
    corpus["tlv-over-small-limit"] = Case("default", True, tlv)
    corpus["tlv-length-4GiB-minus-1"] = Case("default", False,
                                             tlv + b"\x01" + U32.pack(0xFFFFFFFF) + bytes(4))
    corpus["tlv-length-16MiB"] = Case("crc32", False, b"\x02" + U32.pack(16 << 20) + bytes(9))
    return corpus


def main() -> int:
    return fuzzkit.corpus_main(__doc__, build, seed=SEED, out=harness.CORPUS_DIR,
                               run_one=harness.run_one, signature=harness.signature,
                               width=40)


if __name__ == "__main__":
    sys.exit(main())
