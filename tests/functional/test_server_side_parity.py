"""What EasyNetwork's servers offer a handler, here too (issue 15, the server-side rows):

- ``on_connection`` written as an async generator: requests received before ``handle`` (a
  login), with ``handle``'s rules (``RecvParams``, bad messages and timeouts thrown in, an
  uncaught error closing the connection);
- the client's TLS session (peer certificate, cipher, version) and, on Unix stream
  connections, the peer process's credentials;
- a server's own logger (stdlib or structlog) and the connection-log switch;
- the transport: ``TCP_NODELAY`` and ``SO_KEEPALIVE`` on accepted TCP sockets, an abortive
  close (``client.abort()``: the peer sees a reset), and no asyncio warning when a TLS peer
  half-closes.

Real loopback and Unix sockets, on every loop; both engines (run the file with and without
``SERVER_FRAMEWORK_PURE_PYTHON=1``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import sys
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
import structlog
import trustme

import server_framework as sf
from server_framework.backend import BackendName, current
from server_framework.sockets import PeerCredentials

from server_helpers import LineClient, connect, in_thread, line_exchange, serving

JSON_LINES: sf.StreamProtocol[Any, Any] = sf.StreamProtocol(sf.JSONSerializer())
JSON_DATAGRAMS: sf.DatagramProtocol[Any, Any] = sf.DatagramProtocol(sf.JSONSerializer())

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED")


@pytest.fixture(params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_server(transport: str, tmp_dir: str, handler: Any, **options: Any) -> Any:
    if transport == "tcp":
        return sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler, **options)
    return sf.AsyncUnixStreamServer(os.path.join(tmp_dir, "s.sock"), JSON_LINES, handler, **options)


@contextlib.contextmanager
def line_client(address: Any, tls: ssl.SSLContext | None = None) -> Iterator[LineClient]:
    with contextlib.closing(LineClient(connect(address, tls=tls))) as client:
        yield client


# -- on_connection as an async generator: a login before handle --------------------------------


class Login(sf.StreamRequestHandler[Any, Any]):
    """Asks for a user name first (``on_connection``), then echoes each request with it."""

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.events: list[str] = []

    async def on_connection(self, client: sf.StreamClient[Any]) -> AsyncGenerator[Any, Any]:
        self.events.append("connect")
        try:
            user = yield sf.RecvParams(timeout=self.timeout)
        except TimeoutError:
            await client.send_packet({"error": "no login in time"})
            await client.aclose()
            return
        except sf.ProtocolError:
            await client.send_packet({"error": "unreadable login"})
            user = yield  # one more chance
        if user == "mallory":
            await client.send_packet({"error": "denied"})
            await client.aclose()
            return
        if user == "crash":
            raise RuntimeError("login failed on purpose")
        await current().sleep(0)  # a step that blocks: finished by the connection task
        client.state["user"] = user
        await client.send_packet({"welcome": user})

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        await client.send_packet({"user": client.state["user"], "echo": request})

    async def on_disconnection(self, client: sf.StreamClient[Any]) -> None:
        self.events.append("disconnect")


async def test_a_login_generator_receives_requests_before_handle(
    backend_name: BackendName, transport: str, tmp_dir: str
) -> None:
    handler = Login()

    def talk(address: Any) -> tuple[list[Any], list[Any]]:
        # One message at a time, then login and requests in one write (handled in one batch).
        with line_client(address) as client:
            client.send("ann")
            one = [client.recv()]
            client.send(1, 2)
            one += [client.recv(), client.recv()]
        with line_client(address) as client:
            client.send("bob", "x", "y")
            batch = [client.recv() for _ in range(3)]
        return one, batch

    async with serving(make_server(transport, tmp_dir, handler)) as server:
        one, batch = await in_thread(talk, server.get_addresses()[0])
    assert one == [
        {"welcome": "ann"},
        {"user": "ann", "echo": 1},
        {"user": "ann", "echo": 2},
    ]
    assert batch == [{"welcome": "bob"}, {"user": "bob", "echo": "x"}, {"user": "bob", "echo": "y"}]
    assert handler.events == ["connect", "disconnect"] * 2


async def test_a_login_generator_that_closes_ends_the_connection(
    backend_name: BackendName, transport: str, tmp_dir: str
) -> None:
    handler = Login()

    def refused(address: Any) -> tuple[Any, bool]:
        with line_client(address) as client:
            client.send("mallory", "never handled")
            return client.recv(), client.recv_eof()

    async with serving(make_server(transport, tmp_dir, handler)) as server:
        assert await in_thread(refused, server.get_addresses()[0]) == ({"error": "denied"}, True)
    assert handler.events == ["connect", "disconnect"]


async def test_a_login_generator_follows_handles_rules(backend_name: BackendName) -> None:
    """A RecvParams timeout and a bad message are thrown in at its yield; an uncaught error
    closes that connection, logged once at error level."""
    handler = Login(timeout=0.2)

    def talk(address: Any) -> tuple[Any, ...]:
        with line_client(address) as client:
            timed_out = client.recv(), client.recv_eof()
        with line_client(address) as client:
            client.send_raw(b"{not json\n")
            unreadable = client.recv()
            client.send("cy")
            second_chance = client.recv()
        with line_client(address) as client:
            client.send("crash")
            crashed = client.recv_eof()
        return timed_out, unreadable, second_chance, crashed

    with structlog.testing.capture_logs() as logs:
        async with serving(sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
            timed_out, unreadable, second_chance, crashed = await in_thread(
                talk, server.get_addresses()[0]
            )
    assert timed_out == ({"error": "no login in time"}, True)
    assert unreadable == {"error": "unreadable login"}
    assert second_chance == {"welcome": "cy"}
    assert crashed
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in errors] == [
        "request handler failed; closing the connection"
    ]
    assert str(errors[0]["exc_info"]) == "login failed on purpose"


class Greeter(sf.StreamRequestHandler[Any, Any]):
    """An on_connection generator that returns before any yield: handle() starts at once."""

    async def on_connection(self, client: sf.StreamClient[Any]) -> AsyncGenerator[Any, Any]:
        await client.send_packet("hello")
        return
        yield  # an async generator all the same

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        await client.send_packet(request)


async def test_a_login_generator_may_return_before_any_request(
    backend_name: BackendName,
) -> None:
    async with serving(sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Greeter())) as server:
        address = server.get_addresses()[0]
        assert await in_thread(line_exchange, address, ["a", "b", "c"]) == ["hello", "a", "b"]


class Counter(sf.RequestResponseHandler[Any, Any]):
    """A RequestResponseHandler (respond() called directly) with a login exchange first."""

    async def on_connection(self, client: sf.StreamClient[Any]) -> AsyncGenerator[Any, Any]:
        client.state["user"] = yield
        await current().sleep(0)  # its last step blocks: finished by the connection task
        await client.send_packet({"welcome": client.state["user"]})

    async def respond(self, request: Any, client: Any) -> Any:
        client.state["seen"] = client.state.get("seen", 0) + 1
        return {"user": client.state["user"], "n": request, "seen": client.state["seen"]}


async def test_a_request_response_handler_with_a_login(backend_name: BackendName) -> None:
    def talk(address: Any) -> list[Any]:
        with line_client(address) as client:
            client.send("dee", 1, 2)  # the login and the first requests in one batch
            replies = [client.recv() for _ in range(3)]
            client.send(3)
            replies.append(client.recv())
            client.send(4, 5)
            replies += [client.recv(), client.recv()]
            return replies

    async with serving(sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Counter())) as server:
        replies = await in_thread(talk, server.get_addresses()[0])
    assert replies == [
        {"welcome": "dee"},
        *({"user": "dee", "n": n, "seen": n} for n in range(1, 6)),
    ]


async def test_respond_is_called_directly_again_after_the_login(
    backend_name: BackendName,
) -> None:
    """The direct respond() path (no generator) resumes once the login generator returned."""
    direct: list[bool] = []

    class Probe(Counter):
        async def respond(self, request: Any, client: Any) -> Any:
            direct.append(client._respond is not None)
            return await super().respond(request, client)

    def talk(address: Any) -> None:
        with line_client(address) as client:
            client.send("eve")
            client.recv()
            for n in range(3):
                client.send(n)
                client.recv()

    async with serving(sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Probe())) as server:
        await in_thread(talk, server.get_addresses()[0])
    assert direct == [True, True, True]


# -- typed attributes: TLS session, peer credentials --------------------------------------------


class Describe(sf.StreamRequestHandler[Any, Any]):
    """Answers each request with what the client object says about the connection."""

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        yield
        certificate = client.tls_peer_certificate
        der = client.tls_peer_certificate_der
        credentials = client.peer_credentials
        await client.send_packet(
            {
                "subject": None if certificate is None else certificate["subject"],
                "san": None if certificate is None else certificate.get("subjectAltName"),
                "der": None if der is None else der.hex(),
                "cipher": client.tls_cipher,
                "version": client.tls_version,
                "credentials": None if credentials is None else list(credentials),
                "nodelay": _option(client, socket.IPPROTO_TCP, socket.TCP_NODELAY),
                "keepalive": _option(client, socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            }
        )


def _option(client: sf.StreamClient[Any], level: int, option: int) -> int | None:
    if client.socket.family == socket.AF_UNIX:
        return None
    return 1 if client.socket.getsockopt(level, option) else 0


@pytest.fixture(scope="module")
def mutual_tls() -> tuple[ssl.SSLContext, ssl.SSLContext, bytes]:
    """``(server_context, client_context, client certificate in DER)``: a server that asks
    for the client's certificate, and a client that has one, from a throwaway CA."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client_cert = ca.issue_cert("client@example.org")
    client_cert.configure_cert(client_context)
    der = ssl.PEM_cert_to_DER_cert(client_cert.cert_chain_pems[0].bytes().decode())
    return server_context, client_context, der


