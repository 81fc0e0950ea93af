"""Tests of protocols.wrappers: base64 (with its SHA-256 and HMAC-SHA256 checksums) and the
bounded decompressors (zlib, bz2, lzma)."""

from __future__ import annotations

import base64
import bz2
import hashlib
import hmac
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
    MsgPackSerializer,
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


#: A fixed signing key for the tests (any 16 bytes or more will do).
KEY = bytes(range(32))


def signed(payload: bytes, key: bytes | None = KEY, *, urlsafe: bool = False) -> bytes:
    """The message Base64Wrapper(..., checksum=key or True) sends for ``payload``, built here
    from the documented layout: base64(payload + SHA-256 or HMAC-SHA256 of payload)."""
    if key is None:
        digest = hashlib.sha256(payload).digest()
    else:
        digest = hmac.new(key, payload, "sha256").digest()
    encode = base64.urlsafe_b64encode if urlsafe else base64.standard_b64encode
    return encode(payload + digest)


class TestBase64WrapperSigned(TestBase64Wrapper):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return Base64Wrapper(JSONSerializer(), checksum=KEY)

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        valid = signed(b'"' + b"x" * 100 + b'"')
        return [
            b"!!!!",
            b"bnVsbA==",  # "null" without its checksum
            base64.b64encode(b"null" + bytes(32)),  # a wrong checksum
            signed(b"null", bytes(32)),  # another key
            signed(b"null", None),  # SHA-256 where HMAC is expected
            valid[:-4],  # truncated
            valid[4:],
            valid.replace(b"eHh4", b"eHh5"),  # one payload byte altered
        ]


class TestBase64WrapperChecksum(TestBase64Wrapper):
    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        return Base64Wrapper(JSONSerializer(), urlsafe=True, checksum=True)

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        valid = signed(b'"' + b"x" * 100 + b'"', None, urlsafe=True)
        return [b"!!!!", b"bnVsbA==", valid[:-4], valid.replace(b"eHh4", b"eHh5")]


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


