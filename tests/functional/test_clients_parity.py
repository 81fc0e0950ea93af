"""The clients' EasyNetwork-parity features (issue 15), over real sockets.

``send_eof``, ``ssl=True``, happy eyeballs, ``local_address``, ``from_socket``, the blocking
clients' send ``timeout``, the async clients' ``backend()``, the TLS properties, and
``ClosedResourceError`` as a ``ConnectionError``. The blocking clients run in a worker thread
against a server in the test's loop (``in_thread``); the async clients run in the test's loop,
once per loop (asyncio, uvloop, trio).

A host name that resolves to several addresses is made with ``fake_dns``: ``socket.getaddrinfo``
answers for a few ``.test`` names (the resolver of this machine may map ``localhost`` to one
address only); the connections themselves are real.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from handlers import DatagramEchoHandler, EchoHandler
from protocols import FrameTooLargeError, JSONSerializer, LineFramer, StreamProtocol
from server_framework.backend import current
from server_framework.clients import (
    AsyncTCPClient,
    AsyncUDPClient,
    AsyncUnixDatagramClient,
    AsyncUnixStreamClient,
    TCPClient,
    UDPClient,
    UnixDatagramClient,
    UnixStreamClient,
)
from server_framework.exceptions import BrokenResourceError, ClosedResourceError
from server_framework.servers import AsyncTCPServer

from client_helpers import (
    JSON_DATAGRAMS,
    JSON_LINES,
    MSGPACK_FRAMES,
    Burst,
    datagram_server,
    stream_server,
)
from server_helpers import CLIENT_TIMEOUT, in_thread, serving

# -- fixtures and helpers ----------------------------------------------------------------------


def sync_stream_client(address: Any, protocol: Any = JSON_LINES, **options: Any) -> Any:
    if isinstance(address, str):
        return UnixStreamClient(address, protocol, **options)
    return TCPClient(address, protocol, **options)


def async_stream_client(address: Any, protocol: Any = JSON_LINES, **options: Any) -> Any:
    if isinstance(address, str):
        return AsyncUnixStreamClient(address, protocol, **options)
    return AsyncTCPClient(address, protocol, **options)


def raw_connect(address: Any) -> socket.socket:
    """A blocking socket connected to ``address`` (a ``(host, port)`` or a Unix path)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(address)
        return sock
    return socket.create_connection(address, timeout=CLIENT_TIMEOUT)


class TrustedCA:
    """A throwaway CA, its certificate in a PEM file (for ``SSL_CERT_FILE``), and a server
    context with a certificate for ``localhost`` and 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        self.pem = str(directory / "ca.pem")
        ca.cert_pem.write_to_path(self.pem)
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.server_context)
        self.client_context = ssl.create_default_context()
        ca.configure_trust(self.client_context)


@pytest.fixture(scope="module")
def trusted_ca(tmp_path_factory: pytest.TempPathFactory) -> TrustedCA:
    return TrustedCA(tmp_path_factory.mktemp("ca"))


def tls_server(ca: TrustedCA) -> AsyncTCPServer[Any, Any]:
    return AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=ca.server_context)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[int, Any]]]:
    """Names to make up: ``fake_dns["dual.test"] = [(family, sockaddr), ...]``; the other names
    resolve as usual."""
    names: dict[str, list[tuple[int, Any]]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        if host not in names:
            return real(host, port, family, type, proto, flags)
        if flags & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(fam, socket.SOCK_STREAM, 6, "", sockaddr) for fam, sockaddr in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@contextlib.contextmanager
def silent_address() -> Iterator[tuple[str, int]]:
    """A TCP address whose connection attempts never complete: a listener that never accepts,
    its accept queue full (the kernel then drops the SYNs: the client waits, as for a host that
    does not answer)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        with contextlib.ExitStack() as fillers:
            first = fillers.enter_context(socket.create_connection(address, CLIENT_TIMEOUT))
            assert first.getpeername() == address
            for _ in range(2):  # in case the queue holds one more
                extra = fillers.enter_context(socket.socket())
                extra.setblocking(False)
                extra.connect_ex(address)
            yield address


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def dual_stack(fake_dns: dict[str, list[tuple[int, Any]]], port: int) -> tuple[str, int]:
    """``dual.test``: ::1 first (nothing listens there: refused, or no IPv6), then 127.0.0.1."""
    fake_dns["dual.test"] = [
        (socket.AF_INET6, ("::1", port, 0, 0)),
        (socket.AF_INET, ("127.0.0.1", port)),
    ]
    return ("dual.test", port)


