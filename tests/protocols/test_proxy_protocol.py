"""Tests of protocols.proxy: the PROXY protocol header (v1 and v2), its encoders, the trust check.

- The spec's own v1 lines, and v2 headers written byte by byte from the spec's layout (never
  with ``build_v2``), including TLVs, LOCAL and every family.
- Bytes captured from HAProxy 2.6 (``send-proxy``, ``send-proxy-v2`` with CRC32C and unique id,
  a LOCAL health check), and, when ``/usr/sbin/haproxy`` exists, a live exchange with it.
- Each delivery: whole, byte by byte, cut everywhere; the bytes after the header intact.
- The limits (107-byte line, 4096-byte v2 header) and how early each error comes.
- Encoders, CRC32C, version restriction, and :class:`TrustedProxies`.

Property tests (hypothesis) are in ``test_proxy_protocol_properties.py``.
"""

from __future__ import annotations

import ipaddress
import os
import pickle
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols import FramingError, ProtocolError, SerializeError
from protocols.exceptions import EXCERPT_SIZE
from protocols.proxy import (
    V1_MAX_LINE_SIZE,
    V2_MAX_HEADER_SIZE,
    V2_SIGNATURE,
    PP2Type,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
    TrustedProxies,
    build_v1,
    build_v2,
    crc32c,
)

from protocol_helpers import one_byte_at_a_time, split_at

SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # spelled as in the spec, section 2.2
PAYLOAD = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"


def parse(data: bytes, versions: Any = "auto") -> tuple[ProxyHeader, bytes]:
    """Parse ``data`` fed whole; return the header and the remaining bytes."""
    parser = ProxyHeaderParser(versions)
    header = parser.feed(data)
    assert header is not None
    assert parser.header is header
    return header, parser.remaining()


def parse_chunks(chunks: list[bytes]) -> tuple[ProxyHeader, bytes]:
    """Feed ``chunks`` in order: None until the header is complete, then stop feeding."""
    parser = ProxyHeaderParser()
    for index, chunk in enumerate(chunks):
        header = parser.feed(chunk)
        if header is not None:
            return header, parser.remaining() + b"".join(chunks[index + 1 :])
    raise AssertionError("the header never completed")


def v2(ver_cmd: int, family: int, body: bytes, length: int | None = None) -> bytes:
    """A v2 header from its parts, following the spec's ``struct proxy_hdr_v2`` by hand."""
    declared = len(body) if length is None else length
    return SIG + bytes([ver_cmd, family]) + declared.to_bytes(2, "big") + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def with_crc(header: bytes) -> bytes:
    """``header`` (whose last TLV is a zeroed CRC32C) with its checksum filled in."""
    assert header[-7:-4] == b"\x03\x00\x04"
    return header[:-4] + crc32c(header).to_bytes(4, "big")


def raises_at(data: bytes, versions: Any = "auto") -> int:
    """Feed ``data`` byte by byte; return how many bytes were in when the error came."""
    parser = ProxyHeaderParser(versions)
    for count, chunk in enumerate(one_byte_at_a_time(data), start=1):
        try:
            assert parser.feed(chunk) is None
        except ProxyProtocolError:
            return count
    raise AssertionError(f"no error for {data!r}")


IPV4_BODY = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + struct.pack("!HH", 56324, 443)
IPV6_SOURCE = ipaddress.IPv6Address("2001:db8::1")
IPV6_DESTINATION = ipaddress.IPv6Address("2001:db8:0:1::2")
IPV6_BODY = IPV6_SOURCE.packed + IPV6_DESTINATION.packed + struct.pack("!HH", 5000, 8443)
UNIX_BODY = b"/run/client.sock".ljust(108, b"\x00") + b"/run/app.sock".ljust(108, b"\x00")

# Captured from HAProxy 2.6.12 relaying to a plain socket (the client sent b"hello").
HAPROXY_V1 = b"PROXY TCP4 127.0.0.1 127.0.0.1 38656 38417\r\nhello"
HAPROXY_V1_TCP6 = b"PROXY TCP6 ::1 ::1 56656 53407\r\nhello"
HAPROXY_V2 = SIG + b"!\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x01\xa8\x94\xecMhello"
# proxy-v2-options crc32c,unique-id with unique-id-format abc%ci
HAPROXY_V2_CRC = (
    SIG + b'!\x11\x00"\x7f\x00\x00\x01\x7f\x00\x00\x01\xce\x9a\xbeg'
    b"\x03\x00\x04#\xac\x02I\x05\x00\x0cabc127.0.0.1hello"
)
# A health check (check-send-proxy) with proxy-v2-options crc32c: LOCAL, AF_UNSPEC, one TLV.
HAPROXY_V2_LOCAL = SIG + b" \x00\x00\x07\x03\x00\x04\xa9\xb8~\x8f"


# --- version 1 --------------------------------------------------------------------------------


