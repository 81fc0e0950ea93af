"""Property tests (hypothesis) of the wire layer.

- Every framer, and StreamProtocol with the JSON, MessagePack and text serializers: any list of
  messages, encoded and delivered in any chunking, decodes to the same list.
- Arbitrary bytes (random, or valid streams with bytes flipped, inserted or cut) fed to any
  decoder or deserializer only ever raise ProtocolError subclasses, and a decoder never holds
  more than about one frame of them.
- A state machine interleaves good messages, bad messages and partial deliveries: the good
  messages all come out, in order, and every bad one costs exactly one DeserializeError.

Examples are derandomized (the same on every run) and few: the module runs in seconds.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from protocols import (
    Base64Wrapper,
    BZ2Wrapper,
    CBORSerializer,
    DatagramProtocol,
    DeserializeError,
    FixedSizeFramer,
    Framer,
    FramingError,
    JSONDocumentFramer,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    LZMAWrapper,
    MsgPackSerializer,
    NamedTupleSerializer,
    PickleSerializer,
    ProtocolError,
    SerializeError,
    Serializer,
    StapledSerializer,
    StreamDecoder,
    StreamProtocol,
    StringSerializer,
    StructSerializer,
    ZlibWrapper,
)

from protocol_helpers import identity, one_byte_at_a_time, split_at

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW_EXAMPLES = settings(PROPERTY_SETTINGS, max_examples=25)


class Ping(msgspec.Struct):
    id: int
    tags: list[str] = []


class Pair(msgspec.Struct, array_like=True):
    a: int
    b: str


# --- strategies -------------------------------------------------------------------------------

#: Bytes rich in delimiter material, so that payloads brush against the framing.
TRICKY_BYTES = st.lists(
    st.sampled_from([b"a", b"b", b"\r", b"\n", b"\r\n", b"<END>", b"<", b"E", b">", b"\x00"]),
    max_size=12,
).map(b"".join)
PAYLOADS = st.one_of(st.binary(max_size=40), TRICKY_BYTES)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=8,
)
MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=8,
)


def chunking(data: st.DataObject, stream: bytes) -> list[bytes]:
    """Deliver ``stream`` whole, one byte at a time, or cut at points hypothesis picks."""
    how = data.draw(st.sampled_from(["whole", "byte-by-byte", "random"]), label="delivery")
    if how == "whole":
        return [stream]
    if how == "byte-by-byte":
        return one_byte_at_a_time(stream)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    return split_at(stream, cuts)


def mutated(data: st.DataObject, valid: bytes) -> bytes:
    """``valid`` with a few bytes replaced, inserted or removed, and perhaps truncated."""
    result = bytearray(valid)
    edits = data.draw(
        st.lists(
            st.tuples(st.sampled_from("rid"), st.integers(0, 10_000), st.integers(0, 255)),
            max_size=4,
        ),
        label="edits",
    )
    for kind, where, byte in edits:
        at = where % (len(result) + 1)
        if kind == "i":
            result[at:at] = bytes([byte])
        elif result:
            at %= len(result)
            if kind == "r":
                result[at] = byte
            else:
                del result[at]
    if data.draw(st.booleans(), label="truncate"):
        result = result[: data.draw(st.integers(0, len(result)), label="keep")]
    return bytes(result)


def drain_all(decoder: StreamDecoder[Any], chunks: list[bytes], per_feed: int | None) -> list[Any]:
    """Feed each chunk, then take at most ``per_feed`` messages (all if None); finish with all."""
    messages: list[Any] = []
    for chunk in chunks:
        decoder.feed(chunk)
        for taken, message in enumerate(decoder, 1):
            messages.append(message)
            if taken == per_feed:
                break
    messages.extend(decoder)
    return messages


# --- any chunking decodes the same frames ------------------------------------------------------

FRAMERS: dict[str, Framer] = {
    "line-lf": LineFramer(),
    "line-crlf": LineFramer(b"\r\n"),
    "line-aa": LineFramer(b"aa"),
    "line-END": LineFramer(b"<END>"),
    "line-nulnul": LineFramer(b"\x00\x00"),
    "prefix-1": LengthPrefixFramer(1),
    "prefix-2": LengthPrefixFramer(2),
    "prefix-4": LengthPrefixFramer(4),
    "prefix-8": LengthPrefixFramer(8),
    "fixed-1": FixedSizeFramer(1),
    "fixed-7": FixedSizeFramer(7),
    "json-documents": JSONDocumentFramer(),
}

#: Payloads for the JSON framer: JSON documents, and strings of JSON syntax that frame() must
#: either refuse or frame so that they come back as they were.
JSON_PAYLOADS = st.one_of(
    JSON_VALUES.map(msgspec.json.encode),
    st.lists(
        st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b"1", b"t", b" ", b"\n", b","]),
        max_size=12,
    ).map(b"".join),
)


def frameable(framer: Framer, payload: bytes) -> bool:
    try:
        framer.frame(payload)
    except SerializeError:
        return False
    return True


@pytest.mark.parametrize("framer", list(FRAMERS.values()), ids=list(FRAMERS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_framer_any_chunking_round_trips(framer: Framer, data: st.DataObject) -> None:
    if isinstance(framer, FixedSizeFramer):
        size = framer.size
        payloads = data.draw(st.lists(st.binary(min_size=size, max_size=size), max_size=12))
    elif isinstance(framer, JSONDocumentFramer):
        drawn = data.draw(st.lists(JSON_PAYLOADS, max_size=12), label="payloads")
        payloads = [payload for payload in drawn if frameable(framer, payload)]
    else:
        drawn = data.draw(st.lists(PAYLOADS, max_size=12), label="payloads")
        payloads = [payload for payload in drawn if frameable(framer, payload)]
    stream = b"".join(framer.frame(payload) for payload in payloads)
    batched = bytearray()
    for payload in payloads:
        token = framer.begin_frame(batched)
        batched += payload
        framer.end_frame(batched, token)
    assert batched == stream

    decoder = framer.decoder(identity)
    per_feed = data.draw(st.none() | st.integers(1, 3), label="per_feed")
    assert drain_all(decoder, chunking(data, stream), per_feed) == payloads
    assert decoder.buffered == 0
    assert decoder._buf == b""


PROTOCOLS: dict[str, tuple[StreamProtocol[Any, Any], st.SearchStrategy[Any]]] = {
    "json-line": (StreamProtocol(JSONSerializer()), JSON_VALUES),
    "json-prefix": (StreamProtocol(JSONSerializer(), LengthPrefixFramer()), JSON_VALUES),
    "msgpack-prefix4": (StreamProtocol(MsgPackSerializer(), LengthPrefixFramer()), MSGPACK_VALUES),
    "msgpack-prefix2": (StreamProtocol(MsgPackSerializer(), LengthPrefixFramer(2)), MSGPACK_VALUES),
    "json-documents": (StreamProtocol(JSONSerializer(), JSONDocumentFramer()), JSON_VALUES),
    "stapled-json-prefix": (
        StreamProtocol(
            StapledSerializer(sending=JSONSerializer(), receiving=JSONSerializer()),
            LengthPrefixFramer(),
        ),
        JSON_VALUES,
    ),
    "signed-base64-msgpack-line": (
        StreamProtocol(Base64Wrapper(MsgPackSerializer(), checksum=b"k" * 32)),
        MSGPACK_VALUES,
    ),
    "string-line": (StreamProtocol(StringSerializer()), st.text(max_size=20)),
    "string-crlf": (StreamProtocol(StringSerializer(), LineFramer(b"\r\n")), st.text(max_size=20)),
    "string-latin1-prefix": (
        StreamProtocol(StringSerializer("latin-1"), LengthPrefixFramer(1)),
        st.text(st.characters(max_codepoint=255), max_size=20),
    ),
}


@pytest.mark.parametrize(("protocol", "messages"), list(PROTOCOLS.values()), ids=list(PROTOCOLS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_protocol_any_chunking_round_trips(
    protocol: StreamProtocol[Any, Any], messages: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    encoded = []
    for message in data.draw(st.lists(messages, max_size=8), label="messages"):
        try:
            encoded.append((message, protocol.encode(message)))
        except SerializeError:  # text containing the delimiter: refused, never misframed
            continue
    sent = [message for message, _ in encoded]
    stream = b"".join(frame for _, frame in encoded)
    batched = bytearray()
    for message in sent:
        protocol.encode_into(message, batched)
    assert batched == stream

    per_feed = data.draw(st.none() | st.integers(1, 3), label="per_feed")
    assert drain_all(protocol.decoder(), chunking(data, stream), per_feed) == sent


# --- arbitrary bytes only ever raise ProtocolError ----------------------------------------------

SMALL = 64  # a small max_frame_size, so the limits are hit too

DECODING_PROTOCOLS: dict[str, StreamProtocol[Any, Any]] = {
    "json-line": StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=SMALL)),
    "json-typed-line": StreamProtocol(JSONSerializer(Ping), LineFramer(max_frame_size=SMALL)),
    "string-crlf": StreamProtocol(StringSerializer(), LineFramer(b"\r\n", max_frame_size=SMALL)),
    "cbor-END": StreamProtocol(CBORSerializer(), LineFramer(b"<END>", max_frame_size=SMALL)),
    "base64-zlib-json-line": StreamProtocol(
        Base64Wrapper(ZlibWrapper(JSONSerializer(), max_size=SMALL)),
        LineFramer(max_frame_size=SMALL),
    ),
    "msgpack-prefix1": StreamProtocol(MsgPackSerializer(), LengthPrefixFramer(1)),
    "msgpack-typed-prefix2": StreamProtocol(
        MsgPackSerializer(Pair), LengthPrefixFramer(2, max_frame_size=SMALL)
    ),
    "json-prefix4": StreamProtocol(JSONSerializer(), LengthPrefixFramer(max_frame_size=SMALL)),
    "json-documents": StreamProtocol(JSONSerializer(), JSONDocumentFramer(max_frame_size=SMALL)),
    "json-typed-documents": StreamProtocol(
        JSONSerializer(Ping), JSONDocumentFramer(max_frame_size=SMALL)
    ),
    "signed-base64-json-line": StreamProtocol(
        Base64Wrapper(JSONSerializer(), checksum=b"k" * 32), LineFramer(max_frame_size=SMALL)
    ),
    "cbor-prefix8": StreamProtocol(CBORSerializer(), LengthPrefixFramer(8, max_frame_size=SMALL)),
    "struct-fixed": StreamProtocol(StructSerializer("if?"), FixedSizeFramer(9)),
}

#: Valid streams to mutate: random bytes alone rarely get past the first byte of a format.
VALID_STREAM_MESSAGES: list[Any] = [
    {"id": 1, "tags": ["héllo", "✓"]},
    [1, "two"],
    "a string",
    (1, 0.5, True),
]


def valid_stream(protocol: StreamProtocol[Any, Any]) -> bytes:
    stream = bytearray()
    for message in VALID_STREAM_MESSAGES:
        try:
            protocol.encode_into(message, stream)
        except SerializeError:
            pass
    return bytes(stream)


def frame_bound(framer: Framer) -> int:
    """The most a decoder may hold after a drain: a frame's worth plus its framing."""
    if isinstance(framer, LineFramer):
        return framer.max_frame_size + len(framer.delimiter) - 1
    if isinstance(framer, LengthPrefixFramer):
        return framer.max_frame_size + framer.header_size
    return framer.max_frame_size


