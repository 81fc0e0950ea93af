"""Protocols: a serializer (and, for streams, a framer), plus an optional converter.

A protocol object is immutable configuration shared by all connections of a server or client:
``encode`` turns an application object into bytes ready for the socket, ``decoder()`` (streams)
makes the per-connection incremental decoder, ``decode`` (datagrams) turns one datagram into an
object.

A :class:`Converter` sits between the wire objects (what the serializer produces, e.g. dicts)
and the application's objects. An exception from ``from_wire`` on incoming data is reported as
a :class:`DeserializeError`, like any other bad message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from .exceptions import DeserializeError, ProtocolError
from .framing import Framer, LineFramer, StreamDecoder
from .serializers import Serializer

__all__ = ["Converter", "DatagramProtocol", "StreamProtocol"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")


class Converter(ABC, Generic[SendT, RecvT]):
    """Maps application objects to wire objects (``to_wire``) and wire objects back (``from_wire``).

    Example::

        class PointConverter(Converter[Point, Point]):
            def to_wire(self, obj: Point) -> Any:
                return [obj.x, obj.y]

            def from_wire(self, obj: Any) -> Point:
                x, y = obj            # a ValueError here becomes a DeserializeError
                return Point(x, y)
    """

    __slots__ = ()

    @abstractmethod
    def to_wire(self, obj: SendT) -> Any:
        """Return the object the serializer will encode for ``obj``."""

    @abstractmethod
    def from_wire(self, obj: Any) -> RecvT:
        """Return the application object for a decoded wire object.

        Raises:
            Exception: any exception is reported to the receiver as a :class:`DeserializeError`.
        """


def _converting(
    deserialize: Callable[[bytes], Any], from_wire: Callable[[Any], RecvT]
) -> Callable[[bytes], RecvT]:
    def deserialize_and_convert(data: bytes) -> RecvT:
        obj = deserialize(data)
        try:
            return from_wire(obj)
        except ProtocolError:
            raise
        except Exception as exc:
            raise DeserializeError(
                f"message rejected by the converter: {type(exc).__name__}: {exc}", data
            ) from exc

    return deserialize_and_convert


class StreamProtocol(Generic[SendT, RecvT]):
    """A stream protocol: messages serialized, then framed.

    Args:
        serializer: Turns each message into a payload and back.
        framer: Cuts the stream into payloads (default: ``LineFramer()``, newline-delimited).
        converter: Optional mapping between wire objects and application objects.

    Example::

        protocol = StreamProtocol(JSONSerializer())
        protocol.encode({"hello": "world"})      # b'{"hello":"world"}\\n'
        decoder = protocol.decoder()
        decoder.feed(b'[1,2]\\n[3]\\n')
        list(decoder)                            # [[1, 2], [3]]
    """

    __slots__ = ("_deserialize", "_to_wire", "converter", "framer", "serializer")

    @overload
    def __init__(
        self: StreamProtocol[SendT, RecvT],
        serializer: Serializer[SendT, RecvT],
        framer: Framer | None = ...,
        converter: None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: StreamProtocol[SendT, RecvT],
        serializer: Serializer[Any, Any],
        framer: Framer | None = ...,
        *,
        converter: Converter[SendT, RecvT],
    ) -> None: ...
    def __init__(
        self,
        serializer: Serializer[Any, Any],
        framer: Framer | None = None,
        converter: Converter[Any, Any] | None = None,
    ) -> None:
        self.serializer = serializer
        self.framer: Framer = LineFramer() if framer is None else framer
        self.converter = converter
        self._to_wire: Callable[[Any], Any] | None = None
        self._deserialize: Callable[[bytes], Any] = serializer.deserialize
        if converter is not None:
            self._to_wire = converter.to_wire
            self._deserialize = _converting(serializer.deserialize, converter.from_wire)

    @property
    def max_frame_size(self) -> int:
        """The framer's limit on incoming frames, in bytes."""
        return self.framer.max_frame_size

    def encode(self, obj: SendT) -> bytes:
        """Return ``obj`` serialized and framed, ready to be written to the stream.

        Raises:
            SerializeError: ``obj`` cannot be serialized or framed.
        """
        wire = obj if self._to_wire is None else self._to_wire(obj)
        return self.framer.frame(self.serializer.serialize(wire))

    def encode_into(self, obj: SendT, buffer: bytearray) -> None:
        """Append ``obj``, serialized and framed, to ``buffer`` (to batch several writes).

        Raises:
            SerializeError: ``obj`` cannot be serialized or framed; ``buffer`` is left as it was.
        """
        wire = obj if self._to_wire is None else self._to_wire(obj)
        start = len(buffer)
        framer = self.framer
        try:
            token = framer.begin_frame(buffer)
            self.serializer.serialize_into(wire, buffer)
            framer.end_frame(buffer, token)
        except BaseException:
            del buffer[start:]
            raise

    def decoder(self) -> StreamDecoder[RecvT]:
        """Return a new incremental decoder for one connection (see :class:`StreamDecoder`)."""
        return self.framer.decoder(self._deserialize)

    def __repr__(self) -> str:
        return f"StreamProtocol({self.serializer!r}, {self.framer!r}, converter={self.converter!r})"


class DatagramProtocol(Generic[SendT, RecvT]):
    """A datagram protocol: one datagram is one message (no framing).

    Args:
        serializer: Turns each message into a datagram and back.
        converter: Optional mapping between wire objects and application objects.

    Example::

        protocol = DatagramProtocol(JSONSerializer())
        protocol.decode(protocol.encode([1, 2]))    # [1, 2]
    """

    __slots__ = ("_deserialize", "_to_wire", "converter", "serializer")

    @overload
    def __init__(
        self: DatagramProtocol[SendT, RecvT],
        serializer: Serializer[SendT, RecvT],
        converter: None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: DatagramProtocol[SendT, RecvT],
        serializer: Serializer[Any, Any],
        converter: Converter[SendT, RecvT],
    ) -> None: ...
    def __init__(
        self, serializer: Serializer[Any, Any], converter: Converter[Any, Any] | None = None
    ) -> None:
        self.serializer = serializer
        self.converter = converter
        self._to_wire: Callable[[Any], Any] | None = None
        self._deserialize: Callable[[bytes], Any] = serializer.deserialize
        if converter is not None:
            self._to_wire = converter.to_wire
            self._deserialize = _converting(serializer.deserialize, converter.from_wire)

    def encode(self, obj: SendT) -> bytes:
        """Return the datagram for ``obj``.

        Raises:
            SerializeError: ``obj`` cannot be serialized.
        """
        wire = obj if self._to_wire is None else self._to_wire(obj)
        return self.serializer.serialize(wire)

    def decode(self, datagram: bytes) -> RecvT:
        """Return the message in ``datagram``.

        Raises:
            DeserializeError: the datagram is not a valid message.
        """
        result: RecvT = self._deserialize(datagram)
        return result

    def __repr__(self) -> str:
        return f"DatagramProtocol({self.serializer!r}, converter={self.converter!r})"
