"""Framers: split a byte stream into frames and wrap payloads into frames.

A framer object is configuration (delimiter, header size, limits), shared by every connection.
``framer.decoder(deserialize)`` makes the per-connection state: a :class:`StreamDecoder` that
you ``feed()`` with whatever the socket produced and then iterate for complete messages.

Strategy of the decoders (the hot path of every stream server):

- The buffer is the received ``bytes`` object itself while it holds whole frames: frames are
  sliced straight out of it, nothing is copied first. Only when a frame spans two reads do the
  leftover bytes move into a ``bytearray``, which then grows in place (amortised O(1) per
  byte) and is compacted once per ``feed``, never once per frame.
- The delimiter search remembers how far it has looked: the next search starts
  ``len(delimiter) - 1`` bytes before the end of the previous one, so a frame trickled in one
  byte at a time is scanned once in total, not once per byte.
- Limits are checked before data is kept: a length header over ``max_frame_size`` is refused
  as soon as the header is complete, and a delimiter-less run past ``max_frame_size`` as soon
  as it is seen. Either leaves the decoder broken (:class:`FrameTooLargeError`, then
  :class:`FramingError` on further use): the stream can no longer be trusted to be in sync.
- When everything received has been consumed the buffer is dropped, so an idle connection
  holds no receive data at all.
- A frame too large is looked at before it is dropped: when its first bytes point to another
  cause (text where a length header should be, binary data on a line framer, a TLS handshake,
  an HTTP request: :func:`protocols.diagnostics.likely_cause`), the error says so instead of
  advising to raise ``max_frame_size``. Only the error path pays for that.
- A :class:`DeserializeError` from the deserializer is raised *after* the frame has been
  consumed: the decoder stays in sync and the next iteration returns the next message.
- :class:`JSONDocumentFramer` has no delimiter to search for: its decoder follows the JSON
  syntax (brackets, strings, escapes) with a few regular expressions, remembering where it
  stopped and what it was inside, so a document trickled in byte by byte is still scanned
  once.
"""

from __future__ import annotations

import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Final, TypeVar

from .diagnostics import SNIFF_SIZE, likely_cause
from .exceptions import FrameTooLargeError, FramingError, SerializeError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FixedSizeFramer",
    "Framer",
    "JSONDocumentFramer",
    "LengthPrefixFramer",
    "LineFramer",
    "StreamDecoder",
]

T = TypeVar("T")

#: Default ``max_frame_size``: 1 MiB. Large enough for any request a typical service takes,
#: small enough that a thousand connections each holding a partial frame stay within 1 GiB.
DEFAULT_MAX_FRAME_SIZE: Final = 1024 * 1024

_Data = bytes | bytearray | memoryview


