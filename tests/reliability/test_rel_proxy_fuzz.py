"""Fuzzing the PROXY protocol parser: what tests/protocols/test_proxy_protocol_properties.py
does not already check.

That module checks that encoded headers parse back in any chunking (up to 8 cuts), and that
hostile or damaged bytes only give a header, "need more" or ProxyProtocolError. Here:

- the outcome does not depend on how the bytes arrive: delivered whole, byte by byte, in any
  split with empty chunks, as ``bytes``, ``bytearray`` or ``memoryview``, the result is the same
  (the same header and the same bytes after it, the same error-or-not, the same bytes held);
- after an error the parser stays refused: every later feed, even empty, raises
  ProxyProtocolError and nothing else, and holds nothing;
- an empty feed never changes anything.

And the atheris target (``fuzz_atheris.py``), run briefly where atheris is installed.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.proxy import (
    V2_SIGNATURE,
    ProxyHeaderParser,
    ProxyProtocolError,
    build_v1,
    build_v2,
)

from reliability_helpers import HERE, child_env

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PORTS = st.integers(0, 65535)


@st.composite
def valid_headers(draw: st.DrawFn) -> bytes:
    """A header from the encoders: v1 or v2, IPv4 or IPv6, PROXY or LOCAL, with TLVs."""
    version = draw(st.sampled_from(["v1", "v2", "v2-local", "v1-unknown"]))
    if version == "v1-unknown":
        return build_v1(None, None)
    if version == "v2-local":
        return build_v2(None, None, command="LOCAL")
    hosts = st.ip_addresses(v=4) if draw(st.booleans()) else st.ip_addresses(v=6)
    source = (str(draw(hosts)), draw(PORTS))
    destination = (str(draw(hosts)), draw(PORTS))
    if version == "v1":
        return build_v1(source, destination)
    tlvs = tuple(
        draw(st.lists(st.tuples(st.integers(0x04, 0xFF), st.binary(max_size=40)), max_size=3))
    )
    return build_v2(source, destination, tlvs=tlvs, checksum=draw(st.booleans()))


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid header with a byte flipped, inserted or cut, or truncated."""
    data = bytearray(draw(valid_headers()))
    position = draw(st.integers(0, len(data) - 1))
    action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    if action == "flip":
        data[position] ^= 1 << draw(st.integers(0, 7))
    elif action == "insert":
        data[position:position] = draw(st.binary(min_size=1, max_size=3))
    elif action == "delete":
        del data[position]
    else:
        del data[position:]
    return bytes(data)


STREAMS = st.one_of(
    st.tuples(valid_headers(), st.binary(max_size=60)).map(lambda pair: pair[0] + pair[1]),
    st.tuples(valid_headers(), valid_headers()).map(lambda pair: pair[0] + pair[1]),
    damaged(),
    st.binary(max_size=300),
    st.binary(max_size=120).map(lambda rest: b"PROXY " + rest),
    st.binary(max_size=300).map(lambda rest: V2_SIGNATURE + rest),
    st.integers(0, 200).map(lambda n: b"PROXY TCP4 " + b"1" * n),  # v1 over its 107 bytes
)
VERSIONS = st.sampled_from(["auto", "v1", "v2"])
CHUNK_TYPES = st.sampled_from([bytes, bytearray, memoryview])


def outcome(parser: ProxyHeaderParser, chunks: list[Any]) -> tuple[Any, ...]:
    """("header", header, bytes after it) | ("error",) | ("more", bytes held)."""
    for index, chunk in enumerate(chunks):
        try:
            header = parser.feed(chunk)
        except ProxyProtocolError:
            assert parser.header is None
            assert parser.buffered == 0
            return ("error",)
        if header is not None:
            rest = b"".join(bytes(later) for later in chunks[index + 1 :])
            return ("header", header, parser.remaining() + rest)
    return ("more", parser.buffered)


@st.composite
def deliveries(draw: st.DrawFn, data: bytes) -> list[Any]:
    """``data`` cut into chunks: byte by byte, or at random offsets with empty chunks between,
    each chunk as bytes, bytearray or memoryview."""
    if draw(st.booleans()):
        pieces = [data[i : i + 1] for i in range(len(data))]
    else:
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [draw(CHUNK_TYPES)(piece) for piece in pieces]


@SETTINGS
@given(STREAMS, VERSIONS, st.data())
def test_outcome_does_not_depend_on_how_the_bytes_arrive(
    data: bytes, versions: Any, draw: st.DataObject
) -> None:
    whole = outcome(ProxyHeaderParser(versions), [data])
    chunks = draw.draw(deliveries(data))
    assert outcome(ProxyHeaderParser(versions), chunks) == whole


@SETTINGS
@given(STREAMS, VERSIONS, st.lists(st.binary(max_size=50), min_size=1, max_size=4))
def test_after_an_error_every_feed_raises_protocol_error(
    data: bytes, versions: Any, later: list[bytes]
) -> None:
    parser = ProxyHeaderParser(versions)
    if outcome(parser, [data]) != ("error",):
        return
    for chunk in [b"", *later]:
        with pytest.raises(ProxyProtocolError):
            parser.feed(chunk)
        assert parser.header is None
        assert parser.buffered == 0


@SETTINGS
@given(STREAMS, VERSIONS, st.integers(0, 400))
def test_an_empty_feed_changes_nothing(data: bytes, versions: Any, cut: int) -> None:
    parser = ProxyHeaderParser(versions)
    before = outcome(parser, [data[:cut]])
    if before[0] != "more":
        return
    assert parser.feed(b"") is None
    assert parser.feed(memoryview(b"")) is None
    assert parser.buffered == before[1]
    assert outcome(parser, [data[cut:]]) == outcome(ProxyHeaderParser(versions), [data])


def test_v1_tcp4_line_with_an_ipv6_text_is_refused() -> None:
    """A v1 line claiming TCP4 with an IPv6 text: refused as ProxyProtocolError, nothing else."""
    mapped = str(ipaddress.IPv6Address("::ffff:10.0.0.1"))
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderParser().feed(f"PROXY TCP4 {mapped} 10.0.0.2 1 2\r\n".encode())


ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.skipif(not ATHERIS, reason="atheris is not installed (pip install atheris)")
def test_atheris_target_runs_clean() -> None:
    """``fuzz_atheris.py`` for 20,000 inputs: no crash, no exception but the allowed."""
    completed = subprocess.run(
        [sys.executable, str(HERE / "fuzz_atheris.py"), "-runs=20000", "-seed=1"],
        env=child_env(),
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]
