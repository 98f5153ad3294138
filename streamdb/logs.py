"""Message logs: framed messages (streamdb.framing) appended to a document in place.

`append_messages` adds frames after a LOG version's last byte and logs the grown version
record (OP_EXTEND): one atomic, durable commit, no new version. `read_messages` verifies
each frame against the log's recorded checksum and starts at a message index by the
version's chunk entries (O(log chunks) to find the chunk, then at most one chunk of
frames skipped).
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from streamdb import errors as E
from streamdb.engine.pins import State
from streamdb.errmap import io_error
from streamdb.framing.checksums import Checksum, Crc16, Crc32, XxHash64
from streamdb.framing.frames import (
    LENGTH_MAX,
    ChecksumDeframer,
    ChecksumFramer,
    DefaultDeframer,
    DefaultFramer,
)
from streamdb.framing.streams import StreamReader
from streamdb.paths import path_key
from streamdb.storage.docio import CHUNK, checksum
from streamdb.storage.records import (
    ARROW_STREAM,
    FRAMINGS,
    NO_FRAME,
    OP_CREATE,
    OP_EXTEND,
    LogTable,
    Op,
    Version,
)
from streamdb.storage.transform import TAG

if TYPE_CHECKING:
    from streamdb.engine import Engine

_CHECKSUMS: dict[int, Checksum | None] = {0: None, 1: XxHash64(), 2: Crc32(), 3: Crc16(),
                                          ARROW_STREAM: None}
_NAMES = {v: k for k, v in FRAMINGS.items()}


def framing_name(framing: int) -> str | None:
    return _NAMES.get(framing)


def append_messages(engine: Engine, path: str,
                    payloads: Iterable[bytes | bytearray | memoryview], framing: str | None, *,
                    arrow: bool = False) -> int:
    """`Database.append_messages`: the index of the first message appended. With `arrow`
    (and framing "arrow"), the payloads are Arrow IPC messages, stored unframed."""
    if framing not in FRAMINGS or (framing == "arrow") != arrow:
        raise E.InvalidArgumentError(f"unknown message checksum {framing!r}: one of "
                                     f"{', '.join(repr(f) for f in FRAMINGS if f != 'arrow')}")
    key = path_key(path)
    with engine.writing():
        doc = engine.lookup_doc(key)
        cipher, algorithm = engine.cipher, engine.checksum_algorithm
        now = time.time()
        if doc is None:
            doc_id = uuid.uuid4()
            log = LogTable(FRAMINGS[framing], 0, ())
            if cipher is None:
                v = Version(1, 0, 0, now, now, algorithm, CHUNK, (),
                            (checksum(algorithm, b""),), b"", doc=doc_id.bytes,
                            log=replace(log, starts=((0, NO_FRAME),)))
            else:  # no chunk yet; sealed chunks of CHUNK - TAG bytes fill whole pages
                v = Version(1, 0, 0, now, now, algorithm, CHUNK - TAG,
                            salt=cipher.new_salt(), doc=doc_id.bytes, log=log)
        else:
            doc_id, v = doc.doc_id, doc.latest
            if v.log is None:
                raise E.InvalidArgumentError(f"{path!r} is a document, not a message log")
            if v.log.framing != FRAMINGS[framing]:
                raise E.InvalidArgumentError(
                    f"the log {path!r} uses checksum {framing_name(v.log.framing)!r}, "
                    f"not {framing!r}")
        assert v.log is not None
        cs = _CHECKSUMS[v.log.framing]
        header = (_unframed if arrow else
                  (ChecksumFramer(cs) if cs is not None else DefaultFramer()).header)
        frames = bytearray()
        per_chunk = v.chunk_size
        first_chunk = v.size // per_chunk
        starts: list[tuple[int, int]] = []
        count = v.log.count
        pos = v.size
        for payload in payloads:
            chunk = pos // per_chunk - first_chunk
            while len(starts) <= chunk:
                starts.append((0, 0xFFFFFFFF))
            if starts[chunk][1] == NO_FRAME:
                starts[chunk] = (count, pos % per_chunk)
            head = header(payload)
            frames += head
            frames += payload
            pos += len(head) + (len(payload) if type(payload) is bytes
                                else memoryview(payload).nbytes)
            count += 1
            if pos > engine.config.max_document_size:
                raise E.DocumentTooLargeError(
                    f"the log {path!r} would exceed max_document_size="
                    f"{engine.config.max_document_size}")
        if count == v.log.count:
            return count
        append = engine.log_append()
        try:
            grown = append.run(v, frames, starts, count, engine.next_lsn(), now)
        except OSError as exc:
            raise io_error(exc, f"appending to {path!r}") from exc
        engine.count_written(len(frames))
        if doc is None:
            engine.log([Op(OP_CREATE, doc_id, path=key, version=grown)])
        else:
            engine.log([Op(OP_EXTEND, doc_id, version=grown)])
        return v.log.count


def read_messages(engine: Engine, state: State, path: str, v: Version,
                  start: int) -> Iterator[memoryview]:
    """The messages of LOG version `v` from index `start`, verified; `state` is pinned
    for the caller, who releases it when this ends. Raises ChecksumMismatch and
    CorruptionError naming the path."""
    log = v.log
    assert log is not None
    if log.framing == ARROW_STREAM:
        raise E.InvalidArgumentError(f"{path!r} holds an Arrow stream: read it with get_table")
    if start >= log.count:
        return
    found = [(index, i, offset) for i, (index, offset) in enumerate(log.starts)
             if offset != NO_FRAME]
    at = bisect.bisect_right(found, (start, len(log.starts), NO_FRAME)) - 1
    if at < 0:
        raise E.CorruptionError("the message log's chunk entries do not cover its start",
                                path=path)
    index, chunk, offset = found[at]
    cs = _CHECKSUMS[log.framing]
    longest = min(v.size, LENGTH_MAX)  # no frame is longer than the log (nor than 4 GiB)
    deframer = ChecksumDeframer(cs, longest) if cs is not None else DefaultDeframer(longest)
    source = _LogSource(engine, state, path, v, chunk * v.chunk_size + offset)
    base = source.pos
    try:
        for payload in StreamReader(source, deframer, read_size=CHUNK).messages():
            if index >= start:
                yield payload
            index += 1
    except E.ChecksumMismatch as exc:
        if exc.path is not None:  # a chunk's checksum: it names the path already
            raise
        raise E.ChecksumMismatch(
            f"a message fails its checksum: stored {exc.expected:#x}, computed "
            f"{exc.computed:#x}", path=path, offset=base + (exc.offset or 0),
            expected=exc.expected, computed=exc.computed) from exc
    except E.FramingError as exc:
        raise E.CorruptionError(f"the message log is damaged: {exc}", path=path) from exc
    if index != log.count:
        raise E.CorruptionError(f"the message log holds {index} messages, its record says "
                                f"{log.count}", path=path)


def _unframed(payload: bytes | bytearray | memoryview) -> bytes:
    return b""


class _LogSource:
    """The bytes of a LOG version from `pos` on, as a file-like source, read (and
    verified) a chunk at a time."""

    def __init__(self, engine: Engine, state: State, path: str, v: Version, pos: int) -> None:
        self.engine, self.state, self.path, self.v, self.pos = engine, state, path, v, pos
        self.reader = engine.doc_reader(state, path, v)

    def read(self, n: int) -> bytes:
        left = self.v.size - self.pos
        if left <= 0:
            return b""
        # To the end of this chunk (each chunk is verified once), unless a frame needs more.
        cs = self.v.chunk_size
        n = min(left, n if n > cs else cs - self.pos % cs)
        data = self.engine.read(self.state, self.path, self.v, self.pos, n, self.reader)
        self.pos += len(data)
        return data
