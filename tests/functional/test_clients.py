"""The blocking clients against our own servers, over real sockets, on asyncio, uvloop and trio.

Each test runs a server in the test's loop and the blocking client in a worker thread
(``in_thread``). The async clients are tested in ``test_clients_async.py``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

import server_framework
from handlers import (
    DatagramEchoHandler,
    EchoHandler,
)
from protocols import (
    DatagramProtocol,
    DeserializeError,
    FrameTooLargeError,
    JSONSerializer,
    LineFramer,
    StreamProtocol,
    StringSerializer,
)
from server_framework import clients
from server_framework.clients import (
    TCPClient,
    UDPClient,
    UnixDatagramClient,
    UnixStreamClient,
)
from server_framework.exceptions import ClosedResourceError
from server_framework.servers import (
    AsyncTCPServer,
    AsyncUnixStreamServer,
)

from client_helpers import (
    DATAGRAM_PROTOCOLS,
    JSON_DATAGRAMS,
    JSON_LINES,
    STREAM_PROTOCOLS,
    BadThenGood,
    Burst,
    DatagramBadThenGood,
    datagram_server,
    stream_server,
)
from server_helpers import CLIENT_TIMEOUT, in_thread, serving

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

# -- fixtures and helpers ----------------------------------------------------------------------


def stream_client(address: Any, protocol: Any = JSON_LINES, **options: Any) -> Any:
    if isinstance(address, str):
        return UnixStreamClient(address, protocol, **options)
    return TCPClient(address, protocol, **options)


def datagram_client(address: Any, protocol: Any = JSON_DATAGRAMS, **options: Any) -> Any:
    if isinstance(address, str):
        return UnixDatagramClient(address, protocol, **options)
    return UDPClient(address, protocol, **options)


def free_tcp_port_refusing() -> socket.socket:
    """A bound, non-listening TCP socket: connecting to its port is refused while it lives."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


# -- exports ----------------------------------------------------------------------------------


def test_exports_are_documented_and_reexported() -> None:
    assert len(clients.__all__) == len(set(clients.__all__))
    for name in clients.__all__:
        obj = getattr(clients, name)
        if name == "DEFAULT_CONNECT_TIMEOUT":
            continue
        assert inspect.getdoc(obj), name
        assert getattr(server_framework, name) is obj
        assert name in server_framework.__all__
        for member, value in inspect.getmembers(obj):
            if not member.startswith("_"):
                assert inspect.getdoc(value), f"{name}.{member}"


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="StreamProtocol"):
        TCPClient(("127.0.0.1", 1), JSON_DATAGRAMS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DatagramProtocol"):
        UDPClient(("127.0.0.1", 1), JSON_LINES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connect_timeout"):
        TCPClient(("127.0.0.1", 1), JSON_LINES, connect_timeout=-1)
    with pytest.raises(ValueError, match="server_hostname"):
        TCPClient(("127.0.0.1", 1), JSON_LINES, server_hostname="localhost")


# -- echo over every transport ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_stream_echo_pipelined(
    backend_name: str, kind: str, codec: str, tmp_dir: str
) -> None:
    protocol = STREAM_PROTOCOLS[codec]
    # Under the socket buffers (~200 KiB for Unix sockets): a client that sends everything
    # before reading anything deadlocks with any server once both directions are full.
    messages = [{"seq": i, "data": "x" * (i % 10 * 100)} for i in range(200)]

    def exchange(address: Any) -> list[Any]:
        with stream_client(address, protocol) as client:
            for message in messages[:100]:
                client.send_packet(message)
            client.send_packets(messages[100:])  # one write for the batch
            client.send_packets([])
            return [client.recv_packet(timeout=CLIENT_TIMEOUT) for _ in messages]

    async with serving(stream_server(kind, tmp_dir, EchoHandler(), protocol)) as server:
        assert await in_thread(exchange, server.get_addresses()[0]) == messages


@pytest.mark.parametrize("kind", ["udp", "unix"])
@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_datagram_echo(backend_name: str, kind: str, codec: str, tmp_dir: str) -> None:
    protocol = DATAGRAM_PROTOCOLS[codec]
    messages = [{"seq": i} for i in range(20)]

    def exchange(address: Any) -> list[Any]:
        with datagram_client(address, protocol) as client:
            replies = []
            for message in messages:  # one at a time: datagrams may be dropped, not these
                client.send_packet(message)
                replies.append(client.recv_packet(timeout=CLIENT_TIMEOUT))
            return replies

    async with serving(datagram_server(kind, tmp_dir, DatagramEchoHandler(), protocol)) as server:
        assert await in_thread(exchange, server.get_addresses()[0]) == messages


async def test_tls_echo(backend_name: str, tls_contexts: Any) -> None:
    server_context, client_context = tls_contexts

    def exchange(address: Any) -> list[Any]:
        with TCPClient(address, JSON_LINES, ssl=client_context) as client:
            assert isinstance(client.socket.getpeername(), tuple)
            for i in range(50):
                client.send_packet({"secret": i, "pad": "p" * 3000})
            return [client.recv_packet(timeout=CLIENT_TIMEOUT)["secret"] for _ in range(50)]

    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=server_context)
    async with serving(server):
        assert await in_thread(exchange, server.get_addresses()[0]) == list(range(50))


