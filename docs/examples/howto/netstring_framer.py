"""A framer of your own: netstrings (``5:hello,``), a length in ASCII digits, then the payload.

A framer is configuration (shared by every connection) with three jobs: frame one payload
(``frame``), frame into a caller's buffer (``begin_frame`` / ``end_frame``, used to batch
replies), and make the per-connection decoder (``decoder``). The decoder subclasses
`protocols.StreamDecoder`, which keeps the received bytes: ``self._buf`` (``bytes`` or
``bytearray``) from offset ``self._pos``. Its ``__next__`` returns the next message or raises
``StopIteration`` for "need more data", as the built-in decoders do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import server_framework as sf
from protocols import DEFAULT_MAX_FRAME_SIZE, StreamDecoder  # for framer authors: not on sf

T = TypeVar("T")

#: The longest length prefix we accept, in digits (enough for max_frame_size).
MAX_DIGITS = 10


class NetstringFramer(sf.Framer):
    """Frames as ``<length>:<payload>,`` (https://cr.yp.to/proto/netstrings.txt)."""

    __slots__ = ()

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        super().__init__(max_frame_size)

    def frame(self, payload: bytes) -> bytes:
        return b"%d:%b," % (len(payload), payload)

    def begin_frame(self, buffer: bytearray) -> int:
        # The length is only known once the payload is written: remember where it starts.
        return len(buffer)

    def end_frame(self, buffer: bytearray, start: int) -> None:
        size = len(buffer) - start
        buffer[start:start] = b"%d:" % size  # insert the header before the payload
        buffer += b","

    def decoder(self, deserialize: Callable[[bytes], T]) -> StreamDecoder[T]:
        return _NetstringDecoder(deserialize, self.max_frame_size)


class _NetstringDecoder(StreamDecoder[T]):
    __slots__ = ()

    def __next__(self) -> T:
        self._check_usable()  # raises FramingError after an earlier framing error
        buf, pos = self._buf, self._pos
        colon = buf.find(b":", pos, pos + MAX_DIGITS + 1)
        if colon < 0:
            if len(buf) - pos > MAX_DIGITS:
                raise self._broken_by(f"no ':' within {MAX_DIGITS} bytes")
            if pos == len(buf):
                self._exhausted()  # everything consumed: drops the buffer, stops iteration
            raise StopIteration  # need more data
        digits = bytes(buf[pos:colon])
        if not digits.isdigit():
            raise self._broken_by(f"bad length {digits[:MAX_DIGITS]!r}")
        size = int(digits)
        if size > self._max:
            # A complete header says the frame is too large: refuse before buffering it.
            raise self._too_large(size, complete=True)
        end = colon + 1 + size
        if len(buf) <= end:
            raise StopIteration  # the payload or the final comma is still on its way
        if buf[end : end + 1] != b",":
            raise self._broken_by("missing ',' after the payload")
        self._pos = end + 1  # consume the frame before deserializing (errors keep us in sync)
        return self._deserialize(bytes(buf[colon + 1 : end]))

    def _broken_by(self, reason: str) -> sf.FramingError:
        error = sf.FramingError(f"malformed netstring: {reason}")
        self._broken = error
        self._buf, self._pos = b"", 0
        return error
