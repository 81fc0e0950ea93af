"""Tests of protocols.exceptions: the hierarchy a server relies on, messages and attributes."""

from __future__ import annotations

import copy
import pickle

import pytest

from protocols import (
    DeserializeError,
    FrameTooLargeError,
    FramingError,
    ProtocolError,
    SerializeError,
)
from protocols.exceptions import EXCERPT_SIZE


@pytest.mark.parametrize(
    ("subclass", "base"),
    [
        (FrameTooLargeError, FramingError),
        (FramingError, ProtocolError),
        (DeserializeError, ProtocolError),
        (ProtocolError, Exception),
        (SerializeError, ValueError),
    ],
)
def test_hierarchy(subclass: type[Exception], base: type[Exception]) -> None:
    assert issubclass(subclass, base)


def test_our_own_encoding_errors_are_not_the_peers_fault() -> None:
    """``except ProtocolError`` (bad input from a peer) never catches a SerializeError (a bug
    or unsupported value on our side), and the reverse."""
    assert not issubclass(SerializeError, ProtocolError)
    assert not issubclass(ProtocolError, ValueError)


def test_excerpt_size_is_64() -> None:
    assert EXCERPT_SIZE == 64


class TestDeserializeError:
    def test_attributes_and_message(self) -> None:
        error = DeserializeError("bad thing", b"payload")
        assert error.reason == "bad thing"
        assert error.data == b"payload"
        assert str(error) == "bad thing (message of 7 bytes: b'payload')"

    def test_without_data_the_message_is_the_reason(self) -> None:
        error = DeserializeError("bad thing")
        assert error.data == b""
        assert str(error) == "bad thing"

    @pytest.mark.parametrize("size", [64, 65, 1000, 10**6])
    def test_data_is_truncated_to_64_bytes(self, size: int) -> None:
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        error = DeserializeError("bad", payload)
        assert error.data == payload[:64]
        assert f"message of {size} bytes" in str(error)
        assert str(error).endswith("...)") == (size > 64)
        assert len(str(error)) < 400  # a megabyte of garbage never ends up in a log line

    @pytest.mark.parametrize("kind", [bytearray, memoryview])
    def test_data_is_always_bytes(self, kind: type) -> None:
        buffer = bytearray(b"x" * 100)
        error = DeserializeError("bad", kind(buffer))
        buffer[:] = b"y" * 100  # the excerpt is a copy, not a view of the caller's buffer
        assert type(error.data) is bytes
        assert error.data == b"x" * 64

    def test_reason_is_preserved_through_raise(self) -> None:
        with pytest.raises(DeserializeError) as info:
            raise DeserializeError("bad", b"x")
        assert info.value.reason == "bad"
        assert info.value.args == ("bad (message of 1 bytes: b'x')",)


class TestFrameTooLargeError:
    def test_complete_frame(self) -> None:
        error = FrameTooLargeError(2000, 1024)
        assert (error.size, error.limit) == (2000, 1024)
        assert str(error).startswith("frame of 2000 bytes is over max_frame_size=1024")
        assert "raise the framer's max_frame_size" in str(error)

    def test_incomplete_frame(self) -> None:
        error = FrameTooLargeError(2000, 1024, complete=False)
        assert str(error).startswith("incomplete frame already 2000 bytes is over")


@pytest.mark.parametrize(
    "error",
    [
        DeserializeError("bad", b"x" * 100),
        FramingError("out of sync"),
        FrameTooLargeError(2000, 1024),
        FrameTooLargeError(2000, 1024, complete=False),
        SerializeError("cannot encode"),
    ],
    ids=["deserialize", "framing", "too-large", "too-large-incomplete", "serialize"],
)
def test_errors_survive_pickle_and_copy(error: Exception) -> None:
    """Errors cross process boundaries (process pools, multiprocessing) and get copied; a
    custom __init__ must not make that fail. Message and attributes come back the same."""
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is type(error)
        assert str(clone) == str(error)
        assert vars(clone) == vars(error)


def test_serialize_error_is_a_plain_value_error() -> None:
    error = SerializeError("cannot encode")
    assert str(error) == "cannot encode"
    assert isinstance(error, ValueError)