class StreamDecoder(Iterator[T]):
    """Per-connection incremental decoder: ``feed(data)``, then iterate the complete messages.

    Iteration stops (``StopIteration``) when more data is needed; feed more and iterate again.
    ``__next__`` raises :class:`~protocols.DeserializeError` for a well-framed but invalid
    message (the decoder stays usable) and :class:`~protocols.FramingError` /
    :class:`~protocols.FrameTooLargeError` when the stream cannot be framed any more (the
    decoder is then broken).

    Subclassing (for a framer of your own): implement ``__next__`` with the state this base
    class keeps: ``_buf`` (``bytes`` or ``bytearray``, the received data) and ``_pos`` (where
    the next frame starts), ``_max`` (``max_frame_size``) and ``_deserialize`` (call it with
    each frame's ``bytes``). Raise ``StopIteration`` through ``self._exhausted()`` when
    ``_pos`` reached the end (it drops the buffer), plain ``StopIteration`` when a frame is
    incomplete, ``self._too_large(size, complete=...)`` for an oversized frame starting at
    ``_pos`` (it marks the decoder broken; override ``_hint(data)`` to name the likely cause
    from the frame's first bytes), and call ``self._check_usable()`` before reporting "no more
    data".
    :meth:`feed` keeps ``_buf``/``_pos`` consistent; override ``_rebased(shift)`` if you keep
    offsets of your own into ``_buf``.

    Example::

        decoder = StreamProtocol(JSONSerializer()).decoder()
        decoder.feed(b'{"a": 1}\\n{"b"')
        list(decoder)          # [{'a': 1}]
        decoder.feed(b': 2}\\n')
        list(decoder)          # [{'b': 2}]
    """

    __slots__ = ("_broken", "_buf", "_deserialize", "_max", "_pos")

    def __init__(self, deserialize: Callable[[bytes], T], max_frame_size: int) -> None:
        self._deserialize = deserialize
        self._max = max_frame_size
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._broken: FramingError | None = None

    def __iter__(self) -> StreamDecoder[T]:
        return self

    @property
    def buffered(self) -> int:
        """How many received bytes are waiting for the rest of their frame."""
        return len(self._buf) - self._pos

    @property
    def broken(self) -> bool:
        """True once a framing error made the stream unusable."""
        return self._broken is not None

    def peek(self, size: int = SNIFF_SIZE) -> bytes:
        """The first ``size`` bytes received and not decoded yet (an unfinished frame's start).

        For diagnostics (what did the peer send that does not form a message?), e.g. with
        :func:`protocols.diagnostics.likely_cause`; it does not consume anything.
        """
        return bytes(memoryview(self._buf)[self._pos : self._pos + size])

    def feed(self, data: _Data) -> None:
        """Add received bytes. Cheap: no parsing happens until iteration.

        Raises:
            FramingError: the decoder is broken by an earlier framing error.
        """
        if self._broken is not None:
            raise FramingError(f"decoder is unusable after an earlier error: {self._broken}")
        if not data:
            return
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            # Everything before was consumed: the new chunk becomes the buffer, uncopied.
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            self._rebased(pos)
            return
        if not isinstance(buf, bytearray):
            # A frame spans reads: from now on accumulate in a bytearray, growing in place.
            buf = bytearray(memoryview(buf)[pos:])
        elif pos:
            del buf[:pos]
        buf += data
        self._buf = buf
        self._pos = 0
        self._rebased(pos)

    def close(self) -> None:
        """Drop everything received and not decoded yet; the decoder takes no more input.

        For when the connection ends: nothing it received stays referenced (an unfinished
        frame may be up to ``max_frame_size`` long). Afterwards :attr:`broken` is True and
        :meth:`feed` raises :class:`~protocols.FramingError`.
        """
        self._buf = b""
        self._pos = 0
        if self._broken is None:
            self._broken = FramingError("the decoder is closed")

    def _rebased(self, shift: int) -> None:
        """The buffer was replaced or compacted; subclasses shift their own offsets by ``shift``."""

    def _exhausted(self) -> None:
        # Drop the consumed chunk (or the emptied bytearray) so idle connections hold nothing.
        self._buf = b""
        self._pos = 0
        raise StopIteration

    def _hint(self, data: bytes) -> str | None:
        """The likely cause of a frame too large that starts with ``data`` (see
        :func:`~protocols.diagnostics.likely_cause`); the decoders of a framing override it."""
        return likely_cause(data)

    def _too_large(self, size: int, *, complete: bool) -> FrameTooLargeError:
        hint = self._hint(self.peek())
        error = FrameTooLargeError(size, self._max, complete=complete, hint=hint)
        self._broken = error
        self._buf = b""
        self._pos = 0
        return error

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise FramingError(f"decoder is unusable after an earlier error: {self._broken}")

    @abstractmethod
    def __next__(self) -> T:
        """Return the next complete message, or raise ``StopIteration`` if more data is needed."""