class TestBase64Checksum:
    """``checksum=``: the layout, what is refused and how it is told, the key rules."""

    def test_layout_is_payload_then_hmac_sha256_in_base64(self) -> None:
        for urlsafe in (False, True):
            wrapper = Base64Wrapper(RAW, urlsafe=urlsafe, checksum=KEY)
            for payload in (b"", b"abc", bytes(range(256))):
                message = wrapper.serialize(payload.decode("latin-1"))
                assert message == signed(payload, urlsafe=urlsafe)
                assert wrapper.deserialize(message) == payload.decode("latin-1")

    def test_unkeyed_checksum_is_sha256(self) -> None:
        wrapper = Base64Wrapper(RAW, checksum=True)
        assert wrapper.serialize("abc") == signed(b"abc", None)

    def test_without_checksum_nothing_changes(self) -> None:
        for checksum in (False, None):
            wrapper = Base64Wrapper(RAW, checksum=checksum)  # type: ignore[arg-type]
            assert wrapper.serialize("abc") == base64.b64encode(b"abc")
            assert wrapper.deserialize(base64.b64encode(b"abc")) == "abc"

    def test_every_altered_byte_is_detected(self) -> None:
        wrapper = Base64Wrapper(RAW, checksum=KEY)
        decoded = base64.b64decode(wrapper.serialize("a message"))
        for index in range(len(decoded)):
            altered = bytearray(decoded)
            altered[index] ^= 0x01
            with pytest.raises(DeserializeError, match="HMAC-SHA256 checksum mismatch"):
                wrapper.deserialize(base64.b64encode(altered))

    def test_every_truncation_is_detected(self) -> None:
        wrapper = Base64Wrapper(RAW, checksum=KEY)
        message = wrapper.serialize("a message")
        for kept in range(len(message)):
            with pytest.raises(DeserializeError, match="checksum") as caught:
                wrapper.deserialize(message[:kept])
            assert caught.value.data == message[:kept][:64]

    def test_errors_say_what_failed(self) -> None:
        wrapper = Base64Wrapper(RAW, checksum=KEY)
        with pytest.raises(DeserializeError, match="signed with another key"):
            wrapper.deserialize(signed(b"abc", b"another key, 16+ bytes"))
        with pytest.raises(DeserializeError, match="checksum missing: 3 bytes decoded"):
            wrapper.deserialize(base64.b64encode(b"abc"))
        with pytest.raises(DeserializeError, match="checksum could not be verified"):
            wrapper.deserialize(b"not base64!")
        with pytest.raises(DeserializeError) as caught:
            Base64Wrapper(RAW, checksum=True).deserialize(signed(b"abc", KEY))
        assert "SHA-256 checksum mismatch" in str(caught.value)
        assert "key" not in caught.value.reason

    def test_the_inner_serializer_sees_only_verified_payloads(self) -> None:
        seen: list[bytes] = []

        class Recording(Serializer[bytes, bytes]):
            def serialize(self, obj: bytes) -> bytes:
                return obj

            def deserialize(self, data: bytes) -> bytes:
                seen.append(data)
                return data

        wrapper = Base64Wrapper(Recording(), checksum=KEY)
        with pytest.raises(DeserializeError):
            wrapper.deserialize(signed(b"forged", b"the attacker's own key"))
        assert seen == []
        assert wrapper.deserialize(wrapper.serialize(b"real")) == b"real"
        assert seen == [b"real"]

    def test_the_comparison_is_constant_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def recording(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", recording)
        wrapper = Base64Wrapper(RAW, checksum=KEY)
        wrapper.deserialize(wrapper.serialize("abc"))
        with pytest.raises(DeserializeError):
            wrapper.deserialize(signed(b"abc", b"0123456789abcdef"))
        assert len(calls) == 2
        assert all(len(a) == len(b) == 32 for a, b in calls)

    def test_interoperates_with_easynetwork_keys(self) -> None:
        """EasyNetwork's Base64EncoderSerializer(checksum=key) takes a URL-safe base64 key and
        sends urlsafe_b64encode(payload + hmac(key, payload, sha256)): the same message."""
        easynetwork_key = base64.urlsafe_b64encode(KEY)
        wrapper = Base64Wrapper(
            RAW, urlsafe=True, checksum=base64.urlsafe_b64decode(easynetwork_key)
        )
        sent = base64.urlsafe_b64encode(b"hello" + hmac.digest(KEY, b"hello", "sha256"))
        assert wrapper.deserialize(sent) == "hello"
        assert wrapper.serialize("hello") == sent

    @pytest.mark.parametrize("key", [b"", b"short", b"x" * 15, bytearray(b"y" * 15)])
    def test_a_short_key_is_refused(self, key: bytes) -> None:
        with pytest.raises(ValueError, match="at least 16 bytes"):
            Base64Wrapper(RAW, checksum=key)

    @pytest.mark.parametrize("key", ["a text key of 32 characters, yes", 1, 32, object()])
    def test_a_key_that_is_not_bytes_is_refused(self, key: Any) -> None:
        with pytest.raises(TypeError, match="checksum must be True, False or a bytes key"):
            Base64Wrapper(RAW, checksum=key)

    def test_a_bytearray_key_is_copied(self) -> None:
        key = bytearray(KEY)
        wrapper = Base64Wrapper(RAW, checksum=key)  # type: ignore[arg-type]  # accepted too
        key[:] = bytes(32)
        assert wrapper.serialize("abc") == signed(b"abc")

    def test_generate_key(self) -> None:
        keys = {Base64Wrapper.generate_key() for _ in range(10)}
        assert len(keys) == 10
        assert all(type(key) is bytes and len(key) == 32 for key in keys)
        wrapper = Base64Wrapper(MsgPackSerializer(), checksum=keys.pop())
        assert wrapper.deserialize(wrapper.serialize({"a": [1]})) == {"a": [1]}

    def test_the_key_is_not_shown(self) -> None:
        wrapper = Base64Wrapper(RAW, checksum=KEY)
        assert KEY.hex() not in repr(wrapper)
        assert repr(KEY) not in repr(wrapper)
        assert not any(getattr(wrapper, name, None) == KEY for name in dir(wrapper))

    def test_signed_line_protocol(self) -> None:
        protocol = StreamProtocol(Base64Wrapper(MsgPackSerializer(), checksum=KEY), LineFramer())
        messages: list[Any] = [{"a": b"\n\x00"}, [1, 2], None]
        stream = b"".join(protocol.encode(message) for message in messages)
        assert decode_all(protocol.decoder(), [stream]) == messages


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
