"""AsyncStreamWriter/AsyncStreamReader over real TCP connections (`asyncio.start_server` on
127.0.0.1): many messages both ways, a clean end when the peer closes between frames and
UnexpectedEof when it closes inside one. Each test runs its own event loop."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from streamdb.errors import StreamDbError
from streamdb.framing import AsyncStreamReader, AsyncStreamWriter, FrameTooLarge, UnexpectedEof
from tests.framing.helpers import BY_NAME, ref_stream

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
PAYLOADS = [bytes([i % 256]) * (i * 131 % 3000) for i in range(1500)] + [
    b"", b"\xaa" * 400_000, b"end"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def with_server(handler: Handler,
                      client: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                       Awaitable[T]]) -> T:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await client(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def test_many_messages_both_directions_and_a_clean_end() -> None:
    codec = BY_NAME["crc32"]
    server_got: list[memoryview] = []
    server_errors: list[BaseException] = []

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            reader = AsyncStreamReader(r, codec.make_deframer(), read_size=997)
            writer = AsyncStreamWriter(w, codec.framer())
            async for payload in reader:  # until the client's clean end (write_eof)
                server_got.append(payload)
                writer.write(bytes(payload)[::-1])
                await writer.drain()
            assert writer.write_many([b"bye", b""]) == 2
            await writer.flush()
        except BaseException as exc:  # reported by the test below
            server_errors.append(exc)
        finally:
            await close(w)

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> list[bytes]:
        writer = AsyncStreamWriter(w, codec.framer())
        reader = AsyncStreamReader(r, codec.make_deframer())

        async def send() -> None:
            half = len(PAYLOADS) // 2
            for payload in PAYLOADS[:half]:
                writer.write(payload)
                await writer.drain()
            assert writer.write_many(PAYLOADS[half:]) == len(PAYLOADS) - half
            await writer.drain()
            w.write_eof()

        sending = asyncio.create_task(send())
        replies = [p async for p in reader]
        await sending
        assert await reader.read_message() is None  # still ended
        return [bytes(p) for p in replies]

    replies = run(with_server(echo, client))
    assert server_errors == []
    assert [bytes(p) for p in server_got] == PAYLOADS  # views kept, compared at the end
    assert replies == [p[::-1] for p in PAYLOADS] + [b"bye", b""]


def test_the_bytes_on_the_wire_are_the_format() -> None:
    codec = BY_NAME["xxh3"]
    payloads = [b"abc", b"", b"123456789"]

    async def send(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writer = AsyncStreamWriter(w, codec.framer())
        writer.write(payloads[0])
        writer.write_many(payloads[1:])
        await writer.flush()
        await close(w)

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
        return await r.read()

    assert run(with_server(send, client)) == ref_stream(codec, payloads)[0]


def test_a_server_closing_between_frames_is_a_clean_end() -> None:
    async def send_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        AsyncStreamWriter(w).write_many([b"one", b"two"])
        await close(w)

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> list[bytes | None]:
        reader = AsyncStreamReader(r, read_size=1)
        return [None if p is None else bytes(p) for p in
                [await reader.read_message() for _ in range(4)]]

    assert run(with_server(send_then_close, client)) == [b"one", b"two", None, None]


def test_a_server_closing_inside_a_frame_is_unexpected_eof() -> None:
    codec = BY_NAME["crc16"]
    whole, bounds = ref_stream(codec, [b"first", b"second"])
    torn = ref_stream(codec, [b"a third that never ends"])[0][:-5]

    async def send_torn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(whole + torn)
        await w.drain()
        await close(w)

    async def client(r: asyncio.StreamReader,
                     w: asyncio.StreamWriter) -> tuple[list[bytes], StreamDbError | None]:
        reader = AsyncStreamReader(r, codec.make_deframer(), read_size=3)
        got: list[bytes] = []
        try:
            while (payload := await reader.read_message()) is not None:
                got.append(bytes(payload))
        except StreamDbError as exc:
            return got, exc
        return got, None

    got, exc = run(with_server(send_torn, client))
    assert got == [b"first", b"second"]
    assert isinstance(exc, UnexpectedEof)
    assert exc.offset == bounds[-1]


def test_a_client_closing_inside_a_frame_is_unexpected_eof_on_the_server() -> None:
    outcome: list[tuple[list[bytes], BaseException | None]] = []

    async def scenario() -> None:
        finished = asyncio.Event()

        async def receive(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            reader = AsyncStreamReader(r)
            got: list[bytes] = []
            try:
                while (payload := await reader.read_message()) is not None:
                    got.append(bytes(payload))
                outcome.append((got, None))
            except BaseException as exc:  # inspected by the test below
                outcome.append((got, exc))
            finally:
                finished.set()
                await close(w)

        async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            AsyncStreamWriter(w).write(b"whole")
            w.write(struct.pack("<I", 10) + b"part")
            await w.drain()
            await close(w)
            await finished.wait()

        await with_server(receive, client)

    run(scenario())
    [(got, exc)] = outcome
    assert got == [b"whole"]
    assert isinstance(exc, UnexpectedEof) and exc.offset == 9


def test_a_hostile_length_from_the_network_is_frame_too_large() -> None:
    async def hostile(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"\xff\xff\xff\xff")
        await w.drain()
        await r.read()  # hold the connection open until the client goes
        await close(w)

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> BaseException:
        reader = AsyncStreamReader(r)
        try:
            await reader.read_message()
        except FrameTooLarge as exc:
            return exc
        raise AssertionError("no FrameTooLarge")

    exc = run(with_server(hostile, client))
    assert isinstance(exc, FrameTooLarge) and exc.length == 0xFFFFFFFF and exc.offset == 0
