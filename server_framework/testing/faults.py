"""Misbehaving peers, for testing that a server survives them.

Each helper works on a plain blocking socket to a stream server's address (a ``(host, port)``
or a Unix socket path, as ``served.address`` gives it), is bounded in time (every socket
operation has a timeout, and a helper that waits says how long), and closes the sockets it
opens, whatever happens. They do not check the server: the test does, typically by serving
another client afterwards::

    from server_framework.testing import faults, serve_in_background

    with serve_in_background(EchoHandler(), protocol) as served:
        faults.reset_mid_frame(served.address, protocol.encode({"big": "x" * 1000}))
        with faults.stop_reading(served.address, protocol.encode({"n": 1})):
            assert served.client.request({"n": 2}) == {"n": 2}  # others are still served

In an async test the server runs in the test's own event loop: call these blocking helpers in
a worker thread (``await served.backend.run_in_thread(faults.reset_mid_frame, ...)``), or the
loop cannot serve them.
"""

from __future__ import annotations

import contextlib
import math
import random
import select
import socket
import ssl as _ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from protocols import StreamProtocol
from server_framework.sockets import Address

from ._clients import DEFAULT_TIMEOUT

__all__ = [
    "MAX_TRICKLE_SECONDS",
    "StalledReader",
    "garbage",
    "open_socket",
    "recv_packets",
    "reset",
    "reset_mid_frame",
    "send_raw",
    "stop_reading",
    "trickle",
]

RecvT = TypeVar("RecvT")

#: The longest a `trickle` may be planned to take: a test should not take minutes.
MAX_TRICKLE_SECONDS = 60.0

#: The receive and send buffers `stop_reading` asks for: small, so that the server's replies
#: back up after a few kilobytes instead of the megabytes loopback buffers grow to.
_STALLED_BUFFER = 4096


