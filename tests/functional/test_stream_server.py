"""Stream servers (TCP, Unix stream) over real sockets, on asyncio, uvloop and trio."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import struct
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import pytest
import structlog

from handlers import EchoHandler, RecvParams, StreamClient, StreamRequestHandler
from protocols import (
    BytesSerializer,
    DeserializeError,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    MsgPackSerializer,
    StreamProtocol,
)
from server_framework.backend import current
from server_framework.exceptions import BindError
from server_framework.servers import AsyncTCPServer, AsyncUnixStreamServer

from server_helpers import LineClient, connect, in_thread, line_exchange, serving

JSON_LINES = StreamProtocol(JSONSerializer())


@pytest.fixture(params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def unix_path() -> Any:
    with tempfile.TemporaryDirectory(prefix="sf-test-") as directory:
        yield os.path.join(directory, "server.sock")


def make_server(
    transport: str, unix_path: str, handler: Any, protocol: Any = JSON_LINES, **options: Any
) -> Any:
    if transport == "tcp":
        return AsyncTCPServer("127.0.0.1", 0, protocol, handler, **options)
    return AsyncUnixStreamServer(unix_path, protocol, handler, **options)


def exchange_all(protocol: Any, address: Any, messages: list[Any]) -> list[Any]:
    """Send ``messages`` in one write, framed by ``protocol``; return as many replies."""
    with contextlib.closing(connect(address)) as sock:
        sock.sendall(b"".join(protocol.encode(m) for m in messages))
        decoder = protocol.decoder()
        received: list[Any] = []
        while len(received) < len(messages):
            chunk = sock.recv(65536)
            assert chunk
            decoder.feed(chunk)
            received.extend(decoder)
        return received


class Recorder(StreamRequestHandler[Any, Any]):
    """Echoes, and records the lifecycle events it sees."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.service_closed = False

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        self.events.append("service_init")
        exit_stack.callback(setattr, self, "service_closed", True)

    async def on_connection(self, client: StreamClient[Any]) -> None:
        self.events.append("connect")

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request == "crash":
            raise RuntimeError("handler crashed on purpose")
        await client.send_packet(request)

    async def on_disconnection(self, client: StreamClient[Any]) -> None:
        self.events.append("disconnect")


async def test_echo_json(backend_name: str, transport: str, unix_path: str) -> None:
    async with serving(make_server(transport, unix_path, Recorder())) as server:
        (address,) = server.get_addresses()
        messages = [{"id": 1}, [1, 2, 3], "text", None, 3.5]
        assert await in_thread(line_exchange, address, messages) == messages
        assert server.is_serving()
        assert server.backend().name == backend_name


async def test_echo_msgpack_length_prefix(
    backend_name: str, transport: str, unix_path: str
) -> None:
    protocol = StreamProtocol(MsgPackSerializer(), LengthPrefixFramer())

    messages = [{"a": b"\x00\xff\n"}, list(range(100)), "x" * 5000]
    async with serving(make_server(transport, unix_path, EchoHandler(), protocol)) as server:
        (address,) = server.get_addresses()
        assert await in_thread(exchange_all, protocol, address, messages) == [
            {"a": b"\x00\xff\n"},
            list(range(100)),
            "x" * 5000,
        ]


async def test_echo_bytes_length_prefix_at_header_boundaries(
    backend_name: str, transport: str, unix_path: str
) -> None:
    """Raw bytes with a 2-byte length header, at the sizes where the header's low byte carries
    over and at the largest it can express (the compiled engine frames these replies itself)."""
    protocol = StreamProtocol(BytesSerializer(), LengthPrefixFramer(2))
    messages = [b"", b"x", bytes(range(256))[:255], b"y" * 256, b"\n" * 1000, b"z" * 65535]

    async with serving(make_server(transport, unix_path, EchoHandler(), protocol)) as server:
        (address,) = server.get_addresses()
        assert await in_thread(exchange_all, protocol, address, messages) == messages