async def test_tls_attributes(
    backend_name: BackendName, mutual_tls: tuple[ssl.SSLContext, ssl.SSLContext, bytes]
) -> None:
    server_context, client_context, der = mutual_tls

    def talk(address: Any) -> tuple[Any, Any, Any]:
        with line_client(address, tls=client_context) as client:
            client.send("?")
            sock = client.sock
            assert isinstance(sock, ssl.SSLSocket)
            return client.recv(), sock.cipher(), sock.version()

    server = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Describe(), ssl=server_context)
    async with serving(server):
        described, cipher, version = await in_thread(talk, server.get_addresses()[0])
    assert described["der"] == der.hex()
    assert described["subject"]  # what getpeercert() says: a validated certificate's fields
    assert ["email", "client@example.org"] in described["san"]
    assert tuple(described["cipher"]) == cipher
    assert described["version"] == version
    assert described["credentials"] is None
    assert described["nodelay"] == 1
    assert described["keepalive"] == 1


async def test_plain_connections_have_no_tls_attributes(
    backend_name: BackendName, transport: str, tmp_dir: str
) -> None:
    async with serving(make_server(transport, tmp_dir, Describe())) as server:
        (described,) = await in_thread(line_exchange, server.get_addresses()[0], ["?"])
    assert described["subject"] is None
    assert described["der"] is None
    assert described["cipher"] is None
    assert described["version"] is None
    if transport == "tcp":
        assert described["credentials"] is None
        assert described["nodelay"] == 1
        assert described["keepalive"] == 1


