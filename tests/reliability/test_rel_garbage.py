"""Garbage on the wire: bad messages, oversized frames, decompression bombs, TLS junk.

Each bad input closes its own connection only, costs a bounded amount of memory (measured in
/proc on a server subprocess, without a manual gc), never reaches the handler when it is not a
message, and is no server error (no ERROR log line).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
import zlib

import pytest

from protocols import DeserializeError, JSONSerializer, StreamProtocol

from reliability_helpers import (
    MIB,
    ServerProcess,
    Servers,
    connect,
    exchange,
    line,
    many,
    non_blocking_send,
    over_loops,
    recv_line,
    server_spec,
    wait_closed,
)

#: A zlib bomb: 64 MiB of zeros in about 64 KB (the server's limit is 1 MiB decompressed).
BOMB = zlib.compress(b"0" * (64 * MIB), 9)
#: Invalid JSON lines of about 1 MB (under the 1 MiB frame limit): a long string with a bad
#: escape at its end, and a long array with a bad element at its end.
BAD_MEGABYTE_LINES = (
    b'{"a": "' + b"x" * 999_980 + b'\\q"}\n',
    b"[" + b"1," * 499_990 + b"oops]\n",
)


def frame(payload: bytes) -> bytes:
    """A frame of the servers' LengthPrefixFramer (4-byte big-endian length)."""
    return struct.pack(">I", len(payload)) + payload


def no_errors(server: ServerProcess) -> None:
    """The server logged nothing at ERROR or above."""
    errors = [r for r in server.records() if r.get("level") in ("error", "critical")]
    assert not errors, errors


@over_loops()
def test_garbage_and_bombs_leave_memory_bounded(servers: Servers, loop: str) -> None:
    """20 invalid 1 MB JSON lines and 20 refused zlib bombs: bounded peak RSS, no manual gc.

    Measured before the fix (peak / retained RSS growth): asyncio +32 / +24 MiB, uvloop
    +40 / +21-40 MiB, trio +45 / +45 MiB. With every bad message freed at once (a gc forced
    after each connection, as an estimate of the fixed server): +7.5 / +2-6 MiB.
    """
    server = servers.start(
        loop, server_spec("Echo"), server_spec("Echo", protocol="zlib-json-length")
    )
    lines_address, zlib_address = server.address(0), server.address(1)
    assert exchange(lines_address, "warm") == "warm"
    with contextlib.closing(connect(zlib_address)) as sock:
        sock.sendall(frame(zlib.compress(b'"warm"')))
        assert sock.recv(100) == frame(zlib.compress(b'"warm"'))
    server.wait_quiet()
    baseline = server.rss()
    server.reset_peak()
    for index in range(20):
        with contextlib.closing(connect(lines_address)) as sock:
            sock.sendall(BAD_MEGABYTE_LINES[index % 2])
            assert recv_line(sock, bytearray()) is None  # closed, no reply
        with contextlib.closing(connect(zlib_address)) as sock:
            sock.sendall(frame(BOMB))
            assert recv_line(sock, bytearray()) is None
    server.wait_quiet()
    growth = server.peak() - baseline
    assert growth < 20 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"
    assert exchange(lines_address, "still served") == "still served"
    no_errors(server)


@over_loops()
def test_huge_length_prefixes_are_refused_without_allocating(servers: Servers, loop: str) -> None:
    """Length headers of 2^31 and 2^32-1 bytes: refused at once, no large allocation."""
    server = servers.start(loop, server_spec("Echo", protocol="json-length"))
    address = server.address()
    server.wait_quiet()
    baseline = server.rss()
    server.reset_peak()
    for length in (2**31, 2**32 - 1):
        with contextlib.closing(connect(address)) as sock:
            with contextlib.suppress(OSError):  # the server may close before all is sent
                sock.sendall(struct.pack(">I", length) + b"[" * 1000)
            assert wait_closed(sock, 2.0) < 2.0
    growth = server.peak() - baseline
    assert growth < 4 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"
    with contextlib.closing(connect(address)) as sock:
        sock.sendall(frame(b'"ok"'))
        assert sock.recv(100) == frame(b'"ok"')
    no_errors(server)


@over_loops()
def test_endless_line_is_refused_past_the_frame_limit(servers: Servers, loop: str) -> None:
    """A line that never ends: refused once past max_frame_size (1 MiB), memory bounded."""
    server = servers.start(loop, server_spec("Echo"))
    address = server.address()
    server.wait_quiet()
    baseline = server.rss()
    server.reset_peak()
    with contextlib.closing(connect(address)) as sock:
        sent = non_blocking_send(sock, b"x" * (16 * MIB), 3.0)
        assert sent < 16 * MIB  # the server stopped taking it
        wait_closed(sock, 3.0)
    growth = server.peak() - baseline
    assert growth < 8 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"
    assert exchange(address, "ok") == "ok"
    no_errors(server)


