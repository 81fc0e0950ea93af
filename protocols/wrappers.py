"""Serializer wrappers: transform the payload of another serializer (base64, compression).

Compression wrappers bound decompression: a payload that would inflate past ``max_size``
(1 MiB by default) raises :class:`DeserializeError` after producing at most ``max_size + 1``
bytes, so a 10 KiB "bomb" costs 1 MiB of work and memory, never a gigabyte.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import lzma
import zlib
from typing import Any, Generic, Protocol, TypeVar

from .exceptions import DeserializeError
from .serializers import Serializer

__all__ = [
    "BZ2Wrapper",
    "Base64Wrapper",
    "LZMAWrapper",
    "ZlibWrapper",
]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")

#: Default bound on a decompressed payload, the same as the framers' default frame size.
DEFAULT_MAX_DECOMPRESSED_SIZE = 1024 * 1024


class _Wrapper(Serializer[SendT, RecvT], Generic[SendT, RecvT]):
    __slots__ = ("_inner",)

    def __init__(self, serializer: Serializer[SendT, RecvT]) -> None:
        self._inner = serializer

    @property
    def wrapped(self) -> Serializer[SendT, RecvT]:
        """The serializer whose payloads this one transforms."""
        return self._inner

    def serialize(self, obj: SendT) -> bytes:
        return self._encode(self._inner.serialize(obj))

    def deserialize(self, data: bytes) -> RecvT:
        return self._inner.deserialize(self._decode(data))

    def _encode(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def _decode(self, data: bytes) -> bytes:
        raise NotImplementedError


class Base64Wrapper(_Wrapper[SendT, RecvT]):
    """Base64-encode the payloads of ``serializer``: binary formats over a text channel.

    Args:
        serializer: The serializer whose payloads are encoded.
        urlsafe: Use the URL-safe alphabet (``-_`` instead of ``+/``).

    Decoding is strict: any character outside the alphabet, or bad padding, is a
    :class:`DeserializeError`.
    """

    __slots__ = ("_altchars",)

    def __init__(self, serializer: Serializer[SendT, RecvT], *, urlsafe: bool = False) -> None:
        super().__init__(serializer)
        self._altchars = b"-_" if urlsafe else None

    def _encode(self, payload: bytes) -> bytes:
        return base64.b64encode(payload, self._altchars)

    def _decode(self, data: bytes) -> bytes:
        if self._altchars is not None and (b"+" in data or b"/" in data):
            raise DeserializeError("invalid base64: '+' or '/' outside the URL-safe alphabet", data)
        try:
            return base64.b64decode(data, self._altchars, validate=True)
        except binascii.Error as exc:
            raise DeserializeError(f"invalid base64: {exc}", data) from exc


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


class _CompressionWrapper(_Wrapper[SendT, RecvT]):
    __slots__ = ("_max_size",)
    _name = ""

    def __init__(self, serializer: Serializer[SendT, RecvT], max_size: int) -> None:
        super().__init__(serializer)
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self._max_size = max_size

    @property
    def max_size(self) -> int:
        """The largest decompressed payload accepted, in bytes."""
        return self._max_size

    def _decompressor(self) -> _Decompressor:
        raise NotImplementedError

    def _decode(self, data: bytes) -> bytes:
        decompressor = self._decompressor()
        try:
            # Asking for one byte more than allowed tells "exactly at the limit" from "over it".
            result = decompressor.decompress(data, self._max_size + 1)
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
            raise DeserializeError(f"invalid {self._name} data: {exc}", data) from exc
        if len(result) > self._max_size:
            raise DeserializeError(
                f"{self._name} payload inflates past max_size={self._max_size} bytes", data
            )
        if not decompressor.eof:
            raise DeserializeError(f"truncated {self._name} data", data)
        if decompressor.unused_data:
            raise DeserializeError(f"trailing bytes after the {self._name} stream", data)
        return result


class ZlibWrapper(_CompressionWrapper[SendT, RecvT]):
    """Compress the payloads of ``serializer`` with zlib (DEFLATE with the zlib header).

    Args:
        serializer: The serializer whose payloads are compressed.
        level: Compression level, 0-9 (-1: zlib's default, 6).
        max_size: Largest decompressed payload accepted (default 1 MiB); beyond it,
            :class:`DeserializeError`.
    """

    __slots__ = ("_level",)
    _name = "zlib"

    def __init__(
        self,
        serializer: Serializer[SendT, RecvT],
        *,
        level: int = -1,
        max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
    ) -> None:
        super().__init__(serializer, max_size)
        self._level = level

    def _encode(self, payload: bytes) -> bytes:
        return zlib.compress(payload, self._level)

    def _decompressor(self) -> _Decompressor:
        return _ZlibDecompressor()


class _ZlibDecompressor:
    """zlib's decompress object, with the ``max_length`` keyword spelled like bz2's and lzma's."""

    __slots__ = ("_obj",)

    def __init__(self) -> None:
        self._obj: Any = zlib.decompressobj()

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._obj.unused_data)

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        result: bytes = self._obj.decompress(data, max_length)
        return result


class BZ2Wrapper(_CompressionWrapper[SendT, RecvT]):
    """Compress the payloads of ``serializer`` with bzip2.

    Args:
        serializer: The serializer whose payloads are compressed.
        level: Compression level, 1-9.
        max_size: Largest decompressed payload accepted (default 1 MiB).
    """

    __slots__ = ("_level",)
    _name = "bz2"

    def __init__(
        self,
        serializer: Serializer[SendT, RecvT],
        *,
        level: int = 9,
        max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
    ) -> None:
        super().__init__(serializer, max_size)
        self._level = level

    def _encode(self, payload: bytes) -> bytes:
        return bz2.compress(payload, self._level)

    def _decompressor(self) -> _Decompressor:
        return bz2.BZ2Decompressor()


class LZMAWrapper(_CompressionWrapper[SendT, RecvT]):
    """Compress the payloads of ``serializer`` with LZMA (the ``.xz`` container).

    Args:
        serializer: The serializer whose payloads are compressed.
        preset: Compression preset, 0-9.
        max_size: Largest decompressed payload accepted (default 1 MiB).
        memlimit: Most memory the decoder may use, in bytes (default 32 MiB). The ``.xz``
            header chooses the dictionary size, so without this bound a 100-byte message
            could make the decoder allocate 1.5 GiB. Presets up to 7 fit the default.
    """

    __slots__ = ("_memlimit", "_preset")
    _name = "lzma"

    def __init__(
        self,
        serializer: Serializer[SendT, RecvT],
        *,
        preset: int = 6,
        max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
        memlimit: int = 32 * 1024 * 1024,
    ) -> None:
        super().__init__(serializer, max_size)
        self._preset = preset
        self._memlimit = memlimit

    def _encode(self, payload: bytes) -> bytes:
        return lzma.compress(payload, preset=self._preset)

    def _decompressor(self) -> _Decompressor:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=self._memlimit)