class Framer(ABC):
    """How a stream is cut into frames: configuration shared by all connections.

    To write your own framer, implement :meth:`frame`, :meth:`begin_frame`/:meth:`end_frame`
    (the same framing, written into a caller's buffer around a payload appended between the two
    calls) and :meth:`decoder` (a :class:`StreamDecoder` subclass). The property tests in the
    project's test suite show what every framer must satisfy.

    Attributes:
        max_frame_size: The largest frame the decoders accept, in bytes.
    """

    __slots__ = ("max_frame_size",)

    def __init__(self, max_frame_size: int) -> None:
        if max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
        self.max_frame_size = max_frame_size

    @abstractmethod
    def frame(self, payload: bytes) -> bytes:
        """Return ``payload`` as one frame.

        Raises:
            SerializeError: the payload cannot be framed (it contains the delimiter, is too
                long for the header, has the wrong size...).
        """

    @abstractmethod
    def begin_frame(self, buffer: bytearray) -> int:
        """Start a frame at the end of ``buffer``; return a token for :meth:`end_frame`."""

    @abstractmethod
    def end_frame(self, buffer: bytearray, start: int) -> None:
        """Finish the frame whose payload was appended since :meth:`begin_frame` returned ``start``.

        Raises:
            SerializeError: as :meth:`frame`. The caller truncates ``buffer`` back.
        """

    @abstractmethod
    def decoder(self, deserialize: Callable[[bytes], T]) -> StreamDecoder[T]:
        """Return a new per-connection decoder that passes each frame to ``deserialize``."""


class LineFramer(Framer):
    """Frames end with a delimiter: ``b"\\n"`` by default, ``b"\\r\\n"`` or any byte string.

    The delimiter is not part of the payload. Payloads that contain the delimiter cannot be
    framed (:class:`SerializeError` on encode): use JSON (which never emits a raw newline),
    text without line breaks, or base64 for binary data.

    Args:
        delimiter: The non-empty byte string that ends every frame.
        max_frame_size: Longest payload accepted, delimiter excluded (default 1 MiB).

    Example::

        LineFramer(b"\\r\\n").frame(b"PING")   # b'PING\\r\\n'
    """

    __slots__ = ("delimiter",)

    def __init__(
        self, delimiter: bytes = b"\n", *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        super().__init__(max_frame_size)
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"delimiter must be non-empty bytes, got {delimiter!r}")
        self.delimiter = delimiter

    def frame(self, payload: bytes) -> bytes:
        framed = payload + self.delimiter
        if framed.find(self.delimiter) != len(payload):
            raise SerializeError(
                f"payload contains the delimiter {self.delimiter!r}: {payload[:64]!r}"
            )
        return framed

    def begin_frame(self, buffer: bytearray) -> int:
        return len(buffer)

    def end_frame(self, buffer: bytearray, start: int) -> None:
        delimiter = self.delimiter
        buffer += delimiter
        if buffer.find(delimiter, start) != len(buffer) - len(delimiter):
            excerpt = bytes(buffer[start : start + 64])
            raise SerializeError(f"payload contains the delimiter {delimiter!r}: {excerpt!r}")

    def decoder(self, deserialize: Callable[[bytes], T]) -> StreamDecoder[T]:
        return _LineDecoder(deserialize, self.max_frame_size, self.delimiter)

    def __repr__(self) -> str:
        return f"LineFramer({self.delimiter!r}, max_frame_size={self.max_frame_size})"


class _LineDecoder(StreamDecoder[T]):
    __slots__ = ("_delim", "_max_pending", "_scan")

    def __init__(
        self, deserialize: Callable[[bytes], T], max_frame_size: int, delimiter: bytes
    ) -> None:
        super().__init__(deserialize, max_frame_size)
        self._delim = delimiter
        # A delimiter-less run this long can no longer end in a frame within the limit.
        self._max_pending = max_frame_size + len(delimiter) - 1
        self._scan = 0  # where the next delimiter search starts

    def _rebased(self, shift: int) -> None:
        # Invariant: pos <= scan <= len(buf), so the shifted scan never goes below 0.
        self._scan -= shift

    def _hint(self, data: bytes) -> str | None:
        return likely_cause(data, framing="line", delimiter=self._delim)

    def __next__(self) -> T:
        buf = self._buf
        pos = self._pos
        end = buf.find(self._delim, self._scan)
        if end < 0:
            pending = len(buf) - pos
            if not pending:
                self._check_usable()
                self._scan = 0
                self._exhausted()
            if pending > self._max_pending:
                raise self._too_large(pending, complete=False)
            # Resume the next search where a delimiter could still start.
            self._scan = max(pos, len(buf) - len(self._delim) + 1)
            raise StopIteration
        size = end - pos
        if size > self._max:
            raise self._too_large(size, complete=True)
        self._pos = self._scan = end + len(self._delim)
        return self._deserialize(
            buf[pos:end] if type(buf) is bytes else bytes(memoryview(buf)[pos:end])
        )


