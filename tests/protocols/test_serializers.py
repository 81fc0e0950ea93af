"""Tests of protocols.serializers: each serializer held to SerializerContract, then its options."""

from __future__ import annotations

import dataclasses
import functools
import pickle
import threading
from collections import namedtuple
from decimal import Decimal
from typing import Any, NamedTuple, TypedDict

import msgspec
import pytest

from protocols import (
    BytesSerializer,
    CBORSerializer,
    DeserializeError,
    JSONSerializer,
    LineFramer,
    MsgPackSerializer,
    NamedTupleSerializer,
    PickleSerializer,
    SerializeError,
    Serializer,
    StapledSerializer,
    StreamProtocol,
    StringSerializer,
    StructSerializer,
)

from protocol_helpers import SerializerContract

JSON_SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1.5,
    -0.25,
    "",
    "héllo ✓ \U0001f600",
    'quotes " and \\ and \n newline',
    [],
    [1, [2, [3, []]]],
    {},
    {"a": {"b": [1, None, "x"]}, "": 0},
]
LONG_TRUNCATED_JSON = b"[" + b"1," * 100


class Ping(msgspec.Struct):
    id: int


@dataclasses.dataclass
class PingDataclass:
    id: int


class PingDict(TypedDict):
    id: int


class Point(NamedTuple):
    x: int
    y: int
    label: bytes


class Complexish:
    """A type msgspec does not know: encoded by enc_hook, decoded by dec_hook."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Complexish) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


class Holder(msgspec.Struct):
    item: Complexish


class Unhandled:
    """A custom type that dec_hook below does not know."""


class NeedsUnhandled(msgspec.Struct):
    item: Unhandled


def enc_hook(obj: Any) -> Any:
    """msgspec's documented idiom: convert what you know, NotImplementedError otherwise."""
    if isinstance(obj, Complexish):
        return {"value": obj.value}
    raise NotImplementedError(f"objects of type {type(obj).__name__} are not supported")


def dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Complexish:
        return Complexish(obj["value"])
    raise NotImplementedError(f"objects of type {type_.__name__} are not supported")


def deeply_nested(depth: int) -> list[Any]:
    return functools.reduce(lambda inner, _: [inner], range(depth), [])


# --- the contract, format by format -----------------------------------------------------------


