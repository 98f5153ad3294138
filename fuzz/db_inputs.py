"""The inputs of the database-open harness (fuzz/fuzz_db_open.py): how one byte string
describes a database's files and how it is opened (`FuzzCase`, `Mode`), the determinism
the library's randomness is given (`deterministic`), databases built as seeds
(`build_database`), the on-disk structures the mutations aim at (header and tree page
fields, logged operations, checksum repairs), and those mutations, a plug-in of the shared
mutator (`DiskImage`)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import re
import struct
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
import xxhash  # noqa: E402
from fuzzkit import Mutator, Part  # noqa: E402
from fuzzkit.mutate import Op  # noqa: E402

import streamdb  # noqa: E402
import streamdb.engine.writes  # noqa: E402
import streamdb.logs  # noqa: E402
import wal  # noqa: E402
import wal.log  # noqa: E402
import wal.segments  # noqa: E402
from streamdb import Config  # noqa: E402
from streamdb.storage import btree, btree_format, header, records, transform  # noqa: E402
from wal import format as fmt  # noqa: E402
from wal.memvfs import MemoryVFS  # noqa: E402

DB_PATH = "/fuzz/t.db"
FILES = (DB_PATH, DB_PATH + "-wal", DB_PATH + "-wal.1")
PAGE = 4096
# "full" would zero-fill 16 MiB logs. A compressed document may legitimately decode to
# max_document_size bytes (a few KB of zstd can say so): keep that within MEMORY_LIMIT.
CONFIG = Config(page_size=PAGE, durability="normal", max_document_size=32 << 20)
TEST_KEY = hashlib.sha256(b"streamdb fuzz test key").digest()  # the key of CTRL_KEY inputs
MAX_INPUT = 2 << 20  # mutations stay below this size
CTRL_WAL, CTRL_WAL1, CTRL_LARGE, CTRL_KEY, CTRL_QUICK = 0x01, 0x02, 0x04, 0x08, 0x40
CODEC_SHIFT, CODEC_MASK = 4, 0x30  # control bits 4-5: transform.CODECS, 0 none
COMPRESSION: dict[int, Literal["snappy", "lz4", "zstd"]] = {1: "snappy", 2: "lz4", 3: "zstd"}
assert {name: codec for codec, name in COMPRESSION.items()} == transform.CODECS


# -- input framing ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mode:
    """How an input is opened: with `TEST_KEY` or not, a codec (0 none, else
    transform.CODECS), quick mode (reads skip checksums) or not."""

    key: bool = False
    codec: int = 0
    quick: bool = False

    def config(self) -> Config:
        return dataclasses.replace(CONFIG, compression=COMPRESSION.get(self.codec),
                                   encryption_key=TEST_KEY if self.key else None)

    @property
    def transformed(self) -> bool:
        return self.key or bool(self.codec)

    def __str__(self) -> str:
        parts = [COMPRESSION.get(self.codec, "")] + ["aes"] * self.key
        return "+".join(p for p in parts if p) or "plain"


PLAIN = Mode()


@dataclasses.dataclass(frozen=True)
class FuzzCase:
    db: bytes
    wal: bytes | None = None
    wal1: bytes | None = None
    large: bool = False
    mode: Mode = PLAIN

    @classmethod
    def decode(cls, data: bytes) -> FuzzCase:
        if not data:
            return cls(b"")
        control = data[0]
        files = fuzzkit.inputs.unpack_files(
            data[1:], [True, bool(control & CTRL_WAL), bool(control & CTRL_WAL1)])
        mode = Mode(bool(control & CTRL_KEY), (control & CODEC_MASK) >> CODEC_SHIFT,
                    bool(control & CTRL_QUICK))
        return cls(files[0] or b"", files[1], files[2], bool(control & CTRL_LARGE), mode)

    def encode(self) -> bytes:
        control = ((CTRL_WAL if self.wal is not None else 0)
                   | (CTRL_WAL1 if self.wal1 is not None else 0)
                   | (CTRL_LARGE if self.large else 0)
                   | (CTRL_KEY if self.mode.key else 0)
                   | (self.mode.codec << CODEC_SHIFT & CODEC_MASK)
                   | (CTRL_QUICK if self.mode.quick else 0))
        return bytes([control]) + fuzzkit.inputs.pack_files([self.db, self.wal, self.wal1])

    def files(self) -> dict[str, bytes]:
        return {p: d for p, d in zip(FILES, (self.db, self.wal, self.wal1), strict=True)
                if d is not None}

    def describe(self) -> str:
        sizes = ", ".join(f"{Path(p).name}: {len(d)} bytes" for p, d in self.files().items())
        mode = "" if self.mode == PLAIN else f", opened {self.mode}" + (
            " in quick mode" if self.mode.quick else "")
        return sizes + (", large new document" if self.large else "") + mode


# -- determinism ------------------------------------------------------------------------------


class _Seeded:
    """Stands in for `secrets` (btree, wal), `uuid.uuid4` and `os.urandom` (transform: key
    salts) during one input."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def urandom(self, n: int) -> bytes:
        return self._rng.randbytes(n)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Make the ids, salts, tree ids and timestamps the library draws reproducible."""
    fake = _Seeded(seed)
    clock = types.SimpleNamespace(time=lambda: 1_800_000_000.0, monotonic=time.monotonic,
                                  sleep=time.sleep)
    patches: list[tuple[dict[str, Any], str, object]] = [
        (vars(btree), "secrets", fake), (vars(wal.log), "secrets", fake),
        (vars(wal.segments), "secrets", fake), (vars(uuid), "uuid4", fake.uuid4),
        (vars(streamdb.engine.writes), "time", clock), (vars(streamdb.logs), "time", clock),
        (vars(streamdb.engine.writes), "_ids", lambda n: [fake.uuid4() for _ in range(n)]),
        (vars(transform), "os", types.SimpleNamespace(urandom=fake.urandom)),
    ]
    saved = [(ns, name, ns[name]) for ns, name, _ in patches]
    for ns, name, value in patches:
        ns[name] = value
    try:
        yield
    finally:
        for ns, name, value in saved:
            ns[name] = value


# -- seeds: databases built here --------------------------------------------------------------

PATHS = ("/a", "/a/b", "/docs/readme.txt", "/docs/x.bin", "/z/ünïcödé", "/logs/2026/01/02")
ALIASES = ("/alias/one", "/alias/two", "/a/b")
LogChecksum = Literal["xxh3", "crc32", "crc16"] | None
LOGS: dict[str, LogChecksum] = {
    "/msg/xxh3": "xxh3", "/msg/crc32": "crc32", "/msg/crc16": "crc16", "/msg/none": None}


def content(tag: str, size: int) -> bytes:
    """Deterministic, compressible document bytes."""
    block = hashlib.sha256(tag.encode()).digest()
    return (block * (size // 32 + 1))[:size]


def _size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.15:
        return 0
    if roll < 0.5:
        return rng.randint(1, 4096)
    if roll < 0.8:
        return rng.randint(4097, 65536)
    return rng.randint(65537, 300_000)


def log_batch(rng: random.Random, tag: str) -> list[bytes]:
    """A batch of 1..20 messages for a log: empty, small, a few KB, or (now and then) one
    long enough to span a 256 KiB chunk."""
    sizes = [rng.choice((0, rng.randint(1, 200), rng.randint(1, 200), rng.randint(200, 4000)))
             for _ in range(rng.randint(1, 20))]
    if rng.random() < 0.1:
        sizes[rng.randrange(len(sizes))] = rng.randint(100_000, 600_000)
    return [content(f"{tag}:{i}", size) for i, size in enumerate(sizes)]


def noise(tag: str, size: int) -> bytes:
    """Deterministic bytes that do not compress."""
    return hashlib.shake_256(tag.encode()).digest(size)


def build_database(rng: random.Random, *, many: bool = False, crash: str | None = None,
                   with_log: bool = True, mode: Mode = PLAIN, paged: bool = False,
                   max_doc: int | None = None, logs: bool = False) -> bytes:
    """An encoded input: a database after a few random operations, closed (crash None), or
    as a power loss with `MemoryVFS.crash(keep=crash)` leaves it ("none", "all", "random").
    Written with `mode`'s config, and opened with it. The documents are compressible: with
    a codec they are stored inline; `paged` first writes a 70 KB document that is not.
    `max_doc` caps the document sizes (without drawing differently from `rng`). With
    `logs`, some steps append messages to the message logs of LOGS instead (without it,
    nothing is drawn for them)."""
    vfs = MemoryVFS()
    with deterministic(rng.getrandbits(64)):
        db = streamdb.open(DB_PATH, mode.config(), vfs=vfs)
        live: dict[str, uuid.UUID] = {}
        if paged:
            live["/docs/x.bin"] = db.write_document("/docs/x.bin", noise("x.bin", 70_000))
        if many:
            db.write_documents((f"/many/{i:04d}/{'x' * (i % 40)}", content(str(i), i % 200))
                               for i in range(rng.randint(120, 220)))
        for step in range(rng.randint(3, 10)):
            if logs and rng.random() < 0.4:
                path = rng.choice(sorted(LOGS))
                # An alias may have made the log's path a plain document: no more appends.
                with contextlib.suppress(streamdb.InvalidArgumentError):
                    db.append_messages(path, log_batch(rng, f"{path}:{step}"),
                                       checksum=LOGS[path])
                live = {p: db.get_id_by_path(p) for p in db}
                continue
            roll = rng.random()
            if roll < 0.5 or not live:
                path = rng.choice(PATHS)
                size = _size(rng) if max_doc is None else min(_size(rng), max_doc)
                live[path] = db.write_document(path, content(f"{path}:{step}", size))
            elif roll < 0.65:
                db.delete(rng.choice(sorted(live)))
            elif roll < 0.8:
                alias = rng.choice(ALIASES)
                db.bind_to_path(live[rng.choice(sorted(live))], alias)
            elif roll < 0.95:
                db.checkpoint()
            else:
                db.gc()
            live = {p: db.get_id_by_path(p) for p in db}
        image = vfs
        if crash is not None:
            image = vfs.crash(keep=crash, rng=rng)  # type: ignore[arg-type]
        else:
            db.close()
        db_file, wal0, wal1 = (image.read_file(p) if image.exists(p) else None for p in FILES)
        case = FuzzCase(db_file or b"", wal0, wal1, rng.random() < 0.3, mode)
        if not with_log:
            case = FuzzCase(case.db, large=case.large, mode=mode)
        if crash is not None:
            db.close()
    if case.wal is None and case.wal1 is not None:
        case = dataclasses.replace(case, wal=b"")
    return case.encode()


def random_mode(rng: random.Random) -> Mode:
    """Plain half of the time, else a codec and/or the key."""
    if rng.random() < 0.5:
        return PLAIN
    key, codec = rng.choice([(True, 3), (True, 3), (True, 0), (True, 1), (True, 2),
                             (False, 1), (False, 2), (False, 3)])
    return Mode(key, codec)


def random_seed(rng: random.Random) -> bytes:
    crash = rng.choice([None, None, None, "none", "all", "random"])
    mode = random_mode(rng)
    logs = rng.random() < 0.4
    return build_database(rng, many=rng.random() < 0.15, crash=crash,
                          with_log=crash is not None or rng.random() < 0.5, mode=mode,
                          paged=mode.codec != 0 and rng.random() < 0.5, logs=logs)


# -- mutations ----------------------------------------------------------------------------------


def struct_fields(layout: struct.Struct, base: int = 0) -> list[tuple[int, int]]:
    """(offset, size) of each field of a struct layout, shifted by `base`."""
    fields, offset = [], 0
    for code in re.findall(r"\d*[a-zA-Z?]", layout.format.lstrip("<>=!@")):
        size = struct.calcsize("<" + code)
        fields.append((base + offset, size))
        offset += size
    return fields


# Field tables come from the format constants that the reader and writer share.
HEADER_FIELDS = struct_fields(header._FIXED) + [
    f for i in range(5) for f in struct_fields(btree_format._REF, 64 + 24 * i)] + [
    (184, 1), (185, 1), (200, 8), (216, 8), (240, 8)]  # key check: scheme, reserved, salt, check
PAGE_FIELDS = [f for f in struct_fields(btree_format._HEADER) if f[0] != btree_format._CHECKSUM_AT]
OP_FIELDS = [(0, 1), (1, 16), *struct_fields(records._VERSION, 17)]  # kind, doc id, version


def repair_header(buf: bytearray, at: int) -> None:
    body = header.HEADER_SIZE - 8
    if len(buf) >= at + header.HEADER_SIZE:
        buf[at + body : at + body + 8] = xxhash.xxh3_64_intdigest(
            bytes(buf[at : at + body])).to_bytes(8, "little")


def repair_page(buf: bytearray, at: int) -> None:
    if len(buf) >= at + PAGE:
        buf[at + 24 : at + 32] = bytes(8)
        buf[at + 24 : at + 32] = xxhash.xxh3_64_intdigest(bytes(buf[at : at + PAGE])).to_bytes(
            8, "little")


def tree_pages(buf: bytes | bytearray) -> list[int]:
    """Offsets of the pages that look like tree pages."""
    return [at for at in range(2 * PAGE, len(buf) - PAGE + 1, PAGE)
            if buf[at : at + 2] == btree_format.MAGIC]


def repair_db(buf: bytearray) -> None:
    """Recompute both header checksums and every tree page checksum."""
    for at in (0, PAGE):
        if buf[at : at + 8] == header.MAGIC:
            repair_header(buf, at)
    for at in tree_pages(buf):
        repair_page(buf, at)


def log_records(buf: bytes | bytearray) -> list[tuple[int, int]]:
    """(offset, payload length) of the records that carry the segment's tag, in order."""
    if len(buf) < fmt.SEGMENT_HEADER_SIZE or buf[:8] != fmt.MAGIC:
        return []
    found, at, tag = [], fmt.SEGMENT_HEADER_SIZE, int.from_bytes(buf[16:20], "little")
    while at + fmt.RECORD_HEADER_SIZE <= len(buf):
        head = fmt.parse_record_header(bytes(buf[at : at + fmt.RECORD_HEADER_SIZE]))
        if head.tag != tag or at + fmt.RECORD_HEADER_SIZE + head.length > len(buf):
            break
        found.append((at, head.length))
        at += fmt.RECORD_HEADER_SIZE + head.length
    return found


