"""Testing a handler without the pytest plugin: ``serve_in_background`` in any test function.

A plain test serves the handler in a thread (``with``); an async scenario serves it in its own
loop (``async with``), run on each loop by ``sf.run``. Then a server facing misbehaving peers,
and the protocol alone, without sockets. Copy them into your ``tests/`` and run ``pytest``.
"""

from __future__ import annotations

from typing import Any

import pytest
from greeter import Greeter

import server_framework as sf
from server_framework.testing import faults, serve_in_background

LOOPS = ["asyncio", "uvloop", "trio"]
JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())
JSON_DATAGRAMS = sf.DatagramProtocol(sf.JSONSerializer())


@pytest.mark.parametrize("loop", LOOPS)
def test_greeter_over_udp(loop: Any) -> None:
    # A free port, a server thread on that loop, a connected client; all stopped on exit.
    with serve_in_background(Greeter(), JSON_DATAGRAMS, backend=loop) as served:
        assert served.client.request({"name": "udp"}) == {"greeting": "hello, udp"}


async def greeter_scenario() -> list[Any]:
    """Serve a Greeter in this loop, send two requests in one go (pipelined); return the replies."""
    async with serve_in_background(Greeter("hi"), JSON_LINES) as served:
        await served.client.send_packets([{"name": "a"}, "not an object"])
        return [await served.client.recv_packet() for _ in range(2)]


@pytest.mark.parametrize("loop", LOOPS)
def test_greeter_over_tcp(loop: Any) -> None:
    replies = sf.run(greeter_scenario, backend=loop)
    assert replies[0] == {"greeting": "hi, a"}
    assert "error" in replies[1]


def test_blocking_client_against_a_thread_server() -> None:
    # Every transport: "tcp", "tls" (a throwaway certificate), "udp", "unix", "unix-datagram".
    for transport in ("tls", "unix"):
        with serve_in_background(Greeter(), JSON_LINES, transport=transport) as served:
            assert served.client.request({}) == {"greeting": "hello, world"}
            with served.connect() as second:  # more clients, closed with the serving anyway
                assert second.request({"name": "2"}) == {"greeting": "hello, 2"}


def test_greeter_survives_misbehaving_peers() -> None:
    request = JSON_LINES.encode({"name": "x" * 1000})
    with serve_in_background(Greeter(), JSON_LINES) as served:
        faults.reset_mid_frame(served.address, request)  # half a request, then a TCP reset
        faults.send_raw(served.address, faults.garbage(4096))  # bytes that are not JSON
        with served.open_socket() as sock:  # a request one byte at a time
            faults.trickle(sock, JSON_LINES.encode({"name": "slow"}))
            assert faults.recv_packets(sock, JSON_LINES) == [{"greeting": "hello, slow"}]
        with faults.stop_reading(served.address, request):  # a client that never reads
            assert served.client.request({"name": "b"}) == {"greeting": "hello, b"}


def test_protocol_without_sockets() -> None:
    # The wire layer is sans-IO: feed it bytes, as a socket would, even one byte at a time.
    decoder = JSON_LINES.decoder()
    for byte in b'{"name": "a"}\n{"name"':
        decoder.feed(bytes([byte]))
    assert list(decoder) == [{"name": "a"}]
    decoder.feed(b': "b"}\n')
    assert list(decoder) == [{"name": "b"}]