class LengthPrefixFramer(Framer):
    """Frames start with their payload length, a big-endian unsigned integer.

    Args:
        header_size: Size of the length header: 1, 2, 4 (default) or 8 bytes.
        max_frame_size: Largest payload accepted (default 1 MiB, or less when the header
            cannot express it). A header announcing more is refused at once, before any of
            the payload is buffered.

    Example::

        LengthPrefixFramer(header_size=2).frame(b"abc")   # b'\\x00\\x03abc'
    """

    __slots__ = ("_limit", "_struct", "header_size")

    _FORMATS: Final = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}

    def __init__(self, header_size: int = 4, *, max_frame_size: int | None = None) -> None:
        try:
            if type(header_size) is not int:  # reject True, 4.0...
                raise KeyError(header_size)
            fmt = self._FORMATS[header_size]
        except KeyError:
            raise ValueError(f"header_size must be 1, 2, 4 or 8, got {header_size!r}") from None
        limit = (1 << (8 * header_size)) - 1
        if max_frame_size is None:
            max_frame_size = min(DEFAULT_MAX_FRAME_SIZE, limit)
        elif max_frame_size > limit:
            raise ValueError(
                f"a {header_size}-byte header cannot express max_frame_size={max_frame_size}"
            )
        super().__init__(max_frame_size)
        self.header_size = header_size
        self._struct = struct.Struct(fmt)
        self._limit = limit

    def frame(self, payload: bytes) -> bytes:
        if len(payload) > self._limit:
            raise SerializeError(
                f"payload of {len(payload)} bytes does not fit a {self.header_size}-byte header"
            )
        return self._struct.pack(len(payload)) + payload

    def begin_frame(self, buffer: bytearray) -> int:
        start = len(buffer)
        buffer += bytes(self.header_size)
        return start

    def end_frame(self, buffer: bytearray, start: int) -> None:
        size = len(buffer) - start - self.header_size
        if size > self._limit:
            raise SerializeError(
                f"payload of {size} bytes does not fit a {self.header_size}-byte header"
            )
        self._struct.pack_into(buffer, start, size)

    def decoder(self, deserialize: Callable[[bytes], T]) -> StreamDecoder[T]:
        return _LengthPrefixDecoder(deserialize, self.max_frame_size, self._struct)

    def __repr__(self) -> str:
        return (
            f"LengthPrefixFramer(header_size={self.header_size}, "
            f"max_frame_size={self.max_frame_size})"
        )


class _LengthPrefixDecoder(StreamDecoder[T]):
    __slots__ = ("_hsize", "_unpack_from")

    def __init__(
        self, deserialize: Callable[[bytes], T], max_frame_size: int, header: struct.Struct
    ) -> None:
        super().__init__(deserialize, max_frame_size)
        self._unpack_from = header.unpack_from
        self._hsize = header.size

    def _hint(self, data: bytes) -> str | None:
        return likely_cause(data, framing="length-prefix")

    def __next__(self) -> T:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < self._hsize:
            if not available:
                self._check_usable()
                self._exhausted()
            raise StopIteration
        (size,) = self._unpack_from(buf, pos)
        if size > self._max:
            raise self._too_large(size, complete=True)
        start = pos + self._hsize
        end = start + size
        if end > len(buf):
            raise StopIteration
        self._pos = end
        return self._deserialize(
            buf[start:end] if type(buf) is bytes else bytes(memoryview(buf)[start:end])
        )


class FixedSizeFramer(Framer):
    """Every frame is exactly ``size`` bytes (fixed binary records, e.g. with StructSerializer).

    Args:
        size: The size of every frame, in bytes.

    Example::

        serializer = StructSerializer("If")
        protocol = StreamProtocol(serializer, FixedSizeFramer(serializer.size))
    """

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        super().__init__(size)
        self.size = size

    def frame(self, payload: bytes) -> bytes:
        if len(payload) != self.size:
            raise SerializeError(
                f"payload of {len(payload)} bytes, but frames are {self.size} bytes"
            )
        return payload

    def begin_frame(self, buffer: bytearray) -> int:
        return len(buffer)

    def end_frame(self, buffer: bytearray, start: int) -> None:
        if len(buffer) - start != self.size:
            raise SerializeError(
                f"payload of {len(buffer) - start} bytes, but frames are {self.size} bytes"
            )

    def decoder(self, deserialize: Callable[[bytes], T]) -> StreamDecoder[T]:
        return _FixedSizeDecoder(deserialize, self.size)

    def __repr__(self) -> str:
        return f"FixedSizeFramer({self.size})"