class TestV1:
    def test_spec_example_before_an_http_request(self) -> None:
        header, rest = parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n" + PAYLOAD)
        assert header == ProxyHeader(
            1, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443)
        )
        assert rest == PAYLOAD
        assert not header.is_local
        assert header.tlvs == ()

    @pytest.mark.parametrize(
        ("line", "size", "expected"),
        [
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
                56,
                ProxyHeader(
                    1, "PROXY", "TCP4", ("255.255.255.255", 65535), ("255.255.255.255", 65535)
                ),
            ),
            (
                b"PROXY TCP6 " + b":".join([b"ffff"] * 8) + b" " + b":".join([b"ffff"] * 8)
                + b" 65535 65535\r\n",
                104,
                ProxyHeader(
                    1,
                    "PROXY",
                    "TCP6",
                    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                ),
            ),
            (b"PROXY UNKNOWN\r\n", 15, ProxyHeader(1, "PROXY", "UNKNOWN", None, None)),
            (
                b"PROXY UNKNOWN " + b":".join([b"ffff"] * 8) + b" " + b":".join([b"ffff"] * 8)
                + b" 65535 65535\r\n",
                107,
                ProxyHeader(1, "PROXY", "UNKNOWN", None, None),
            ),
        ],
        ids=["tcp4-longest", "tcp6-longest", "unknown-short", "unknown-worst-case"],
    )  # fmt: skip
    def test_the_spec_line_lengths(self, line: bytes, size: int, expected: ProxyHeader) -> None:
        assert len(line) == size
        header, rest = parse(line + b"data")
        assert header == expected
        assert rest == b"data"

    def test_zeros_are_written_without_leading_zeros(self) -> None:
        header, _ = parse(b"PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n")
        assert header.source == ("0.0.0.0", 0)
        assert header.destination == ("10.0.0.1", 0)

    def test_ipv6_is_canonicalized(self) -> None:
        header, _ = parse(b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 0:0:0:0:0:0:0:1 1 2\r\n")
        assert header.source == ("2001:db8::1", 1)
        assert header.destination == ("::1", 2)

    def test_ipv4_mapped_ipv6_as_haproxy_writes_it(self) -> None:
        """glibc's inet_ntop writes mapped addresses dotted; we report them dotted too."""
        header, _ = parse(b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:c000:202 1 2\r\n")
        assert header.source == ("::ffff:192.0.2.1", 1)
        assert header.destination == ("::ffff:192.0.2.2", 2)

    @pytest.mark.parametrize(
        "line",
        [
            b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWN anything at all, even \r inside\r\n",
            b"PROXY UNKNOWN \r\n",
        ],
    )
    def test_unknown_ignores_the_rest_of_the_line(self, line: bytes) -> None:
        header, rest = parse(line + b"x")
        assert header == ProxyHeader(1, "PROXY", "UNKNOWN", None, None)
        assert header.is_local
        assert rest == b"x"

    @pytest.mark.parametrize(
        "line",
        [
            b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443",  # leading zero (octal?)
            b"PROXY TCP4 192.168.000.1 192.168.0.11 56324 443",
            b"PROXY TCP4 256.168.0.1 192.168.0.11 56324 443",
            b"PROXY TCP4 192.168.0 192.168.0.11 56324 443",
            b"PROXY TCP4 192.168.0.1.5 192.168.0.11 56324 443",
            b"PROXY TCP4 0x7f.0.0.1 192.168.0.11 56324 443",
            b"PROXY TCP4 ::1 192.168.0.11 56324 443",  # family mismatch
            b"PROXY TCP6 192.168.0.1 ::1 56324 443",
            b"PROXY TCP6 ::1 ::1%eth0 56324 443",  # zone id
            b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 56324 443",
            b"PROXY TCP6 1::2::3 ::1 56324 443",
            b"PROXY TCP6 ::g ::1 56324 443",
            b"PROXY TCP6 12345:: ::1 56324 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443",  # port with leading zero
            b"PROXY TCP4 192.168.0.1 192.168.0.11 00 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 99999 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 +80 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 8_0 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 \xd9\xa1 443",  # ARABIC-INDIC DIGIT ONE
            b"PROXY TCP4 \xd9\xa1.1.1.1 192.168.0.11 1 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324",  # missing field
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 7",  # extra field
            b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443",  # two spaces
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 ",  # trailing space
            b"PROXY TCP4 192.168.0.1\t192.168.0.11 56324 443",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r",  # CR CR LF
            b"PROXY TCP4\r",
            b"PROXY UNKNOWNX",
            b"PROXY UNKNOWN\t",
        ],
    )
    def test_invalid_lines(self, line: bytes) -> None:
        with pytest.raises(ProxyProtocolError) as info:
            parse(line + b"\r\n")
        assert str(info.value).startswith("expected")

    @pytest.mark.parametrize(
        ("data", "at"),
        [
            (b"GET / HTTP/1.1\r\n", 1),
            (b"\x16\x03\x01\x02\x00", 1),  # a TLS ClientHello
            (b"PUT /", 2),
            (b"PROXY\r\n", 6),
            (b"PROXY TCP5 ", 10),
            (b"PROXY tcp4 ", 7),
            (b"PROXY UDP4 ", 8),  # "U" could still start UNKNOWN
            (b"PROXY UNKNOWM", 13),
            (b"PROXY  TCP4", 7),
        ],
    )
    def test_rejected_as_soon_as_the_bytes_show_it(self, data: bytes, at: int) -> None:
        assert raises_at(data) == at

    def test_bare_lf_is_refused(self) -> None:
        """The spec: never tolerate a single CR or LF where CRLF is expected."""
        with pytest.raises(ProxyProtocolError, match="bare LF"):
            parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\nGET")
        with pytest.raises(ProxyProtocolError, match="bare LF"):
            parse(b"PROXY UNKNOWN\n\r\n")

    def test_a_108_byte_line_is_refused(self) -> None:
        line = b"PROXY UNKNOWN " + b"f" * (108 - 16) + b"\r\n"
        assert len(line) == 108
        with pytest.raises(ProxyProtocolError, match="within 107 bytes"):
            parse(line)
        # Refused once 107 bytes are in without a CRLF, before the 108th arrives.
        assert raises_at(line) == V1_MAX_LINE_SIZE == 107

    def test_a_line_without_crlf_waits_up_to_107_bytes(self) -> None:
        parser = ProxyHeaderParser()
        assert parser.feed(b"PROXY UNKNOWN " + b"f" * 92) is None
        assert parser.buffered == 106
        with pytest.raises(ProxyProtocolError):
            parser.feed(b"f")
        assert parser.buffered == 0


# --- version 2 --------------------------------------------------------------------------------


class TestV2:
    def test_signature_is_the_spec_one(self) -> None:
        assert V2_SIGNATURE == SIG == b"\r\n\r\n\x00\r\nQUIT\n"

    @pytest.mark.parametrize(
        ("family", "body", "expected_family", "source", "destination"),
        [
            (0x11, IPV4_BODY, "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443)),
            (0x12, IPV4_BODY, "UDP4", ("192.168.0.1", 56324), ("192.168.0.11", 443)),
            (0x21, IPV6_BODY, "TCP6", ("2001:db8::1", 5000), ("2001:db8:0:1::2", 8443)),
            (0x22, IPV6_BODY, "UDP6", ("2001:db8::1", 5000), ("2001:db8:0:1::2", 8443)),
            (0x31, UNIX_BODY, "UNIX", "/run/client.sock", "/run/app.sock"),
            (0x32, UNIX_BODY, "UNIX_DGRAM", "/run/client.sock", "/run/app.sock"),
        ],
    )
    def test_each_family(
        self, family: int, body: bytes, expected_family: str, source: Any, destination: Any
    ) -> None:
        header, rest = parse(v2(0x21, family, body) + PAYLOAD)
        assert header == ProxyHeader(2, "PROXY", expected_family, source, destination)  # type: ignore[arg-type]
        assert rest == PAYLOAD
        assert not header.is_local

    def test_address_sizes_are_the_spec_ones(self) -> None:
        assert (len(IPV4_BODY), len(IPV6_BODY), len(UNIX_BODY)) == (12, 36, 216)

    def test_ipv4_mapped_ipv6(self) -> None:
        body = ipaddress.IPv6Address("::ffff:192.0.2.1").packed * 2 + b"\x00\x01\x00\x02"
        header, _ = parse(v2(0x21, 0x21, body))
        assert header.source == ("::ffff:192.0.2.1", 1)

    def test_unix_abstract_and_unnamed_and_full_paths(self) -> None:
        abstract = b"\x00my-name".ljust(108, b"\x00")
        header, _ = parse(v2(0x21, 0x31, abstract + bytes(108)))
        assert header.source == "\x00my-name"
        assert header.destination == ""
        full = b"/" + b"p" * 107  # no NUL terminator at all
        header, _ = parse(v2(0x21, 0x31, full + b"/a\x00garbage after the NUL".ljust(108, b"z")))
        assert header.source == full.decode()
        assert header.destination == "/a"

    def test_unix_path_that_is_not_utf8_is_kept_as_sockets_do(self) -> None:
        raw = b"/tmp/\xff\xfe".ljust(108, b"\x00")
        header, _ = parse(v2(0x21, 0x31, raw * 2))
        assert header.source == os.fsdecode(b"/tmp/\xff\xfe")
        assert os.fsencode(header.source) == b"/tmp/\xff\xfe"

    def test_local_command(self) -> None:
        """The proxy's own connection (health check): no address, use the real endpoints."""
        header, rest = parse(v2(0x20, 0x00, b"") + b"PING")
        assert header == ProxyHeader(2, "LOCAL", "UNKNOWN", None, None)
        assert header.is_local
        assert rest == b"PING"

    def test_local_ignores_the_family_and_addresses(self) -> None:
        """The spec: receivers must not assume zero length for LOCAL, and ignore the family."""
        header, rest = parse(v2(0x20, 0x11, IPV4_BODY + tlv(PP2Type.ALPN, b"h2")) + b"x")
        assert header == ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, ((1, b"h2"),))
        assert rest == b"x"
        for family in (0xFF, 0x13, 0x10):  # invalid or unassigned: still a valid LOCAL
            header, rest = parse(v2(0x20, family, b"\x01\x02\x03") + b"x")
            assert header == ProxyHeader(2, "LOCAL", "UNKNOWN", None, None)
            assert rest == b"x"
        header, _ = parse(v2(0x20, 0x11, b"short"))  # shorter than its family: ignored too
        assert header == ProxyHeader(2, "LOCAL", "UNKNOWN", None, None)

    def test_af_unspec_with_proxy_command(self) -> None:
        header, rest = parse(v2(0x21, 0x00, tlv(PP2Type.AUTHORITY, b"example.com")) + b"x")
        assert header == ProxyHeader(
            2, "PROXY", "UNKNOWN", None, None, ((PP2Type.AUTHORITY, b"example.com"),)
        )
        assert header.is_local
        assert rest == b"x"

    @pytest.mark.parametrize("family", [0x01, 0x02, 0x10, 0x20, 0x30])
    def test_unassigned_combinations_fall_back_to_unknown(self, family: int) -> None:
        """ "A receiver is not required to implement other ones, provided that it automatically
        falls back to the UNSPEC mode for the valid combinations above"."""
        header, rest = parse(v2(0x21, family, b"\x01" * 20) + b"x")
        assert header == ProxyHeader(2, "PROXY", "UNKNOWN", None, None)
        assert rest == b"x"

    def test_tlvs_after_the_addresses(self) -> None:
        ssl_value = (
            b"\x07"  # PP2_CLIENT_SSL | CERT_CONN | CERT_SESS
            + b"\x00\x00\x00\x00"  # verify: 0 = verified
            + tlv(PP2Type.SSL_VERSION, b"TLSv1.3")
            + tlv(PP2Type.SSL_CN, b"client.example.com")
            + tlv(PP2Type.SSL_CIPHER, b"TLS_AES_128_GCM_SHA256")
        )
        tlvs = (
            tlv(0x01, b"h2")
            + tlv(0x02, b"example.com")
            + tlv(0x04, b"")  # NOOP, empty
            + tlv(0x04, b"\x00\x00\x00")
            + tlv(0x05, b"u" * 128)
            + tlv(0x20, ssl_value)
            + tlv(0x30, b"blue")
            + tlv(0xE0, b"\xff" * 300)  # application-specific range
            + tlv(0x01, b"second ALPN")
        )
        header, rest = parse(v2(0x21, 0x11, IPV4_BODY + tlvs) + b"after")
        assert header.tlvs == (
            (PP2Type.ALPN, b"h2"),
            (PP2Type.AUTHORITY, b"example.com"),
            (PP2Type.NOOP, b""),
            (PP2Type.NOOP, b"\x00\x00\x00"),
            (PP2Type.UNIQUE_ID, b"u" * 128),
            (PP2Type.SSL, ssl_value),
            (PP2Type.NETNS, b"blue"),
            (0xE0, b"\xff" * 300),
            (PP2Type.ALPN, b"second ALPN"),
        )
        assert all(type(kind) is int and type(value) is bytes for kind, value in header.tlvs)
        assert header.get_tlv(PP2Type.ALPN) == b"h2"  # the first one
        assert header.get_tlv(PP2Type.AUTHORITY) == b"example.com"
        assert header.get_tlv(PP2Type.CRC32C) is None
        assert rest == b"after"

    def test_crc32c_verified(self) -> None:
        header_bytes = with_crc(v2(0x21, 0x11, IPV4_BODY + tlv(0x01, b"h2") + tlv(0x03, bytes(4))))
        header, rest = parse(header_bytes + b"x")
        assert header.get_tlv(PP2Type.CRC32C) == header_bytes[-4:]
        assert rest == b"x"

    def test_crc32c_anywhere_among_the_tlvs(self) -> None:
        head = v2(0x21, 0x21, IPV6_BODY + tlv(0x03, bytes(4)) + tlv(0x02, b"example.com"))
        checksum = crc32c(head).to_bytes(4, "big")
        crc_at = 16 + 36 + 3
        header, _ = parse(head[:crc_at] + checksum + head[crc_at + 4 :])
        assert header.tlvs == ((3, checksum), (2, b"example.com"))

    # The command (PROXY -> LOCAL), an address, a port, a TLV value, the checksum itself.
    @pytest.mark.parametrize("position", [12, 16, 27, 31, 37, 39])
    def test_crc32c_mismatch_is_refused(self, position: int) -> None:
        good = with_crc(v2(0x21, 0x11, IPV4_BODY + tlv(0x01, b"h2") + tlv(0x03, bytes(4))))
        assert len(good) == 16 + 12 + 5 + 7
        parse(good)
        bad = bytearray(good)
        bad[position] ^= 0x01
        with pytest.raises(ProxyProtocolError, match="CRC32C mismatch"):
            parse(bytes(bad))

    @pytest.mark.parametrize(
        ("tlvs", "message"),
        [
            (b"\x01", "3-byte TLV type and length"),
            (b"\x01\x00", "3-byte TLV type and length"),
            (b"\x01\x00\x05abcd", "declares 5 bytes, only 4 left"),
            (tlv(0x01, b"h2") + b"\x02\xff\xff", "declares 65535 bytes"),
            (tlv(0x03, bytes(3)), "4-byte CRC32C"),
            (tlv(0x03, bytes(5)), "4-byte CRC32C"),
            (tlv(0x03, bytes(4)) + tlv(0x03, bytes(4)), "one CRC32C TLV, got two"),
            (tlv(0x05, b"u" * 129), "UNIQUE_ID TLV of at most 128 bytes"),
        ],
    )
    def test_malformed_tlvs(self, tlvs: bytes, message: str) -> None:
        with pytest.raises(ProxyProtocolError, match=message):
            parse(v2(0x21, 0x11, IPV4_BODY + tlvs))
        with pytest.raises(ProxyProtocolError, match=message):  # in LOCAL headers too
            parse(v2(0x20, 0x00, tlvs))

    @pytest.mark.parametrize(
        ("ver_cmd", "message"),
        [
            (0x11, "version 2 in byte 13, got version 1"),
            (0x31, "got version 3"),
            (0x01, "got version 0"),
            (0x22, "command LOCAL \\(0\\) or PROXY \\(1\\), got 2"),
            (0x2F, "got 15"),
        ],
    )
    def test_version_and_command_refused_at_byte_13(self, ver_cmd: int, message: str) -> None:
        data = v2(ver_cmd, 0x11, IPV4_BODY)
        with pytest.raises(ProxyProtocolError, match=message):
            parse(data)
        assert raises_at(data) == 13

    @pytest.mark.parametrize("family", [0x41, 0xF1, 0x13, 0x1F, 0x03, 0x40])
    def test_invalid_family_or_transport_refused_at_byte_14(self, family: int) -> None:
        data = v2(0x21, family, IPV4_BODY)
        with pytest.raises(ProxyProtocolError, match=f"got byte 0x{family:02x}"):
            parse(data)
        assert raises_at(data) == 14

    @pytest.mark.parametrize(("family", "size"), [(0x11, 12), (0x22, 36), (0x31, 216)])
    def test_length_shorter_than_the_family_refused_at_byte_16(
        self, family: int, size: int
    ) -> None:
        data = v2(0x21, family, bytes(size - 1))
        with pytest.raises(ProxyProtocolError, match=f"needs {size} address bytes"):
            parse(data)
        assert raises_at(data) == 16

    @pytest.mark.parametrize("position", range(12))
    def test_signature_checked_byte_by_byte(self, position: int) -> None:
        data = bytearray(v2(0x21, 0x11, IPV4_BODY))
        data[position] ^= 0x20
        assert raises_at(bytes(data)) == position + 1

    def test_largest_header_is_accepted(self) -> None:
        body = IPV4_BODY + tlv(0xE0, b"v" * (V2_MAX_HEADER_SIZE - 16 - 12 - 3))
        data = v2(0x21, 0x11, body)
        assert len(data) == V2_MAX_HEADER_SIZE == 4096
        header, rest = parse(data + b"x")
        assert header.tlvs == ((0xE0, b"v" * 4065),)
        assert rest == b"x"
        parser = ProxyHeaderParser()
        assert parser.feed(data[:-1]) is None
        assert parser.buffered == 4095
        assert parser.feed(data[-1:] + b"x") == header
        assert parser.remaining() == b"x"

    def test_4097_bytes_refused_as_soon_as_declared(self) -> None:
        data = v2(0x21, 0x11, IPV4_BODY + tlv(0xE0, b"v" * 4066))
        assert len(data) == 4097
        with pytest.raises(ProxyProtocolError, match="4097 in all, over the limit of 4096"):
            parse(data)
        assert raises_at(data) == 16

    def test_declared_length_65535_refused_after_16_bytes(self) -> None:
        parser = ProxyHeaderParser()
        prefix = v2(0x21, 0x11, b"", length=65535)
        assert len(prefix) == 16
        assert parser.feed(prefix[:15]) is None
        with pytest.raises(ProxyProtocolError, match="declares 65535 bytes after"):
            parser.feed(prefix[15:])
        assert parser.buffered == 0

    def test_captured_haproxy_headers(self) -> None:
        header, rest = parse(HAPROXY_V2)
        assert header == ProxyHeader(2, "PROXY", "TCP4", ("127.0.0.1", 43156), ("127.0.0.1", 60493))
        assert rest == b"hello"
        header, rest = parse(HAPROXY_V2_CRC)
        assert header.get_tlv(PP2Type.UNIQUE_ID) == b"abc127.0.0.1"
        assert header.get_tlv(PP2Type.CRC32C) == b"#\xac\x02I"
        assert rest == b"hello"
        header, rest = parse(HAPROXY_V2_LOCAL)
        assert header == ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, ((3, b"\xa9\xb8~\x8f"),))
        assert rest == b""
        header, _ = parse(HAPROXY_V1)
        assert header.source == ("127.0.0.1", 38656)
        header, _ = parse(HAPROXY_V1_TCP6)
        assert header.source == ("::1", 56656)


# --- delivery and the bytes after the header --------------------------------------------------

SAMPLES = {
    "v1-tcp4": b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    "v1-tcp6": b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
    "v1-unknown": b"PROXY UNKNOWN ignored\r\n",
    "v2-tcp4": v2(0x21, 0x11, IPV4_BODY),
    "v2-udp6-tlvs": v2(0x21, 0x22, IPV6_BODY + tlv(1, b"h3") + tlv(4, b"")),
    "v2-unix": v2(0x21, 0x31, UNIX_BODY),
    "v2-local": v2(0x20, 0x00, b""),
    "v2-crc": with_crc(v2(0x21, 0x11, IPV4_BODY + tlv(0x03, bytes(4)))),
    "haproxy-v2-crc": HAPROXY_V2_CRC[:-5],
}
# After the header: nothing, bytes that look like another header (never parsed), binary.
AFTERS = [b"", b"PROXY TCP4 6.6.6.6 6.6.6.6 6 6\r\n", SIG + b"\x21\x11\x00\x00", bytes(range(256))]


def delivery_ids(value: Any) -> str:
    return repr(value)[:20] if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("after", AFTERS, ids=delivery_ids)
class TestDelivery:
    def test_whole(self, name: str, after: bytes) -> None:
        expected, _ = parse(SAMPLES[name])
        header, rest = parse(SAMPLES[name] + after)
        assert header == expected
        assert rest == after

    def test_byte_by_byte(self, name: str, after: bytes) -> None:
        data = SAMPLES[name]
        expected, _ = parse(data)
        parser = ProxyHeaderParser()
        for chunk in one_byte_at_a_time(data[:-1]):
            assert parser.feed(chunk) is None
        assert parser.buffered == len(data) - 1
        assert parser.feed(data[-1:] + after) == expected
        assert parser.remaining() == after
        assert parser.buffered == 0

    def test_cut_at_every_offset(self, name: str, after: bytes) -> None:
        data = SAMPLES[name] + after
        expected, _ = parse(SAMPLES[name])
        for cut in range(1, len(data)):
            assert parse_chunks(split_at(data, [cut])) == (expected, after)

    def test_as_memoryview_and_bytearray(self, name: str, after: bytes) -> None:
        data = SAMPLES[name] + after
        expected, _ = parse(SAMPLES[name])
        middle = len(data) // 2
        for kind in (bytearray, memoryview):
            parser = ProxyHeaderParser()
            result = parser.feed(kind(data[:middle]))
            unfed = data[middle:]
            if result is None:
                result = parser.feed(kind(unfed))
                unfed = b""
            assert result == expected
            assert type(parser.remaining()) is bytes
            assert parser.remaining() + unfed == after


def test_a_large_first_read_keeps_all_of_its_tail() -> None:
    tail = os.urandom(1024 * 1024)
    _, rest = parse(SAMPLES["v2-tcp4"] + tail)
    assert rest == tail
    _, rest = parse_chunks([SAMPLES["v1-tcp4"][:10], SAMPLES["v1-tcp4"][10:] + tail])
    assert rest == tail


def test_an_empty_feed_needs_more() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"") is None
    assert parser.feed(b"") is None
    assert parser.buffered == 0
    assert parser.feed(SAMPLES["v1-unknown"]) is not None