async def test_hooks_set_on_the_instance_are_called(
    backend_name: str, transport: str, unix_path: str
) -> None:
    """``on_connection`` / ``on_disconnection`` given to one handler object (not its class)
    are called, although the class keeps the base no-ops (which the server skips)."""
    events: list[str] = []
    handler = EchoHandler()

    async def on_connection(client: Any) -> None:
        events.append("connect")

    async def on_disconnection(client: Any) -> None:
        events.append("disconnect")

    handler.on_connection = on_connection  # type: ignore[method-assign]
    handler.on_disconnection = on_disconnection  # type: ignore[method-assign]
    async with serving(make_server(transport, unix_path, handler)) as server:
        (address,) = server.get_addresses()
        assert await in_thread(line_exchange, address, ["hello"]) == ["hello"]
        for _ in range(200):
            if "disconnect" in events:
                break
            await current().sleep(0.01)
    assert events == ["connect", "disconnect"]


async def test_pipelining_keeps_order(backend_name: str, transport: str, unix_path: str) -> None:
    """100 requests in one write are all answered, in order, by a generator-per-request handler."""
    async with serving(make_server(transport, unix_path, Recorder())) as server:
        (address,) = server.get_addresses()
        messages = [{"seq": i} for i in range(100)]
        assert await in_thread(line_exchange, address, messages) == messages


async def test_200_concurrent_clients(backend_name: str) -> None:
    def many(address: Any) -> None:
        clients = [LineClient(connect(address)) for _ in range(200)]
        try:
            for index, client in enumerate(clients):
                client.send({"client": index})
            for index, client in enumerate(clients):
                assert client.recv() == {"client": index}
        finally:
            for client in clients:
                client.close()

    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler())) as server:
        await in_thread(many, server.get_addresses()[0])


class BlockingHandler(StreamRequestHandler[Any, Any]):
    """Blocks (sleeps) in every request: the slow path of the driver."""

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        await client.backend().sleep(0.001)
        await client.send_packet({"echo": request})
        await client.backend().sleep(0)
        await client.send_packet({"again": request})


async def test_blocking_handler_keeps_order(
    backend_name: str, transport: str, unix_path: str
) -> None:
    def exchange(address: Any) -> list[Any]:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send(*range(20))
            return [client.recv() for _ in range(40)]

    async with serving(make_server(transport, unix_path, BlockingHandler())) as server:
        replies = await in_thread(exchange, server.get_addresses()[0])
    expected: list[Any] = []
    for i in range(20):
        expected += [{"echo": i}, {"again": i}]
    assert replies == expected


class TimeoutHandler(StreamRequestHandler[Any, Any]):
    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[RecvParams | None, Any]:
        try:
            request = yield RecvParams(timeout=0.05)
        except TimeoutError:
            await client.send_packet("timed out")
            request = yield
        await client.send_packet(request)


async def test_recv_params_timeout(backend_name: str, transport: str, unix_path: str) -> None:
    def exchange(address: Any) -> list[Any]:
        with contextlib.closing(LineClient(connect(address))) as client:
            first = client.recv()  # nothing sent: the handler times out first
            client.send("late")
            return [first, client.recv()]

    async with serving(make_server(transport, unix_path, TimeoutHandler())) as server:
        assert await in_thread(exchange, server.get_addresses()[0]) == ["timed out", "late"]


class Ping(msgspec.Struct):
    id: int


class ValidatingHandler(StreamRequestHandler[Ping, Any]):
    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Ping]:
        try:
            request = yield
        except DeserializeError as exc:
            await client.send_packet({"error": exc.reason})
            return
        await client.send_packet({"pong": request.id})