@pytest.mark.parametrize(
    "protocol", list(DECODING_PROTOCOLS.values()), ids=list(DECODING_PROTOCOLS)
)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_decoder_garbage_only_raises_protocol_errors(
    protocol: StreamProtocol[Any, Any], data: st.DataObject
) -> None:
    if data.draw(st.booleans(), label="mutate a valid stream"):
        garbage = mutated(data, valid_stream(protocol))
    else:
        garbage = data.draw(st.binary(max_size=300), label="random bytes")
    decoder = protocol.decoder()
    bound = frame_bound(protocol.framer)
    for chunk in chunking(data, garbage):
        try:
            decoder.feed(chunk)
        except FramingError:
            assert decoder.broken
            return
        while True:
            try:
                for _ in decoder:
                    pass
            except DeserializeError:
                continue
            except FramingError:
                assert decoder.broken
                assert decoder.buffered == 0
                return
            break
        assert decoder.buffered <= bound


SERIALIZERS: dict[str, Serializer[Any, Any]] = {
    "json": JSONSerializer(),
    "json-typed": JSONSerializer(Ping),
    "msgpack": MsgPackSerializer(),
    "msgpack-typed": MsgPackSerializer(Pair),
    "string": StringSerializer(),
    "string-utf16": StringSerializer("utf-16"),
    "struct": StructSerializer("if?"),
    "namedtuple": NamedTupleSerializer(namedtuple("Record", "a b c"), "if?"),
    "pickle": PickleSerializer(),
    "cbor": CBORSerializer(),
    "base64": Base64Wrapper(JSONSerializer()),
    "base64-urlsafe": Base64Wrapper(MsgPackSerializer(), urlsafe=True),
    "base64-sha256": Base64Wrapper(JSONSerializer(), checksum=True),
    "base64-hmac": Base64Wrapper(MsgPackSerializer(), urlsafe=True, checksum=b"k" * 32),
    "stapled": StapledSerializer(sending=MsgPackSerializer(), receiving=JSONSerializer(Ping)),
    "zlib": ZlibWrapper(JSONSerializer(), max_size=1024),
    "bz2": BZ2Wrapper(MsgPackSerializer(), max_size=1024),
    "lzma": LZMAWrapper(JSONSerializer(), max_size=1024),
}


