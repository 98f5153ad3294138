"""asyncio front-ends of the framing codec, over `asyncio.StreamReader`/`StreamWriter`
pairs (`asyncio.open_connection`, `asyncio.start_server`). The decoding is `FrameDecoder`'s;
these only move bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from streamdb.framing.frames import DefaultDeframer, DefaultFramer, FrameDecoder, Framer


class AsyncStreamReader:
    def __init__(self, stream: asyncio.StreamReader, deframer: DefaultDeframer | None = None,
                 *, read_size: int = 64 << 10) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(deframer)
        self._read_size = read_size

    async def read_message(self) -> memoryview | None:
        """The next payload, or None at a clean end. Raises as `StreamReader` does."""
        while True:
            payload = self._decoder.next_payload()
            if payload is not None:
                return payload
            data = await self._stream.read(self._read_size)
            if not data:
                self._decoder.end()
                return None
            self._decoder.feed(data)

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[memoryview]:
        while (payload := await self.read_message()) is not None:
            yield payload


class AsyncStreamWriter:
    def __init__(self, stream: asyncio.StreamWriter, framer: Framer | None = None) -> None:
        self._stream = stream
        self.framer: Framer = framer if framer is not None else DefaultFramer()

    def write(self, payload: bytes | bytearray | memoryview) -> None:
        """Queue one frame on the transport (call `drain()` for flow control)."""
        self._stream.writelines([self.framer.header(payload), payload])

    def write_many(self, payloads: Iterable[bytes | bytearray | memoryview]) -> int:
        parts: list[bytes | bytearray | memoryview] = []
        header = self.framer.header
        for payload in payloads:
            parts += (header(payload), payload)
        self._stream.writelines(parts)
        return len(parts) // 2

    async def drain(self) -> None:
        await self._stream.drain()

    async def flush(self) -> None:
        await self._stream.drain()
