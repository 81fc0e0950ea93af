"""``serve_in_background``: every transport, on every loop, with ``with`` and ``async with``;
what it cleans up when the block raises; the mistakes it refuses."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import AsyncGenerator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

import server_framework as sf
from server_framework.backend import BackendName
from server_framework.testing import (
    AsyncClient,
    AsyncServed,
    Client,
    Served,
    Transport,
    faults,
    serve_in_background,
)

JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())
JSON_DATAGRAMS = sf.DatagramProtocol(sf.JSONSerializer())
TRANSPORTS: list[Transport] = ["tcp", "tls", "udp", "unix", "unix-datagram"]


def echo(transport: Transport) -> tuple[Any, Any]:
    """An echo handler and its protocol, for ``transport``."""
    if transport in ("udp", "unix-datagram"):
        return sf.DatagramEchoHandler(), JSON_DATAGRAMS
    return sf.EchoHandler(), JSON_LINES


class BrokenInit(sf.EchoHandler):
    """A handler whose ``service_init`` fails: the server cannot start."""

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        raise LookupError("no database")


class Silent(sf.StreamRequestHandler[Any, Any]):
    """Reads requests, never answers."""

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        while True:
            yield


def open_fds() -> set[str]:
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


async def nothing() -> None:
    pass


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """The test closes every descriptor it opens (Linux: counted in /proc/self/fd)."""
    if not os.path.isdir("/proc/self/fd"):
        yield
        return
    # The first uvloop loop of a process opens a pipe that lives as long as the process.
    sf.run(nothing, backend="uvloop")
    before = open_fds()
    yield
    assert len(open_fds()) <= len(before), "descriptors left open"


def kit_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sf-testing")]


# -- with: the server in a thread ------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_with_serves_every_transport(backend_name: BackendName, transport: Transport) -> None:
    handler, protocol = echo(transport)
    with serve_in_background(handler, protocol, transport=transport, backend=backend_name) as s:
        assert isinstance(s, Served)
        assert isinstance(s.client, Client)
        assert s.transport == transport
        assert s.backend_name == backend_name
        if transport.startswith("unix"):
            assert isinstance(s.address, str)
            assert os.path.exists(s.address)
        else:
            assert s.address[0] == "127.0.0.1"
            assert s.address[1] > 0  # a free port, never a fixed one
        assert s.client.request({"n": 1}) == {"n": 1}
        s.client.send_packets([2, 3])
        assert [s.client.recv_packet(), s.client.recv_packet()] == [2, 3]
        with s.connect() as other:  # more clients, served at once
            assert other.request("other") == "other"
        assert s.connect().request("closed with the serving") == "closed with the serving"
        path = s.address
    assert not kit_threads()
    if transport.startswith("unix"):
        assert isinstance(path, str)
        assert not os.path.exists(os.path.dirname(path))  # the temporary directory too


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_with_cleans_up_when_the_block_raises(
    backend_name: BackendName, transport: Transport, no_fd_leak: None
) -> None:
    raised: BaseException | None = None
    try:
        with serve_in_background(sf.EchoHandler(), JSON_LINES, transport=transport) as served:
            path = served.address
            served.connect()
            served.open_socket()
            raise KeyError("boom")
    except BaseException as exc:
        raised = exc
    assert type(raised) is KeyError  # the block's own error, as it is
    assert not kit_threads()
    if transport == "unix":
        assert isinstance(path, str)
        assert not os.path.exists(path)
        assert not os.path.exists(os.path.dirname(path))


def test_with_reports_a_server_that_cannot_start(backend_name: BackendName) -> None:
    serving = serve_in_background(BrokenInit(), JSON_LINES, backend=backend_name)
    with pytest.raises(LookupError, match="no database"), serving:
        pytest.fail("the block must not run")
    assert not kit_threads()


def test_with_unix_directory_is_removed_when_start_fails() -> None:
    serving = serve_in_background(BrokenInit(), JSON_LINES, transport="unix")
    with pytest.raises(LookupError), serving:
        pass
    assert serving._directory is None
    assert not serving.is_open


def test_the_client_never_waits_forever() -> None:
    with serve_in_background(Silent(), JSON_LINES, timeout=0.05) as served:
        served.client.send_packet("anyone?")
        with pytest.raises(TimeoutError):
            served.client.recv_packet()  # the serving's timeout, not "forever"
        assert served.client.timeout == 0.05
        assert list(served.client.iter_received_packets()) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_open_socket_speaks_raw_bytes(transport: Transport) -> None:
    handler, protocol = echo(transport)
    with serve_in_background(handler, protocol, transport=transport) as served:
        sock = served.open_socket()  # TLS done for "tls"; closed with the serving
        if protocol is JSON_DATAGRAMS:
            sock.send(JSON_DATAGRAMS.encode({"raw": transport}))
            assert JSON_DATAGRAMS.decode(sock.recv(65536)) == {"raw": transport}
        else:
            sock.sendall(JSON_LINES.encode({"raw": transport}))
            assert faults.recv_packets(sock, JSON_LINES) == [{"raw": transport}]


def test_a_server_bound_to_every_interface_is_reached_on_loopback() -> None:
    with serve_in_background(sf.EchoHandler(), JSON_LINES, host="0.0.0.0") as served:
        assert served.address[0] == "0.0.0.0"
        assert served.client.request(1) == 1


def test_server_options_reach_the_server() -> None:
    with serve_in_background(sf.EchoHandler(), JSON_LINES, max_connections=7) as served:
        assert served.server.server._options.max_connections == 7
        assert served.server.server._options.shutdown_timeout == 1.0  # the kit's default


# -- async with: the server in the test's loop -----------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_async_with_serves_every_transport(
    backend_name: BackendName, transport: Transport
) -> None:
    handler, protocol = echo(transport)
    async with serve_in_background(handler, protocol, transport=transport) as served:
        assert isinstance(served, AsyncServed)
        assert isinstance(served.client, AsyncClient)
        assert served.backend_name == backend_name
        assert served.transport == transport
        assert await served.client.request({"n": 1}) == {"n": 1}
        await served.client.send_packets([2, 3])
        assert [await served.client.recv_packet() for _ in range(2)] == [2, 3]
        other = await served.connect()
        assert await other.request("other") == "other"
        path = served.address
    if transport.startswith("unix"):
        assert isinstance(path, str)
        assert not os.path.exists(os.path.dirname(path))


@pytest.mark.parametrize("transport", ["tcp", "unix-datagram"])
async def test_async_with_cleans_up_when_the_block_raises(
    backend_name: BackendName, transport: Transport, no_fd_leak: None
) -> None:
    handler, protocol = echo(transport)
    raised: BaseException | None = None
    try:
        async with serve_in_background(handler, protocol, transport=transport) as served:
            path = served.address
            await served.connect()
            raise KeyError("boom")
    except BaseException as exc:
        raised = exc
    assert type(raised) is KeyError  # not wrapped in an exception group
    if transport == "unix-datagram":
        assert isinstance(path, str)
        assert not os.path.exists(os.path.dirname(path))


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_async_with_can_be_cancelled(
    backend_name: BackendName, transport: Transport, no_fd_leak: None
) -> None:
    backend = sf.current_backend()
    with backend.move_on_after(0.01) as scope:
        async with serve_in_background(sf.EchoHandler(), JSON_LINES, transport=transport) as s:
            path = s.address
            assert await s.client.request(1) == 1
            await backend.sleep_forever()
    assert scope.cancelled_caught
    if transport == "unix":
        assert isinstance(path, str)
        assert not os.path.exists(os.path.dirname(path))


async def test_async_with_reports_a_server_that_cannot_start(backend_name: BackendName) -> None:
    with pytest.raises(LookupError, match="no database"):
        async with serve_in_background(BrokenInit(), JSON_LINES, transport="unix"):
            pytest.fail("the block must not run")


async def test_async_with_serves_in_the_running_loop_only(backend_name: BackendName) -> None:
    other: BackendName = "trio" if backend_name != "trio" else "asyncio"
    with pytest.raises(ValueError, match="running loop"):
        async with serve_in_background(sf.EchoHandler(), JSON_LINES, backend=other):
            pass
    async with serve_in_background(sf.EchoHandler(), JSON_LINES, backend=backend_name) as s:
        assert await s.client.request("same loop") == "same loop"


async def test_async_client_never_waits_forever(backend_name: BackendName) -> None:
    async with serve_in_background(Silent(), JSON_LINES, timeout=0.05) as served:
        await served.client.send_packet("anyone?")
        with pytest.raises(TimeoutError):
            await served.client.recv_packet()


async def test_async_blocking_helpers_run_in_a_thread(backend_name: BackendName) -> None:
    async with serve_in_background(sf.EchoHandler(), JSON_LINES) as served:

        def raw_exchange() -> bytes:
            sock = served.open_socket()
            sock.sendall(b'"raw"\n')
            return sock.recv(100)

        assert await served.backend.run_in_thread(raw_exchange) == b'"raw"\n'


# -- what it refuses -------------------------------------------------------------------------


def test_transport_defaults_follow_the_protocol() -> None:
    assert serve_in_background(sf.EchoHandler(), JSON_LINES)._plan.transport == "tcp"
    assert serve_in_background(sf.DatagramEchoHandler(), JSON_DATAGRAMS)._plan.transport == "udp"
    serving = serve_in_background(sf.EchoHandler(), JSON_LINES, transport="tls")
    assert serving._plan.transport == "tls"
    assert serving._plan.client_ssl is not None  # a throwaway certificate


@pytest.mark.parametrize(
    ("protocol", "options", "message"),
    [
        (JSON_DATAGRAMS, {"transport": "tcp"}, "DatagramProtocol is served over"),
        (JSON_LINES, {"transport": "udp"}, "StreamProtocol is served over"),
        (JSON_LINES, {"transport": "sctp"}, "unknown transport"),
        (JSON_LINES, {"transport": "unix", "client_ssl": object()}, "are for TLS"),
        (JSON_LINES, {"transport": "tls", "client_ssl": object()}, "pass both"),
        (JSON_LINES, {"timeout": 0}, "timeout must be positive"),
    ],
)
def test_mistakes_are_refused(protocol: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serve_in_background(sf.EchoHandler(), protocol, **options)


def test_a_protocol_is_required() -> None:
    with pytest.raises(TypeError, match="StreamProtocol or a DatagramProtocol"):
        serve_in_background(sf.EchoHandler(), sf.JSONSerializer())  # type: ignore[arg-type]


def test_a_serving_is_entered_once() -> None:
    serving = serve_in_background(sf.EchoHandler(), JSON_LINES)
    with serving as served:
        assert served.client.request(1) == 1
    with pytest.raises(RuntimeError, match="entered only once"), serving:
        pass
