"""The documentation's own examples (docs/examples/tutorials/ and docs/examples/howto/) at work.

Every example file included into a page of the site is imported here and run: its server on a
free port, on every loop it supports (the ``backend_name`` fixture), talked to by the example's
own client (or a plain one) over real sockets, then stopped. A page whose example breaks fails
this file, so the documentation cannot rot.

Examples are imported by their file name: their base names are unique (mypy requires it too),
and an example may import its neighbour (``typed_client`` imports ``typed_service``).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trustme

from handlers import RequestResponseHandler
from protocols import (
    BytesSerializer,
    DatagramProtocol,
    FrameTooLargeError,
    FramingError,
    JSONSerializer,
    StreamProtocol,
)
from server_framework import TCPClient, UDPClient
from server_framework.backend import current
from server_framework.cli.config import build_parser, load_settings
from server_framework.servers import AsyncTCPServer

from cli_helpers import ServerProcess, clean_env, cli, run_cli, udp_exchange
from server_helpers import LineClient, connect, in_thread, line_exchange, serving

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
JSON_LINES = StreamProtocol(JSONSerializer())


@pytest.fixture(scope="module", autouse=True)
def examples_importable() -> Iterator[None]:
    """Put the example folders on ``sys.path`` for this module's tests, as running them would."""
    folders = [str(EXAMPLES / "tutorials"), str(EXAMPLES / "howto")]
    sys.path[:0] = folders
    try:
        yield
    finally:
        for folder in folders:
            sys.path.remove(folder)


def example(name: str) -> ModuleType:
    """Import the example ``name`` (a file name without ``.py``)."""
    return importlib.import_module(name)


def text_lines(sock: Any) -> LineClient:
    return LineClient(sock)


def recv_text(client: LineClient) -> str:
    line = client.recv_line()
    if line is None:
        raise EOFError("the server closed the connection")
    return line.decode()


def only_on(backend_name: str, *loops: str) -> None:
    if backend_name not in loops:
        pytest.skip(f"this example uses {' or '.join(loops)}'s own API")


# -- tutorials ---------------------------------------------------------------------------------


async def test_tutorial_json_echo(backend_name: str) -> None:
    server_module = example("json_echo_server")
    async with serving(server_module.make_server("127.0.0.1", 0)) as server:
        address = server.get_addresses()[0]
        replies = await in_thread(example("json_echo_client").main, address)
        async_replies = await example("json_echo_async_client").main(address)
    expected = [{"echo": {"hello": "world"}}, {"echo": [1, 2, 3]}, {"echo": "just a string"}]
    assert replies == expected
    assert async_replies == expected


async def test_tutorial_udp_echo(backend_name: str) -> None:
    async with serving(example("udp_echo_server").make_server("127.0.0.1", 0)) as server:
        replies = await in_thread(example("udp_echo_client").main, server.get_addresses()[0])
    assert replies == [{"echo": {"ping": n}, "count": n + 1} for n in range(3)]


async def test_tutorial_chat(backend_name: str) -> None:
    chat_client = example("chat_client")
    async with serving(example("chat_server").make_server("127.0.0.1", 0)) as server:
        address = server.get_addresses()[0]

        def join(name: str) -> LineClient:
            client = text_lines(connect(address))
            assert recv_text(client) == "welcome! what is your name?"
            client.send_raw(name.encode() + b"\n")
            assert recv_text(client).startswith(f"hello {name}!")
            return client

        def scenario() -> tuple[list[str], list[str], list[str]]:
            alice = join("alice")
            bob = join("bob")
            try:
                assert recv_text(alice) == "* bob joined"
                bob.send_raw(b"hi alice\r\n")  # CRLF, as telnet sends it
                assert recv_text(alice) == "bob: hi alice"
                # carol uses the tutorial's client, which sends its lines and /quit.
                carol_saw: list[str] = []
                chat_client.chat(address, "carol", ["hello all", "bye"], carol_saw.append)
                alice_saw = [recv_text(alice) for _ in range(4)]
                bob_saw = [recv_text(bob) for _ in range(4)]
                return alice_saw, bob_saw, carol_saw
            finally:
                alice.close()
                bob.close()

        alice_saw, bob_saw, carol_saw = await in_thread(scenario)
    carol_lines = ["* carol joined", "carol: hello all", "carol: bye", "* carol left"]
    assert alice_saw == carol_lines
    assert bob_saw == carol_lines
    assert carol_saw[0] == "welcome! what is your name?"
    assert carol_saw[-2:] == ["bye!", "* the server closed the connection"]
    assert "carol: hello all" not in carol_saw  # never sent back to its sender