async def test_bad_message_answered_and_survived(
    backend_name: str, transport: str, unix_path: str
) -> None:
    protocol = StreamProtocol(JSONSerializer(type=Ping))

    def exchange(address: Any) -> list[Any]:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send_raw(b'{"id": 1}\n{"id": "one"}\nnot json\n{"id": 3}\n')
            return [client.recv() for _ in range(4)]

    async with serving(make_server(transport, unix_path, ValidatingHandler(), protocol)) as server:
        replies = await in_thread(exchange, server.get_addresses()[0])
    assert replies[0] == {"pong": 1}
    assert "Expected `int`, got `str`" in replies[1]["error"]
    assert "malformed JSON" in replies[2]["error"]
    assert replies[3] == {"pong": 3}


async def test_handler_crash_closes_only_that_client(
    backend_name: str, transport: str, unix_path: str
) -> None:
    handler = Recorder()

    def exchange(address: Any) -> None:
        with contextlib.closing(LineClient(connect(address))) as bystander:
            bystander.send("before")
            assert bystander.recv() == "before"
            with contextlib.closing(LineClient(connect(address))) as victim:
                victim.send("crash")
                assert victim.recv_eof()
            bystander.send("after")
            assert bystander.recv() == "after"
        # and the server still accepts
        assert line_exchange(address, ["new"]) == ["new"]

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with serving(make_server(transport, unix_path, handler)) as server:
            await in_thread(exchange, server.get_addresses()[0])
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1
    assert "handler failed" in errors[0]["event"]
    assert "conn_id" in errors[0]
    assert handler.events.count("connect") == handler.events.count("disconnect") == 3


async def test_uncaught_bad_message_closes_connection(backend_name: str) -> None:
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler())) as server:

        def exchange(address: Any) -> bool:
            with contextlib.closing(LineClient(connect(address))) as client:
                client.send_raw(b"[1]\n{broken\n[2]\n")
                assert client.recv() == [1]
                return client.recv_eof()

        assert await in_thread(exchange, server.get_addresses()[0])


async def test_frame_too_large_closes_connection(
    backend_name: str, transport: str, unix_path: str
) -> None:
    protocol = StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=1024))

    def exchange(address: Any) -> bool:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send("ok")
            assert client.recv() == "ok"
            with contextlib.suppress(OSError):
                client.send_raw(b'"' + b"x" * 5000)
            return client.recv_eof()

    async with serving(make_server(transport, unix_path, EchoHandler(), protocol)) as server:
        assert await in_thread(exchange, server.get_addresses()[0])
        assert await in_thread(line_exchange, server.get_addresses()[0], ["still serving"]) == [
            "still serving"
        ]


async def test_client_reset_mid_frame(backend_name: str) -> None:
    handler = Recorder()

    def reset(address: Any) -> None:
        sock = connect(address)
        sock.sendall(b'{"partial": ')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
        assert line_exchange(address, ["next"]) == ["next"]

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
            await in_thread(reset, server.get_addresses()[0])
    assert not [entry for entry in logs if entry["log_level"] == "error"]
    assert handler.events.count("disconnect") == 2


async def test_half_close_gets_all_replies(
    backend_name: str, transport: str, unix_path: str
) -> None:
    def exchange(address: Any) -> list[Any]:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send(1, 2, 3)
            client.sock.shutdown(socket.SHUT_WR)
            replies = [client.recv() for _ in range(3)]
            assert client.recv_eof()
            return replies

    async with serving(make_server(transport, unix_path, Recorder())) as server:
        assert await in_thread(exchange, server.get_addresses()[0]) == [1, 2, 3]


async def test_max_connections(backend_name: str) -> None:
    def exchange(address: Any) -> None:
        first, second = LineClient(connect(address)), LineClient(connect(address))
        try:
            first.send(1)
            second.send(2)
            assert (first.recv(), second.recv()) == (1, 2)
            third = LineClient(connect(address))
            with contextlib.closing(third):
                assert third.recv_eof()
            first.send(3)
            assert first.recv() == 3
        finally:
            first.close()
            second.close()

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with serving(
            AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), max_connections=2)
        ) as server:
            await in_thread(exchange, server.get_addresses()[0])
    assert any("max_connections" in entry["event"] for entry in logs)