async def test_tls_untrusted_certificate(backend_name: str, tls_contexts: Any) -> None:
    server_context, _ = tls_contexts
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=server_context)
    async with serving(server):
        with pytest.raises(ssl.SSLCertVerificationError):
            await in_thread(
                lambda: TCPClient(
                    server.get_addresses()[0], JSON_LINES, ssl=ssl.create_default_context()
                )
            )


async def test_addresses_and_socket(backend_name: str, tmp_dir: str) -> None:
    def check(tcp: Any, unix: Any, udp: Any, unix_dgram: Any) -> None:
        with TCPClient(tcp, JSON_LINES) as client:
            assert client.peer_address == tcp
            host, port = client.local_address  # type: ignore[misc]
            assert host == "127.0.0.1"
            assert port > 0
            assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert client.socket.family == socket.AF_INET
        with UnixStreamClient(unix, JSON_LINES) as unix_client:
            assert unix_client.peer_address == unix
            assert unix_client.local_address == ""
            assert unix_client.socket.type == socket.SOCK_STREAM
        with UDPClient(udp, JSON_DATAGRAMS) as udp_client:
            assert udp_client.peer_address == udp
            assert udp_client.socket.type == socket.SOCK_DGRAM
        with UnixDatagramClient(unix_dgram, JSON_DATAGRAMS) as dgram_client:
            assert dgram_client.peer_address == unix_dgram
            local = dgram_client.local_address
            assert isinstance(local, str)
            assert os.path.exists(local)
        assert not os.path.exists(local)  # the client's socket file is removed on close
        chosen = os.path.join(tmp_dir, "chosen.sock")
        with UnixDatagramClient(unix_dgram, JSON_DATAGRAMS, local_path=chosen) as dgram_client:
            assert dgram_client.local_address == chosen
            dgram_client.send_packet("hi")
            assert dgram_client.recv_packet(timeout=CLIENT_TIMEOUT) == "hi"
        assert not os.path.exists(chosen)

    async with (
        serving(stream_server("tcp", tmp_dir, EchoHandler())) as tcp,
        serving(
            AsyncUnixStreamServer(os.path.join(tmp_dir, "s.sock"), JSON_LINES, EchoHandler())
        ) as unix,
        serving(datagram_server("udp", tmp_dir, DatagramEchoHandler())) as udp,
        serving(datagram_server("unix", tmp_dir, DatagramEchoHandler())) as unix_dgram,
    ):
        await in_thread(
            check,
            tcp.get_addresses()[0],
            unix.get_addresses()[0],
            udp.get_addresses()[0],
            unix_dgram.get_addresses()[0],
        )


# -- receiving: timeouts, iteration, the end of the connection -----------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_recv_timeout_then_usable(backend_name: str, kind: str, tmp_dir: str) -> None:
    def exchange(address: Any) -> None:
        with stream_client(address) as client:
            with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
                client.recv_packet(timeout=0.05)
            with pytest.raises(TimeoutError):
                client.recv_packet(timeout=0)
            client.send_packet("after")
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == "after"

    async with serving(stream_server(kind, tmp_dir, EchoHandler())) as server:
        await in_thread(exchange, server.get_addresses()[0])


