"""Tests of protocols.wrappers: base64 and the bounded decompressors (zlib, bz2, lzma)."""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from protocols import (
    Base64Wrapper,
    BZ2Wrapper,
    DeserializeError,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    LZMAWrapper,
    StreamProtocol,
    StringSerializer,
    ZlibWrapper,
)
from protocols.serializers import Serializer

from protocol_helpers import SerializerContract, decode_all

SAMPLES: list[Any] = [None, 0, "", "text ✓", [1, [2]], {"a": "b" * 1000}]

#: Encodes bytes b as the str with the same code points: an identity serializer for payloads.
RAW = StringSerializer("latin-1")

COMPRESSORS: dict[type[Any], Callable[[bytes], bytes]] = {
    ZlibWrapper: zlib.compress,
    BZ2Wrapper: bz2.compress,
    LZMAWrapper: lzma.compress,
}
COMPRESSION_WRAPPERS = list(COMPRESSORS)


def xz_with_dictionary_byte(payload: bytes, dict_byte: int) -> bytes:
    """Return ``payload`` as a valid .xz stream whose LZMA2 header asks for another dictionary
    size, with the block header's CRC32 fixed up.

    The byte encodes 2**(b/2 + 12) bytes for an even b, 3 * 2**((b-1)/2 + 11) for an odd one:
    12 is 256 KiB (preset 0), 24 is 16 MiB (preset 7), 26 is 32 MiB, 37 is 1.5 GiB.
    """
    data = bytearray(lzma.compress(payload, preset=0))
    block = 12  # the block header follows the 12-byte stream header
    header_size = (data[block] + 1) * 4
    flags, filter_id, props_size = data[block + 1 : block + 4]
    assert (flags, filter_id, props_size) == (0x00, 0x21, 0x01), "one LZMA2 filter, no sizes"
    data[block + 4] = dict_byte
    crc_at = block + header_size - 4
    struct.pack_into("<I", data, crc_at, zlib.crc32(data[block:crc_at]))
    return bytes(data)


# --- the serializer contract ----------------------------------------------------------------


