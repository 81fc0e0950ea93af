"""When the two sides disagree, both say why: over real loopback sockets, on every loop.

A client and a server that disagree on framing (JSON lines against a length prefix), on TLS
(one side speaks it, the other not) or on the protocol itself (HTTP, a PROXY header) used to
show only ``TimeoutError: no message received`` on the client and "raise max_frame_size" on
the server. Here each mismatch is staged for real, and the server's log line and the client's
error must name the cause (``protocols.diagnostics.likely_cause``). And the log lines that
stream connections and datagram peers share say "connection" or "peer" as fits.

Both engines: the suite runs once per engine (``SERVER_FRAMEWORK_PURE_PYTHON``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
import structlog

from handlers import (
    DatagramClient,
    DatagramRequestHandler,
    EchoHandler,
    StreamClient,
    StreamRequestHandler,
)
from protocols import (
    DatagramProtocol,
    FrameTooLargeError,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    StreamProtocol,
)
from server_framework.backend import current
from server_framework.clients import AsyncTCPClient, TCPClient
from server_framework.servers import AsyncTCPServer, AsyncUDPServer

from server_helpers import CLIENT_TIMEOUT, connect, in_thread, serving

JSON_LINES = StreamProtocol(JSONSerializer())
JSON_PREFIXED = StreamProtocol(JSONSerializer(), LengthPrefixFramer())
#: Long enough for a loaded machine to deliver a loopback reply, short enough for a test.
SHORT = 0.5


class Greeter(StreamRequestHandler[Any, Any]):
    """Greets each client first (so it sees the server's framing before it sends anything),
    then echoes; bad messages are not caught (they close the connection)."""

    async def on_connection(self, client: StreamClient[Any]) -> None:
        await client.send_packet({"hello": "client"})

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        await client.send_packet(request)


def capture() -> Any:
    return structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars])


def warnings_text(logs: list[dict[str, Any]]) -> str:
    """Every warning line, event and fields, as one text to search."""
    return "\n".join(repr(entry) for entry in logs if entry["log_level"] == "warning")


def address_of(server: Any) -> tuple[str, int]:
    host, port = server.get_addresses()[0][:2]
    return (host, port)


# -- framing mismatches ----------------------------------------------------------------------


async def test_json_lines_client_to_length_prefixed_server(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, JSON_PREFIXED, EchoHandler())
    with capture() as logs:
        async with serving(server), AsyncTCPClient(address_of(server), JSON_LINES) as client:
            await client.send_packet({"id": 1})
            with pytest.raises(ConnectionError) as info:
                await client.recv_packet(timeout=CLIENT_TIMEOUT)
    # The client: the server closed without a word; what to check.
    message = str(info.value)
    assert "it sent nothing on this connection" in message
    assert "same framing and serializer" in message
    # The server: the length header is text, not "raise max_frame_size".
    text = warnings_text(logs)
    assert "closing connection after a bad message" in text
    assert "(hint: the peer sends text (JSON lines?) to a length-prefixed endpoint" in text
    assert "raise the framer's max_frame_size" not in text


async def test_length_prefixed_client_reading_json_lines(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Greeter())
    async with serving(server), AsyncTCPClient(address_of(server), JSON_PREFIXED) as client:
        with pytest.raises(FrameTooLargeError) as info:
            await client.recv_packet(timeout=CLIENT_TIMEOUT)
    assert "(hint: the peer sends text (JSON lines?) to a length-prefixed endpoint" in str(
        info.value
    )


async def test_json_lines_client_reading_length_prefixed_frames(backend_name: str) -> None:
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_PREFIXED, Greeter())) as server:
        greeting = JSON_PREFIXED.encode({"hello": "client"})

        def receive(address: tuple[str, int]) -> str:
            with TCPClient(address, JSON_LINES, connect_timeout=CLIENT_TIMEOUT) as client:
                # The greeting arrives (it forms no line); each wait then times out.
                for _ in range(round(CLIENT_TIMEOUT / SHORT)):
                    with pytest.raises(TimeoutError) as info:
                        client.recv_packet(timeout=SHORT)
                    if "bytes received" in str(info.value):
                        return str(info.value)
            raise AssertionError("the greeting never arrived")

        message = await in_thread(receive, address_of(server))
    assert message.startswith(f"no message received from the server within {SHORT} s")
    assert f"{len(greeting)} bytes received that form no complete message" in message
    assert repr(greeting[:16]) in message
    assert "hint: the server may be sending length-prefixed frames" in message


async def test_binary_frames_to_a_line_server(backend_name: str) -> None:
    protocol = StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=16))
    frame = JSON_PREFIXED.encode({"padding": "x" * 40})
    assert b"\n" not in frame

    def send(address: tuple[str, int]) -> None:
        with contextlib.closing(connect(address)) as sock:
            sock.sendall(frame)
            assert sock.recv(100) == b""  # the server closes

    with capture() as logs:
        async with serving(AsyncTCPServer("127.0.0.1", 0, protocol, EchoHandler())) as server:
            await in_thread(send, address_of(server))
    assert "may be sending length-prefixed frames" in warnings_text(logs)


# -- foreign protocols ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "the client speaks HTTP", id="http"),
        pytest.param(
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1111 2222\r\n[1]\n",
            "the client sends a PROXY protocol v1 header",
            id="proxy-v1",
        ),
    ],
)
async def test_foreign_protocol_on_a_line_server(
    backend_name: str, payload: bytes, expected: str
) -> None:
    def send(address: tuple[str, int]) -> None:
        with contextlib.closing(connect(address)) as sock:
            sock.sendall(payload)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(100):
                    pass

    with capture() as logs:
        async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler())) as server:
            await in_thread(send, address_of(server))
    text = warnings_text(logs)
    assert "closing connection after a bad message" in text
    assert expected in text


# -- TLS on one side only -------------------------------------------------------------------


async def test_tls_client_to_plaintext_length_prefixed_server(
    backend_name: str, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    _server_context, client_context = tls_contexts

    def talk(address: tuple[str, int]) -> None:
        with pytest.raises(OSError):  # the server closes during the handshake
            TCPClient(address, JSON_PREFIXED, ssl=client_context, connect_timeout=SHORT)

    with capture() as logs:
        async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_PREFIXED, EchoHandler())) as server:
            await in_thread(talk, address_of(server))
    assert "(hint: the peer speaks TLS (these bytes are a TLS ClientHello)" in warnings_text(logs)


async def test_tls_client_to_plaintext_line_server(
    backend_name: str, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A ClientHello may hold a newline byte (then the server reads a bad line) or not (then
    it waits until the client gives up): either way the server names TLS."""
    _server_context, client_context = tls_contexts

    def talk(address: tuple[str, int]) -> None:
        with pytest.raises(OSError):  # TimeoutError (the server waits), or it closed
            TCPClient(address, JSON_LINES, ssl=client_context, connect_timeout=SHORT)

    with capture() as logs:
        async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler())) as server:
            await in_thread(talk, address_of(server))
            for _ in range(round(CLIENT_TIMEOUT / 0.02)):  # until the server saw the end
                if "speaks TLS" in warnings_text(logs):
                    break
                await current().sleep(0.02)
    assert "the client speaks TLS (these bytes are a TLS" in warnings_text(logs)