@pytest.mark.parametrize("kind", ["udp", "unix"])
async def test_datagram_recv_timeout_then_usable(
    backend_name: str, kind: str, tmp_dir: str
) -> None:
    def exchange(address: Any) -> None:
        with datagram_client(address) as client:
            with pytest.raises(TimeoutError, match="no datagram received"):
                client.recv_packet(timeout=0.05)
            client.send_packet("after")
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == "after"
            assert list(client.iter_received_packets(timeout=0.01)) == []

    async with serving(datagram_server(kind, tmp_dir, DatagramEchoHandler())) as server:
        await in_thread(exchange, server.get_addresses()[0])


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_iter_received_packets(backend_name: str, kind: str, tmp_dir: str) -> None:
    def exchange(address: Any) -> None:
        with stream_client(address) as client:
            client.send_packet({"count": 30, "close": False})
            first = client.recv_packet(timeout=CLIENT_TIMEOUT)
            # The other 29 came in the same write: the iteration ends on the timeout after them.
            assert [first, *client.iter_received_packets(timeout=0.1)] == list(range(30))
            client.send_packet({"count": 20, "close": True})
            assert list(client.iter_received_packets()) == list(range(20))  # the server's EOF
            with pytest.raises(ConnectionError, match="the server closed the connection"):
                client.recv_packet()
            with pytest.raises(ConnectionError, match="the server closed the connection"):
                client.send_packet({"count": 1, "close": False})

    async with serving(stream_server(kind, tmp_dir, Burst())) as server:
        await in_thread(exchange, server.get_addresses()[0])


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_bad_message_then_good_one(backend_name: str, kind: str, tmp_dir: str) -> None:
    text_lines = StreamProtocol(StringSerializer())

    def exchange(address: Any) -> None:
        with stream_client(address) as client:  # a JSON client, a text server
            client.send_packet({"a": 1})
            with pytest.raises(DeserializeError, match="malformed JSON"):
                client.recv_packet(timeout=CLIENT_TIMEOUT)
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == {"a": 1}
            client.send_packet([2])
            with pytest.raises(DeserializeError):
                list(client.iter_received_packets(timeout=CLIENT_TIMEOUT))
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == [2]  # usable after iterating

    async with serving(stream_server(kind, tmp_dir, BadThenGood(), text_lines)) as server:
        await in_thread(exchange, server.get_addresses()[0])


@pytest.mark.parametrize("kind", ["udp", "unix"])
async def test_bad_datagram_then_good_one(backend_name: str, kind: str, tmp_dir: str) -> None:
    text = DatagramProtocol(StringSerializer())

    def exchange(address: Any) -> None:
        with datagram_client(address) as client:
            client.send_packet({"a": 1})
            with pytest.raises(DeserializeError, match="malformed JSON"):
                client.recv_packet(timeout=CLIENT_TIMEOUT)
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == {"a": 1}

    server = datagram_server(kind, tmp_dir, DatagramBadThenGood(), text)
    async with serving(server):
        await in_thread(exchange, server.get_addresses()[0])


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_frame_too_large_makes_client_unusable(
    backend_name: str, kind: str, tmp_dir: str
) -> None:
    small = StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=100))

    def exchange(address: Any) -> None:
        client = stream_client(address, small)
        with client:
            client.send_packet("ok")
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == "ok"
            client.send_packet("x" * 500)  # the client sends it; the echo is over its limit
            with pytest.raises(FrameTooLargeError):
                client.recv_packet(timeout=CLIENT_TIMEOUT)
            with pytest.raises(ConnectionError, match=r"unusable.*FrameTooLargeError"):
                client.recv_packet(timeout=CLIENT_TIMEOUT)
            with pytest.raises(ConnectionError, match="unusable"):
                client.send_packet("again")
        with pytest.raises(ClosedResourceError):
            client.recv_packet()

    async with serving(stream_server(kind, tmp_dir, EchoHandler())) as server:
        await in_thread(exchange, server.get_addresses()[0])


# -- connecting -------------------------------------------------------------------------------


