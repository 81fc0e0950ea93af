"""Logging under attack: a full pipe must not stop the server, peers must not forge log lines.

Issue 12: with logging left unconfigured by the program (no ``configure_logging()`` call), the
framework writes INFO and above only (no per-connection debug lines) to stderr, never blocks the
loop on a full pipe, and console output escapes control characters in peer-controlled text
(CR, LF, ESC shown as ``\\xNN``), one record per line.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from pathlib import Path

import pytest

from reliability_helpers import (
    Servers,
    connect,
    exchange,
    over_loops,
    recv_line,
    server_spec,
)

#: Log lines the servers write per connection, at DEBUG level.
PER_CONNECTION = ("connection accepted", "connection closed")


@over_loops()
def test_unread_pipes_do_not_stop_the_server(servers: Servers, loop: str) -> None:
    """Logging unconfigured, stdout and stderr pipes that nobody reads: 1000 connections served.

    Measured before the fix: the server stops answering after about 340 connections (its
    per-connection debug lines fill the stdout pipe, and the write blocks the loop).
    """
    server = servers.start(loop, server_spec("Echo"), logging="none", output="unread")
    address = server.address()
    for index in range(1000):
        try:
            assert exchange(address, index, timeout=2.0) == index
        except OSError as exc:
            raise AssertionError(f"connection {index} was not served: {exc!r}") from exc


@over_loops()
def test_unconfigured_logging_writes_info_and_above_to_stderr(servers: Servers, loop: str) -> None:
    """Measured before the fix: structlog's default wrote every level, per-connection debug
    lines included, to stdout, and nothing to stderr."""
    server = servers.start(loop, server_spec("Echo"), logging="none")
    address = server.address()
    for index in range(5):
        assert exchange(address, index) == index
    assert server.stop() == 0
    stderr = server.stderr_text()
    assert any("server started" in text for text in stderr), stderr
    assert not [text for text in stderr if any(event in text for event in PER_CONNECTION)]
    assert server.stdout_lines == [str(server.ports()[0])]  # the program's own line only


#: Peer-controlled text with a CR, an LF and ESC sequences, forging a record after the LF.
FORGED = "forged record"
INJECTION = f"GET\r\n2026-01-01 00:00:00 [critical ] {FORGED}\x1b[2K\x1b[31mred\x1b[0m"
#: How CR, LF and ESC must show: as \xNN in console output; left unconfigured, the framework
#: may pick JSON when stderr is not a terminal, whose own escapes (\r, \n, \u001b) are as safe.
ESCAPED = {
    "console": ((r"\x0d",), (r"\x0a",), (r"\x1b",)),
    "none": ((r"\x0d", r"\r", r"\u000d"), (r"\x0a", r"\n", r"\u000a"), (r"\x1b", r"\u001b")),
}


@pytest.mark.parametrize(
    "logging", [pytest.param("console", id="console"), pytest.param("none", id="unconfigured")]
)
@over_loops()
def test_peer_text_cannot_forge_log_records(
    servers: Servers, workdir: Path, loop: str, logging: str
) -> None:
    """Peer text with CR/LF/ESC: one record per line, control characters escaped.

    Three ways peer text reaches a log line: a handler logging a request (a value), the path a
    Unix peer bound (the connection's log context) and a bad message (the error's excerpt).

    Measured before the fix: console output showed CR and LF as ``\\r`` and ``\\n`` (structlog's
    repr), and unconfigured logging wrote to stdout.
    """
    unix_path = str(workdir / "server.sock")
    server = servers.start(
        loop,
        server_spec("LogsCommand", protocol="text-length"),
        server_spec("Echo", transport="unix", path=unix_path),
        logging=logging,
    )
    with contextlib.closing(connect(server.address())) as sock:
        payload = INJECTION.encode()
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        assert sock.recv(100).endswith(b"logged")
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as sock:
        sock.bind(str(workdir / f"peer{INJECTION}"))
        sock.settimeout(10.0)
        sock.connect(unix_path)
        sock.sendall(b'{"bad": "\r\x1b[31m' + FORGED.encode() + b"\n")  # not JSON: closed
        assert recv_line(sock, bytearray()) is None
    assert server.stop() == 0
    stderr = server.stderr_text()
    text = "\n".join(stderr)
    assert "\r" not in text
    assert "\x1b" not in text
    forged = [entry for entry in stderr if FORGED in entry]
    # Each injection stayed inside its record: the handler's, and the bad message's (with the
    # peer's path in its context); no line starts with the forged text.
    assert len(forged) == 2, stderr
    assert any("unknown command" in entry for entry in forged), forged
    assert any("bad message" in entry for entry in forged), forged
    for entry in forged:
        for forms in ESCAPED[logging]:
            assert any(re.search(re.escape(form), entry, re.IGNORECASE) for form in forms), (
                forms,
                entry,
            )