async def test_a_tls_peer_without_a_certificate(
    backend_name: BackendName, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts  # the server asks for no certificate
    server = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Describe(), ssl=server_context)
    async with serving(server):
        address = server.get_addresses()[0]
        (described,) = await in_thread(line_exchange, address, ["?"], client_context)
    assert described["subject"] is None
    assert described["der"] is None
    assert described["version"] in ("TLSv1.2", "TLSv1.3")
    assert described["cipher"][1] in ("TLSv1.2", "TLSv1.3")


@linux_only
async def test_unix_peer_credentials(backend_name: BackendName, tmp_dir: str) -> None:
    async with serving(make_server("unix", tmp_dir, Describe())) as server:
        (described,) = await in_thread(line_exchange, server.get_addresses()[0], ["?"])
    # The client is this process (a worker thread).
    assert described["credentials"] == [os.getpid(), os.geteuid(), os.getegid()]
    assert PeerCredentials(*described["credentials"]).uid == os.geteuid()


# -- the transport: keepalive, abortive close, TLS half-close ------------------------------------


async def test_keepalive_can_be_turned_off(backend_name: BackendName) -> None:
    server = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Describe(), keepalive=False)
    async with serving(server):
        (described,) = await in_thread(line_exchange, server.get_addresses()[0], ["?"])
    assert described["keepalive"] == 0
    assert described["nodelay"] == 1