#: Complete frames that are not JSON (each closes its connection, without a reply).
MALFORMED = [
    b"{\n",
    b"}\n",
    b'{"a":}\n',
    b"\xff\xfe\n",
    b"\x00\n",
    b"\r\n",
    b"\n",
    b"NaN\n",
    b"tru\n",
    b"[1,2\n",
    b"[1,]\n",
    b"01\n",
    b"-\n",
    b"1e99999\n",
    b'{"a" 1}\n',
    b'{"a":1}{"b":2}\n',
    b'"\xc3\x28"\n',
    b'"\x1b[31m"\n',
    b'"\\ud800"\n',
    b"[" * 10_000 + b"\n",
    b"[" * 100_000 + b"\n",
    b'"' + b"x" * (2 * MIB) + b'"\n',  # over max_frame_size
]


def test_the_malformed_corpus_is_malformed() -> None:
    protocol = StreamProtocol(JSONSerializer())
    for data in MALFORMED[:-1]:
        decoder = protocol.decoder()
        decoder.feed(data)
        with pytest.raises(DeserializeError):
            list(decoder)


@pytest.mark.parametrize("delivery", ["whole", "byte-by-byte"])
@over_loops()
def test_malformed_frames_close_only_their_connection(
    servers: Servers, loop: str, delivery: str
) -> None:
    server = servers.start(loop, server_spec("Echo"))
    address = server.address()
    with contextlib.closing(connect(address)) as witness:
        buffer = bytearray()
        for index, data in enumerate(MALFORMED):
            with contextlib.closing(connect(address)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with contextlib.suppress(OSError):  # closed before the end: fine
                    if delivery == "whole" or len(data) > 100:
                        sock.sendall(data)
                    else:
                        for byte in data:
                            sock.send(bytes([byte]))
                assert recv_line(sock, bytearray()) is None, data[:20]
            witness.sendall(line(index))
            assert recv_line(witness, buffer) == str(index).encode()
    no_errors(server)


def client_hello_prefix(size: int) -> bytes:
    """The first ``size`` bytes of a real TLS ClientHello."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()[:size]


@over_loops()
def test_tls_junk_and_stalled_handshakes_never_reach_the_handler(
    servers: Servers, loop: str, tls_files: tuple[dict[str, str], ssl.SSLContext]
) -> None:
    files, client_context = tls_files
    options = {"ssl_handshake_timeout": 1.0}
    server = servers.start(loop, server_spec("Reached", tls=files, options=options))
    address = server.address()
    tls = client_context.wrap_socket(connect(address), server_hostname="localhost")
    with contextlib.closing(tls):
        tls.sendall(line("warm-up"))
        assert recv_line(tls, bytearray()) == b'"warm-up"'
    server.wait_event("on_connection")
    # One failed handshake first: uvloop keeps one descriptor (/dev/null) from the first one
    # on, for good. What is measured below is what each connection leaves behind.
    with contextlib.closing(connect(address)) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        wait_closed(sock, 5.0)
    baseline = server.settled_fds()
    with many([connect(address) for _ in range(3)]) as (garbage, idle, half):
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        half.sendall(client_hello_prefix(40))
        started = time.monotonic()
        for sock in (garbage, idle, half):
            wait_closed(sock, 5.0)
        assert time.monotonic() - started < 5.0  # the 1 s handshake deadline, generously
    server.wait_fds(baseline)
    # Only the real TLS clients reached the handler.
    tls = client_context.wrap_socket(connect(address), server_hostname="localhost")
    with contextlib.closing(tls):
        tls.sendall(line("over TLS"))
        assert recv_line(tls, bytearray()) == b'"over TLS"'
    server.wait_event("on_connection", count=2)
    assert server.events().count("on_connection") == 2
    no_errors(server)


@over_loops()
def test_resets_and_half_closes_leave_no_descriptor_behind(servers: Servers, loop: str) -> None:
    """100 resets mid-frame and 100 half-closes: the descriptor count returns to baseline."""
    server = servers.start(loop, server_spec("Echo"))
    address = server.address()
    assert exchange(address, "warm") == "warm"
    baseline = server.settled_fds()
    for index in range(100):
        sock = connect(address)
        sock.sendall(b'{"partial": ' if index % 2 else line(index) + b'{"part')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    for index in range(100):
        with contextlib.closing(connect(address)) as sock:
            sock.sendall(line(index))
            sock.shutdown(socket.SHUT_WR)
            buffer = bytearray()
            assert recv_line(sock, buffer) == str(index).encode()  # still answered
            assert recv_line(sock, buffer) is None  # then closed
    server.wait_fds(baseline, timeout=5.0, what="after 200 resets and half-closes")
    assert exchange(address, "after") == "after"
    no_errors(server)
