"""Slow peers: a frame trickled a byte at a time must not hold a connection open forever.

Issue 12: ``frame_timeout`` (once the first byte of a frame has arrived, the whole frame must
arrive within it, whatever the trickle; default 30 s) and ``yield RecvParams(timeout=t)``
bounding the time to a *complete* request (trickled bytes do not extend it). Expiry closes the
connection; nothing else is affected.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time

from reliability_helpers import (
    Servers,
    cli_address,
    cli_command,
    closed_by_peer,
    connect,
    exchange,
    over_loops,
    recv_line,
    server_spec,
    wait_until,
)

#: One byte every TRICKLE_INTERVAL seconds, of a frame that never completes.
TRICKLE_INTERVAL = 0.3
#: The deadline under test is 1 s: closed within this many seconds is a pass.
CLOSE_BOUND = 3.0


def trickle_until_closed(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Send a never-ending JSON string, one byte per TRICKLE_INTERVAL, until the server closes
    the connection or ``limit`` seconds pass; return (seconds elapsed, what the server sent)."""
    sock.sendall(b'{"trickle": "')
    started = time.monotonic()
    received = bytearray()
    while time.monotonic() - started < limit:
        readable, _, _ = select.select([sock], [], [], TRICKLE_INTERVAL)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return time.monotonic() - started, bytes(received)
            received += chunk
            continue
        try:
            sock.sendall(b"x")
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started, bytes(received)
    raise AssertionError(f"still open after {limit} s of trickling (received {received!r})")


@over_loops()
def test_frame_timeout_closes_a_trickled_frame(servers: Servers, loop: str) -> None:
    """frame_timeout=1: a slow but complete frame is served, a silent connection stays, a frame
    trickled a byte per 0.3 s is closed about 1 s after its first byte.

    Measured before the fix: there was no frame_timeout; a trickle kept its connection forever.
    """
    server = servers.start(loop, server_spec("Echo", options={"frame_timeout": 1.0}))
    address = server.address()
    assert exchange(address, "warm-up") == "warm-up"
    baseline = server.settled_fds()
    # Silent (no byte at all) for longer than frame_timeout: not a frame, the connection stays.
    with contextlib.closing(connect(address)) as silent:
        opened = time.monotonic()
        with contextlib.closing(connect(address)) as sock:
            # A frame sent slowly but completely within the deadline is served.
            for byte in b'"slow"\n':
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
            assert recv_line(sock, bytearray()) == b'"slow"'
            # A frame that never completes: closed about frame_timeout after its first byte.
            elapsed, _ = trickle_until_closed(sock, CLOSE_BOUND)
            assert elapsed > 0.5  # not before the deadline
        time.sleep(max(0.0, opened + 1.5 - time.monotonic()))  # usually nothing left to wait
        assert not closed_by_peer(silent)
        silent.sendall(b'"still here"\n')
        assert recv_line(silent, bytearray()) == b'"still here"'
    server.wait_fds(baseline)
    assert exchange(address, "others are served") == "others are served"


@over_loops()
def test_recv_params_timeout_bounds_a_complete_request(servers: Servers, loop: str) -> None:
    """``yield RecvParams(timeout=1)`` and a trickled request: TimeoutError about 1 s later.

    Measured before the fix: every trickled byte restarted the timeout; it never expired.
    """
    server = servers.start(loop, server_spec("RequestTimeout", handler_args={"timeout": 1.0}))
    address = server.address()
    assert exchange(address, "in time") == "in time"
    with contextlib.closing(connect(address)) as sock:
        elapsed, received = trickle_until_closed(sock, CLOSE_BOUND)
    assert elapsed > 0.5  # not before the deadline
    assert [json.loads(reply) for reply in received.splitlines()] == ["timeout"]
    assert server.wait_event("request timeout")
    assert exchange(address, "others are served") == "others are served"


@over_loops()
def test_cli_frame_and_write_timeouts(servers: Servers, loop: str) -> None:
    """``serve --frame-timeout 1`` and ``SERVER_FRAMEWORK_WRITE_TIMEOUT=1``: a trickled frame
    and a peer that reads none of its replies are both closed within a few seconds."""
    args = ["reliability_server:KiloReply", "--tcp", "127.0.0.1:0", "--backend", loop]
    cli = servers.command(
        cli_command(*args, "--frame-timeout", "1"), env={"SERVER_FRAMEWORK_WRITE_TIMEOUT": "1"}
    )
    address = cli_address(cli)
    assert exchange(address, 1) == "k" * 1000
    baseline = cli.settled_fds()
    with contextlib.closing(connect(address)) as stalled:
        stalled.sendall(b"1\n" * 20_000)  # 20 MB of replies, never read
        wait_until(lambda: cli.fds() > baseline, 5.0, "the stalled connection is accepted")
        with contextlib.closing(connect(address)) as sock:
            elapsed, _ = trickle_until_closed(sock, CLOSE_BOUND)
        assert elapsed > 0.5
        cli.wait_fds(baseline, timeout=5.0, what="the stalled connection is closed")
    assert exchange(address, "after") == "k" * 1000
    assert cli.stop() == 0
