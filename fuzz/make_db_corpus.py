#!/usr/bin/env python3
"""Writes fuzz/corpus/db/: the seed corpus of fuzz/fuzz_db_open.py. Deterministic.

    python fuzz/make_db_corpus.py [--out DIR]

Valid images (databases closed cleanly, with or without their log; power-loss images; a
database with enough paths for internal tree pages) and damaged ones (empty, zeros,
foreign, a torn magic, a newer format version, one or both header copies damaged,
truncations, swapped and stale tree pages, a checksum-repaired bad tree reference, a log
with a flipped payload). Files over 16 KiB are gzipped (`.bin.gz`); document bytes are
repetitive so that they compress. Inputs that expose a known bug are not included: they
live in fuzz/crashes/ until the bug is fixed, then join the corpus.

Transformed ones (the control byte opens them with the codec and/or the harness's test
key, see fuzz_db_open.py; named after the codec and "aes"): valid compressed and/or
encrypted images, closed and cut by a power loss, two with a document on pages; opened
without the key or with it on a plain database; the key check damaged or of an unknown
scheme; the encrypted flag cleared; chunks sealed under the wrong nonce; a damaged
compressed chunk read in quick mode; and hostile codec frames stored in place of a
compressed chunk (checksummed and sealed as usual, so they reach the decoder): a zstd frame
claiming 1 GiB, one without a content size, ones producing more or less than they claim, a
snappy block claiming 4 GiB or producing more, an lz4 block producing more; and a 40 MiB
zstd document, more than the harness's max_document_size.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_db_open as h
import fuzzkit
import lz4.block
import zstandard

import streamdb
from streamdb.storage import docio, transform
from wal.memvfs import MemoryVFS

PAGE = h.PAGE


def _valid() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(10):
        out[f"closed-{i:02d}"] = h.build_database(random.Random(100 + i), with_log=i % 2 == 0)
    for i, keep in enumerate(("none", "all", "random", "all", "random", "none")):
        out[f"power-loss-{keep}-{i}"] = h.build_database(random.Random(200 + i), crash=keep)
    out["many-paths"] = h.build_database(random.Random(300), many=True, with_log=False)
    out["many-paths-power-loss"] = h.build_database(random.Random(301), many=True, crash="all")
    return out


def _damage(db: bytes, change: Callable[[bytearray], None], *, log: bytes | None = None) -> bytes:
    buf = bytearray(db)
    change(buf)
    return h.FuzzCase(bytes(buf), log).encode()


def _set(at: int, value: bytes, repair: int | None = None) -> Callable[[bytearray], None]:
    def change(buf: bytearray) -> None:
        buf[at : at + len(value)] = value
        if repair is not None:
            h.repair_header(buf, repair)
    return change


def _damaged(valid: dict[str, bytes]) -> dict[str, bytes]:
    base = h.FuzzCase.decode(valid["closed-00"])
    many = h.FuzzCase.decode(valid["many-paths"])
    crashed = h.FuzzCase.decode(valid["power-loss-all-1"])
    db = base.db
    pages = h.tree_pages(db)

    def swap(buf: bytearray) -> None:
        a, b = pages[0], pages[-1]
        buf[a : a + PAGE], buf[b : b + PAGE] = buf[b : b + PAGE], buf[a : a + PAGE]

    def both(buf: bytearray) -> None:
        buf[100] ^= 0xFF
        buf[PAGE + 100] ^= 0xFF

    def stale(buf: bytearray) -> None:  # a tree page of another database at the same place
        other = many.db
        at = h.tree_pages(buf)[0]
        buf[at : at + PAGE] = other[at : at + PAGE].ljust(PAGE, b"\0")

    log = bytearray(crashed.wal or b"")
    records = h.log_records(log)
    if records:
        at, length = records[len(records) // 2]
        log[at + 40 + length // 2] ^= 0x10
    log_flipped = bytes(log)
    h.repair_log(log)
    return {
        "empty": b"",
        "zeros-8k": h.FuzzCase(bytes(2 * PAGE)).encode(),
        "foreign": h.FuzzCase(b"SQLite format 3\0".ljust(2 * PAGE, b"\0")).encode(),
        "torn-magic": h.FuzzCase(b"\x89SDB").encode(),
        "newer-version": _damage(db, _set(8, (2).to_bytes(2, "little"), repair=0)),
        "header-a-damaged": _damage(db, _set(100, bytes([db[100] ^ 0xFF]))),
        "both-headers-damaged": _damage(db, both),
        "truncated-to-headers": h.FuzzCase(db[: 2 * PAGE]).encode(),
        "truncated-mid-page": h.FuzzCase(db[: len(db) - 1000]).encode(),
        "tree-pages-swapped": _damage(db, swap),
        "stale-tree-page": _damage(db, stale),
        "tree-ref-height-0": _damage(db, _set(64 + 20, b"\0", repair=0)),
        "tree-ref-version-9": _damage(db, _set(64 + 21, b"\x09", repair=0)),
        "log-payload-flipped": h.FuzzCase(crashed.db, log_flipped, crashed.wal1).encode(),
        "log-payload-flipped-crc-repaired": h.FuzzCase(crashed.db, bytes(log),
                                                       crashed.wal1).encode(),
        "log-foreign": h.FuzzCase(db, b"not a log".ljust(100, b"\0")).encode(),
    }


# -- compressed and encrypted ----------------------------------------------------------------

ZSTD, LZ4, SNAPPY = (transform.CODECS[n] for n in ("zstd", "lz4", "snappy"))
ZSTD_AES, LZ4_, SNAPPY_AES, AES = (h.Mode(True, ZSTD), h.Mode(False, LZ4),
                                   h.Mode(True, SNAPPY), h.Mode(True, 0))


def _transformed_valid() -> dict[str, bytes]:
    return {
        "closed-zstd+aes-00": h.build_database(random.Random(400), mode=ZSTD_AES, paged=True),
        "closed-lz4-01": h.build_database(random.Random(401), mode=LZ4_, with_log=False),
        "closed-snappy+aes-02": h.build_database(random.Random(402), mode=SNAPPY_AES),
        # stored bytes do not compress when encrypted: small documents
        "closed-aes-03": h.build_database(random.Random(403), mode=AES, with_log=False,
                                          max_doc=3000),
        "power-loss-zstd+aes-all-0": h.build_database(random.Random(410), mode=ZSTD_AES,
                                                      crash="all"),
        "power-loss-lz4-random-1": h.build_database(random.Random(411), mode=LZ4_,
                                                    crash="random", paged=True),
    }


@contextlib.contextmanager
def _patched(namespace: Any, name: str, value: object) -> Iterator[None]:
    saved = vars(namespace)[name]  # for a class, the staticmethod object itself
    setattr(namespace, name, value)
    try:
        yield
    finally:
        setattr(namespace, name, saved)


def _image(mode: h.Mode, *docs: tuple[str, object], seed: int = 7,
           max_size: int | None = None) -> bytes:
    """The database file after writing `docs` under `mode` and closing, encoded to be
    opened with `mode`."""
    vfs = MemoryVFS()
    config = mode.config()
    if max_size is not None:
        config = dataclasses.replace(config, max_document_size=max_size)
    with h.deterministic(seed):
        db = streamdb.open(h.DB_PATH, config, vfs=vfs)
        for path, data in docs:
            db.write_document(path, data)
        db.close()
    return h.FuzzCase(vfs.read_file(h.DB_PATH), mode=mode).encode()


MARK = b"HOSTILE:"


def _hostile(mode: h.Mode, frame: Callable[[int], bytes]) -> bytes:
    """/hostile (20,000 compressible bytes, one chunk) stored as `frame(20_000)` instead of
    its compressed form, then checksummed and sealed like any chunk; /a is sound."""
    real = transform.compress  # what docio imported

    def compress(codec: int, data: bytes | memoryview) -> bytes:
        if bytes(data[: len(MARK)]) == MARK:
            out = frame(len(data))
            assert len(out) < len(data)  # else it would be stored RAW
            return out
        return real(codec, data)

    with _patched(docio, "compress", compress):
        return _image(mode, ("/a", h.content("/a", 5000)),
                      ("/hostile", MARK + h.content("/hostile", 20_000 - len(MARK))))


def _zstd_frame(content_size: int, blocks: list[tuple[int, int]]) -> bytes:
    """A single-segment zstd frame declaring `content_size`, of RLE blocks (length, byte)."""
    out = struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", content_size)
    for i, (length, byte) in enumerate(blocks):
        last = i == len(blocks) - 1
        out += (length << 3 | 1 << 1 | last).to_bytes(3, "little") + bytes([byte])
    return out


def _rle(total: int) -> list[tuple[int, int]]:
    return [(min(100_000, total - at), 0x41) for at in range(0, total, 100_000)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _snappy_overrun(size: int) -> bytes:
    """A snappy block declaring `size` that copies past it: one literal, then copies."""
    body = bytes([0 << 2]) + b"A"  # literal of 1 byte
    copy = bytes([(64 - 1) << 2 | 2]) + (1).to_bytes(2, "little")  # copy 64 at offset 1
    return _varint(size) + body + copy * (size // 64 + 20)


def _alter(case_bytes: bytes, change: Callable[[bytearray], None],
            mode: h.Mode | None = None) -> bytes:
    case = h.FuzzCase.decode(case_bytes)
    buf = bytearray(case.db)
    change(buf)
    return dataclasses.replace(case, db=bytes(buf), mode=mode or case.mode).encode()


def _both_headers(offset: int, value: bytes) -> Callable[[bytearray], None]:
    def change(buf: bytearray) -> None:
        for at in (0, PAGE):
            buf[at + offset : at + offset + len(value)] = value
            h.repair_header(buf, at)
    return change


def _flip_stored(mode: h.Mode, path: str, data: bytes) -> Callable[[bytearray], None]:
    """Flip a byte in the middle of `path`'s stored (inline) bytes, repairing the tree page."""
    def change(buf: bytearray) -> None:
        vfs = MemoryVFS()
        vfs.write_file(h.DB_PATH, bytes(buf))
        with streamdb.open(h.DB_PATH, mode.config(), vfs=vfs) as db:
            doc = db._catalog.doc(db.get_id_by_path(path).bytes)
            assert doc is not None and doc.latest.inline is not None
            stored = doc.latest.inline
        at = bytes(buf).find(stored)
        assert at > 0 and bytes(buf).find(stored, at + 1) < 0
        buf[at + len(stored) // 2] ^= 0x10
        h.repair_page(buf, at - at % PAGE)
    return change


def _transformed_damaged(valid: dict[str, bytes]) -> dict[str, bytes]:
    snappy_aes = valid["closed-snappy+aes-02"]
    plain = valid["closed-00"]
    lz4_doc = h.content("/lz4", 30_000)
    lz4_image = _image(LZ4_, ("/lz4", lz4_doc))
    wrong_nonce = staticmethod(lambda index, seal: struct.pack("<III", index, seal, 1))
    with _patched(transform.Cipher, "nonce", wrong_nonce):
        sealed_wrong = _image(ZSTD_AES, ("/a", h.content("/a", 5000)),
                              ("/b", h.content("/b", 300_000)))
    zstd_no_size = zstandard.ZstdCompressor(write_content_size=False)
    return {
        "snappy+aes-opened-without-key": _alter(snappy_aes, lambda b: None,
                                                 h.Mode(False, SNAPPY)),
        "plain-opened-with-key": _alter(plain, lambda b: None, ZSTD_AES),
        "snappy+aes-key-check-damaged": _alter(snappy_aes, _both_headers(230, b"\xff")),
        "snappy+aes-key-scheme-2": _alter(snappy_aes, _both_headers(184, b"\x02")),
        "snappy+aes-flag-cleared": _alter(snappy_aes, _both_headers(57, b"\x00"),
                                           h.Mode(False, SNAPPY)),
        "zstd+aes-sealed-with-wrong-nonce": sealed_wrong,
        "lz4-chunk-flipped-quick": _alter(lz4_image, _flip_stored(LZ4_, "/lz4", lz4_doc),
                                           dataclasses.replace(LZ4_, quick=True)),
        "zstd-frame-claims-1gib": _hostile(h.Mode(False, ZSTD),
                                           lambda n: _zstd_frame(1 << 30, _rle(n))),
        "zstd+aes-frame-claims-1gib": _hostile(ZSTD_AES,
                                               lambda n: _zstd_frame(1 << 30, _rle(n))),
        "zstd-frame-without-size": _hostile(h.Mode(False, ZSTD),
                                            lambda n: zstd_no_size.compress(bytes(n))),
        "zstd-frame-overruns": _hostile(h.Mode(False, ZSTD),
                                        lambda n: _zstd_frame(n, _rle(n + 5000))),
        "zstd-frame-falls-short": _hostile(h.Mode(False, ZSTD),
                                           lambda n: _zstd_frame(n, _rle(n - 1))),
        "snappy-claims-4gib": _hostile(h.Mode(False, SNAPPY),
                                       lambda n: _varint((1 << 32) - 1) + b"\0A"),
        "snappy+aes-overruns": _hostile(SNAPPY_AES, _snappy_overrun),
        "lz4-overruns": _hostile(LZ4_, lambda n: lz4.block.compress(bytes(n + 5000),
                                                                     store_size=False)),
        "zstd-document-40mib": _image(h.Mode(False, ZSTD),
                                      ("/big", (bytes(1 << 20) for _ in range(40))),
                                      max_size=64 << 20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=h.CORPUS_DIR)
    args = parser.parse_args()
    valid = _valid() | _transformed_valid()
    inputs = valid | _damaged(valid) | _transformed_damaged(valid)
    if args.out.exists():
        shutil.rmtree(args.out)
    for name, data in sorted(inputs.items()):
        h.save_input(args.out, name, data)
    files = fuzzkit.input_files(args.out)
    total = sum(p.stat().st_size for p in files)
    print(f"{len(files)} inputs, {total} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
