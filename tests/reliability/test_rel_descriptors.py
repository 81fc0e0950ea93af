"""Descriptor pressure: out of descriptors, over max_connections, TLS handshakes that never start.

Issue 12: running out of descriptors must not turn into a CPU-bound log storm (CPython 3.11's
asyncio retries ``accept`` up to ``backlog`` times per wake-up and logs every failure with a
traceback), and ``max_connections`` counts every accepted socket, TLS handshakes in progress
included, on every loop. Servers run in subprocesses: descriptors are counted in /proc.
"""

from __future__ import annotations

import contextlib
import time

from reliability_helpers import (
    CLIENT_TIMEOUT,
    Servers,
    closed_by_peer,
    connect,
    exchange,
    line,
    many,
    over_loops,
    recv_line,
    server_spec,
    wait_until,
)

#: How long the cost of an out-of-descriptors server is measured.
WINDOW = 1.0


@over_loops()
def test_out_of_descriptors_costs_little(servers: Servers, loop: str) -> None:
    """RLIMIT_NOFILE 64 and 100 clients: little CPU, few log lines; served again once they go.

    Measured before the fix, asyncio: 74 % CPU and 7,200 log lines/s (JSON logging; 49,000
    lines/s with logging left unconfigured); uvloop and trio: under 1 % and 1 line/s at most.
    """
    server = servers.start(loop, server_spec("Echo"), rlimit_nofile=64)
    address = server.address()
    assert exchange(address, "before") == "before"
    with many([]) as clients:
        for _ in range(100):
            clients.append(connect(address))
        # Every descriptor the server may have is in use (accepted connections).
        wait_until(lambda: server.fds() >= 60, 5.0, "the server runs out of descriptors")
        cpu, lines, started = server.cpu(), len(server.lines), time.monotonic()
        time.sleep(WINDOW)  # a measurement window: nothing to wait for
        elapsed = time.monotonic() - started
        cpu_share = (server.cpu() - cpu) / elapsed
        lines_per_second = (len(server.lines) - lines) / elapsed
        assert server.alive()
        assert cpu_share < 0.3, f"{cpu_share:.0%} CPU while out of descriptors"
        assert lines_per_second < 20, f"{lines_per_second:.0f} log lines/s"
    # Once the clients are gone the server serves again (a reset while it still recovers is
    # retried: libuv resets connections it cannot accept).
    deadline = time.monotonic() + 10.0
    while True:
        try:
            assert exchange(address, "after", timeout=2.0) == "after"
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@over_loops()
def test_max_connections_closes_the_excess_at_once(servers: Servers, loop: str) -> None:
    """max_connections=10, 20 clients: the first 10 are served, the other 10 closed at once."""
    server = servers.start(loop, server_spec("Echo", options={"max_connections": 10}))
    address = server.address()
    with many([]) as served:
        for index in range(10):
            sock = connect(address)
            served.append(sock)
            sock.sendall(line(index))
            assert recv_line(sock, bytearray()) == str(index).encode()
        started = time.monotonic()
        with many([connect(address) for _ in range(10)]) as refused:
            for sock in refused:
                sock.settimeout(CLIENT_TIMEOUT)
                with contextlib.suppress(OSError):  # the close may come first
                    sock.sendall(line("refused?"))
            for sock in refused:
                assert recv_line(sock, bytearray()) is None  # EOF or reset, no reply
        assert time.monotonic() - started < 2.0
        for index, sock in enumerate(served):  # still served
            sock.sendall(line(index))
            assert recv_line(sock, bytearray()) == str(index).encode()
    wait_until(lambda: _served_again(address), 5.0, "a new client is served once others left")


def _served_again(address: tuple[str, int]) -> bool:
    try:
        return bool(exchange(address, "again", timeout=2.0) == "again")
    except (AssertionError, OSError):
        return False


@over_loops()
def test_max_connections_counts_tls_handshakes(
    servers: Servers, loop: str, tls_files: tuple[dict[str, str], object]
) -> None:
    """max_connections=10 on TLS, 30 sockets that never start TLS: at most ~10 are held.

    Measured before the fix: asyncio and uvloop hold all 30 (until the handshake timeout).
    """
    files, _ = tls_files
    options = {"max_connections": 10, "ssl_handshake_timeout": 30.0}
    server = servers.start(loop, server_spec("Echo", tls=files, options=options))
    address = server.address()
    baseline = server.settled_fds()
    with many([connect(address) for _ in range(30)]) as sockets:
        # The excess is closed at once...
        wait_until(
            lambda: sum(closed_by_peer(sock) for sock in sockets) >= 20,
            3.0,
            "20 of the 30 idle TLS sockets closed by the server",
        )
        # ... and the server holds no more than the limit.
        held = server.fds() - baseline
        assert held <= 12, f"the server holds {held} connections"
