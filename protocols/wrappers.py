"""Serializer wrappers: transform the payload of another serializer (base64, compression).

Base64 may carry a checksum: a SHA-256 digest, or an HMAC-SHA256 signature with a shared key,
appended to the payload before encoding and checked in constant time on decoding.

Compression wrappers bound decompression: a payload that would inflate past ``max_size``
(1 MiB by default) raises :class:`DeserializeError` after producing at most ``max_size + 1``
bytes, so a 10 KiB "bomb" costs 1 MiB of work and memory, never a gigabyte.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import hashlib
import hmac
import lzma
import secrets
import zlib
from collections.abc import Callable
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

#: The size of a SHA-256 digest, and so of the checksum a Base64Wrapper appends.
_DIGEST_SIZE = 32
#: The shortest signing key Base64Wrapper accepts (128 bits); 32 bytes are recommended.
_MIN_KEY_SIZE = 16

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
        checksum: ``False`` (the default): the payload alone. ``True``: append its SHA-256
            digest, which detects corruption (not tampering: anyone can recompute it).
            A ``bytes`` key (at least 16 bytes; 32 random bytes recommended, see
            :meth:`generate_key`): append the HMAC-SHA256 of the payload under that key,
            which only holders of the key can produce: the receiver knows the message comes
            from one of them, unaltered. It is not encryption: the payload stays readable.

    Decoding is strict: any character outside the alphabet, or bad padding, is a
    :class:`DeserializeError`. With a checksum, the message is
    ``base64(payload + digest)``, the digest being the 32 bytes of SHA-256 or HMAC-SHA256
    over the payload (EasyNetwork's ``Base64EncoderSerializer`` uses the same layout, so
    with the same key and alphabet the two interoperate; its keys are URL-safe base64 text:
    pass ``base64.urlsafe_b64decode(key)``). The digest is checked with
    :func:`hmac.compare_digest` (constant time) before the inner serializer sees the payload;
    a message too short to hold one, or whose digest does not match (altered, truncated, or
    signed with another key), is a :class:`DeserializeError` that says so.

    Example::

        key = Base64Wrapper.generate_key()      # share it with the peer, keep it secret
        serializer = Base64Wrapper(MsgPackSerializer(), checksum=key)
        protocol = StreamProtocol(serializer, LineFramer())
    """

    __slots__ = ("_altchars", "_checksum", "_checksum_name")

    def __init__(
        self,
        serializer: Serializer[SendT, RecvT],
        *,
        urlsafe: bool = False,
        checksum: bool | bytes = False,
    ) -> None:
        super().__init__(serializer)
        self._altchars = b"-_" if urlsafe else None
        self._checksum: Callable[[bytes], bytes] | None
        if checksum is False or checksum is None:
            self._checksum = None
            self._checksum_name = ""
        elif checksum is True:
            self._checksum = _sha256
            self._checksum_name = "SHA-256"
        elif isinstance(checksum, bytes | bytearray):
            if len(checksum) < _MIN_KEY_SIZE:
                raise ValueError(
                    f"a checksum key must be at least {_MIN_KEY_SIZE} bytes, got "
                    f"{len(checksum)} (Base64Wrapper.generate_key() makes one)"
                )
            self._checksum = _hmac_sha256(bytes(checksum))
            self._checksum_name = "HMAC-SHA256"
        else:
            raise TypeError(
                f"checksum must be True, False or a bytes key, got {type(checksum).__name__}"
            )

    @staticmethod
    def generate_key() -> bytes:
        """Return a new random 32-byte key for ``checksum=`` (from :mod:`secrets`).

        Both ends need the same key; keep it out of the source code and the logs.
        """
        return secrets.token_bytes(_DIGEST_SIZE)

    def _encode(self, payload: bytes) -> bytes:
        if self._checksum is not None:
            payload += self._checksum(payload)
        return base64.b64encode(payload, self._altchars)

    def _decode(self, data: bytes) -> bytes:
        checked = " (the checksum could not be verified)" if self._checksum is not None else ""
        if self._altchars is not None and (b"+" in data or b"/" in data):
            raise DeserializeError(
                f"invalid base64{checked}: '+' or '/' outside the URL-safe alphabet", data
            )
        try:
            decoded = base64.b64decode(data, self._altchars, validate=True)
        except binascii.Error as exc:
            raise DeserializeError(f"invalid base64{checked}: {exc}", data) from exc
        checksum = self._checksum
        if checksum is None:
            return decoded
        if len(decoded) < _DIGEST_SIZE:
            raise DeserializeError(
                f"{self._checksum_name} checksum missing: {len(decoded)} bytes decoded, fewer "
                f"than the {_DIGEST_SIZE}-byte checksum (a truncated message, or no checksum "
                "on the sending side)",
                data,
            )
        payload = decoded[:-_DIGEST_SIZE]
        if not hmac.compare_digest(checksum(payload), decoded[-_DIGEST_SIZE:]):
            raise DeserializeError(
                f"{self._checksum_name} checksum mismatch: the message was altered or truncated"
                + (", or signed with another key" if self._checksum is not _sha256 else ""),
                data,
            )
        return payload


def _sha256(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def _hmac_sha256(key: bytes) -> Callable[[bytes], bytes]:
    digest = hmac.digest

    def sign(payload: bytes) -> bytes:
        return digest(key, payload, "sha256")

    return sign


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
