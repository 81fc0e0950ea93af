"""Per-client limits and the overload policy, on every loop, over real sockets: connections per
client address (also behind a trusted PROXY header), the datagram rate per address,
``overload="pause"`` and ``"reject"``, the handler's ``on_refused`` answer, refusals counted,
one log line per state transition."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from handlers import RequestResponseHandler
from protocols import BytesSerializer, DatagramProtocol, StreamProtocol
from server_framework.backend import current
from server_framework.servers import AsyncTCPServer, AsyncUDPServer
from server_framework.servers._admission import MAX_ANSWERING, REFUSAL_ANSWER_TIMEOUT

from server_helpers import LineClient, connect, in_thread, serving

LINES = StreamProtocol(BytesSerializer())


class Upper(RequestResponseHandler[bytes, bytes]):
    async def respond(self, request: bytes, client: Any) -> bytes:
        return request.upper()


class Busy(Upper):
    """Tells a refused client why."""

    async def on_refused(self, client: Any, reason: str) -> None:
        await client.send_packet(b"busy: " + reason.encode())


async def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await current().sleep(0.01)


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(captured: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
    return [line for line in captured if line["event"].startswith(start)]


def served(sock: socket.socket, payload: bytes = b"ping") -> bytes | None:
    client = LineClient(sock)
    client.send_raw(payload + b"\n")
    return client.recv_line()


async def test_connections_per_ip(backend_name: str, lines: list[dict[str, Any]]) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), max_connections_per_ip=2)
    async with serving(server):
        address = server.get_addresses()[0]

        def scenario() -> None:
            first, second = connect(address), connect(address)
            assert served(first) == served(second) == b"PING"
            for _ in range(3):  # over the limit: closed at once, three refusals
                with connect(address) as extra:
                    assert extra.recv(10) == b""
            first.close()
            second.close()

        await in_thread(scenario)
        await wait_for(lambda: server.metrics.connections_active == 0, "connections to end")
        with connect(address) as again:  # the client is below its limit again
            assert await in_thread(served, again) == b"PING"
        metrics = server.metrics
    assert metrics.connections_refused == {"max_connections_per_ip": 3}
    # One line when the client starts being refused, one when it is below its limit again.
    assert [line["client"] for line in events(lines, "max_connections_per_ip reached")] == [
        "127.0.0.1"
    ]
    assert [line["refused"] for line in events(lines, "client below max_connections_per_ip")] == [3]


async def test_connections_per_ip_count_the_proxied_client(backend_name: str) -> None:
    server = AsyncTCPServer(
        "127.0.0.1", 0, LINES, Busy(), proxy_protocol="v1", max_connections_per_ip=1
    )
    async with serving(server):
        address = server.get_addresses()[0]

        def via_proxy(source: str) -> socket.socket:
            sock = connect(address)
            sock.sendall(f"PROXY TCP4 {source} 127.0.0.1 5000 80\r\n".encode())
            return sock

        def scenario() -> list[bytes | None]:
            with via_proxy("10.0.0.1") as one, via_proxy("10.0.0.2") as two:
                assert served(one) == served(two) == b"PING"
                with via_proxy("10.0.0.1") as again:  # the same client: refused, answered
                    client = LineClient(again)
                    return [client.recv_line(), client.recv_line()]

        assert await in_thread(scenario) == [b"busy: max_connections_per_ip", None]
        assert server.metrics.connections_refused == {"max_connections_per_ip": 1}


async def test_on_refused_answers_at_max_connections(
    backend_name: str, lines: list[dict[str, Any]]
) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Busy(), max_connections=1)
    async with serving(server):
        address = server.get_addresses()[0]

        def scenario() -> list[bytes | None]:
            with connect(address) as first:
                assert served(first) == b"PING"
                answers = []
                for _ in range(2):
                    with connect(address) as refused:
                        client = LineClient(refused)
                        answers += [client.recv_line(), client.recv_line()]
                return answers

        assert await in_thread(scenario) == [b"busy: max_connections", None] * 2
        await wait_for(lambda: server.metrics.connections_active == 0, "the connection to end")
        with connect(address) as later:
            assert await in_thread(served, later) == b"PING"
        assert server.metrics.connections_refused == {"max_connections": 2}
    assert len(events(lines, "max_connections reached: refusing")) == 1
    assert [line["refused"] for line in events(lines, "below max_connections again")] == [2]
    assert events(lines, "max_connections reached")[0]["log_level"] == "warning"


async def test_overload_pause_queues_new_connections(
    backend_name: str, lines: list[dict[str, Any]]
) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), max_connections=2, overload="pause")
    async with serving(server):
        address = server.get_addresses()[0]

        def scenario() -> tuple[int, bytes | None]:
            with connect(address) as first, connect(address) as second:
                assert served(first) == served(second) == b"PING"
                with connect(address) as third:  # queued by the kernel: connected, not served
                    third.sendall(b"queued\n")
                    third.settimeout(0.3)
                    with pytest.raises(TimeoutError):
                        third.recv(10)
                    third.settimeout(10)
                    active = server.metrics.connections_active
                    first.close()  # a tenth of the connections (one) ended: accepting again
                    return active, LineClient(third).recv_line()

        assert await in_thread(scenario) == (2, b"QUEUED")
        await wait_for(lambda: server.metrics.connections_active == 0, "connections to end")
        metrics = server.metrics
    assert metrics.connections_refused == {}  # queued, not refused
    # One line per transition: full (not accepting), below the limit again, and so on.
    transitions = [
        line["event"].split(":")[0]
        for line in lines
        if line["event"].startswith(("max_connections reached", "below max_connections"))
    ]
    assert transitions[:2] == ["max_connections reached", "below max_connections again"]
    assert all(a != b for a, b in itertools.pairwise(transitions))


async def test_datagram_rate_per_ip(backend_name: str, lines: list[dict[str, Any]]) -> None:
    server = AsyncUDPServer(
        "127.0.0.1",
        0,
        DatagramProtocol(BytesSerializer()),
        Upper(),
        max_datagram_rate_per_ip=1.0,
        datagram_burst=2,
    )
    async with serving(server):
        address = server.get_addresses()[0]

        def scenario() -> int:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _ in range(10):
                    sock.sendto(b"x", address)
                sock.settimeout(0.5)
                answered = 0
                try:
                    while True:
                        sock.recv(10)
                        answered += 1
                except TimeoutError:
                    return answered

        answered = await in_thread(scenario)
        metrics = server.metrics
    # A burst of 2, then 1 per second: the 10 datagrams were sent within far less than 2 s.
    assert 2 <= answered <= 3
    assert metrics.datagrams_received == 10
    assert metrics.datagrams_dropped == {"datagram_rate_per_ip": 10 - answered}
    assert [line["client"] for line in events(lines, "max_datagram_rate_per_ip reached")] == [
        "127.0.0.1"
    ]


def test_limit_options_are_checked() -> None:
    with pytest.raises(ValueError, match="overload must be"):
        AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), overload="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_connections_per_ip"):
        AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), max_connections_per_ip=0)
    with pytest.raises(ValueError, match="ip_prefixes"):
        AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), ip_prefixes=(33, 64))
    with pytest.raises(ValueError, match="datagram_burst applies"):
        AsyncUDPServer(
            "127.0.0.1", 0, DatagramProtocol(BytesSerializer()), Upper(), datagram_burst=3
        )


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_refused_connections_answered_at_once_are_bounded(backend_name: str) -> None:
    class Stalling(Upper):
        async def on_refused(self, client: Any, reason: str) -> None:
            await current().sleep(30)  # cut at REFUSAL_ANSWER_TIMEOUT

    server = AsyncTCPServer("127.0.0.1", 0, LINES, Stalling(), max_connections=1)
    async with serving(server):
        address = server.get_addresses()[0]
        with connect(address) as first:
            assert await in_thread(served, first) == b"PING"
            before = open_descriptors()
            clients = await in_thread(lambda: [connect(address) for _ in range(100)])
            try:
                await wait_for(
                    lambda: server.metrics.connections_refused.get("max_connections") == 100,
                    "the refusals",
                )
                # The server holds at most MAX_ANSWERING of them (the others were closed at
                # once), each for REFUSAL_ANSWER_TIMEOUT at most.
                held = open_descriptors() - before - len(clients)
                assert held <= MAX_ANSWERING + 2
                await wait_for(
                    lambda: open_descriptors() - before - len(clients) <= 2,
                    "the answers to be cut",
                    timeout=REFUSAL_ANSWER_TIMEOUT + 10,
                )
            finally:
                for sock in clients:
                    sock.close()
