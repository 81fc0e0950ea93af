"""Shared helpers of the ``protocols`` test suite (not a test module: pytest does not collect it).

- :class:`SerializerContract`: the behaviour every serializer (and serializer wrapper) must
  have. A test class subclasses it and provides the fixtures ``serializer``, ``samples``,
  ``bad_payloads`` and ``unserializable``.
- Feeding helpers: decode a byte stream delivered whole, one byte at a time, or cut at given
  offsets, the way a socket may deliver it.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import pytest

from protocols import DeserializeError, ProtocolError, SerializeError, Serializer, StreamDecoder
from protocols.exceptions import EXCERPT_SIZE


def identity(payload: bytes) -> bytes:
    """A deserialize function that returns the frame itself, to test framers alone."""
    return payload


def decode_all(decoder: StreamDecoder[Any], chunks: Iterable[bytes]) -> list[Any]:
    """Feed ``chunks`` one after the other, draining the decoder after each; return all messages."""
    messages: list[Any] = []
    for chunk in chunks:
        decoder.feed(chunk)
        messages.extend(decoder)
    return messages


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    """``data`` as single-byte chunks."""
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``offsets`` (in any order, duplicates and out-of-range ones ignored)."""
    cuts = sorted({offset for offset in offsets if 0 < offset < len(data)})
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in pairwise(bounds)]


class SerializerContract:
    """What every serializer promises, whatever its format.

    Subclasses (named ``Test...``) override the four fixtures below.
    """

    @pytest.fixture
    def serializer(self) -> Serializer[Any, Any]:
        raise NotImplementedError

    @pytest.fixture
    def samples(self) -> list[Any]:
        """Objects that come back equal after a round trip."""
        raise NotImplementedError

    @pytest.fixture
    def bad_payloads(self) -> list[bytes]:
        """Payloads the serializer must refuse; at least one longer than the error excerpt."""
        raise NotImplementedError

    @pytest.fixture
    def unserializable(self) -> list[Any]:
        """Objects the serializer cannot encode."""
        raise NotImplementedError

    def test_round_trip(self, serializer: Serializer[Any, Any], samples: list[Any]) -> None:
        for obj in samples:
            payload = serializer.serialize(obj)
            assert type(payload) is bytes
            assert serializer.deserialize(payload) == obj, obj

    def test_serialize_into_appends_exactly_serialize_output(
        self, serializer: Serializer[Any, Any], samples: list[Any]
    ) -> None:
        """Into a non-empty buffer, message after message: nothing before is touched."""
        buffer = bytearray(b"already here")
        expected = b"already here"
        for obj in samples:
            serializer.serialize_into(obj, buffer)
            expected += serializer.serialize(obj)
            assert buffer == expected, obj

    def test_bad_payloads_raise_deserialize_error(
        self, serializer: Serializer[Any, Any], bad_payloads: list[bytes]
    ) -> None:
        assert any(len(p) > EXCERPT_SIZE for p in bad_payloads), "test a long payload too"
        for payload in bad_payloads:
            with pytest.raises(DeserializeError) as info:
                serializer.deserialize(payload)
            error = info.value
            assert isinstance(error.reason, str)
            assert error.reason
            assert error.reason in str(error)
            assert type(error.data) is bytes
            assert error.data == payload[:EXCERPT_SIZE]
            assert len(error.data) <= EXCERPT_SIZE
            if len(payload) > EXCERPT_SIZE:
                assert f"message of {len(payload)} bytes" in str(error)
                assert str(error).endswith("...)")

    def test_unserializable_raises_serialize_error(
        self, serializer: Serializer[Any, Any], unserializable: list[Any]
    ) -> None:
        """Both entry points raise SerializeError (a ValueError, not a ProtocolError)."""
        for obj in unserializable:
            with pytest.raises(SerializeError) as info:
                serializer.serialize(obj)
            assert isinstance(info.value, ValueError)
            assert not isinstance(info.value, ProtocolError)
            buffer = bytearray(b"keep")
            with pytest.raises(SerializeError):
                serializer.serialize_into(obj, buffer)
            assert buffer.startswith(b"keep")  # a partial payload may follow: caller truncates