# --- parser state -----------------------------------------------------------------------------


class TestParserState:
    def test_feed_after_the_header_is_a_usage_error(self) -> None:
        parser = ProxyHeaderParser()
        assert parser.feed(SAMPLES["v2-tcp4"] + b"abc") is not None
        with pytest.raises(RuntimeError, match="already parsed"):
            parser.feed(b"more")
        assert parser.remaining() == b"abc"  # untouched, and the same on every call
        assert parser.remaining() == b"abc"

    def test_remaining_before_the_header_is_a_usage_error(self) -> None:
        parser = ProxyHeaderParser()
        with pytest.raises(RuntimeError, match="no complete PROXY header"):
            parser.remaining()
        parser.feed(b"PROXY ")
        with pytest.raises(RuntimeError):
            parser.remaining()
        assert parser.header is None

    def test_unusable_after_an_error(self) -> None:
        parser = ProxyHeaderParser()
        with pytest.raises(ProxyProtocolError) as first:
            parser.feed(b"SSH-2.0-OpenSSH_9.6\r\n")
        assert parser.buffered == 0
        with pytest.raises(ProxyProtocolError, match="unusable after an earlier error") as again:
            parser.feed(SAMPLES["v1-tcp4"])
        assert str(first.value) in str(again.value)
        assert parser.header is None
        with pytest.raises(RuntimeError):
            parser.remaining()

    def test_bad_versions_argument(self) -> None:
        with pytest.raises(ValueError, match="'auto', 'v1' or 'v2'"):
            ProxyHeaderParser("v3")  # type: ignore[arg-type]


