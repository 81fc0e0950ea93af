"""Standalone (synchronous) servers: run in a background thread, stopped from any thread."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from handlers import DatagramEchoHandler, EchoHandler, StreamClient, StreamRequestHandler
from protocols import DatagramProtocol, JSONSerializer, StreamProtocol
from server_framework.servers import (
    StandaloneServer,
    StandaloneTCPServer,
    StandaloneUDPServer,
    StandaloneUnixDatagramServer,
    StandaloneUnixStreamServer,
)

from server_helpers import CLIENT_TIMEOUT, line_exchange

BACKENDS = ["asyncio", "uvloop", "trio"]
JSON_LINES = StreamProtocol(JSONSerializer())


@contextlib.contextmanager
def running(server: StandaloneServer[Any]) -> Any:
    thread = threading.Thread(target=server.serve_forever, name="standalone-server")
    thread.start()
    try:
        assert server.wait_started(CLIENT_TIMEOUT)
        yield server
    finally:
        server.shutdown(CLIENT_TIMEOUT)
        thread.join(CLIENT_TIMEOUT)
        assert not thread.is_alive()
        server.server_close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tcp_in_background_thread(backend: str) -> None:
    server = StandaloneTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), backend=backend)  # type: ignore[arg-type]
    address = server.get_addresses()[0]  # known before serving
    with running(server):
        assert server.is_serving()
        assert line_exchange(address, [1, "two"]) == [1, "two"]
    assert not server.is_serving()
    assert server.get_addresses() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_unix_stream_and_datagram(backend: str) -> None:
    with tempfile.TemporaryDirectory(prefix="sf-test-") as directory:
        stream_path = os.path.join(directory, "s.sock")
        dgram_path = os.path.join(directory, "d.sock")
        stream = StandaloneUnixStreamServer(stream_path, JSON_LINES, EchoHandler(), backend=backend)  # type: ignore[arg-type]
        dgram = StandaloneUnixDatagramServer(
            dgram_path,
            DatagramProtocol(JSONSerializer()),
            DatagramEchoHandler(),
            backend=backend,  # type: ignore[arg-type]
        )
        with running(stream), running(dgram):
            assert line_exchange(stream_path, ["unix"]) == ["unix"]
            with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as peer:
                peer.bind(os.path.join(directory, "peer.sock"))
                peer.settimeout(CLIENT_TIMEOUT)
                peer.sendto(b'"dgram"', dgram_path)
                assert json.loads(peer.recv(1024)) == "dgram"
        assert not os.path.exists(stream_path)
        assert not os.path.exists(dgram_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_udp_context_manager(backend: str) -> None:
    server = StandaloneUDPServer(
        "127.0.0.1",
        0,
        DatagramProtocol(JSONSerializer()),
        DatagramEchoHandler(),
        backend=backend,  # type: ignore[arg-type]
    )
    with (
        server,
        running(server),
        contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as peer,
    ):
        peer.settimeout(CLIENT_TIMEOUT)
        peer.sendto(b"[1]", server.get_addresses()[0])
        assert json.loads(peer.recv(1024)) == [1]


class ShutdownFromHandler(StreamRequestHandler[Any, Any]):
    server: StandaloneServer[Any]

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request == "stop":
            self.server.shutdown()  # from the loop thread: must not deadlock
        await client.send_packet(request)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shutdown_from_inside_a_handler(backend: str) -> None:
    handler = ShutdownFromHandler()
    server = StandaloneTCPServer("127.0.0.1", 0, JSON_LINES, handler, backend=backend)  # type: ignore[arg-type]
    handler.server = server
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    assert server.wait_started(CLIENT_TIMEOUT)
    assert line_exchange(server.get_addresses()[0], ["stop"]) == ["stop"]
    thread.join(CLIENT_TIMEOUT)
    assert not thread.is_alive()
    server.server_close()


def test_shutdown_before_serving_returns_at_once() -> None:
    server = StandaloneTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), backend="asyncio")
    server.shutdown()
    server.serve_forever()  # returns immediately
    server.server_close()
    with pytest.raises(RuntimeError):
        server.serve_forever()