def open_socket(
    address: Address,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> socket.socket:
    """Return a blocking socket connected to the stream server at ``address``.

    Args:
        address: ``(host, port)`` for TCP, or a Unix socket path.
        ssl: A client-side context to speak TLS (the handshake is done before returning).
        server_hostname: The name to check the certificate against (default: the host).
        timeout: The socket's timeout, for connecting and for every later operation.

    Raises:
        OSError: the connection failed (``TimeoutError`` after ``timeout``).
    """
    sock = _connect(address, timeout)
    if ssl is None:
        return sock
    host = address[0] if isinstance(address, tuple) else "localhost"
    try:
        return ssl.wrap_socket(sock, server_hostname=server_hostname or host)
    except BaseException:
        sock.close()
        raise


def _connect(address: Address, timeout: float, buffer_size: int | None = None) -> socket.socket:
    target: Any = address
    if isinstance(address, str):
        family = socket.AF_UNIX
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if buffer_size is not None:  # before connecting: the TCP window is agreed then
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
        sock.settimeout(timeout)
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def trickle(sock: socket.socket, data: bytes, *, chunk_size: int = 1, delay: float = 0.001) -> None:
    """Send ``data`` a few bytes at a time, sleeping ``delay`` seconds between chunks.

    A slow client, or a request split at every possible byte: the server must put it back
    together (and its ``frame_timeout`` must allow for the whole trickle).

    Args:
        sock: A connected socket (see `open_socket`); it stays open.
        data: The bytes to send.
        chunk_size: Bytes per send.
        delay: Seconds between two sends.

    Raises:
        ValueError: ``chunk_size`` < 1, ``delay`` < 0, or the trickle would take longer than
            `MAX_TRICKLE_SECONDS`.
        OSError: the server closed or reset the connection meanwhile.
    """
    if chunk_size < 1 or delay < 0:
        raise ValueError(f"need chunk_size >= 1 and delay >= 0, got {chunk_size} and {delay}")
    chunks = math.ceil(len(data) / chunk_size)
    if (chunks - 1) * delay > MAX_TRICKLE_SECONDS:
        raise ValueError(
            f"trickling {len(data)} bytes {chunk_size} at a time every {delay} s takes longer "
            f"than {MAX_TRICKLE_SECONDS} s: send bigger chunks or wait less"
        )
    for index in range(chunks):
        if index and delay:
            time.sleep(delay)
        sock.sendall(data[index * chunk_size : (index + 1) * chunk_size])


def reset(sock: socket.socket) -> None:
    """Close ``sock`` abortively: a TCP reset (RST) instead of an orderly close (FIN).

    ``SO_LINGER`` with a zero timeout makes ``close()`` drop unsent data and send a reset;
    the server's next read or write on the connection fails with ``ECONNRESET``. Unix sockets
    have no reset: the server sees the connection closed.
    """
    with contextlib.suppress(OSError):  # Unix sockets ignore SO_LINGER; some refuse it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def reset_mid_frame(
    address: Address,
    frame: bytes,
    *,
    cut: int | None = None,
    ssl: _ssl.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Connect, send the first ``cut`` bytes of ``frame``, then reset the connection.

    The server holds part of a request when the connection breaks (or sees the reset first,
    if it comes before it read the bytes): it must drop the connection and go on serving.

    Args:
        address: The server's address.
        frame: A whole encoded request (``protocol.encode(request)``).
        cut: How many bytes to send, ``0 < cut < len(frame)`` (default: half of them).
        ssl: A client-side context, to break a TLS connection after the handshake.
        timeout: Socket timeout, for connecting and sending.

    Raises:
        ValueError: ``cut`` is not inside the frame.
        OSError: the connection failed.
    """
    cut = len(frame) // 2 if cut is None else cut
    if not 0 < cut < len(frame):
        raise ValueError(f"cut must be in 1..{len(frame) - 1} to break a frame, got {cut}")
    sock = open_socket(address, ssl=ssl, timeout=timeout)
    try:
        sock.sendall(frame[:cut])
    finally:
        reset(sock)


@dataclass(frozen=True, slots=True)
class StalledReader:
    """What `stop_reading` did: the socket it holds open, and how far it got.

    Attributes:
        sock: The connection, non-blocking, never read from (closed when the block exits).
        bytes_sent: The bytes of requests the kernel accepted before it stopped taking more.
        stalled: True if sending stopped because nothing more was accepted for ``settle``
            seconds (the server stopped reading: its replies are backed up); False if
            ``max_bytes`` or ``timeout`` was reached first.
    """

    sock: socket.socket
    bytes_sent: int
    stalled: bool


@contextlib.contextmanager
def stop_reading(
    address: Address,
    request: bytes,
    *,
    max_bytes: int = 64 * 1024 * 1024,
    settle: float = 0.2,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[StalledReader]:
    """A client that sends requests without end and never reads a reply, held for a block.

    It connects with small socket buffers, sends ``request`` over and over until the kernel
    accepts nothing more for ``settle`` seconds (the server's replies have nowhere to go, so it
    stopped reading) or ``max_bytes`` are sent or ``timeout`` seconds pass, then yields.
    Inside the block the connection stays stalled: check that the server serves others
    meanwhile. On exit the connection is reset.

    Args:
        address: The server's address (TCP or Unix stream).
        request: One encoded request (``protocol.encode(request)``), sent repeatedly.
        max_bytes: Stop sending after this many bytes.
        settle: Seconds without progress that count as "the server stopped reading".
        timeout: The longest time spent sending.

    Yields:
        A `StalledReader`.

    Raises:
        ValueError: ``request`` is empty.
        OSError: the connection failed, or the server closed it while we were sending.
    """
    if not request:
        raise ValueError("request must not be empty")
    sock = _connect(address, timeout, buffer_size=_STALLED_BUFFER)
    try:
        sock.setblocking(False)
        batch = memoryview(request * max(1, 65536 // len(request)))
        offset = sent = 0
        stalled = False
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        while sent < max_bytes and time.monotonic() < deadline:
            try:
                count = sock.send(batch[offset:])
            except BlockingIOError:
                if not poller.poll(settle * 1000):
                    stalled = True
                    break
                continue
            sent += count
            offset = (offset + count) % len(batch)
        yield StalledReader(sock, sent, stalled)
    finally:
        reset(sock)


def send_raw(
    address: Address,
    data: bytes,
    *,
    half_close: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = 1024 * 1024,
) -> bytes:
    """Connect, send ``data`` as is, and return what the server sends until it closes.

    For bytes no client would send (see `garbage`), and for half-closed connections: with
    ``half_close`` the sending side is shut down after ``data`` (the server reads end-of-file
    and should answer what it got, then close).

    Args:
        address: The server's address (TCP or Unix stream).
        data: The bytes to send.
        half_close: Shut down our sending side after ``data``.
        timeout: The longest wait for the server to close the connection.
        max_bytes: Stop reading (and return) after this many bytes.

    Returns:
        The bytes received before the server closed (or reset) the connection.

    Raises:
        TimeoutError: the server did not close the connection within ``timeout``.
        OSError: the connection failed.
    """
    deadline = time.monotonic() + timeout
    with _connect(address, timeout) as sock:
        with contextlib.suppress(ConnectionError):  # it may close before reading it all
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while len(received) < max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"the server did not close the connection within {timeout} s "
                    f"(it sent {len(received)} bytes)"
                )
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                continue  # the deadline check above raises
            if not chunk:
                break
            received += chunk
        return bytes(received)


def garbage(size: int = 4096, *, seed: int = 0) -> bytes:
    """Return ``size`` pseudo-random bytes, the same for the same ``seed`` (for `send_raw`)."""
    return random.Random(seed).randbytes(size)


def recv_packets(
    sock: socket.socket,
    protocol: StreamProtocol[Any, RecvT],
    count: int = 1,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[RecvT]:
    """Read from ``sock`` until ``count`` messages are decoded with ``protocol``; return them.

    For the replies to what a test sent by hand (`trickle`). Bytes that arrive after the
    ``count``-th message in the same read are dropped: ask for every message you expect.

    Args:
        sock: A connected blocking socket.
        protocol: The protocol, as the client sees it (it decodes the server's replies).
        count: How many messages to return.
        timeout: The longest wait for all of them.

    Raises:
        TimeoutError: fewer than ``count`` messages arrived within ``timeout``.
        ConnectionError: the server closed the connection first.
        ProtocolError: the server's bytes do not decode.
    """
    decoder = protocol.decoder()
    messages: list[RecvT] = []
    deadline = time.monotonic() + timeout
    previous_timeout = sock.gettimeout()
    try:
        while True:
            messages.extend(decoder)
            if len(messages) >= count:
                return messages[:count]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(messages)} of {count} messages within {timeout} s")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue  # the deadline check above raises
            if not chunk:
                raise ConnectionError(
                    f"the server closed the connection after {len(messages)} of {count} messages"
                )
            decoder.feed(chunk)
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous_timeout)