class TestVersionRestriction:
    @pytest.mark.parametrize("name", ["v1-tcp4", "v1-unknown"])
    def test_v2_only_refuses_v1(self, name: str) -> None:
        with pytest.raises(ProxyProtocolError, match="v1 header, and this parser accepts v2 only"):
            parse(SAMPLES[name], "v2")
        assert raises_at(SAMPLES[name], "v2") == 1
        assert parse(SAMPLES[name], "v1")[0] == parse(SAMPLES[name])[0]

    @pytest.mark.parametrize("name", ["v2-tcp4", "v2-local"])
    def test_v1_only_refuses_v2(self, name: str) -> None:
        with pytest.raises(ProxyProtocolError, match="v2 header, and this parser accepts v1 only"):
            parse(SAMPLES[name], "v1")
        assert raises_at(SAMPLES[name], "v1") == 1
        assert parse(SAMPLES[name], "v2")[0] == parse(SAMPLES[name])[0]

    @pytest.mark.parametrize(
        ("versions", "expected"),
        [
            ("auto", "'PROXY ...\\r\\n' or the v2 signature"),
            ("v1", "v1 header ('PROXY ...\\r\\n')"),
            ("v2", "v2 header (signature"),
        ],
    )
    def test_no_header_at_all(self, versions: Any, expected: str) -> None:
        with pytest.raises(ProxyProtocolError) as info:
            parse(b"HELO mail.example.com\r\n", versions)
        assert expected in str(info.value)
        assert "got b'HELO mail.example.com\\r\\n'" in str(info.value)


