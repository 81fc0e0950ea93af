"""``server.metrics``: what servers count, on every loop, over real sockets (both engines: the
suite runs once per engine)."""

from __future__ import annotations

import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

from handlers import EchoHandler, RecvParams, RequestResponseHandler, ThreadedHandler
from protocols import BytesSerializer, DatagramProtocol, JSONSerializer, StreamProtocol
from server_framework.backend import current
from server_framework.metrics import LATENCY_BUCKETS, ServerMetrics, process_metrics
from server_framework.servers import AsyncTCPServer, AsyncUDPServer
from server_framework.servers._driver import MAX_ERROR_TYPES

from server_helpers import LineClient, connect, in_thread, serving

LINES = StreamProtocol(BytesSerializer())


class Upper(RequestResponseHandler[bytes, bytes]):
    async def respond(self, request: bytes, client: Any) -> bytes:
        if request == b"boom":
            raise KeyError("boom")
        if request == b"slow":
            await current().sleep(0.03)
        return request.upper()


async def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await current().sleep(0.01)


def exchange(address: Any, *lines: bytes) -> list[bytes | None]:
    with connect(address) as sock:
        client = LineClient(sock)
        client.send_raw(b"".join(line + b"\n" for line in lines))
        return [client.recv_line() for _ in lines]


async def test_requests_bytes_connections_and_latency(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Upper())
    async with serving(server):
        address = server.get_addresses()[0]
        assert await in_thread(exchange, address, b"a", b"bb", b"slow") == [b"A", b"BB", b"SLOW"]
        assert await in_thread(exchange, address, b"ccc") == [b"CCC"]
        await wait_for(lambda: server.metrics.connections_active == 0, "the connections to end")
        metrics = server.metrics
        assert server.metrics in process_metrics()
    assert isinstance(metrics, ServerMetrics)
    assert metrics.requests == 4
    assert metrics.connections_accepted == 2
    assert metrics.bytes_received == len(b"a\nbb\nslow\nccc\n")
    assert metrics.bytes_sent == len(b"A\nBB\nSLOW\nCCC\n")
    assert metrics.handler_errors == {}
    assert metrics.connections_refused == {}
    assert metrics.serving
    assert not metrics.draining
    assert metrics.listener == f"tcp://127.0.0.1:{address[1]}"
    assert metrics.transport == "tcp"
    latency = metrics.latency
    assert latency.bounds == LATENCY_BUCKETS
    assert latency.count == 4 == sum(latency.counts)
    # The slow request (30 ms asleep) is in a bucket above 25 ms; the others well below.
    slow = sum(
        count for bound, count in zip(latency.bounds, latency.counts, strict=False) if bound > 0.025
    )
    assert slow + latency.counts[-1] >= 1
    assert latency.sum >= 0.03
    assert latency.cumulative()[-1] == (math.inf, 4)
    # Stopped: no longer in the process's list, still readable.
    assert server.metrics not in process_metrics()
    assert server.metrics.requests == 4


class Echo(EchoHandler):
    """A generator handler: the driver's other request path."""


async def test_generator_handlers_are_counted_too(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Echo())
    async with serving(server):
        address = server.get_addresses()[0]
        assert await in_thread(exchange, address, b"x", b"y") == [b"x", b"y"]
        await wait_for(lambda: server.metrics.connections_active == 0, "the connection to end")
        metrics = server.metrics
    assert metrics.requests == 2 == metrics.latency.count
    assert metrics.bytes_sent == 4


async def test_handler_errors_by_type(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Upper())
    async with serving(server):
        address = server.get_addresses()[0]
        for _ in range(2):
            assert await in_thread(exchange, address, b"boom") == [None]
        metrics = server.metrics
    assert metrics.handler_errors == {"KeyError": 2}
    assert metrics.requests == 2  # a request that failed was handled too


async def test_connections_active_and_refused(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), max_connections=1)
    async with serving(server):
        address = server.get_addresses()[0]
        with connect(address) as first:
            client = LineClient(first)
            client.send(1)
            assert await in_thread(client.recv_line) == b"1"
            assert server.metrics.connections_active == 1
            with connect(address) as second:
                assert await in_thread(second.recv, 10) == b""  # closed at once
            await wait_for(
                lambda: server.metrics.connections_refused.get("max_connections") == 1,
                "the refusal to be counted",
            )
        await wait_for(lambda: server.metrics.connections_active == 0, "the connection to end")
        assert server.metrics.connections_accepted == 2


class Patient(EchoHandler):
    async def handle(self, client: Any) -> AsyncGenerator[RecvParams, bytes]:
        while True:
            try:
                request = yield RecvParams(timeout=0.05)
            except TimeoutError:
                await client.send_packet(b"timeout")
                return
            await client.send_packet(request)


