"""StreamWriter and StreamReader over files, short-read sources, sockets and finished
FlatBuffers builders: round trips against the reference encoder, zero-copy payloads that
stay valid, and the bounded framer refusing before it writes."""

from __future__ import annotations

import array
import io
import socket
import threading
from collections.abc import Callable

import flatbuffers  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamdb.errors import ChecksumMismatch, InvalidArgumentError
from streamdb.framing import (
    BoundedFramer,
    ChecksumFramer,
    Crc32,
    DefaultDeframer,
    DefaultFramer,
    FrameTooLarge,
    StreamReader,
    StreamWriter,
)
from tests.framing.helpers import BY_NAME, CODECS, Bytes, Codec, ShortReads, ref_stream

# flatstream-rs tests/corpus/crc32_medium.hex: the FlatBuffer of tests/generate_corpus.rs
# (a 1024-byte zero vector as the root) framed with CRC-32.
CRC32_MEDIUM = bytes.fromhex("08040000" "ad5f4f07" "04000000" "00040000") + bytes(1024)


class RecordingSink:
    """A binary sink that keeps every object `write` was called with (and a copy)."""

    def __init__(self) -> None:
        self.calls: list[memoryview] = []
        self.data = bytearray()
        self.flushes = 0

    def write(self, data: Bytes) -> int:
        view = memoryview(data)
        self.calls.append(view)
        self.data += view
        return view.nbytes

    def flush(self) -> None:
        self.flushes += 1


def read_views(reader: StreamReader, mode: str) -> list[memoryview]:
    """Every payload `reader` gives, as the views themselves (not copies)."""
    views: list[memoryview] = []
    if mode == "messages":
        views.extend(reader.messages())
    elif mode == "iter":
        views.extend(reader)
    elif mode == "read_message":
        while (view := reader.read_message()) is not None:
            views.append(view)
    else:
        assert reader.process_all(views.append) == len(views)
    return views


# --- round trips ------------------------------------------------------------------------

payload_lists = st.lists(
    st.binary(max_size=40) | st.binary(min_size=100, max_size=2000), max_size=14)


@given(
    payloads=payload_lists,
    codec=st.sampled_from(CODECS),
    buffer_size=st.sampled_from([0, 1, 5, 300, 64 << 10]),
    how=st.sampled_from(["write", "write_many", "both"]),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
    mode=st.sampled_from(["messages", "iter", "read_message", "process_all"]),
    source=st.sampled_from(["file", "read_size=1", "short1", "short7", "short300", "bytes",
                            "bytearray", "memoryview"]),
)
def test_round_trip(payloads: list[bytes], codec: Codec, buffer_size: int, how: str,
                    kind: Callable[[bytes], Bytes], mode: str, source: str) -> None:
    sink = io.BytesIO()
    writer = StreamWriter(sink, codec.framer(), buffer_size=buffer_size)
    inputs = [kind(p) for p in payloads]
    if how == "write":
        for payload in inputs:
            writer.write(payload)
    elif how == "write_many":
        assert writer.write_many(inputs) == len(inputs)
    else:
        half = len(inputs) // 2
        assert writer.write_many(inputs[:half]) == half
        for payload in inputs[half:]:
            writer.write(payload)
    writer.flush()
    assert writer.messages == len(payloads)
    wire = sink.getvalue()
    assert wire == ref_stream(codec, payloads)[0]

    src: object
    read_size = 1 << 20
    if source == "file":
        src = io.BytesIO(wire)
    elif source == "read_size=1":
        src, read_size = io.BytesIO(wire), 1
    elif source in ("bytes", "bytearray", "memoryview"):  # the stream itself, in memory
        src = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[source](wire)
    else:
        src = ShortReads(wire, most=int(source.removeprefix("short")), seed=len(wire))
    views = read_views(StreamReader(src, codec.make_deframer(), read_size=read_size), mode)
    # Compared only now, after every later read: each view is still what it was.
    assert all(v.readonly for v in views)
    assert [bytes(v) for v in views] == payloads