# -- ClosedResourceError is a ConnectionError ------------------------------------------------------


def test_resource_errors_are_connection_errors() -> None:
    for cls in (ClosedResourceError, BrokenResourceError):
        assert issubclass(cls, ConnectionError)
        error = cls("the reason")
        assert error.errno is None
        assert str(error) == "the reason"
        assert error.args == ("the reason",)


def catch_connection_error(call: Any) -> ConnectionError | None:
    """What ``except ConnectionError`` catches from ``call()`` (None: nothing raised)."""
    try:
        call()
    except ConnectionError as exc:
        return exc
    return None


async def catch_connection_error_async(call: Any) -> ConnectionError | None:
    """What ``except ConnectionError`` catches from ``await call()``."""
    try:
        await call()
    except ConnectionError as exc:
        return exc
    return None


@pytest.mark.parametrize("kind", ["tcp", "unix", "udp", "unix-datagram"])
async def test_closed_client_is_caught_as_connection_error(
    backend_name: str, kind: str, tmp_dir: str
) -> None:
    if kind in ("tcp", "unix"):
        server = stream_server(kind, tmp_dir, EchoHandler())
    else:
        server = datagram_server("udp" if kind == "udp" else "unix", tmp_dir, DatagramEchoHandler())

    def blocking(address: Any) -> None:
        if kind in ("tcp", "unix"):
            client: Any = sync_stream_client(address)
        else:
            client = (UDPClient if kind == "udp" else UnixDatagramClient)(address, JSON_DATAGRAMS)
        client.close()
        for call in (lambda: client.send_packet("x"), lambda: client.recv_packet(0)):
            caught = catch_connection_error(call)
            assert type(caught) is ClosedResourceError  # the same error as before

    async with serving(server):
        address = server.get_addresses()[0]
        await in_thread(blocking, address)
        if kind in ("tcp", "unix"):
            client: Any = async_stream_client(address)
        else:
            client = (AsyncUDPClient if kind == "udp" else AsyncUnixDatagramClient)(
                address, JSON_DATAGRAMS
            )
        async with client:
            pass
        for call in (lambda: client.send_packet("x"), lambda: client.recv_packet(0)):
            caught = await catch_connection_error_async(call)
            assert type(caught) is ClosedResourceError


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_error_classes_are_unchanged(backend_name: str, kind: str, tmp_dir: str) -> None:
    """Which error each end raises, blocking and async: the server's end and a framing error
    are plain ``ConnectionError``; ours is ``ClosedResourceError``, never reworded (no
    ``ClosedResourceError`` raised from another), even for a receive woken by ``close()``, and
    the iteration after the server's end raises it too once the client is closed."""
    small = StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=100))

    def blocking(burst: Any, echo: Any) -> None:
        with sync_stream_client(burst) as client:
            client.send_packet({"count": 2, "close": True})
            assert list(client.iter_received_packets()) == [0, 1]
            with pytest.raises(ConnectionError) as info:
                client.recv_packet()
            assert type(info.value) is ConnectionError
            client.close()
            with pytest.raises(ClosedResourceError):
                list(client.iter_received_packets())  # not ended quietly by the server's EOF
        with sync_stream_client(echo, small) as client:
            client.send_packet("x" * 500)
            with pytest.raises(FrameTooLargeError):
                client.recv_packet(CLIENT_TIMEOUT)
            with pytest.raises(ConnectionError, match="unusable") as info:
                client.send_packet("y")
            assert type(info.value) is ConnectionError
        client = sync_stream_client(echo)
        outcome: list[BaseException] = []

        def receive() -> None:
            try:
                client.recv_packet()
            except BaseException as exc:
                outcome.append(exc)

        receiver = threading.Thread(target=receive, name="receiver")
        receiver.start()
        client.close()
        receiver.join(CLIENT_TIMEOUT)
        assert type(outcome[0]) is ClosedResourceError
        assert not isinstance(outcome[0].__cause__, ClosedResourceError)

    echo_dir = os.path.join(tmp_dir, "echo")  # a Unix server's socket is server.sock in it
    os.mkdir(echo_dir)
    async with (
        serving(stream_server(kind, tmp_dir, Burst())) as burst,
        serving(stream_server(kind, echo_dir, EchoHandler())) as echo,
    ):
        await in_thread(blocking, burst.get_addresses()[0], echo.get_addresses()[0])
        async with async_stream_client(burst.get_addresses()[0]) as client:
            await client.send_packet({"count": 2, "close": True})
            assert [p async for p in client.iter_received_packets()] == [0, 1]
            with pytest.raises(ConnectionError) as info:
                await client.recv_packet()
            assert type(info.value) is ConnectionError
        with pytest.raises(ClosedResourceError):
            async for _ in client.iter_received_packets():
                pass  # pragma: no cover


