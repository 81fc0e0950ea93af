"""HAProxy's PROXY protocol, versions 1 and 2: parse the header a proxy puts before a connection.

A load balancer that relays a connection (HAProxy ``send-proxy``, AWS NLB, nginx
``proxy_protocol``, stunnel...) first sends one header telling the original client's address;
the application's bytes follow. This module reads that header, sans-IO: feed it what the socket
produced until it returns a :class:`ProxyHeader`, then hand :meth:`ProxyHeaderParser.remaining`
to the application. It also writes headers (:func:`build_v1`, :func:`build_v2`) and holds the
one check of who may send them (:class:`TrustedProxies`).

The specification is HAProxy's ``doc/proxy-protocol.txt`` (version 2020/03/05).

Strategy:

- **Reject as soon as the bytes show it.** The first byte picks the version (``P`` for the v1
  text line, ``\\r`` for the v2 signature); every further byte of the ``PROXY `` prefix or of the
  12-byte v2 signature is compared as it arrives; the v2 version/command byte, family byte and
  declared length are checked as soon as each is in, so a v2 header announcing 65535 bytes is
  refused after 16 bytes, before anything is buffered for it.
- **Bounded.** A v1 line is at most 107 bytes with its CRLF (the spec's worst case); a v2
  header at most :data:`V2_MAX_HEADER_SIZE` (4096) bytes. Nothing longer is ever kept, so a
  peer trickling bytes holds at most 4 KiB per connection.
- **Decode only complete headers.** Fields are decoded once the CRLF (v1) or the declared
  length (v2) is in, as the spec requires, from one ``bytes`` object; the bytes after the header
  are returned untouched by :meth:`~ProxyHeaderParser.remaining`.
- **Strict where the spec is.** v1: one space between fields, dotted-quad IPv4 without leading
  zeros, IPv6 checked by :mod:`ipaddress` (no zone id), decimal ports 0-65535 without leading
  zeros or sign, CRLF and never a bare LF. v2: version 2 only, commands LOCAL and PROXY only,
  address lengths consistent with the family, TLVs exactly filling the header, PP2_TYPE_CRC32C
  verified when present.
- **Lenient where the spec says so.** ``PROXY UNKNOWN`` ignores the rest of its line; a v2
  LOCAL header ignores its family and addresses (health checks from the proxy itself); v2
  family/transport combinations that are valid but unassigned (AF_INET with UNSPEC transport...)
  fall back to UNKNOWN, that is "use the real connection's addresses".

Every error is a :class:`ProxyProtocolError` (a :class:`~protocols.ProtocolError`); after one,
the connection must be closed: the spec forbids guessing where the application's bytes begin.

Example::

    from protocols.proxy import ProxyHeaderParser, TrustedProxies

    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.is_trusted(("10.1.2.3", 40000))   # else: close, never parse its header
    parser = ProxyHeaderParser()
    header = parser.feed(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\\r\\nGET / HTTP/1.1\\r\\n")
    assert header is not None and header.source == ("192.168.0.1", 56324)
    assert parser.remaining() == b"GET / HTTP/1.1\\r\\n"
"""

from __future__ import annotations

import ipaddress
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal, TypeAlias

from .exceptions import EXCERPT_SIZE, ProtocolError, SerializeError

__all__ = [
    "PP2Type",
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxyProtocolError",
    "TrustedProxies",
    "build_v1",
    "build_v2",
    "crc32c",
]

#: The longest v1 line, CRLF included: ``PROXY UNKNOWN`` with two full-length IPv6 addresses and
#: two 5-digit ports (the spec's worst case). A line not ended by CRLF within it is invalid.
V1_MAX_LINE_SIZE: Final = 107

#: The largest v2 header accepted, its 16-byte fixed part included. The spec designs headers to
#: fit one 536-byte segment; HAProxy's own addresses plus its TLVs (ALPN, authority, unique id
#: of at most 128 bytes, SSL details with cipher and certificate CN) stay well under 1 KiB.
#: 4 KiB leaves room for large custom TLVs while bounding what a peer can make us buffer.
V2_MAX_HEADER_SIZE: Final = 4096

#: The 12 bytes every v2 header starts with.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"