class Aborter(sf.StreamRequestHandler[Any, Any]):
    """Echoes; ``"abort"`` closes the connection abortively, in the middle of a batch."""

    def __init__(self) -> None:
        self.after_abort: list[Any] = []

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request != "abort":
            await client.send_packet(request)
            return
        await client.send_packet("dropped with the connection")
        client.abort()
        client.abort()  # idempotent
        self.after_abort.append(client.is_closing())
        # Dropped (inside the batch of replies), or refused: it never reaches the peer.
        with contextlib.suppress(sf.ClosedResourceError):
            await client.send_packet("too late")

    async def on_disconnection(self, client: sf.StreamClient[Any]) -> None:
        self.after_abort.append("disconnected")


def _reset_seen(address: Any, tls: ssl.SSLContext | None = None) -> str:
    """What the peer of an aborted connection sees: ``"reset"`` (ECONNRESET), or the end of
    stream. Read below TLS (Python's TLS layer reports a reset as an end of stream)."""
    with line_client(address, tls=tls) as client:
        client.send("first")
        assert client.recv() == "first"
        client.send("abort")
        with socket.fromfd(client.sock.fileno(), client.sock.family, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            try:
                while raw.recv(65536):
                    pass  # TLS records still in flight
            except ConnectionResetError:
                return "reset"
        return "end of stream"


async def test_abort_resets_a_tcp_connection(
    backend_name: BackendName, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts
    for tls in (False, True):
        handler = Aborter()
        server = sf.AsyncTCPServer(
            "127.0.0.1", 0, JSON_LINES, handler, ssl=server_context if tls else None
        )
        async with serving(server):
            address = server.get_addresses()[0]
            seen = await in_thread(_reset_seen, address, client_context if tls else None)
            # and the server goes on serving
            assert await in_thread(
                line_exchange, address, ["next"], client_context if tls else None
            ) == ["next"]
        assert seen == "reset", f"tls={tls}"
        assert handler.after_abort == [True, "disconnected", "disconnected"]


async def test_abort_on_a_unix_connection_is_an_end_of_stream(
    backend_name: BackendName, tmp_dir: str
) -> None:
    handler = Aborter()
    async with serving(make_server("unix", tmp_dir, handler)) as server:
        assert await in_thread(_reset_seen, server.get_addresses()[0]) == "end of stream"
    assert handler.after_abort == [True, "disconnected"]


async def test_a_tls_half_close_logs_no_asyncio_warning(
    backend_name: BackendName,
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio and uvloop warn "returning true from eof_received() has no effect when using
    ssl" for each TLS connection whose protocol asks to stay half-open."""
    server_context, client_context = tls_contexts
    handler = Aborter()

    def half_close(address: Any) -> Any:
        with line_client(address, tls=client_context) as client:
            client.send("last")
            reply = client.recv()
            sock = client.sock
            assert isinstance(sock, ssl.SSLSocket)
            sock.unwrap()  # close_notify: the TLS end of stream; returns once the server's came
            return reply

    caplog.set_level(logging.WARNING, logger="asyncio")
    server = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler, ssl=server_context)
    async with serving(server):
        assert await in_thread(half_close, server.get_addresses()[0]) == "last"
    assert handler.after_abort == ["disconnected"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("asyncio")] == []


# -- the server's logger, and the connection-log switch -----------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def stdlib_logger(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, _Records]]:
    """A stdlib logger of its own (not propagated to the root), recording what it gets."""
    logger = logging.getLogger(f"test.server_side_parity.{request.node.name}")
    records = _Records()
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, records
    finally:
        logger.removeHandler(records)


class Crasher(sf.StreamRequestHandler[Any, Any]):
    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request == "crash":
            raise RuntimeError("crashed on purpose")
        await client.send_packet(request)


def _crash_after_one(address: Any) -> None:
    with line_client(address) as client:
        client.send("one")
        assert client.recv() == "one"
        client.send("crash")
        assert client.recv_eof()


async def test_a_stdlib_logger_gets_every_line_of_the_server(
    backend_name: BackendName, stdlib_logger: tuple[logging.Logger, _Records]
) -> None:
    logger, records = stdlib_logger
    with structlog.testing.capture_logs() as framework_lines:
        server = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Crasher(), logger=logger)
        async with serving(server):
            address = server.get_addresses()[0]
            await in_thread(_crash_after_one, address)
    port = address[1]
    messages = [(r.levelname, r.getMessage()) for r in records.records]
    assert messages[0] == (
        "INFO",
        f"server started transport=tcp addresses=['127.0.0.1:{port}'] backend={backend_name}",
    )
    accepted = [m for level, m in messages if m.startswith("connection accepted")]
    assert len(accepted) == 1
    assert accepted[0].startswith("connection accepted conn_id=")
    assert accepted[0].endswith(" peer=127.0.0.1:" + accepted[0].rsplit(":", 1)[1])
    (failure,) = [r for r in records.records if r.levelno == logging.ERROR]
    assert failure.getMessage().startswith("request handler failed; closing the connection ")
    (accepted_record,) = [r for r in records.records if r.getMessage() == accepted[0]]
    # The record points at the framework's line that logged it, not at the adapter.
    assert accepted_record.pathname.endswith(("_asyncio.py", "_trio.py"))
    assert "conn_id=" in failure.getMessage()
    assert failure.exc_info is not None
    assert str(failure.exc_info[1]) == "crashed on purpose"
    assert any(m.startswith("connection closed conn_id=") for _, m in messages)
    assert messages[-1] == ("INFO", "server stopped")
    assert framework_lines == []  # nothing went to the framework's own logger


async def test_a_stdlib_loggers_level_filters(
    backend_name: BackendName, stdlib_logger: tuple[logging.Logger, _Records]
) -> None:
    logger, records = stdlib_logger
    logger.setLevel(logging.INFO)
    server = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Crasher(), logger=logger)
    async with serving(server):
        await in_thread(_crash_after_one, server.get_addresses()[0])
    levels = [r.levelname for r in records.records]
    assert levels == ["INFO", "ERROR", "INFO"]  # started, the handler's failure, stopped