# -- send_eof -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_send_eof_then_receive(backend_name: str, kind: str, tmp_dir: str) -> None:
    messages = [{"n": i} for i in range(20)]

    def blocking(address: Any) -> None:
        with sync_stream_client(address) as client:
            client.send_packets(messages)
            client.send_eof()
            client.send_eof()  # idempotent
            with pytest.raises(ClosedResourceError, match="send_eof"):
                client.send_packet({"late": True})
            # The server answers what it received, sees our EOF, and closes.
            assert list(client.iter_received_packets(timeout=CLIENT_TIMEOUT)) == messages
            with pytest.raises(ConnectionError, match="the server closed the connection"):
                client.recv_packet(CLIENT_TIMEOUT)
        client.send_eof()  # closed: nothing to do

    async with serving(stream_server(kind, tmp_dir, EchoHandler())) as server:
        address = server.get_addresses()[0]
        await in_thread(blocking, address)
        client = async_stream_client(address)
        with pytest.raises(RuntimeError, match="not connected"):
            await client.send_eof()
        async with client:
            await client.send_packets(messages)
            await client.send_eof()
            await client.send_eof()
            with pytest.raises(ClosedResourceError, match="send_eof"):
                await client.send_packet({"late": True})
            received = [p async for p in client.iter_received_packets(timeout=CLIENT_TIMEOUT)]
            assert received == messages
            with pytest.raises(ConnectionError, match="the server closed the connection"):
                await client.recv_packet(CLIENT_TIMEOUT)
        await client.send_eof()


async def test_send_eof_waits_for_the_sends_in_progress(backend_name: str) -> None:
    """Tasks in the middle of sending large frames when another sends EOF: every frame arrives
    whole before the EOF (the server echoes them all, then closes)."""
    payload = "p" * 200_000
    backend = current()
    async with (
        serving(stream_server("tcp", "", EchoHandler())) as server,
        AsyncTCPClient(server.get_addresses()[0], JSON_LINES) as client,
    ):
        received: list[Any] = []
        started = 0

        async def receive() -> None:
            received.extend([p async for p in client.iter_received_packets()])

        async def send(n: int) -> None:
            nonlocal started
            started += 1  # then runs into send_packet until its first wait
            await client.send_packet({"n": n, "payload": payload})

        async with backend.create_task_group() as tg:
            tg.start_soon(receive)
            for n in range(4):
                tg.start_soon(send, n)
            while started < 4:
                await backend.checkpoint()
            await client.send_eof()  # the four are under way: they go first
            with pytest.raises(ClosedResourceError, match="send_eof"):
                await client.send_packet({"late": True})
        assert sorted(message["n"] for message in received) == [0, 1, 2, 3]


