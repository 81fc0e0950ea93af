"""``python -m server_framework serve``, run as a real subprocess and talked to over sockets.

Every server process is started on free ports (``:0``; the "listening" log line says which),
logs JSON, is stopped by signal, and is killed by its pid in the helpers' ``finally`` if a
test fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from protocols import (
    BytesSerializer,
    CBORSerializer,
    DatagramProtocol,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    MsgPackSerializer,
    Serializer,
    StreamProtocol,
    StringSerializer,
)
from server_framework.cli.options import OPTIONS

from cli_helpers import ROOT, ServerProcess, clean_env, cli, run_cli, serving, udp_exchange
from server_helpers import LineClient, connect, line_exchange

pytestmark = pytest.mark.timeout(60)

PROBE = "cli_helpers:ProbeHandler"
ECHO = "server_framework.demo:EchoHandler"
LOCAL = "127.0.0.1:0"


def one_line(process: ServerProcess) -> str:
    """The process's only stderr line (failures are one line, never a traceback wall)."""
    lines = [line for line in process.stderr if line.strip()]
    assert len(lines) == 1, process.output()
    return lines[0]


def one_error(process: ServerProcess) -> dict[str, Any]:
    """The only error record of a process that logs JSON, every line of which is JSON."""
    records = [json.loads(line) for line in process.stderr if line.strip()]
    errors = [record for record in records if record["level"] == "error"]
    assert len(errors) == 1, process.output()
    assert "exception" not in errors[0], process.output()
    return errors[0]