_V1_PREFIX: Final = b"PROXY "
_V1_PROTOCOLS: Final = (b"TCP4 ", b"TCP6 ", b"UNKNOWN")
_V2_FIXED_SIZE: Final = 16
_UNIX_PATH_SIZE: Final = 108
_UNIQUE_ID_MAX: Final = 128  # PP2_TYPE_UNIQUE_ID: "up to 128 bytes"

_V2_COMMANDS: Final[dict[int, Literal["LOCAL", "PROXY"]]] = {0x0: "LOCAL", 0x1: "PROXY"}
_V2_COMMAND_BYTES: Final = {"LOCAL": 0x0, "PROXY": 0x1}
#: Address block size of each assigned family/transport byte (the spec's "expected" values).
_V2_ADDRESS_SIZES: Final = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}

# Bytes patterns: ``[0-9]`` rather than ``\d``, which would also match non-ASCII digits in str.
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V1_IPV4 = re.compile(_OCTET + rb"(?:\." + _OCTET + rb"){3}")
# Hex groups and colons; dots for an embedded IPv4 tail ("::ffff:192.0.2.1", which glibc's
# inet_ntop, and so HAProxy, writes for IPv4-mapped addresses). No "%zone": ipaddress would
# take it, the spec does not.
_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:.]{2,45}")
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")

Family: TypeAlias = Literal["TCP4", "TCP6", "UDP4", "UDP6", "UNIX", "UNIX_DGRAM", "UNKNOWN"]
Command: TypeAlias = Literal["PROXY", "LOCAL"]
#: A parsed address: ``(host, port)`` for IP families, a path for Unix sockets.
ProxyAddress: TypeAlias = tuple[str, int] | str
#: What the encoders accept: ``(host, port)`` with host an IP literal (or ``ipaddress`` object),
#: or a Unix socket path (``str`` or ``bytes``).
EndpointArg: TypeAlias = (
    tuple[str | ipaddress.IPv4Address | ipaddress.IPv6Address, int] | str | bytes
)
_Data: TypeAlias = bytes | bytearray | memoryview


class ProxyProtocolError(ProtocolError):
    """The bytes are not a valid PROXY protocol header; the connection must be closed.

    The message says what was expected and quotes (at most 64 bytes of) what came.
    """


