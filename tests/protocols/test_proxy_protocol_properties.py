"""Property tests (hypothesis) of protocols.proxy.

- Any header the encoders build (v1, v2 of every family and command, TLVs, checksum), followed
  by any payload and delivered in any chunking, parses to the same header, returned by exactly
  the read that completes it, and the payload comes back intact.
- Random bytes, random bytes behind a valid start, and valid headers with bytes flipped,
  inserted or cut only ever give a header, "need more", or ProxyProtocolError; the parser never
  holds more than 4096 bytes, and a header, when found, leaves a suffix of the input.
- CRC32C against a bit-by-bit reference; TrustedProxies against ipaddress membership.

Examples are derandomized (the same on every run): the module runs in a few seconds.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.proxy import (
    V2_MAX_HEADER_SIZE,
    V2_SIGNATURE,
    Family,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
    TrustedProxies,
    build_v1,
    build_v2,
    crc32c,
)

from protocol_helpers import split_at

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_text(address: IPAddress) -> str:
    """How the parser reports a host: canonical, IPv4-mapped dotted as sockets show it."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


PORTS = st.integers(0, 65535)
# Mapped addresses often: they take a different path in both the encoder and the parser.
IPV6 = st.one_of(
    st.ip_addresses(v=6),
    st.ip_addresses(v=4).map(lambda v4: ipaddress.IPv6Address(f"::ffff:{v4}")),
)
IP_PAIRS = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(IPV6, IPV6),
)
PATH_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=40,
)
UNIX_PATHS = st.one_of(
    PATH_TEXT,
    PATH_TEXT.filter(bool).map(lambda name: "\x00" + name),  # Linux abstract names
).filter(lambda path: len(os.fsencode(path)) <= 108)
TLVS = st.lists(
    st.tuples(
        st.integers(0, 255).filter(lambda kind: kind != 0x03),  # CRC32C comes from checksum=
        st.binary(max_size=64),
    ),
    max_size=5,
)


@st.composite
def encoded_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader, bool]:
    """A header from an encoder, the ProxyHeader it must parse to, and whether a CRC32C TLV
    was appended (its value is the parser's to check, not the expectation's)."""
    if draw(st.booleans()):
        if draw(st.integers(0, 9)) == 0:
            return build_v1(None, None), ProxyHeader(1, "PROXY", "UNKNOWN", None, None), False
        (source, destination), ports = draw(IP_PAIRS), draw(st.tuples(PORTS, PORTS))
        arguments: list[tuple[str | IPAddress, int]] = [
            (source, ports[0]),
            (destination, ports[1]),
        ]
        if draw(st.booleans()):  # as text, in upper case
            arguments = [(str(ip).upper(), port) for ip, port in arguments]
        family: Family = "TCP4" if source.version == 4 else "TCP6"
        expected = ProxyHeader(
            1,
            "PROXY",
            family,
            (host_text(source), ports[0]),
            (host_text(destination), ports[1]),
        )
        return build_v1(*arguments), expected, False

    tlvs = tuple(draw(TLVS))
    checksum = draw(st.booleans())
    datagram = draw(st.booleans())
    kind = draw(st.sampled_from(["ip", "unix", "unspec", "local"]))
    if kind == "local":
        data = build_v2(None, None, command="LOCAL", tlvs=tlvs, checksum=checksum)
        return data, ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, tlvs), checksum
    if kind == "unspec":
        data = build_v2(None, None, tlvs=tlvs, datagram=datagram, checksum=checksum)
        return data, ProxyHeader(2, "PROXY", "UNKNOWN", None, None, tlvs), checksum
    if kind == "unix":
        source_path, destination_path = draw(UNIX_PATHS), draw(UNIX_PATHS)
        data = build_v2(
            source_path, destination_path, tlvs=tlvs, datagram=datagram, checksum=checksum
        )
        family = "UNIX_DGRAM" if datagram else "UNIX"
        return data, ProxyHeader(2, "PROXY", family, source_path, destination_path, tlvs), checksum
    (source, destination), ports = draw(IP_PAIRS), draw(st.tuples(PORTS, PORTS))
    data = build_v2(
        (source, ports[0]),
        (destination, ports[1]),
        tlvs=tlvs,
        datagram=datagram,
        checksum=checksum,
    )
    if source.version == 4:
        family = "UDP4" if datagram else "TCP4"
    else:
        family = "UDP6" if datagram else "TCP6"
    expected = ProxyHeader(
        2,
        "PROXY",
        family,
        (host_text(source), ports[0]),
        (host_text(destination), ports[1]),
        tlvs,
    )
    return data, expected, checksum


def without_checksum(header: ProxyHeader) -> ProxyHeader:
    """``header`` minus its last TLV, which must be a 4-byte CRC32C."""
    kind, value = header.tlvs[-1]
    assert kind == 0x03
    assert len(value) == 4
    return dataclasses.replace(header, tlvs=header.tlvs[:-1])


