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

Message logs (`closed-log-*`, `power-loss-log-*`, `log-*`): closed plain databases with an
inline log and a paged one of two 256 KiB chunks, one image per framing checksum (XXH3,
CRC-32, CRC-16, none; the last one's log also has a chunk that no frame starts in); a
power loss whose log holds CREATE and EXTEND records of logs of each kind; encrypted, an
image with inline and paged (one chunk) logs of each kind, and a compressed and encrypted
power loss with a log of two chunks sealed under different salts. Damaged: a LOG table
with an unknown framing, a message count past the frames or of 2**64-1, a chunk entry
past its chunk, behind its index, or none at all; a size past the extents; an inline
log's frames damaged under a repaired chunk checksum (a huge length, a wrong checksum, a
torn frame); the LOG flag on a document, or cleared on a log; encrypted: per-chunk salts
zeroed or missing; in the log, an EXTEND record with a count past the frames or a moved
extent. Records are edited where they are stored (tree leaf or log record, checksums
repaired). Left out: an EXTEND of a version that is not there (open fails after the log's
recovery has written: the tolerated signature of tests/streamdb/test_fuzz_db.py).

Inputs added by hand (KEPT: a fuzzer finding's reproducer that this script cannot build)
are copied over from fuzz/corpus/db/ as they are.
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
import db_inputs as h
import fuzz_db_open as harness
import fuzzkit
import lz4.block
import zstandard

import streamdb
from streamdb.storage import docio, records, transform
from streamdb.storage.records import FLAG_LOG, NO_FRAME, LogTable, Version
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
            doc = db._engine.catalog.doc(db.get_id_by_path(path).bytes)
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


# -- message logs ---------------------------------------------------------------------------

LOG_CHUNK = docio.CHUNK  # a plain log's chunk; an encrypted one's is CHUNK - 16
CHECKSUMS: tuple[h.LogChecksum, ...] = ("xxh3", "crc32", "crc16", None)
SALT = records.SALT_SIZE
_FLAGS_AT = 6  # a version record's flags (records._VERSION)


def _msgs(tag: str, *sizes: int) -> list[bytes]:
    return [h.content(f"{tag}:{i}", n) for i, n in enumerate(sizes)]


def _inline_log(db: streamdb.Database, path: str, kind: h.LogChecksum) -> None:
    """Three appends, five messages (an empty one among them), 405 bytes of payload: the
    log stays in its record after a checkpoint too (up to page_size / 4 bytes)."""
    db.append_messages(path, _msgs(path, 0, 1, 100), checksum=kind)
    db.append_messages(path, _msgs(path + "+", 300), checksum=kind)
    db.append_message(path, b"last", checksum=kind)


def _paged_log(db: streamdb.Database, path: str, kind: h.LogChecksum, *,
               spanning: bool = False) -> None:
    """Three appends, 280 KB: two 256 KiB chunks, the second one's first message 8 KB into
    it (message 21: the 170 KB one before it crosses the boundary). `spanning`: then a
    520 KB message, so that a chunk has no frame start (NO_FRAME), and small ones."""
    db.append_messages(path, _msgs(path, *[5000] * 20), checksum=kind)
    db.append_messages(path, _msgs(path + "+", 170_000), checksum=kind)
    db.append_messages(path, _msgs(path + "++", *[500] * 20), checksum=kind)
    if spanning:
        db.append_messages(path, _msgs(path + "+++", 520_000, 0, 7), checksum=kind)


def _log_image(mode: h.Mode, build: Callable[[streamdb.Database], None], *, seed: int,
               crash: bool = False, with_log: bool = True) -> bytes:
    """The files after `build(db)` under `mode`: closed, or with `crash` as a killed process
    leaves them (every write kept: the log's CREATE and EXTEND records are replayed).
    Without `with_log`, the database file only (after a close, the log holds nothing that
    is not in it; an encrypted log's is mostly sealed bytes that do not compress)."""
    vfs = MemoryVFS()
    with h.deterministic(seed):
        db = streamdb.open(h.DB_PATH, mode.config(), vfs=vfs)
        build(db)
        image = vfs.crash(keep="all") if crash else vfs
        if not crash:
            db.close()
        files = [image.read_file(f) if image.exists(f) else None for f in h.FILES]
        if crash:
            db.close()
    if not with_log:
        files[1:] = [None, None]
    return h.FuzzCase(files[0] or b"", files[1], files[2], mode=mode).encode()


def _closed_plain(kind: h.LogChecksum) -> Callable[[streamdb.Database], None]:
    def build(db: streamdb.Database) -> None:
        db.write_document("/doc", h.content("/doc", 3000))
        _inline_log(db, "/log/inline", kind)
        _paged_log(db, "/log/paged", kind, spanning=kind is None)
        db.append_message("/log/inline", b"after the paged log", checksum=kind)
    return build


def _power_loss_plain(db: streamdb.Database) -> None:
    """Logs of each kind in the trees (checkpointed), then grown in the log (EXTEND, an
    inline log's bytes in its record), and one created there (CREATE)."""
    db.write_document("/doc", h.content("/doc", 3000))
    for kind in CHECKSUMS:
        _inline_log(db, f"/log/inline-{kind}", kind)
    db.append_messages("/log/paged", _msgs("/log/paged", *[5000] * 40), checksum="crc32")
    db.checkpoint()
    db.append_messages("/log/paged", _msgs("/log/paged+", 100_000, 10), checksum="crc32")
    for kind in CHECKSUMS:
        db.append_message(f"/log/inline-{kind}", b"after the checkpoint", checksum=kind)
    db.append_messages("/log/new", _msgs("/log/new", 5, 50, 500), checksum="xxh3")
    db.write_document("/doc", h.content("/doc2", 2000))


def _closed_aes(db: streamdb.Database, kinds: tuple[h.LogChecksum, ...] = CHECKSUMS) -> None:
    """Encrypted logs of each kind: inline, and on pages (one chunk of 4.3 KB, sealed
    inline by a first append, then re-sealed to pages by a second: stored bytes do not
    compress, and each copy of a chunk stays in the file)."""
    db.write_document("/doc", h.content("/doc", 3000))
    for kind in kinds:
        _inline_log(db, f"/log/inline-{kind}", kind)
        db.append_messages(f"/log/paged-{kind}", _msgs(f"/log/paged-{kind}", *[520] * 7),
                           checksum=kind)
        db.append_message(f"/log/paged-{kind}", h.content("re-sealed", 600), checksum=kind)


def _small_aes(db: streamdb.Database) -> None:
    """The base of the damaged encrypted logs: `_closed_aes` for XXH3 only."""
    _closed_aes(db, ("xxh3",))


def _power_loss_aes(db: streamdb.Database) -> None:
    """An encrypted log of two chunks (262,128 bytes, then 3 KB) in the trees, written by
    one append; then grown in the log (each EXTEND re-seals the last chunk under a salt of
    its own); an inline log grown there too. The one large encrypted image (265 KB that
    do not compress)."""
    db.write_document("/doc", h.content("/doc", 3000))
    _inline_log(db, "/log/inline", "crc16")
    db.append_messages("/log/paged", _msgs("/log/paged", *[5000] * 20, 165_000),
                       checksum="crc16")
    db.checkpoint()
    db.append_messages("/log/paged", _msgs("/log/paged++", 300, 0, 300), checksum="crc16")
    db.append_message("/log/paged", b"last", checksum="crc16")
    db.append_message("/log/inline", b"after the checkpoint", checksum="crc16")


AES_ZSTD = h.Mode(True, ZSTD)


def _logs_valid() -> dict[str, bytes]:
    out = {f"closed-log-{kind or 'none'}": _log_image(h.PLAIN, _closed_plain(kind),
                                                      seed=500 + i)
           for i, kind in enumerate(CHECKSUMS)}
    out["power-loss-log-all"] = _log_image(h.PLAIN, _power_loss_plain, seed=510, crash=True)
    out["closed-log-aes"] = _log_image(AES, _closed_aes, seed=511, with_log=False)
    out["power-loss-log-zstd+aes-all"] = _log_image(AES_ZSTD, _power_loss_aes, seed=512,
                                                    crash=True)
    return out


def _latest(case: h.FuzzCase, path: str) -> Version:
    """The latest version of `path` in the image (opened in a copy)."""
    vfs = MemoryVFS()
    for name, data in case.files().items():
        vfs.write_file(name, data)
    with h.deterministic(0), streamdb.open(h.DB_PATH, case.mode.config(), vfs=vfs) as db:
        doc = db._engine.catalog.doc(db.get_id_by_path(path).bytes)
        assert doc is not None
        return doc.latest


def _edit(case_bytes: bytes, path: str, change: Callable[[Version], Version | bytes], *,
          in_log: bool = False) -> bytes:
    """`path`'s latest version record changed (a Version re-encoded, or raw bytes of the
    same length) where it is stored: in its tree leaf (the page checksum repaired) or, with
    `in_log`, in the last log record holding it (the segment's CRCs repaired)."""
    case = h.FuzzCase.decode(case_bytes)
    v = _latest(case, path)
    old = records.encode_version(v)
    new = change(v)
    raw = new if isinstance(new, bytes) else records.encode_version(new)
    assert len(raw) == len(old) and raw != old
    if in_log:  # the -wal or -wal.1 segment, whichever holds it
        first = case.wal1 is None or old not in case.wal1
        log = bytearray((case.wal if first else case.wal1) or b"")
        at = bytes(log).rfind(old)
        assert at > 0
        log[at : at + len(old)] = raw
        h.repair_log(log)
        if first:
            return dataclasses.replace(case, wal=bytes(log)).encode()
        return dataclasses.replace(case, wal1=bytes(log)).encode()
    db = bytearray(case.db)
    at = bytes(db).find(old)
    assert at > 0 and bytes(db).find(old, at + 1) < 0, path
    db[at : at + len(old)] = raw
    h.repair_page(db, at - at % PAGE)
    return dataclasses.replace(case, db=bytes(db)).encode()


def _table(change: Callable[[LogTable], LogTable]) -> Callable[[Version], Version]:
    """The version with its LOG table changed."""
    def edit(v: Version) -> Version:
        assert v.log is not None
        return dataclasses.replace(v, log=change(v.log))
    return edit


def _starts(change: Callable[[list[tuple[int, int]]], None]) -> Callable[[Version], Version]:
    def edit(v: Version) -> Version:
        assert v.log is not None
        starts = list(v.log.starts)
        change(starts)
        return _table(lambda t: dataclasses.replace(t, starts=tuple(starts)))(v)
    return edit


def _flags(set_: int = 0, clear: int = 0) -> Callable[[Version], bytes]:
    def change(v: Version) -> bytes:
        raw = bytearray(records.encode_version(v))
        flags = int.from_bytes(raw[_FLAGS_AT : _FLAGS_AT + 2], "little") | set_
        raw[_FLAGS_AT : _FLAGS_AT + 2] = (flags & ~clear).to_bytes(2, "little")
        return bytes(raw)
    return change


def _inline_frames(change: Callable[[bytearray], None]) -> Callable[[Version], Version]:
    """An inline log's frames changed, its chunk checksum recomputed: damage that only the
    framing can see."""
    def edit(v: Version) -> Version:
        assert v.inline is not None and len(v.sums) == 1
        frames = bytearray(v.inline)
        change(frames)
        return dataclasses.replace(v, inline=bytes(frames),
                                   sums=(docio.checksum(v.checksum, bytes(frames)),))
    return edit


def _put(at: int, value: bytes) -> Callable[[bytearray], None]:
    def change(buf: bytearray) -> None:
        buf[at : at + len(value)] = value
    return change


def _without_salts(build: Callable[[streamdb.Database], None]) -> Callable[[streamdb.Database],
                                                                         None]:
    """`build`, then the close's checkpoint writes LOG records without their per-chunk
    salts (the record is 16 bytes a chunk short)."""
    real = records.encode_version

    def encode(v: Version) -> bytes:
        if v.log is None or not v.salt:
            return real(v)
        raw = real(v)
        end = len(raw) - len(v.inline or b"")  # the salts end where the inline bytes start
        return raw[: end - SALT * len(v.sums)] + raw[end:]

    def run(db: streamdb.Database) -> None:
        build(db)
        with _patched(records, "encode_version", encode):
            db.checkpoint()
    return run


def _count(value: Callable[[int], int]) -> Callable[[Version], Version]:
    return _table(lambda t: dataclasses.replace(t, count=value(t.count)))


def _logs_damaged(valid: dict[str, bytes]) -> dict[str, bytes]:
    crc32, none = valid["closed-log-crc32"], valid["closed-log-none"]
    aes, wal = _log_image(AES, _small_aes, seed=513, with_log=False), valid["power-loss-log-all"]
    paged, inline = "/log/paged", "/log/inline"

    def framing_9(table: LogTable) -> LogTable:
        return dataclasses.replace(table, framing=9)

    def past_chunk(starts: list[tuple[int, int]]) -> None:  # the last chunk's entry
        starts[-1] = (starts[-1][0], LOG_CHUNK + 100)

    def index_behind(starts: list[tuple[int, int]]) -> None:
        starts[1] = (1, starts[1][1])

    def no_starts(starts: list[tuple[int, int]]) -> None:
        starts[:] = [(0, NO_FRAME)] * len(starts)

    def huge_size(v: Version) -> Version:
        return dataclasses.replace(v, size=v.size + (1 << 40))

    def salt_zeroed(v: Version) -> Version:
        assert v.log is not None
        return _table(lambda t: dataclasses.replace(t, salts=(bytes(SALT),) * len(t.salts)))(v)

    def first_page_1(v: Version) -> Version:
        return dataclasses.replace(v, extents=((1, v.extents[0][1]), *v.extents[1:]))

    return {
        # the LOG table of a plain two-chunk log (in its tree leaf)
        "log-framing-unknown": _edit(crc32, paged, _table(framing_9)),
        "log-count-past-frames": _edit(crc32, paged, _count(lambda n: n + 3)),
        "log-count-max": _edit(crc32, inline, _count(lambda n: (1 << 64) - 1)),
        "log-start-past-chunk": _edit(crc32, paged, _starts(past_chunk)),
        "log-start-index-behind": _edit(none, paged, _starts(index_behind)),
        "log-starts-all-none": _edit(crc32, paged, _starts(no_starts)),
        "log-size-past-extents": _edit(none, paged, huge_size),
        # the frames of an inline log, its chunk checksum recomputed
        "log-frame-length-huge": _edit(crc32, inline, _inline_frames(_put(0, b"\xf0\xff\xff\xff"))),
        "log-frame-checksum-wrong": _edit(crc32, inline, _inline_frames(_put(60, b"\xa5"))),
        "log-frame-torn": _edit(none, inline, _inline_frames(_put(0, b"\x05"))),
        # the LOG flag where it does not belong, or missing
        "log-flag-on-document": _edit(crc32, "/doc", _flags(set_=FLAG_LOG)),
        "log-flag-cleared": _edit(crc32, paged, _flags(clear=FLAG_LOG)),
        # encrypted logs
        "log-aes-salts-zeroed": _edit(aes, "/log/paged-xxh3", salt_zeroed),
        "log-aes-salts-missing": _log_image(AES, _without_salts(_small_aes), seed=513,
                                            with_log=False),
        # EXTEND records in the log, replayed at open
        "log-wal-extend-count-past-frames": _edit(wal, paged, _count(lambda n: n + 5),
                                                  in_log=True),
        "log-wal-extend-extent-moved": _edit(wal, paged, first_page_1, in_log=True),
    }


# Inputs added to fuzz/corpus/db/ by hand (a fuzzer finding's reproducer, which this script
# cannot build): copied over as they are.
# Images written before both header copies were kept identical (legacy-*: the copies are
# the last two generations, without the mirrored flag), which this script no longer makes.
# Also kept: fuzzer findings (open-failed-*: opens that failed after writing, found before
# an open wrote nothing until it succeeded; found-*: other findings, named after the bug).
KEPT = ("stale-header-at-another-page-size.bin.gz", "legacy-closed.bin.gz",
        "legacy-closed-zstd+aes.bin.gz", "legacy-power-loss.bin.gz")
KEPT_PATTERNS = ("open-failed-*", "found-*")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=harness.CORPUS_DIR)
    args = parser.parse_args()
    valid = _valid() | _transformed_valid() | _logs_valid()
    inputs = valid | _damaged(valid) | _transformed_damaged(valid) | _logs_damaged(valid)
    names = set(KEPT) | {p.name for pattern in KEPT_PATTERNS
                         for p in harness.CORPUS_DIR.glob(pattern)}
    kept = {name: (harness.CORPUS_DIR / name).read_bytes() for name in sorted(names)}
    if args.out.exists():
        shutil.rmtree(args.out)
    for name, data in sorted(inputs.items()):
        fuzzkit.save_input(args.out, name, data, gzip_above=16 << 10)
    for name, raw in kept.items():
        (args.out / name).write_bytes(raw)
    files = fuzzkit.input_files(args.out)
    total = sum(p.stat().st_size for p in files)
    print(f"{len(files)} inputs, {total} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