class ReturnsEarly(StreamRequestHandler[Any, Any]):
    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        await client.send_packet("bye")
        return
        yield  # pragma: no cover - makes this an async generator


async def test_handler_returning_before_first_yield_closes(backend_name: str) -> None:
    def exchange(address: Any) -> Any:
        with contextlib.closing(LineClient(connect(address))) as client:
            reply = client.recv()
            assert client.recv_eof()
            return reply

    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, ReturnsEarly())) as server:
        assert await in_thread(exchange, server.get_addresses()[0]) == "bye"


async def test_lifecycle_and_shutdown_with_idle_clients(
    backend_name: str, transport: str, unix_path: str
) -> None:
    handler = Recorder()
    server = make_server(transport, unix_path, handler, shutdown_timeout=5.0)
    clients: list[LineClient] = []
    async with serving(server):
        address = server.get_addresses()[0]
        for _ in range(3):
            client = LineClient(await in_thread(connect, address))
            clients.append(client)
            await in_thread(client.send, "hi")
            assert await in_thread(client.recv) == "hi"
        clients[0].send_raw(b'["mid-fr')  # one client is mid-frame
        start = current().current_time()
        await server.shutdown()
        assert current().current_time() - start < 2.0  # idle clients do not hold shutdown
        assert not server.is_serving()
    for client in clients:
        assert await in_thread(client.recv_eof)
        client.close()
    assert handler.service_closed
    assert handler.events[0] == "service_init"
    assert handler.events.count("connect") == handler.events.count("disconnect") == 3
    if transport == "unix":
        assert not os.path.exists(unix_path)


class SlowHandler(StreamRequestHandler[Any, Any]):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = None

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        self.started.set()  # type: ignore[attr-defined]
        await client.backend().sleep(self.delay)
        await client.send_packet(request)


async def test_shutdown_lets_requests_finish(backend_name: str) -> None:
    handler = SlowHandler(0.2)
    handler.started = current().create_event()  # type: ignore[assignment]
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        client = LineClient(await in_thread(connect, server.get_addresses()[0]))
        await in_thread(client.send, "slow")
        await handler.started.wait()  # type: ignore[attr-defined]
        await server.shutdown()
    assert await in_thread(client.recv) == "slow"
    assert await in_thread(client.recv_eof)
    client.close()


async def test_shutdown_cancels_after_grace_period(backend_name: str) -> None:
    handler = SlowHandler(60)
    handler.started = current().create_event()  # type: ignore[assignment]
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with serving(
            AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler, shutdown_timeout=0.1)
        ) as server:
            client = LineClient(await in_thread(connect, server.get_addresses()[0]))
            await in_thread(client.send, "slow")
            await handler.started.wait()  # type: ignore[attr-defined]
            await server.shutdown()
    assert await in_thread(client.recv_eof)
    client.close()
    assert any(entry.get("count") == 1 for entry in logs if "grace" in entry["event"])


async def test_idle_timeout_counts_from_accept(backend_name: str) -> None:
    async with serving(
        AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), idle_timeout=0.1)
    ) as server:

        def silent(address: Any) -> bool:
            with contextlib.closing(LineClient(connect(address))) as client:
                return client.recv_eof()

        assert await in_thread(silent, server.get_addresses()[0])


async def test_dual_stack_one_port(backend_name: str) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    async with serving(AsyncTCPServer(None, 0, JSON_LINES, EchoHandler())) as server:
        addresses = server.get_addresses()
        assert len({port for _host, port in addresses}) == 1  # type: ignore[misc]
        port = addresses[0][1]  # type: ignore[index]
        assert await in_thread(line_exchange, ("127.0.0.1", port), [4]) == [4]
        assert await in_thread(line_exchange, ("::1", port), [6]) == [6]