@given(payloads=payload_lists, codec=st.sampled_from(CODECS))
def test_views_survive_later_reads_and_the_reader_going_away(
        payloads: list[bytes], codec: Codec) -> None:
    wire = ref_stream(codec, payloads)[0]
    reader = StreamReader(ShortReads(wire, most=50), codec.make_deframer(), read_size=64)
    views: list[memoryview] = []
    while (view := reader.read_message()) is not None:
        views.append(view)
    del reader
    assert [bytes(v) for v in views] == payloads


def test_mixing_read_message_and_messages_gives_each_frame_once() -> None:
    """`messages()` promises every *remaining* payload: one taken by read_message() while
    the iterator is paused is not remaining any more."""
    wire = ref_stream(BY_NAME["default"], [b"1", b"2", b"3", b"4"])[0]
    reader = StreamReader(io.BytesIO(wire))
    it = reader.messages()
    got = [bytes(next(it)), bytes(next(it))]
    third = reader.read_message()
    assert third is not None
    got.append(bytes(third))
    got.extend(bytes(v) for v in it)
    assert got == [b"1", b"2", b"3", b"4"]


@given(payloads=payload_lists, codec=st.sampled_from(CODECS),
       ops=st.lists(st.sampled_from(["next", "read_message", "close", "new"]), max_size=40),
       most=st.sampled_from([1, 7, 300]))
def test_one_cursor_whatever_mix_of_calls(payloads: list[bytes], codec: Codec,
                                          ops: list[str], most: int) -> None:
    """read_message(), messages() and closing a paused iterator all share one position:
    each payload comes out once, in order, however the calls interleave."""
    wire = ref_stream(codec, payloads)[0]
    reader = StreamReader(ShortReads(wire, most=most), codec.make_deframer(), read_size=16)
    got: list[bytes] = []
    it = reader.messages()
    for op in ops:
        if op == "next":
            view = next(it, None)
        elif op == "read_message":
            view = reader.read_message()
        else:
            if op == "close":
                it.close()  # type: ignore[attr-defined]
            it, view = reader.messages(), None
        if view is not None:
            got.append(bytes(view))
    got.extend(bytes(v) for v in reader.messages())
    assert got == payloads
    assert reader.read_message() is None


@pytest.mark.parametrize("name", ["default", "xxh3", "custom3"])
@pytest.mark.parametrize("source", ["bytes", "one read each"])
def test_closing_a_paused_iterator_keeps_its_place(name: str, source: str) -> None:
    payloads = [b"a", b"bb", b"ccc", b"dddd"]
    wire = ref_stream(BY_NAME[name], payloads)[0]
    reader = StreamReader(wire if source == "bytes" else ShortReads(wire, most=1 << 20),
                          BY_NAME[name].make_deframer(), read_size=1 << 20)
    it = reader.messages()
    assert [bytes(next(it)), bytes(next(it))] == payloads[:2]
    it.close()  # type: ignore[attr-defined]
    rest = reader.read_message()
    assert rest is not None and bytes(rest) == b"ccc"
    assert [bytes(v) for v in reader] == [b"dddd"]


@pytest.mark.parametrize("name", ["default", "xxh3", "crc16", "custom3"])
def test_an_error_stays_where_it_is_and_what_came_before_is_kept(name: str) -> None:
    codec = BY_NAME[name]
    payloads = [bytes([i]) * (i * 5) for i in range(1, 9)]
    wire, bounds = ref_stream(codec, payloads)
    bad = bytearray(wire)
    if codec.width:
        bad[bounds[5] + 4] ^= 0x01  # frame 5's checksum
        error: type[Exception] = ChecksumMismatch
    else:
        bad[bounds[5] : bounds[5] + 4] = (1 << 31).to_bytes(4, "little")  # over the limit
        error = FrameTooLarge
    reader = StreamReader(bytes(bad), codec.make_deframer(max_frame_len=1 << 20))
    got: list[bytes] = []
    with pytest.raises(error) as first:
        got.extend(bytes(v) for v in reader.messages())
    assert got == payloads[:5]
    for again in (reader.read_message, lambda: next(reader.messages())):
        with pytest.raises(error) as later:
            again()
        assert later.value.offset == first.value.offset == bounds[5]  # type: ignore[attr-defined]