async def test_tutorial_chat_name_taken(backend_name: str) -> None:
    async with serving(example("chat_server").make_server("127.0.0.1", 0)) as server:
        address = server.get_addresses()[0]

        def scenario() -> list[str]:
            with contextlib.ExitStack() as stack:
                first = text_lines(stack.enter_context(connect(address)))
                second = text_lines(stack.enter_context(connect(address)))
                first.send_raw(b"dave\n")
                recv_text(first), recv_text(first)
                second.send_raw(b"dave\n\nerin\n")
                return [recv_text(second) for _ in range(4)]

        lines = await in_thread(scenario)
    assert lines[0] == "welcome! what is your name?"
    assert lines[1:3] == ["that name is empty or taken; another one?"] * 2
    assert lines[3].startswith("hello erin! 1 other(s) here")


async def test_tutorial_typed_service(backend_name: str) -> None:
    service = example("typed_service")
    async with serving(service.make_server("127.0.0.1", 0)) as server:
        address = server.get_addresses()[0]
        replies = await in_thread(example("typed_client").main, address)
        raw = await in_thread(line_exchange, address, [{"item": "x", "quantity": 2}, "nope"])
    assert replies[0] == service.Quote("widget", 28.5, 0.05)
    assert isinstance(replies[1], service.Error)
    assert "`$.quantity`" in replies[1].error
    assert "missing required field `unit_price`" in replies[2].error
    assert raw[0]["type"] == raw[1]["type"] == "Error"
    assert "unit_price" in raw[0]["error"]
    assert "Expected `object`, got `str`" in raw[1]["error"]


# -- how-to: multithreading --------------------------------------------------------------------


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("name", "loops"),
    [
        ("asyncio_executor", ("asyncio", "uvloop")),
        ("trio_limiter", ("trio",)),
    ],
)
async def test_howto_custom_pool(backend_name: str, name: str, loops: tuple[str, ...]) -> None:
    only_on(backend_name, *loops)
    handler = example(name).DigestHandler()
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        replies = await in_thread(line_exchange, server.get_addresses()[0], ["a", "b"])
    assert replies == [digest("a"), digest("b")]


@pytest.mark.parametrize(
    ("name", "loops"),
    [
        ("asyncio_from_thread", ("asyncio", "uvloop")),
        ("trio_from_thread", ("trio",)),
    ],
)
async def test_howto_from_thread(backend_name: str, name: str, loops: tuple[str, ...]) -> None:
    only_on(backend_name, *loops)
    handler = example(name).FromThreadHandler()
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        replies = await in_thread(line_exchange, server.get_addresses()[0], [[1, 2, 3], [4]])
    assert replies == [[1, 4, 9], [16]]


@pytest.mark.parametrize(
    ("name", "loops"),
    [
        ("portal_cancel", ("asyncio", "uvloop", "trio")),
        ("asyncio_cancel_from_thread", ("asyncio", "uvloop")),
        ("trio_cancel_from_thread", ("trio",)),
    ],
)
async def test_howto_cancel_from_thread(
    backend_name: str, name: str, loops: tuple[str, ...]
) -> None:
    only_on(backend_name, *loops)
    handler = example(name).HedgingHandler()
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        address = server.get_addresses()[0]
        first = await in_thread(line_exchange, address, ["a"])
        second = await in_thread(line_exchange, address, ["b"])
    assert first == [{"value": "a@near", "cancelled": 2}]
    assert second == [{"value": "b@near", "cancelled": 2}]
    assert handler.wins == {"near": 2}
    assert sorted(handler.cancelled) == ["far", "far", "farther", "farther"]