def test_connection_refused_and_missing_path(tmp_dir: str) -> None:
    with contextlib.closing(free_tcp_port_refusing()) as listener:
        address = listener.getsockname()
        with pytest.raises(ConnectionRefusedError, match=rf"127\.0\.0\.1:{address[1]}.*running"):
            TCPClient(address, JSON_LINES, connect_timeout=CLIENT_TIMEOUT)
    missing = os.path.join(tmp_dir, "missing.sock")
    with pytest.raises(FileNotFoundError, match=r"missing\.sock"):
        UnixStreamClient(missing, JSON_LINES)
    with pytest.raises(FileNotFoundError, match=r"missing\.sock"):
        UnixDatagramClient(missing, JSON_DATAGRAMS)
    assert os.listdir(tmp_dir) == []  # the client's own socket file was removed
    with pytest.raises(socket.gaierror, match=r"no-such-host\.invalid"):
        TCPClient(("no-such-host.invalid", 80), JSON_LINES)


def test_tls_handshake_timeout(tls_contexts: Any) -> None:
    _, client_context = tls_contexts
    with (
        socket.create_server(("127.0.0.1", 0)) as silent,  # accepts, never answers
        pytest.raises(TimeoutError, match=r"TLS handshake.*connect_timeout=0\.1"),
    ):
        TCPClient(silent.getsockname(), JSON_LINES, ssl=client_context, connect_timeout=0.1)


def test_udp_server_unreachable() -> None:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        address = placeholder.getsockname()
    with UDPClient(address, JSON_DATAGRAMS) as client:
        client.send_packet("anyone?")
        with pytest.raises(ConnectionRefusedError, match="not reachable"):
            client.recv_packet(timeout=CLIENT_TIMEOUT)
        client.send_packet("still usable")


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_reconnect_after_server_restart(backend_name: str, kind: str, tmp_dir: str) -> None:
    async with serving(stream_server(kind, tmp_dir, EchoHandler())) as first:
        address = first.get_addresses()[0]
        old = await in_thread(stream_client, address)
        await in_thread(old.send_packet, "one")
        assert await in_thread(old.recv_packet, CLIENT_TIMEOUT) == "one"
    # The server shut down: the old client learns it on its next receive.
    with pytest.raises(ConnectionError, match="the server closed the connection"):
        await in_thread(old.recv_packet, CLIENT_TIMEOUT)
    with pytest.raises(ConnectionError):
        await in_thread(old.send_packet, "lost")
    old.close()
    if kind == "tcp":
        second = AsyncTCPServer(address[0], address[1], JSON_LINES, EchoHandler())
    else:
        second = AsyncUnixStreamServer(address, JSON_LINES, EchoHandler())
    async with serving(second):

        def fresh() -> Any:
            with stream_client(address) as new:
                new.send_packet("two")
                return new.recv_packet(timeout=CLIENT_TIMEOUT)

        assert await in_thread(fresh) == "two"


async def test_unix_datagram_server_restart(backend_name: str, tmp_dir: str) -> None:
    async with serving(datagram_server("unix", tmp_dir, DatagramEchoHandler())) as first:
        address = first.get_addresses()[0]
        old = await in_thread(datagram_client, address)
    async with serving(datagram_server("unix", tmp_dir, DatagramEchoHandler())):
        with pytest.raises(ConnectionRefusedError, match="not reachable"):
            await in_thread(old.send_packet, "old socket is gone")
        old.close()

        def fresh() -> Any:
            with datagram_client(address) as new:
                new.send_packet("new")
                return new.recv_packet(timeout=CLIENT_TIMEOUT)

        assert await in_thread(fresh) == "new"