class _StructlogLike:
    """What a structlog bound logger offers the server: methods taking an event and fields."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return log

    def __getattr__(self, level: str) -> Any:
        if level in ("debug", "info", "warning", "error", "critical", "exception"):
            return self._log(level)
        raise AttributeError(level)


async def test_a_structlog_logger_and_the_connection_log_switch(
    backend_name: BackendName, transport: str, tmp_dir: str
) -> None:
    for log_connections in (True, False):
        logger = _StructlogLike()
        server = make_server(
            transport, tmp_dir, Crasher(), logger=logger, log_connections=log_connections
        )
        async with serving(server):
            await in_thread(_crash_after_one, server.get_addresses()[0])
        events = [event for _level, event, _fields in logger.lines]
        assert events[0] == "server started"
        assert events[-1] == "server stopped"
        assert "request handler failed; closing the connection" in events
        connection_lines = [e for e in events if e in ("connection accepted", "connection closed")]
        expected = ["connection accepted", "connection closed"] if log_connections else []
        assert connection_lines == expected


async def test_the_connection_log_switch_with_a_stdlib_logger(
    backend_name: BackendName, stdlib_logger: tuple[logging.Logger, _Records]
) -> None:
    logger, records = stdlib_logger
    server = sf.AsyncTCPServer(
        "127.0.0.1", 0, JSON_LINES, sf.EchoHandler(), logger=logger, log_connections=False
    )
    async with serving(server):
        assert await in_thread(line_exchange, server.get_addresses()[0], ["x"]) == ["x"]
    messages = [r.getMessage() for r in records.records]
    assert messages[0].startswith("server started")
    assert messages[1:] == ["server stopped"]


class DatagramCrasher(sf.DatagramRequestHandler[Any, Any]):
    async def handle(self, client: sf.DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request == "crash":
            raise RuntimeError("crashed on purpose")
        await client.send_packet(request)


async def test_a_datagram_servers_logger(
    backend_name: BackendName, stdlib_logger: tuple[logging.Logger, _Records]
) -> None:
    logger, records = stdlib_logger
    server = sf.AsyncUDPServer("127.0.0.1", 0, JSON_DATAGRAMS, DatagramCrasher(), logger=logger)

    def talk(address: Any) -> Any:
        with sf.UDPClient(address, JSON_DATAGRAMS) as client:
            client.send_packet("crash")
            client.send_packet("after")
            return client.recv_packet(timeout=10)

    async with serving(server):
        assert await in_thread(talk, server.get_addresses()[0]) == "after"
    (failure,) = [r for r in records.records if r.levelno == logging.ERROR]
    assert failure.getMessage().startswith("request handler failed; ending the peer's handler")
    messages = [r.getMessage() for r in records.records]
    assert messages[0].startswith("server started transport=udp")
    assert messages[-1] == "server stopped"


def test_the_switches_are_booleans() -> None:
    for name in ("keepalive", "log_connections"):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got 'no'"):
            sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, sf.EchoHandler(), **{name: "no"})


def test_a_logger_that_is_no_logger_is_refused() -> None:
    with pytest.raises(TypeError, match=r"logger must be a logging\.Logger or a structlog logger"):
        sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, sf.EchoHandler(), logger="server")
    with pytest.raises(TypeError, match=r"logger must be a logging\.Logger or a structlog logger"):
        sf.AsyncUDPServer("127.0.0.1", 0, JSON_DATAGRAMS, sf.DatagramEchoHandler(), logger=print)


def test_stdlib_messages_quote_text_that_is_not_one_word() -> None:
    """A peer's text in a field cannot break the line or pass for another field."""
    from server_framework.servers._driver import stdlib_text  # noqa: PLC0415

    text = stdlib_text(
        "closing connection after a bad message",
        {"error": "bad\nline peer=1.2.3.4:5", "conn_id": 7, "peer": "127.0.0.1:5000", "n": [1]},
    )
    assert text == (
        "closing connection after a bad message error='bad\\nline peer=1.2.3.4:5' conn_id=7 "
        "peer=127.0.0.1:5000 n=[1]"
    )