def valid_payload(serializer: Serializer[Any, Any], which: int) -> bytes:
    for message in VALID_STREAM_MESSAGES[which:] + VALID_STREAM_MESSAGES[:which]:
        try:
            return serializer.serialize(message)
        except SerializeError:
            continue
    return b""


@pytest.mark.parametrize("serializer", list(SERIALIZERS.values()), ids=list(SERIALIZERS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_deserializer_garbage_only_raises_deserialize_error(
    serializer: Serializer[Any, Any], data: st.DataObject
) -> None:
    if data.draw(st.booleans(), label="mutate a valid payload"):
        which = data.draw(st.integers(0, len(VALID_STREAM_MESSAGES) - 1), label="which")
        garbage = mutated(data, valid_payload(serializer, which))
    else:
        garbage = data.draw(st.binary(max_size=200), label="random bytes")
    for decode in (serializer.deserialize, DatagramProtocol(serializer).decode):
        error: ProtocolError | None = None
        try:
            decode(garbage)
        except ProtocolError as exc:  # anything else fails the test
            error = exc
        if isinstance(error, DeserializeError):
            assert len(error.data) <= 64


# --- good and bad messages interleaved ------------------------------------------------------------


class InterleavedMessages(RuleBasedStateMachine):
    """Send good and bad messages in any order and deliver the bytes in any pieces."""

    protocol: StreamProtocol[Any, Any] = StreamProtocol(JSONSerializer(Ping))
    bad_payloads: tuple[bytes, ...] = (b'{"id": "x"}', b"{", b"[]", b'{"id": 1.5}', b"\xff", b"")

    def __init__(self) -> None:
        super().__init__()
        self.decoder = self.protocol.decoder()
        self.in_flight = bytearray()
        self.sent: list[Any] = []
        self.bad_sent = 0
        self.received: list[Any] = []
        self.errors = 0

    @rule(message=st.builds(Ping, st.integers(-(2**63), 2**63 - 1), st.lists(st.text(max_size=5))))
    def send_good(self, message: Ping) -> None:
        self.protocol.encode_into(message, self.in_flight)
        self.sent.append(message)

    @rule(index=st.integers(0, 100))
    def send_bad(self, index: int) -> None:
        self.in_flight += self.protocol.framer.frame(
            self.bad_payloads[index % len(self.bad_payloads)]
        )
        self.bad_sent += 1

    @rule(size=st.integers(0, 40))
    def deliver(self, size: int) -> None:
        chunk = bytes(self.in_flight[:size])
        del self.in_flight[:size]
        self.decoder.feed(chunk)
        while True:
            try:
                self.received.extend(self.decoder)
            except DeserializeError:
                self.errors += 1
            else:
                break

    @invariant()
    def good_messages_arrive_in_order(self) -> None:
        assert self.received == self.sent[: len(self.received)]
        assert self.errors <= self.bad_sent
        assert not self.decoder.broken

    def teardown(self) -> None:
        self.deliver(len(self.in_flight))
        assert self.received == self.sent
        assert self.errors == self.bad_sent
        assert self.decoder.buffered == 0


class InterleavedMsgPackFrames(InterleavedMessages):
    protocol = StreamProtocol(MsgPackSerializer(Ping), LengthPrefixFramer(2))
    bad_payloads = (b"", b"\xc1", b"\x81\xa2id\xa1x", b"\x92\x01", b"\x90", b"\x81\xa2id\x01\x02")


class InterleavedJSONDocuments(InterleavedMessages):
    protocol = StreamProtocol(JSONSerializer(Ping), JSONDocumentFramer())
    bad_payloads = (b'{"id": "x"}', b"[]", b'{"id": 1.5}', b'"x"', b"nope", b'{"id": 1,}')


TestInterleavedJSONLines = InterleavedMessages.TestCase
TestInterleavedJSONLines.settings = settings(FEW_EXAMPLES, stateful_step_count=30)
TestInterleavedMsgPackFrames = InterleavedMsgPackFrames.TestCase
TestInterleavedMsgPackFrames.settings = TestInterleavedJSONLines.settings
TestInterleavedJSONDocuments = InterleavedJSONDocuments.TestCase
TestInterleavedJSONDocuments.settings = TestInterleavedJSONLines.settings
