"""Peers that do not read: replies must not pile up in memory, nor stall a connection forever.

Issue 12 ("Hardening"): ``write_high_water`` (replies of one read are written in batches no
larger than it; past it the server stops stepping that connection's handler and stops reading
from it until the transport drains) and ``write_timeout`` (a send that cannot make progress for
this long closes the connection; a ``send_packet`` blocked then raises ``BrokenResourceError``
naming ``write_timeout``). Each server runs in a subprocess: its memory and descriptors are read
from /proc.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from reliability_helpers import (
    MIB,
    Servers,
    connect,
    exchange,
    line,
    many,
    non_blocking_send,
    over_loops,
    recv_line,
    reset,
    server_spec,
    wait_until,
)

#: 256 KiB of 2-byte requests ("1\n"), each answered with about 1 KiB: 128 MiB of replies if
#: the server answered them all into memory.
PIPELINED_REQUESTS = b"1\n" * (128 * 1024)


@pytest.mark.parametrize("clients", [1, 4])
@over_loops()
def test_reply_amplification_is_bounded(servers: Servers, loop: str, clients: int) -> None:
    """Pipelined requests from peers that never read cost the server a bounded amount of memory.

    Measured before the fix (peak RSS growth, 1 / 4 clients): asyncio +207 / +380 MiB, uvloop
    +92 / +367 MiB, trio +75 / +299 MiB.
    """
    server = servers.start(loop, server_spec("KiloReply"))
    address = server.address()
    assert exchange(address, 1) == "k" * 1000
    server.wait_quiet()
    baseline = server.rss()
    server.reset_peak()
    with many([connect(address) for _ in range(clients)]) as sockets:
        for sock in sockets:
            # The server may stop reading (that is the fix): send what it takes in 2 s.
            non_blocking_send(sock, PIPELINED_REQUESTS, 2.0)
        server.wait_quiet()
        growth = server.peak() - baseline
        assert growth < 8 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"
        # The server is still serving others.
        assert exchange(address, "other") == "k" * 1000


@over_loops()
def test_write_timeout_closes_a_peer_that_stops_reading(servers: Servers, loop: str) -> None:
    """Pipelined requests, replies never read: closed about ``write_timeout`` s later.

    Measured before the fix: there was no write_timeout; the connection was kept forever.
    """
    server = servers.start(loop, server_spec("KiloReply", options={"write_timeout": 1.0}))
    address = server.address()
    assert exchange(address, 1) == "k" * 1000
    baseline = server.settled_fds()
    with contextlib.closing(connect(address)) as stalled:
        stalled.sendall(b"1\n" * 20_000)  # 20 MB of replies: far more than socket buffers
        started = time.monotonic()
        wait_until(lambda: server.fds() > baseline, 5.0, "the stalled connection is accepted")
        # Meanwhile, others are served.
        assert exchange(address, "other") == "k" * 1000
        server.wait_fds(baseline, timeout=5.0, what="the stalled connection is closed")
        assert time.monotonic() - started > 0.5  # not before the deadline
        assert exchange(address, "after") == "k" * 1000


@pytest.mark.parametrize(
    "checkpoint",
    [
        pytest.param(True, id="checkpointed"),
        pytest.param(False, id="back-to-back"),
    ],
)
@over_loops()
def test_write_timeout_fails_a_blocked_send_packet(
    servers: Servers, loop: str, checkpoint: bool
) -> None:
    """A handler sends 100 MB to a peer that reads nothing, with a checkpoint after each
    send_packet or back to back: memory stays bounded (write_high_water), and the send_packet
    blocked when write_timeout expires raises BrokenResourceError naming write_timeout.

    Measured on 8350839, back to back: every send_packet of the step is buffered at once (peak
    RSS +292 MiB asyncio, +108 MiB uvloop, +200 MiB trio; "flood sent" with 96 MB unsent when
    write_timeout closed the connection); checkpointed: bounded, and the error as specified.
    (Fixed: a send_packet that fills the batch past write_high_water blocks until it is
    written and the transport drains.)
    """
    server = servers.start(loop, server_spec("Flood", options={"write_timeout": 1.0}))
    address = server.address()
    server.wait_quiet()
    baseline, rss = server.settled_fds(), server.rss()
    server.reset_peak()
    with contextlib.closing(connect(address)) as stalled:
        request = {"count": 10_000, "size": 10_000, "checkpoint": checkpoint}
        stalled.sendall(line(request))  # 100 MB of replies, never read
        # Meanwhile, others are served.
        with contextlib.closing(connect(address)) as other:
            other.sendall(line({"count": 1, "size": 3}))
            assert recv_line(other, bytearray()) == b'"fff"'
        # The handler either finished sending 100 MB into memory (at once) or its send_packet
        # failed when write_timeout expired.
        ends = ("send failed", "flood sent 10000")
        failure = wait_until(
            lambda: next((e for e in server.events() if e.startswith(ends)), None),
            5.0,
            "the handler's sends end",
        )
        assert failure.startswith("send failed BrokenResourceError: "), failure
        assert "write_timeout" in failure, failure
        server.wait_fds(baseline, timeout=5.0, what="the stalled connection is closed")
    growth = server.peak() - rss
    assert growth < 8 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"


@over_loops()
def test_reset_during_a_write_drain_logs_no_error(servers: Servers, loop: str) -> None:
    """A peer that resets while the server waits for its replies to drain is no server error.

    Measured before the fix: asyncio and uvloop logged "connection failed" at ERROR with a
    BrokenResourceError traceback (from the drain before the next read).
    """
    server = servers.start(loop, server_spec("KiloReply"))
    address = server.address()
    assert exchange(address, 1) == "k" * 1000
    baseline = server.settled_fds()
    sock = connect(address)
    try:
        non_blocking_send(sock, b"1\n" * 8192, 2.0)  # 8 MiB of replies: more than buffers hold
        server.wait_quiet()  # the server now waits for the replies to drain
        assert server.fds() > baseline
    finally:
        reset(sock)
    server.wait_fds(baseline, timeout=5.0, what="the reset connection is closed")
    assert exchange(address, "after") == "k" * 1000
    assert server.stop() == 0
    errors = [r for r in server.records() if r.get("level") in ("error", "critical")]
    assert not errors, errors