# --- errors -----------------------------------------------------------------------------------


class TestErrors:
    def test_hierarchy(self) -> None:
        assert issubclass(ProxyProtocolError, ProtocolError)
        assert not issubclass(ProxyProtocolError, FramingError)

    def test_message_quotes_at_most_64_bytes(self) -> None:
        data = b"X" * 1000
        with pytest.raises(ProxyProtocolError) as info:
            parse(data)
        assert repr(data[:EXCERPT_SIZE]) + "..." in str(info.value)
        assert repr(data[: EXCERPT_SIZE + 1]) not in str(info.value)

    def test_pickles(self) -> None:
        with pytest.raises(ProxyProtocolError) as info:
            parse(b"nope")
        copy = pickle.loads(pickle.dumps(info.value))
        assert type(copy) is ProxyProtocolError
        assert str(copy) == str(info.value)


# --- CRC32C -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789", 0xE3069283),  # the standard check value
        (b"", 0x00000000),
        # RFC 3720 (iSCSI), appendix B.4
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c(bytearray(data)) == crc32c(memoryview(data)) == expected


# --- encoders ---------------------------------------------------------------------------------


class TestBuildV1:
    def test_spec_example(self) -> None:
        line = build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443))
        assert line == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"

    def test_ipv6_and_ipaddress_objects(self) -> None:
        line = build_v1((IPV6_SOURCE, 1), ("2001:DB8:0:1:0:0:0:2", 2))
        assert line == b"PROXY TCP6 2001:db8::1 2001:db8:0:1::2 1 2\r\n"

    def test_ipv4_mapped_is_written_in_hex_groups(self) -> None:
        """The spec's v1 IPv6 form is hex groups only, whatever Python's str() prefers."""
        line = build_v1(("::ffff:192.0.2.1", 1), ("::1", 2))
        assert line == b"PROXY TCP6 ::ffff:c000:201 ::1 1 2\r\n"
        assert parse(line)[0].source == ("::ffff:192.0.2.1", 1)

    def test_unknown(self) -> None:
        assert build_v1(None, None) == b"PROXY UNKNOWN\r\n"

    @pytest.mark.parametrize(
        ("source", "destination", "message"),
        [
            (("192.0.2.1", 1), None, "both source and destination"),
            (None, ("192.0.2.1", 1), "both source and destination"),
            (("192.0.2.1", 1), ("::1", 2), "not the same IP version"),
            (("example.com", 1), ("192.0.2.1", 2), "IP address literal"),
            (("192.0.2.1", 65536), ("192.0.2.1", 2), "port must be an int in 0-65535"),
            (("192.0.2.1", -1), ("192.0.2.1", 2), "port"),
            (("192.0.2.1", True), ("192.0.2.1", 2), "port"),
            (("192.0.2.1", "80"), ("192.0.2.1", 2), "port"),
            ((3232235521, 1), ("192.0.2.1", 2), "IP address string"),
            (("fe80::1%eth0", 1), ("fe80::2", 2), "zone id"),
            (("192.0.2.1", 1, 0, 0), ("192.0.2.1", 2), "a \\(host, port\\) pair"),
            ("/run/app.sock", "/run/app.sock", "a \\(host, port\\) pair"),
        ],
    )
    def test_invalid(self, source: Any, destination: Any, message: str) -> None:
        with pytest.raises(SerializeError, match=message):
            build_v1(source, destination)