# -- usage and start-up errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["serve", ECHO, "--tcp", "abc"], {}, "--tcp: expected HOST:PORT, got 'abc'"),
        (["serve", ECHO, "--frobnicate"], {}, "unrecognized arguments: --frobnicate"),
        (["serve", ECHO, "--worker", "2"], {}, "(--worker: did you mean --workers?)"),
        (["serve", ECHO, "--tcp", "9000"], {}, "did you mean 127.0.0.1:9000, this machine only"),
        (["serve", ECHO], {"SERVER_FRAMEWORK_WORKERS": "two"}, "SERVER_FRAMEWORK_WORKERS"),
        (["serve"], {}, "TARGET is missing"),
        ([], {}, "the following arguments are required: COMMAND"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    process = run_cli(*args, env=clean_env(**env))
    assert process.process.returncode == 2, process.output()
    line = one_line(process)
    assert line.startswith("server-framework")
    assert expected in line


@contextlib.contextmanager
def busy_port() -> Iterator[str]:
    """A TCP address that is already in use."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["no_such_module:Handler"], 3, "cannot import 'no_such_module': ModuleNotFoundError"),
        (["cli_helpers:Missing"], 3, "'cli_helpers' has no attribute 'Missing'"),
        (["cli_helpers:NOT_A_HANDLER"], 2, "expected a class, an instance or a factory"),
        (["cli_helpers:ServerProcess"], 2, "ServerProcess is not a handlers.base.StreamRequest"),
        (["handlers:EchoHandler", "--udp", LOCAL], 2, "EchoHandler is a stream handler"),
        (["handlers:DatagramEchoHandler"], 2, "DatagramEchoHandler is a datagram handler"),
        (["cli_helpers:async_factory()"], 2, "the factory is a coroutine function"),
        (["cli_helpers:FailingHandler"], 3, "start-up failed: RuntimeError: no database"),
        (["cli_helpers:NoYieldHandler"], 3, "NoYieldHandler.handle must be an async generator"),
        ([ECHO, "--protocol", "cli_helpers:NOT_A_HANDLER"], 2, "--protocol cli_helpers:NOT_A"),
        ([ECHO, "--protocol", "cli_helpers:CRLF_TEXT", "--udp", LOCAL], 2, "a StreamProtocol"),
        ([ECHO, "--tls-cert", "/nonexistent.pem"], 3, "--tls-cert: cannot load /nonexistent"),
        ([ECHO, "--fd", "0"], 3, "--fd 0: not a usable socket"),
        ([ECHO, "--tcp", "BUSY"], 3, "cannot bind: Address already in use"),
        ([ECHO, "--tcp", "host.invalid:1"], 3, "tcp host.invalid:1: cannot bind"),
    ],
)
def test_start_up_failure_is_one_line(args: list[str], code: int, expected: str) -> None:
    with busy_port() as busy:
        args = [busy if arg == "BUSY" else arg for arg in args]
        process = run_cli("serve", *args, "--tcp", LOCAL, "--log-format", "json")
    assert process.process.returncode == code, process.output()
    assert expected in one_error(process)["event"]
    if code == 2 or "import" in expected or "attribute" in expected:
        one_line(process)  # found before anything is bound: nothing else is logged


def test_debug_level_shows_the_traceback() -> None:
    process = run_cli(
        "serve", "no_such_module:X", "--tcp", LOCAL, "--log-format", "json", "--log-level", "debug"
    )
    assert process.process.returncode == 3
    record = json.loads(one_line(process))
    assert "Traceback" in record["exception"]


def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.process.returncode == 0
    assert version.stdout[0].startswith("server-framework ")
    helped = run_cli("serve", "--help")
    assert helped.process.returncode == 0
    assert "--shutdown-timeout" in "\n".join(helped.stdout)


# -- serving and stopping ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_sigterm_finishes_the_request_in_progress(backend: str) -> None:
    with serving(PROBE, "--tcp", LOCAL, "--backend", backend) as server:
        address = server.addresses()[0]
        assert line_exchange(address, ["hi"]) == [{"pid": server.pid, "request": "hi"}]
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send({"sleep": 0.5})
            server.wait_for("request started")
            server.send_signal(signal.SIGTERM)
            assert client.recv() == {"pid": server.pid, "request": {"sleep": 0.5}}
        assert server.wait() == 0
        assert server.find("stopping: finishing requests in progress", signal="SIGTERM")
        assert server.find("stopped")
    with pytest.raises(ConnectionRefusedError):
        connect(address).close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigint_finishes_the_request_in_progress(backend: str) -> None:
    with serving(PROBE, "--tcp", LOCAL, "--backend", backend) as server:
        with contextlib.closing(LineClient(connect(server.addresses()[0]))) as client:
            client.send({"sleep": 0.3})
            server.wait_for("request started")
            server.send_signal(signal.SIGINT)
            assert client.recv()["request"] == {"sleep": 0.3}
        assert server.wait() == 0


@pytest.mark.parametrize("backend", ["uvloop", "trio"])
def test_second_sigint_exits_at_once(backend: str) -> None:
    args = ["--tcp", LOCAL, "--backend", backend, "--shutdown-timeout", "60"]
    with serving(PROBE, *args) as server:
        with contextlib.closing(LineClient(connect(server.addresses()[0]))) as client:
            client.send({"sleep": 60})
            server.wait_for("request started")
            server.send_signal(signal.SIGINT)
            server.wait_for("stopping: finishing requests in progress")
            started = time.monotonic()
            server.send_signal(signal.SIGINT)
            assert server.wait() == 130
        assert time.monotonic() - started < 5
        assert server.find("second SIGINT: exiting without waiting for requests in progress")


def test_grace_period_cancels_requests_still_running() -> None:
    with serving(PROBE, "--tcp", LOCAL, "--shutdown-timeout", "0.3") as server:
        with contextlib.closing(LineClient(connect(server.addresses()[0]))) as client:
            client.send({"sleep": 60})
            server.wait_for("request started")
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert client.recv_eof()
            assert server.wait() == 0
            assert time.monotonic() - started < 5
        assert server.find("cancelling connections still busy after the grace period", count=1)


def test_factory_target_unix_socket_and_cleanup(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with serving("cli_helpers:create_probe()", "--unix", path) as server:
        assert server.addresses("unix") == [path]
        assert line_exchange(path, [1, 2]) == [
            {"pid": server.pid, "request": 1},
            {"pid": server.pid, "request": 2},
        ]
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert not os.path.exists(path)


def test_tcp_and_udp_with_one_handler() -> None:
    with serving(ECHO, "--tcp", LOCAL, "--udp", LOCAL) as server:
        assert line_exchange(server.addresses("tcp")[0], [{"a": 1}]) == [{"a": 1}]
        assert udp_exchange(server.addresses("udp")[0], b'{"b": [2]}\n') == b'{"b":[2]}'
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_demo_with_our_clients() -> None:
    """What ``make serve`` runs, talked to with the framework's own clients."""
    clients = pytest.importorskip("server_framework.clients")
    args = ["--tcp", LOCAL, "--udp", LOCAL, "--protocol", "json"]
    with serving(ECHO, *args) as server:
        stream = StreamProtocol(JSONSerializer())
        with clients.TCPClient(server.addresses("tcp")[0], stream) as client:
            client.send_packet({"hello": 1})
            assert client.recv_packet(timeout=10) == {"hello": 1}
        datagrams = DatagramProtocol(JSONSerializer())
        with clients.UDPClient(server.addresses("udp")[0], datagrams) as client:
            client.send_packet(["udp"])
            assert client.recv_packet(timeout=10) == ["udp"]
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


# -- protocols --------------------------------------------------------------------------------


def exchange(address: Any, protocol: StreamProtocol[Any, Any], messages: list[Any]) -> list[Any]:
    """Send ``messages`` in one write, framed by ``protocol``; return as many replies."""
    with connect(address) as sock:
        sock.sendall(b"".join(protocol.encode(message) for message in messages))
        decoder = protocol.decoder()
        replies: list[Any] = []
        while len(replies) < len(messages):
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            decoder.feed(data)
            replies.extend(decoder)
        return replies


def _protocol_cases() -> list[Any]:
    length_prefixed: Any = LengthPrefixFramer()
    cases: list[tuple[list[str], Serializer[Any, Any], Any, list[Any]]] = [
        ([], JSONSerializer(), LineFramer(), [{"x": [1, 2]}, "two"]),
        (["--protocol", "msgpack"], MsgPackSerializer(), length_prefixed, [{"x": b"\x00\n"}]),
        (["--protocol", "cbor"], CBORSerializer(), length_prefixed, [[1, {"y": None}]]),
        (["--protocol", "text"], StringSerializer(), LineFramer(), ["héllo", "wörld"]),
        (["--protocol", "bytes", "--framing", "crlf"], BytesSerializer(), LineFramer(b"\r\n"),
         [b"PING", b"\xff"]),
        (["--framing", "length-prefix-2"], JSONSerializer(), LengthPrefixFramer(2), [{"a": "\n"}]),
        (["--protocol", "cli_helpers:CRLF_TEXT"], StringSerializer(), LineFramer(b"\r\n"), ["ok"]),
        (["--protocol", "protocols:JSONSerializer", "--framing", "line"], JSONSerializer(),
         LineFramer(), [1.5]),
    ]  # fmt: skip
    return [
        pytest.param(
            args, StreamProtocol(serializer, framer), messages, id=" ".join(args) or "json"
        )
        for args, serializer, framer, messages in cases
    ]


@pytest.mark.parametrize(("args", "protocol", "messages"), _protocol_cases())
def test_protocols(
    args: list[str], protocol: StreamProtocol[Any, Any], messages: list[Any]
) -> None:
    with serving(ECHO, "--tcp", LOCAL, *args) as server:
        assert exchange(server.addresses()[0], protocol, messages) == messages
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_max_frame_size_applies() -> None:
    with serving(ECHO, "--tcp", LOCAL, "--max-frame-size", "32") as server:
        address = server.addresses()[0]
        assert line_exchange(address, ["short"]) == ["short"]
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send("x" * 100)
            assert client.recv_eof()
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_limits_per_client_apply() -> None:
    args = ["--max-connections-per-ip", "1", "--overload", "pause"]
    with serving(
        ECHO, "--tcp", LOCAL, "--udp", LOCAL, *args, "--max-datagram-rate-per-ip", "1"
    ) as server:
        address = server.addresses("tcp")[0]
        with contextlib.closing(LineClient(connect(address))) as first:
            first.send("one")
            assert first.recv() == "one"
            with contextlib.closing(LineClient(connect(address))) as second:
                assert second.recv_eof()  # a second connection from 127.0.0.1: refused
        assert udp_exchange(server.addresses("udp")[0], b'"a"\n') == b'"a"'
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    transitions = [line for line in lines if "max_connections_per_ip" in line["event"]]
    assert [line["event"] for line in transitions] == [
        "max_connections_per_ip reached: refusing this client's new connections",
        "client below max_connections_per_ip again",
    ]
    # About the client address, not the connection whose end happened to cause it.
    assert all("peer" not in line and "conn_id" not in line for line in transitions)


def test_keepalive_and_log_connections_apply() -> None:
    printed = run_cli("serve", ECHO, "--no-keepalive", "--print-config").output()
    assert "keepalive = false" in printed
    args = ["--no-keepalive", "--log-level", "debug"]
    with serving(ECHO, "--tcp", LOCAL, *args, "--no-log-connections") as quiet:
        assert line_exchange(quiet.addresses()[0], ["x"]) == ["x"]
        quiet.send_signal(signal.SIGTERM)
        assert quiet.wait() == 0
    assert "connection accepted" not in quiet.output()
    with serving(ECHO, "--tcp", LOCAL, "--log-level", "debug") as chatty:
        assert line_exchange(chatty.addresses()[0], ["y"]) == ["y"]
        chatty.send_signal(signal.SIGTERM)
        assert chatty.wait() == 0
    assert "connection accepted" in chatty.output()


# -- TLS --------------------------------------------------------------------------------------


def test_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))  # key inside the chain
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with_client_cert = ssl.create_default_context()
    ca.configure_trust(with_client_cert)
    ca.issue_cert("client@example.org").configure_cert(with_client_cert)

    args = ["--tcp", LOCAL, "--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    with serving(ECHO, *args, "--tls-ca", str(ca_file)) as server:
        address = server.addresses()[0]
        assert line_exchange(address, ["secret"], tls=client_context) == ["secret"]
        assert line_exchange(address, ["signed"], tls=with_client_cert) == ["signed"]
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    with serving(ECHO, "--tcp", LOCAL, "--tls-cert", str(cert_file)) as server:
        assert line_exchange(server.addresses()[0], [1], tls=client_context) == [1]
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


# -- inherited sockets ------------------------------------------------------------------------


@contextlib.contextmanager
def bound_sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        yield tcp, udp


def test_inherited_fds() -> None:
    with bound_sockets() as (tcp, udp):
        fds = [tcp.fileno(), udp.fileno()]
        args = ["--fd", str(fds[0]), "--fd", str(fds[1])]
        with serving(ECHO, *args, pass_fds=fds) as server:
            listeners = server.wait_for("listening")["listeners"]
            assert listeners == [
                f"tcp 127.0.0.1:{tcp.getsockname()[1]} (--fd {fds[0]})",
                f"udp 127.0.0.1:{udp.getsockname()[1]} (--fd {fds[1]})",
            ]
            assert line_exchange(tcp.getsockname(), ["via fd"]) == ["via fd"]
            assert udp_exchange(udp.getsockname(), b"[3]") == b"[3]"
            server.send_signal(signal.SIGTERM)
            assert server.wait() == 0


#: Puts the descriptors given in argv[1] at 3, 4... (as systemd does), sets LISTEN_PID to its own
#: pid and LISTEN_FDS, then becomes the server (exec keeps the pid).
SYSTEMD_SHIM = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(moved):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.executable, [sys.executable, "-m", "server_framework", *sys.argv[2:]])
"""


def test_systemd_socket_activation() -> None:
    with bound_sockets() as (tcp, udp):
        fds = [tcp.fileno(), udp.fileno()]
        command = [sys.executable, "-c", SYSTEMD_SHIM, ",".join(map(str, fds)), "serve", PROBE,
                   "--log-format", "json"]  # fmt: skip
        with ServerProcess(command, pass_fds=fds) as server:
            server.wait_for("ready")
            assert server.find("using sockets from systemd socket activation", fds=[3, 4])
            # No default listener was added: only the activated sockets are served.
            assert len(server.wait_for("listening")["listeners"]) == 2
            reply = line_exchange(tcp.getsockname(), ["activated"])
            assert reply == [{"pid": server.pid, "request": "activated"}]
            reply = json.loads(udp_exchange(udp.getsockname(), b'"dgram"'))
            assert reply == {"pid": server.pid, "request": "dgram"}
            server.send_signal(signal.SIGTERM)
            assert server.wait() == 0


def test_server_started_names_each_listener_transport_and_address() -> None:
    with serving(ECHO, "--tcp", LOCAL, "--udp", LOCAL) as server:
        server.wait_for("server started", count=2)
        started = {record["transport"]: record for record in server.find("server started")}
    assert sorted(started) == ["tcp", "udp"]
    for record in started.values():
        (address,) = record["addresses"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address), record


def test_listen_fds_for_another_process_are_ignored() -> None:
    env = clean_env(LISTEN_PID="1", LISTEN_FDS="2")
    process = run_cli("serve", ECHO, "--print-config", env=env)
    assert process.process.returncode == 0, process.output()
    assert 'tcp = ["127.0.0.1:9000"]' in "\n".join(process.stdout)


# -- logs and configuration sources -----------------------------------------------------------


def test_json_logs_carry_connection_ids_and_config_sources_apply(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('log_level = "debug"\nprotocol = "text"\ntarget = "nope:Nope"\n')
    env = clean_env(
        SERVER_FRAMEWORK_CONFIG=str(config),
        SERVER_FRAMEWORK_TCP=LOCAL,
        SERVER_FRAMEWORK_LOG_FORMAT="json",
        SERVER_FRAMEWORK_TARGET=ECHO,  # the environment wins over the file
    )
    with ServerProcess(cli("serve"), env=env) as server:
        server.wait_for("ready")
        address = server.addresses()[0]
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send_raw(b"plain text\n")
            assert client.recv_line() == b"plain text"
        accepted = server.wait_for("connection accepted")
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert isinstance(accepted["conn_id"], int)
    assert accepted["peer"].startswith("127.0.0.1:")
    assert accepted["level"] == "debug"
    for line in server.stderr:
        record = json.loads(line)  # every line is one JSON object
        assert {"timestamp", "level", "event"} <= record.keys()
    assert server.find("connection closed", conn_id=accepted["conn_id"])


# -- the documented examples ------------------------------------------------------------------

EXAMPLES = ROOT / "docs" / "examples" / "cli"


def test_docs_example_app_served_with_its_config_file() -> None:
    command = cli("serve", "--config", "server.toml", "--tcp", LOCAL, "--udp", LOCAL,
                  "--log-format", "json")  # fmt: skip
    with ServerProcess(command, cwd=EXAMPLES) as server:
        server.wait_for("ready")
        tcp, udp = server.addresses("tcp")[0], server.addresses("udp")[0]
        requests = [{"set": "k", "value": [1]}, {"get": "k"}, {"what": 1}]
        replies = line_exchange(tcp, requests)
        assert replies[:2] == [{"ok": True}, {"value": [1]}]
        assert "error" in replies[2]
        assert json.loads(udp_exchange(udp, b'{"get": "k"}')) == {"value": [1]}
        with contextlib.closing(LineClient(connect(tcp))) as client:
            client.send_raw(b"not json\n")
            assert "error" in client.recv()
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_cli_reference_lists_every_option() -> None:
    reference = (EXAMPLES / "README.md").read_text()
    for option in OPTIONS:
        for name in (option.flag, option.env, f"`{option.name}`"):
            assert name in reference, name
