"""Stream servers behind the PROXY protocol: the handler sees the original client's address."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from typing import Any

import pytest
import structlog

from handlers import RequestResponseHandler
from protocols import JSONSerializer, StreamProtocol, build_v1, build_v2
from server_framework.servers import AsyncTCPServer

from server_helpers import CLIENT_TIMEOUT, LineClient, connect, in_thread, serving

JSON_LINES = StreamProtocol(JSONSerializer())
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
)


class WhoIsThere(RequestResponseHandler[Any, Any]):
    def __init__(self) -> None:
        self.calls = 0

    async def respond(self, request: Any, client: Any) -> Any:
        self.calls += 1
        return {"request": request, "peer": list(client.peer_address)}


def send_with_header(address: Any, header: bytes, messages: list[Any]) -> list[Any]:
    with contextlib.closing(LineClient(connect(address))) as client:
        client.send_raw(header)
        client.send(*messages)
        return [client.recv() for _ in messages]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_original_address_reaches_the_handler(backend_name: str, version: str) -> None:
    header = (build_v1 if version == "v1" else build_v2)(
        ("203.0.113.7", 40000), ("198.51.100.1", 443)
    )
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, WhoIsThere(), proxy_protocol="auto")
    async with serving(server):
        replies = await in_thread(send_with_header, server.get_addresses()[0], header, ["a", "b"])
    assert replies == [
        {"request": "a", "peer": ["203.0.113.7", 40000]},
        {"request": "b", "peer": ["203.0.113.7", 40000]},
    ]


async def test_header_and_data_in_one_packet_and_local_command(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, WhoIsThere(), proxy_protocol="v2")

    def local(address: Any) -> tuple[Any, Any]:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send_raw(build_v2(None, None, command="LOCAL") + b'"health"\n')
            return client.recv(), client.sock.getsockname()

    async with serving(server):
        reply, own_address = await in_thread(local, server.get_addresses()[0])
    assert reply == {
        "request": "health",
        "peer": [own_address[0], own_address[1]],
    }  # LOCAL: the real peer


@pytest.mark.parametrize(
    ("options", "payload"),
    [
        (
            {"proxy_protocol": "auto", "proxy_allow": ["10.0.0.0/8"]},
            build_v1(("1.2.3.4", 1), ("5.6.7.8", 2)),
        ),
        ({"proxy_protocol": "v1"}, b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n"),
        ({"proxy_protocol": "v2"}, build_v1(("1.2.3.4", 1), ("5.6.7.8", 2))),
        ({"proxy_protocol": "auto"}, b'{"no header": true}\n'),
        ({"proxy_protocol": "auto", "proxy_header_timeout": 0.1}, b""),
    ],
    ids=["untrusted-peer", "malformed", "wrong-version", "missing", "timeout"],
)
async def test_refused_connections_never_reach_the_handler(
    backend_name: str, options: dict[str, Any], payload: bytes
) -> None:
    handler = WhoIsThere()
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler, **options)

    def refused(address: Any) -> bool:
        with contextlib.closing(LineClient(connect(address))) as client:
            if payload:
                client.send_raw(payload + b'"after"\n')
            return client.recv_eof()

    with structlog.testing.capture_logs() as logs:
        async with serving(server):
            assert await in_thread(refused, server.get_addresses()[0])
    assert handler.calls == 0
    assert any(entry["event"].startswith("closing connection") for entry in logs)


def test_proxy_protocol_with_tls_is_refused_clearly() -> None:
    import ssl  # noqa: PLC0415

    with pytest.raises(ValueError, match="not supported"):
        AsyncTCPServer(
            "127.0.0.1",
            0,
            JSON_LINES,
            WhoIsThere(),
            ssl=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
            proxy_protocol="v1",
        )


HAPROXY_CONFIG = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend front_v1
    bind 127.0.0.1:{front_v1}
    default_backend back_v1
frontend front_v2
    bind 127.0.0.1:{front_v2}
    default_backend back_v2
backend back_v1
    server app 127.0.0.1:{app} send-proxy
backend back_v2
    server app 127.0.0.1:{app} send-proxy-v2
"""


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (Debian package 'haproxy')")
async def test_behind_a_real_haproxy(backend_name: str) -> None:
    """HAProxy adds the header; the handler sees our client socket's own address and port."""
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, WhoIsThere(), proxy_protocol="auto")
    async with serving(server):
        app_port = server.get_addresses()[0][1]  # type: ignore[index]
        ports = {"front_v1": free_port(), "front_v2": free_port(), "app": app_port}
        with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as config:
            config.write(HAPROXY_CONFIG.format(**ports))
        output: list[str] = []
        process = subprocess.Popen(
            [str(HAPROXY), "-db", "-f", config.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        drain = threading.Thread(target=lambda: output.extend(process.stdout or []))
        drain.start()
        try:

            def through_haproxy() -> list[tuple[Any, Any]]:
                results = []
                for front in ("front_v1", "front_v2"):
                    address = ("127.0.0.1", ports[front])
                    for attempt in range(50):  # haproxy binds its frontends right after start
                        try:
                            sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
                            break
                        except ConnectionRefusedError:
                            threading.Event().wait(0.02 * (attempt + 1))
                    else:
                        raise AssertionError(f"haproxy never listened: {''.join(output)}")
                    with contextlib.closing(LineClient(sock)) as client:
                        client.send(front)
                        results.append((client.recv(), client.sock.getsockname()))
                return results

            results = await in_thread(through_haproxy)
        finally:
            process.terminate()
            process.wait(CLIENT_TIMEOUT)
            drain.join(CLIENT_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()
            os.unlink(config.name)
    for reply, (host, port) in results:
        assert reply["peer"] == [host, port]