def test_a_reader_reads_the_rest_of_a_known_frame_in_doubling_reads() -> None:
    payload = bytes(range(256)) * 64  # 16 KiB
    wire = ref_stream(BY_NAME["crc32"], [payload])[0]
    source = ShortReads(wire, most=1 << 20)
    reader = StreamReader(source, BY_NAME["crc32"].make_deframer(), read_size=16)
    got = reader.read_message()
    assert got is not None and bytes(got) == payload
    assert source.asked[0] == 16
    # Each read asks for about what has arrived so far (never for the claimed length
    # outright): O(log n) reads for an n-byte frame.
    arrived = 16
    for asked in source.asked[1:-1]:
        assert asked <= arrived + 16
        arrived += asked
    assert len(source.asked) <= 2 + (len(wire) // 16).bit_length()


# --- writers ----------------------------------------------------------------------------


def test_small_frames_are_batched_and_a_large_payload_goes_out_uncopied() -> None:
    sink = RecordingSink()
    big = bytearray(b"B" * 1000)
    with StreamWriter(sink, DefaultFramer(), buffer_size=100) as writer:
        assert writer.write_many([b"a", b"bb", b"ccc"]) == 3
        assert sink.calls == []  # still buffered
        writer.write(big)
        # The buffered frames, the header, then the payload itself (no copy).
        assert [bytes(c) for c in sink.calls[:2]] == [
            bytes.fromhex("01000000" "61" "02000000" "6262" "03000000" "636363"),
            bytes.fromhex("e8030000")]
        assert sink.calls[2].obj is big
        writer.write(b"tail")
        assert len(sink.calls) == 3
    assert sink.flushes == 1
    assert bytes(sink.data) == ref_stream(BY_NAME["default"], [b"a", b"bb", b"ccc", big,
                                                               b"tail"])[0]


@pytest.mark.parametrize("how", ["write", "write_many"])
def test_a_memoryview_of_wider_items_is_framed_by_its_byte_length(how: str) -> None:
    """A payload may be any memoryview: its length on the wire is `nbytes`, whichever way
    it is written (DefaultFramer.header already counts nbytes)."""
    view = memoryview(array.array("H", [1, 2, 3]))
    for buffer_size in (0, 64 << 10):
        sink = io.BytesIO()
        with StreamWriter(sink, buffer_size=buffer_size) as writer:
            if how == "write":
                writer.write(view)
            else:
                writer.write_many([view])
        assert sink.getvalue() == bytes.fromhex("06000000") + view.tobytes(), buffer_size


def test_a_new_framer_frames_what_is_written_after_it() -> None:
    sink = io.BytesIO()
    writer = StreamWriter(sink)
    writer.write(b"one")
    writer.framer = ChecksumFramer(Crc32())
    writer.write(b"two")
    writer.write_many([b"three"])
    writer.flush()
    assert sink.getvalue() == (ref_stream(BY_NAME["default"], [b"one"])[0]
                               + ref_stream(BY_NAME["crc32"], [b"two", b"three"])[0])


def test_write_finished_sends_the_builders_message() -> None:
    builder = flatbuffers.Builder(64)
    name = builder.CreateString("hello, stream")
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(0, name, 0)
    builder.PrependInt32Slot(1, 42, 0)
    builder.Finish(builder.EndObject())
    expected = bytes(builder.Output())
    for buffer_size in (0, 64 << 10):
        sink = RecordingSink()
        with StreamWriter(sink, ChecksumFramer(Crc32()), buffer_size=buffer_size) as writer:
            writer.write_finished(builder)
        reader = StreamReader(io.BytesIO(bytes(sink.data)), BY_NAME["crc32"].make_deframer())
        assert [bytes(p) for p in reader.messages()] == [expected]
        assert bytes(sink.data) == ref_stream(BY_NAME["crc32"], [expected])[0]
        if buffer_size == 0:  # sent from the builder's own buffer, not a copy
            assert sink.calls[-1].obj is builder.Bytes
    assert bytes(builder.Output()) == expected  # the builder is left as it was


def test_write_finished_reproduces_flatstream_rs_crc32_medium_corpus() -> None:
    builder = flatbuffers.Builder(1024)
    builder.Finish(builder.CreateByteVector(bytes(1024)))
    assert bytes(builder.Output()) == CRC32_MEDIUM[8:]
    sink = io.BytesIO()
    with StreamWriter(sink, ChecksumFramer(Crc32())) as writer:
        writer.write_finished(builder)
    assert sink.getvalue() == CRC32_MEDIUM


def test_a_sink_or_source_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        StreamWriter(object())
    with pytest.raises(InvalidArgumentError):
        StreamReader(object())


def test_write_many_counts_the_frames_it_queued_before_a_refusal() -> None:
    """A refusal part-way through write_many leaves the frames before it queued (they go
    out at the next flush), so `messages` must count them."""
    sink = io.BytesIO()
    writer = StreamWriter(sink, BoundedFramer(DefaultFramer(), 4))
    with pytest.raises(FrameTooLarge):
        writer.write_many([b"ok", b"fine", b"too long", b"never"])
    writer.flush()
    payloads = [bytes(p) for p in StreamReader(io.BytesIO(sink.getvalue())).messages()]
    assert payloads == [b"ok", b"fine"]
    assert writer.messages == len(payloads)


# --- sockets ----------------------------------------------------------------------------

SOCKET_PAYLOADS = [bytes([i % 251]) * (i * 397 % 5000) for i in range(400)] + [
    b"\x07" * 300_000]


@pytest.mark.parametrize("name", ["default", "xxh3", "crc16", "custom3"])
def test_socketpair_round_trip(name: str) -> None:
    codec = BY_NAME[name]
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            with left, StreamWriter(left, codec.framer(), buffer_size=8192) as writer:
                half = len(SOCKET_PAYLOADS) // 2
                for payload in SOCKET_PAYLOADS[:half]:
                    writer.write(payload)
                writer.write_many(SOCKET_PAYLOADS[half:])
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    sender = threading.Thread(target=send)
    with right:
        right.settimeout(20)
        sender.start()
        views = list(StreamReader(right, codec.make_deframer(), read_size=4096).messages())
    sender.join(20)
    assert not sender.is_alive() and errors == []
    assert [bytes(v) for v in views] == SOCKET_PAYLOADS


def test_socketpair_one_byte_reads() -> None:
    payloads = [b"", b"one", bytes(range(200)), b""]
    left, right = socket.socketpair()
    with left, right:
        right.settimeout(10)
        with StreamWriter(left, ChecksumFramer(Crc32())) as writer:
            writer.write_many(payloads)
        left.shutdown(socket.SHUT_WR)
        reader = StreamReader(right, BY_NAME["crc32"].make_deframer(), read_size=1)
        views = []
        while (view := reader.read_message()) is not None:
            views.append(view)
    assert [bytes(v) for v in views] == payloads


def test_bounded_framer_refuses_a_long_payload_and_sends_nothing() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.settimeout(10)
        writer = StreamWriter(left, BoundedFramer(ChecksumFramer(Crc32()), 16), buffer_size=0)
        with pytest.raises(FrameTooLarge) as info:
            writer.write(b"x" * 17)
        assert (info.value.length, info.value.limit) == (17, 16)
        right.setblocking(False)
        with pytest.raises(BlockingIOError):
            right.recv(1)  # not a byte of the refused frame went out
        right.setblocking(True)
        right.settimeout(10)
        writer.write(b"y" * 16)
        assert writer.messages == 1
        left.shutdown(socket.SHUT_WR)
        got = [bytes(p) for p in StreamReader(right, BY_NAME["crc32"].make_deframer())]
    assert got == [b"y" * 16]


def test_bounded_framer_refusal_keeps_what_was_buffered() -> None:
    sink = io.BytesIO()
    writer = StreamWriter(sink, BoundedFramer(DefaultFramer(), 3))
    writer.write(b"abc")
    with pytest.raises(FrameTooLarge):
        writer.write(b"abcd")
    writer.flush()
    assert sink.getvalue() == bytes.fromhex("03000000616263")
    assert [bytes(p) for p in StreamReader(io.BytesIO(sink.getvalue()),
                                           DefaultDeframer())] == [b"abc"]
