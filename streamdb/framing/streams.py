"""`StreamWriter` and `StreamReader`: framed messages over binary files, sockets and
streams already in memory.

The writer batches small frames in a buffer (one `write`/`sendall` per `buffer_size`
bytes) and sends a large payload as it is, after its header, without copying it. The reader
reads `read_size` bytes at a time and hands out read-only `memoryview`s of what it read: a
payload stays valid for as long as it is referenced (the buffer it points into is never
reused or resized), not only until the next read.

I/O: the sink's `write` (or `sendall`) and `flush`; the source's `read` (or `recv`).
Errors: FramingError subclasses and ChecksumMismatch from the codec; OSError from the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from types import GeneratorType
from typing import Any, Protocol, cast

from streamdb.errors import ChecksumMismatch, FrameTooLarge, InvalidArgumentError
from streamdb.framing.checksums import Crc16, Crc32, XxHash64
from streamdb.framing.frames import (
    _HEADERS,
    LENGTH,
    LENGTH_MAX,
    ChecksumFramer,
    DefaultDeframer,
    DefaultFramer,
    FrameDecoder,
    Framer,
)

Buffer = bytes | bytearray | memoryview
READ_MAX = 16 << 20  # the largest single read; a longer frame takes several
_BUILT_IN = (XxHash64, Crc32, Crc16)  # checksums whose values need no masking


class FinishedBuilder(Protocol):
    """A finished `flatbuffers.Builder`: its message is `Bytes[Head():]`."""

    Bytes: bytearray

    def Head(self) -> int: ...


def _sink_writer(sink: Any) -> Callable[[Buffer], None]:
    """A function writing all of its argument to `sink` (a socket or a binary file)."""
    sendall = getattr(sink, "sendall", None)
    if callable(sendall):
        return sendall  # type: ignore[no-any-return]
    write = getattr(sink, "write", None)
    if not callable(write):
        raise InvalidArgumentError(f"cannot write to {type(sink).__name__}: no write()")

    def write_all(data: Buffer) -> None:
        view = memoryview(data)
        while view:
            n = write(view)
            if n is None:  # a non-blocking raw file that would block: retry
                continue
            view = view[n:]

    return write_all


def _source_reader(source: Any) -> Callable[[int], bytes]:
    recv = getattr(source, "recv", None)
    read = recv if callable(recv) else getattr(source, "read", None)
    if not callable(read):
        raise InvalidArgumentError(f"cannot read from {type(source).__name__}: no read()")
    return read  # type: ignore[no-any-return]


class StreamWriter:
    """Writes framed messages to `sink`: a binary file object or a socket-like object.

    Call `flush()` (or use it as a context manager) to push buffered frames out."""

    __slots__ = ("_buf", "_compute", "_framer", "_limit", "_pack", "_sink", "_write",
                 "messages")

    def __init__(self, sink: Any, framer: Framer | None = None, *,
                 buffer_size: int = 64 << 10) -> None:
        self.framer = framer if framer is not None else DefaultFramer()
        self._sink = sink
        self._write = _sink_writer(sink)
        self._limit = min(max(0, buffer_size), LENGTH_MAX)  # so buffered frames fit
        self._buf = bytearray()
        self.messages = 0

    @property
    def framer(self) -> Framer:
        return self._framer

    @framer.setter
    def framer(self, framer: Framer) -> None:
        self._framer = framer
        self._pack, self._compute = _inline_header(framer)

    def write(self, payload: Buffer) -> None:
        """Frame and buffer one payload; a payload of `buffer_size` or more goes out at
        once, uncopied. O(len(payload)). Raises FrameTooLarge."""
        n = len(payload) if type(payload) is bytes else memoryview(payload).nbytes
        pack = self._pack
        if n < self._limit and pack is not None:
            buf = self._buf
            compute = self._compute
            buf += pack(n) if compute is None else pack(n, compute(payload))
            buf += payload
            self.messages += 1
            if len(buf) >= self._limit:
                self._drain()
            return
        header = self._framer.header(payload)
        if n >= self._limit:
            self._drain()
            self._write(header)
            self._write(payload)
        else:
            buf = self._buf
            buf += header
            buf += payload
            if len(buf) >= self._limit:
                self._drain()
        self.messages += 1

    def write_finished(self, builder: FinishedBuilder) -> None:
        """Write the message a finished `flatbuffers.Builder` holds, without copying it
        out of the builder (`Output()` would)."""
        self.write(memoryview(builder.Bytes)[builder.Head() :])

    def write_many(self, payloads: Iterable[Buffer]) -> int:
        """Frame and write every payload, batching them into few writes. Returns how many.
        O(total bytes)."""
        buf, limit, count = self._buf, self._limit, 0
        header, pack, compute = self._framer.header, self._pack, self._compute
        try:
            for payload in payloads:
                n = len(payload) if type(payload) is bytes else memoryview(payload).nbytes
                if n >= limit:
                    self._drain()
                    self._write(header(payload))
                    self._write(payload)
                    buf = self._buf
                else:
                    if pack is None:
                        buf += header(payload)
                    elif compute is None:
                        buf += pack(n)
                    else:
                        buf += pack(n, compute(payload))
                    buf += payload
                    if len(buf) >= limit:
                        self._drain()
                        buf = self._buf
                count += 1
        finally:  # frames queued before a refused one still go out: count them
            self.messages += count
        return count

    def _drain(self) -> None:
        if self._buf:
            out, self._buf = self._buf, bytearray()
            self._write(out)

    def flush(self) -> None:
        """Write out buffered frames, then flush the sink if it can be."""
        self._drain()
        flush = getattr(self._sink, "flush", None)
        if callable(flush):
            flush()

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def _inline_header(framer: Framer) -> tuple[Callable[..., bytes] | None,
                                            Callable[[Buffer], int] | None]:
    """For the default framer and the built-in checksums, the struct packer and the
    checksum function that make a header with at most one Python-level call (CRC-16's)."""
    if type(framer) is DefaultFramer:
        return LENGTH.pack, None
    checksum = framer.checksum if type(framer) is ChecksumFramer else None
    if checksum is not None and type(checksum) in _BUILT_IN:
        return _HEADERS[checksum.size].pack, getattr(checksum, "function", checksum.compute)
    return None, None


class StreamReader:
    """Reads framed messages from `source`: a binary file object, a socket-like object, or
    the stream itself as a bytes-like object (read in place when it is `bytes`).

    End of input at a frame boundary ends the stream; inside a frame it is UnexpectedEof.
    The reader has one position: `read_message()`, `messages()` and iteration all take the
    next payload from it, so they can be mixed and each payload comes out once.
    """

    def __init__(self, source: Any, deframer: DefaultDeframer | None = None, *,
                 read_size: int = 256 << 10) -> None:
        self._decoder = FrameDecoder(deframer)
        self.deframer = self._decoder.deframer
        self._read_size = max(1, read_size)
        if isinstance(source, bytes | bytearray | memoryview):
            self._decoder.feed(source)
            self._read: Callable[[int], bytes] = _no_more
        else:
            self._read = _source_reader(source)
        self._eof = False
        self._cursor = self._new_cursor()

    def read_message(self) -> memoryview | None:
        """The next payload, or None at the end. Reads as needed: `read_size` bytes, or for
        the rest of a large frame reads that double what has arrived (up to READ_MAX), so
        an n-byte frame takes O(log n) reads and a claimed length alone never sizes one.
        Raises UnexpectedEof, FrameTooLarge, ChecksumMismatch."""
        return next(self.messages(), None)

    def messages(self) -> Iterator[memoryview]:
        """Every remaining payload, in order: the reader's one cursor. O(1) per frame in
        the buffer plus the checksum; after an error, the next call raises it again."""
        cursor = self._cursor
        if cursor.gi_frame is None:  # ended, by the end of the input or by an error
            cursor = self._cursor = self._new_cursor()
        return cursor

    def _new_cursor(self) -> GeneratorType[memoryview, None, None]:
        return cast("GeneratorType[memoryview, None, None]", self._walk())

    def _walk(self) -> Generator[memoryview, None, None]:
        """The loop over whole frames in the buffer runs inline, with the position in a
        local; it is stored back before refills, frames across reads and errors."""
        b, d = self._decoder.buffer, self.deframer
        limit, hs = d.max_frame_len, d.header_size
        header = _HEADERS.get(d.size)
        checksum = d.checksum
        compute = (None if checksum is None
                   else getattr(checksum, "function", None) or checksum.compute)
        if checksum is not None and type(checksum) not in _BUILT_IN:
            header = None  # a custom checksum may need masking: the general path
        unpack = LENGTH.unpack_from
        view, pos = b.view, b.pos
        try:
            while True:
                view, pos = b.view, b.pos
                end = len(view)
                # Headers are unpacked from the bytes object itself when the view is all
                # of it (cheaper than through the view). A buffer no longer than the limit
                # holds no frame over it: one bound check per frame then suffices.
                raw = view.obj if type(view.obj) is bytes and len(view.obj) == end else view
                if header is None or limit < end:  # the general path
                    pass
                elif compute is None:
                    last = end - 4
                    while pos <= last:
                        start = pos + 4
                        stop = start + unpack(raw, pos)[0]
                        if stop > end:
                            break
                        pos = stop
                        yield view[start:stop]
                else:
                    hunpack = header.unpack_from
                    last = end - hs
                    while pos <= last:
                        n, expected = hunpack(raw, pos)
                        start = pos + hs
                        stop = start + n
                        if stop > end:
                            break
                        payload = view[start:stop]
                        if compute(payload) != expected:
                            d.verify(view, pos, start, stop, b.base)
                        pos = stop
                        yield payload
                b.pos = pos
                slow = self._next_slow()
                if slow is None:
                    return
                view, pos = b.view, b.pos
                yield slow
        finally:  # paused, closed or failed: the decoder's position is the cursor's
            if b.view is view:
                b.pos = pos

    def _next_slow(self) -> memoryview | None:
        """The next payload through the decoder, reading as needed."""
        decoder = self._decoder
        while True:
            payload = decoder.next_payload()
            if payload is not None:
                return payload
            if self._eof:
                decoder.end()
                return None
            b = decoder.buffer
            want = self._read_size
            if len(b.view) - b.pos >= 4:  # a known frame: read the rest of it in big reads
                # (a read is sized by what has arrived, not by what a length claims)
                rest = self.deframer.needed(b.view, b.pos) - b.available()
                want = max(want, min(rest, READ_MAX, b.available() + want))
            data = self._read(want)
            if data:
                decoder.feed(data)
            else:
                self._eof = True

    def process_all(self, callback: Callable[[memoryview], object]) -> int:
        """Call `callback(payload)` for every remaining message; returns how many."""
        count = 0
        for payload in self.messages():
            callback(payload)
            count += 1
        return count

    def __iter__(self) -> Iterator[memoryview]:
        return self.messages()


def _no_more(n: int) -> bytes:
    return b""


__all__ = ["ChecksumMismatch", "FinishedBuilder", "FrameTooLarge", "StreamReader",
           "StreamWriter"]
