"""Serializers: one message <-> one ``bytes`` payload.

A serializer knows nothing of framing or sockets. Each one builds its codec once, in
``__init__``, and reuses it for every message (msgspec's Encoder/Decoder, a compiled
``struct.Struct``). Decoding failures of any kind come out as :class:`DeserializeError`, so a
caller handles one exception whatever the format.

``serialize_into`` appends to a caller's ``bytearray``: the framed stream protocol uses it to
build a length-prefixed frame or a batch of replies without intermediate ``bytes`` objects.

:class:`StapledSerializer` puts two serializers together: one for what this end sends, the
other for what it receives.
"""

from __future__ import annotations

import codecs
import pickle
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar, overload

import msgspec

from .exceptions import DeserializeError, SerializeError

__all__ = [
    "BytesSerializer",
    "CBORSerializer",
    "JSONSerializer",
    "MsgPackSerializer",
    "NamedTupleSerializer",
    "PickleSerializer",
    "Serializer",
    "StapledSerializer",
    "StringSerializer",
    "StructSerializer",
]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")
T = TypeVar("T")
NT = TypeVar("NT", bound=NamedTuple)

Buffer = bytes | bytearray | memoryview


class Serializer(ABC, Generic[SendT, RecvT]):
    """Turns one outgoing object into bytes and one incoming payload back into an object.

    ``SendT`` is what :meth:`serialize` accepts, ``RecvT`` what :meth:`deserialize` returns
    (they differ for typed decoders: a server decodes requests and encodes responses).

    Subclasses implement :meth:`serialize` and :meth:`deserialize`; they may override
    :meth:`serialize_into` when the codec can write into a buffer directly.
    """

    __slots__ = ()

    @abstractmethod
    def serialize(self, obj: SendT) -> bytes:
        """Return the payload for ``obj``.

        Raises:
            SerializeError: ``obj`` cannot be represented in this format.
        """

    @abstractmethod
    def deserialize(self, data: bytes) -> RecvT:
        """Return the object encoded in ``data`` (one whole payload).

        Raises:
            DeserializeError: ``data`` is not a valid payload (or fails typed validation).
        """

    def serialize_into(self, obj: SendT, buffer: bytearray) -> None:
        """Append the payload for ``obj`` to ``buffer``.

        Raises:
            SerializeError: ``obj`` cannot be represented; ``buffer`` may then hold a partial
                payload, which the caller truncates.
        """
        buffer += self.serialize(obj)


# What msgspec's encoders raise for values they cannot encode; NotImplementedError is the
# documented way for an ``enc_hook`` to say "unsupported type".
_ENCODE_ERRORS = (
    TypeError,
    ValueError,
    OverflowError,
    NotImplementedError,
    RecursionError,
    msgspec.EncodeError,
)


class _MsgspecSerializer(Serializer[Any, T]):
    """Shared msgspec plumbing: one Encoder, one (typed) Decoder, errors translated."""

    __slots__ = ("_decode", "_encode", "_encode_into", "_format")

    def __init__(self, encoder: Any, decoder: Any, format_name: str) -> None:
        self._encode: Callable[[Any], bytes] = encoder.encode
        self._encode_into: Callable[[Any, bytearray, int], None] = encoder.encode_into
        self._decode: Callable[[bytes], T] = decoder.decode
        self._format = format_name

    def serialize(self, obj: Any) -> bytes:
        try:
            return self._encode(obj)
        except _ENCODE_ERRORS as exc:
            raise SerializeError(
                f"cannot encode {type(obj).__name__} as {self._format}: {exc}"
            ) from exc

    def serialize_into(self, obj: Any, buffer: bytearray) -> None:
        try:
            self._encode_into(obj, buffer, -1)
        except _ENCODE_ERRORS as exc:
            raise SerializeError(
                f"cannot encode {type(obj).__name__} as {self._format}: {exc}"
            ) from exc

    def deserialize(self, data: bytes) -> T:
        try:
            return self._decode(data)
        except msgspec.ValidationError as exc:
            raise DeserializeError(f"invalid {self._format} message: {exc}", data) from exc
        except msgspec.DecodeError as exc:
            raise DeserializeError(f"malformed {self._format}: {exc}", data) from exc
        except RecursionError as exc:
            raise DeserializeError(f"{self._format} message nested too deeply", data) from exc
        except (ValueError, OverflowError) as exc:  # e.g. UnicodeDecodeError in a string
            raise DeserializeError(f"malformed {self._format}: {exc}", data) from exc
        except NotImplementedError as exc:
            raise DeserializeError(f"invalid {self._format} message: {exc}", data) from exc


