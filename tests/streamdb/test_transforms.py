"""Value transforms (docs/design.md, section 5): per-chunk compression and AES-256-GCM
encryption.

Round trips through every read path for each codec, with and without a key, on the map and
on pread; files mixing codecs; stored sizes; O(chunk) streaming; key checks at open;
tampering with sealed chunks and with the metadata bound to them; bounded decompression;
nonce (salt) uniqueness; a read-only follower of an encrypted database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import random
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import lz4.block
import pytest
import snappy
import xxhash
import zstandard

import streamdb
from streamdb import Config
from streamdb.errors import (
    AuthenticationError,
    ChecksumMismatch,
    CorruptionError,
    EncryptionError,
    InvalidArgumentError,
    WrongKeyError,
)
from streamdb.paths import path_key
from streamdb.storage import docio, transform
from streamdb.storage.docio import CHUNK, DocReader, checksum
from streamdb.storage.records import CHUNK_RAW, Version

Codec = Literal["snappy", "lz4", "zstd"] | None

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
PAGE = 8192
TAG = 16
CODEC_CHOICES: list[Codec] = [None, "snappy", "lz4", "zstd"]
SIZES = [0, 1, PAGE - 1, PAGE, PAGE + 1, (64 << 10) - 1, 64 << 10, (64 << 10) + 1,
         CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]
SOURCES = ("bytes", "bytearray", "memoryview", "file", "reused")


# -- data and sources ---------------------------------------------------------------------

_WORDS = [b"sensor", b"reading", b"temperature", b"pressure", b"ok", b"warning", b"device",
          b"stream", b"value", b"timestamp", b"humidity", b"battery", b"north", b"south"]


@functools.cache
def _text_blob() -> bytes:
    rng = random.Random(1234)
    out = bytearray()
    while len(out) < (1 << 20) + (256 << 10):
        out += b"%s=%d %s;\n" % (rng.choice(_WORDS), rng.randrange(10_000), rng.choice(_WORDS))
    return bytes(out)


def text_data(size: int, seed: int) -> bytes:
    """Compressible bytes (log-like text), different for each seed."""
    blob = _text_blob()
    start = (seed * 7919) % (256 << 10)
    assert size <= len(blob) - start
    return blob[start : start + size]


def random_data(size: int, seed: int) -> bytes:
    """Incompressible bytes, reproducible."""
    return random.Random(seed).randbytes(size)


def reused_buffer(data: bytes, piece: int) -> Iterator[bytearray | memoryview]:
    """`data` in pieces, all through ONE bytearray that is refilled between yields and
    scribbled over once the consumer asks for more (and at the end): whoever holds on to a
    piece across `next()` without copying it stores garbage."""
    buf = bytearray(piece)
    view = memoryview(buf)
    for start in range(0, len(data), piece):
        part = data[start : start + piece]
        buf[: len(part)] = part
        yield buf if len(part) == piece else view[: len(part)]
        buf[:] = b"\xee" * piece


def make_source(kind: str, data: bytes, piece: int = CHUNK + 4099) -> object:
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":  # a view that does not start at its buffer's start
        return memoryview(bytearray(b"\x00" * 7 + data))[7:]
    if kind == "file":
        return io.BytesIO(data)
    if kind == "reused":
        return reused_buffer(data, piece)
    raise AssertionError(kind)


# -- internals used to find and tamper with stored chunks ---------------------------------


def latest(db: streamdb.Database, path: str) -> Version:
    doc_id = db._engine.catalog.lookup(path_key(path))
    assert doc_id is not None
    doc = db._engine.catalog.doc(doc_id)
    assert doc is not None
    return doc.latest


def version_of(db: streamdb.Database, path: str, number: int) -> Version:
    doc_id = db._engine.catalog.lookup(path_key(path))
    assert doc_id is not None
    doc = db._engine.catalog.doc(doc_id)
    assert doc is not None
    (v,) = [v for v in doc.versions if v.version == number]
    return v


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK))


def file_spans(v: Version, page: int, start: int, length: int) -> list[tuple[int, int]]:
    """(file offset, length) pieces holding stored bytes [start, start+length) of `v`:
    stored chunks lie back to back from the first page of the first extent."""
    spans = []
    base = 0
    for first, count in v.extents:
        lo, hi = max(start, base), min(start + length, base + count * page)
        if lo < hi:
            spans.append((first * page + lo - base, hi - lo))
        base += count * page
    assert sum(n for _, n in spans) == length
    return spans


def chunk_spans(v: Version, page: int, index: int) -> list[tuple[int, int]]:
    assert v.inline is None and v.table
    start = sum(n for n, _, _ in v.table[:index])
    return file_spans(v, page, start, v.table[index][0])


def read_spans(raw: bytes | bytearray, spans: list[tuple[int, int]]) -> bytes:
    return b"".join(bytes(raw[off : off + n]) for off, n in spans)


def write_spans(raw: bytearray, spans: list[tuple[int, int]], data: bytes) -> None:
    assert sum(n for _, n in spans) == len(data)
    pos = 0
    for off, n in spans:
        raw[off : off + n] = data[pos : pos + n]
        pos += n


def snapshot_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# -- reading everything back --------------------------------------------------------------


def ranges(size: int) -> list[tuple[int, int]]:
    out = [(0, size), (size // 2, 1), (max(0, size - 1), 5), (size, 3), (0, 0)]
    if size > 3:
        out.append((1, size - 2))
    for boundary in range(CHUNK, size, CHUNK):
        out += [(boundary - 3, 6), (boundary - 1, 1), (boundary, 1), (boundary - 1, CHUNK + 2)]
    if size > 2 * CHUNK:
        out.append((CHUNK // 2, CHUNK * 2))
    return out


def check_doc(db: streamdb.Database, path: str, data: bytes, *, full: bool) -> None:
    size = len(data)
    assert db.get(path) == data, path
    assert db.info(path).size == size
    if not full:
        if size > CHUNK:
            assert db.get(path, offset=CHUNK - 2, length=4) == data[CHUNK - 2 : CHUNK + 2]
        return
    for offset, length in ranges(size):
        got = db.get(path, offset=offset, length=length)
        assert got == data[offset : offset + length], (path, offset, length)
    parts = list(db.get_stream(path))
    assert b"".join(parts) == data, path
    assert all(len(p) == CHUNK for p in parts[:-1])
    odd = list(db.get_stream(path, chunk_size=100_003))
    assert b"".join(odd) == data, path
    assert all(len(p) == 100_003 for p in odd[:-1])
    view = db.get_view(path)
    assert view.readonly and bytes(view) == data, path
    del view
    with db.open(path, "rb") as f:
        assert f.read() == data
        start = max(0, size - CHUNK - 5)
        assert f.seek(start) == start
        assert f.read(CHUNK + 3) == data[start : start + CHUNK + 3]
        f.seek(size // 3)
        buf = bytearray(CHUNK + 11)
        n = f.readinto(buf)
        expect = data[size // 3 : size // 3 + CHUNK + 11]
        assert n is not None and n == len(expect) and bytes(buf[:n]) == expect


def check_all(db: streamdb.Database, docs: dict[str, bytes], *, full: bool) -> None:
    assert sorted(db) == sorted(docs)
    for path, data in docs.items():
        check_doc(db, path, data, full=full)


def config(codec: Codec = None, key: bytes | None = None, **more: object) -> Config:
    return Config(compression=codec, encryption_key=key, **more)  # type: ignore[arg-type]


# -- 1. round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "pread"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("codec", CODEC_CHOICES, ids=lambda c: c or "none")
def test_round_trip_every_size_and_read_path(tmp_path: Path, codec: Codec, encrypted: bool,
                                             use_mmap: bool) -> None:
    key = KEY if encrypted else None
    cfg = config(codec, key, use_mmap=use_mmap)
    path = tmp_path / "t.db"
    docs: dict[str, bytes] = {}
    with streamdb.open(path, cfg) as db:
        for i, size in enumerate(SIZES):
            for k, (kind, make) in enumerate((("text", text_data), ("rand", random_data))):
                data = make(size, i)
                name = f"/{kind}/{size}"
                source = SOURCES[(2 * i + k) % len(SOURCES)]
                db.write_document(name, make_source(source, data, piece=65_537 + 4096 * k))
                docs[name] = data
        for size in (CHUNK + 1, 3 * CHUNK + 12345):  # with a codec: several chunks, inline
            db.write_document(f"/zeros/{size}", reused_buffer(bytes(size), CHUNK + 1))
            docs[f"/zeros/{size}"] = bytes(size)
            if codec is not None:
                assert latest(db, f"/zeros/{size}").inline is not None
        check_all(db, docs, full=True)
        for name, data in docs.items():
            info = db.info(name)
            assert info.encrypted is encrypted
            assert info.codec == codec
            n = chunk_count(len(data))
            if name.startswith("/rand/"):  # incompressible: RAW chunks, no expansion
                assert info.stored_size == len(data) + (TAG * n if encrypted else 0), name
            elif codec is not None and len(data) >= PAGE:
                assert info.stored_size < len(data), name
            if codec is None and not encrypted:
                assert info.stored_size == len(data)
        db.checkpoint()
        check_all(db, docs, full=False)
        report = db.verify()
        assert report.ok, report.problems
        db.compact()
        check_all(db, docs, full=False)
        db.backup(tmp_path / "backup.db")
        check_all(db, docs, full=False)
    with streamdb.open(path, cfg) as db:
        check_all(db, docs, full=True)
        assert db.verify().ok
    with streamdb.open(tmp_path / "backup.db", cfg) as db:
        check_all(db, docs, full=False)
        assert db.verify().ok


@pytest.mark.parametrize("piece", [65_537, CHUNK, CHUNK + 4099, 3 * CHUNK + 1])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("codec", CODEC_CHOICES, ids=lambda c: c or "none")
def test_reused_buffer_iterable_is_copied_when_held(tmp_path: Path, codec: Codec,
                                                     encrypted: bool, piece: int) -> None:
    """The ingest holds a chunk back until it sees the next byte: that chunk must be a copy
    when it is a view into a buffer the source refills."""
    sizes = [1, PAGE + 3, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 777]
    with streamdb.open(tmp_path / "t.db", config(codec, KEY if encrypted else None)) as db:
        for i, size in enumerate(sizes):
            data = text_data(size, i) if i % 2 else random_data(size, i)
            db.write_document(f"/r/{size}", reused_buffer(data, piece))
            assert db.get(f"/r/{size}") == data, size


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("codec", CODEC_CHOICES, ids=lambda c: c or "none")
def test_every_source_kind(tmp_path: Path, codec: Codec, encrypted: bool) -> None:
    cfg = config(codec, KEY if encrypted else None)
    docs: dict[str, bytes] = {}
    with streamdb.open(tmp_path / "t.db", cfg) as db:
        for size in (0, 5000, (64 << 10) + 1, 2 * CHUNK + 99):
            for source in (*SOURCES, "realfile"):
                data = text_data(size, size % 97)
                name = f"/{source}/{size}"
                if source == "realfile":
                    src = tmp_path / f"src-{size}.bin"
                    src.write_bytes(data)
                    with src.open("rb") as f:
                        db.write_document(name, f)
                else:
                    db.write_document(name, make_source(source, data))
                docs[name] = data
        check_all(db, docs, full=False)
    with streamdb.open(tmp_path / "t.db", cfg) as db:
        check_all(db, docs, full=False)


@pytest.mark.parametrize("codec", [None, "lz4"], ids=["none", "lz4"])
def test_sealed_document_in_several_extents(tmp_path: Path, codec: Codec) -> None:
    """A source of unknown size is stored in extents that double: chunks straddle extent
    boundaries."""
    data = random_data(5 * (1 << 20) + 3, 21)
    path = tmp_path / "t.db"
    with streamdb.open(path, config(codec, KEY)) as db:
        db.write_document("/multi", (data[i : i + 99_999] for i in range(0, len(data), 99_999)))
        v = latest(db, "/multi")
        assert len(v.extents) > 1
        assert db.info("/multi").stored_size == len(data) + TAG * chunk_count(len(data))
        check_doc(db, "/multi", data, full=True)
        assert db.verify().ok
        db.compact()
        check_doc(db, "/multi", data, full=False)
    with streamdb.open(path, config(codec, KEY)) as db:
        check_doc(db, "/multi", data, full=False)


@pytest.mark.parametrize("codec", [None, "snappy"], ids=["none", "snappy"])
def test_too_large_sealed_document_leaves_the_previous_version(tmp_path: Path,
                                                               codec: Codec) -> None:
    cfg = config(codec, KEY, max_document_size=300_000)
    with streamdb.open(tmp_path / "t.db", cfg) as db:
        db.write_document("/d", text_data(200_000, 1))
        free = db.stats().free_pages
        for source in (random_data(300_001, 2), reused_buffer(random_data(400_000, 2), 70_000)):
            with pytest.raises(streamdb.DocumentTooLargeError):
                db.write_document("/d", source)
            assert db.versions("/d") == [1]
            assert db.get("/d") == text_data(200_000, 1)
        assert db.stats().free_pages >= free
        db.write_document("/d", random_data(300_000, 3))
        assert db.get("/d") == random_data(300_000, 3)


def test_file_writer_and_snapshots_on_sealed_documents(tmp_path: Path) -> None:
    data = text_data(CHUNK + 500, 4)
    with streamdb.open(tmp_path / "t.db", config("zstd", KEY)) as db:
        with db.open("/w", "wb") as f:
            f.write(data[:1000])
            f.write(data[1000:])
        assert db.get("/w") == data and db.info("/w").encrypted
        assert asyncio.run(db.get_async("/w")) == data
        with db.snapshot() as snap:
            db.write_document("/w", b"newer")
            assert snap.get("/w", offset=CHUNK - 1, length=3) == data[CHUNK - 1 : CHUNK + 2]
            assert b"".join(snap.get_stream("/w")) == data
        assert db.get("/w") == b"newer"


@pytest.mark.parametrize("page_size", [4096, 65536])
def test_other_page_sizes_and_crc32c(tmp_path: Path, page_size: int) -> None:
    docs: dict[str, bytes] = {}
    for codec in ("zstd", None):
        cfg = config(codec, KEY, page_size=page_size, checksum="crc32c")
        path = tmp_path / f"{codec}.db"
        with streamdb.open(path, cfg) as db:
            for size in (page_size - 1, page_size, page_size + 1, CHUNK + 1):
                for kind, data in (("t", text_data(size, 2)), ("r", random_data(size, 3))):
                    db.write_document(f"/{kind}/{size}", data)
                    docs[f"/{kind}/{size}"] = data
            assert db.info("/t/4095" if page_size == 4096 else "/t/65535").checksum == "crc32c"
            check_all(db, docs, full=False)
        with streamdb.open(path, cfg) as db:
            assert db._engine._page_size == page_size
            check_all(db, docs, full=False)
            assert db.verify().ok
        docs.clear()


# -- 2. one file, several codecs ----------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
def test_documents_of_different_codecs_in_one_file(tmp_path: Path, encrypted: bool) -> None:
    key = KEY if encrypted else None
    path = tmp_path / "t.db"
    docs: dict[str, bytes] = {}
    size = 2 * CHUNK + 5000
    order: list[Codec] = ["snappy", "zstd", "lz4", None, "snappy"]
    for i, codec in enumerate(order):
        with streamdb.open(path, config(codec, key)) as db:
            label = codec or "none"
            for kind, data in (("text", text_data(size, i)), ("rand", random_data(size, i))):
                db.write_document(f"/{label}/{kind}/{i}", data)
                docs[f"/{label}/{kind}/{i}"] = data
            # A document mixing compressible and incompressible chunks.
            mixed = text_data(CHUNK, i) + random_data(CHUNK, i) + text_data(1000, i + 1)
            db.write_document(f"/{label}/mixed/{i}", mixed)
            docs[f"/{label}/mixed/{i}"] = mixed
            v = latest(db, f"/{label}/mixed/{i}")
            if codec is not None:
                assert [f & CHUNK_RAW for _, f, _ in v.table] == [0, CHUNK_RAW, 0]
            # A new version of one path under each codec; the older stays readable.
            db.write_document("/evolving", text_data(CHUNK + 10, 100 + i))
            if i:
                assert db.get("/evolving", version=i) == text_data(CHUNK + 10, 99 + i)
            assert db.info("/evolving").codec == codec
    for reopen_codec in CODEC_CHOICES:
        with streamdb.open(path, config(reopen_codec, key)) as db:
            check_all(db, {**docs, "/evolving": text_data(CHUNK + 10, 104)}, full=False)
            for name, data in docs.items():
                info = db.info(name)
                expect_codec = name.split("/")[1]
                assert info.codec == (None if expect_codec == "none" else expect_codec), name
                assert info.encrypted is encrypted
                n = chunk_count(len(data))
                overhead = TAG * n if encrypted else 0
                if "/rand/" in name:
                    assert info.stored_size == len(data) + overhead, name
                elif "/text/" in name and expect_codec != "none":
                    assert info.stored_size < len(data) * 3 // 4, name
                elif "/text/" in name:
                    assert info.stored_size == len(data) + overhead, name
            assert db.verify().ok


# -- 3. O(chunk) streaming memory ---------------------------------------------------------


@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "pread"])
@pytest.mark.parametrize("chunk_size", [None, 100_003])
def test_get_stream_of_a_large_sealed_compressed_document_uses_chunk_memory(
        tmp_path: Path, chunk_size: int | None, use_mmap: bool) -> None:
    blob = _text_blob()
    total = 32 << 20

    def pieces() -> Iterator[bytes]:
        for i in range(total // (1 << 20)):
            j = (i * 40_009) % (256 << 10)
            yield blob[j : j + (1 << 20)]

    expect = xxhash.xxh3_64()
    for piece in pieces():
        expect.update(piece)
    cfg = config("zstd", KEY, use_mmap=use_mmap, page_cache_size=64)
    with streamdb.open(tmp_path / "t.db", cfg) as db:
        db.write_document("/big", pieces())
        info = db.info("/big")
        assert info.size == total and info.encrypted and info.codec == "zstd"
        assert info.stored_size < total // 2
        got = xxhash.xxh3_64()
        n = 0
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            for part in db.get_stream("/big", chunk_size=chunk_size):
                got.update(part)
                n += len(part)
                del part
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert n == total and got.intdigest() == expect.intdigest()
        assert peak < 3 << 20, f"streaming 32 MiB peaked at {peak} bytes"


# -- 4. keys ------------------------------------------------------------------------------


def _encrypted_db(path: Path) -> dict[str, bytes]:
    docs = {"/small": b"small secret", "/big": text_data(CHUNK + 100, 3),
            "/rand": random_data(100_000, 4)}
    with streamdb.open(path, config("lz4", KEY)) as db:
        for name, data in docs.items():
            db.write_document(name, data)
    return docs


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "readonly"])
def test_wrong_or_missing_key_is_refused_without_touching_the_file(tmp_path: Path,
                                                                     readonly: bool) -> None:
    path = tmp_path / "t.db"
    docs = _encrypted_db(path)
    before = snapshot_files(tmp_path)
    with pytest.raises(WrongKeyError) as wrong:
        streamdb.open(path, config(None, OTHER_KEY), readonly=readonly)
    assert str(path) in str(wrong.value)
    assert snapshot_files(tmp_path) == before
    with pytest.raises(WrongKeyError):  # the codec has nothing to do with the key
        streamdb.open(path, config("lz4", bytes(32)), readonly=readonly)
    assert snapshot_files(tmp_path) == before
    with pytest.raises(EncryptionError) as missing:
        streamdb.open(path, readonly=readonly)
    assert not isinstance(missing.value, WrongKeyError)
    assert "is encrypted" in str(missing.value) and str(path) in str(missing.value)
    assert snapshot_files(tmp_path) == before
    with streamdb.open(path, config(None, KEY), readonly=readonly) as db:
        check_all(db, docs, full=False)


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "readonly"])
def test_a_key_on_an_unencrypted_database_is_refused(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "t.db"
    with streamdb.open(path, config("zstd")) as db:
        db.write_document("/a", text_data(100_000, 1))
    before = snapshot_files(tmp_path)
    with pytest.raises(EncryptionError) as exc:
        streamdb.open(path, config("zstd", KEY), readonly=readonly)
    assert not isinstance(exc.value, WrongKeyError)
    assert "not encrypted" in str(exc.value)
    assert snapshot_files(tmp_path) == before
    with streamdb.open(path, readonly=readonly) as db:
        assert db.get("/a") == text_data(100_000, 1)
        assert not db.info("/a").encrypted


def test_key_must_be_32_bytes() -> None:
    for bad in (b"", bytes(16), bytes(31), bytes(33)):
        with pytest.raises(InvalidArgumentError):
            Config(encryption_key=bad)


def test_plaintext_never_reaches_the_files(tmp_path: Path) -> None:
    """Document bytes are sealed before they reach the log (inline) or pages; the control
    run without a key shows the marker would be found."""
    marker = b"PLAINTEXT-MARKER-" * 64

    def run(directory: Path, key: bytes | None) -> bool:
        directory.mkdir()
        with streamdb.open(directory / "t.db", config(None, key)) as db:
            db.write_document("/inline", marker)
            db.write_document("/pages", marker * 200)
            found = any(marker[:200] in raw for raw in snapshot_files(directory).values())
        found_after = any(marker[:200] in raw for raw in snapshot_files(directory).values())
        return found or found_after

    assert run(tmp_path / "plain", None)
    assert not run(tmp_path / "sealed", KEY)


# -- 5. tampering -------------------------------------------------------------------------

N_CHUNKS = 4


def _tamper_db(path: Path) -> dict[str, bytes]:
    """Encrypted, uncompressed documents of N_CHUNKS full chunks (equal stored lengths),
    on pages; /v has versions 1 and 2; checkpointed and closed."""
    docs = {"/a": random_data(N_CHUNKS * CHUNK, 11), "/b": random_data(N_CHUNKS * CHUNK, 12),
            "/v": random_data(N_CHUNKS * CHUNK, 14)}
    with streamdb.open(path, config(None, KEY, versions_to_keep=2)) as db:
        db.write_document("/a", docs["/a"])
        db.write_document("/b", docs["/b"])
        db.write_document("/v", random_data(N_CHUNKS * CHUNK, 13))
        db.write_document("/v", docs["/v"])
        for name in docs:
            v = latest(db, name)
            assert v.inline is None and v.encrypted and v.codec == 0
            assert [n for n, _, _ in v.table] == [CHUNK + TAG] * N_CHUNKS
        db.checkpoint()
    return docs


def _expect_detected(db: streamdb.Database, path: str, index: int) -> None:
    """Every read path touching chunk `index` of `path` raises a CorruptionError naming
    the path (and the chunk's offset); none returns data."""
    reads: list[Callable[[], object]] = [
        lambda: db.get(path),
        lambda: db.get(path, offset=index * CHUNK + 10, length=5),
        lambda: b"".join(db.get_stream(path)),
        lambda: db.get_view(path),
    ]
    for read in reads:
        with pytest.raises(CorruptionError) as exc:
            read()
        assert isinstance(exc.value, ChecksumMismatch | AuthenticationError), exc.value
        assert exc.value.path == path and repr(path) in str(exc.value)
        assert exc.value.offset == index * CHUNK
    with db.open(path, "rb") as f, pytest.raises(CorruptionError):
        f.read()


Tamper = Callable[[bytearray, dict[str, Version], int], tuple[str, int]]


def _flip_ciphertext(raw: bytearray, vs: dict[str, Version], page: int) -> tuple[str, int]:
    off, _ = chunk_spans(vs["/a"], page, 1)[0]
    raw[off + 1000] ^= 0x01
    return "/a", 1


def _flip_tag(raw: bytearray, vs: dict[str, Version], page: int) -> tuple[str, int]:
    spans = chunk_spans(vs["/a"], page, 2)
    off, n = spans[-1]
    raw[off + n - 5] ^= 0x80  # inside the last 16 bytes: the GCM tag
    return "/a", 2


def _swap_chunks(raw: bytearray, vs: dict[str, Version], page: int) -> tuple[str, int]:
    one, two = chunk_spans(vs["/a"], page, 1), chunk_spans(vs["/a"], page, 2)
    first, second = read_spans(raw, one), read_spans(raw, two)
    write_spans(raw, one, second)
    write_spans(raw, two, first)
    return "/a", 1


def _move_between_documents(raw: bytearray, vs: dict[str, Version],
                            page: int) -> tuple[str, int]:
    write_spans(raw, chunk_spans(vs["/a"], page, 1),
                read_spans(raw, chunk_spans(vs["/b"], page, 1)))
    return "/a", 1


def _roll_back(raw: bytearray, vs: dict[str, Version], page: int) -> tuple[str, int]:
    write_spans(raw, chunk_spans(vs["/v"], page, 2),
                read_spans(raw, chunk_spans(vs["/v@1"], page, 2)))
    return "/v", 2


@pytest.mark.parametrize("quick", [False, True], ids=["verified", "quick"])
@pytest.mark.parametrize("tamper", [_flip_ciphertext, _flip_tag, _swap_chunks,
                                    _move_between_documents, _roll_back],
                         ids=lambda f: f.__name__.strip("_"))
def test_tampered_chunks_on_disk_are_detected(tmp_path: Path, tamper: Tamper,
                                              quick: bool) -> None:
    path = tmp_path / "t.db"
    docs = _tamper_db(path)
    with streamdb.open(path, config(None, KEY)) as db:
        page = db._engine._page_size
        vs = {name: latest(db, name) for name in docs}
        vs["/v@1"] = version_of(db, "/v", 1)
    raw = bytearray(path.read_bytes())
    target, index = tamper(raw, vs, page)
    assert raw != path.read_bytes()
    path.write_bytes(bytes(raw))
    with streamdb.open(path, config(None, KEY)) as db:
        if quick:
            with pytest.warns(UserWarning, match="quick mode"):
                db.set_quick_mode(True)
        _expect_detected(db, target, index)
        # The damage is confined to what was altered: other chunks and documents read.
        other = (index + 2) % N_CHUNKS if target == "/a" and tamper is not _swap_chunks else 0
        assert db.get(target, offset=other * CHUNK, length=100) == \
            docs[target][other * CHUNK : other * CHUNK + 100]
        for name, data in docs.items():
            if name != target:
                assert db.get(name) == data
        if target == "/v":
            assert db.get("/v", version=1) == random_data(N_CHUNKS * CHUNK, 13)
        report = db.verify()
        assert not report.ok and any(target in p for p in report.problems), report.problems


def _stored(db: streamdb.Database, v: Version) -> list[bytes]:
    reader = DocReader(db._engine._pager, v, "x", verify=True, cipher=db._engine._cipher)
    return [bytes(reader.stored_chunk(i, verify=True)) for i in range(reader.chunk_count())]


def _inline(v: Version, chunks: list[bytes]) -> Version:
    """`v` with the given stored chunks inline, their checksums made to match (damage
    that a checksum cannot see: only authentication can)."""
    return dataclasses.replace(
        v, extents=(), inline=b"".join(chunks),
        sums=tuple(checksum(v.checksum, c) for c in chunks),
        table=tuple((len(c), f, s) for c, (_, f, s) in zip(chunks, v.table, strict=True)),
        stored_size=sum(map(len, chunks)))


def _read_all(db: streamdb.Database, v: Version, verify: bool) -> bytes:
    reader = DocReader(db._engine._pager, v, "/tampered", verify=verify, cipher=db._engine._cipher)
    return reader.read(0, v.size)


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "quick"])
@pytest.mark.parametrize("codec", [None, "zstd"], ids=["none", "zstd"])
def test_metadata_bound_to_sealed_chunks_is_authenticated(tmp_path: Path, codec: Codec,
                                                          verify: bool) -> None:
    with streamdb.open(tmp_path / "t.db", config(codec, KEY)) as db:
        a = text_data(3 * CHUNK + 500, 1) if codec else random_data(3 * CHUNK + 500, 1)
        b = text_data(3 * CHUNK + 500, 2) if codec else random_data(3 * CHUNK + 500, 2)
        db.write_document("/a", a)
        db.write_document("/b", b)
        db.write_document("/a", a)  # version 2, same bytes
        v, vb, v1 = latest(db, "/a"), latest(db, "/b"), version_of(db, "/a", 1)
        assert v.version == 2 and v.encrypted and len(v.sums) == 4
        # The harness itself: untouched metadata, and an inline copy, read back.
        assert _read_all(db, v, verify) == a
        stored = _stored(db, v)
        assert _read_all(db, _inline(v, stored), verify) == a
        last = len(v.sums) - 1
        flipped = bytearray(stored[1])
        flipped[7] ^= 0x04
        tag_flipped = bytearray(stored[1])
        tag_flipped[-1] ^= 0x01
        cases: dict[str, Version] = {
            "salt": dataclasses.replace(v, salt=bytes(a ^ 0xFF for a in v.salt)),
            "other salt": dataclasses.replace(v, salt=v1.salt),
            "version": dataclasses.replace(v, version=1),
            "version+1": dataclasses.replace(v, version=3),
            "size-1": dataclasses.replace(v, size=v.size - 1),
            "drop last chunk": dataclasses.replace(
                v, size=last * CHUNK, sums=v.sums[:-1], table=v.table[:-1],
                stored_size=v.stored - v.table[-1][0]),
            "raw flag": dataclasses.replace(
                v, table=((v.table[0][0], v.table[0][1] ^ CHUNK_RAW, 0), *v.table[1:])),
            "seal": dataclasses.replace(
                v, table=(*v.table[:1], (v.table[1][0], v.table[1][1], 1), *v.table[2:])),
            "doc": dataclasses.replace(v, doc=vb.doc),
            "flip with fixed checksum": _inline(v, [stored[0], bytes(flipped), *stored[2:]]),
            "tag flip with fixed checksum": _inline(
                v, [stored[0], bytes(tag_flipped), *stored[2:]]),
            "moved from another document": _inline(
                v, [stored[0], _stored(db, vb)[1], *stored[2:]]),
            "rolled back to version 1": _inline(v, [stored[0], _stored(db, v1)[1],
                                                     *stored[2:]]),
        }
        if codec is not None:  # the codec is in the associated data too
            cases["codec"] = dataclasses.replace(v, codec=2)
        cases["swapped with fixed checksums"] = _inline(
            v, [stored[0], stored[2], stored[1], stored[3]])
        for name, bad in cases.items():
            with pytest.raises(CorruptionError) as exc:
                _read_all(db, bad, verify)
            assert isinstance(exc.value, AuthenticationError), (name, exc.value)
            assert isinstance(exc.value, EncryptionError)
            assert exc.value.path == "/tampered" and "/tampered" in str(exc.value), name
        # Without the key, a sealed chunk is never handed out.
        with pytest.raises(EncryptionError):
            DocReader(db._engine._pager, v, "/a", verify=verify).read(0, 10)