# -- threads and closing ----------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_threads_send_while_one_receives(
    backend_name: str, tls: bool, tls_contexts: Any
) -> None:
    server_context, client_context = tls_contexts
    senders, per_sender = 4, 150
    payload = "p" * 5000  # several frames per socket buffer: interleaving would show

    def exchange(address: Any) -> None:
        with TCPClient(address, JSON_LINES, ssl=client_context if tls else None) as client:
            errors: list[BaseException] = []

            def send(sender: int) -> None:
                try:
                    for seq in range(per_sender):
                        client.send_packet({"sender": sender, "seq": seq, "payload": payload})
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [
                threading.Thread(target=send, args=(n,), name=f"sender-{n}") for n in range(senders)
            ]
            for thread in threads:
                thread.start()
            next_seq = dict.fromkeys(range(senders), 0)
            for _ in range(senders * per_sender):
                message = client.recv_packet(timeout=CLIENT_TIMEOUT)
                assert message["payload"] == payload
                assert message["seq"] == next_seq[message["sender"]]
                next_seq[message["sender"]] += 1
            for thread in threads:
                thread.join()
            assert errors == []

    server = AsyncTCPServer(
        "127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=server_context if tls else None
    )
    async with serving(server):
        await in_thread(exchange, server.get_addresses()[0])


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_close_wakes_a_blocked_receiver_and_is_idempotent(
    backend_name: str, kind: str, tmp_dir: str
) -> None:
    def exchange(address: Any) -> None:
        client = stream_client(address)
        outcome: list[BaseException] = []

        def receive() -> None:
            try:
                client.recv_packet()  # the echo server sends nothing unasked
            except BaseException as exc:
                outcome.append(exc)

        receiver = threading.Thread(target=receive, name="receiver")
        receiver.start()
        client.close()
        receiver.join(CLIENT_TIMEOUT)
        assert not receiver.is_alive()
        assert isinstance(outcome[0], ClosedResourceError)
        client.close()
        assert client.is_closed()
        with pytest.raises(ClosedResourceError, match="closed"):
            client.send_packet("x")
        with pytest.raises(ClosedResourceError):
            client.recv_packet(timeout=0)
        with pytest.raises(ClosedResourceError):
            list(client.iter_received_packets())

    async with serving(stream_server(kind, tmp_dir, EchoHandler())) as server:
        await in_thread(exchange, server.get_addresses()[0])


@pytest.mark.parametrize("kind", ["udp", "unix"])
async def test_datagram_close(backend_name: str, kind: str, tmp_dir: str) -> None:
    def exchange(address: Any) -> None:
        client = datagram_client(address)
        with client:
            client.send_packet(1)
            assert client.recv_packet(timeout=CLIENT_TIMEOUT) == 1
        client.close()
        with pytest.raises(ClosedResourceError):
            client.send_packet(2)
        with pytest.raises(ClosedResourceError):
            client.recv_packet()

    async with serving(datagram_server(kind, tmp_dir, DatagramEchoHandler())) as server:
        await in_thread(exchange, server.get_addresses()[0])


# -- the documentation's example ----------------------------------------------------------------


async def test_echo_client_example(backend_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "clients" / "echo_client.py"
    spec = importlib.util.spec_from_file_location("docs_example_clients_echo_client", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    async with serving(stream_server("tcp", "", EchoHandler())) as server:
        replies = await in_thread(module.main, server.get_addresses()[0])
    assert replies == [{"n": 0}, {"n": 1}, {"n": 2}]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed == ["{'n': 0}", "{'n': 1}", "{'n': 2}"]  # (the server logs there too)


def test_close_wakes_a_blocked_sender() -> None:
    with socket.socket() as listener:  # never accepts nor reads
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = TCPClient(listener.getsockname(), JSON_LINES)
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        outcome: list[BaseException] = []

        def send() -> None:
            try:
                client.send_packet("x" * 4_000_000)  # cannot all go out: nobody reads
            except BaseException as exc:
                outcome.append(exc)

        sender = threading.Thread(target=send, name="sender")
        sender.start()
        client.close()
        sender.join(CLIENT_TIMEOUT)
        assert not sender.is_alive()
        assert isinstance(outcome[0], ClosedResourceError)


@pytest.mark.parametrize(
    "module",
    [
        "__init__",
        "_common",
        "_client_base",
        "_transport",
        "_sync_base",
        "_sync_stream",
        "_sync_datagram",
        "_async_base",
        "_async_stream",
        "_async_datagram",
    ],
)
def test_only_the_loop_modules_import_a_loop(module: str) -> None:
    # Statically, at module level: `_asyncio` and `_trio` are imported by connect(), for the
    # loop that runs it (a third-party import such as structlog may still import asyncio).
    path = Path(clients.__file__).parent / f"{module}.py"
    imported: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            imported.add(name.split(".")[0] if node.level == 0 else f".{name}")
    assert not imported & {"asyncio", "trio", "uvloop", "._asyncio", "._trio"}