async def test_send_eof_over_tls_is_refused(backend_name: str, trusted_ca: TrustedCA) -> None:
    def blocking(address: Any) -> None:
        with TCPClient(address, JSON_LINES, ssl=trusted_ca.client_context) as client:
            with pytest.raises(NotImplementedError, match="TLS"):
                client.send_eof()
            client.send_packet("still usable")
            assert client.recv_packet(CLIENT_TIMEOUT) == "still usable"

    async with serving(tls_server(trusted_ca)) as server:
        address = server.get_addresses()[0]
        await in_thread(blocking, address)
        async with AsyncTCPClient(address, JSON_LINES, ssl=trusted_ca.client_context) as client:
            with pytest.raises(NotImplementedError, match="TLS"):
                await client.send_eof()
            await client.send_packet("still usable")
            assert await client.recv_packet(CLIENT_TIMEOUT) == "still usable"


# -- ssl=True and the TLS properties ------------------------------------------------------------


def check_tls_properties(client: Any) -> None:
    certificate = client.tls_peer_certificate
    assert ("DNS", "localhost") in certificate["subjectAltName"]
    assert "trustme" in str(certificate["issuer"])
    assert client.tls_version in ("TLSv1.2", "TLSv1.3")
    name, version, bits = client.tls_cipher
    assert isinstance(name, str)
    assert version == client.tls_version
    assert bits >= 128