class TestBuildV2:
    @pytest.mark.parametrize(
        ("source", "destination", "datagram", "expected"),
        [
            (("192.168.0.1", 56324), ("192.168.0.11", 443), False, v2(0x21, 0x11, IPV4_BODY)),
            (("192.168.0.1", 56324), ("192.168.0.11", 443), True, v2(0x21, 0x12, IPV4_BODY)),
            (("2001:db8::1", 5000), (IPV6_DESTINATION, 8443), False, v2(0x21, 0x21, IPV6_BODY)),
            (("2001:db8::1", 5000), (IPV6_DESTINATION, 8443), True, v2(0x21, 0x22, IPV6_BODY)),
            ("/run/client.sock", b"/run/app.sock", False, v2(0x21, 0x31, UNIX_BODY)),
            (b"/run/client.sock", "/run/app.sock", True, v2(0x21, 0x32, UNIX_BODY)),
            (None, None, False, v2(0x21, 0x00, b"")),
        ],
    )
    def test_matches_the_hand_built_bytes(
        self, source: Any, destination: Any, datagram: bool, expected: bytes
    ) -> None:
        assert build_v2(source, destination, datagram=datagram) == expected

    def test_local(self) -> None:
        assert build_v2(None, None, command="LOCAL") == v2(0x20, 0x00, b"")
        assert build_v2(None, None, command="LOCAL", datagram=True) == v2(0x20, 0x00, b"")

    def test_tlvs_and_checksum(self) -> None:
        data = build_v2(
            ("192.168.0.1", 56324),
            ("192.168.0.11", 443),
            tlvs=[(PP2Type.ALPN, b"h2"), (0xE0, bytearray(b"x"))],
            checksum=True,
        )
        expected = with_crc(
            v2(0x21, 0x11, IPV4_BODY + tlv(1, b"h2") + tlv(0xE0, b"x") + tlv(3, bytes(4)))
        )
        assert data == expected
        header, _ = parse(data)
        assert header.tlvs[:2] == ((1, b"h2"), (0xE0, b"x"))

    def test_local_with_checksum_is_what_haproxy_sends(self) -> None:
        assert build_v2(None, None, command="LOCAL", checksum=True) == HAPROXY_V2_LOCAL

    def test_an_explicit_crc_tlv_is_written_verbatim(self) -> None:
        """So tests (and fuzzers) can build a wrong checksum."""
        data = build_v2(None, None, tlvs=[(PP2Type.CRC32C, b"\x00\x00\x00\x01")])
        assert data == v2(0x21, 0x00, tlv(3, b"\x00\x00\x00\x01"))
        with pytest.raises(ProxyProtocolError, match="CRC32C mismatch"):
            parse(data)

    def test_largest_body(self) -> None:
        data = build_v2(None, None, tlvs=[(0xE0, bytes(65532))])
        assert len(data) == 16 + 65535

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"source": ("192.0.2.1", 1), "destination": None}, "both source and destination"),
            ({"source": "/a", "destination": ("192.0.2.1", 1)}, "not the same family"),
            ({"source": ("192.0.2.1", 1), "destination": ("::1", 1)}, "same IP version"),
            ({"source": ("192.0.2.1", 70000), "destination": ("192.0.2.1", 1)}, "port"),
            ({"source": "/" + "a" * 108, "destination": "/b"}, "109 bytes is over 108"),
            ({"source": "/a\x00b", "destination": "/b"}, "would not read back the same"),
            ({"source": "\x00", "destination": "/b"}, "would not read back the same"),
            ({"source": "\x00name\x00", "destination": "/b"}, "would not read back the same"),
            ({"source": "/\udc80\ud800", "destination": "/b"}, "cannot be encoded"),
            ({"command": "LOCAL", "source": ("192.0.2.1", 1)}, "LOCAL header carries no"),
            ({"command": "HEALTH"}, "command must be 'PROXY' or 'LOCAL'"),
            ({"tlvs": [(256, b"")]}, "TLV type must be an int in 0-255"),
            ({"tlvs": [(-1, b"")]}, "TLV type"),
            ({"tlvs": [("1", b"")]}, "TLV type"),
            ({"tlvs": [(1, "h2")]}, "TLV value must be bytes"),
            ({"tlvs": [(1, 5)]}, "TLV value must be bytes"),
            ({"tlvs": [(0xE0, bytes(65536))]}, "65536 bytes is over 65535"),
            ({"tlvs": [(0xE0, bytes(65533))]}, "body of 65536 bytes is over 65535"),
            ({"tlvs": [(3, bytes(4))], "checksum": True}, "checksum=True would add another"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any], message: str) -> None:
        arguments = {"source": None, "destination": None, **kwargs}
        with pytest.raises(SerializeError, match=message):
            build_v2(**arguments)