# -- how-to: servers ---------------------------------------------------------------------------


async def test_howto_tcp_options(backend_name: str) -> None:
    tcp_options = example("tcp_options")
    server = tcp_options.make_server("127.0.0.1", 0)
    server._options.handler.request_timeout = 0.2  # the example's 30 s, shortened for the test
    async with serving(server):

        def scenario(address: Any) -> tuple[list[str], bool]:
            client = text_lines(connect(address))
            try:
                client.send_raw(b"hello\r\nagain\r\n")
                lines = [recv_text(client).rstrip("\r") for _ in range(3)]  # then silence
                return lines, client.recv_eof()
            finally:
                client.close()

        lines, closed = await in_thread(scenario, server.get_addresses()[0])
    assert lines == ["HELLO #1", "AGAIN #2", "bye: idle for too long"]
    assert closed


async def test_howto_tcp_serve_for(backend_name: str) -> None:
    tcp_options = example("tcp_options")
    server = tcp_options.make_server("127.0.0.1", 0)
    await tcp_options.serve_for(server, 0.05)
    assert not server.is_serving()
    assert server.get_addresses() == []


async def test_howto_busy_server(backend_name: str) -> None:
    server = example("busy_server").make_server("127.0.0.1", 0, max_connections=1)
    async with serving(server):
        address = server.get_addresses()[0]

        def scenario() -> tuple[Any, Any, bool]:
            first = LineClient(connect(address))
            try:
                first.send("me")
                served = first.recv()
                second = LineClient(connect(address))  # one too many: answered, closed
                try:
                    return served, second.recv(), second.recv_eof()
                finally:
                    second.close()
            finally:
                first.close()

        served, refused, closed = await in_thread(scenario)
    assert served == {"quote": "Simple is better than complex.", "for": "me"}
    assert refused == {"error": "busy", "reason": "max_connections", "retry_after": 1.0}
    assert closed
    assert server.metrics.connections_refused == {"max_connections": 1}


async def test_howto_udp_rate_limit(backend_name: str) -> None:
    async with serving(example("udp_rate_limit").make_server("127.0.0.1", 0)) as server:

        def scenario(address: Any) -> list[Any]:
            with UDPClient(address, DatagramProtocol(JSONSerializer())) as client:
                for n in range(5):
                    client.send_packet(n)
                return [client.recv_packet(timeout=5) for _ in range(5)]

        replies = await in_thread(scenario, server.get_addresses()[0])
    assert replies == [{"echo": 0}, {"echo": 1}, {"echo": 2}, *[{"error": "slow down"}] * 2]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="sf-docs-") as folder:
        yield Path(folder)