async def test_bind_failures_name_the_transport_and_address(backend_name: str) -> None:
    """A script gets the command line's one-line message, as an OSError with its errno."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BindError) as caught:
            async with AsyncTCPServer("127.0.0.1", port, JSON_LINES, EchoHandler()):
                pass  # pragma: no cover - the bind fails
    error = caught.value
    assert str(error) == f"tcp 127.0.0.1:{port}: cannot bind: Address already in use"
    assert isinstance(error, OSError)
    assert error.errno == errno.EADDRINUSE
    assert (error.transport, error.address) == ("tcp", f"127.0.0.1:{port}")


async def test_unix_socket_in_use_and_stale(backend_name: str, unix_path: str) -> None:
    async with serving(AsyncUnixStreamServer(unix_path, JSON_LINES, EchoHandler())):
        with pytest.raises(BindError, match=f"^unix {re.escape(unix_path)}: cannot bind: .*in use"):
            async with AsyncUnixStreamServer(unix_path, JSON_LINES, EchoHandler()):
                pass
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(unix_path)
    stale.close()  # leaves a stale socket file behind
    async with serving(AsyncUnixStreamServer(unix_path, JSON_LINES, EchoHandler())) as server:
        assert await in_thread(line_exchange, server.get_addresses()[0], ["fresh"]) == ["fresh"]


@contextlib.asynccontextmanager
async def _noop() -> AsyncIterator[None]:
    yield


def test_json_dumps_sanity() -> None:
    assert json.loads(JSON_LINES.encode({"a": 1})) == {"a": 1}


# -- TLS --------------------------------------------------------------------------------


async def test_tls_echo(
    backend_name: str, transport: str, unix_path: str, tls_contexts: Any
) -> None:
    server_context, client_context = tls_contexts
    server = make_server(transport, unix_path, Recorder(), ssl=server_context)
    async with serving(server):
        messages = [{"secret": i} for i in range(20)]
        assert (
            await in_thread(line_exchange, server.get_addresses()[0], messages, client_context)
            == messages
        )


async def test_tls_garbage_and_stalled_handshakes_closed_quietly(
    backend_name: str, tls_contexts: Any
) -> None:
    server_context, client_context = tls_contexts
    handler = Recorder()

    def exchange(address: Any) -> None:
        with contextlib.closing(LineClient(connect(address))) as plaintext:
            plaintext.send("not TLS")
            assert plaintext.recv_eof()
        with contextlib.closing(LineClient(connect(address))) as stalled:
            assert stalled.recv_eof()  # never starts a handshake: closed after the timeout
        assert line_exchange(address, ["fine"], tls=client_context) == ["fine"]

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        server = AsyncTCPServer(
            "127.0.0.1", 0, JSON_LINES, handler, ssl=server_context, ssl_handshake_timeout=0.2
        )
        async with serving(server):
            await in_thread(exchange, server.get_addresses()[0])
    assert not [entry for entry in logs if entry["log_level"] == "error"]
    assert handler.events.count("connect") == 1  # only the real TLS client reached the handler


async def test_from_sockets_serves_and_never_unlinks(backend_name: str, unix_path: str) -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    unix.listen()
    server = AsyncTCPServer.from_sockets([tcp, unix], JSON_LINES, EchoHandler())
    async with serving(server):
        tcp_address, unix_address = server.get_addresses()
        assert unix_address == unix_path
        assert await in_thread(line_exchange, tcp_address, ["tcp"]) == ["tcp"]
        assert await in_thread(line_exchange, unix_path, ["unix"]) == ["unix"]
    assert os.path.exists(unix_path)  # not ours to remove
    assert tcp.fileno() == -1  # closed with the server


def test_from_sockets_checks_the_kind() -> None:
    with (
        contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock,
        pytest.raises(ValueError, match="SOCK_STREAM"),
    ):
        AsyncTCPServer.from_sockets([sock], JSON_LINES, EchoHandler())
    with pytest.raises(ValueError, match="at least one"):
        AsyncTCPServer.from_sockets([], JSON_LINES, EchoHandler())