class JSONSerializer(_MsgspecSerializer[T]):
    """JSON through msgspec.

    Without ``type``, messages decode to plain ``dict``/``list``/``str``/``int``/``float``/
    ``bool``/``None``. With ``type`` (a msgspec Struct, dataclass, TypedDict, or any type msgspec
    understands, unions included), every message is validated while it is parsed and the error
    says which field was wrong, e.g. ``Expected `int`, got `str` - at `$.id```.

    Output never contains a raw newline, so JSON works with :class:`~protocols.LineFramer`.

    Args:
        type: The type every incoming message must have (default: any JSON value).
        strict: If False, msgspec also accepts e.g. ``"1"`` for an ``int`` field.
        enc_hook: Called for objects msgspec cannot encode natively.
        dec_hook: Called to build custom types while decoding.

    Example::

        class Ping(msgspec.Struct):
            id: int

        serializer = JSONSerializer(type=Ping)
        serializer.deserialize(b'{"id": 1}')   # Ping(id=1)
    """

    __slots__ = ()

    @overload
    def __init__(
        self: JSONSerializer[Any],
        *,
        strict: bool = ...,
        enc_hook: Callable[[Any], Any] | None = ...,
        dec_hook: Callable[[type, Any], Any] | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        type: type[T],
        *,
        strict: bool = ...,
        enc_hook: Callable[[Any], Any] | None = ...,
        dec_hook: Callable[[type, Any], Any] | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: JSONSerializer[Any],
        type: Any,
        *,
        strict: bool = ...,
        enc_hook: Callable[[Any], Any] | None = ...,
        dec_hook: Callable[[type, Any], Any] | None = ...,
    ) -> None: ...
    def __init__(
        self,
        type: Any = Any,
        *,
        strict: bool = True,
        enc_hook: Callable[[Any], Any] | None = None,
        dec_hook: Callable[[type, Any], Any] | None = None,
    ) -> None:
        super().__init__(
            msgspec.json.Encoder(enc_hook=enc_hook),
            msgspec.json.Decoder(type, strict=strict, dec_hook=dec_hook),
            "JSON",
        )


class MsgPackSerializer(_MsgspecSerializer[T]):
    """MessagePack through msgspec; same options and typed decoding as :class:`JSONSerializer`.

    MessagePack output may contain any byte, so frame it with
    :class:`~protocols.LengthPrefixFramer`, not a line framer.
    """

    __slots__ = ()

    @overload
    def __init__(
        self: MsgPackSerializer[Any],
        *,
        strict: bool = ...,
        enc_hook: Callable[[Any], Any] | None = ...,
        dec_hook: Callable[[type, Any], Any] | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        type: type[T],
        *,
        strict: bool = ...,
        enc_hook: Callable[[Any], Any] | None = ...,
        dec_hook: Callable[[type, Any], Any] | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: MsgPackSerializer[Any],
        type: Any,
        *,
        strict: bool = ...,
        enc_hook: Callable[[Any], Any] | None = ...,
        dec_hook: Callable[[type, Any], Any] | None = ...,
    ) -> None: ...
    def __init__(
        self,
        type: Any = Any,
        *,
        strict: bool = True,
        enc_hook: Callable[[Any], Any] | None = None,
        dec_hook: Callable[[type, Any], Any] | None = None,
    ) -> None:
        super().__init__(
            msgspec.msgpack.Encoder(enc_hook=enc_hook),
            msgspec.msgpack.Decoder(type, strict=strict, dec_hook=dec_hook),
            "MessagePack",
        )


class BytesSerializer(Serializer[bytes, bytes]):
    r"""Raw payloads: the message *is* the bytes (no encoding at all).

    For binary protocols handled by the application itself, and for line protocols where the
    handler wants the raw line (e.g. ``LineFramer(b"\r\n")`` for a Redis-style inline command).

    Example::

        protocol = StreamProtocol(BytesSerializer(), LineFramer(b"\r\n"))
        protocol.encode(b"+PONG")    # b'+PONG\r\n'
    """

    __slots__ = ()

    def serialize(self, obj: object) -> bytes:
        if isinstance(obj, bytes):
            return obj
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj)
        raise SerializeError(f"BytesSerializer sends bytes, got {type(obj).__name__}")

    def serialize_into(self, obj: object, buffer: bytearray) -> None:
        if not isinstance(obj, bytes | bytearray | memoryview):
            raise SerializeError(f"BytesSerializer sends bytes, got {type(obj).__name__}")
        buffer += obj

    def deserialize(self, data: bytes) -> bytes:
        return data


