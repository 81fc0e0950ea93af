"""What the blocking clients share (``_sync_stream``: :class:`TCPClient`,
:class:`UnixStreamClient`; ``_sync_datagram``: :class:`UDPClient`, :class:`UnixDatagramClient`):
`SyncClient`, a non-blocking socket driven by ``poll()``. They connect in ``__init__``; one
client may be shared by threads. The state and the rules shared with the async clients
(usability, errors, the end of an iteration) are `ClientBase`'s (``_client_base``).

Strategy. The socket is non-blocking and every wait is a ``poll()`` on its descriptor with the
time left, instead of a socket timeout, because:

- a socket timeout belongs to the socket, so a receive with a 0.1 s timeout in one thread
  would cut short a long ``sendall`` in another; ``poll()`` gives each call its own deadline;
- ``close()`` from another thread must wake a thread blocked in a receive: it shuts the socket
  down (``poll()`` returns at once), then takes the send and receive locks, so the descriptor is
  closed only once no thread uses it (a closed descriptor number can be reused at once by
  another file: a late ``recv`` on it would read someone else's data).

Sends are serialized by a lock (a frame is written whole before the next one starts), so are
receives (the decoder is not shared between two readers). A send and a receive run in parallel.
A send with a ``timeout`` that passes once part of its frame is written leaves the server with
half a message: the connection is then shut down and unusable, as after a framing error.
With TLS, OpenSSL forbids two threads in one connection object at once, so each non-blocking
SSL call (never a wait) is also made under a small lock.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket as _socket
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self, TypeVar

from ._client_base import ClientBase
from ._common import closed_error, connection_lost_error, unusable_error

__all__ = [
    "WANT_READ",
    "WANT_WRITE",
    "DeadlinePassed",
    "SyncClient",
    "deadline_after",
    "lock_timeout",
    "wait_ready",
]

T = TypeVar("T")

_HAS_POLL = hasattr(select, "poll")
#: What a non-blocking call raises when it must wait: for reading, for writing.
WANT_READ = (BlockingIOError, InterruptedError, _ssl.SSLWantReadError)
WANT_WRITE = _ssl.SSLWantWriteError


class DeadlinePassed(Exception):
    """Internal: a wait reached its deadline (a socket's own TimeoutError means ETIMEDOUT).

    Raised by a send, ``sent`` says how many bytes went out before it.
    """

    def __init__(self, sent: int = 0) -> None:
        super().__init__(sent)
        self.sent = sent


def wait_ready(sock: _socket.socket, writing: bool, deadline: float | None) -> bool:
    """Wait until ``sock`` is readable (or writable), or has an error; False at the deadline."""
    if deadline is None:
        timeout = None
    else:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            return False
    if _HAS_POLL:
        poller = select.poll()
        poller.register(sock, select.POLLOUT if writing else select.POLLIN)
        # Rounded up: a poll() that returns a little early would report a false timeout.
        return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))
    readable, writable, errors = select.select(  # Windows: no poll(), but no fd limit either
        [] if writing else [sock], [sock] if writing else [], [sock], timeout
    )
    return bool(readable or writable or errors)


def deadline_after(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` deadline ``timeout`` seconds from now (None: no deadline)."""
    return None if timeout is None else time.monotonic() + timeout


def lock_timeout(deadline: float | None) -> float:
    """The ``timeout`` argument of ``Lock.acquire`` until ``deadline`` (-1: no limit)."""
    return -1 if deadline is None else max(deadline - time.monotonic(), 0.0)


class SyncClient(ClientBase):
    """A non-blocking socket driven by poll(): thread-safe I/O with deadlines, close from any
    thread (see the module documentation)."""

    __slots__ = ("_recv_lock", "_send_lock", "_ssl_lock", "_state_lock")

    def __init__(self, sock: _socket.socket, *, tls: bool) -> None:
        super().__init__()
        self._connected(sock, sock.getpeername(), sock.getsockname())
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._ssl_lock = threading.Lock() if tls else None
        self._state_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. Idempotent; safe to call from any thread at any time.

        A thread blocked in ``send_packet`` or ``recv_packet`` of this client is woken and gets
        :class:`~server_framework.exceptions.ClosedResourceError`; ``close`` returns once no
        thread uses the socket any more, and the socket is closed. Unsent data still in the
        kernel's buffer is sent; a TLS connection ends without a ``close_notify`` alert (our
        framing already tells a truncated message from a complete one).
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        woken = False
        for lock in (self._recv_lock, self._send_lock):
            if not lock.acquire(blocking=False):
                if not woken:
                    self._shut_down()
                    woken = True
                lock.acquire()
        try:
            self._socket.close()
            self._after_close()
        finally:
            self._send_lock.release()
            self._recv_lock.release()

    def _shut_down(self) -> None:
        """Wake the threads waiting on the socket and tell the server, without closing the
        descriptor (``close()`` does, once no thread uses it)."""
        # The raw shutdown() syscall, also for a TLS socket: ssl.SSLSocket.shutdown() would
        # first drop its SSL object, and a thread still sending would then write plaintext.
        with contextlib.suppress(OSError):
            _socket.socket.shutdown(self._socket, _socket.SHUT_RDWR)

    def _after_close(self) -> None:
        """Release what the subclass holds besides the socket (under both I/O locks)."""

    def _check_usable(self) -> None:
        if self._closed or self._broken is not None:
            raise unusable_error(self._closed, self._broken)

    def _io_error(self, exc: OSError) -> Exception:
        """The error to report for ``exc``, raised by the socket during a send or receive."""
        if self._closed or self._broken is not None:
            # Closed by us, or shut down by us after a framing error.
            return unusable_error(self._closed, self._broken)
        return connection_lost_error(exc)

    def _ssl_call(self, method: Any, arg: Any) -> Any:
        """Call one non-blocking method of the socket (under the SSL lock for TLS)."""
        lock = self._ssl_lock
        if lock is None:
            return method(arg)
        with lock:
            return method(arg)

    def _recv_some(self, size: int, deadline: float | None) -> bytes:
        """One ``recv``, waiting for data until ``deadline``.

        Raises:
            DeadlinePassed: the deadline passed first.
            ClosedResourceError: the client was closed meanwhile.
            OSError: from the socket.
        """
        sock = self._socket
        recv = sock.recv
        while True:
            if self._closed:
                raise closed_error()
            try:
                data: bytes = self._ssl_call(recv, size)
            except WANT_READ:
                writing = False
            except WANT_WRITE:  # a TLS renegotiation or key update wants to write first
                writing = True
            else:
                if self._closed:  # woken by close(): the end of the stream is ours
                    raise closed_error()
                return data
            if not wait_ready(sock, writing, deadline):
                raise DeadlinePassed

    def _send_all(self, data: bytes | bytearray, deadline: float | None = None) -> None:
        """Send all of ``data`` (a non-blocking ``sendall``), waiting until ``deadline``.

        Raises:
            DeadlinePassed: the deadline passed first (``sent``: the bytes written).
            ClosedResourceError: the client was closed meanwhile.
            OSError: from the socket.
        """
        sock = self._socket
        send = sock.send
        with memoryview(data) as view:
            total = len(view)
            sent = 0
            while sent < total:
                if self._closed:
                    raise closed_error()
                try:
                    # After SSLWantWriteError the same bytes are offered again, as OpenSSL
                    # requires.
                    sent += self._ssl_call(send, view[sent:])
                    continue
                except WANT_READ:
                    writing = False
                except WANT_WRITE:
                    writing = True
                if not wait_ready(sock, writing, deadline):
                    raise DeadlinePassed(sent)

    def _iterate(self, receive: Callable[[float | None], T], timeout: float | None) -> Iterator[T]:
        """``iter_received_packets``: ``receive`` until an error that `_ends_iteration`."""
        while True:
            try:
                packet = receive(timeout)
            except (TimeoutError, ConnectionError) as exc:
                if self._ends_iteration(exc):
                    return
                raise
            yield packet