class PP2Type(IntEnum):
    """Registered PROXY protocol v2 TLV types (``PP2_TYPE_*``, ``PP2_SUBTYPE_SSL_*``).

    :attr:`ProxyHeader.tlvs` holds plain ``int`` types, which compare equal to these. The
    ``SSL_*`` subtypes appear inside the value of an :attr:`SSL` TLV, after its 5-byte
    client/verify prefix, never at the top level.
    """

    ALPN = 0x01
    AUTHORITY = 0x02
    CRC32C = 0x03
    NOOP = 0x04
    UNIQUE_ID = 0x05
    SSL = 0x20
    SSL_VERSION = 0x21
    SSL_CN = 0x22
    SSL_CIPHER = 0x23
    SSL_SIG_ALG = 0x24
    SSL_KEY_ALG = 0x25
    NETNS = 0x30


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    Attributes:
        version: 1 (text line) or 2 (binary).
        command: ``"PROXY"`` (relayed for a client) or ``"LOCAL"`` (v2 only: the proxy's own
            connection, such as a health check).
        family: ``"TCP4"``, ``"TCP6"``, ``"UDP4"``, ``"UDP6"``, ``"UNIX"`` (stream),
            ``"UNIX_DGRAM"`` or ``"UNKNOWN"`` (v1 ``UNKNOWN``, v2 AF_UNSPEC or an unassigned
            combination, and every LOCAL header).
        source: The original client: ``(host, port)`` with ``host`` in canonical text form
            (IPv4-mapped IPv6 as ``"::ffff:192.0.2.1"``, as sockets report it), a path for Unix
            families (``"\\x00name"`` for Linux abstract sockets, ``""`` if unnamed), ``None``
            when :attr:`is_local`.
        destination: The address the client connected to, in the same form.
        tlvs: v2 type-length-value extensions in received order, ``(type, value)``, NOOP and a
            verified CRC32C included. Empty for v1.

    Example::

        header = ProxyHeaderParser().feed(build_v1(("192.0.2.1", 5000), ("198.51.100.2", 443)))
        peer = real_peer if header.is_local else header.source
    """

    version: Literal[1, 2]
    command: Command
    family: Family
    source: ProxyAddress | None
    destination: ProxyAddress | None
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def is_local(self) -> bool:
        """True when the header carries no client address: use the real connection's own.

        That is a LOCAL command or an UNKNOWN family (the spec: accept the connection "as if
        there were no PROXY protocol header on the wire").
        """
        return self.command == "LOCAL" or self.family == "UNKNOWN"

    def get_tlv(self, tlv_type: int) -> bytes | None:
        """Return the value of the first TLV of ``tlv_type`` (see :class:`PP2Type`), or None.

        Example::

            authority = header.get_tlv(PP2Type.AUTHORITY)   # the client's SNI, or None
        """
        for kind, value in self.tlvs:
            if kind == tlv_type:
                return value
        return None


class ProxyHeaderParser:
    """Incremental parser of the one PROXY protocol header at the start of a connection.

    Feed it the connection's first reads until :meth:`feed` returns the header; the bytes that
    came after the header are then in :meth:`remaining` and belong to the application. One
    parser per connection, used once. Only parse headers from peers that
    :meth:`TrustedProxies.is_trusted` accepts: anyone else could claim any address.

    Args:
        versions: ``"auto"`` (default) accepts v1 and v2, ``"v1"`` or ``"v2"`` only that one.
            What the listener expects is configuration: a header of the other version is an
            error, and so is a connection without a header.

    Example::

        parser = ProxyHeaderParser()
        for chunk in (b"PROXY TCP6 2001:db8::1 ", b"2001:db8::2 5000 443\\r\\nHELLO"):
            header = parser.feed(chunk)
        assert header == ProxyHeader(1, "PROXY", "TCP6", ("2001:db8::1", 5000),
                                     ("2001:db8::2", 443))
        assert parser.remaining() == b"HELLO"
    """

    __slots__ = ("_buf", "_error", "_header", "_remaining", "_versions")

    def __init__(self, versions: Literal["auto", "v1", "v2"] = "auto") -> None:
        if versions not in ("auto", "v1", "v2"):
            raise ValueError(f"versions must be 'auto', 'v1' or 'v2', got {versions!r}")
        self._versions = versions
        self._buf = bytearray()  # the incomplete header so far (< 4 KiB)
        self._header: ProxyHeader | None = None
        self._remaining = b""
        self._error: ProxyProtocolError | None = None

    @property
    def header(self) -> ProxyHeader | None:
        """The parsed header, or None while more bytes are needed (or after an error)."""
        return self._header

    @property
    def buffered(self) -> int:
        """How many received bytes are held waiting for the rest of the header (< 4 KiB)."""
        return len(self._buf)

    def feed(self, data: _Data) -> ProxyHeader | None:
        """Add received bytes; return the header once it is complete, else None.

        Raises:
            ProxyProtocolError: the bytes are not a valid header (or an earlier call raised it:
                the parser stays unusable). Close the connection.
            RuntimeError: the header was already returned; what follows is the application's.
        """
        if self._error is not None:
            raise ProxyProtocolError(f"parser is unusable after an earlier error: {self._error}")
        if self._header is not None:
            raise RuntimeError(
                "the PROXY header is already parsed: give later bytes to the application, "
                "after remaining()"
            )
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data if isinstance(data, bytes | bytearray) else bytes(data)
        try:
            found = self._parse(buf)
        except ProxyProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if found is None:
            if buf is not self._buf:
                self._buf += buf
            return None
        header, size = found
        self._remaining = bytes(buf[size:])
        self._buf = bytearray()
        self._header = header
        return header

    def remaining(self) -> bytes:
        """The bytes received after the header: the start of the application's stream.

        Raises:
            RuntimeError: the header is not complete yet (those bytes would be lost).
        """
        if self._header is None:
            raise RuntimeError("no complete PROXY header yet: feed() until it returns one")
        return self._remaining

    def _parse(self, buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
        if not buf:
            return None
        first = buf[0]
        if first == _V1_PREFIX[0] and self._versions != "v2":
            return _parse_v1(buf)
        if first == V2_SIGNATURE[0] and self._versions != "v1":
            return _parse_v2(buf)
        raise self._not_a_header(buf)

    def _not_a_header(self, buf: bytes | bytearray) -> ProxyProtocolError:
        expected = {
            "auto": "a PROXY protocol header ('PROXY ...\\r\\n' or the v2 signature)",
            "v1": "a PROXY protocol v1 header ('PROXY ...\\r\\n')",
            "v2": f"a PROXY protocol v2 header (signature {V2_SIGNATURE!r})",
        }[self._versions]
        hint = ""
        if buf[0] == V2_SIGNATURE[0] and _is_prefix(buf, V2_SIGNATURE):
            hint = "; that is a v2 header, and this parser accepts v1 only (versions='v1')"
        elif buf[0] == _V1_PREFIX[0] and _is_prefix(buf, _V1_PREFIX):
            hint = "; that is a v1 header, and this parser accepts v2 only (versions='v2')"
        return _error(f"expected {expected}, got", buf, hint)


def _is_prefix(buf: bytes | bytearray, expected: bytes) -> bool:
    """True if ``buf`` and ``expected`` agree on their common length."""
    size = min(len(buf), len(expected))
    return buf[:size] == expected[:size]


def _error(what: str, data: bytes | bytearray, hint: str = "") -> ProxyProtocolError:
    shown = bytes(data[:EXCERPT_SIZE])
    more = "..." if len(data) > EXCERPT_SIZE else ""
    return ProxyProtocolError(f"{what} {shown!r}{more}{hint}")


# --- version 1 --------------------------------------------------------------------------------


def _parse_v1(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    if not _is_prefix(buf, _V1_PREFIX):
        raise _error("expected a PROXY protocol v1 line starting with 'PROXY ', got", buf)
    if len(buf) > len(_V1_PREFIX):
        start = len(_V1_PREFIX)
        if not any(_is_prefix(buf[start:], name) for name in _V1_PROTOCOLS):
            raise _error("expected TCP4, TCP6 or UNKNOWN after 'PROXY ' in a v1 line, got", buf)
    newline = buf.find(b"\n", 0, V1_MAX_LINE_SIZE)
    if newline < 0:
        if len(buf) >= V1_MAX_LINE_SIZE:
            raise _error(
                f"expected a v1 line ending in CRLF within {V1_MAX_LINE_SIZE} bytes, got", buf
            )
        return None
    if buf[newline - 1] != 0x0D:  # newline >= 6: the prefix is checked
        raise _error("expected CRLF at the end of the v1 line, got a bare LF in", buf)
    return _decode_v1(bytes(buf[: newline - 1])), newline + 1


def _decode_v1(line: bytes) -> ProxyHeader:
    fields = line.split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":
        # "the receiver must ignore anything presented before the CRLF is found"
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None)
    if protocol not in (b"TCP4", b"TCP6") or len(fields) != 6:
        raise _error(
            "expected 'PROXY TCP4|TCP6 <source> <destination> <source port> <destination "
            "port>' with single spaces, or 'PROXY UNKNOWN ...', got",
            line,
        )
    v6 = protocol == b"TCP6"
    source = _v1_host(fields[2], v6, line), _v1_port(fields[4], line)
    destination = _v1_host(fields[3], v6, line), _v1_port(fields[5], line)
    return ProxyHeader(1, "PROXY", "TCP6" if v6 else "TCP4", source, destination)


def _v1_host(field: bytes, v6: bool, line: bytes) -> str:
    if not v6:
        if _V1_IPV4.fullmatch(field) is None:
            raise _error(
                f"expected a dotted-quad IPv4 address without leading zeros, got {field!r} in",
                line,
            )
        return field.decode("ascii")
    if _V1_IPV6.fullmatch(field) is not None:
        try:
            return _ipv6_text(ipaddress.IPv6Address(field.decode("ascii")))
        except ValueError:
            pass
    raise _error(f"expected an IPv6 address, got {field!r} in", line)


def _v1_port(field: bytes, line: bytes) -> int:
    if _V1_PORT.fullmatch(field) is None or int(field) > 65535:
        raise _error(
            f"expected a decimal port 0-65535 without leading zeros, got {field!r} in", line
        )
    return int(field)


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    """Canonical text, with IPv4-mapped addresses dotted as sockets report them (whatever the
    Python version: ``ipaddress`` switched to that form only in 3.13)."""
    mapped = address.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else str(address)


# --- version 2 --------------------------------------------------------------------------------


def _parse_v2(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    if not _is_prefix(buf, V2_SIGNATURE):
        raise _error(f"expected the PROXY protocol v2 signature {V2_SIGNATURE!r}, got", buf)
    size = len(buf)
    if size <= 12:
        return None
    version, command = buf[12] >> 4, buf[12] & 0x0F
    if version != 2:
        raise _error(f"expected PROXY protocol version 2 in byte 13, got version {version} in", buf)
    if command not in _V2_COMMANDS:
        raise _error(f"expected command LOCAL (0) or PROXY (1), got {command} in", buf)
    if size <= 13:
        return None
    family = buf[13]
    if command == 1 and (family >> 4 > 3 or family & 0x0F > 2):
        raise _error(
            f"expected address family 0-3 and transport 0-2, got byte 0x{family:02x} in", buf
        )
    if size < _V2_FIXED_SIZE:
        return None
    total = _V2_FIXED_SIZE + int.from_bytes(buf[14:16], "big")
    if total > V2_MAX_HEADER_SIZE:
        raise _error(
            f"v2 header declares {total - _V2_FIXED_SIZE} bytes after its 16-byte fixed part, "
            f"{total} in all, over the limit of {V2_MAX_HEADER_SIZE}:",
            buf,
        )
    address_size = _V2_ADDRESS_SIZES.get(family)
    if command == 1 and address_size is not None and total < _V2_FIXED_SIZE + address_size:
        raise _error(
            f"v2 family byte 0x{family:02x} needs {address_size} address bytes, but the header "
            f"declares {total - _V2_FIXED_SIZE}:",
            buf,
        )
    if size < total:
        return None
    return _decode_v2(bytes(buf[:total]), _V2_COMMANDS[command], family, address_size), total


def _decode_v2(
    header: bytes, command: Command, family: int, address_size: int | None
) -> ProxyHeader:
    if address_size is None or len(header) < _V2_FIXED_SIZE + address_size:
        # LOCAL with any family, or a valid but unassigned combination: no address to use,
        # and no way to tell where TLVs would start.
        return ProxyHeader(2, command, "UNKNOWN", None, None)
    tlvs = _decode_tlvs(header, _V2_FIXED_SIZE + address_size)
    if command == "LOCAL" or family == 0x00:
        return ProxyHeader(2, command, "UNKNOWN", None, None, tlvs)
    datagram = family & 0x0F == 2
    source: ProxyAddress
    destination: ProxyAddress
    if family >> 4 == 1:
        name: Family = "UDP4" if datagram else "TCP4"
        source_port, destination_port = struct.unpack_from("!HH", header, 24)
        source = str(ipaddress.IPv4Address(header[16:20])), source_port
        destination = str(ipaddress.IPv4Address(header[20:24])), destination_port
    elif family >> 4 == 2:
        name = "UDP6" if datagram else "TCP6"
        source_port, destination_port = struct.unpack_from("!HH", header, 48)
        source = _ipv6_text(ipaddress.IPv6Address(header[16:32])), source_port
        destination = _ipv6_text(ipaddress.IPv6Address(header[32:48])), destination_port
    else:
        name = "UNIX_DGRAM" if datagram else "UNIX"
        source = _unix_path(header[16 : 16 + _UNIX_PATH_SIZE])
        destination = _unix_path(header[16 + _UNIX_PATH_SIZE : 16 + 2 * _UNIX_PATH_SIZE])
    return ProxyHeader(2, command, name, source, destination, tlvs)


def _unix_path(field: bytes) -> str:
    """A 108-byte ``sun_path``: a NUL-terminated path, or a Linux abstract name (leading NUL,
    trailing NUL padding dropped); decoded as ``os.fsdecode`` does for socket addresses."""
    if field[:1] == b"\x00":
        name = field.rstrip(b"\x00")
        return os.fsdecode(b"\x00" + name[1:]) if name else ""
    return os.fsdecode(field.split(b"\x00", 1)[0])


def _decode_tlvs(header: bytes, start: int) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    checksum_at = -1
    position = start
    end = len(header)
    while position < end:
        if end - position < 3:
            raise _error(
                f"expected a 3-byte TLV type and length at offset {position}, got "
                f"{end - position} bytes left in",
                header,
            )
        kind = header[position]
        length = int.from_bytes(header[position + 1 : position + 3], "big")
        value_at = position + 3
        if value_at + length > end:
            raise _error(
                f"TLV type 0x{kind:02x} at offset {position} declares {length} bytes, only "
                f"{end - value_at} left in",
                header,
            )
        if kind == PP2Type.CRC32C:
            if length != 4:
                raise _error(f"expected a 4-byte CRC32C TLV, got {length} bytes in", header)
            if checksum_at >= 0:
                raise _error("expected one CRC32C TLV, got two in", header)
            checksum_at = value_at
        elif kind == PP2Type.UNIQUE_ID and length > _UNIQUE_ID_MAX:
            raise _error(
                f"expected a UNIQUE_ID TLV of at most {_UNIQUE_ID_MAX} bytes, got {length} in",
                header,
            )
        tlvs.append((kind, header[value_at : value_at + length]))
        position = value_at + length
    if checksum_at >= 0:
        received = int.from_bytes(header[checksum_at : checksum_at + 4], "big")
        computed = crc32c(header[:checksum_at] + bytes(4) + header[checksum_at + 4 :])
        if received != computed:
            raise _error(
                f"CRC32C mismatch: the header says 0x{received:08x}, its bytes give "
                f"0x{computed:08x}:",
                header,
            )
    return tuple(tlvs)


def _crc32c_table() -> tuple[int, ...]:
    # Castagnoli polynomial 0x1EDC6F41, bit-reversed (RFC 4960 appendix B, as the spec says).
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: _Data) -> int:
    """Return the CRC32C (Castagnoli) checksum of ``data``, as PP2_TYPE_CRC32C uses it.

    Pure Python, one table lookup per byte: about a millisecond for a 4 KiB header.

    Example::

        assert crc32c(b"123456789") == 0xE3069283
    """
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- encoders ---------------------------------------------------------------------------------


def build_v1(source: EndpointArg | None, destination: EndpointArg | None) -> bytes:
    """Return the v1 line for a TCP connection from ``source`` to ``destination``.

    Args:
        source: The client's ``(host, port)``; ``host`` an IPv4 or IPv6 literal (or
            ``ipaddress`` object). ``None`` with ``destination`` ``None`` gives
            ``PROXY UNKNOWN\\r\\n``.
        destination: The ``(host, port)`` the client connected to, of the same IP version.

    Raises:
        SerializeError: not IP addresses of one version, a port out of 0-65535, or only one of
            the two given (v1 has no Unix and no UDP).

    Example::

        build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443))
        # b'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\\r\\n'
    """
    if source is None and destination is None:
        return b"PROXY UNKNOWN\r\n"
    if source is None or destination is None:
        raise SerializeError("give both source and destination, or neither (PROXY UNKNOWN)")
    source_ip, source_port = _ip_endpoint(source, "source")
    destination_ip, destination_port = _ip_endpoint(destination, "destination")
    if source_ip.version != destination_ip.version:
        raise SerializeError(
            f"source {source_ip} and destination {destination_ip} are not the same IP version"
        )
    protocol = "TCP4" if source_ip.version == 4 else "TCP6"
    line = (
        f"PROXY {protocol} {_v1_text(source_ip)} {_v1_text(destination_ip)} "
        f"{source_port} {destination_port}\r\n"
    )
    return line.encode("ascii")


def _v1_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is None:
        return str(address)
    # The spec's v1 IPv6 form is hex groups only; write mapped addresses that way (Python 3.13
    # would print them dotted).
    value = int(mapped)
    return f"::ffff:{value >> 16:x}:{value & 0xFFFF:x}"


def build_v2(
    source: EndpointArg | None,
    destination: EndpointArg | None,
    *,
    command: Command = "PROXY",
    tlvs: Iterable[tuple[int, _Data]] = (),
    datagram: bool = False,
    checksum: bool = False,
) -> bytes:
    """Return a v2 header for a connection from ``source`` to ``destination``.

    The family follows from the addresses: ``(host, port)`` pairs give TCP4/TCP6 (UDP4/UDP6
    with ``datagram=True``), ``str``/``bytes`` paths give UNIX (stream, or datagram), and
    ``None`` for both gives AF_UNSPEC (the receiver then uses the real connection's addresses).

    Args:
        source: The client's address.
        destination: The address the client connected to, of the same family.
        command: ``"PROXY"``, or ``"LOCAL"`` for the proxy's own connections (health checks),
            which carry no addresses: both must be ``None``.
        tlvs: ``(type, value)`` extensions, written in order after the addresses.
        datagram: The relayed connection is UDP or Unix datagram rather than TCP or stream.
        checksum: Append a PP2_TYPE_CRC32C TLV holding the header's checksum.

    Raises:
        SerializeError: mismatched or invalid addresses, a Unix path over 108 bytes (or one
            that would not read back the same), a TLV type outside 0-255, a TLV value over
            65535 bytes, a CRC32C TLV given with ``checksum=True``, or more than 65535 bytes
            after the fixed part (receivers may accept far less: this module's parser takes
            4096 bytes in all).

    Example::

        build_v2(("192.0.2.1", 5000), ("198.51.100.2", 443), tlvs=[(PP2Type.AUTHORITY, b"a.b")])
    """
    if command not in _V2_COMMAND_BYTES:
        raise SerializeError(f"command must be 'PROXY' or 'LOCAL', got {command!r}")
    addresses, family = _v2_addresses(source, destination, command)
    if family:
        family |= 2 if datagram else 1
    extensions = bytearray()
    for kind, value in tlvs:
        if not isinstance(kind, int) or not 0 <= kind <= 255:
            raise SerializeError(f"TLV type must be an int in 0-255, got {kind!r}")
        if checksum and kind == PP2Type.CRC32C:
            raise SerializeError("a CRC32C TLV is given and checksum=True would add another")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise SerializeError(f"TLV value must be bytes, got {value!r}")
        if len(value) > 65535:
            raise SerializeError(f"TLV value of {len(value)} bytes is over 65535")
        extensions += struct.pack("!BH", kind, len(value))
        extensions += value
    if checksum:
        extensions += struct.pack("!BH", PP2Type.CRC32C, 4) + bytes(4)
    length = len(addresses) + len(extensions)
    if length > 65535:
        raise SerializeError(f"v2 header body of {length} bytes is over 65535")
    header = bytearray(V2_SIGNATURE)
    header += struct.pack("!BBH", 0x20 | _V2_COMMAND_BYTES[command], family, length)
    header += addresses
    header += extensions
    if checksum:
        header[-4:] = crc32c(header).to_bytes(4, "big")
    return bytes(header)


def _v2_addresses(
    source: EndpointArg | None, destination: EndpointArg | None, command: Command
) -> tuple[bytes, int]:
    """The address block and the family nibble (shifted; transport still 0)."""
    if command == "LOCAL":
        if source is not None or destination is not None:
            raise SerializeError("a LOCAL header carries no addresses: pass None for both")
        return b"", 0x00
    if source is None and destination is None:
        return b"", 0x00
    if source is None or destination is None:
        raise SerializeError("give both source and destination, or neither (AF_UNSPEC)")
    if isinstance(source, str | bytes) and isinstance(destination, str | bytes):
        return _unix_field(source) + _unix_field(destination), 0x30
    if isinstance(source, str | bytes) or isinstance(destination, str | bytes):
        raise SerializeError(
            f"source {source!r} and destination {destination!r} are not the same family"
        )
    source_ip, source_port = _ip_endpoint(source, "source")
    destination_ip, destination_port = _ip_endpoint(destination, "destination")
    if source_ip.version != destination_ip.version:
        raise SerializeError(
            f"source {source_ip} and destination {destination_ip} are not the same IP version"
        )
    ports = struct.pack("!HH", source_port, destination_port)
    family = 0x10 if source_ip.version == 4 else 0x20
    return source_ip.packed + destination_ip.packed + ports, family


def _ip_endpoint(
    endpoint: EndpointArg, role: str
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if (
        not isinstance(endpoint, Sequence)
        or isinstance(endpoint, str | bytes)
        or len(endpoint) != 2
    ):
        raise SerializeError(f"{role} must be a (host, port) pair, got {endpoint!r}")
    host, port = endpoint
    if not isinstance(host, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise SerializeError(f"{role} host must be an IP address string, got {host!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SerializeError(f"{role} host must be an IP address literal, got {host!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise SerializeError(
            f"{role} host has a zone id, which the protocol cannot carry: {host!r}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SerializeError(f"{role} port must be an int in 0-65535, got {port!r}")
    return address, port


def _unix_field(path: str | bytes) -> bytes:
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        raise SerializeError(f"Unix socket path {path!r} cannot be encoded") from None
    if len(raw) > _UNIX_PATH_SIZE:
        raise SerializeError(
            f"Unix socket path of {len(raw)} bytes is over {_UNIX_PATH_SIZE}: {path!r}"
        )
    field = raw.ljust(_UNIX_PATH_SIZE, b"\x00")
    if os.fsencode(_unix_path(field)) != raw:
        raise SerializeError(
            f"Unix socket path {path!r} would not read back the same (a NUL inside a path, or "
            "at the end of an abstract name)"
        )
    return field


# --- trusted sources --------------------------------------------------------------------------


class TrustedProxies:
    """The peers allowed to send a PROXY header: the one trusted-source check.

    A PROXY header is a claim about someone else's address; from anyone but your own proxies it
    is a spoof. Check the *socket's* peer address with :meth:`is_trusted` before parsing, on
    every listener that accepts the header, and close the connection when it is not trusted.

    Args:
        cidrs: IPv4/IPv6 networks (``"10.0.0.0/8"``, ``"fd00::/8"``) or single addresses
            (``"192.0.2.7"``), and the special entry ``"unix"`` to trust every Unix socket peer
            (whoever can reach the socket file). Host bits must be zero (``"10.0.0.1/8"`` is
            refused rather than silently widened). An empty list trusts nobody.

    Raises:
        ValueError: an entry is not a network, address or ``"unix"``.
        TypeError: ``cidrs`` is one string rather than an iterable of them.

    Example::

        trusted = TrustedProxies(["10.0.0.0/8", "2001:db8::/32", "unix"])
        trusted.is_trusted(("10.1.2.3", 51234))       # True
        trusted.is_trusted(("::ffff:10.1.2.3", 51234))  # True: IPv4-mapped, dual-stack socket
        trusted.is_trusted(("192.0.2.1", 51234))      # False
        trusted.is_trusted("/run/app.sock")           # True: a Unix peer, "unix" is listed
    """

    __slots__ = ("_networks", "_unix")

    def __init__(self, cidrs: Iterable[str]) -> None:
        if isinstance(cidrs, str | bytes):
            raise TypeError(f"cidrs must be an iterable of strings, e.g. [{cidrs!r}], not a string")
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        unix = False
        for entry in cidrs:
            if not isinstance(entry, str):
                raise TypeError(f"trusted proxy entries must be strings, got {entry!r}")
            text = entry.strip()
            if text.lower() == "unix":
                unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(text))
            except ValueError as exc:
                raise ValueError(
                    f"invalid trusted proxy entry {entry!r}: {exc}; expected an IP network such "
                    "as '10.0.0.0/8' or 'fd00::/8', an IP address, or 'unix'"
                ) from None
        self._networks = tuple(networks)
        self._unix = unix

    def is_trusted(
        self, address: tuple[str, int] | str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bool:
        """True if the peer at ``address`` may send a PROXY header.

        Args:
            address: The connection's peer as sockets report it: a ``(host, port, ...)`` tuple
                for IP (IPv4-mapped IPv6 addresses are checked as IPv4 too), an ``ipaddress``
                object, or a ``str``/``bytes`` path for a Unix socket peer. A string is always a
                Unix peer, never an IP address, whatever it looks like.

        Raises:
            ValueError: a tuple whose host is not an IP address.
            TypeError: any other kind of address.
        """
        if isinstance(address, str | bytes):
            return self._unix
        if isinstance(address, tuple):
            host = address[0] if address else None
            problem = f"expected a peer address (host, port) with an IP host, got {address!r}"
            if not isinstance(host, str):
                raise ValueError(problem)
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(problem) from None
        elif isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            ip = address
        else:
            raise TypeError(
                "expected a (host, port) tuple, an ipaddress object or a Unix path, "
                f"got {address!r}"
            )
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(
            ip in network or (mapped is not None and mapped in network)
            for network in self._networks
        )

    def __repr__(self) -> str:
        entries = [str(network) for network in self._networks]
        if self._unix:
            entries.append("unix")
        return f"TrustedProxies({entries!r})"