# -- yield a timeout (EasyNetwork's shorthand for RecvParams(timeout=...)) ----------------------


class TimeoutShorthand(sf.StreamRequestHandler[Any, Any]):
    """``yield 0.05`` waits 50 ms for the next request, as ``yield RecvParams(timeout=0.05)``."""

    def __init__(self, value: Any = 0.05) -> None:
        self.value = value

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[Any, Any]:
        request = yield
        try:
            request = yield self.value
        except TimeoutError:
            await client.send_packet("timed out")
        else:
            await client.send_packet(request)


async def test_yield_a_number_is_a_timeout(backend_name: BackendName) -> None:
    async with serving(
        sf.AsyncTCPServer(
            "127.0.0.1", 0, sf.StreamProtocol(sf.JSONSerializer()), TimeoutShorthand()
        )
    ) as server:
        address = server.get_addresses()[0]

        def exchange() -> list[Any]:
            with contextlib.closing(LineClient(connect(address))) as client:
                client.send("first")
                late = client.recv()
                client.send("again")
                client.send("second")
                return [late, client.recv()]

        assert await in_thread(exchange) == ["timed out", "second"]


@pytest.mark.parametrize(
    ("value", "error"),
    [("soon", "may yield None, a timeout in seconds or RecvParams"), (-1, "timeout must be >= 0")],
)
async def test_yield_something_else_closes_with_the_reason(
    backend_name: BackendName, value: Any, error: str
) -> None:
    protocol = sf.StreamProtocol(sf.JSONSerializer())
    with structlog.testing.capture_logs() as logs:
        async with serving(
            sf.AsyncTCPServer("127.0.0.1", 0, protocol, TimeoutShorthand(value))
        ) as server:
            address = server.get_addresses()[0]

            def exchange() -> bool:
                with contextlib.closing(LineClient(connect(address))) as client:
                    client.send("first")
                    return client.recv_eof()

            assert await in_thread(exchange)
    failures = [log for log in logs if log.get("exc_info") is not None]
    assert failures, logs
    assert error in str(failures[0]["exc_info"])