class TestBase64Wrapper(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return Base64Wrapper(JSONSerializer())

    @pytest.fixture
    def samples(self) -> list[Any]:
        return SAMPLES

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [
            b"!!!!",  # outside the alphabet
            b"bnVsbA",  # missing padding
            b"bnVsbA===",  # too much padding
            b"bnVsbA==bnVsbA==",  # data after padding
            b"bnVs bA==",  # whitespace
            b"bnVsbA==\n",  # trailing newline
            b"-_-_",  # URL-safe characters in the standard alphabet
            b"A" * 101,  # impossible length
        ]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [object()]


class TestBase64WrapperURLSafe(TestBase64Wrapper):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return Base64Wrapper(JSONSerializer(), urlsafe=True)

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        return [b"!!!!", b"bnVsbA", b"bnVsbA==\n", b"A" * 101]


class TestZlibWrapper(SerializerContract):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return ZlibWrapper(JSONSerializer())

    @pytest.fixture
    def samples(self) -> list[Any]:
        return SAMPLES

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        valid = zlib.compress(b'"' + b"abc" * 100 + b'"')
        return [b"", b"garbage", valid[:-1], valid[:2], b"x" * 100]

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        return [object()]


class TestBZ2Wrapper(TestZlibWrapper):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return BZ2Wrapper(JSONSerializer())

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        valid = bz2.compress(b'"' + b"abc" * 100 + b'"')
        return [b"", b"garbage", valid[:-1], valid[:4], b"BZh9" + b"x" * 100]


class TestLZMAWrapper(TestZlibWrapper):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return LZMAWrapper(JSONSerializer())

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        valid = lzma.compress(b'"' + b"abc" * 100 + b'"')
        return [b"", b"garbage", valid[:-1], valid[:20], b"\xfd7zXZ\x00" + b"x" * 100]


# --- base64 -------------------------------------------------------------------------------------


class TestBase64:
    def test_alphabets(self) -> None:
        """0xfb 0xff is "+/8=" in the standard alphabet and "-_8=" in the URL-safe one."""
        assert Base64Wrapper(RAW).serialize("\xfb\xff") == b"+/8="
        assert Base64Wrapper(RAW, urlsafe=True).serialize("\xfb\xff") == b"-_8="
        assert Base64Wrapper(RAW, urlsafe=True).deserialize(b"-_8=") == "\xfb\xff"

    def test_standard_rejects_urlsafe_alphabet(self) -> None:
        with pytest.raises(DeserializeError, match="invalid base64"):
            Base64Wrapper(RAW).deserialize(b"-_8=")

    def test_urlsafe_rejects_standard_alphabet(self) -> None:
        """The docstring promises strict decoding: "+" and "/" are outside the URL-safe
        alphabet. (base64.b64decode translates altchars to "+/" before validating, so both
        alphabets get through unless the wrapper checks.)"""
        with pytest.raises(DeserializeError):
            Base64Wrapper(RAW, urlsafe=True).deserialize(b"+/8=")

    def test_output_is_line_framable(self) -> None:
        """Binary payloads over a line protocol: the point of Base64Wrapper."""
        protocol = StreamProtocol(Base64Wrapper(RAW), LineFramer())
        messages = ["\n\r\n\x00", "\xff" * 100, ""]
        stream = b"".join(protocol.encode(message) for message in messages)
        assert decode_all(protocol.decoder(), [stream]) == messages

    def test_wrapped(self) -> None:
        inner = JSONSerializer()
        assert Base64Wrapper(inner).wrapped is inner


# --- compression --------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapper", COMPRESSION_WRAPPERS)
class TestCompression:
    MAX = 1000

    def test_default_max_size_is_one_mebibyte(self, wrapper: Any) -> None:
        assert wrapper(RAW).max_size == 1024 * 1024

    def test_payload_exactly_at_max_size_accepted(self, wrapper: Any) -> None:
        serializer = wrapper(RAW, max_size=self.MAX)
        assert serializer.max_size == self.MAX
        assert serializer.deserialize(COMPRESSORS[wrapper](b"a" * self.MAX)) == "a" * self.MAX

    def test_payload_one_byte_over_max_size_rejected(self, wrapper: Any) -> None:
        serializer = wrapper(RAW, max_size=self.MAX)
        with pytest.raises(DeserializeError, match=f"inflates past max_size={self.MAX}"):
            serializer.deserialize(COMPRESSORS[wrapper](b"a" * (self.MAX + 1)))

    def test_encoding_is_not_limited(self, wrapper: Any) -> None:
        """max_size bounds what we accept, not what we send."""
        payload = wrapper(RAW, max_size=self.MAX).serialize("a" * (10 * self.MAX))
        assert wrapper(RAW).deserialize(payload) == "a" * (10 * self.MAX)

    @pytest.mark.parametrize("max_size", [0, -1])
    def test_non_positive_max_size_is_value_error(self, wrapper: Any, max_size: int) -> None:
        with pytest.raises(ValueError, match="max_size must be positive"):
            wrapper(RAW, max_size=max_size)

    def test_truncated_data_rejected(self, wrapper: Any) -> None:
        data = COMPRESSORS[wrapper](bytes(range(256)) * 8)
        for cut in range(len(data)):
            with pytest.raises(DeserializeError):
                wrapper(RAW).deserialize(data[:cut])

    def test_garbage_rejected(self, wrapper: Any) -> None:
        data = bytearray(COMPRESSORS[wrapper](b"some text, long enough to be compressed" * 10))
        data[len(data) // 2] ^= 0xFF
        with pytest.raises(DeserializeError):
            wrapper(RAW).deserialize(bytes(data))

    def test_error_chains_the_codec_exception(self, wrapper: Any) -> None:
        with pytest.raises(DeserializeError, match="invalid") as info:
            wrapper(RAW).deserialize(b"\xfd7zXZ\x00garbage garbage garbage!")
        assert info.value.__cause__ is not None

    def test_wrapped_and_framed(self, wrapper: Any) -> None:
        protocol = StreamProtocol(wrapper(JSONSerializer()), LengthPrefixFramer())
        stream = protocol.encode({"a": [1] * 1000}) + protocol.encode("x")
        assert decode_all(protocol.decoder(), [stream]) == [{"a": [1] * 1000}, "x"]


@pytest.mark.parametrize(
    ("wrapper", "options"),
    [
        (ZlibWrapper, {"level": 0}),
        (ZlibWrapper, {"level": 9}),
        (BZ2Wrapper, {"level": 1}),
        (LZMAWrapper, {"preset": 0}),
        (LZMAWrapper, {"preset": 1 | lzma.PRESET_EXTREME}),
    ],
)
def test_compression_levels_round_trip(wrapper: Any, options: dict[str, int]) -> None:
    serializer = wrapper(JSONSerializer(), **options)
    assert serializer.deserialize(serializer.serialize({"k": "v" * 500})) == {"k": "v" * 500}


def test_zlib_level_zero_stores() -> None:
    assert len(ZlibWrapper(RAW, level=0).serialize("a" * 1000)) > 1000


class TestLZMAMemlimit:
    def test_patched_header_still_decodes(self) -> None:
        """Sanity check of the helper: a 4 MiB dictionary is within the default memlimit."""
        assert LZMAWrapper(RAW).deserialize(xz_with_dictionary_byte(b"hello", 20)) == "hello"

    def test_huge_dictionary_refused_by_default(self) -> None:
        """A 100-byte message asking for a 1.5 GiB dictionary fails before any allocation."""
        data = xz_with_dictionary_byte(b"hello", 37)
        assert len(data) < 100
        with pytest.raises(DeserializeError, match="invalid lzma data") as info:
            LZMAWrapper(RAW).deserialize(data)
        assert isinstance(info.value.__cause__, lzma.LZMAError)

    def test_custom_memlimit(self) -> None:
        """preset 6 needs about 9 MiB to decode: refused under 1 MiB, accepted under 32."""
        data = lzma.compress(b"hello", preset=6)
        with pytest.raises(DeserializeError, match="invalid lzma data"):
            LZMAWrapper(RAW, memlimit=1024 * 1024).deserialize(data)
        assert LZMAWrapper(RAW).deserialize(data) == "hello"

    def test_preset_seven_fits_the_default(self) -> None:
        """The docstring promises presets up to 7 decode under the default 32 MiB (preset 7's
        dictionary, 16 MiB, is byte 24 in the header)."""
        assert LZMAWrapper(RAW).deserialize(xz_with_dictionary_byte(b"hello", 24)) == "hello"

    def test_preset_eight_exceeds_the_default(self) -> None:
        """Preset 8's 32 MiB dictionary (byte 26) plus the decoder's state is over 32 MiB."""
        with pytest.raises(DeserializeError):
            LZMAWrapper(RAW).deserialize(xz_with_dictionary_byte(b"hello", 26))


@pytest.mark.parametrize(
    ("wrapper", "compress"),
    [(ZlibWrapper, zlib.compress), (BZ2Wrapper, bz2.compress), (LZMAWrapper, lzma.compress)],
)
def test_trailing_bytes_after_the_stream_are_rejected(wrapper: Any, compress: Any) -> None:
    """A compressed message is exactly one stream: bytes after its end are an error, not ignored."""
    serializer = wrapper(StringSerializer())
    with pytest.raises(DeserializeError, match="trailing bytes"):
        serializer.deserialize(compress(b"hello") + b"junk")