class _FixedSizeDecoder(StreamDecoder[T]):
    __slots__ = ()

    def __next__(self) -> T:
        buf = self._buf
        pos = self._pos
        end = pos + self._max
        if end > len(buf):
            if pos == len(buf):
                self._check_usable()
                self._exhausted()
            raise StopIteration
        self._pos = end
        return self._deserialize(
            buf[pos:end] if type(buf) is bytes else bytes(memoryview(buf)[pos:end])
        )


# -- JSON documents written back to back ----------------------------------------------------------

# Everything up to the next bracket or quote, complete strings included (escapes skipped): the
# stretch of a JSON document the scanner does not have to look at byte by byte.
_JSON_SKIP: Final = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
# The rest of a string's body: stops at its closing quote, at the end of the data, or at a
# backslash that is the last byte (its escaped byte has not arrived yet).
_JSON_STRING_BODY: Final = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
# A top-level number or literal ends at the first byte that cannot be part of one.
_JSON_SCALAR: Final = re.compile(rb"[-+.0-9A-Za-z]*+")
_JSON_WHITESPACE: Final = re.compile(rb"[ \t\n\r]*+")
_JSON_SCALAR_STARTS: Final = frozenset(b"-0123456789tfn")
_QUOTE: Final = ord('"')
_OPENERS: Final = frozenset(b"{[")
# A closer is its opener + 2 in ASCII: "{" 0x7B / "}" 0x7D, "[" 0x5B / "]" 0x5D.
_CLOSER_OFFSET: Final = 2

# What the decoder is in the middle of.
_BETWEEN: Final = 0  # between documents (whitespace is skipped)
_NESTED: Final = 1  # an object, an array or a string (brackets counted, strings skipped)
_SCALAR: Final = 2  # a number or a literal


class _Unbalanced(Exception):
    """A closing bracket that does not match the innermost open one (at ``index``)."""

    def __init__(self, index: int, expected: int, found: int) -> None:
        super().__init__(index, expected, found)
        self.index = index
        self.expected = expected
        self.found = found


def _scan_nested(
    data: bytes | bytearray, index: int, stack: bytearray, in_string: bool
) -> tuple[int, int, bool]:
    """Follow an object, array or top-level string from ``index``.

    ``stack`` holds the closing bracket expected at each open level (innermost last; empty for
    a top-level string) and is updated in place; ``in_string`` says whether ``index`` is
    inside a string. Returns ``(end, index, in_string)``: ``end`` is the offset just past the
    document, or -1 when the data ends first, and then ``index`` and ``in_string`` are where
    to resume once more data is there (the data before ``index`` is never looked at again).

    Raises:
        _Unbalanced: a closing bracket does not match the innermost open one.
    """
    size = len(data)
    skip = _JSON_SKIP.match
    string_body = _JSON_STRING_BODY.match
    while True:
        if in_string:
            index = string_body(data, index).end()  # type: ignore[union-attr]  # always matches
            if index == size or data[index] != _QUOTE:
                return -1, index, True  # the data ends in the string (or in an escape)
            index += 1
            in_string = False
            if not stack:
                return index, index, False  # a top-level string
        index = skip(data, index).end()  # type: ignore[union-attr]  # always matches
        if index == size:
            return -1, index, False
        byte = data[index]
        index += 1
        if byte == _QUOTE:
            in_string = True  # a string that the data ends in (or SKIP would have taken it)
        elif byte in _OPENERS:
            stack.append(byte + _CLOSER_OFFSET)
        else:
            expected = stack.pop()
            if byte != expected:
                raise _Unbalanced(index - 1, expected, byte)
            if not stack:
                return index, index, False


