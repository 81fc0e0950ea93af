"""Errors of the wire layer.

Everything a peer can do wrong with bytes is a :class:`ProtocolError`: a message that does not
deserialize (:class:`DeserializeError`), or a stream whose framing is broken (:class:`FramingError`,
of which :class:`FrameTooLargeError` is the common case). A server catches ``ProtocolError`` and
decides per connection; it never has to know which serializer or framer raised it.

Encoding an object of our own that cannot be encoded is not the peer's fault: that is a
:class:`SerializeError`, a :class:`ValueError`, and it is not a ``ProtocolError``.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "DeserializeError",
    "FrameTooLargeError",
    "FramingError",
    "ProtocolError",
    "SerializeError",
]

#: How many bytes of the offending input an error message quotes.
EXCERPT_SIZE = 64


def excerpt(data: bytes | bytearray | memoryview, limit: int = EXCERPT_SIZE) -> bytes:
    """Return at most ``limit`` leading bytes of ``data``, for error messages."""
    return bytes(data[:limit])


class ProtocolError(Exception):
    """A peer sent bytes that do not form a valid message (base of all wire-layer input errors)."""


class DeserializeError(ProtocolError):
    """A complete message could not be turned into an object.

    The stream, if any, is still in sync: the next message can be decoded.

    Attributes:
        reason: What was wrong, in words (for typed decoding, msgspec's path to the bad field).
        data: A truncated excerpt (at most 64 bytes) of the offending message.
    """

    def __init__(self, reason: str, data: bytes | bytearray | memoryview = b"") -> None:
        self.reason = reason
        self.data = excerpt(data)
        truncated = "..." if len(data) > EXCERPT_SIZE else ""
        message = (
            f"{reason} (message of {len(data)} bytes: {self.data!r}{truncated})" if data else reason
        )
        super().__init__(message)


class FramingError(ProtocolError):
    """The byte stream cannot be split into frames any more; the connection should be closed."""


class FrameTooLargeError(FramingError):
    """A frame, or the part of one received so far, is over the framer's ``max_frame_size``.

    Raised as soon as the size is known to be too large (from a length header, or once the
    pending bytes exceed the limit without a delimiter), before the frame is buffered.

    When the frame's first bytes point to another cause than a large frame (text where a
    length header should be, a TLS handshake, an HTTP request: see
    :func:`protocols.diagnostics.likely_cause`), the decoders pass it as ``hint`` and the
    message gives it instead of advising to raise ``max_frame_size``.

    Attributes:
        size: The frame's size in bytes, or the pending size when the frame is incomplete.
        limit: The ``max_frame_size`` that was exceeded.
        complete: False if ``size`` counts only the part of the frame received so far.
        hint: The likely cause, when the bytes suggest one (else None).
    """

    def __init__(
        self, size: int, limit: int, *, complete: bool = True, hint: str | None = None
    ) -> None:
        self.size = size
        self.limit = limit
        self.complete = complete
        self.hint = hint
        what = "frame of" if complete else "incomplete frame already"
        advice = (
            "; raise the framer's max_frame_size if such frames are legitimate"
            if hint is None
            else f" (hint: {hint})"
        )
        super().__init__(f"{what} {size} bytes is over max_frame_size={limit}{advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = functools.partial(type(self), complete=self.complete, hint=self.hint)
        return (rebuild, (self.size, self.limit))


class SerializeError(ValueError):
    """An object of ours could not be serialized or framed (a bug or an unsupported value)."""