class TestJSONSerializer(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return JSONSerializer()

    @pytest.fixture
    def samples(self) -> list[Any]:
        return JSON_SAMPLES

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [b"", b"{", b'{"a":}', b"[1,]", b"nul", b"1 2", b"\x00", b"'x'", LONG_TRUNCATED_JSON]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [object(), {(1, 2): "tuple key"}, [1, object()], Complexish(1)]

    def test_output_never_contains_a_raw_newline(self, serializer: Serializer[Any, Any]) -> None:
        """So JSON can always be framed by LineFramer."""
        assert b"\n" not in serializer.serialize({"text": "a\nb\r\n", "k\n": ["\n"]})


class TestMsgPackSerializer(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return MsgPackSerializer()

    @pytest.fixture
    def samples(self) -> list[Any]:
        return [*JSON_SAMPLES, 2**64 - 1, b"", b"\x00\xff bytes", {1: "int key"}]

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [
            b"",
            b"\xc1",  # the one byte MessagePack never uses
            b"\x92\x01",  # array of 2, one item given
            b"\x01\x02",  # trailing bytes
            b"\xa5abc",  # str of 5, 3 given
            b"\x81\x80\x00",  # a map as a map key (unhashable)
            b"\xdc\x00\x64" + b"\x01" * 99,  # array of 100, 99 given
        ]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [object(), 2**64, -(2**63) - 1, Complexish(1)]


class TestStringSerializer(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return StringSerializer()

    @pytest.fixture
    def samples(self) -> list[Any]:
        return ["", "ascii", "héllo ✓ \U0001f600", "line\nbreaks\r\n", "\x00"]

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [b"\xff", b"abc\xc3", b"\xed\xa0\x80", b"a" * 100 + b"\x80"]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [1, None, b"bytes", "\ud800 lone surrogate"]


class TestStructSerializer(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return StructSerializer("iH?d4s")

    @pytest.fixture
    def samples(self) -> list[Any]:
        return [(0, 0, False, 0.0, b"\x00" * 4), (-(2**31), 65535, True, 1.5, b"abcd")]

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [b"", b"\x00" * 18, b"\x00" * 20, b"\x00" * 100]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [
            (1,),  # too few items
            (1, 2, True, 1.0, b"abcd", "extra"),  # too many
            1,  # not a tuple at all
            ("x", 1, True, 1.0, b"abcd"),  # wrong type
            (2**31, 1, True, 1.0, b"abcd"),  # out of range for "i"
            (1, -1, True, 1.0, b"abcd"),  # negative for "H"
        ]


class TestNamedTupleSerializer(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return NamedTupleSerializer(Point, "ii3s")

    @pytest.fixture
    def samples(self) -> list[Any]:
        return [Point(1, -2, b"abc"), Point(0, 0, b"\x00\x00\x00")]

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [b"", b"\x00" * 10, b"\x00" * 12, b"\x00" * 65]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [Point(2**40, 0, b"abc"), (1, 2), Point("x", 0, b"abc")]  # type: ignore[arg-type]

    def test_deserialize_returns_the_namedtuple_type(
        self, serializer: Serializer[Any, Any]
    ) -> None:
        result = serializer.deserialize(serializer.serialize(Point(1, 2, b"xyz")))
        assert type(result) is Point
        assert result.label == b"xyz"


class TestPickleSerializer(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return PickleSerializer()

    @pytest.fixture
    def samples(self) -> list[Any]:
        return [
            *JSON_SAMPLES,
            (1, "tuple"),
            {1, 2},
            frozenset({"a"}),
            b"bytes",
            Decimal("1.10"),
            Point(1, 2, b"abc"),
        ]

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        valid = pickle.dumps(list(range(50)))
        return [
            b"",
            b"garbage",
            valid[:-1],
            b"\x80\x05\x95" + b"\xff" * 8,
            valid[: len(valid) // 2],
        ]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [lambda: None, threading.Lock(), (x for x in ())]


class TestCBORSerializer(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return CBORSerializer()

    @pytest.fixture
    def samples(self) -> list[Any]:
        return [*JSON_SAMPLES, 2**100, -(2**100), b"bytes", {1: "int key"}]

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [
            b"",
            b"\x1c",  # reserved additional information
            b"\x9f\x01",  # indefinite array never closed
            b"\x62a",  # text of 2, 1 given
            b"\x62\xff\xfe",  # invalid UTF-8 in a text string
            b"\x9b" + b"\xff" * 8,  # array of 2**64 - 1 items
            b"\x81" * 1000 + b"\x00",  # nested past cbor2's depth limit
        ]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [object(), Complexish(1)]


# --- typed decoding, strictness and hooks (msgspec serializers) ---------------------------------

MSGSPEC_SERIALIZERS = [JSONSerializer, MsgPackSerializer]
TYPES = [Ping, PingDataclass, PingDict]


@pytest.mark.parametrize("serializer_class", MSGSPEC_SERIALIZERS)
@pytest.mark.parametrize("type_", TYPES)
class TestTypedDecoding:
    def test_round_trip(self, serializer_class: Any, type_: Any) -> None:
        serializer = serializer_class(type=type_)
        message = type_(id=7)
        assert serializer.deserialize(serializer.serialize(message)) == message

    def test_wrong_field_type_names_the_path(self, serializer_class: Any, type_: Any) -> None:
        payload = serializer_class().serialize({"id": "seven"})
        with pytest.raises(DeserializeError) as info:
            serializer_class(type=type_).deserialize(payload)
        assert "Expected `int`, got `str`" in info.value.reason
        assert "$.id" in info.value.reason
        assert isinstance(info.value.__cause__, msgspec.ValidationError)

    def test_wrong_top_level_type(self, serializer_class: Any, type_: Any) -> None:
        payload = serializer_class().serialize([1, 2])
        with pytest.raises(DeserializeError, match="Expected `object`, got `array`"):
            serializer_class(type=type_).deserialize(payload)

    def test_missing_field(self, serializer_class: Any, type_: Any) -> None:
        payload = serializer_class().serialize({})
        with pytest.raises(DeserializeError, match="missing required field `id`"):
            serializer_class(type=type_).deserialize(payload)

    def test_strict_false_accepts_a_numeric_string(self, serializer_class: Any, type_: Any) -> None:
        payload = serializer_class().serialize({"id": "7"})
        assert serializer_class(type=type_, strict=False).deserialize(payload) == type_(id=7)
        with pytest.raises(DeserializeError):
            serializer_class(type=type_).deserialize(payload)


@pytest.mark.parametrize("serializer_class", MSGSPEC_SERIALIZERS)
class TestHooks:
    def test_enc_hook_and_dec_hook_round_trip(self, serializer_class: Any) -> None:
        serializer = serializer_class(type=Holder, enc_hook=enc_hook, dec_hook=dec_hook)
        message = Holder(Complexish(3))
        assert serializer.deserialize(serializer.serialize(message)) == message
        buffer = bytearray()
        serializer.serialize_into(message, buffer)
        assert bytes(buffer) == serializer.serialize(message)

    def test_enc_hook_value_error_is_serialize_error(self, serializer_class: Any) -> None:
        def refuse(obj: Any) -> Any:
            raise ValueError("no thanks")

        with pytest.raises(SerializeError, match="no thanks"):
            serializer_class(enc_hook=refuse).serialize(Complexish(1))

    def test_enc_hook_not_implemented_is_serialize_error(self, serializer_class: Any) -> None:
        """msgspec documents NotImplementedError as how an enc_hook says "unsupported type"."""
        serializer = serializer_class(enc_hook=enc_hook)
        with pytest.raises(SerializeError):
            serializer.serialize(object())
        with pytest.raises(SerializeError):
            serializer.serialize_into(object(), bytearray())

    def test_dec_hook_value_error_is_deserialize_error(self, serializer_class: Any) -> None:
        payload = serializer_class().serialize({"item": {"value": 1}})

        def refuse(type_: type, obj: Any) -> Any:
            raise ValueError("bad item")

        with pytest.raises(DeserializeError, match=r"bad item - at `\$\.item`"):
            serializer_class(type=Holder, dec_hook=refuse).deserialize(payload)

    def test_dec_hook_not_implemented_is_deserialize_error(self, serializer_class: Any) -> None:
        """msgspec's dec_hook idiom (NotImplementedError for a type it does not handle) must not
        escape as a non-ProtocolError on incoming data."""
        payload = serializer_class().serialize({"item": 1})
        with pytest.raises(DeserializeError):
            serializer_class(type=NeedsUnhandled, dec_hook=dec_hook).deserialize(payload)

    def test_without_dec_hook_custom_type_is_deserialize_error(self, serializer_class: Any) -> None:
        payload = serializer_class().serialize({"item": 1})
        with pytest.raises(DeserializeError, match="Expected `Complexish`"):
            serializer_class(type=Holder).deserialize(payload)


@pytest.mark.parametrize(
    "serializer", [JSONSerializer(), MsgPackSerializer(), PickleSerializer()], ids=type
)
def test_deeply_nested_object_is_serialize_error(serializer: Serializer[Any, Any]) -> None:
    """An object nested past the recursion limit cannot be encoded: SerializeError, not
    RecursionError."""
    with pytest.raises(SerializeError):
        serializer.serialize(deeply_nested(100_000))


# --- format-specific options --------------------------------------------------------------------


class TestStringSerializerOptions:
    @pytest.mark.parametrize(
        ("encoding", "text", "payload"),
        [
            ("utf-8", "é", b"\xc3\xa9"),
            ("latin-1", "é", b"\xe9"),
            ("ascii", "abc", b"abc"),
            ("utf-16-le", "é", b"\xe9\x00"),
            ("cp1252", "€", b"\x80"),
        ],
    )
    def test_encodings(self, encoding: str, text: str, payload: bytes) -> None:
        serializer = StringSerializer(encoding)
        assert serializer.serialize(text) == payload
        assert serializer.deserialize(payload) == text

    def test_latin1_decodes_every_byte(self) -> None:
        serializer = StringSerializer("latin-1")
        every_byte = bytes(range(256))
        assert serializer.serialize(serializer.deserialize(every_byte)) == every_byte

    @pytest.mark.parametrize(
        ("encoding", "text"),
        [("ascii", "é"), ("latin-1", "€"), ("utf-8", "\udcff"), ("idna", "a" * 64)],
        ids=["ascii", "latin-1", "utf-8-surrogate", "idna-label-too-long"],
    )
    def test_unencodable_text_is_serialize_error(self, encoding: str, text: str) -> None:
        with pytest.raises(SerializeError):
            StringSerializer(encoding).serialize(text)

    @pytest.mark.parametrize(
        ("encoding", "payload"),
        [("ascii", b"\x80"), ("utf-8", b"\xc3"), ("utf-16", b"\xff\xfea"), ("idna", b"xn--zz")],
        ids=["ascii", "utf-8", "utf-16-odd-length", "idna-bad-punycode"],
    )
    def test_undecodable_bytes_are_deserialize_error(self, encoding: str, payload: bytes) -> None:
        with pytest.raises(DeserializeError) as info:
            StringSerializer(encoding).deserialize(payload)
        assert encoding in info.value.reason
        assert info.value.data == payload

    def test_strict_error_says_where(self) -> None:
        with pytest.raises(DeserializeError, match="invalid utf-8 at byte 3"):
            StringSerializer().deserialize(b"abc\xff")

    def test_errors_replace_substitutes(self) -> None:
        serializer = StringSerializer(errors="replace")
        assert serializer.deserialize(b"a\xffb") == "a\ufffdb"
        assert StringSerializer("ascii", errors="replace").serialize("é") == b"?"

    @pytest.mark.parametrize("encoding", ["no-such-codec", "hex", "rot13"])
    def test_unknown_or_non_text_codec_rejected_at_construction(self, encoding: str) -> None:
        with pytest.raises(LookupError):
            StringSerializer(encoding)

    def test_unknown_error_handler_rejected_at_construction(self) -> None:
        """The constructor promises to fail early on an unknown error handler too, not on the
        first undecodable message (where a LookupError would escape as a non-ProtocolError)."""
        with pytest.raises(LookupError):
            StringSerializer(errors="no-such-handler")


class TestStructSerializerOptions:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [("iH", "!iH"), ("!iH", "!iH"), ("<iH", "<iH"), (">iH", ">iH"), ("=iH", "=iH")],
    )
    def test_byte_order_prefixed_when_missing(self, given: str, expected: str) -> None:
        assert StructSerializer(given).format == expected

    def test_network_order_by_default(self) -> None:
        assert StructSerializer("H").serialize((1,)) == b"\x00\x01"
        assert StructSerializer("<H").serialize((1,)) == b"\x01\x00"

    def test_native_alignment_kept_when_asked(self) -> None:
        assert StructSerializer("@bi").size >= StructSerializer("bi").size == 5

    @pytest.mark.parametrize(("fmt", "size"), [("b", 1), ("iH", 6), ("q10s?", 19), ("", 0)])
    def test_size(self, fmt: str, size: int) -> None:
        assert StructSerializer(fmt).size == size

    def test_invalid_format_rejected_at_construction(self) -> None:
        with pytest.raises(Exception, match="bad char"):
            StructSerializer("iZ")

    def test_wrong_length_error_mentions_the_record(self) -> None:
        with pytest.raises(DeserializeError, match=r"expected a 6-byte '!iH' record"):
            StructSerializer("iH").deserialize(b"\x00" * 5)

    @pytest.mark.parametrize(("fmt", "value"), [("f", 1e300), ("e", 1e10)], ids=["f", "e"])
    def test_float_out_of_range_is_serialize_error(self, fmt: str, value: float) -> None:
        """struct raises OverflowError (not struct.error) for floats too big for f/e."""
        with pytest.raises(SerializeError):
            StructSerializer(fmt).serialize((value,))


class TestNamedTupleSerializerOptions:
    @pytest.mark.parametrize("fmt", ["ii", "ii3s4s", "q"])
    def test_field_count_mismatch_is_value_error(self, fmt: str) -> None:
        with pytest.raises(ValueError, match="Point has 3 fields"):
            NamedTupleSerializer(Point, fmt)

    def test_collections_namedtuple(self) -> None:
        Pair = namedtuple("Pair", "a b")
        serializer = NamedTupleSerializer(Pair, "<hh")
        assert serializer.size == 4
        assert serializer.deserialize(serializer.serialize(Pair(1, -1))) == Pair(1, -1)

    def test_size(self) -> None:
        assert NamedTupleSerializer(Point, "ii3s").size == 11


class TestPickleSerializerOptions:
    @pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
    def test_protocol(self, protocol: int) -> None:
        payload = PickleSerializer(protocol).serialize({"a": 1})
        assert payload[:2] == bytes([0x80, protocol])
        assert PickleSerializer().deserialize(payload) == {"a": 1}

    def test_error_names_the_unpickling_exception(self) -> None:
        with pytest.raises(DeserializeError, match="invalid pickle: UnpicklingError"):
            PickleSerializer().deserialize(b"garbage")


class TestBytesSerializer:
    """Raw payloads: everything is a valid message, only non-bytes cannot be sent."""

    def test_round_trip_and_identity(self) -> None:
        serializer = BytesSerializer()
        for payload in [b"", b"PING", bytes(range(256))]:
            assert serializer.serialize(payload) is payload
            assert serializer.deserialize(payload) is payload
        assert serializer.serialize(bytearray(b"ab")) == b"ab"
        assert serializer.serialize(memoryview(b"cd")) == b"cd"

    def test_serialize_into_appends(self) -> None:
        buffer = bytearray(b"head:")
        BytesSerializer().serialize_into(b"tail", buffer)
        assert buffer == b"head:tail"

    @pytest.mark.parametrize("obj", ["text", 1, None, [b"x"]])
    def test_non_bytes_is_serialize_error(self, obj: Any) -> None:
        with pytest.raises(SerializeError, match="sends bytes"):
            BytesSerializer().serialize(obj)
        with pytest.raises(SerializeError, match="sends bytes"):
            BytesSerializer().serialize_into(obj, bytearray())

    def test_redis_style_line_protocol(self) -> None:
        protocol = StreamProtocol(BytesSerializer(), LineFramer(b"\r\n"))
        decoder = protocol.decoder()
        decoder.feed(b"PING\r\nPING\r\n")
        assert list(decoder) == [b"PING", b"PING"]
        assert protocol.encode(b"+PONG") == b"+PONG\r\n"


# --- StapledSerializer ----------------------------------------------------------------------------


class TestStapledSerializerContract(SerializerContract):
    """Both halves JSON (typed for receiving): the contract's round trip needs one format."""

    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return StapledSerializer(sending=JSONSerializer(), receiving=JSONSerializer())

    @pytest.fixture
    def samples(self) -> list[Any]:
        return JSON_SAMPLES

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [b"", b"{", b"\xff", LONG_TRUNCATED_JSON]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [object(), {(1, 2): 3}]


class TestStapledSerializer:
    def test_sends_with_one_and_receives_with_the_other(self) -> None:
        stapled = StapledSerializer(sending=JSONSerializer(), receiving=MsgPackSerializer())
        assert stapled.serialize({"a": [1]}) == b'{"a":[1]}'
        buffer = bytearray(b"x")
        stapled.serialize_into({"a": [1]}, buffer)
        assert buffer == b'x{"a":[1]}'
        assert stapled.deserialize(msgspec.msgpack.encode({"b": 2})) == {"b": 2}
        with pytest.raises(DeserializeError, match="MessagePack"):
            stapled.deserialize(b'{"a":[1]}')  # JSON is not what this end receives

    def test_errors_come_from_the_half_that_ran(self) -> None:
        stapled = StapledSerializer(sending=StringSerializer(), receiving=JSONSerializer(Ping))
        with pytest.raises(SerializeError):
            stapled.serialize(b"not a str")  # type: ignore[arg-type]
        with pytest.raises(DeserializeError, match="Object missing required field `id`"):
            stapled.deserialize(b"{}")
        assert stapled.deserialize(b'{"id": 3}') == Ping(id=3)

    def test_halves_and_swapped(self) -> None:
        sending, receiving = JSONSerializer(), MsgPackSerializer()
        stapled = StapledSerializer(sending=sending, receiving=receiving)
        assert stapled.sending is sending
        assert stapled.receiving is receiving
        peer = stapled.swapped()
        assert peer.sending is receiving
        assert peer.receiving is sending
        assert peer.deserialize(stapled.serialize([1, "a"])) == [1, "a"]
        assert stapled.deserialize(peer.serialize([2, "b"])) == [2, "b"]

    def test_halves_are_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            StapledSerializer(JSONSerializer(), MsgPackSerializer())  # type: ignore[call-arg]

    @pytest.mark.parametrize(
        ("sending", "receiving", "words"),
        [
            pytest.param(
                JSONSerializer,
                JSONSerializer(),
                "sending must be a Serializer instance, got <class",
                id="class",
            ),
            pytest.param(
                JSONSerializer(),
                None,
                "receiving must be a Serializer instance, got None",
                id="none",
            ),
        ],
    )
    def test_halves_must_be_serializers(self, sending: Any, receiving: Any, words: str) -> None:
        with pytest.raises(TypeError, match=words) as caught:
            StapledSerializer(sending=sending, receiving=receiving)
        assert ("(a class: call it)" in str(caught.value)) == isinstance(sending, type)

    def test_repr_names_both_halves(self) -> None:
        text = repr(StapledSerializer(sending=BytesSerializer(), receiving=StringSerializer()))
        assert text.startswith("StapledSerializer(sending=<protocols.serializers.BytesSerializer")
        assert "receiving=<protocols.serializers.StringSerializer" in text

    def test_is_not_a_stock_serializer(self) -> None:
        """The compiled engine passes BytesSerializer's payloads through untouched when the
        serializer is exactly BytesSerializer: a stapled pair of them must not look like one."""
        stapled = StapledSerializer(sending=BytesSerializer(), receiving=BytesSerializer())
        assert not isinstance(stapled, BytesSerializer)
        assert type(stapled) is StapledSerializer
