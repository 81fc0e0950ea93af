"""The wire layer of server_framework: bytes in, objects out, and back. No I/O at all.

- Serializers turn one message into bytes and back (JSON, MessagePack, text, struct records,
  pickle, CBOR), optionally wrapped (base64, with a SHA-256 or HMAC-SHA256 checksum if asked;
  zlib, bz2, lzma with bounded decompression), or stapled (one format to send, another to
  receive).
- Framers cut a byte stream into frames (lines, length prefixes, fixed-size records, JSON
  documents written back to back), with a ``max_frame_size`` on every one.
- :class:`StreamProtocol` and :class:`DatagramProtocol` put them together, with an optional
  :class:`Converter` to application types.
- Every bad input is a :class:`ProtocolError`; :mod:`protocols.diagnostics` names the likely
  cause of bytes that do not parse (TLS or HTTP where plaintext was expected, text where a
  length header was...), for the errors and log lines that report them.

Example::

    from protocols import JSONSerializer, StreamProtocol

    protocol = StreamProtocol(JSONSerializer())
    decoder = protocol.decoder()
    decoder.feed(protocol.encode({"id": 1}) + protocol.encode({"id": 2}))
    assert list(decoder) == [{"id": 1}, {"id": 2}]
"""

from .diagnostics import SNIFF_SIZE, likely_cause
from .exceptions import (
    DeserializeError,
    FrameTooLargeError,
    FramingError,
    ProtocolError,
    SerializeError,
)
from .framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FixedSizeFramer,
    Framer,
    JSONDocumentFramer,
    LengthPrefixFramer,
    LineFramer,
    StreamDecoder,
)
from .protocol import Converter, DatagramProtocol, StreamProtocol
from .proxy import (
    PP2Type,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
    TrustedProxies,
    build_v1,
    build_v2,
    crc32c,
)
from .serializers import (
    BytesSerializer,
    CBORSerializer,
    JSONSerializer,
    MsgPackSerializer,
    NamedTupleSerializer,
    PickleSerializer,
    Serializer,
    StapledSerializer,
    StringSerializer,
    StructSerializer,
)
from .wrappers import Base64Wrapper, BZ2Wrapper, LZMAWrapper, ZlibWrapper

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "SNIFF_SIZE",
    "BZ2Wrapper",
    "Base64Wrapper",
    "BytesSerializer",
    "CBORSerializer",
    "Converter",
    "DatagramProtocol",
    "DeserializeError",
    "FixedSizeFramer",
    "FrameTooLargeError",
    "Framer",
    "FramingError",
    "JSONDocumentFramer",
    "JSONSerializer",
    "LZMAWrapper",
    "LengthPrefixFramer",
    "LineFramer",
    "MsgPackSerializer",
    "NamedTupleSerializer",
    "PP2Type",
    "PickleSerializer",
    "ProtocolError",
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxyProtocolError",
    "SerializeError",
    "Serializer",
    "StapledSerializer",
    "StreamDecoder",
    "StreamProtocol",
    "StringSerializer",
    "StructSerializer",
    "TrustedProxies",
    "ZlibWrapper",
    "build_v1",
    "build_v2",
    "crc32c",
    "likely_cause",
]
