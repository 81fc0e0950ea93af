"""Functional test helpers: run a server in the test's event loop, talk to it over real sockets.

Client-side socket work is blocking code run in a worker thread through the backend's
``run_in_thread``, so it works the same on asyncio, uvloop and trio, over real sockets.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from server_framework.backend import current
from server_framework.servers import AsyncBaseServer

T = TypeVar("T")
ServerT = TypeVar("ServerT", bound=AsyncBaseServer)

#: Every blocking client operation in tests gives up after this long (a hung test fails, fast).
CLIENT_TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def serving(server: ServerT) -> AsyncIterator[ServerT]:
    """Enter ``server``, run ``serve_forever`` in a task, and shut it down on exit."""
    backend = current()
    async with server, backend.create_task_group() as tg:
        tg.start_soon(server.serve_forever)
        try:
            yield server
        finally:
            await server.shutdown()


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking client code in a worker thread."""
    return await current().run_in_thread(fn, *args)


def connect(address: Any, *, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A blocking client socket connected to ``address`` (a ``(host, port)`` or a Unix path)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(address)
    else:
        sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    return sock


class LineClient:
    """A blocking newline-delimited JSON client."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def send(self, *messages: Any) -> None:
        self.sock.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in messages))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_line(self) -> bytes | None:
        """The next line without its newline, or None at EOF."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def recv(self) -> Any:
        line = self.recv_line()
        if line is None:
            raise EOFError("the server closed the connection")
        return json.loads(line)

    def recv_eof(self) -> bool:
        """True if the server closes the connection (after any pending lines)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buffer += chunk
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def line_exchange(
    address: Any, messages: list[Any], tls: ssl.SSLContext | None = None
) -> list[Any]:
    """Connect, send ``messages`` in one write, and return the same number of replies."""
    with contextlib.closing(LineClient(connect(address, tls=tls))) as client:
        client.send(*messages)
        return [client.recv() for _ in messages]