class StringSerializer(Serializer[str, str]):
    """Text messages in an encoding (UTF-8 by default).

    Args:
        encoding: Any codec Python knows.
        errors: How to treat undecodable bytes; ``"strict"`` (the default) turns them into a
            :class:`DeserializeError`, ``"replace"`` substitutes U+FFFD.
    """

    __slots__ = ("_encoding", "_errors")

    def __init__(self, encoding: str = "utf-8", errors: str = "strict") -> None:
        "".encode(encoding, errors)  # fail now on an unknown codec or error handler
        codecs.lookup_error(errors)
        self._encoding = encoding
        self._errors = errors

    def serialize(self, obj: str) -> bytes:
        try:
            return obj.encode(self._encoding, self._errors)
        except (UnicodeError, AttributeError) as exc:
            raise SerializeError(
                f"cannot encode {type(obj).__name__} as {self._encoding}: {exc}"
            ) from exc

    def deserialize(self, data: bytes) -> str:
        try:
            return str(data, self._encoding, self._errors)
        except UnicodeDecodeError as exc:
            raise DeserializeError(
                f"invalid {self._encoding} at byte {exc.start}: {exc.reason}", data
            ) from exc
        except UnicodeError as exc:
            raise DeserializeError(f"invalid {self._encoding}: {exc}", data) from exc


class StructSerializer(Serializer[tuple[Any, ...], tuple[Any, ...]]):
    """Fixed-size binary records with :mod:`struct`: a tuple in, the same tuple out.

    Pair it with :class:`~protocols.FixedSizeFramer` (``FixedSizeFramer(serializer.size)``).

    Args:
        format: A :mod:`struct` format string; ``"!"`` (network order) is prefixed when the
            format names no byte order, so both peers agree whatever their machines.
    """

    __slots__ = ("_struct",)

    def __init__(self, format: str) -> None:
        if format[:1] not in ("@", "=", "<", ">", "!"):
            format = "!" + format
        self._struct = struct.Struct(format)

    @property
    def size(self) -> int:
        """The size in bytes of every record."""
        return self._struct.size

    @property
    def format(self) -> str:
        """The struct format, with its byte order."""
        return self._struct.format

    def serialize(self, obj: tuple[Any, ...]) -> bytes:
        try:
            return self._struct.pack(*obj)
        except (struct.error, TypeError, OverflowError) as exc:
            raise SerializeError(f"cannot pack {obj!r:.80} with {self.format!r}: {exc}") from exc

    def deserialize(self, data: bytes) -> tuple[Any, ...]:
        try:
            return self._struct.unpack(data)
        except struct.error as exc:
            raise DeserializeError(
                f"expected a {self.size}-byte {self.format!r} record: {exc}", data
            ) from exc


class NamedTupleSerializer(Serializer[NT, NT]):
    """Like :class:`StructSerializer`, but records are instances of a ``NamedTuple`` class.

    Args:
        namedtuple_type: The ``typing.NamedTuple`` (or ``collections.namedtuple``) class.
        format: The struct format, one field per item, in field order.

    Raises:
        ValueError: the format does not have one item per field.
    """

    __slots__ = ("_make", "_struct")

    def __init__(self, namedtuple_type: type[NT], format: str) -> None:
        self._struct = StructSerializer(format)
        fields = len(namedtuple_type._fields)
        items = len(self._struct.deserialize(bytes(self._struct.size)))
        if items != fields:
            raise ValueError(
                f"format {format!r} describes {items} items, "
                f"but {namedtuple_type.__name__} has {fields} fields"
            )
        self._make: Callable[[tuple[Any, ...]], NT] = namedtuple_type._make

    @property
    def size(self) -> int:
        """The size in bytes of every record."""
        return self._struct.size

    def serialize(self, obj: NT) -> bytes:
        return self._struct.serialize(obj)

    def deserialize(self, data: bytes) -> NT:
        return self._make(self._struct.deserialize(data))