def repair_log(buf: bytearray) -> None:
    """Recompute the segment header CRC and every record's CRC and chain (`prev_crc`)."""
    if len(buf) < fmt.SEGMENT_HEADER_SIZE or buf[:8] != fmt.MAGIC:
        return
    buf[60:64] = fmt.crc(bytes(buf[:60])).to_bytes(4, "little")
    seg = fmt.SegmentHeader(0, int.from_bytes(buf[16:24], "little"), 1, 1)
    prev = 0
    for at, length in log_records(buf):
        head = fmt.parse_record_header(bytes(buf[at : at + fmt.RECORD_HEADER_SIZE]))
        body = bytes(buf[at + fmt.RECORD_HEADER_SIZE : at + fmt.RECORD_HEADER_SIZE + length])
        packed, prev = fmt.pack_record_header(
            tag=seg.tag, kind=head.kind, flags=head.flags, length=length,
            payload_crc=fmt.crc(body, seg.seed), lsn=head.lsn, durable_lsn=head.durable_lsn,
            prev_crc=prev, session=head.session)
        buf[at : at + fmt.RECORD_HEADER_SIZE] = packed


# -- the mutation plug-in -------------------------------------------------------------------------


def _put(m: Mutator, buf: bytearray, at: int, size: int) -> None:
    """An interesting value (as to pages) in the `size`-byte field at `at`."""
    extra = (PAGE, 2 * PAGE, len(buf) // PAGE - 1, len(buf) // PAGE, len(buf) // PAGE + 1,
             2 * (len(buf) // PAGE), len(buf))
    m.put_int(buf, at, size, fuzzkit.interesting(size, m.current(buf, at, size), extra),
              big_endian=0.1)


def header_field(m: Mutator, buf: bytearray) -> bytearray:
    """A field of a header copy (the key check's too), its checksum repaired mostly."""
    at = m.rng.choice((0, 0, PAGE))
    offset, size = m.rng.choice(HEADER_FIELDS)
    _put(m, buf, at + offset, size)
    if m.rng.random() < 0.9:
        repair_header(buf, at)
    return buf


def tree_page(m: Mutator, buf: bytearray) -> bytearray:
    """A tree page's header field, entries, or (internal pages) a child pointer: another
    child's, a page number, 0 or 1; its checksum repaired mostly."""
    rng = m.rng
    pages = tree_pages(buf)
    if not pages:
        return header_field(m, buf)
    at = rng.choice(pages)
    roll = rng.random()
    if roll < 0.5:
        offset, size = rng.choice(PAGE_FIELDS)
        _put(m, buf, at + offset, size)
    elif roll < 0.8 or buf[at + 4] != btree.PageType.INTERNAL:
        m.flip(buf, at + btree_format.HEADER_SIZE, at + PAGE, rng.choice((1, 1, 2, 8)))
    else:
        n = int.from_bytes(buf[at + 8 : at + 12], "little")
        child = at + 64 + 8 * rng.randrange(max(1, min(n, 400)))
        other = at + 64 + 8 * rng.randrange(max(1, min(n, 400)))
        buf[child : child + 8] = (buf[other : other + 8] if rng.random() < 0.5 else
                                  rng.choice((0, 1, 2, len(buf) // PAGE)).to_bytes(8, "little"))
    if rng.random() < 0.9:
        repair_page(buf, at)
    return buf


def pages(m: Mutator, buf: bytearray) -> bytearray:
    """Swap two pages, copy one over another, or put another input's page in its place (a
    stale or foreign page)."""
    rng, count = m.rng, len(buf) // PAGE
    if count < 2:
        return buf + (buf[:PAGE] if buf and rng.random() < 0.3 else bytes(PAGE))
    i, j = rng.randrange(count), rng.randrange(count)
    a, b = slice(i * PAGE, (i + 1) * PAGE), slice(j * PAGE, (j + 1) * PAGE)
    roll = rng.random()
    if roll < 0.4:
        buf[a], buf[b] = buf[b], buf[a]
    elif roll < 0.7:
        buf[b] = buf[a]
    else:
        other = FuzzCase.decode(m.partner()).db
        if len(other) >= (j + 1) * PAGE:
            buf[b] = other[b]
    return buf


def repair(m: Mutator, buf: bytearray) -> bytearray:
    repair_db(buf)
    return buf


def log_field(m: Mutator, buf: bytearray) -> bytearray:
    """A segment header field (flags, salt, seq, base LSN, previous LSN) or a logged
    operation's (kind, document id, version), then usually the CRCs repaired."""
    rng = m.rng
    found = log_records(buf)
    if rng.random() < 0.2 or not found:
        _put(m, buf, rng.choice((12, 16, 24, 32, 40)), rng.choice((4, 8)))
    else:
        at, length = rng.choice(found)
        start = at + fmt.RECORD_HEADER_SIZE
        fields = [f for f in OP_FIELDS if f[0] + f[1] <= length]
        if rng.random() < 0.7 and fields:
            offset, size = rng.choice(fields)
            _put(m, buf, start + offset, size)
        else:
            m.flip(buf, start, start + length, rng.choice((1, 2, 4)))
    if rng.random() < 0.85:
        repair_log(buf)
    return buf


def log_repair(m: Mutator, buf: bytearray) -> bytearray:
    repair_log(buf)
    return buf


def page_points(buf: bytes | bytearray) -> list[int]:
    return [*range(0, len(buf) + 1, PAGE), *(o for o, _ in HEADER_FIELDS)]


def log_points(buf: bytes | bytearray) -> list[int]:
    return [0, fmt.SEGMENT_HEADER_SIZE] + [p for at, _ in log_records(buf)
                                           for p in (at, at + fmt.RECORD_HEADER_SIZE)]


DB_OPS: list[tuple[float, Op]] = [(5, pages), (5, header_field), (12, tree_page), (2, repair)]
LOG_OPS: list[tuple[float, Op]] = [(9, log_field), (3, log_repair)]


class DiskImage(fuzzkit.Format):
    """A `FuzzCase`: now and then the options change (a wrong key, another codec, quick
    mode, a large document) or a log file is dropped; otherwise the database file is
    mutated (pages, header and tree page fields), or one of the log files (segment and
    record fields, CRCs repaired)."""

    rounds = (1, 1, 1, 2, 3)
    max_size = MAX_INPUT

    def whole(self, m: Mutator, data: bytes) -> bytes | None:
        rng = m.rng
        roll = rng.random()
        if roll > 0.12:
            return None
        case = FuzzCase.decode(data)
        mode = case.mode
        if roll < 0.01:  # the wrong key, or none: rejected at open, nothing written
            mode = dataclasses.replace(mode, key=not mode.key)
        elif roll < 0.03:  # new versions under another codec, old ones read with theirs
            mode = dataclasses.replace(mode, codec=rng.randrange(4))
        elif roll < 0.08:  # damaged chunks reach the decoders unverified
            mode = dataclasses.replace(mode, quick=not mode.quick)
        elif roll < 0.10:
            return dataclasses.replace(case, large=not case.large).encode()
        elif case.wal is not None:  # a log file lost
            if rng.random() < 0.5:
                return dataclasses.replace(case, wal1=None).encode()
            return dataclasses.replace(case, wal=b"" if case.wal1 is not None else None
                                       ).encode()
        return dataclasses.replace(case, mode=mode).encode()

    def part(self, m: Mutator, data: bytes) -> Part:
        case = FuzzCase.decode(data)
        present = [i for i, log in enumerate((case.wal, case.wal1)) if log is not None]
        if present and m.rng.random() < 0.2:
            if m.rng.choice(present) == 0:
                return Part(case.wal or b"", lambda b: dataclasses.replace(case, wal=b).encode(),
                            LOG_OPS, log_points)
            return Part(case.wal1 or b"", lambda b: dataclasses.replace(case, wal1=b).encode(),
                        LOG_OPS, log_points)
        return Part(case.db, lambda b: dataclasses.replace(case, db=b).encode(), DB_OPS,
                    page_points)