def test_unencrypted_compressed_damage_is_a_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    data = text_data(4 * CHUNK, 5)
    with streamdb.open(path, config("zstd")) as db:
        db.write_document("/z", data)
        v = latest(db, "/z")
        assert v.inline is None and v.codec == 3 and not v.encrypted
        spans = chunk_spans(v, db._engine._page_size, 1)
        db.checkpoint()
    raw = bytearray(path.read_bytes())
    off, n = spans[0]
    raw[off + n // 2] ^= 0x20
    path.write_bytes(bytes(raw))
    with streamdb.open(path, config("zstd")) as db:
        with pytest.raises(ChecksumMismatch) as exc:
            db.get("/z")
        assert exc.value.path == "/z" and "'/z'" in str(exc.value)
        assert db.get("/z", offset=2 * CHUNK, length=CHUNK) == data[2 * CHUNK : 3 * CHUNK]
        with pytest.warns(UserWarning, match="quick mode"):
            db.set_quick_mode(True)
        # Quick mode skips the checksum of unencrypted chunks: the codec may or may not
        # notice, but the result is a CorruptionError or bytes of the right length.
        try:
            got = db.get("/z")
        except CorruptionError as err:
            assert err.path == "/z"
        else:
            assert len(got) == len(data) and got != data


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
def test_damage_in_a_compressed_document_names_the_logical_offset(tmp_path: Path,
                                                                  encrypted: bool) -> None:
    """Offsets in errors are document offsets (what `get(offset=)` takes), whatever the
    error: a checksum mismatch, an authentication failure or an undecodable chunk."""
    path = tmp_path / "t.db"
    key = KEY if encrypted else None
    data = text_data(4 * CHUNK, 5)
    with streamdb.open(path, config("zstd", key)) as db:
        db.write_document("/z", data)
        v = latest(db, "/z")
        assert v.inline is None
        spans = chunk_spans(v, db._engine._page_size, 2)
        assert spans[0][0] - v.extents[0][0] * db._engine._page_size != 2 * CHUNK
    raw = bytearray(path.read_bytes())
    off, n = spans[0]
    raw[off + n // 2] ^= 0x20
    path.write_bytes(bytes(raw))
    with streamdb.open(path, config("zstd", key)) as db:
        with pytest.raises(ChecksumMismatch) as exc:
            db.get("/z", offset=2 * CHUNK + 5, length=10)
        assert exc.value.path == "/z"
        assert exc.value.offset == 2 * CHUNK, str(exc.value)
        report = db.verify()
        assert not report.ok
        assert any(f"offset {2 * CHUNK})" in p for p in report.problems), report.problems


# -- 6. bounded decompression -------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _zstd_frame_claiming(size: int) -> bytes:
    """A zstd frame header declaring a content size of `size` (single segment, 8-byte
    field), followed by one raw block that holds far less."""
    header = (0xFD2FB528).to_bytes(4, "little") + bytes([0xE0]) + size.to_bytes(8, "little")
    block = bytes([(100 << 3 | 0 << 1 | 1) & 0xFF, (100 << 3) >> 8 & 0xFF, 0]) + b"z" * 100
    return header + block


def test_decompression_is_bounded_by_the_expected_length() -> None:
    text = text_data(5000, 9)
    frames = {codec: transform.compress(codec, text) for codec in (1, 2, 3)}
    assert zstandard.frame_content_size(_zstd_frame_claiming(1 << 40)) == 1 << 40
    bad: list[tuple[int, bytes, int]] = [
        (1, _varint(1 << 31) + b"\x00" * 64, 1000),
        (1, _varint(1 << 31) + b"\x00" * 64, 4096),
        (3, _zstd_frame_claiming(1 << 40), 1000),
        (3, _zstd_frame_claiming(1 << 40), CHUNK),
        (3, zstandard.ZstdCompressor(write_content_size=False).compress(text), len(text)),
        (2, random_data(3000, 1), 4000),
        (2, b"\xff" * 64, CHUNK),
        (1, random_data(3000, 2), 4000),
        (3, random_data(3000, 3), 4000),
        (1, b"", 10), (2, b"", 10), (3, b"", 10),
        (9, frames[1], len(text)),
    ]
    for codec, frame in frames.items():
        bad.append((codec, frame, len(text) - 1000))  # a valid frame of a longer text
        bad.append((codec, frame, len(text) + 1000))  # ... of a shorter one
        bad.append((codec, frame[:-3], len(text)))  # truncated
        assert transform.decompress(codec, frame, len(text)) == text
    largest = max(len(frame) for _, frame, _ in bad)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for codec, frame, expected in bad:
            with pytest.raises(CorruptionError):
                transform.decompress(codec, frame, expected)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (1 << 20) + largest, peak


def test_snappy_preamble_claiming_more_is_refused_before_decoding() -> None:
    frame = snappy.compress(b"abc" * 100)
    claims = _varint(1 << 31) + frame[len(_varint(300)):]
    with pytest.raises(CorruptionError):
        transform.decompress(1, claims, 300)
    lz4_frame = lz4.block.compress(b"abc" * 100, store_size=False)
    assert transform.decompress(2, lz4_frame, 300) == b"abc" * 100


def test_compressed_document_larger_than_max_document_size_is_refused_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.db"
    data = text_data(2 * CHUNK + 5, 6)
    with streamdb.open(path, config("snappy", KEY)) as db:
        db.write_document("/big", data)
        db.write_document("/small", text_data(1000, 6))

    def no_decoding(codec: int, frame: bytes | memoryview, expected: int) -> bytes:
        raise AssertionError("decompress was called")

    monkeypatch.setattr(docio, "decompress", no_decoding)
    with streamdb.open(path, config("snappy", KEY, max_document_size=100_000)) as db:
        assert db.info("/big").size == len(data)
        reads: list[Callable[[], object]] = [
            lambda: db.get("/big"), lambda: db.get("/big", offset=0, length=10),
            lambda: list(db.get_stream("/big")), lambda: db.get_view("/big"),
        ]
        for read in reads:
            with pytest.raises(CorruptionError) as exc:
                read()
            assert exc.value.path == "/big" and "max_document_size" in str(exc.value)
        with db.open("/big", "rb") as f, pytest.raises(CorruptionError):
            f.read()
    monkeypatch.undo()
    with streamdb.open(path, config("snappy", KEY, max_document_size=100_000)) as db:
        assert db.get("/small") == text_data(1000, 6)
    with streamdb.open(path, config("snappy", KEY)) as db:
        assert db.get("/big") == data


# -- 7. nonces ----------------------------------------------------------------------------


def test_a_version_number_reused_after_a_rollback_gets_a_fresh_salt(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db", config("lz4", KEY)) as db:
        db.write_document("/n", text_data(CHUNK + 10, 1))
        v1 = latest(db, "/n")
        undone: list[tuple[Version, list[bytes]]] = []
        with pytest.raises(RuntimeError), db.transaction():
            db.write_document("/n", text_data(2 * CHUNK, 2))
            undone.append((latest(db, "/n"), _stored(db, latest(db, "/n"))))
            raise RuntimeError("roll back")
        assert db.versions("/n") == [1]
        db.write_document("/n", text_data(2 * CHUNK, 2))  # the same bytes again
        v2 = latest(db, "/n")
        (gone, gone_chunks), chunks = undone[0], _stored(db, v2)
        assert gone.version == v2.version == 2
        assert len({v1.salt, gone.salt, v2.salt}) == 3
        assert all(len(s) == 16 for s in (v1.salt, v2.salt))
        # Same document, version, chunk indexes and plaintext: only a fresh key (salt)
        # keeps the nonces from repeating, so the ciphertexts differ.
        assert len(chunks) == len(gone_chunks) == 2
        for old, new in zip(gone_chunks, chunks, strict=True):
            assert old != new and old[-TAG:] != new[-TAG:]
        assert db.get("/n") == text_data(2 * CHUNK, 2)
        assert db.get("/n", version=1) == text_data(CHUNK + 10, 1)


@pytest.mark.parametrize("size", [1000, 3 * CHUNK])
def test_identical_documents_have_different_ciphertext(tmp_path: Path, size: int) -> None:
    data = random_data(size, 8)
    with streamdb.open(tmp_path / "t.db", config(None, KEY)) as db:
        db.write_document("/x", data)
        db.write_document("/y", data)
        db.write_document("/x", data)
        x1, x2, y = version_of(db, "/x", 1), latest(db, "/x"), latest(db, "/y")
        salts = {x1.salt, x2.salt, y.salt}
        assert len(salts) == 3
        chunks = [_stored(db, v) for v in (x1, x2, y)]
        assert all(len(c) == chunk_count(size) for c in chunks)
        for i in range(chunk_count(size)):
            assert len({c[i] for c in chunks}) == 3
            assert all(data[i * CHUNK : (i + 1) * CHUNK] not in c[i] for c in chunks)
        assert db.get("/x") == db.get("/y") == data


# -- 8. follower --------------------------------------------------------------------------


def test_readonly_follower_reads_sealed_compressed_documents(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    cfg = config("zstd", KEY)
    with streamdb.open(path, cfg) as writer:
        writer.write_document("/first", text_data(CHUNK + 1, 1))
        with pytest.raises(WrongKeyError):
            streamdb.open(path, config("zstd", OTHER_KEY), readonly=True)
        with pytest.raises(EncryptionError):
            streamdb.open(path, readonly=True)
        reader = streamdb.open(path, Config(encryption_key=KEY), readonly=True)
        try:
            assert reader.get("/first") == text_data(CHUNK + 1, 1)
            small, big = text_data(3000, 2), text_data(2 * CHUNK + 7, 3)
            writer.write_document("/small", small)
            writer.write_document("/big", big)
            writer.write_document("/first", random_data(70_000, 4))
            assert "/big" not in reader
            reader.refresh()
            assert reader.get("/small") == small
            check_doc(reader, "/big", big, full=True)
            assert reader.get("/first") == random_data(70_000, 4)
            assert reader.info("/big").codec == "zstd" and reader.info("/big").encrypted
            writer.checkpoint()
            writer.write_document("/after", random_data(CHUNK * 2, 5))
            reader.refresh()
            assert reader.get("/after") == random_data(CHUNK * 2, 5)
            assert reader.get("/big") == big
            reader.backup(tmp_path / "copy.db")  # a follower copies document by document
        finally:
            reader.close()
    with pytest.raises(WrongKeyError):
        streamdb.open(tmp_path / "copy.db", config("zstd", OTHER_KEY))
    with streamdb.open(tmp_path / "copy.db", cfg) as copy:
        assert copy.get("/big") == big and copy.get("/after") == random_data(CHUNK * 2, 5)
        assert copy.verify().ok


def test_aliases_read_the_same_sealed_version(tmp_path: Path) -> None:
    """Chunks are bound to the document id, not to a path: an alias reads them."""
    with streamdb.open(tmp_path / "t.db", config("snappy", KEY)) as db:
        doc_id = db.write_document("/a", text_data(CHUNK + 3, 1))
        assert isinstance(doc_id, uuid.UUID)
        db.bind_to_path(doc_id, "/alias")
        assert db.get("/alias") == text_data(CHUNK + 3, 1)
        assert latest(db, "/alias").doc == doc_id.bytes
