"""Blocking clients: :class:`TCPClient`, :class:`UnixStreamClient`, :class:`UDPClient`,
:class:`UnixDatagramClient`. They connect in ``__init__``; one client may be shared by threads.

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
With TLS, OpenSSL forbids two threads in one connection object at once, so each non-blocking
SSL call (never a wait) is also made under a small lock.

A stream client reads up to 64 KiB at a time and keeps whatever complete messages that brought
in its decoder: the next ``recv_packet`` returns one of them without a system call.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket as _socket
import ssl as _ssl
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from protocols import DatagramProtocol, FramingError, StreamDecoder, StreamProtocol
from server_framework.sockets import Address, SocketProxy, normalize_address

from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    MAX_DATAGRAM_SIZE,
    RECEIVE_SIZE,
    bind_unix_datagram,
    check_timeout,
    closed_error,
    connect_error,
    connect_timeout_error,
    connection_lost_error,
    datagram_error,
    describe,
    peer_closed_error,
    receive_timeout_error,
    resolve,
    unlink_quietly,
)

__all__ = ["TCPClient", "UDPClient", "UnixDatagramClient", "UnixStreamClient"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")

_HAS_POLL = hasattr(select, "poll")
# What a non-blocking call raises when it must wait: (for reading, for writing).
_WANT_READ = (BlockingIOError, InterruptedError, _ssl.SSLWantReadError)
_WANT_WRITE = _ssl.SSLWantWriteError


class _DeadlinePassed(Exception):
    """Internal: a wait reached its deadline (a socket's own TimeoutError means ETIMEDOUT)."""


def _wait(sock: _socket.socket, writing: bool, deadline: float | None) -> bool:
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


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _lock_timeout(deadline: float | None) -> float:
    return -1 if deadline is None else max(deadline - time.monotonic(), 0.0)


class _SyncClient:
    """A non-blocking socket driven by poll(): thread-safe I/O with deadlines, close from any
    thread (see the module documentation)."""

    __slots__ = (
        "_closed",
        "_local",
        "_peer",
        "_recv_lock",
        "_send_lock",
        "_sock",
        "_ssl_lock",
        "_state_lock",
    )

    def __init__(self, sock: _socket.socket, *, tls: bool) -> None:
        # Per connection, for its whole life.
        self._sock = sock
        self._peer = normalize_address(sock.getpeername())
        self._local = normalize_address(sock.getsockname())
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._ssl_lock = threading.Lock() if tls else None
        self._state_lock = threading.Lock()
        # Changes once.
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def peer_address(self) -> Address:
        """The server's address: ``(host, port)``, or the socket path for Unix sockets."""
        return self._peer

    @property
    def local_address(self) -> Address:
        """This end's address: ``(host, port)``, or a path (``""`` if unnamed) for Unix sockets."""
        return self._local

    @property
    def socket(self) -> SocketProxy:
        """The client's socket, for options such as ``SO_KEEPALIVE`` (see ``SocketProxy``)."""
        return SocketProxy(self._sock)

    def is_closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

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
                    self._wake_waiters()
                    woken = True
                lock.acquire()
        try:
            self._sock.close()
            self._after_close()
        finally:
            self._send_lock.release()
            self._recv_lock.release()

    def _wake_waiters(self) -> None:
        # The raw shutdown() syscall, also for a TLS socket: ssl.SSLSocket.shutdown() would
        # first drop its SSL object, and a thread still sending would then write plaintext.
        with contextlib.suppress(OSError):
            _socket.socket.shutdown(self._sock, _socket.SHUT_RDWR)

    def _after_close(self) -> None:
        """Release what the subclass holds besides the socket (under both I/O locks)."""

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
            _DeadlinePassed: the deadline passed first.
            ClosedResourceError: the client was closed meanwhile.
            OSError: from the socket.
        """
        sock = self._sock
        recv = sock.recv
        while True:
            if self._closed:
                raise closed_error()
            try:
                data: bytes = self._ssl_call(recv, size)
            except _WANT_READ:
                writing = False
            except _WANT_WRITE:  # a TLS renegotiation or key update wants to write first
                writing = True
            else:
                if self._closed:  # woken by close(): the end of the stream is ours
                    raise closed_error()
                return data
            if not _wait(sock, writing, deadline):
                raise _DeadlinePassed

    def _send_all(self, data: bytes | bytearray) -> None:
        """Send all of ``data`` (a non-blocking ``sendall``), waiting as long as needed.

        Raises:
            ClosedResourceError: the client was closed meanwhile.
            OSError: from the socket.
        """
        sock = self._sock
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
                except _WANT_READ:
                    writing = False
                except _WANT_WRITE:
                    writing = True
                _wait(sock, writing, None)

    def _io_error(self, exc: OSError) -> Exception:
        """The error to report for ``exc``, raised by the socket during a send or receive."""
        if self._closed:
            return closed_error()
        return connection_lost_error(exc)


class _SyncStreamClient(_SyncClient, Generic[SendT, RecvT]):
    """What :class:`TCPClient` and :class:`UnixStreamClient` share."""

    __slots__ = ("_broken", "_decoder", "_eof", "_protocol")

    def __init__(
        self, sock: _socket.socket, protocol: StreamProtocol[SendT, RecvT], *, tls: bool
    ) -> None:
        super().__init__(sock, tls=tls)
        self._protocol = protocol
        self._decoder: StreamDecoder[RecvT] = protocol.decoder()
        # Set once, by the receiving thread; the senders only read them.
        self._eof = False
        self._broken: str | None = None

    def send_packet(self, packet: SendT) -> None:
        """Serialize, frame and send ``packet``; return once the kernel has all of it.

        Threads may send at the same time: frames are sent whole, one after the other. A send
        waits as long as the server does not read (there is no send timeout); ``close()`` from
        another thread ends the wait.

        Raises:
            SerializeError: ``packet`` cannot be serialized (nothing was sent).
            ConnectionError: the server closed or broke the connection, or an earlier framing
                error made the connection unusable.
            ClosedResourceError: the client is closed.
        """
        self._send_locked(self._protocol.encode(packet))

    def _send_locked(self, data: bytes | bytearray) -> None:
        with self._send_lock:
            self._check_usable()
            if self._eof:
                raise peer_closed_error()
            try:
                self._send_all(data)
            except OSError as exc:
                raise self._io_error(exc) from exc

    def send_packets(self, packets: Iterable[SendT]) -> None:
        """Serialize and frame every packet into one buffer, and send it in one go.

        For pipelined requests: one system call for the batch instead of one per packet; the
        batch is never interleaved with other threads' frames.

        Args:
            packets: The packets, sent in this order.

        Raises:
            SerializeError: a packet cannot be serialized (nothing was sent).
            ConnectionError, ClosedResourceError: as :meth:`send_packet`.
        """
        buffer = bytearray()
        encode_into = self._protocol.encode_into
        for packet in packets:
            encode_into(packet, buffer)
        self._send_locked(buffer)

    def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the next message from the server.

        A message already received (several arrive in one read when the server answers
        pipelined requests) is returned without a system call.

        Args:
            timeout: Seconds to wait for it (``None``: no limit; ``0``: only what the kernel
                has already received). Waiting for another thread's receive counts.

        Raises:
            TimeoutError: nothing arrived within ``timeout``; the client is still usable, and
                a partly received message is kept for the next call.
            DeserializeError: the next message is invalid; it was consumed and the client is
                still usable (the next call returns the message after it).
            FramingError: the stream cannot be split into messages any more (for example,
                :class:`~protocols.FrameTooLargeError`). The connection is shut down and every
                later call raises ``ConnectionError``.
            ConnectionError: the server closed the connection (after every message it sent
                was returned) or broke it.
            ClosedResourceError: the client is closed (before or during the call).
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        deadline = _deadline(timeout)
        if not self._recv_lock.acquire(timeout=_lock_timeout(deadline)):
            raise receive_timeout_error(timeout)
        try:
            decoder = self._decoder
            while True:
                self._check_usable()
                try:
                    return next(decoder)
                except StopIteration:
                    pass
                except FramingError as exc:
                    self._break(exc)
                    raise
                if self._eof:
                    raise peer_closed_error(decoder.buffered)
                try:
                    data = self._recv_some(RECEIVE_SIZE, deadline)
                except _DeadlinePassed:
                    raise receive_timeout_error(timeout) from None
                except OSError as exc:
                    raise self._io_error(exc) from exc
                if data:
                    decoder.feed(data)
                else:
                    self._eof = True
        finally:
            self._recv_lock.release()

    def iter_received_packets(self, timeout: float | None = None) -> Iterator[RecvT]:
        """Iterate over the messages from the server, until it closes the connection or until
        ``timeout`` seconds pass without a message.

        Args:
            timeout: The longest wait for each message (``None``, the default: until the server
                closes the connection; ``0``: only the messages already received).

        Raises:
            DeserializeError, FramingError, ConnectionError, ClosedResourceError: as
                :meth:`recv_packet` (``ConnectionError`` only for a broken connection: a
                closed one ends the iteration). After a ``DeserializeError`` the iteration is
                over, but the client is usable: iterate again for the following messages.
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        return self._iterate(timeout)

    def _iterate(self, timeout: float | None) -> Iterator[RecvT]:
        while True:
            try:
                packet = self.recv_packet(timeout)
            except TimeoutError:
                return
            except ConnectionError:
                if self._eof and self._broken is None:
                    return
                raise
            yield packet

    def _check_usable(self) -> None:
        if self._closed:
            raise closed_error()
        if self._broken is not None:
            raise ConnectionError(self._broken)

    def _io_error(self, exc: OSError) -> Exception:
        if self._broken is not None and not self._closed:
            return ConnectionError(self._broken)  # our own shutdown after a framing error
        return super()._io_error(exc)

    def _break(self, exc: FramingError) -> None:
        self._broken = (
            "the connection is unusable: the server sent bytes that cannot be split into "
            f"messages ({type(exc).__name__}: {exc})"
        )
        self._wake_waiters()  # tells the server at once; the descriptor is freed by close()


class TCPClient(_SyncStreamClient[SendT, RecvT]):
    """A blocking TCP client (TLS with ``ssl=``), safe to share between threads.

    The connection is made in the constructor; use the client as a context manager (or call
    :meth:`close`). ``TCP_NODELAY`` is set: small requests are not held back.

    Args:
        address: The server's ``(host, port)``; a host name is resolved, and its addresses
            are tried in turn.
        protocol: The protocol seen from the client's side: it encodes requests (``SendT``)
            and decodes responses (``RecvT``).
        ssl: A client-side :class:`ssl.SSLContext` to speak TLS (for example
            ``ssl.create_default_context()``).
        server_hostname: The name checked against the server's certificate (default: the
            host of ``address``). Only with ``ssl``.
        connect_timeout: Seconds allowed for the TCP connection, then as much again at most
            for the TLS handshake; ``None`` for no limit.

    Raises:
        TimeoutError: the connection or the TLS handshake took longer than ``connect_timeout``.
        OSError: the connection failed (``ConnectionRefusedError``, ``socket.gaierror``...,
            with the address in the message).
        ssl.SSLError: the TLS handshake failed (for example, an untrusted certificate).
        ValueError: ``connect_timeout`` is negative, or ``server_hostname`` without ``ssl``.

    Example::

        protocol = StreamProtocol(JSONSerializer())
        with TCPClient(("localhost", 9000), protocol) as client:
            client.send_packet({"hello": "world"})
            print(client.recv_packet(timeout=5))
    """

    __slots__ = ()

    def __init__(
        self,
        address: tuple[str, int],
        protocol: StreamProtocol[SendT, RecvT],
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        _check_stream_protocol(protocol)
        check_timeout(connect_timeout, "connect_timeout")
        if server_hostname is not None and ssl is None:
            raise ValueError("server_hostname is only meaningful with ssl")
        host, port = address
        try:
            sock = _socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError:
            raise connect_timeout_error(address, connect_timeout) from None
        except OSError as exc:
            raise connect_error(exc, address) from exc
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if ssl is not None:
                sock = ssl.wrap_socket(
                    sock,
                    server_hostname=host if server_hostname is None else server_hostname,
                    do_handshake_on_connect=False,
                )
                _handshake(sock, address, connect_timeout)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, protocol, tls=ssl is not None)

    def __repr__(self) -> str:
        return f"<TCPClient peer={self._peer!r} closed={self._closed}>"


def _handshake(sock: _ssl.SSLSocket, address: Any, timeout: float | None) -> None:
    deadline = _deadline(timeout)
    while True:
        try:
            sock.do_handshake()
            return
        except _ssl.SSLWantReadError:
            ready = _wait(sock, False, deadline)
        except _ssl.SSLWantWriteError:
            ready = _wait(sock, True, deadline)
        except _ssl.SSLError:
            raise
        except OSError as exc:  # the server reset or closed the connection
            raise connect_error(exc, address) from exc
        if not ready:
            raise TimeoutError(
                f"the TLS handshake with {describe(address)} did not complete within "
                f"connect_timeout={timeout} s"
            )


class UnixStreamClient(_SyncStreamClient[SendT, RecvT]):
    """A blocking Unix stream socket client, safe to share between threads.

    The same API as :class:`TCPClient`; the connection is made in the constructor.

    Args:
        path: The server's socket path.
        protocol: The protocol seen from the client's side (see :class:`TCPClient`).
        connect_timeout: Seconds allowed to connect; ``None`` for no limit.

    Raises:
        TimeoutError: the connection took longer than ``connect_timeout``.
        OSError: the connection failed (``FileNotFoundError``, ``ConnectionRefusedError``...,
            with the path in the message).
        ValueError: ``connect_timeout`` is negative.
    """

    __slots__ = ()

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: StreamProtocol[SendT, RecvT],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        _check_stream_protocol(protocol)
        check_timeout(connect_timeout, "connect_timeout")
        path = os.fspath(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            try:
                sock.connect(path)
            except TimeoutError:
                raise connect_timeout_error(path, connect_timeout) from None
            except OSError as exc:
                raise connect_error(exc, path) from exc
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, protocol, tls=False)

    def __repr__(self) -> str:
        return f"<UnixStreamClient peer={self._peer!r} closed={self._closed}>"


def _check_stream_protocol(protocol: object) -> None:
    if not isinstance(protocol, StreamProtocol):
        raise TypeError(f"expected a StreamProtocol, got {protocol!r}")


def _check_datagram_protocol(protocol: object) -> None:
    if not isinstance(protocol, DatagramProtocol):
        raise TypeError(f"expected a DatagramProtocol, got {protocol!r}")


class _SyncDatagramClient(_SyncClient, Generic[SendT, RecvT]):
    """What :class:`UDPClient` and :class:`UnixDatagramClient` share."""

    __slots__ = ("_protocol",)

    def __init__(self, sock: _socket.socket, protocol: DatagramProtocol[SendT, RecvT]) -> None:
        super().__init__(sock, tls=False)
        self._protocol = protocol

    def send_packet(self, packet: SendT) -> None:
        """Serialize ``packet`` and send it to the server as one datagram.

        Raises:
            SerializeError: ``packet`` cannot be serialized (nothing was sent).
            ConnectionRefusedError: the server was found unreachable (by an earlier
                datagram: nothing listens there); the client is still usable.
            OSError: the datagram is too large (``EMSGSIZE``), or another socket error.
            ClosedResourceError: the client is closed.
        """
        data = self._protocol.encode(packet)
        sock = self._sock
        with self._send_lock:
            while True:
                if self._closed:
                    raise closed_error()
                try:
                    sock.send(data)
                    return
                except _WANT_READ:
                    pass
                except OSError as exc:
                    if self._closed:
                        raise closed_error() from exc
                    error = datagram_error(exc, self._peer)
                    if error is None:
                        raise
                    raise error from exc
                _wait(sock, True, None)

    def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the message in the next datagram from the server.

        Args:
            timeout: Seconds to wait for it (``None``: no limit; ``0``: only a datagram the
                kernel has already received). Waiting for another thread's receive counts.

        Raises:
            TimeoutError: nothing arrived within ``timeout``; the client is still usable.
            DeserializeError: the datagram is not a valid message; the client is still usable.
            ConnectionRefusedError: the server is unreachable (nothing listens there); the
                client is still usable.
            ClosedResourceError: the client is closed (before or during the call).
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        deadline = _deadline(timeout)
        if not self._recv_lock.acquire(timeout=_lock_timeout(deadline)):
            raise receive_timeout_error(timeout, "datagram")
        try:
            try:
                data = self._recv_some(MAX_DATAGRAM_SIZE, deadline)
            except _DeadlinePassed:
                raise receive_timeout_error(timeout, "datagram") from None
            except OSError as exc:
                if self._closed:
                    raise closed_error() from exc
                error = datagram_error(exc, self._peer)
                if error is None:
                    raise
                raise error from exc
        finally:
            self._recv_lock.release()
        return self._protocol.decode(data)

    def iter_received_packets(self, timeout: float | None = None) -> Iterator[RecvT]:
        """Iterate over the messages from the server until ``timeout`` seconds pass without one.

        Args:
            timeout: The longest wait for each datagram (``None``, the default: for ever, until
                an error; ``0``: only the datagrams already received).

        Raises:
            DeserializeError, ConnectionRefusedError, ClosedResourceError: as
                :meth:`recv_packet`; the iteration is then over, the client still usable.
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        return self._iterate(timeout)

    def _iterate(self, timeout: float | None) -> Iterator[RecvT]:
        while True:
            try:
                packet = self.recv_packet(timeout)
            except TimeoutError:
                return
            yield packet


def _connect_datagram(sock: _socket.socket, address: Any) -> None:
    try:
        sock.connect(address)
    except OSError as exc:
        raise connect_error(exc, address) from exc


class UDPClient(_SyncDatagramClient[SendT, RecvT]):
    """A blocking UDP client, safe to share between threads.

    The socket is connected to the server's address, so only the server's datagrams are
    received, and the kernel reports an unreachable server (``ConnectionRefusedError`` on a
    later call). There is no connection to wait for: the constructor only resolves the address.

    Args:
        address: The server's ``(host, port)``; the first address a host name resolves to
            is used.
        protocol: The datagram protocol seen from the client's side: it encodes requests
            (``SendT``) and decodes responses (``RecvT``).
        local_address: ``(host, port)`` to bind the client's socket to (default: any
            interface, a port chosen by the kernel).

    Raises:
        OSError: the address does not resolve, or the socket cannot be bound or connected.

    Example::

        with UDPClient(("127.0.0.1", 9000), DatagramProtocol(JSONSerializer())) as client:
            client.send_packet({"ping": 1})
            print(client.recv_packet(timeout=1.0))
    """

    __slots__ = ()

    def __init__(
        self,
        address: tuple[str, int],
        protocol: DatagramProtocol[SendT, RecvT],
        *,
        local_address: tuple[str, int] | None = None,
    ) -> None:
        _check_datagram_protocol(protocol)
        host, port = address
        try:
            family, sockaddr = resolve(host, port, _socket.SOCK_DGRAM)[0]
        except OSError as exc:
            raise connect_error(exc, address) from exc
        sock = _socket.socket(family, _socket.SOCK_DGRAM)
        try:
            if local_address is not None:
                sock.bind(local_address)
            _connect_datagram(sock, sockaddr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, protocol)

    def __repr__(self) -> str:
        return f"<UDPClient peer={self._peer!r} closed={self._closed}>"


class UnixDatagramClient(_SyncDatagramClient[SendT, RecvT]):
    """A blocking Unix datagram socket client, safe to share between threads.

    A Unix datagram server can only answer a peer bound to a path: the client binds one,
    ``local_path`` or a fresh file in the temporary directory, and removes it on :meth:`close`.
    Its socket is connected to the server's, so only the server's datagrams are received.

    Args:
        path: The server's socket path.
        protocol: The datagram protocol seen from the client's side (see :class:`UDPClient`).
        local_path: The path to bind (it must not exist); default: a new temporary path.

    Raises:
        OSError: the server's path is not a socket in use (``FileNotFoundError``,
            ``ConnectionRefusedError``), or ``local_path`` cannot be bound.
    """

    __slots__ = ("_path",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: DatagramProtocol[SendT, RecvT],
        *,
        local_path: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_datagram_protocol(protocol)
        server_path = os.fspath(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        bound: str | None = None
        try:
            bound = bind_unix_datagram(sock, None if local_path is None else os.fspath(local_path))
            _connect_datagram(sock, server_path)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            if bound is not None:
                unlink_quietly(bound)
            raise
        self._path = bound
        super().__init__(sock, protocol)

    def _after_close(self) -> None:
        unlink_quietly(self._path)

    def __repr__(self) -> str:
        return f"<UnixDatagramClient peer={self._peer!r} closed={self._closed}>"
