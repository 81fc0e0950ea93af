"""What EasyNetwork's servers offer, here too: several hosts, abstract Unix names, the bound
sockets, ``is_listening``, an awaitable ``server_close`` and ``serve_forever(is_up_event=)``.

Real loopback and Unix sockets, on every loop.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from typing import Any

import pytest

import server_framework as sf
from server_framework.backend import BackendName, current

from server_helpers import in_thread, line_exchange, serving

JSON_LINES: sf.StreamProtocol[Any, Any] = sf.StreamProtocol(sf.JSONSerializer())
JSON_DATAGRAMS: sf.DatagramProtocol[Any, Any] = sf.DatagramProtocol(sf.JSONSerializer())

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract Unix names are Linux's"
)


def abstract_name() -> str:
    return f"\0server-framework-test-{uuid.uuid4().hex}"


async def test_tcp_server_on_several_hosts(backend_name: BackendName) -> None:
    server = sf.AsyncTCPServer(["127.0.0.1", "::1"], 0, JSON_LINES, sf.EchoHandler())
    async with serving(server):
        addresses = server.get_addresses()
        assert {address[0] for address in addresses} == {"127.0.0.1", "::1"}
        assert len({address[1] for address in addresses}) == 1  # one port for all
        for address in addresses:
            assert await in_thread(line_exchange, address, [{"at": address[0]}]) == [
                {"at": address[0]}
            ]


async def test_udp_server_on_several_hosts(backend_name: BackendName) -> None:
    server = sf.AsyncUDPServer(["127.0.0.1", "::1"], 0, JSON_DATAGRAMS, sf.DatagramEchoHandler())
    async with serving(server):
        for host, port in server.get_addresses():

            def exchange(host: str = host, port: int = port) -> Any:
                with sf.UDPClient((host, port), JSON_DATAGRAMS) as client:
                    client.send_packet({"at": host})
                    return client.recv_packet(timeout=10)

            assert await in_thread(exchange) == {"at": host}


def test_a_failed_bind_on_several_hosts_names_them_all() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(sf.BindError) as caught:
            sf.StandaloneTCPServer(["::1", "127.0.0.1"], port, JSON_LINES, sf.EchoHandler())
    assert str(caught.value) == (
        f"tcp [::1]:{port},127.0.0.1:{port}: cannot bind: Address already in use"
    )


def test_an_empty_list_of_hosts_is_refused() -> None:
    with pytest.raises(ValueError, match="empty sequence of hosts"):
        sf.StandaloneTCPServer([], 0, JSON_LINES, sf.EchoHandler())


@linux_only
async def test_unix_stream_server_on_an_abstract_name(backend_name: BackendName) -> None:
    name = abstract_name()
    server = sf.AsyncUnixStreamServer(name, JSON_LINES, sf.EchoHandler())
    async with serving(server):
        assert server.get_addresses() == [name]
        assert await in_thread(line_exchange, name, [{"n": 1}]) == [{"n": 1}]
        async with sf.AsyncUnixStreamClient(name, JSON_LINES) as client:
            await client.send_packet({"n": 2})
            assert await client.recv_packet(timeout=10) == {"n": 2}
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(name)  # gone with its socket


@linux_only
async def test_unix_datagram_server_on_an_abstract_name(backend_name: BackendName) -> None:
    name = abstract_name()
    server = sf.AsyncUnixDatagramServer(name, JSON_DATAGRAMS, sf.DatagramEchoHandler())
    async with serving(server):

        def exchange() -> Any:
            with sf.UnixDatagramClient(name, JSON_DATAGRAMS, local_path=abstract_name()) as c:
                c.send_packet({"n": 3})
                return c.recv_packet(timeout=10)

        assert await in_thread(exchange) == {"n": 3}


@linux_only
def test_an_abstract_name_takes_no_mode() -> None:
    with pytest.raises(ValueError, match="abstract socket name has no file"):
        sf.StandaloneUnixStreamServer(abstract_name(), JSON_LINES, sf.EchoHandler(), mode=0o600)


async def test_sockets_listening_and_server_close(backend_name: BackendName) -> None:
    server = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, sf.EchoHandler())
    assert not server.is_listening()
    assert server.get_sockets() == []
    async with server:
        assert server.is_listening()
        (proxy,) = server.get_sockets()
        assert proxy.getsockname() == server.get_addresses()[0]
        assert proxy.type == socket.SOCK_STREAM
        async with current().create_task_group() as tg:
            up = current().create_event()
            tg.start_soon(lambda: server.serve_forever(is_up_event=up))
            await up.wait()
            assert server.is_serving()
            await server.server_close()
        assert not server.is_listening()
        assert server.get_sockets() == []
        await server.server_close()  # again: nothing to do


def test_standalone_server_is_up_event_and_sockets(tmp_path: Any) -> None:
    path = os.fspath(tmp_path / "sock")
    with sf.StandaloneUnixStreamServer(path, JSON_LINES, sf.EchoHandler()) as server:
        assert server.is_listening()
        assert [proxy.family for proxy in server.get_sockets()] == [socket.AF_UNIX]
        up = threading.Event()
        thread = threading.Thread(target=server.serve_forever, kwargs={"is_up_event": up})
        thread.start()
        try:
            assert up.wait(10)
            assert server.is_serving()
            assert line_exchange(path, ["hi"]) == ["hi"]
        finally:
            server.shutdown()
            thread.join(10)
    assert not server.is_listening()
    assert not os.path.exists(path)
