"""Hostile input: each case gives a clear ProtocolError subclass, and costs bounded memory.

Memory is measured with tracemalloc's peak (Python allocations, the codecs' C buffers included
as they go through PyMem). Inputs are built before tracing starts, so only the decoding counts.
"""

from __future__ import annotations

import bz2
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from protocols import (
    BZ2Wrapper,
    CBORSerializer,
    DeserializeError,
    FrameTooLargeError,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    MsgPackSerializer,
    StreamProtocol,
    StringSerializer,
    ZlibWrapper,
)

MiB = 1024 * 1024
BOMB_SIZE = 64 * MiB
RAW = StringSerializer("latin-1")  # payload bytes <-> str of the same code points


class Ping(msgspec.Struct):
    id: int


def peak_memory(function: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """Run ``function``; return the exception it raised (or None) and the peak traced bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        function()
    except Exception as exc:  # returned to the test, which checks its type
        return exc, tracemalloc.get_traced_memory()[1]
    else:
        return None, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def zeros_compressed(compressor: Any, size: int = BOMB_SIZE) -> bytes:
    """``size`` zero bytes compressed, built chunk by chunk so the test never holds them."""
    chunk = bytes(MiB)
    parts = [compressor.compress(chunk) for _ in range(size // MiB)]
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def zlib_bomb() -> bytes:
    bomb = zeros_compressed(zlib.compressobj(9))
    assert len(bomb) < 100 * 1024  # 64 MiB in about 64 KiB
    return bomb


@pytest.fixture(scope="module")
def bz2_bomb() -> bytes:
    bomb = zeros_compressed(bz2.BZ2Compressor(9))
    assert len(bomb) < 1024  # 64 MiB in under 100 bytes
    return bomb


# --- invalid text -------------------------------------------------------------------------------

INVALID_UTF8 = [
    pytest.param(StringSerializer(), b"\xff\xfe", id="string-invalid-start"),
    pytest.param(StringSerializer(), b"abc\xe2\x9c", id="string-truncated-sequence"),
    pytest.param(StringSerializer(), b"\xed\xa0\x80", id="string-surrogate"),
    pytest.param(StringSerializer(), b"\xc0\xaf", id="string-overlong"),
    pytest.param(JSONSerializer(), b'"\xff"', id="json-string"),
    pytest.param(JSONSerializer(), b'{"k\xc3": 1}', id="json-key"),
    pytest.param(JSONSerializer(type=dict[str, str]), b'{"k": "\xed\xa0\x80"}', id="json-typed"),
    pytest.param(MsgPackSerializer(), b"\xa2\xc3\x28", id="msgpack-str"),
    pytest.param(CBORSerializer(), b"\x62\xc3\x28", id="cbor-text"),
]


@pytest.mark.parametrize(("serializer", "payload"), INVALID_UTF8)
def test_invalid_utf8_is_deserialize_error(serializer: Any, payload: bytes) -> None:
    """One bad byte from a peer must not escape as a UnicodeDecodeError."""
    with pytest.raises(DeserializeError) as info:
        serializer.deserialize(payload)
    assert info.value.data == payload


def test_invalid_utf8_line_does_not_stop_the_stream() -> None:
    decoder = StreamProtocol(JSONSerializer()).decoder()
    decoder.feed(b'"ok"\n"\xff"\n"still ok"\n')
    assert next(decoder) == "ok"
    with pytest.raises(DeserializeError):
        next(decoder)
    assert list(decoder) == ["still ok"]


# --- MessagePack ---------------------------------------------------------------------------------


def test_every_truncation_of_a_msgpack_message() -> None:
    payload = MsgPackSerializer().serialize({"key": [1, 2.5, "text", b"bin", {"n": None}]})
    for cut in range(len(payload)):
        with pytest.raises(DeserializeError, match="truncated"):
            MsgPackSerializer().deserialize(payload[:cut])


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map32"),
        pytest.param(b"\xdb\xff\xff\xff\xff", id="str32"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32"),
        pytest.param(b"\xc9\xff\xff\xff\xff\x01", id="ext32"),
    ],
)
def test_msgpack_header_announcing_four_billion_items(header: bytes) -> None:
    """A 5-byte message announcing 2**32 - 1 items allocates nothing for them."""
    error, peak = peak_memory(lambda: MsgPackSerializer().deserialize(header))
    assert isinstance(error, DeserializeError)
    assert peak < MiB


# --- nesting ------------------------------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    ("serializer", "payload"),
    [
        pytest.param(JSONSerializer(), b"[" * DEEP + b"]" * DEEP, id="json-arrays"),
        pytest.param(JSONSerializer(), b'{"a":' * DEEP + b"1" + b"}" * DEEP, id="json-objects"),
        pytest.param(JSONSerializer(), b"[" * DEEP, id="json-unclosed"),
        pytest.param(MsgPackSerializer(), b"\x91" * DEEP + b"\xc0", id="msgpack"),
        pytest.param(CBORSerializer(), b"\x81" * DEEP + b"\xf6", id="cbor"),
    ],
)
def test_deep_nesting(serializer: Any, payload: bytes) -> None:
    error, peak = peak_memory(lambda: serializer.deserialize(payload))
    assert isinstance(error, DeserializeError)
    assert peak < 8 * MiB


def test_deep_json_through_a_stream() -> None:
    protocol = StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=4 * DEEP))
    decoder = protocol.decoder()
    decoder.feed(b"[" * DEEP + b"]" * DEEP + b'\n"next"\n')
    with pytest.raises(DeserializeError, match="nested too deeply"):
        next(decoder)
    assert list(decoder) == ["next"]


# --- typed decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("serializer_class", [JSONSerializer, MsgPackSerializer])
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"id": "1"}, "Expected `int`, got `str` - at `$.id`"),
        ({"id": None}, "- at `$.id`"),  # "got `null`" in JSON, "got `nil`" in MessagePack
        ({"id": 1.5}, "Expected `int`, got `float` - at `$.id`"),
        ([1], "Expected `object`, got `array`"),
        ("ping", "Expected `object`, got `str`"),
    ],
)
def test_typed_decode_of_the_wrong_type(serializer_class: Any, message: Any, expected: str) -> None:
    payload = serializer_class().serialize(message)
    with pytest.raises(DeserializeError) as info:
        serializer_class(type=Ping).deserialize(payload)
    assert expected in info.value.reason


# --- decompression bombs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrapper", "bomb_fixture"),
    [
        pytest.param(ZlibWrapper, "zlib_bomb", id="zlib"),
        pytest.param(BZ2Wrapper, "bz2_bomb", id="bz2"),
    ],
)
def test_decompression_bomb(
    wrapper: Any, bomb_fixture: str, request: pytest.FixtureRequest
) -> None:
    """64 MiB of zeros compressed: refused after inflating max_size + 1 bytes (1 MiB), with a
    peak far below what the bomb would inflate to."""
    bomb: bytes = request.getfixturevalue(bomb_fixture)
    serializer = wrapper(RAW)
    error, peak = peak_memory(lambda: serializer.deserialize(bomb))
    assert isinstance(error, DeserializeError)
    assert "inflates past max_size=1048576" in error.reason
    assert peak < 8 * MiB


def test_zlib_bomb_through_a_stream(zlib_bomb: bytes) -> None:
    """The bomb as one length-prefixed frame among good ones: refused, the stream goes on."""
    protocol = StreamProtocol(ZlibWrapper(RAW), LengthPrefixFramer())
    stream = protocol.encode("before") + protocol.framer.frame(zlib_bomb) + protocol.encode("after")
    decoder = protocol.decoder()
    decoder.feed(stream)
    assert next(decoder) == "before"
    error, peak = peak_memory(lambda: next(decoder))
    assert isinstance(error, DeserializeError)
    assert peak < 8 * MiB
    assert list(decoder) == ["after"]


# --- framing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header_size", "header", "claimed"),
    [
        (4, b"\x80\x00\x00\x00", 2**31),
        (4, b"\xff\xff\xff\xff", 2**32 - 1),
        (8, b"\x7f\xff\xff\xff\xff\xff\xff\xff", 2**63 - 1),
    ],
)
def test_length_prefix_claiming_gigabytes(header_size: int, header: bytes, claimed: int) -> None:
    """Refused from the header alone, before a byte of payload is buffered."""
    decoder = StreamProtocol(JSONSerializer(), LengthPrefixFramer(header_size)).decoder()

    def feed_header_and_some_payload() -> None:
        decoder.feed(header + b"x" * 100)
        next(decoder)

    error, peak = peak_memory(feed_header_and_some_payload)
    assert isinstance(error, FrameTooLargeError)
    assert (error.size, error.limit) == (claimed, MiB)
    assert peak < 64 * 1024
    assert decoder.broken


def test_endless_line_is_refused_with_bounded_memory() -> None:
    """16 MiB without a newline, in 64 KiB reads: refused once past the 1 MiB limit, having
    held little more than that."""
    decoder = StreamProtocol(JSONSerializer()).decoder()
    chunk = b"x" * (64 * 1024)

    def feed_forever() -> None:
        for _ in range(256):
            decoder.feed(chunk)
            for _ in decoder:
                pass

    error, peak = peak_memory(feed_forever)
    assert isinstance(error, FrameTooLargeError)
    assert "incomplete frame" in str(error)
    assert peak < 4 * MiB


@pytest.fixture(autouse=True)
def _no_tracing_left_behind() -> Iterator[None]:
    yield
    assert not tracemalloc.is_tracing()