@pytest.mark.parametrize(
    ("payload", "sent"),
    [
        pytest.param(b'{"id": 1}\n', "it sent plaintext", id="json"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "a plain HTTP request", id="http"),
    ],
)
async def test_plaintext_client_to_tls_server(
    backend_name: str,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    payload: bytes,
    sent: str,
) -> None:
    server_context, _client_context = tls_contexts

    def talk(address: tuple[str, int]) -> None:
        with contextlib.closing(connect(address)) as sock:
            sock.sendall(payload)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""

    with capture() as logs:
        server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=server_context)
        async with serving(server):
            await in_thread(talk, address_of(server))
    refused = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(refused) == 1, logs
    assert refused[0]["event"] == "closing connection: the TLS handshake failed"
    assert refused[0]["hint"].startswith("the client does not speak TLS")
    assert sent in refused[0]["hint"]


async def test_plaintext_tcp_client_to_tls_server(
    backend_name: str, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, _client_context = tls_contexts
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=server_context)
    async with serving(server), AsyncTCPClient(address_of(server), JSON_LINES) as client:
        await client.send_packet({"id": 1})
        with pytest.raises(ConnectionError) as info:
            await client.recv_packet(timeout=CLIENT_TIMEOUT)
    assert "it sent nothing on this connection" in str(info.value)
    assert "TLS on both or on neither" in str(info.value)