async def test_request_and_frame_deadlines(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Patient())
    framed = AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), frame_timeout=0.1)
    async with serving(server), serving(framed):

        def scenario() -> None:
            with connect(server.get_addresses()[0]) as sock:  # a request, then silence
                client = LineClient(sock)
                client.send_raw(b"x\n")
                assert client.recv_line() == b"x"
                assert client.recv_line() == b"timeout"  # the handler's RecvParams timeout
            with connect(framed.get_addresses()[0]) as sock:  # half a frame: frame_timeout
                sock.sendall(b"half")
                assert sock.recv(10) == b""

        await in_thread(scenario)
        await wait_for(
            lambda: framed.metrics.deadlines_expired.get("frame_timeout") == 1, "frame_timeout"
        )
        assert server.metrics.deadlines_expired == {"request_timeout": 1}


async def test_idle_timeout_is_counted(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), idle_timeout=0.05)
    async with serving(server):
        with connect(server.get_addresses()[0]) as sock:
            assert await in_thread(sock.recv, 10) == b""
        await wait_for(
            lambda: server.metrics.deadlines_expired.get("idle_timeout") == 1, "idle_timeout"
        )


async def test_write_high_water_hits(backend_name: str) -> None:
    class Flood(RequestResponseHandler[bytes, bytes]):
        async def respond(self, request: bytes, client: Any) -> None:
            for _ in range(8):
                await client.send_packet(b"x" * 32_768)

    server = AsyncTCPServer("127.0.0.1", 0, LINES, Flood(), write_high_water=16_384)
    async with serving(server):

        def scenario() -> int:
            with connect(server.get_addresses()[0]) as sock:
                sock.sendall(b"go\n")
                received = 0
                while received < 8 * 32_769:
                    received += len(sock.recv(65536))
                return received

        assert await in_thread(scenario) == 8 * 32_769
        assert server.metrics.write_high_water_hits >= 1
        assert server.metrics.bytes_sent == 8 * 32_769


class Pooled(ThreadedHandler[Any, Any]):
    max_workers = 2

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def respond(self, request: Any, client: Any) -> Any:
        self.started.set()
        self.release.wait(10)
        return request


async def test_threads_busy(backend_name: str) -> None:
    handler = Pooled()
    server = AsyncTCPServer("127.0.0.1", 0, StreamProtocol(JSONSerializer()), handler)
    async with serving(server):
        address = server.get_addresses()[0]
        assert server.metrics.threads_busy == 0

        def scenario() -> Any:
            with connect(address) as sock:
                client = LineClient(sock)
                client.send(7)
                assert handler.started.wait(10)
                busy = server.metrics.threads_busy
                handler.release.set()
                return busy, client.recv()

        assert await in_thread(scenario) == (1, 7)
        await wait_for(lambda: server.metrics.threads_busy == 0, "the thread to be free")


async def test_loop_lag_is_nan_when_the_watchdog_is_off(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Upper(), warn_blocked=0)
    async with serving(server):
        assert math.isnan(server.metrics.loop_lag)


async def test_loop_lag_measures_the_stall(backend_name: str) -> None:
    blocking = threading.Event()

    class Blocker(RequestResponseHandler[bytes, bytes]):
        async def respond(self, request: bytes, client: Any) -> bytes:
            blocking.set()
            time.sleep(0.6)  # blocks the loop, on purpose
            return request

    # warn_blocked 0.2: heartbeat every 50 ms; the stall is read while it lasts.
    server = AsyncTCPServer("127.0.0.1", 0, LINES, Blocker(), warn_blocked=0.2)
    async with serving(server):

        def scenario() -> float:
            with connect(server.get_addresses()[0]) as sock:
                sock.sendall(b"x\n")
                assert blocking.wait(10)
                time.sleep(0.4)
                lag = server.metrics.loop_lag
                assert sock.recv(10) == b"x\n"
                return lag

        # The last beat was before the handler started, 0.4 s ago or more: the lag is that
        # stall less the heartbeat's interval (0.05 s).
        assert await in_thread(scenario) >= 0.35


