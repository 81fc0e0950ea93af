"""Tests of protocols.protocol: StreamProtocol, DatagramProtocol and converters."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from protocols import (
    Converter,
    DatagramProtocol,
    DeserializeError,
    FixedSizeFramer,
    FramingError,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    MsgPackSerializer,
    ProtocolError,
    SerializeError,
    StapledSerializer,
    StreamProtocol,
    StringSerializer,
    StructSerializer,
)

from protocol_helpers import decode_all, one_byte_at_a_time


class Point(msgspec.Struct):
    x: int
    y: int


class Ping(msgspec.Struct):
    id: int


class PointConverter(Converter[Point, Point]):
    """Points travel as two-item lists."""

    def to_wire(self, obj: Point) -> Any:
        return [obj.x, obj.y]

    def from_wire(self, obj: Any) -> Point:
        x, y = obj  # ValueError/TypeError for anything but a pair
        return Point(x, y)


class CustomProtocolError(ProtocolError):
    pass


class StrictPointConverter(PointConverter):
    """Reports its own ProtocolError for negative coordinates."""

    def from_wire(self, obj: Any) -> Point:
        point = super().from_wire(obj)
        if point.x < 0:
            raise CustomProtocolError("negative x")
        return point


PAIRS = [
    pytest.param(JSONSerializer(), LineFramer(), [{"a": 1}, [1, "two"], None, "x"], id="line-json"),
    pytest.param(StringSerializer(), LineFramer(b"\r\n"), ["PING", "", "é ✓"], id="crlf-string"),
    pytest.param(
        MsgPackSerializer(),
        LengthPrefixFramer(),
        [{"a": b"\n\x00"}, [1, 2], 2**64 - 1],
        id="lp-msgpack",
    ),
    pytest.param(JSONSerializer(), LengthPrefixFramer(2), [{"a": "b" * 1000}], id="lp2-json"),
    pytest.param(
        StructSerializer("if"), FixedSizeFramer(8), [(1, 0.5), (-7, 2.0)], id="fixed-struct"
    ),
]


def drain(decoder: Any) -> tuple[list[Any], list[DeserializeError]]:
    """All messages and all DeserializeErrors, in order of appearance."""
    messages: list[Any] = []
    errors: list[DeserializeError] = []
    while True:
        try:
            messages.extend(decoder)
        except DeserializeError as exc:
            errors.append(exc)
        else:
            return messages, errors


class TestStreamProtocol:
    def test_default_framer_is_newline_delimited(self) -> None:
        protocol = StreamProtocol(JSONSerializer())
        assert isinstance(protocol.framer, LineFramer)
        assert protocol.framer.delimiter == b"\n"
        assert protocol.encode({"hello": "world"}) == b'{"hello":"world"}\n'

    def test_attributes(self) -> None:
        serializer, framer, converter = JSONSerializer(), LengthPrefixFramer(), PointConverter()
        protocol = StreamProtocol(serializer, framer, converter=converter)
        assert protocol.serializer is serializer
        assert protocol.framer is framer
        assert protocol.converter is converter

    @pytest.mark.parametrize(
        ("framer", "expected"),
        [(None, 1024 * 1024), (LineFramer(max_frame_size=10), 10), (LengthPrefixFramer(1), 255)],
    )
    def test_max_frame_size_is_the_framers(self, framer: Any, expected: int) -> None:
        assert StreamProtocol(JSONSerializer(), framer).max_frame_size == expected

    @pytest.mark.parametrize(("serializer", "framer", "messages"), PAIRS)
    def test_encode_then_decode(self, serializer: Any, framer: Any, messages: list[Any]) -> None:
        protocol = StreamProtocol(serializer, framer)
        stream = b"".join(protocol.encode(message) for message in messages)
        assert decode_all(protocol.decoder(), [stream]) == messages
        assert decode_all(protocol.decoder(), one_byte_at_a_time(stream)) == messages

    @pytest.mark.parametrize(("serializer", "framer", "messages"), PAIRS)
    def test_encode_into_batches_messages(
        self, serializer: Any, framer: Any, messages: list[Any]
    ) -> None:
        """Several messages appended to one buffer: the same bytes as encode() one by one,
        and one feed of the buffer gives all of them back."""
        protocol = StreamProtocol(serializer, framer)
        buffer = bytearray()
        for message in messages * 2:
            protocol.encode_into(message, buffer)
        assert buffer == b"".join(protocol.encode(message) for message in messages * 2)
        assert decode_all(protocol.decoder(), [bytes(buffer)]) == messages * 2

    @pytest.mark.parametrize(
        ("protocol", "unencodable"),
        [
            pytest.param(StreamProtocol(JSONSerializer()), [1, object()], id="serializer"),
            pytest.param(
                StreamProtocol(MsgPackSerializer(), LengthPrefixFramer()), {"k": object()}, id="lp"
            ),
            pytest.param(StreamProtocol(StringSerializer()), "two\nlines", id="line-delimiter"),
            pytest.param(
                StreamProtocol(StringSerializer(), LengthPrefixFramer(1)), "x" * 256, id="header"
            ),
            pytest.param(StreamProtocol(StringSerializer(), FixedSizeFramer(4)), "xyz", id="size"),
            pytest.param(
                StreamProtocol(JSONSerializer(), converter=PointConverter()),
                Point(object(), 0),
                id="conv",
            ),
        ],
    )
    def test_serialize_error_leaves_the_buffer_unchanged(
        self, protocol: StreamProtocol[Any, Any], unencodable: Any
    ) -> None:
        with pytest.raises(SerializeError):
            protocol.encode(unencodable)
        buffer = bytearray(b"previous replies\n")
        with pytest.raises(SerializeError):
            protocol.encode_into(unencodable, buffer)
        assert buffer == b"previous replies\n"

    def test_converter_both_ways(self) -> None:
        protocol = StreamProtocol(JSONSerializer(), converter=PointConverter())
        assert protocol.encode(Point(1, 2)) == b"[1,2]\n"
        buffer = bytearray()
        protocol.encode_into(Point(3, 4), buffer)
        assert buffer == b"[3,4]\n"
        assert decode_all(protocol.decoder(), [b"[1,2]\n[3,4]\n"]) == [Point(1, 2), Point(3, 4)]

    @pytest.mark.parametrize("wire", [b"[1,2,3]\n", b"7\n", b'"abc"\n'])
    def test_converter_exception_becomes_deserialize_error(self, wire: bytes) -> None:
        decoder = StreamProtocol(JSONSerializer(), converter=PointConverter()).decoder()
        decoder.feed(wire)
        with pytest.raises(DeserializeError, match="rejected by the converter") as info:
            next(decoder)
        assert isinstance(info.value.__cause__, ValueError | TypeError)
        assert type(info.value.__cause__).__name__ in info.value.reason
        assert info.value.data == wire[:-1]

    def test_converter_protocol_error_passes_through(self) -> None:
        decoder = StreamProtocol(JSONSerializer(), converter=StrictPointConverter()).decoder()
        decoder.feed(b"[-1,0]\n[1,0]\n")
        with pytest.raises(CustomProtocolError, match="negative x"):
            next(decoder)
        assert list(decoder) == [Point(1, 0)]

    def test_converter_does_not_see_undecodable_messages(self) -> None:
        decoder = StreamProtocol(JSONSerializer(), converter=PointConverter()).decoder()
        decoder.feed(b"[1,\n")
        with pytest.raises(DeserializeError, match="malformed JSON") as info:
            next(decoder)
        assert isinstance(info.value.__cause__, msgspec.DecodeError)

    def test_decoder_usable_after_deserialize_errors_mid_batch(self) -> None:
        """The README example: bad messages in the middle of one read; the others come out in
        order, and each error names its problem."""
        decoder = StreamProtocol(JSONSerializer(type=Ping)).decoder()
        decoder.feed(b'{"id": 1}\n{"id": "x"}\n{"id": 3}\nnot json\n{}\n{"id": 6}\n')
        messages, errors = drain(decoder)
        assert messages == [Ping(1), Ping(3), Ping(6)]
        reasons = [error.reason for error in errors]
        assert len(reasons) == 3
        assert reasons[0] == "invalid JSON message: Expected `int`, got `str` - at `$.id`"
        assert reasons[1].startswith("malformed JSON: JSON is malformed")
        assert reasons[2] == "invalid JSON message: Object missing required field `id`"
        assert not decoder.broken

    def test_converter_errors_mid_batch(self) -> None:
        decoder = StreamProtocol(
            MsgPackSerializer(), LengthPrefixFramer(), converter=PointConverter()
        ).decoder()
        protocol = StreamProtocol(MsgPackSerializer(), LengthPrefixFramer())
        decoder.feed(b"".join(protocol.encode(m) for m in [[1, 2], [1], "xyz", [3, 4], None]))
        messages, errors = drain(decoder)
        assert messages == [Point(1, 2), Point(3, 4)]
        assert len(errors) == 3

    def test_framing_error_after_good_messages(self) -> None:
        decoder = StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=8)).decoder()
        decoder.feed(b'"ok"\n"far too long"\n"never"\n')
        assert next(decoder) == "ok"
        with pytest.raises(FramingError):
            next(decoder)
        assert decoder.broken

    def test_each_decoder_is_new(self) -> None:
        protocol = StreamProtocol(JSONSerializer())
        first, second = protocol.decoder(), protocol.decoder()
        assert first is not second
        first.feed(b"[1")
        second.feed(b"[2]\n")
        assert list(second) == [[2]]
        assert first.buffered == 2

    def test_repr(self) -> None:
        text = repr(StreamProtocol(JSONSerializer(), LineFramer(b"\r\n")))
        assert text.startswith("StreamProtocol(")
        assert "LineFramer(b'\\r\\n', max_frame_size=1048576)" in text
        assert "converter=None" in text


class TestDatagramProtocol:
    def test_encode_decode(self) -> None:
        protocol = DatagramProtocol(JSONSerializer())
        assert protocol.encode([1, 2]) == b"[1,2]"
        assert protocol.decode(b"[1,2]") == [1, 2]
        assert protocol.converter is None

    def test_no_framing_so_any_bytes_are_fine(self) -> None:
        protocol = DatagramProtocol(MsgPackSerializer())
        assert protocol.decode(protocol.encode(b"\n\x00\r\n")) == b"\n\x00\r\n"

    def test_converter_both_ways(self) -> None:
        protocol = DatagramProtocol(JSONSerializer(), PointConverter())
        assert protocol.encode(Point(5, 6)) == b"[5,6]"
        assert protocol.decode(b"[5,6]") == Point(5, 6)

    def test_bad_datagram_is_deserialize_error(self) -> None:
        with pytest.raises(DeserializeError):
            DatagramProtocol(JSONSerializer(type=Ping)).decode(b'{"id": null}')

    def test_converter_exception_becomes_deserialize_error(self) -> None:
        protocol = DatagramProtocol(JSONSerializer(), PointConverter())
        with pytest.raises(DeserializeError, match="rejected by the converter") as info:
            protocol.decode(b"[1]")
        assert isinstance(info.value.__cause__, ValueError)
        assert info.value.data == b"[1]"

    def test_converter_protocol_error_passes_through(self) -> None:
        with pytest.raises(CustomProtocolError):
            DatagramProtocol(JSONSerializer(), StrictPointConverter()).decode(b"[-1,0]")

    def test_unencodable_is_serialize_error(self) -> None:
        with pytest.raises(SerializeError):
            DatagramProtocol(JSONSerializer()).encode(object())

    def test_repr(self) -> None:
        assert repr(DatagramProtocol(JSONSerializer())).startswith("DatagramProtocol(")


def test_converter_is_abstract() -> None:
    class Incomplete(Converter[Any, Any]):
        def to_wire(self, obj: Any) -> Any:
            return obj

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


# --- StapledSerializer in protocols ---------------------------------------------------------------

#: A server that takes MessagePack requests and sends JSON replies, and its client.
SERVER_SIDE = StapledSerializer(sending=JSONSerializer(), receiving=MsgPackSerializer())
CLIENT_SIDE = SERVER_SIDE.swapped()


class TestStapledProtocols:
    def test_stream_json_replies_msgpack_requests(self) -> None:
        server = StreamProtocol(SERVER_SIDE, LengthPrefixFramer())
        client = StreamProtocol(CLIENT_SIDE, LengthPrefixFramer())
        requests: list[Any] = [{"op": "add", "args": [1, 2]}, [b"raw", None], "ping"]
        wire = b"".join(client.encode(request) for request in requests)
        assert msgspec.msgpack.decode(wire[4 : 4 + int.from_bytes(wire[:4])]) == requests[0]
        assert decode_all(server.decoder(), one_byte_at_a_time(wire)) == requests
        replies: list[Any] = [{"result": 3}, ["raw", None], "pong"]
        batch = bytearray()
        for reply in replies:
            server.encode_into(reply, batch)
        assert batch[:16] == b'\x00\x00\x00\x0c{"result":3}'
        assert decode_all(client.decoder(), [bytes(batch)]) == replies

    def test_a_request_in_the_sending_format_is_a_deserialize_error(self) -> None:
        server = StreamProtocol(SERVER_SIDE, LengthPrefixFramer())
        decoder = server.decoder()
        decoder.feed(
            server.encode({"a": 1}) + StreamProtocol(CLIENT_SIDE, LengthPrefixFramer()).encode(2)
        )
        with pytest.raises(DeserializeError, match="MessagePack"):
            next(decoder)
        assert list(decoder) == [2]

    def test_datagrams(self) -> None:
        server = DatagramProtocol(SERVER_SIDE)
        client = DatagramProtocol(CLIENT_SIDE)
        assert server.decode(client.encode({"q": [1, 2]})) == {"q": [1, 2]}
        assert server.encode({"r": 3}) == b'{"r":3}'
        assert client.decode(server.encode({"r": 3})) == {"r": 3}

    def test_with_a_converter(self) -> None:
        protocol = DatagramProtocol(
            StapledSerializer(sending=JSONSerializer(), receiving=JSONSerializer()),
            PointConverter(),
        )
        assert protocol.decode(protocol.encode(Point(1, 2))) == Point(1, 2)