class PickleSerializer(Serializer[Any, Any]):
    """Any picklable Python object.

    .. warning::
       Unpickling runs code chosen by whoever wrote the bytes. Use it only between peers that
       trust each other completely (e.g. processes of one application over a Unix socket);
       never on a port reachable by anyone else. It is never a default.

    Args:
        protocol: The pickle protocol (default: the highest this Python supports).
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self._protocol = protocol

    def serialize(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, self._protocol)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializeError(f"cannot pickle {type(obj).__name__}: {exc}") from exc

    def deserialize(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:  # unpickling can raise nearly anything on bad input
            raise DeserializeError(f"invalid pickle: {type(exc).__name__}: {exc}", data) from exc


class CBORSerializer(Serializer[Any, Any]):
    """CBOR (RFC 8949) through the ``cbor2`` package (``pip install server-framework[cbor]``).

    Raises:
        ImportError: ``cbor2`` is not installed (the message says how to install it).
    """

    __slots__ = ("_dumps", "_loads")

    def __init__(self) -> None:
        try:
            import cbor2  # noqa: PLC0415  (optional dependency, imported only when used)
        except ImportError as exc:  # pragma: no cover - the dev environment has cbor2
            raise ImportError(
                "CBORSerializer needs cbor2: pip install 'server-framework[cbor]'"
            ) from exc
        self._dumps: Callable[[Any], bytes] = cbor2.dumps
        self._loads: Callable[[bytes], Any] = cbor2.loads

    def serialize(self, obj: Any) -> bytes:
        try:
            return self._dumps(obj)
        except Exception as exc:  # cbor2.CBOREncodeError and the TypeErrors of its encoders
            raise SerializeError(f"cannot encode {type(obj).__name__} as CBOR: {exc}") from exc

    def deserialize(self, data: bytes) -> Any:
        try:
            return self._loads(data)
        except Exception as exc:  # CBORDecodeError, but also ValueError/OverflowError/...
            raise DeserializeError(f"invalid CBOR: {exc}", data) from exc


class StapledSerializer(Serializer[SendT, RecvT]):
    """One format to send, another to receive: ``serialize`` is ``sending``'s, ``deserialize``
    is ``receiving``'s.

    For a peer that answers in another format than it is spoken to (a server that takes
    MessagePack requests and sends JSON replies), or that takes typed requests and sends
    untyped replies. ``sending`` and ``receiving`` are from this end's point of view: the
    other end uses the :meth:`swapped` pair.

    A stream protocol has one framer for both directions, so pick one that carries both
    formats (:class:`~protocols.LengthPrefixFramer` carries anything; a line framer only
    payloads without its delimiter, which rules MessagePack out). On datagrams, any pair works.

    Args:
        sending: Serializes what this end sends (its ``serialize`` and ``serialize_into``).
        receiving: Deserializes what this end receives (its ``deserialize``).

    Raises:
        TypeError: ``sending`` or ``receiving`` is not a :class:`Serializer` instance.

    Example::

        server_side = StapledSerializer(sending=JSONSerializer(), receiving=MsgPackSerializer())
        server = StreamProtocol(server_side, LengthPrefixFramer())
        client = StreamProtocol(server_side.swapped(), LengthPrefixFramer())
    """

    __slots__ = ("_receiving", "_sending")

    def __init__(
        self, *, sending: Serializer[SendT, Any], receiving: Serializer[Any, RecvT]
    ) -> None:
        for role, serializer in (("sending", sending), ("receiving", receiving)):
            if not isinstance(serializer, Serializer):
                raise TypeError(
                    f"{role} must be a Serializer instance, got {serializer!r}"
                    + (" (a class: call it)" if isinstance(serializer, type) else "")
                )
        self._sending = sending
        self._receiving = receiving

    @property
    def sending(self) -> Serializer[SendT, Any]:
        """The serializer of what this end sends."""
        return self._sending

    @property
    def receiving(self) -> Serializer[Any, RecvT]:
        """The serializer of what this end receives."""
        return self._receiving

    def swapped(self) -> StapledSerializer[Any, Any]:
        """The same pair the other way round: what the peer of this end uses."""
        return StapledSerializer(sending=self._receiving, receiving=self._sending)

    def serialize(self, obj: SendT) -> bytes:
        """Return ``sending.serialize(obj)``."""
        return self._sending.serialize(obj)

    def serialize_into(self, obj: SendT, buffer: bytearray) -> None:
        """Append ``sending``'s payload for ``obj`` to ``buffer``."""
        self._sending.serialize_into(obj, buffer)

    def deserialize(self, data: bytes) -> RecvT:
        """Return ``receiving.deserialize(data)``."""
        return self._receiving.deserialize(data)

    def __repr__(self) -> str:
        return f"StapledSerializer(sending={self._sending!r}, receiving={self._receiving!r})"