class JSONDocumentFramer(Framer):
    """Frames are JSON documents written back to back: no delimiter, no length header.

    The decoder follows the JSON syntax to find where each document ends, so it reads what
    JSON streaming peers write (``{"a":1}{"b":2}[3]``, pretty-printed documents, any JSON
    whitespace between documents) as well as JSON lines. Pair it with
    :class:`~protocols.JSONSerializer`.

    What a document is, on the way in:

    - an object or an array: it ends at the bracket that closes the first one. Brackets
      inside strings, and escaped quotes (``"a \\"quoted\\" [word]"``), are skipped.
    - a string: it ends at its closing (unescaped) quote.
    - a number, ``true``, ``false`` or ``null``: it ends at the first byte that cannot be part
      of one (whitespace, a bracket, a quote...). A number at the very end of what was received
      may still go on (``12`` then ``3``), so it is decoded only once the byte after it arrives:
      peers must follow a top-level number or literal with whitespace (as this framer does),
      unlike objects, arrays and strings, which end by themselves.

    Whitespace between documents (space, tab, CR, LF) is skipped and is not part of the frame.
    A document is checked for its structure only (brackets, quotes): the deserializer parses it,
    and a malformed one is a :class:`~protocols.DeserializeError` that leaves the decoder in
    sync, as with any framer.

    Errors that break the stream (:class:`~protocols.FramingError`, then the decoder refuses
    further use): a document that cannot start with the byte found (``}``, ``,``, a control
    byte, a TLS or HTTP greeting: the error names the likely cause), a closing bracket that
    does not match the open one (``{"a": [1}``), and a document longer than
    ``max_frame_size`` (:class:`~protocols.FrameTooLargeError`, raised as soon as the part
    received exceeds it, so a document that never ends costs at most ``max_frame_size`` of
    memory).

    On the way out, every document is followed by a newline (``b"\\n"``): a number needs a
    separator anyway, and the output is then also valid JSON lines, readable by a peer that
    uses :class:`~protocols.LineFramer`. :meth:`frame` refuses (:class:`SerializeError`) a
    payload that is not exactly one document by the rules above (empty, leading whitespace,
    unbalanced brackets, an unterminated string, bytes after the document), so what is sent
    is always decoded as sent. JSONSerializer's output always qualifies.

    This framer is pure Python on both engines: the compiled engine's decoders are for
    :class:`LineFramer`, :class:`LengthPrefixFramer` and :class:`FixedSizeFramer` only.

    Args:
        max_frame_size: Largest document accepted, surrounding whitespace excluded (default
            1 MiB).

    Example::

        protocol = StreamProtocol(JSONSerializer(), JSONDocumentFramer())
        decoder = protocol.decoder()
        decoder.feed(b'{"id": 1}{"id": 2}\\n[3, "]"] "four" 5\\n')
        list(decoder)                 # [{'id': 1}, {'id': 2}, [3, ']'], 'four', 5]
        protocol.encode({"id": 1})    # b'{"id":1}\\n'
    """

    __slots__ = ()

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        super().__init__(max_frame_size)

    def frame(self, payload: bytes) -> bytes:
        _check_json_document(payload)
        return payload + b"\n"

    def begin_frame(self, buffer: bytearray) -> int:
        return len(buffer)

    def end_frame(self, buffer: bytearray, start: int) -> None:
        _check_json_document(buffer, start)
        buffer += b"\n"

    def decoder(self, deserialize: Callable[[bytes], T]) -> StreamDecoder[T]:
        return _JSONDocumentDecoder(deserialize, self.max_frame_size)

    def __repr__(self) -> str:
        return f"JSONDocumentFramer(max_frame_size={self.max_frame_size})"