async def test_howto_unix_servers(backend_name: str, short_tmp: Path) -> None:
    unix_servers = example("unix_servers")
    stream_path, datagram_path = str(short_tmp / "echo.sock"), str(short_tmp / "echo-dgram.sock")
    async with (
        serving(unix_servers.make_stream_server(stream_path)),
        serving(unix_servers.make_datagram_server(datagram_path)),
    ):
        assert (Path(stream_path).stat().st_mode & 0o777) == 0o660
        replies = await in_thread(unix_servers.talk, stream_path, datagram_path)
    assert replies == [{"over": "stream"}, {"over": "datagram"}]
    assert not Path(stream_path).exists()  # removed when the server closed


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("client@example.com")
    files = {
        "ca": folder / "ca.pem",
        "cert": folder / "server.pem",
        "key": folder / "server.key",
        "client": folder / "client.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    for pem in server_cert.cert_chain_pems[1:]:
        pem.write_to_path(str(files["cert"]), append=True)
    server_cert.private_key_pem.write_to_path(str(files["key"]))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return {name: str(path) for name, path in files.items()}


async def test_howto_tls(backend_name: str, tls_files: dict[str, str]) -> None:
    tls_server = example("tls_server")
    context = tls_server.server_context(tls_files["cert"], tls_files["key"])
    async with serving(tls_server.make_server("127.0.0.1", 0, context)) as server:
        address = server.get_addresses()[0]
        reply = await in_thread(tls_server.ask, address, tls_files["ca"], {"secret": 1})
    assert reply == {"secret": 1}


async def test_howto_mutual_tls(backend_name: str, tls_files: dict[str, str]) -> None:
    tls_server = example("tls_server")
    context = tls_server.server_context(tls_files["cert"], tls_files["key"])
    tls_server.require_client_certificates(context, tls_files["ca"])
    async with serving(tls_server.make_server("127.0.0.1", 0, context)) as server:
        address = server.get_addresses()[0]
        ask = tls_server.ask
        reply = await in_thread(
            lambda: ask(address, tls_files["ca"], "me", certfile=tls_files["client"])
        )
        with pytest.raises((ssl.SSLError, ConnectionError)):  # no certificate: refused
            await in_thread(ask, address, tls_files["ca"], "anonymous")
    assert reply == "me"


# -- how-to: protocols ---------------------------------------------------------------------


def test_howto_netstring_framer_sans_io() -> None:
    framer = example("netstring_framer").NetstringFramer(max_frame_size=10)
    protocol = StreamProtocol(BytesSerializer(), framer)
    assert protocol.encode(b"hello") == b"5:hello,"
    batch = bytearray()
    protocol.encode_into(b"ab", batch)
    protocol.encode_into(b"", batch)
    assert batch == b"2:ab,0:,"

    stream = b"5:hello,0:,3:a,b,"
    for chunks in ([stream], [bytes([byte]) for byte in stream]):  # whole, and byte by byte
        decoder = protocol.decoder()
        received = []
        for chunk in chunks:
            decoder.feed(chunk)
            received.extend(decoder)
        assert received == [b"hello", b"", b"a,b"]
        assert decoder.buffered == 0

    too_large = protocol.decoder()
    too_large.feed(b"11:")
    with pytest.raises(FrameTooLargeError):
        next(too_large)
    assert too_large.broken
    malformed = protocol.decoder()
    malformed.feed(b"3:abc;")
    with pytest.raises(FramingError):
        next(malformed)
    with pytest.raises(FramingError):
        malformed.feed(b"1:a,")


async def test_howto_custom_serializer(backend_name: str) -> None:
    command_serializer = example("command_serializer")
    handler = command_serializer.KeyValueHandler()
    server = AsyncTCPServer("127.0.0.1", 0, command_serializer.PROTOCOL, handler)
    async with serving(server):

        def scenario(address: Any) -> list[str]:
            with TCPClient(address, command_serializer.CLIENT_PROTOCOL) as client:
                for command in ["set color blue", "GET color", "get nothing", "  ", "DEL x"]:
                    client.send_packet(command)
                replies = [client.recv_packet(timeout=5) for _ in range(5)]
            with connect(address) as sock:  # not UTF-8: a StringSerializer cannot send it
                sock.sendall(b"1:\xff,")
                decoder = command_serializer.CLIENT_PROTOCOL.decoder()
                decoder.feed(sock.recv(1024))
                replies.extend(decoder)
            return replies

        replies = await in_thread(scenario, server.get_addresses()[0])
    assert replies[:3] == ["OK", "blue", "(nil)"]
    assert replies[3] == "ERR empty command"
    assert replies[4] == "ERR unknown command DEL"
    assert replies[5].startswith("ERR not UTF-8")


async def test_howto_standalone_and_fast_handlers(backend_name: str) -> None:
    fast = example("fast_handlers")
    for handler in (fast.FastEcho(), fast.LoopEcho(), fast.PerRequestEcho()):
        async with serving(AsyncTCPServer("127.0.0.1", 0, fast.PROTOCOL, handler)) as server:

            def scenario(address: Any) -> list[str]:
                client = text_lines(connect(address))
                try:
                    client.send_raw(b"PING\r\nPONG\r\n")
                    return [recv_text(client) for _ in range(2)]
                finally:
                    client.close()

            assert await in_thread(scenario, server.get_addresses()[0]) == ["PING\r", "PONG\r"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_howto_standalone_server(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    standalone = example("standalone_server")
    server, thread = standalone.start(backend=loop)
    try:
        with TCPClient(server.get_addresses()[0], standalone.JSON_LINES) as client:
            for _ in range(2):
                client.send_packet({"item": "pear", "add": 2})
            assert [client.recv_packet(timeout=5)["stock"] for _ in range(2)] == [2, 4]
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    standalone.main()
    assert "{'item': 'apple', 'stock': 3}" in capsys.readouterr().out


# -- how-to: testing ---------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_howto_testing_examples(loop: str) -> None:
    greeter_tests = example("greeter_tests")
    greeter_tests.test_greeter_over_udp(loop)
    greeter_tests.test_greeter_over_tcp(loop)


def test_howto_testing_examples_without_loop() -> None:
    greeter_tests = example("greeter_tests")
    greeter_tests.test_protocol_without_sockets()
    greeter_tests.test_blocking_client_against_a_thread_server()


# -- how-to: the command line and deployment ---------------------------------------------------


def test_howto_cli_config_file() -> None:
    """docs/examples/cli: ``serve --config server.toml`` from its folder, listeners overridden."""
    command = cli(
        "serve", "--config", "server.toml", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"
    )
    with ServerProcess(command, cwd=EXAMPLES / "cli") as process:
        tcp = process.addresses("tcp")[0]
        udp = process.addresses("udp")[0]
        assert line_exchange(tcp, [{"set": "a", "value": 1}, {"get": "a"}]) == [
            {"ok": True},
            {"value": 1},
        ]
        assert udp_exchange(udp, b'{"get": "a"}') == b'{"value":1}'
        process.send_signal(signal.SIGTERM)
        assert process.wait() == 0


def test_howto_cli_custom_protocol() -> None:
    """The command in howto_cli.rst: a handler and a protocol of our own, from the command line."""
    command = cli(
        "serve",
        "command_serializer:KeyValueHandler",
        "--protocol",
        "command_serializer:PROTOCOL",
        "--tcp",
        "127.0.0.1:0",
    )
    with ServerProcess(command, cwd=EXAMPLES / "howto") as process:
        with connect(process.addresses("tcp")[0]) as sock:
            sock.sendall(b"14:set color blue,9:GET color,")
            received = b""
            while not received.endswith(b"4:blue,"):
                chunk = sock.recv(1024)
                assert chunk, f"closed after {received!r}"
                received += chunk
        assert received == b"2:OK,4:blue,"
        process.send_signal(signal.SIGTERM)
        assert process.wait() == 0


def test_howto_cli_print_config() -> None:
    config = EXAMPLES / "cli" / "server.toml"
    process = run_cli("serve", "--config", str(config), "--print-config")
    assert process.process.returncode == 0
    assert any(line.startswith("target = ") for line in process.stdout)


def unit_file(path: Path) -> dict[str, dict[str, str]]:
    """A systemd unit file as sections of ``key: value`` (the last value of a repeated key)."""
    sections: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            section[key] = value
    return sections


def test_howto_systemd_units() -> None:
    """The unit's ExecStart is a valid ``serve`` command, and its stop timeout is long enough."""
    service = unit_file(EXAMPLES / "cli" / "server-framework.service")
    socket_unit = unit_file(EXAMPLES / "cli" / "server-framework.socket")
    assert service["Unit"]["Requires"] == "server-framework.socket"
    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv[0].endswith("/server-framework")
    namespace = build_parser().parse_args(argv[1:])
    settings = load_settings(namespace, {}, activated_fds=2).settings
    assert settings.target
    assert not settings.has_listeners()  # the sockets come from systemd
    assert float(service["Service"]["TimeoutStopSec"]) > settings.shutdown_timeout
    assert socket_unit["Socket"].keys() >= {"ListenStream", "ListenDatagram"}


HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WhoAmI(RequestResponseHandler[Any, Any]):
    """Answers with the client's address as the server sees it (through the PROXY header)."""

    async def respond(self, request: Any, client: Any) -> Any:
        return {"peer": list(client.peer_address)}


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
async def test_howto_haproxy_config(backend_name: str) -> None:
    """The deployment guide's haproxy.cfg, on free ports, in front of two PROXY v2 servers."""
    assert HAPROXY is not None
    servers = [
        AsyncTCPServer("127.0.0.1", 0, JSON_LINES, WhoAmI(), proxy_protocol="v2") for _ in range(2)
    ]
    async with serving(servers[0]) as one, serving(servers[1]) as two:
        front = free_port()
        config_text = (EXAMPLES / "howto" / "haproxy.cfg").read_text()
        one_port, two_port = one.get_addresses()[0][1], two.get_addresses()[0][1]
        replacements = {
            "bind :9000": f"bind 127.0.0.1:{front}",
            "server one 127.0.0.1:9101 ": f"server one 127.0.0.1:{one_port} ",
            "server two 127.0.0.1:9102 ": f"server two 127.0.0.1:{two_port} ",
        }
        for documented, ours in replacements.items():
            assert documented in config_text, f"haproxy.cfg changed, update this test: {documented}"
            config_text = config_text.replace(documented, ours)
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "haproxy.cfg"
            config.write_text(config_text)
            check = subprocess.run(
                [HAPROXY, "-c", "-f", str(config)],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert check.returncode == 0, check.stdout + check.stderr
            log = Path(folder) / "haproxy.log"
            with log.open("w") as output:
                process = subprocess.Popen(
                    [HAPROXY, "-db", "-f", str(config)], stdout=output, stderr=output
                )
            try:

                def connect_to_haproxy() -> socket.socket:
                    for attempt in range(50):  # haproxy binds right after it starts
                        if process.poll() is not None:
                            raise AssertionError(f"haproxy exited: {log.read_text()}")
                        try:
                            return socket.create_connection(("127.0.0.1", front), timeout=10)
                        except ConnectionRefusedError:
                            time.sleep(0.01 * (attempt + 1))
                    raise AssertionError(f"haproxy never listened: {log.read_text()}")

                def through_haproxy() -> list[tuple[Any, Any]]:
                    results = []
                    for _ in range(4):  # leastconn spreads them over both servers
                        with contextlib.closing(LineClient(connect_to_haproxy())) as client:
                            client.send("who am i?")
                            results.append((client.recv(), client.sock.getsockname()))
                    return results

                results = await in_thread(through_haproxy)
            finally:
                process.terminate()
                process.wait(10)
    for reply, (host, port) in results:
        assert reply == {"peer": [host, port]}  # the client's own address, not HAProxy's


def test_howto_logging_setup() -> None:
    """The logging example writes JSON lines with the connection's bound context."""
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES.parents[1]), env["PYTHONPATH"]])
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "howto" / "logging_setup.py")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    order = next(record for record in records if record["event"] == "order received")
    assert order["items"] == 2
    assert order["tenant"] == "acme"
    assert order["service"] == "orders"
    assert {"conn_id", "peer", "timestamp", "level"} <= order.keys()


class _Stop(Exception):
    """Raised in a task group to cancel its tasks at the end of a test."""


async def test_quickstart(backend_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The quickstart's own ``main`` (on a free port), until it prints where it serves."""
    backend = current()
    replies: list[Any] = []
    try:
        async with backend.create_task_group() as tasks:
            tasks.start_soon(example("quickstart").main, 0)
            printed = ""
            while "serving on" not in printed:
                await backend.sleep(0.01)
                printed += capsys.readouterr().out
            line = next(line for line in printed.splitlines() if line.startswith("serving on "))
            address = ast.literal_eval(line.removeprefix("serving on "))[0]
            replies = await in_thread(line_exchange, address, [{"hello": 1}, [2]])
            raise _Stop
    except* _Stop:
        pass
    assert replies == [{"hello": 1}, [2]]