async def test_datagram_counters(backend_name: str) -> None:
    class Reply(RequestResponseHandler[bytes, bytes]):
        async def respond(self, request: bytes, client: Any) -> bytes:
            return request * 2

    server = AsyncUDPServer(
        "127.0.0.1", 0, DatagramProtocol(BytesSerializer()), Reply(), max_clients=1
    )
    async with serving(server):
        address = server.get_addresses()[0]

        def scenario() -> None:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
            ):
                one.settimeout(10)
                for payload in (b"ab", b"cde"):
                    one.sendto(payload, address)
                    assert one.recv(100) == payload * 2
                other.sendto(b"zz", address)  # a second peer, over max_clients: dropped

        await in_thread(scenario)
        await wait_for(lambda: server.metrics.datagrams_dropped.get("max_clients") == 1, "the drop")
        metrics = server.metrics
    assert metrics.datagrams_received == 3
    assert metrics.bytes_received == 7
    assert metrics.bytes_sent == 10
    assert metrics.requests == 2
    assert metrics.peers_active == 1
    assert metrics.connections_accepted == 0
    assert metrics.transport == "udp"


async def test_draining_while_shutting_down(backend_name: str) -> None:
    started = threading.Event()
    seen: list[ServerMetrics] = []

    class Slow(RequestResponseHandler[bytes, bytes]):
        async def respond(self, request: bytes, client: Any) -> bytes:
            started.set()
            await current().sleep(0.2)
            seen.append(server.metrics)  # during the drain
            return request

    server = AsyncTCPServer("127.0.0.1", 0, LINES, Slow())
    async with serving(server):
        address = server.get_addresses()[0]
        backend = current()
        async with backend.create_task_group() as tg:
            tg.start_soon(in_thread, exchange, address, b"x")
            await in_thread(started.wait, 10)
            await server.shutdown()
    assert seen
    assert seen[0].draining
    assert not seen[0].serving
    assert not server.metrics.serving
    assert not server.metrics.draining


async def test_tls_and_proxy_refusals(
    backend_name: str, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, _client_context = tls_contexts
    tls = AsyncTCPServer(
        "127.0.0.1", 0, LINES, Upper(), ssl=server_context, ssl_handshake_timeout=0.2
    )
    proxied = AsyncTCPServer(
        "127.0.0.1", 0, LINES, Upper(), proxy_protocol="v1", proxy_header_timeout=0.1
    )
    async with serving(tls), serving(proxied):

        def scenario() -> None:
            with connect(tls.get_addresses()[0]) as sock:  # plaintext on a TLS port
                sock.sendall(b"hello\n")
                assert sock.recv(10) == b""
            with connect(tls.get_addresses()[0]) as sock:  # silent: the handshake times out
                assert sock.recv(10) == b""
            with connect(proxied.get_addresses()[0]) as sock:  # no PROXY header in time
                assert sock.recv(10) == b""
            with connect(proxied.get_addresses()[0]) as sock:  # a bad one
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
                assert sock.recv(10) == b""

        await in_thread(scenario)
        await wait_for(
            lambda: tls.metrics.connections_refused.get("tls_handshake") == 2, "TLS refusals"
        )
        await wait_for(
            lambda: proxied.metrics.connections_refused.get("proxy_protocol") == 2,
            "PROXY refusals",
        )
        assert tls.metrics.deadlines_expired == {"ssl_handshake_timeout": 1}
        assert proxied.metrics.deadlines_expired == {"proxy_header_timeout": 1}
        assert tls.metrics.connections_accepted == 2
        assert tls.metrics.transport == "tls"


async def test_handler_error_types_are_bounded(backend_name: str) -> None:
    kinds = [type(f"Error{index}", (Exception,), {}) for index in range(70)]

    class Raiser(RequestResponseHandler[bytes, bytes]):
        async def respond(self, request: bytes, client: Any) -> bytes:
            raise kinds[int(request)]()

    server = AsyncTCPServer("127.0.0.1", 0, LINES, Raiser(), logger=logging.getLogger("quiet"))
    async with serving(server):
        address = server.get_addresses()[0]

        def scenario() -> None:
            for index in range(len(kinds)):
                assert exchange(address, str(index).encode()) == [None]

        await in_thread(scenario)
        errors = server.metrics.handler_errors
    assert len(errors) == MAX_ERROR_TYPES + 1
    assert errors["other"] == len(kinds) - MAX_ERROR_TYPES
    assert sum(errors.values()) == len(kinds)


async def test_requests_cancelled_at_the_end_of_the_grace_period_are_counted(
    backend_name: str,
) -> None:
    started = threading.Event()

    class Stuck(RequestResponseHandler[bytes, bytes]):
        async def respond(self, request: bytes, client: Any) -> bytes:
            started.set()
            await current().sleep(30)
            return request

    server = AsyncTCPServer("127.0.0.1", 0, LINES, Stuck(), shutdown_timeout=0.1)
    async with serving(server):
        sock = connect(server.get_addresses()[0])
        try:
            sock.sendall(b"x\n")
            assert await in_thread(started.wait, 10)
            await server.shutdown()
        finally:
            sock.close()
    assert server.metrics.deadlines_expired == {"shutdown_timeout": 1}
