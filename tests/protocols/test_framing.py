"""Tests of protocols.framing: every framer's encoding and incremental decoder, then each one's
specifics (delimiters, length headers, fixed sizes, limits, broken decoders, linear scanning)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from protocols import (
    DEFAULT_MAX_FRAME_SIZE,
    DeserializeError,
    FixedSizeFramer,
    Framer,
    FrameTooLargeError,
    FramingError,
    JSONDocumentFramer,
    LengthPrefixFramer,
    LineFramer,
    ProtocolError,
    SerializeError,
)

from protocol_helpers import decode_all, identity, one_byte_at_a_time, split_at

FRAMERS: dict[str, Framer] = {
    "line-lf": LineFramer(),
    "line-crlf": LineFramer(b"\r\n"),
    "line-aa": LineFramer(b"aa"),  # self-overlapping
    "line-abab": LineFramer(b"abab"),  # self-overlapping, multi-byte
    "line-END": LineFramer(b"<END>"),
    "prefix-1": LengthPrefixFramer(1),
    "prefix-2": LengthPrefixFramer(2),
    "prefix-4": LengthPrefixFramer(4),
    "prefix-8": LengthPrefixFramer(8),
    "fixed-5": FixedSizeFramer(5),
    "json-documents": JSONDocumentFramer(),
}

#: Documents for the JSON framer, tricky ones included; the last is a number, which a
#: truncated stream leaves incomplete at every length (as the other framers' last frames).
JSON_DOCUMENTS = [
    b"{}",
    b"[]",
    b'"a"',
    b'{"a":"}]\\"[{"}',
    b'[1,[2,{"b":null}],"\\\\\\""]',
    b"true",
    b'"\\\\"',
    b"-0.5e3",
]

CANDIDATE_PAYLOADS = [
    b"",
    b"a",
    b"hello world",
    b"\r",
    b"x\r",
    b"\n",
    b"<END",
    b"END>",
    b"ab",
    b"aba",
    b"ba",
    b"\x00" * 10,
    bytes(range(200)),
]


def frameable(framer: Framer, payload: bytes) -> bool:
    try:
        framer.frame(payload)
    except SerializeError:
        return False
    return True


def payloads_for(framer: Framer) -> list[bytes]:
    """Some payloads ``framer`` can frame, the tricky ones (delimiter prefixes...) included."""
    if isinstance(framer, FixedSizeFramer):
        return [b"abcde", b"\x00" * 5, b"\n\n\n\n\n", b"a<END", b"12345"]
    if isinstance(framer, JSONDocumentFramer):
        return JSON_DOCUMENTS
    payloads = [p for p in CANDIDATE_PAYLOADS if frameable(framer, p)]
    assert len(payloads) >= 6
    return payloads


def bad_message_for(framer: Framer) -> bytes:
    """A frameable payload that the test deserializer below refuses."""
    if isinstance(framer, JSONDocumentFramer):
        return b'"BAD"'
    return b"BAD!!" if isinstance(framer, FixedSizeFramer) else b"BAD"


def refuse_bad(payload: bytes) -> bytes:
    if payload.startswith((b"BAD", b'"BAD')):
        raise DeserializeError("refused", payload)
    return payload


def stream_of(framer: Framer, payloads: list[bytes]) -> bytes:
    return b"".join(framer.frame(payload) for payload in payloads)


@pytest.fixture(params=list(FRAMERS.values()), ids=list(FRAMERS))
def framer(request: pytest.FixtureRequest) -> Framer:
    result: Framer = request.param
    return result


# --- what every framer does ---------------------------------------------------------------------


class TestEveryFramer:
    def test_frame_and_begin_end_frame_produce_the_same_bytes(self, framer: Framer) -> None:
        buffer = bytearray(b"earlier frames")
        expected = b"earlier frames"
        for payload in payloads_for(framer):
            token = framer.begin_frame(buffer)
            buffer += payload
            framer.end_frame(buffer, token)
            expected += framer.frame(payload)
            assert buffer == expected

    @pytest.mark.parametrize(
        "delivery",
        [
            pytest.param(lambda data: [data], id="whole"),
            pytest.param(one_byte_at_a_time, id="byte-by-byte"),
            pytest.param(lambda data: split_at(data, range(0, len(data), 7)), id="7-byte-chunks"),
            pytest.param(lambda data: split_at(data, [len(data) // 2]), id="halves"),
        ],
    )
    def test_decodes_the_payloads(self, framer: Framer, delivery: Any) -> None:
        payloads = payloads_for(framer)
        decoder = framer.decoder(identity)
        assert decode_all(decoder, delivery(stream_of(framer, payloads))) == payloads
        assert decoder.buffered == 0

    def test_trailing_partial_frame_stays_buffered(self, framer: Framer) -> None:
        payloads = payloads_for(framer)
        last = framer.frame(payloads[-1])
        for kept in range(1, len(last)):
            decoder = framer.decoder(identity)
            decoder.feed(stream_of(framer, payloads[:-1]) + last[:kept])
            assert list(decoder) == payloads[:-1]
            assert decoder.buffered == kept
            assert list(decoder) == []  # asking again changes nothing
            assert decoder.buffered == kept
            decoder.feed(last[kept:])
            assert list(decoder) == payloads[-1:]
            assert decoder.buffered == 0

    @pytest.mark.parametrize("byte_by_byte", [False, True], ids=["bytes-path", "bytearray-path"])
    def test_buffer_dropped_once_everything_is_consumed(
        self, framer: Framer, byte_by_byte: bool
    ) -> None:
        """An idle connection holds no receive buffer: neither the received chunk nor the
        bytearray that accumulated a frame spanning reads."""
        decoder = framer.decoder(identity)
        stream = stream_of(framer, payloads_for(framer))
        decode_all(decoder, one_byte_at_a_time(stream) if byte_by_byte else [stream])
        assert decoder.buffered == 0
        assert decoder._buf == b""
        assert type(decoder._buf) is bytes

    def test_feed_copies_a_mutable_buffer(self, framer: Framer) -> None:
        """The caller may reuse its receive buffer right after feed()."""
        payloads = payloads_for(framer)
        received = bytearray(stream_of(framer, payloads))
        decoder = framer.decoder(identity)
        decoder.feed(received)
        received[:] = b"\xff" * len(received)
        assert list(decoder) == payloads

    def test_feed_accepts_memoryview(self, framer: Framer) -> None:
        payloads = payloads_for(framer)
        stream = stream_of(framer, payloads)
        decoder = framer.decoder(identity)
        chunks = [memoryview(chunk) for chunk in split_at(stream, [3, len(stream) - 2])]
        assert decode_all(decoder, chunks) == payloads  # type: ignore[arg-type]

    def test_feeding_nothing_changes_nothing(self, framer: Framer) -> None:
        decoder = framer.decoder(identity)
        decoder.feed(b"")
        assert decoder.buffered == 0
        assert list(decoder) == []
        frame = framer.frame(payloads_for(framer)[-1])
        decoder.feed(frame[:1])
        decoder.feed(b"")
        assert decoder.buffered == 1

    def test_decoder_is_its_own_iterator(self, framer: Framer) -> None:
        decoder = framer.decoder(identity)
        assert iter(decoder) is decoder
        with pytest.raises(StopIteration):
            next(decoder)

    def test_messages_can_be_taken_one_at_a_time_between_feeds(self, framer: Framer) -> None:
        """Interleave feed() and partial iteration: the buffer is compacted under frames that
        have not been read yet."""
        payloads = payloads_for(framer) * 3
        decoder = framer.decoder(identity)
        received = []
        for chunk in split_at(stream_of(framer, payloads), range(0, 10_000, 5)):
            decoder.feed(chunk)
            for message in decoder:
                received.append(message)
                break
        received.extend(decoder)
        assert received == payloads

    def test_deserialize_error_keeps_the_stream_in_sync(self, framer: Framer) -> None:
        """A refused message is consumed; the following ones still come out, in order."""
        good = payloads_for(framer)
        bad = bad_message_for(framer)
        messages = [good[0], bad, good[1], bad, bad, *good[2:]]
        decoder = framer.decoder(refuse_bad)
        decoder.feed(stream_of(framer, messages))
        received, errors = [], 0
        while True:
            try:
                received.extend(decoder)
                break
            except DeserializeError:
                errors += 1
        assert received == good
        assert errors == 3
        assert not decoder.broken
        assert decoder._buf == b""

    def test_decoders_are_independent(self, framer: Framer) -> None:
        payloads = payloads_for(framer)
        first, second = framer.decoder(identity), framer.decoder(identity)
        frame = framer.frame(payloads[-1])
        first.feed(frame[:-1])
        second.feed(framer.frame(payloads[0]))
        assert list(second) == payloads[:1]
        first.feed(frame[-1:])
        assert list(first) == payloads[-1:]

    def test_not_broken_initially(self, framer: Framer) -> None:
        assert not framer.decoder(identity).broken

    def test_close_drops_what_was_received_and_refuses_more(self, framer: Framer) -> None:
        payloads = payloads_for(framer)
        decoder = framer.decoder(identity)
        decoder.feed(stream_of(framer, payloads) + framer.frame(payloads[0])[:-1])
        decoder.close()
        assert decoder.buffered == 0
        assert decoder._buf == b""
        assert decoder.broken
        with pytest.raises(FramingError, match="closed"):
            decoder.feed(b"more")
        with pytest.raises(FramingError, match="closed"):
            next(decoder)

    def test_repr_names_the_class(self, framer: Framer) -> None:
        assert repr(framer).startswith(type(framer).__name__ + "(")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda size: LineFramer(max_frame_size=size), id="line"),
        pytest.param(lambda size: LengthPrefixFramer(max_frame_size=size), id="prefix"),
        pytest.param(FixedSizeFramer, id="fixed"),
        pytest.param(lambda size: JSONDocumentFramer(max_frame_size=size), id="json-documents"),
    ],
)
@pytest.mark.parametrize("size", [0, -1])
def test_size_must_be_positive(make: Any, size: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        make(size)


# --- end_frame errors ---------------------------------------------------------------------------

UNFRAMEABLE = [
    pytest.param(LineFramer(), b"a\nb", id="line-lf"),
    pytest.param(LineFramer(b"aa"), b"ba", id="line-aa"),
    pytest.param(LengthPrefixFramer(1), b"x" * 256, id="prefix-1"),
    pytest.param(FixedSizeFramer(5), b"abcdef", id="fixed-5"),
]


@pytest.mark.parametrize(("framer", "payload"), UNFRAMEABLE)
def test_end_frame_error_leaves_the_caller_able_to_truncate(framer: Framer, payload: bytes) -> None:
    buffer = bytearray(framer.frame(b"x" * 5))
    start = len(buffer)
    token = framer.begin_frame(buffer)
    buffer += payload
    with pytest.raises(SerializeError):
        framer.end_frame(buffer, token)
    with pytest.raises(SerializeError):
        framer.frame(payload)
    assert buffer.startswith(framer.frame(b"x" * 5))
    del buffer[start:]
    token = framer.begin_frame(buffer)
    buffer += b"y" * 5
    framer.end_frame(buffer, token)
    assert decode_all(framer.decoder(identity), [bytes(buffer)]) == [b"x" * 5, b"y" * 5]


# --- LineFramer ---------------------------------------------------------------------------------


class TestLineFramer:
    def test_defaults(self) -> None:
        framer = LineFramer()
        assert framer.delimiter == b"\n"
        assert framer.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 1024 * 1024
        assert framer.frame(b"PING") == b"PING\n"
        assert LineFramer(b"\r\n").frame(b"PING") == b"PING\r\n"

    @pytest.mark.parametrize("delimiter", [b"", "\n", bytearray(b"\n"), None])
    def test_delimiter_must_be_non_empty_bytes(self, delimiter: Any) -> None:
        with pytest.raises(ValueError, match="delimiter"):
            LineFramer(delimiter)

    @pytest.mark.parametrize(
        ("delimiter", "payload"),
        [
            (b"\n", b"a\nb"),
            (b"\n", b"\n"),
            (b"\r\n", b"a\r\nb"),
            (b"aa", b"a"),  # "a" + "aa": the delimiter is found one byte early
            (b"aa", b"baa"),
            (b"aa", b"aab"),
            (b"abab", b"xab"),  # "xab" + "abab" = "xababab": found at 1, not 3
            (b"<END>", b"x<END>y"),
        ],
    )
    def test_payload_that_would_be_misframed_is_refused(
        self, delimiter: bytes, payload: bytes
    ) -> None:
        framer = LineFramer(delimiter)
        misframed = decode_all(framer.decoder(identity), [payload + delimiter])
        assert misframed != [payload]  # the reason for refusing it
        with pytest.raises(SerializeError, match="contains the delimiter"):
            framer.frame(payload)
        buffer = bytearray()
        token = framer.begin_frame(buffer)
        buffer += payload
        with pytest.raises(SerializeError, match="contains the delimiter"):
            framer.end_frame(buffer, token)

    @pytest.mark.parametrize(
        ("delimiter", "payload"),
        [
            (b"\r\n", b"x\r"),
            (b"\r\n", b"\n"),
            (b"aa", b"ab"),
            (b"abab", b"aba"),
            (b"<END>", b"<END"),
        ],
    )
    def test_payload_close_to_the_delimiter_is_accepted(
        self, delimiter: bytes, payload: bytes
    ) -> None:
        framer = LineFramer(delimiter)
        data = framer.frame(payload)
        assert decode_all(framer.decoder(identity), one_byte_at_a_time(data)) == [payload]

    def test_frame_of_exactly_max_frame_size_accepted(self) -> None:
        decoder = LineFramer(b"\r\n", max_frame_size=4).decoder(identity)
        decoder.feed(b"abcd\r\n")
        assert list(decoder) == [b"abcd"]

    def test_complete_frame_over_the_limit(self) -> None:
        decoder = LineFramer(max_frame_size=4).decoder(identity)
        decoder.feed(b"ok\nabcde\nnever\n")
        assert next(decoder) == b"ok"
        with pytest.raises(FrameTooLargeError) as info:
            next(decoder)
        assert (info.value.size, info.value.limit) == (5, 4)
        assert "frame of 5 bytes is over max_frame_size=4" in str(info.value)
        assert decoder.broken

    @pytest.mark.parametrize(("delimiter", "allowed"), [(b"\n", 4), (b"\r\n", 5), (b"<END>", 8)])
    def test_incomplete_run_past_the_limit(self, delimiter: bytes, allowed: int) -> None:
        """With max_frame_size=4, a delimiter-less run may still become a valid frame while it
        is at most 4 + len(delimiter) - 1 bytes long; one byte more and it cannot."""
        decoder = LineFramer(delimiter, max_frame_size=4).decoder(identity)
        decoder.feed(b"x" * allowed)
        assert list(decoder) == []
        decoder.feed(b"x")
        with pytest.raises(FrameTooLargeError) as info:
            next(decoder)
        assert (info.value.size, info.value.limit) == (allowed + 1, 4)
        assert "incomplete frame already" in str(info.value)

    def test_partial_delimiter_at_the_limit_completes(self) -> None:
        decoder = LineFramer(b"<END>", max_frame_size=4).decoder(identity)
        decoder.feed(b"abcd<END")
        assert list(decoder) == []
        decoder.feed(b">")
        assert list(decoder) == [b"abcd"]

    def test_scan_restarts_near_the_end(self) -> None:
        """Counting proof of linear decoding: fed one byte at a time, each delimiter search
        starts at most len(delimiter) - 1 bytes before the new byte, so the bytes searched in
        total stay within len(delimiter) * n (a rescan from the start would be n**2 / 2)."""
        for delimiter in (b"\n", b"\r\n", b"<END>"):
            decoder = LineFramer(delimiter).decoder(identity)
            n = 64 * 1024
            searched = 0
            for _ in range(n):
                decoder.feed(b"x")
                searched += len(decoder._buf) - decoder._scan  # type: ignore[attr-defined]
                assert list(decoder) == []
            assert searched <= len(delimiter) * n
            decoder.feed(delimiter)
            assert list(decoder) == [b"x" * n]

    @pytest.mark.parametrize("delimiter", [b"\n", b"\r\n"])
    def test_one_mebibyte_line_byte_by_byte_is_linear(self, delimiter: bytes) -> None:
        """Timing check of the same property: 4x the data must take well under 16x the time
        (a quadratic scan would take ~16x; a linear one ~4x)."""

        def feed_line(size: int) -> float:
            decoder = LineFramer(delimiter, max_frame_size=2 * size).decoder(identity)
            byte = b"x"
            started = time.perf_counter()
            for _ in range(size):
                decoder.feed(byte)
                for _ in decoder:
                    pass
            decoder.feed(delimiter)
            assert len(next(decoder)) == size
            return time.perf_counter() - started

        small = min(feed_line(256 * 1024) for _ in range(2))
        large = feed_line(1024 * 1024)
        if large / small >= 8:  # measure once more before failing: the machine may be busy
            small = min(small, feed_line(256 * 1024))
            large = min(large, feed_line(1024 * 1024))
        assert large < 20
        assert large / small < 8, (small, large)


# --- LengthPrefixFramer -------------------------------------------------------------------------


class TestLengthPrefixFramer:
    @pytest.mark.parametrize(
        ("header_size", "header", "default_max"),
        [
            (1, b"\x03", 255),
            (2, b"\x00\x03", 65535),
            (4, b"\x00\x00\x00\x03", DEFAULT_MAX_FRAME_SIZE),
            (8, b"\x00" * 7 + b"\x03", DEFAULT_MAX_FRAME_SIZE),
        ],
    )
    def test_header_sizes(self, header_size: int, header: bytes, default_max: int) -> None:
        framer = LengthPrefixFramer(header_size)
        assert framer.header_size == header_size
        assert framer.frame(b"abc") == header + b"abc"
        assert framer.max_frame_size == default_max

    def test_default_header_is_four_bytes(self) -> None:
        assert LengthPrefixFramer().header_size == 4

    @pytest.mark.parametrize("header_size", [0, 3, 16, -1, None])
    def test_invalid_header_size(self, header_size: Any) -> None:
        with pytest.raises(ValueError, match="header_size must be 1, 2, 4 or 8"):
            LengthPrefixFramer(header_size)

    @pytest.mark.parametrize(("header_size", "too_big"), [(1, 256), (2, 65536)])
    def test_max_frame_size_beyond_the_header_is_value_error(
        self, header_size: int, too_big: int
    ) -> None:
        with pytest.raises(ValueError, match="cannot express"):
            LengthPrefixFramer(header_size, max_frame_size=too_big)
        assert LengthPrefixFramer(header_size, max_frame_size=too_big - 1).max_frame_size == (
            too_big - 1
        )

    def test_max_frame_size_may_exceed_the_default(self) -> None:
        assert LengthPrefixFramer(8, max_frame_size=2**40).max_frame_size == 2**40

    def test_payload_too_big_for_the_header(self) -> None:
        framer = LengthPrefixFramer(1)
        assert framer.frame(b"x" * 255)[:1] == b"\xff"
        with pytest.raises(SerializeError, match="256 bytes does not fit a 1-byte header"):
            framer.frame(b"x" * 256)
        buffer = bytearray()
        token = framer.begin_frame(buffer)
        buffer += b"x" * 256
        with pytest.raises(SerializeError, match="does not fit"):
            framer.end_frame(buffer, token)

    def test_encoding_is_not_limited_by_max_frame_size(self) -> None:
        """max_frame_size bounds what we accept; the peer decides what it accepts."""
        assert len(LengthPrefixFramer(max_frame_size=10).frame(b"x" * 100)) == 104

    def test_frame_of_exactly_max_frame_size_accepted(self) -> None:
        framer = LengthPrefixFramer(2, max_frame_size=10)
        decoder = framer.decoder(identity)
        decoder.feed(framer.frame(b"x" * 10))
        assert list(decoder) == [b"x" * 10]

    @pytest.mark.parametrize("header_size", [1, 2, 4, 8])
    def test_header_over_the_limit_refused_before_the_payload(self, header_size: int) -> None:
        """Only the header is fed, byte by byte: nothing until it is complete, then at once
        FrameTooLargeError, without waiting for (or buffering) the payload."""
        framer = LengthPrefixFramer(header_size, max_frame_size=10)
        header = framer.frame(b"x" * 11)[:header_size]
        decoder = framer.decoder(identity)
        for byte in one_byte_at_a_time(header[:-1]):
            decoder.feed(byte)
            assert list(decoder) == []
        decoder.feed(header[-1:])
        with pytest.raises(FrameTooLargeError) as info:
            next(decoder)
        assert (info.value.size, info.value.limit) == (11, 10)
        assert decoder.broken
        assert decoder.buffered == 0

    def test_zero_length_frames(self) -> None:
        framer = LengthPrefixFramer(2)
        decoder = framer.decoder(identity)
        decoder.feed(b"\x00\x00" * 3)
        assert list(decoder) == [b"", b"", b""]


# --- FixedSizeFramer ----------------------------------------------------------------------------


class TestFixedSizeFramer:
    def test_size_is_the_limit(self) -> None:
        framer = FixedSizeFramer(7)
        assert framer.size == framer.max_frame_size == 7

    @pytest.mark.parametrize("payload", [b"", b"abcd", b"abcdef"])
    def test_wrong_size_refused(self, payload: bytes) -> None:
        framer = FixedSizeFramer(5)
        with pytest.raises(SerializeError, match=f"payload of {len(payload)} bytes"):
            framer.frame(payload)
        buffer = bytearray(b"before")
        token = framer.begin_frame(buffer)
        buffer += payload
        with pytest.raises(SerializeError, match="frames are 5 bytes"):
            framer.end_frame(buffer, token)

    def test_frame_is_the_payload(self) -> None:
        assert FixedSizeFramer(3).frame(b"abc") == b"abc"

    def test_any_bytes_cut_into_records(self) -> None:
        decoder = FixedSizeFramer(3).decoder(identity)
        decoder.feed(bytes(range(10)))
        assert list(decoder) == [b"\x00\x01\x02", b"\x03\x04\x05", b"\x06\x07\x08"]
        assert decoder.buffered == 1


# --- broken decoders ----------------------------------------------------------------------------

OVERSIZED = [
    pytest.param(LineFramer(max_frame_size=4), b"abcde\n", id="line-complete"),
    pytest.param(LineFramer(max_frame_size=4), b"abcde", id="line-incomplete"),
    pytest.param(LengthPrefixFramer(max_frame_size=4), b"\x00\x00\x00\x05", id="prefix"),
    pytest.param(JSONDocumentFramer(max_frame_size=4), b"[1,2]", id="json-complete"),
    pytest.param(JSONDocumentFramer(max_frame_size=4), b'["abc', id="json-incomplete"),
    pytest.param(JSONDocumentFramer(max_frame_size=4), b"12345", id="json-number"),
]


@pytest.mark.parametrize(("framer", "data"), OVERSIZED)
def test_decoder_is_broken_after_frame_too_large(framer: Framer, data: bytes) -> None:
    """The stream can no longer be trusted to be in sync: every later call fails, the buffer
    is released, and the later errors are plain FramingErrors naming the first one."""
    decoder = framer.decoder(identity)
    decoder.feed(data)
    with pytest.raises(FrameTooLargeError) as first:
        next(decoder)
    assert isinstance(first.value, FramingError)
    assert isinstance(first.value, ProtocolError)
    assert decoder.broken
    assert decoder.buffered == 0
    assert decoder._buf == b""
    for attempt in (lambda: decoder.feed(b"ok\n"), lambda: next(decoder), lambda: list(decoder)):
        with pytest.raises(FramingError, match="unusable after an earlier error") as later:
            attempt()
        assert type(later.value) is FramingError
        assert str(first.value) in str(later.value)
    with pytest.raises(FramingError):
        decoder.feed(b"")


@pytest.mark.parametrize("header_size", [True, 4.0, "4"])
def test_length_prefix_header_size_must_be_an_int(header_size: Any) -> None:
    with pytest.raises(ValueError, match="header_size"):
        LengthPrefixFramer(header_size=header_size)
