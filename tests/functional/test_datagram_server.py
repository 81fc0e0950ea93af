"""Datagram servers (UDP, Unix datagram) over real sockets, on asyncio, uvloop and trio."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncGenerator
from typing import Any

import pytest
import structlog

from handlers import DatagramClient, DatagramEchoHandler, DatagramRequestHandler, RecvParams
from protocols import DatagramProtocol, DeserializeError, JSONSerializer, MsgPackSerializer
from server_framework.backend import current
from server_framework.servers import AsyncUDPServer, AsyncUnixDatagramServer

from server_helpers import CLIENT_TIMEOUT, in_thread, serving

JSON = DatagramProtocol(JSONSerializer())


@pytest.fixture(params=["udp", "unix"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_server(transport: str, tmp_dir: str, handler: Any, **options: Any) -> Any:
    if transport == "udp":
        return AsyncUDPServer("127.0.0.1", 0, JSON, handler, **options)
    return AsyncUnixDatagramServer(os.path.join(tmp_dir, "server.sock"), JSON, handler, **options)


class Peer:
    """A blocking datagram peer (bound, so that a Unix server can answer it)."""

    _count = 0

    def __init__(self, address: Any, tmp_dir: str) -> None:
        self.address = address
        if isinstance(address, str):
            Peer._count += 1
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(os.path.join(tmp_dir, f"peer-{os.getpid()}-{Peer._count}.sock"))
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(CLIENT_TIMEOUT)

    def send(self, message: Any) -> None:
        self.sock.sendto(json.dumps(message).encode(), self.address)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.address)

    def recv(self, timeout: float = CLIENT_TIMEOUT) -> Any:
        self.sock.settimeout(timeout)
        return json.loads(self.sock.recv(65536))

    def close(self) -> None:
        self.sock.close()


def exchange(address: Any, tmp_dir: str, messages: list[Any]) -> list[Any]:
    with contextlib.closing(Peer(address, tmp_dir)) as peer:
        for message in messages:
            peer.send(message)
        return [peer.recv() for _ in messages]


async def test_echo(backend_name: str, transport: str, tmp_dir: str) -> None:
    async with serving(make_server(transport, tmp_dir, DatagramEchoHandler())) as server:
        messages = [{"n": i} for i in range(20)]
        assert await in_thread(exchange, server.get_addresses()[0], tmp_dir, messages) == messages


class Counter(DatagramRequestHandler[Any, Any]):
    """Counts each peer's datagrams in client.state; answers bad ones with an error."""

    def __init__(self) -> None:
        self.clients: set[DatagramClient[Any]] = set()

    async def handle(self, client: DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        self.clients.add(client)
        try:
            request = yield
        except DeserializeError as exc:
            await client.send_packet({"error": exc.reason})
            return
        if request == "crash":
            raise RuntimeError("crash on purpose")
        count = client.state["count"] = client.state.get("count", 0) + 1
        await client.send_packet({"echo": request, "count": count})


async def test_state_per_peer_and_bad_datagrams(
    backend_name: str, transport: str, tmp_dir: str
) -> None:
    handler = Counter()

    def talk(address: Any) -> None:
        with (
            contextlib.closing(Peer(address, tmp_dir)) as one,
            contextlib.closing(Peer(address, tmp_dir)) as two,
        ):
            one.send("a")
            assert one.recv() == {"echo": "a", "count": 1}
            two.send("b")
            assert two.recv() == {"echo": "b", "count": 1}
            one.send_raw(b"{not json")
            assert "malformed JSON" in one.recv()["error"]
            one.send("c")
            assert one.recv() == {"echo": "c", "count": 2}
            two.send("crash")
            two.send("d")
            assert two.recv() == {
                "echo": "d",
                "count": 1,
            }  # the crash closed that client: fresh state
            one.send("e")
            assert one.recv() == {"echo": "e", "count": 3}

    with structlog.testing.capture_logs() as logs:
        async with serving(make_server(transport, tmp_dir, handler)) as server:
            await in_thread(talk, server.get_addresses()[0])
    assert len(handler.clients) == 2  # datagram clients are equal and hash alike per address
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "request handler failed; ending the peer's handler"
    ]


class SlowTalker(DatagramRequestHandler[Any, Any]):
    async def handle(self, client: DatagramClient[Any]) -> AsyncGenerator[RecvParams, Any]:
        try:
            request = yield RecvParams(timeout=0.05)
        except TimeoutError:
            await client.send_packet("timeout")
            return
        await client.backend().sleep(0.01)  # the blocking path
        await client.send_packet(request)


async def test_recv_params_timeout_and_blocking_handler(
    backend_name: str, transport: str, tmp_dir: str
) -> None:
    def talk(address: Any) -> list[Any]:
        with contextlib.closing(Peer(address, tmp_dir)) as peer:
            peer.send("hello")
            first = peer.recv()
            second = peer.recv()  # the next generator waits 50 ms for a datagram, then times out
            return [first, second]

    async with serving(make_server(transport, tmp_dir, SlowTalker())) as server:
        assert await in_thread(talk, server.get_addresses()[0]) == ["hello", "timeout"]