@PROPERTY_SETTINGS
@given(encoded_headers(), st.binary(max_size=100), st.data())
def test_any_header_any_payload_any_chunking(
    case: tuple[bytes, ProxyHeader, bool], payload: bytes, data: st.DataObject
) -> None:
    encoded, expected, checksum = case
    stream = encoded + payload
    cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8))
    parser = ProxyHeaderParser()
    received = 0
    chunks = split_at(stream, cuts)
    for index, chunk in enumerate(chunks):
        received += len(chunk)
        header = parser.feed(chunk)
        if header is None:
            assert received < len(encoded)  # no header before all of it is in
            assert parser.buffered == received
            continue
        assert received >= len(encoded)  # returned by the read that completes it
        assert parser.header is header
        assert parser.remaining() + b"".join(chunks[index + 1 :]) == payload
        break
    else:
        raise AssertionError("no header")
    assert (without_checksum(header) if checksum else header) == expected


def feed_and_check(parser: ProxyHeaderParser, data: bytes, cuts: list[int]) -> None:
    """Feed ``data`` cut at ``cuts``: only a header, None or ProxyProtocolError may come, the
    buffer stays bounded, and a header leaves a suffix of what was fed."""
    fed = b""
    for chunk in split_at(data, cuts):
        fed += chunk
        try:
            header = parser.feed(chunk)
        except ProxyProtocolError:
            assert parser.buffered == 0
            return
        assert parser.buffered < V2_MAX_HEADER_SIZE
        if header is not None:
            assert isinstance(header, ProxyHeader)
            assert fed.endswith(parser.remaining())
            assert len(parser.remaining()) < len(fed)
            assert header.version in (1, 2)
            assert header.is_local == (header.source is None) == (header.destination is None)
            return
        assert parser.buffered == len(fed)


VERSIONS = st.sampled_from(["auto", "v1", "v2"])
CUTS = st.lists(st.integers(1, 5000), max_size=6)
HOSTILE = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda rest: b"PROXY " + rest),
    st.binary(max_size=120).map(lambda rest: b"PROXY TCP4 " + rest),
    st.binary(max_size=120).map(lambda rest: b"PROXY TCP6 " + rest),
    st.binary(max_size=120).map(lambda rest: b"PROXY UNKNOWN" + rest),
    st.binary(max_size=400).map(lambda rest: V2_SIGNATURE + rest),
    # A plausible fixed part (any command/family byte, a length that fits) and a random body:
    # reaches the address and TLV decoders.
    st.tuples(st.integers(0x20, 0x21), st.integers(0, 255), st.binary(max_size=300)).map(
        lambda t: V2_SIGNATURE + bytes(t[:2]) + len(t[2]).to_bytes(2, "big") + t[2]
    ),
)


@settings(PROPERTY_SETTINGS, max_examples=500)
@given(HOSTILE, VERSIONS, CUTS)
def test_hostile_bytes_only_raise_proxy_protocol_error(
    data: bytes, versions: Any, cuts: list[int]
) -> None:
    feed_and_check(ProxyHeaderParser(versions), data, cuts)


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    encoded, _, _ = draw(encoded_headers())
    data = bytearray(encoded + draw(st.binary(max_size=20)))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=3))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 3))]
        else:
            del data[position:]
    return bytes(data)


@settings(PROPERTY_SETTINGS, max_examples=500)
@given(mutated_headers(), VERSIONS, CUTS)
def test_damaged_headers_only_raise_proxy_protocol_error(
    data: bytes, versions: Any, cuts: list[int]
) -> None:
    feed_and_check(ProxyHeaderParser(versions), data, cuts)


def reference_crc32c(data: bytes) -> int:
    """Bit by bit, no table: the definition (reflected Castagnoli polynomial)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(st.binary(max_size=300))
def test_crc32c_matches_the_bitwise_definition(data: bytes) -> None:
    assert crc32c(data) == reference_crc32c(data)


NETWORKS = st.one_of(
    st.ip_addresses(v=4).flatmap(
        lambda ip: st.integers(0, 32).map(
            lambda prefix: ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        )
    ),
    st.ip_addresses(v=6).flatmap(
        lambda ip: st.integers(0, 128).map(
            lambda prefix: ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        )
    ),
)


@PROPERTY_SETTINGS
@given(st.lists(NETWORKS, max_size=4), st.ip_addresses(), PORTS)
def test_trusted_proxies_is_network_membership(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    address: IPAddress,
    port: int,
) -> None:
    trusted = TrustedProxies([str(network) for network in networks])
    expected = any(address in network for network in networks)
    assert trusted.is_trusted((str(address), port)) is expected
    assert trusted.is_trusted(address) is expected
    if address.version == 4:  # the same peer seen through a dual-stack socket
        mapped = ipaddress.IPv6Address(f"::ffff:{address}")
        expected_mapped = expected or any(mapped in network for network in networks)
        assert trusted.is_trusted((str(mapped), port)) is expected_mapped
    assert trusted.is_trusted(str(address)) is False  # a string is a Unix peer
