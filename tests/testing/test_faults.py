"""``server_framework.testing.faults``: each misbehaving peer against a real server, on every
loop, and the server still serving another client afterwards (and meanwhile)."""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator
from typing import Any

import pytest

import server_framework as sf
from server_framework.backend import BackendName
from server_framework.testing import Served, Transport, faults, serve_in_background

JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())
BIG_REQUEST = JSON_LINES.encode({"data": "x" * 1000})


def healthy(served: Served[Any, Any]) -> None:
    """The server answers the serving's client and a new one."""
    assert served.client.request("still there?") == "still there?"
    with served.connect() as other:
        assert other.request({"new": "client"}) == {"new": "client"}


class Counting(sf.StreamRequestHandler[Any, Any]):
    """Answers each request with its number on the connection."""

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        count = 0
        while True:
            yield
            count += 1
            await client.send_packet(count)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_trickled_bytes_make_whole_requests(
    backend_name: BackendName, transport: Transport
) -> None:
    with serve_in_background(
        sf.EchoHandler(), JSON_LINES, transport=transport, backend=backend_name
    ) as served:
        sock = served.open_socket()
        payload = JSON_LINES.encode({"slow": "client"}) + JSON_LINES.encode([1, 2])
        faults.trickle(sock, payload, chunk_size=1, delay=0)  # one byte per send
        faults.trickle(sock, BIG_REQUEST, chunk_size=7, delay=0.0001)
        replies = faults.recv_packets(sock, JSON_LINES, 3)
        assert replies == [{"slow": "client"}, [1, 2], {"data": "x" * 1000}]
        healthy(served)


def test_trickle_refuses_what_would_take_minutes() -> None:
    with socket.socket() as sock:  # never connected: checked before any send
        with pytest.raises(ValueError, match="takes longer"):
            faults.trickle(sock, b"x" * 1000, delay=1.0)
        with pytest.raises(ValueError, match="chunk_size"):
            faults.trickle(sock, b"x", chunk_size=0)


@pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
def test_reset_mid_frame(backend_name: BackendName, transport: Transport) -> None:
    with serve_in_background(
        sf.EchoHandler(), JSON_LINES, transport=transport, backend=backend_name
    ) as served:
        for cut in (1, len(BIG_REQUEST) // 2, len(BIG_REQUEST) - 1):
            faults.reset_mid_frame(served.address, BIG_REQUEST, cut=cut, ssl=served.client_ssl)
        healthy(served)


def test_reset_mid_frame_needs_a_cut_inside_the_frame() -> None:
    for cut in (0, len(BIG_REQUEST)):
        with pytest.raises(ValueError, match="cut must be in"):
            faults.reset_mid_frame(("127.0.0.1", 9), BIG_REQUEST, cut=cut)  # before connecting


def test_reset_sends_a_tcp_reset() -> None:
    with serve_in_background(sf.EchoHandler(), JSON_LINES) as served:
        sock = served.open_socket()
        faults.reset(sock)
        assert sock.fileno() == -1
        healthy(served)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_a_client_that_stops_reading(backend_name: BackendName, transport: Transport) -> None:
    with serve_in_background(
        sf.EchoHandler(), JSON_LINES, transport=transport, backend=backend_name
    ) as served:
        # A generous timeout: on a loaded machine, filling the buffers may take a while.
        with faults.stop_reading(served.address, BIG_REQUEST, timeout=60) as reader:
            assert reader.stalled  # the kernel took no more: the server stopped reading
            assert reader.bytes_sent > 0
            healthy(served)  # others are served meanwhile
        assert reader.sock.fileno() == -1
        healthy(served)


def test_stop_reading_stops_at_max_bytes() -> None:
    with serve_in_background(sf.EchoHandler(), JSON_LINES) as served:
        with faults.stop_reading(served.address, b"1\n", max_bytes=10) as reader:
            assert not reader.stalled
            assert reader.bytes_sent >= 10
        with pytest.raises(ValueError, match="empty"), faults.stop_reading(served.address, b""):
            pass


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_garbage_and_half_close(backend_name: BackendName, transport: Transport) -> None:
    with serve_in_background(
        sf.EchoHandler(), JSON_LINES, transport=transport, backend=backend_name
    ) as served:
        # Pipelined requests, then end-of-file: every one is answered, then the server closes.
        requests = JSON_LINES.encode("a") + JSON_LINES.encode("b")
        assert faults.send_raw(served.address, requests) == b'"a"\n"b"\n'
        # Bytes that are not JSON lines: whatever the server answers, it survives them.
        for seed in range(3):
            faults.send_raw(served.address, faults.garbage(4096, seed=seed))
        faults.send_raw(served.address, faults.garbage(100), half_close=False)
        healthy(served)


def test_send_raw_times_out_if_the_server_never_closes() -> None:
    serving = serve_in_background(sf.EchoHandler(), JSON_LINES)
    with serving as served, pytest.raises(TimeoutError, match="did not close"):
        faults.send_raw(served.address, b"1\n", half_close=False, timeout=0.05)


def test_garbage_is_reproducible() -> None:
    assert faults.garbage(64, seed=1) == faults.garbage(64, seed=1)
    assert faults.garbage(64, seed=1) != faults.garbage(64, seed=2)
    assert len(faults.garbage()) == 4096


def test_recv_packets_reports_a_closed_connection() -> None:
    serving = serve_in_background(Counting(), JSON_LINES)
    with serving as served, faults.open_socket(served.address) as sock:
        sock.sendall(b'"a"\n')
        sock.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError, match="after 1 of 2"):
            faults.recv_packets(sock, JSON_LINES, 2)


async def test_faults_from_an_async_test(backend_name: BackendName) -> None:
    async with serve_in_background(sf.EchoHandler(), JSON_LINES) as served:
        # Blocking helpers run in a worker thread, while the loop serves.
        await served.backend.run_in_thread(faults.reset_mid_frame, served.address, BIG_REQUEST)
        reply = await served.backend.run_in_thread(faults.send_raw, served.address, b"[1]\n")
        assert reply == b"[1]\n"
        assert await served.client.request("fine") == "fine"