# --- trusted proxies --------------------------------------------------------------------------


class TestTrustedProxies:
    @pytest.fixture
    def trusted(self) -> TrustedProxies:
        return TrustedProxies(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "unix"])

    @pytest.mark.parametrize(
        "peer",
        [
            ("10.0.0.0", 1),
            ("10.255.255.255", 65535),
            ("192.0.2.7", 80),
            ("2001:db8::1", 443),
            ("2001:db8:ffff::1", 443, 0, 0),  # an IPv6 peername as sockets return it
            ("::ffff:10.1.2.3", 5000),  # IPv4-mapped, on a dual-stack socket
            ("2001:db8::1%eth0", 1),  # a zone id
            ipaddress.IPv4Address("10.9.9.9"),
            ipaddress.IPv6Address("2001:db8::9"),
            "/run/proxy.sock",
            "",  # an unnamed Unix peer, the usual case
            b"\x00abstract",
        ],
        ids=repr,
    )
    def test_trusted(self, trusted: TrustedProxies, peer: Any) -> None:
        assert trusted.is_trusted(peer) is True

    @pytest.mark.parametrize(
        "peer",
        [
            ("11.0.0.1", 1),
            ("192.0.2.8", 80),
            ("9.255.255.255", 1),
            ("2001:db9::1", 443),
            ("::ffff:11.1.2.3", 5000),
            ("::1", 1),
            ("127.0.0.1", 1),
            ipaddress.IPv4Address("192.0.2.6"),
        ],
        ids=repr,
    )
    def test_not_trusted(self, trusted: TrustedProxies, peer: Any) -> None:
        assert trusted.is_trusted(peer) is False

    def test_unix_peers_only_with_the_unix_entry(self) -> None:
        trusted = TrustedProxies(["10.0.0.0/8"])
        assert trusted.is_trusted("/run/proxy.sock") is False
        assert trusted.is_trusted("") is False
        assert TrustedProxies(["UNIX"]).is_trusted("") is True

    def test_a_string_is_never_an_ip_address(self) -> None:
        """A Unix client can bind its socket to a path named "10.0.0.1": it stays a Unix peer."""
        assert TrustedProxies(["10.0.0.0/8"]).is_trusted("10.0.0.1") is False
        assert TrustedProxies(["unix"]).is_trusted("8.8.8.8") is True  # as a Unix path

    def test_mapped_network_entry(self) -> None:
        trusted = TrustedProxies(["::ffff:10.0.0.0/104"])
        assert trusted.is_trusted(("::ffff:10.1.2.3", 1))
        assert not trusted.is_trusted(("10.1.2.3", 1))

    def test_empty_trusts_nobody(self) -> None:
        trusted = TrustedProxies([])
        assert not trusted.is_trusted(("127.0.0.1", 1))
        assert not trusted.is_trusted("")

    def test_whitespace_and_any_iterable(self) -> None:
        trusted = TrustedProxies(entry for entry in [" 10.0.0.0/8 ", "unix\n"])
        assert trusted.is_trusted(("10.0.0.1", 1))
        assert trusted.is_trusted("")
        assert repr(trusted) == "TrustedProxies(['10.0.0.0/8', 'unix'])"

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            ("10.0.0.1/8", "has host bits set"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("10.0.0", "10.0.0"),
            ("example.com", "expected an IP network such as '10.0.0.0/8'"),
            ("", "''"),
            ("unix:/run/x", "unix:/run/x"),
            ("2001:db8::/129", "2001:db8::/129"),
        ],
    )
    def test_bad_entries(self, entry: str, message: str) -> None:
        with pytest.raises(ValueError, match=message) as info:
            TrustedProxies(["10.0.0.0/8", entry])
        assert f"invalid trusted proxy entry {entry!r}" in str(info.value)

    def test_one_string_instead_of_a_list(self) -> None:
        with pytest.raises(TypeError, match="iterable of strings"):
            TrustedProxies("10.0.0.0/8")

    def test_non_string_entry(self) -> None:
        with pytest.raises(TypeError, match="must be strings"):
            TrustedProxies([ipaddress.ip_network("10.0.0.0/8")])  # type: ignore[list-item]

    @pytest.mark.parametrize("peer", [("example.com", 1), (), (167772161, 1)], ids=repr)
    def test_bad_tuple_peer(self, trusted: TrustedProxies, peer: Any) -> None:
        with pytest.raises(ValueError, match="with an IP host"):
            trusted.is_trusted(peer)

    @pytest.mark.parametrize("peer", [None, 167772161, ["10.0.0.1", 1]], ids=repr)
    def test_bad_peer_type(self, trusted: TrustedProxies, peer: Any) -> None:
        with pytest.raises(TypeError, match="expected a \\(host, port\\) tuple"):
            trusted.is_trusted(peer)


