"""`StreamWriter` and `StreamReader`: framed messages over binary files and sockets.

The writer batches small frames in a buffer (one `write`/`sendall` per `buffer_size`
bytes) and sends a large payload as it is, after its header, without copying it. The reader
reads `read_size` bytes at a time and hands out read-only `memoryview`s of what it read: a
payload stays valid for as long as it is referenced (the buffer it points into is never
reused or resized), not only until the next read.

I/O: the sink's `write` (or `sendall`) and `flush`; the source's `read` (or `recv`).
Errors: FramingError subclasses and ChecksumMismatch from the codec; OSError from the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from streamdb.errors import ChecksumMismatch, FrameTooLarge, InvalidArgumentError
from streamdb.framing.checksums import Crc16, Crc32, XxHash64
from streamdb.framing.frames import (
    _HEADERS,
    LENGTH,
    ChecksumFramer,
    DefaultDeframer,
    DefaultFramer,
    FrameDecoder,
    Framer,
)

Buffer = bytes | bytearray | memoryview
READ_MAX = 16 << 20  # the largest single read; a longer frame takes several


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

    def __init__(self, sink: Any, framer: Framer | None = None, *,
                 buffer_size: int = 64 << 10) -> None:
        self.framer: Framer = framer if framer is not None else DefaultFramer()
        self._sink = sink
        self._write = _sink_writer(sink)
        self._limit = max(0, buffer_size)
        self._buf = bytearray()
        self.messages = 0

    def write(self, payload: Buffer) -> None:
        """Frame and buffer one payload; a payload of `buffer_size` or more goes out at
        once, uncopied. O(len(payload)). Raises FrameTooLarge."""
        header = self.framer.header(payload)
        if (len(payload) if type(payload) is bytes else memoryview(payload).nbytes) >= self._limit:
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
        header = self.framer.header
        pack, compute = self._inline_header()
        try:
            for payload in payloads:
                n = len(payload) if type(payload) is bytes else memoryview(payload).nbytes
                if n >= limit:
                    self._drain()
                    self._write(header(payload))
                    self._write(payload)
                    buf = self._buf
                else:
                    if pack is None or n > 0xFFFFFFFF:
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

    def _inline_header(self) -> tuple[Callable[..., bytes] | None,
                                      Callable[[Buffer], int] | None]:
        """For the default framer and the built-in checksums, the struct packer and the
        checksum function that make a header without a Python-level call."""
        framer = self.framer
        if type(framer) is DefaultFramer:
            return LENGTH.pack, None
        checksum = getattr(framer, "checksum", None)
        if type(framer) is ChecksumFramer and isinstance(checksum, XxHash64 | Crc32):
            return _HEADERS[checksum.size].pack, checksum.function
        return None, None

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


class StreamReader:
    """Reads framed messages from `source`: a binary file object or a socket-like object.

    End of input at a frame boundary ends the stream; inside a frame it is UnexpectedEof.
    """

    def __init__(self, source: Any, deframer: DefaultDeframer | None = None, *,
                 read_size: int = 256 << 10) -> None:
        self._read = _source_reader(source)
        self._decoder = FrameDecoder(deframer)
        self.deframer = self._decoder.deframer
        self._read_size = max(1, read_size)
        self._eof = False
        self._calls = 0

    def read_message(self) -> memoryview | None:
        """The next payload, or None at the end. Reads as needed: `read_size` bytes, or for
        the rest of a large frame reads that double what has arrived (up to READ_MAX), so
        an n-byte frame takes O(log n) reads and a claimed length alone never sizes one.
        Raises UnexpectedEof, FrameTooLarge, ChecksumMismatch."""
        decoder = self._decoder
        self._calls += 1  # tells a paused `messages()` that the position moved
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

    def messages(self) -> Iterator[memoryview]:
        """Every remaining payload, in order. The loop over whole frames in the buffer
        runs inline; refills and frames across reads go through `read_message`, which
        may also be called between two of these."""
        b, d = self._decoder.buffer, self.deframer
        limit, hs, size = d.max_frame_len, d.header_size, d.size
        header = _HEADERS.get(size)
        compute = (getattr(d.checksum, "function", d.checksum.compute)
                   if d.checksum is not None else None)
        if not isinstance(d.checksum, XxHash64 | Crc32 | Crc16 | None):
            header = None  # a custom checksum may need masking: the general path
        unpack = LENGTH.unpack_from
        while True:
            view, pos, calls = b.view, b.pos, self._calls
            end = len(view)
            if header is None:  # a custom checksum size: the general path
                pass
            elif compute is None:
                while end - pos >= 4:
                    n = unpack(view, pos)[0]
                    stop = pos + 4 + n
                    if n > limit or stop > end:
                        break
                    b.pos = stop
                    yield view[pos + 4 : stop]
                    if self._calls != calls:  # read_message() ran meanwhile: go on from there
                        break
                    pos = stop
            else:
                hunpack = header.unpack_from
                while end - pos >= hs:
                    n, expected = hunpack(view, pos)
                    start = pos + hs
                    stop = start + n
                    if n > limit or stop > end:
                        break
                    payload = view[start:stop]
                    if compute(payload) != expected:
                        d.verify(view, pos, start, stop, b.base)
                    b.pos = stop
                    yield payload
                    if self._calls != calls:  # read_message() ran meanwhile: go on from there
                        break
                    pos = stop
            slow = self.read_message()
            if slow is None:
                return
            yield slow

    def process_all(self, callback: Callable[[memoryview], object]) -> int:
        """Call `callback(payload)` for every remaining message; returns how many."""
        count = 0
        for payload in self.messages():
            callback(payload)
            count += 1
        return count

    def __iter__(self) -> Iterator[memoryview]:
        return self.messages()


__all__ = ["ChecksumMismatch", "FinishedBuilder", "FrameTooLarge", "StreamReader",
           "StreamWriter"]