async def test_ssl_true_uses_the_default_context(
    backend_name: str, trusted_ca: TrustedCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ssl=True`` is ``ssl.create_default_context()``: it trusts the CA of ``SSL_CERT_FILE``
    (read by OpenSSL when the context is made), and nothing else; ``server_hostname`` defaults
    to the host connected to."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with serving(tls_server(trusted_ca)) as server:
        port = server.get_addresses()[0][1]
        # The system's CAs do not know ours.
        with pytest.raises(ssl.SSLCertVerificationError):
            await in_thread(lambda: TCPClient(("localhost", port), JSON_LINES, ssl=True))
        with pytest.raises(ssl.SSLCertVerificationError):
            async with AsyncTCPClient(("localhost", port), JSON_LINES, ssl=True):
                pass

        monkeypatch.setenv("SSL_CERT_FILE", trusted_ca.pem)

        def blocking() -> None:
            with TCPClient(("localhost", port), JSON_LINES, ssl=True) as client:
                check_tls_properties(client)
                client.send_packet("secret")
                assert client.recv_packet(CLIENT_TIMEOUT) == "secret"
            check_tls_properties(client)  # still readable once closed
            with pytest.raises(ssl.SSLCertVerificationError, match=r"other\.example"):
                TCPClient(
                    ("localhost", port), JSON_LINES, ssl=True, server_hostname="other.example"
                )

        await in_thread(blocking)
        client = AsyncTCPClient(("localhost", port), JSON_LINES, ssl=True)
        with pytest.raises(RuntimeError, match="not connected"):
            client.tls_version  # noqa: B018
        async with client:
            check_tls_properties(client)
            await client.send_packet("secret")
            assert await client.recv_packet(CLIENT_TIMEOUT) == "secret"
        check_tls_properties(client)
        with pytest.raises(ssl.SSLCertVerificationError, match=r"other\.example"):
            async with AsyncTCPClient(
                ("127.0.0.1", port), JSON_LINES, ssl=True, server_hostname="other.example"
            ):
                pass


async def test_tls_properties_without_tls(backend_name: str) -> None:
    async with serving(stream_server("tcp", "", EchoHandler())) as server:
        address = server.get_addresses()[0]

        def blocking() -> None:
            with TCPClient(address, JSON_LINES, ssl=False) as client:
                assert client.tls_peer_certificate is None
                assert client.tls_cipher is None
                assert client.tls_version is None

        await in_thread(blocking)
        async with AsyncTCPClient(address, JSON_LINES, ssl=False) as client:
            assert client.tls_peer_certificate is None
            assert client.tls_cipher is None
            assert client.tls_version is None


def test_tls_arguments() -> None:
    with pytest.raises(ValueError, match="server_hostname"):
        TCPClient(("127.0.0.1", 1), JSON_LINES, ssl=False, server_hostname="localhost")
    with pytest.raises(ValueError, match="server_hostname"):
        AsyncTCPClient(("127.0.0.1", 1), JSON_LINES, ssl=False, server_hostname="localhost")
    with pytest.raises(TypeError, match="ssl"):
        TCPClient(("127.0.0.1", 1), JSON_LINES, ssl="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ssl"):
        AsyncTCPClient(("127.0.0.1", 1), JSON_LINES, ssl="yes")  # type: ignore[arg-type]
    for cls in (TCPClient, AsyncTCPClient):
        with pytest.raises(ValueError, match="happy_eyeballs_delay"):
            cls(("127.0.0.1", 1), JSON_LINES, happy_eyeballs_delay=-1)  # type: ignore[misc]


# -- happy eyeballs and local_address ------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.25, None], ids=["staggered", "one-at-a-time"])
async def test_host_with_a_dead_address_first(
    backend_name: str, delay: float | None, fake_dns: dict[str, list[tuple[int, Any]]]
) -> None:
    async with serving(stream_server("tcp", "", EchoHandler())) as server:  # 127.0.0.1 only
        port = server.get_addresses()[0][1]
        address = dual_stack(fake_dns, port)
        options = {"happy_eyeballs_delay": delay, "connect_timeout": CLIENT_TIMEOUT}

        def blocking() -> Any:
            with TCPClient(address, JSON_LINES, **options) as client:
                client.send_packet("hi")
                assert client.recv_packet(CLIENT_TIMEOUT) == "hi"
                return client.peer_address

        assert await in_thread(blocking) == ("127.0.0.1", port)
        async with AsyncTCPClient(address, JSON_LINES, **options) as client:
            assert client.peer_address == ("127.0.0.1", port)
            await client.send_packet("hi")
            assert await client.recv_packet(CLIENT_TIMEOUT) == "hi"
        # "localhost", whatever this machine resolves it to, reaches a server on 127.0.0.1.
        async with AsyncTCPClient(("localhost", port), JSON_LINES, **options) as client:
            assert client.peer_address == ("127.0.0.1", port)

        def localhost() -> Any:
            with TCPClient(("localhost", port), JSON_LINES, **options) as client:
                return client.peer_address

        assert await in_thread(localhost) == ("127.0.0.1", port)


async def test_happy_eyeballs_races_past_a_silent_address(
    backend_name: str, fake_dns: dict[str, list[tuple[int, Any]]]
) -> None:
    """The first address never answers: with a short delay the second attempt starts and wins;
    one at a time, the client waits on the first until ``connect_timeout``."""
    async with serving(stream_server("tcp", "", EchoHandler())) as server:
        server_address = server.get_addresses()[0]
        with silent_address() as silent:
            fake_dns["slow.test"] = [(socket.AF_INET, silent), (socket.AF_INET, server_address)]
            address = ("slow.test", 8000)  # the made-up name's addresses carry their ports
            racing = {"happy_eyeballs_delay": 0.05, "connect_timeout": CLIENT_TIMEOUT}
            in_turn = {"happy_eyeballs_delay": None, "connect_timeout": 0.5}

            def blocking() -> None:
                with TCPClient(address, JSON_LINES, **racing) as client:
                    assert client.peer_address == server_address
                    client.send_packet("raced")
                    assert client.recv_packet(CLIENT_TIMEOUT) == "raced"
                with pytest.raises(TimeoutError, match=r"slow\.test:8000.*connect_timeout=0\.5"):
                    TCPClient(address, JSON_LINES, **in_turn)

            await in_thread(blocking)
            async with AsyncTCPClient(address, JSON_LINES, **racing) as client:
                assert client.peer_address == server_address
                await client.send_packet("raced")
                assert await client.recv_packet(CLIENT_TIMEOUT) == "raced"
            with pytest.raises(TimeoutError, match=r"slow\.test:8000.*connect_timeout=0\.5"):
                async with AsyncTCPClient(address, JSON_LINES, **in_turn):
                    pass


async def test_every_address_refused(
    backend_name: str, fake_dns: dict[str, list[tuple[int, Any]]]
) -> None:
    with socket.socket() as placeholder:  # bound, not listening: refused
        placeholder.bind(("127.0.0.1", 0))
        address = dual_stack(fake_dns, placeholder.getsockname()[1])
        with pytest.raises(ConnectionRefusedError, match=r"dual\.test:\d+.*running"):
            await in_thread(lambda: TCPClient(address, JSON_LINES))
        with pytest.raises(ConnectionRefusedError, match=r"dual\.test:\d+.*running"):
            async with AsyncTCPClient(address, JSON_LINES):
                pass


async def test_local_address(backend_name: str) -> None:
    async with serving(stream_server("tcp", "", EchoHandler())) as server:
        address = server.get_addresses()[0]
        chosen = ("127.0.0.1", free_port())

        def blocking() -> None:
            with TCPClient(address, JSON_LINES, local_address=chosen) as client:
                assert client.local_address == chosen
                client.send_packet("from a chosen port")
                assert client.recv_packet(CLIENT_TIMEOUT) == "from a chosen port"
            with TCPClient(address, JSON_LINES, local_address=("", 0)) as client:
                assert client.local_address[0] == "127.0.0.1"  # type: ignore[index]
            with pytest.raises(OSError, match="family"):
                TCPClient(address, JSON_LINES, local_address=("::1", 0))

        await in_thread(blocking)
        chosen = ("127.0.0.1", free_port())
        async with AsyncTCPClient(address, JSON_LINES, local_address=chosen) as client:
            assert client.local_address == chosen
            await client.send_packet("from a chosen port")
            assert await client.recv_packet(CLIENT_TIMEOUT) == "from a chosen port"
        async with AsyncTCPClient(address, JSON_LINES, local_address=("", 0)) as client:
            assert client.local_address[0] == "127.0.0.1"
        with pytest.raises(OSError, match="family"):
            async with AsyncTCPClient(address, JSON_LINES, local_address=("::1", 0)):
                pass


async def test_local_address_in_use(backend_name: str) -> None:
    async with serving(stream_server("tcp", "", EchoHandler())) as server:
        address = server.get_addresses()[0]
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            local = taken.getsockname()
            with pytest.raises(OSError, match=r"127\.0\.0\.1"):
                await in_thread(lambda: TCPClient(address, JSON_LINES, local_address=local))
            with pytest.raises(OSError, match=r"127\.0\.0\.1"):
                async with AsyncTCPClient(address, JSON_LINES, local_address=local):
                    pass


# -- from_socket ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_from_socket(backend_name: str, kind: str, tmp_dir: str) -> None:
    def blocking(address: Any) -> None:
        cls: Any = UnixStreamClient if kind == "unix" else TCPClient
        sock = raw_connect(address)
        with cls.from_socket(sock, MSGPACK_FRAMES) as client:
            assert client.peer_address == address
            client.send_packet({"wrapped": True})
            assert client.recv_packet(CLIENT_TIMEOUT) == {"wrapped": True}
        assert sock.fileno() == -1  # the client owned it

    async with serving(stream_server(kind, tmp_dir, EchoHandler(), MSGPACK_FRAMES)) as server:
        address = server.get_addresses()[0]
        await in_thread(blocking, address)
        cls: Any = AsyncUnixStreamClient if kind == "unix" else AsyncTCPClient
        sock = raw_connect(address)  # connected by blocking code, taken over by this loop
        async with cls.from_socket(sock, MSGPACK_FRAMES) as client:
            assert client.peer_address == address
            await client.send_packet({"wrapped": True})
            assert await client.recv_packet(CLIENT_TIMEOUT) == {"wrapped": True}
            await client.send_eof()
            with pytest.raises(ConnectionError, match="the server closed the connection"):
                await client.recv_packet(CLIENT_TIMEOUT)
        assert sock.fileno() == -1
        sock = raw_connect(address)
        never_connected = cls.from_socket(sock, MSGPACK_FRAMES)
        await never_connected.aclose()  # before connect(): the socket is closed all the same
        assert sock.fileno() == -1


async def test_from_socket_with_tls(backend_name: str, trusted_ca: TrustedCA) -> None:
    context = trusted_ca.client_context

    def blocking(address: Any) -> None:
        sock = raw_connect(address)
        with pytest.raises(ValueError, match="server_hostname"):
            TCPClient.from_socket(sock, JSON_LINES, ssl=context)
        assert sock.fileno() != -1  # an argument error leaves the socket alone
        with TCPClient.from_socket(
            sock, JSON_LINES, ssl=context, server_hostname="localhost"
        ) as client:
            check_tls_properties(client)
            client.send_packet("tls")
            assert client.recv_packet(CLIENT_TIMEOUT) == "tls"

    async with serving(tls_server(trusted_ca)) as server:
        address = server.get_addresses()[0]
        await in_thread(blocking, address)
        with raw_connect(address) as sock, pytest.raises(ValueError, match="server_hostname"):
            AsyncTCPClient.from_socket(sock, JSON_LINES, ssl=context)
        client = AsyncTCPClient.from_socket(
            raw_connect(address), JSON_LINES, ssl=context, server_hostname="localhost"
        )
        async with client:
            check_tls_properties(client)
            await client.send_packet("tls")
            assert await client.recv_packet(CLIENT_TIMEOUT) == "tls"
        # A failed handshake closes the socket it was given.
        sock = raw_connect(address)
        client = AsyncTCPClient.from_socket(
            sock, JSON_LINES, ssl=ssl.create_default_context(), server_hostname="localhost"
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.connect()
        assert sock.fileno() == -1


def test_from_socket_arguments(tmp_dir: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for cls in (TCPClient, AsyncTCPClient):
            with pytest.raises(ValueError, match="connected TCP socket"):
                cls.from_socket(udp, JSON_LINES)  # type: ignore[attr-defined]
    with socket.socket() as unconnected:
        for cls in (TCPClient, AsyncTCPClient):
            with pytest.raises(ValueError, match="connected TCP socket"):
                cls.from_socket(unconnected, JSON_LINES)  # type: ignore[attr-defined]
        assert unconnected.fileno() != -1
    left, right = socket.socketpair()
    with left, right:
        for cls in (TCPClient, AsyncTCPClient):
            with pytest.raises(ValueError, match="TCP"):
                cls.from_socket(left, JSON_LINES)  # type: ignore[attr-defined]
        for cls in (UnixStreamClient, AsyncUnixStreamClient):
            with pytest.raises(TypeError, match="socket"):
                cls.from_socket("not a socket", JSON_LINES)  # type: ignore[attr-defined]
            with pytest.raises(TypeError, match="StreamProtocol"):
                cls.from_socket(left, JSON_DATAGRAMS)  # type: ignore[attr-defined]
        # One end of a socketpair: a Unix stream client without a server.
        with UnixStreamClient.from_socket(left, JSON_LINES) as client:
            right.sendall(b'"from the other end"\n')
            assert client.recv_packet(CLIENT_TIMEOUT) == "from the other end"
            client.send_eof()
            assert right.recv(10) == b""


# -- the blocking clients' send timeout ----------------------------------------------------------


@contextlib.contextmanager
def deaf_client(protocol: Any = MSGPACK_FRAMES) -> Iterator[TCPClient[Any, Any]]:
    """A client connected to a listener that never accepts nor reads, with small buffers."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with TCPClient(listener.getsockname(), protocol) as client:
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            yield client


def fill_send_buffer(client: Any) -> None:
    """Write through a duplicate of the client's descriptor until not one more byte fits, even
    after a pause (bytes in flight to the peer, which reads nothing, may free some room)."""
    with socket.socket(fileno=os.dup(client.socket.fileno())) as filler:
        filler.setblocking(False)
        for _ in range(100):
            for size in (65536, 4096, 256, 16, 1):  # the last bytes of room too
                with contextlib.suppress(BlockingIOError):
                    while True:
                        filler.send(b"\0" * size)
            select.select([], [filler], [], 0.2)  # a pause (shorter if room appears)
            try:
                filler.send(b"\0")
            except BlockingIOError:
                return
        pytest.fail("the send buffer never stayed full")  # pragma: no cover


def test_send_timeout_before_any_byte_keeps_the_client_usable() -> None:
    with deaf_client() as client:
        fill_send_buffer(client)
        with pytest.raises(TimeoutError, match="nothing was sent, the client is still usable"):
            client.send_packet(b"small", timeout=0.05)
        with pytest.raises(TimeoutError, match="nothing was sent"):
            client.send_packets([b"a", b"b"], timeout=0)
        with pytest.raises(TimeoutError, match="no message received"):
            client.recv_packet(0)  # still usable: not a ConnectionError
        with pytest.raises(ValueError, match="timeout"):
            client.send_packet(b"x", timeout=-1)


def test_send_timeout_mid_frame_makes_the_client_unusable() -> None:
    with deaf_client() as client:
        with pytest.raises(TimeoutError, match=r"of the \d+ bytes.*unusable"):
            client.send_packet(b"x" * 4_000_000, timeout=0.2)
        for call in (lambda: client.send_packet(b"y"), lambda: client.recv_packet(0)):
            with pytest.raises(ConnectionError, match="unusable") as info:
                call()
            assert type(info.value) is ConnectionError
        client.send_eof()  # broken: nothing to do
    assert client.is_closed()


def test_send_timeout_over_tls_mid_write(trusted_ca: TrustedCA) -> None:
    """Over TLS a send that timed out once it began writing leaves the session unusable."""
    ready = threading.Event()
    done = threading.Event()
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:  # handshakes, then reads nothing
            conn, _ = listener.accept()
            with trusted_ca.server_context.wrap_socket(conn, server_side=True):
                ready.set()
                done.wait(CLIENT_TIMEOUT)

        server = threading.Thread(target=serve, name="deaf-tls-server")
        server.start()
        try:
            with TCPClient(
                listener.getsockname(), MSGPACK_FRAMES, ssl=trusted_ca.client_context
            ) as client:
                assert ready.wait(CLIENT_TIMEOUT)
                client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                with pytest.raises(TimeoutError, match="unusable"):
                    client.send_packet(b"x" * 4_000_000, timeout=0.2)
                with pytest.raises(ConnectionError, match="unusable"):
                    client.send_packet(b"y")
        finally:
            done.set()
            server.join(CLIENT_TIMEOUT)


def test_datagram_send_timeout(tmp_dir: str) -> None:
    path = os.path.join(tmp_dir, "deaf.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:
        deaf.bind(path)
        with UnixDatagramClient(path, JSON_DATAGRAMS) as client:
            with pytest.raises(TimeoutError, match="nothing was sent"):  # noqa: PT012
                for _ in range(10_000):  # until the server's queue is full
                    client.send_packet("x", timeout=0.05)
            deaf.recv(100)  # room for one more: the client is still usable
            client.send_packet("again", timeout=CLIENT_TIMEOUT)


# -- backend() -----------------------------------------------------------------------------------


async def test_backend(backend_name: str) -> None:
    backend = current()
    assert backend.name == backend_name
    async with serving(stream_server("tcp", "", EchoHandler())) as server:
        client = AsyncTCPClient(server.get_addresses()[0], JSON_LINES)
        assert client.backend() is backend  # before connect(): the running loop's
        async with client:
            assert client.backend() is backend
        assert client.backend() is backend
    async with AsyncUDPClient(("127.0.0.1", 9), JSON_DATAGRAMS) as datagrams:
        assert datagrams.backend() is backend


def test_backend_without_a_loop() -> None:
    with pytest.raises(RuntimeError):
        AsyncTCPClient(("127.0.0.1", 1), JSON_LINES).backend()