@contextlib.contextmanager
def tls_alert_server() -> Iterator[tuple[str, int]]:
    """A server that answers its one client with a TLS alert (protocol_version), as a TLS
    server that sends one does to plaintext, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(CLIENT_TIMEOUT)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b"\x15\x03\x03\x00\x02\x02\x46")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        thread.join(CLIENT_TIMEOUT)
        listener.close()


async def test_plaintext_client_receiving_a_tls_alert(backend_name: str) -> None:
    with tls_alert_server() as address:
        async with AsyncTCPClient(address, JSON_LINES) as client:
            await client.send_packet({"id": 1})
            with pytest.raises(ConnectionError) as info:
                await client.recv_packet(timeout=CLIENT_TIMEOUT)
    message = str(info.value)
    assert "the server closed the connection in the middle of a message" in message
    assert "7 bytes received that form no complete message" in message
    assert "hint: the server speaks TLS (these bytes are a TLS alert)" in message


def test_blocking_plaintext_client_receiving_a_tls_alert() -> None:
    with tls_alert_server() as address, TCPClient(address, JSON_LINES) as client:
        client.send_packet({"id": 1})
        with pytest.raises(ConnectionError, match="the server speaks TLS"):
            client.recv_packet(timeout=CLIENT_TIMEOUT)


def test_timeout_says_the_server_sent_nothing() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # never accepts: the kernel connects
    with (
        listener,
        TCPClient(listener.getsockname()[:2], JSON_LINES) as client,
        pytest.raises(TimeoutError) as info,
    ):
        client.recv_packet(timeout=0.05)
    assert str(info.value).startswith("no message received from the server within 0.05 s")
    assert "it sent nothing on this connection" in str(info.value)


class GreetAndLeave(StreamRequestHandler[Any, Any]):
    async def on_connection(self, client: StreamClient[Any]) -> None:
        await client.send_packet({"hello": "client"})

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        return  # before the first yield: the connection closes
        yield


async def test_a_server_that_spoke_then_closed_gets_no_hint(backend_name: str) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, GreetAndLeave())

    def blocking(address: tuple[str, int]) -> str:
        with TCPClient(address, JSON_LINES) as client:
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == {"hello": "client"}
            with pytest.raises(ConnectionError) as info:
                client.recv_packet(timeout=CLIENT_TIMEOUT)
            return str(info.value)

    async with serving(server):
        async with AsyncTCPClient(address_of(server), JSON_LINES) as client:
            assert await client.recv_packet(timeout=CLIENT_TIMEOUT) == {"hello": "client"}
            with pytest.raises(ConnectionError) as info:
                await client.recv_packet(timeout=CLIENT_TIMEOUT)
        assert await in_thread(blocking, address_of(server)) == "the server closed the connection"
    assert str(info.value) == "the server closed the connection"


# -- "connection" or "peer": the wording of the lines streams and datagrams share ------------


class Crasher(StreamRequestHandler[Any, Any]):
    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request == "crash":
            raise RuntimeError("crash on purpose")
        await client.send_packet(request)


class DatagramCrasher(DatagramRequestHandler[Any, Any]):
    async def handle(self, client: DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request == "crash":
            raise RuntimeError("crash on purpose")
        await client.send_packet(request)


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in logs]


async def test_stream_lines_say_connection(backend_name: str) -> None:
    def talk(address: tuple[str, int]) -> None:
        for payload in (b"{broken\n", b'"crash"\n', b""):  # bad message, crash, idle
            with contextlib.closing(connect(address)) as sock:
                sock.sendall(payload)
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(100) == b""

    with capture() as logs:
        server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Crasher(), idle_timeout=0.1)
        async with serving(server):
            await in_thread(talk, address_of(server))
    seen = events(logs)
    assert "closing connection after a bad message" in seen
    assert "request handler failed; closing the connection" in seen
    assert "closing idle connection" in seen
    assert not [event for event in seen if "peer" in event]


async def test_datagram_lines_say_peer(backend_name: str) -> None:
    def talk(address: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(CLIENT_TIMEOUT)
            for datagram in (b"{broken", b'"crash"', b'"ok"'):
                sock.sendto(datagram, address)
            assert json.loads(sock.recv(100)) == "ok"

    with capture() as logs:
        server = AsyncUDPServer(
            "127.0.0.1",
            0,
            DatagramProtocol(JSONSerializer()),
            DatagramCrasher(),
            client_idle_timeout=0.1,
        )
        async with serving(server):
            await in_thread(talk, address_of(server))
            for _ in range(round(CLIENT_TIMEOUT / 0.02)):  # until the peer idles out
                if "dropping idle peer" in events(logs):
                    break
                await current().sleep(0.02)
    seen = events(logs)
    assert "dropping peer after a bad message" in seen
    assert "request handler failed; ending the peer's handler" in seen
    assert "dropping idle peer" in seen
    assert not [event for event in seen if "connection" in event]


def test_length_header_helper_agrees() -> None:
    """The framing the tests above rely on: a 4-byte length header of JSON text is huge."""
    (size,) = struct.unpack(">I", b'{"id')
    assert size > JSON_PREFIXED.max_frame_size