async def test_many_peers(backend_name: str) -> None:
    def talk(address: Any) -> None:
        peers = [Peer(address, "") for _ in range(100)]
        try:
            for index, peer in enumerate(peers):
                peer.send(index)
            for index, peer in enumerate(peers):
                assert peer.recv() == index
        finally:
            for peer in peers:
                peer.close()

    async with serving(AsyncUDPServer("127.0.0.1", 0, JSON, DatagramEchoHandler())) as server:
        await in_thread(talk, server.get_addresses()[0])


class Stuck(DatagramRequestHandler[Any, Any]):
    """Blocks on every datagram until released: its peer's queue fills up."""

    def __init__(self) -> None:
        self.release: Any = None
        self.received: list[Any] = []

    async def handle(self, client: DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        self.received.append(request)
        await self.release.wait()


async def test_client_queue_bound_drops_and_counts(backend_name: str) -> None:
    handler = Stuck()
    handler.release = current().create_event()
    server = AsyncUDPServer("127.0.0.1", 0, JSON, handler, client_queue_size=4, shutdown_timeout=5)
    with structlog.testing.capture_logs() as logs:
        async with serving(server):
            with contextlib.closing(Peer(server.get_addresses()[0], "")) as peer:
                for index in range(50):
                    await in_thread(peer.send, index)
                while server.dropped_datagrams + len(handler.received) < 50 - 4:
                    await current().sleep(0.01)
                handler.release.set()
    assert server.dropped_datagrams >= 50 - 4 - len(handler.received)
    assert server.dropped_datagrams > 0
    assert any(entry["event"] == "dropping datagram" for entry in logs)


async def test_max_clients(backend_name: str) -> None:
    handler = Stuck()
    handler.release = current().create_event()
    server = AsyncUDPServer("127.0.0.1", 0, JSON, handler, max_clients=2, shutdown_timeout=5)
    async with serving(server):
        peers = [Peer(server.get_addresses()[0], "") for _ in range(3)]
        try:
            for peer in peers:
                await in_thread(peer.send, "hi")
            while len(handler.received) + server.dropped_datagrams < 3:
                await current().sleep(0.01)
            assert len(handler.received) == 2
            assert server.dropped_datagrams == 1
            handler.release.set()
        finally:
            for peer in peers:
                peer.close()


async def test_shutdown_with_backlog_and_idle_peers(
    backend_name: str, transport: str, tmp_dir: str
) -> None:
    handler = Stuck()
    handler.release = current().create_event()
    server = make_server(transport, tmp_dir, handler, shutdown_timeout=0.1)
    async with serving(server):
        with contextlib.closing(Peer(server.get_addresses()[0], tmp_dir)) as peer:
            for index in range(10):
                await in_thread(peer.send, index)
            while not handler.received:
                await current().sleep(0.01)
            start = current().current_time()
            await server.shutdown()
            assert current().current_time() - start < 3.0
    assert server.get_addresses() == [] or transport == "udp"
    if transport == "unix":
        assert not os.path.exists(os.path.join(tmp_dir, "server.sock"))


async def test_idle_clients_are_dropped(backend_name: str) -> None:
    handler = Counter()
    server = AsyncUDPServer("127.0.0.1", 0, JSON, handler, client_idle_timeout=0.05)
    async with serving(server):
        with contextlib.closing(Peer(server.get_addresses()[0], "")) as peer:
            await in_thread(peer.send, "x")
            assert await in_thread(peer.recv) == {"echo": "x", "count": 1}
            listener = server._listener
            endpoints = listener.endpoints  # type: ignore[union-attr]
            while any(endpoint.clients for endpoint in endpoints):
                await current().sleep(0.01)
            await in_thread(peer.send, "y")
            assert await in_thread(peer.recv) == {"echo": "y", "count": 1}  # a fresh client


async def test_from_sockets(backend_name: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = AsyncUDPServer.from_sockets([sock], JSON, DatagramEchoHandler())
    async with serving(server):
        assert await in_thread(exchange, server.get_addresses()[0], "", ["adopted"]) == ["adopted"]


async def test_echo_msgpack(backend_name: str, transport: str, tmp_dir: str) -> None:
    protocol = DatagramProtocol(MsgPackSerializer())
    if transport == "udp":
        server: Any = AsyncUDPServer("127.0.0.1", 0, protocol, DatagramEchoHandler())
    else:
        server = AsyncUnixDatagramServer(
            os.path.join(tmp_dir, "server.sock"), protocol, DatagramEchoHandler()
        )

    def talk(address: Any) -> list[Any]:
        with contextlib.closing(Peer(address, tmp_dir)) as peer:
            messages = [{"bin": b"\x00\xff"}, [1, 2.5, None], "text"]
            for message in messages:
                peer.send_raw(protocol.encode(message))
            return [protocol.decode(peer.sock.recv(65536)) for _ in messages]

    async with serving(server):
        assert await in_thread(talk, server.get_addresses()[0]) == [
            {"bin": b"\x00\xff"},
            [1, 2.5, None],
            "text",
        ]