# -- shutdown: a connection accepted just before it is still served -----------------------------


class Announcing(sf.StreamRequestHandler[Any, Any]):
    """Echo; ``on_connection`` counts the connections accepted, for the test to wait on."""

    def __init__(self) -> None:
        self.accepted = 0

    async def on_connection(self, client: sf.StreamClient[Any]) -> None:
        self.accepted += 1

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[Any, Any]:
        request = yield
        await client.send_packet(request)


async def test_shutdown_serves_the_first_request_of_a_connection_just_accepted(
    backend_name: BackendName,
) -> None:
    backend = current()
    handler = Announcing()
    server = sf.AsyncTCPServer("127.0.0.1", 0, sf.StreamProtocol(sf.JSONSerializer()), handler)
    async with server, backend.create_task_group() as tg:
        tg.start_soon(server.serve_forever)
        while not server.is_serving():
            await backend.sleep(0.005)
        address = server.get_addresses()[0]
        late = connect(address)  # accepted, then silent until the server drains
        silent = connect(address)  # never sends: closed after the first-request grace
        try:
            while handler.accepted < 2:
                await backend.sleep(0.005)
            tg.start_soon(server.shutdown)
            while server.is_serving():
                await backend.sleep(0.001)

            def exchange() -> Any:
                client = LineClient(late)
                client.send({"late": True})
                return client.recv()

            assert await in_thread(exchange) == {"late": True}
            assert await in_thread(LineClient(silent).recv_eof)
        finally:
            late.close()
            silent.close()


async def test_no_on_disconnection_for_a_connection_that_never_started(
    backend_name: BackendName, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A failed TLS handshake or PROXY header: the handler never saw the connection, so
    neither on_connection nor on_disconnection is called (on every loop)."""
    calls: list[str] = []

    class Hooks(sf.EchoHandler):
        async def on_connection(self, client: Any) -> None:
            calls.append("connection")

        async def on_disconnection(self, client: Any) -> None:
            calls.append("disconnection")

    server_context, client_context = tls_contexts
    tls = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Hooks(), ssl=server_context)
    proxied = sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Hooks(), proxy_protocol="v1")
    async with serving(tls), serving(proxied):

        def scenario() -> None:
            for address, garbage in (
                (tls.get_addresses()[0], b"plaintext\n"),
                (proxied.get_addresses()[0], b"GET / HTTP/1.1\r\n\r\n"),
            ):
                with connect(address) as sock:
                    sock.sendall(garbage)
                    assert sock.recv(10) == b""

        await in_thread(scenario)
        # A connection that does start: both hooks, once (so the ones above were not missed).
        address = tls.get_addresses()[0]
        assert await in_thread(line_exchange, address, ["x"], client_context) == ["x"]
        for _ in range(1000):
            if "disconnection" in calls:
                break
            await current().sleep(0.01)
    assert calls == ["connection", "disconnection"]