# --- a live HAProxy ---------------------------------------------------------------------------

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def backend() -> Iterator[socket.socket]:
    """Where HAProxy relays to: a listening socket of ours."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(5)
        yield listener


def _start_haproxy(tmp_path: Path, frontend: str, server: str) -> subprocess.Popen[bytes]:
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n"
        "    timeout server 5s\n    timeout check 2s\n"
        f"frontend fe\n{frontend}\n    default_backend be\n"
        f"backend be\n    server s1 {server}\n"
    )
    assert HAPROXY is not None
    return subprocess.Popen(
        [HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _connect(host: str, port: int) -> socket.socket:
    deadline = time.monotonic() + 5
    while True:
        try:
            return socket.create_connection((host, port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _read_header(connection: socket.socket, parser: ProxyHeaderParser) -> ProxyHeader:
    connection.settimeout(5)
    while True:
        data = connection.recv(4096)
        assert data, "HAProxy closed before a complete header"
        header = parser.feed(data)
        if header is not None:
            return header


def _ipv6_loopback() -> bool:
    try:
        _free_port("::1")
    except OSError:
        return False
    return True


@needs_haproxy
@pytest.mark.parametrize(
    ("client_host", "options", "family", "version"),
    [
        ("127.0.0.1", "send-proxy", "TCP4", 1),
        ("127.0.0.1", "send-proxy-v2", "TCP4", 2),
        ("127.0.0.1", "send-proxy-v2 proxy-v2-options crc32c,unique-id", "TCP4", 2),
        ("::1", "send-proxy", "TCP6", 1),
        ("::1", "send-proxy-v2 proxy-v2-options crc32c", "TCP6", 2),
    ],
)
def test_live_haproxy_relays_the_client(
    tmp_path: Path,
    backend: socket.socket,
    client_host: str,
    options: str,
    family: str,
    version: int,
) -> None:
    if client_host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    port = _free_port(client_host)
    bind = f"[{client_host}]:{port}" if ":" in client_host else f"{client_host}:{port}"
    process = _start_haproxy(
        tmp_path,
        f"    bind {bind}\n    unique-id-format id-%ci-%cp",
        f"127.0.0.1:{backend.getsockname()[1]} {options}",
    )
    try:
        with _connect(client_host, port) as client:
            client.sendall(b"hello from the client")
            connection, _ = backend.accept()
            with connection:
                parser = ProxyHeaderParser()
                header = _read_header(connection, parser)
                received = parser.remaining()
                while len(received) < len(b"hello from the client"):
                    received += connection.recv(4096)
            client_address = client.getsockname()[:2]
            frontend_address = client.getpeername()[:2]
    finally:
        _stop(process)
    assert (header.version, header.command, header.family) == (version, "PROXY", family)
    assert header.source == client_address
    assert header.destination == frontend_address
    assert received == b"hello from the client"
    if "unique-id" in options:
        expected_id = f"id-{client_address[0]}-{client_address[1]}".encode()
        assert header.get_tlv(PP2Type.UNIQUE_ID) == expected_id
    if "crc32c" in options:
        assert header.get_tlv(PP2Type.CRC32C) is not None


@needs_haproxy
def test_live_haproxy_health_check_is_local(tmp_path: Path, backend: socket.socket) -> None:
    port = _free_port("127.0.0.1")
    process = _start_haproxy(
        tmp_path,
        f"    bind 127.0.0.1:{port}",
        f"127.0.0.1:{backend.getsockname()[1]} send-proxy-v2 proxy-v2-options crc32c "
        "check check-send-proxy inter 100ms",
    )
    try:
        connection, _ = backend.accept()
        with connection:
            header = _read_header(connection, ProxyHeaderParser("v2"))
    finally:
        _stop(process)
    assert header.command == "LOCAL"
    assert header.is_local
    assert header.source is None
    assert header.get_tlv(PP2Type.CRC32C) is not None