def _check_json_document(data: bytes | bytearray, start: int = 0) -> None:
    """Raise SerializeError unless ``data[start:]`` is exactly one document for the decoder."""
    size = len(data)
    excerpt = bytes(data[start : start + 64])
    if start == size:
        raise SerializeError("empty payload: a JSON document cannot be empty")
    first = data[start]
    try:
        if first in _OPENERS:
            stack = bytearray((first + _CLOSER_OFFSET,))
            end, _, _ = _scan_nested(data, start + 1, stack, False)
        elif first == _QUOTE:
            end, _, _ = _scan_nested(data, start + 1, bytearray(), True)
        elif first in _JSON_SCALAR_STARTS:
            end = _JSON_SCALAR.match(data, start).end()  # type: ignore[union-attr]
        else:
            raise SerializeError(
                f"payload does not start with a JSON value ({bytes((first,))!r}): {excerpt!r}"
            )
    except _Unbalanced as exc:
        raise SerializeError(
            f"unbalanced JSON: {chr(exc.found)!r} at offset {exc.index - start} where "
            f"{chr(exc.expected)!r} should close: {excerpt!r}"
        ) from None
    if end < 0:
        raise SerializeError(f"payload is an unfinished JSON document: {excerpt!r}")
    if end != size:
        raise SerializeError(
            f"payload has bytes after its JSON document (from offset {end - start}): {excerpt!r}"
        )


class _JSONDocumentDecoder(StreamDecoder[T]):
    __slots__ = ("_in_string", "_scan", "_stack", "_state")

    def __init__(self, deserialize: Callable[[bytes], T], max_frame_size: int) -> None:
        super().__init__(deserialize, max_frame_size)
        self._state = _BETWEEN
        self._stack = bytearray()  # the closing brackets expected, innermost last
        self._in_string = False
        self._scan = 0  # where the scan of the current document resumes

    def _rebased(self, shift: int) -> None:
        # Invariant while in a document: pos <= scan <= len(buf).
        self._scan -= shift

    def _reset(self) -> None:
        self._state = _BETWEEN
        self._stack.clear()
        self._in_string = False
        self._scan = 0

    def close(self) -> None:
        super().close()
        self._reset()

    def _too_large(self, size: int, *, complete: bool) -> FrameTooLargeError:
        error = super()._too_large(size, complete=complete)
        self._reset()
        return error

    def _out_of_sync(self, what: str) -> FramingError:
        """Break the decoder: the stream cannot be cut into documents from here on."""
        head = self.peek()
        hint = self._hint(head)
        advice = "" if hint is None else f" (hint: {hint})"
        error = FramingError(
            f"not a stream of JSON documents: {what}; the stream is out of sync at "
            f"{head[:16]!r}{advice}"
        )
        self._broken = error
        self._buf = b""
        self._pos = 0
        self._reset()
        return error

    def __next__(self) -> T:
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if self._state == _BETWEEN:
            pos = self._pos = _JSON_WHITESPACE.match(buf, pos).end()  # type: ignore[union-attr]
            if pos == size:
                self._check_usable()
                self._scan = 0
                self._exhausted()
            first = buf[pos]
            self._scan = pos + 1
            if first in _OPENERS:
                self._state = _NESTED
                self._stack.append(first + _CLOSER_OFFSET)
            elif first == _QUOTE:
                self._state = _NESTED
                self._in_string = True
            elif first in _JSON_SCALAR_STARTS:
                self._state = _SCALAR
            else:
                raise self._out_of_sync(
                    f"{bytes((first,))!r} cannot start a JSON value (an object, array, "
                    "string, number, true, false or null)"
                )
        if self._state == _SCALAR:
            end = _JSON_SCALAR.match(buf, self._scan).end()  # type: ignore[union-attr]
            if end == size:
                self._scan = end
                end = -1
        else:
            try:
                end, self._scan, self._in_string = _scan_nested(
                    buf, self._scan, self._stack, self._in_string
                )
            except _Unbalanced as exc:
                raise self._out_of_sync(
                    f"{chr(exc.found)!r} at offset {exc.index - pos} of a document, where "
                    f"{chr(exc.expected)!r} should close"
                ) from None
        if end < 0:
            pending = size - pos
            if not pending:
                self._check_usable()
            if pending > self._max:
                raise self._too_large(pending, complete=False)
            raise StopIteration
        length = end - pos
        if length > self._max:
            raise self._too_large(length, complete=True)
        self._pos = self._scan = end
        self._state = _BETWEEN
        return self._deserialize(
            buf[pos:end] if type(buf) is bytes else bytes(memoryview(buf)[pos:end])
        )
