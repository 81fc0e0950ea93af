"""Testing a handler: serve it on a free port, talk to it with a real client, stop it.

Three styles, from the simplest: a standalone server in a thread (no async test plugin at
all), the async server and client run by ``server_framework.run`` on each loop, and the
protocol alone, without sockets. Copy them into your ``tests/`` and run ``pytest``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from greeter import Greeter

import server_framework
from protocols import DatagramProtocol, JSONSerializer, StreamProtocol
from server_framework import AsyncTCPClient, TCPClient, UDPClient
from server_framework.servers import AsyncTCPServer, StandaloneTCPServer, StandaloneUDPServer

LOOPS = ["asyncio", "uvloop", "trio"]
JSON_LINES = StreamProtocol(JSONSerializer())


@pytest.mark.parametrize("loop", LOOPS)
def test_greeter_over_udp(loop: Any) -> None:
    # A standalone server binds at construction (port 0: any free port) and serves in a thread.
    server = StandaloneUDPServer(
        "127.0.0.1", 0, DatagramProtocol(JSONSerializer()), Greeter(), backend=loop
    )
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        server.wait_started()
        address = server.get_addresses()[0]
        assert isinstance(address, tuple)  # (host, port)
        with UDPClient(address, DatagramProtocol(JSONSerializer())) as client:
            client.send_packet({"name": "udp"})
            assert client.recv_packet(timeout=5) == {"greeting": "hello, udp"}
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


async def greeter_scenario() -> list[Any]:
    """Serve a Greeter, send two requests in one go (pipelined), stop; return the replies."""
    backend = server_framework.current_backend()
    async with (
        AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Greeter("hi")) as server,
        backend.create_task_group() as tasks,
    ):
        tasks.start_soon(server.serve_forever)
        address = server.get_addresses()[0]
        assert isinstance(address, tuple)  # (host, port)
        try:
            async with AsyncTCPClient(address, JSON_LINES) as client:
                await client.send_packet({"name": "a"})
                await client.send_packet("not an object")
                return [await client.recv_packet(timeout=5) for _ in range(2)]
        finally:
            await server.shutdown()  # serve_forever returns, the task group can end


@pytest.mark.parametrize("loop", LOOPS)
def test_greeter_over_tcp(loop: Any) -> None:
    replies = server_framework.run(greeter_scenario, backend=loop)
    assert replies[0] == {"greeting": "hi, a"}
    assert "error" in replies[1]


def test_protocol_without_sockets() -> None:
    # The wire layer is sans-IO: feed it bytes, as a socket would, even one byte at a time.
    decoder = JSON_LINES.decoder()
    for byte in b'{"name": "a"}\n{"name"':
        decoder.feed(bytes([byte]))
    assert list(decoder) == [{"name": "a"}]
    decoder.feed(b': "b"}\n')
    assert list(decoder) == [{"name": "b"}]


def test_blocking_client_against_a_thread_server() -> None:
    # The same with TCP: for a test suite that is not async at all.
    server = StandaloneTCPServer("127.0.0.1", 0, JSON_LINES, Greeter())
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        server.wait_started()
        address = server.get_addresses()[0]
        assert isinstance(address, tuple)
        with TCPClient(address, JSON_LINES) as client:
            client.send_packet({})
            assert client.recv_packet(timeout=5) == {"greeting": "hello, world"}
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
