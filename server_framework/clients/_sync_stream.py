"""Blocking stream clients: :class:`TCPClient` (TLS with ``ssl=``) and :class:`UnixStreamClient`
(see ``_sync_base`` for the design: a non-blocking socket, ``poll()`` with per-call deadlines).
``from_socket`` makes either from a socket connected elsewhere.

Connecting happens in the constructor. TCP: the host name is resolved (blocking), then its
addresses are raced as RFC 8305 says ("happy eyeballs", :func:`_race`): non-blocking
``connect()`` calls started one ``happy_eyeballs_delay`` apart (or as soon as the previous one
failed), all watched by one selector, the first to succeed winning and the others closed; all
within ``connect_timeout``. Staggered attempts rather than one at a time, because an address
that does not answer at all (an IPv6 route that drops packets) would otherwise cost the whole
``connect_timeout`` before the next address is tried; and our own loop rather than threads, as
it needs no more than the non-blocking sockets the client uses anyway. The TLS handshake then
runs non-blocking on the winner, waiting with ``poll()``. Unix: one blocking ``connect()`` with
``connect_timeout`` as the socket's timeout.

Receiving: a client reads up to 64 KiB at a time and keeps whatever complete messages that
brought in its decoder: the next ``recv_packet`` returns one of them without a system call. A
framing error breaks the connection (``ClientBase._break``): the socket is shut down at once,
its descriptor closed by ``close()``. So does a send whose ``timeout`` passed after part of its
frame was written (the server would read half a message).

``send_eof()`` shuts the socket's sending side down (``shutdown(SHUT_WR)``, after the sends in
progress); receiving goes on until the server closes. Not over TLS (see
:func:`~._common.tls_eof_error`).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import selectors
import socket as _socket
import ssl as _ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Self, TypeVar

from protocols import FramingError, StreamDecoder, StreamProtocol
from server_framework.exceptions import ClosedResourceError
from server_framework.sockets import RECEIVE_SIZE

from ._client_base import TLSClientMixin
from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HAPPY_EYEBALLS_DELAY,
    Candidate,
    check_protocol,
    check_stream_socket,
    check_timeout,
    client_ssl_context,
    connect_candidates,
    connect_error,
    connect_timeout_error,
    connection_lost_error,
    describe,
    encode_all,
    eof_sent_error,
    peer_closed_error,
    receive_detail,
    receive_timeout_error,
    resolve,
    resolve_local,
    send_timeout_error,
    tls_eof_error,
    tls_info,
)
from ._sync_base import DeadlinePassed, SyncClient, deadline_after, lock_timeout, wait_ready

__all__ = ["TCPClient", "UnixStreamClient"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")


class _SyncStreamClient(SyncClient, Generic[SendT, RecvT]):
    """What :class:`TCPClient` and :class:`UnixStreamClient` share. ``_eof`` is set once, by
    the receiving thread; ``_broken`` once, by the receiving thread (a framing error) or by a
    sender (a send timed out mid-frame); ``_eof_sent`` once, under the send lock."""

    __slots__ = ("_decoder", "_eof_sent", "_heard", "_protocol")

    def __init__(
        self, sock: _socket.socket, protocol: StreamProtocol[SendT, RecvT], *, tls: bool
    ) -> None:
        super().__init__(sock, tls=tls)
        self._protocol = protocol
        self._decoder: StreamDecoder[RecvT] = protocol.decoder()
        self._heard = False  # the server sent something (else errors say it sent nothing)
        self._eof_sent = False

    def send_packet(self, packet: SendT, *, timeout: float | None = None) -> None:
        """Serialize, frame and send ``packet``; return once the kernel has all of it.

        Threads may send at the same time: frames are sent whole, one after the other.

        Args:
            packet: The message.
            timeout: Seconds allowed for the whole send, waiting for other threads' sends
                included (``None``, the default: as long as the server takes to read;
                ``close()`` from another thread ends the wait).

        Raises:
            TimeoutError: ``timeout`` passed. If nothing of the frame was written yet (the
                server's buffers stayed full, or other sends went first), nothing was sent
                and the client is still usable. If part of it was written (or, over TLS,
                once the write began), the server would read half a message: the connection
                is shut down and every later call raises ``ConnectionError``; the error's
                message says which.
            SerializeError: ``packet`` cannot be serialized (nothing was sent).
            ConnectionError: the server closed or broke the connection, or an earlier framing
                error (or timed-out send) made the connection unusable.
            ClosedResourceError: the client is closed, or :meth:`send_eof` was called.
            ValueError: ``timeout`` is negative.
        """
        self._send_locked(self._protocol.encode(packet), timeout)

    def _send_locked(self, data: bytes | bytearray, timeout: float | None) -> None:
        check_timeout(timeout)
        deadline = deadline_after(timeout)
        if not self._send_lock.acquire(timeout=lock_timeout(deadline)):
            raise send_timeout_error(timeout)
        try:
            self._check_usable()
            if self._eof_sent:
                raise eof_sent_error()
            if self._eof:
                raise peer_closed_error()
            try:
                self._send_all(data, deadline)
            except DeadlinePassed as exc:
                if exc.sent == 0 and self._ssl_lock is None:
                    raise send_timeout_error(timeout) from None
                reason = (
                    f"the server stopped reading after {exc.sent} of the {len(data)} bytes of "
                    f"a send were written (timeout={timeout} s); the connection is unusable"
                )
                self._break_sending(reason)
                raise send_timeout_error(timeout, reason) from None
            except ClosedResourceError:
                raise
            except OSError as exc:
                raise self._io_error(exc) from exc
        finally:
            self._send_lock.release()

    def _break_sending(self, reason: str) -> None:
        """A send gave up mid-frame: make the connection unusable and wake the receiver."""
        with self._state_lock:
            if self._broken is None:
                self._broken = reason
        self._shut_down()

    def send_packets(self, packets: Iterable[SendT], *, timeout: float | None = None) -> None:
        """Serialize and frame every packet into one buffer, and send it in one go.

        For pipelined requests: one system call for the batch instead of one per packet; the
        batch is never interleaved with other threads' frames.

        Args:
            packets: The packets, sent in this order.
            timeout: Seconds allowed for the whole batch, as in :meth:`send_packet` (the batch
                counts as one frame).

        Raises:
            SerializeError: a packet cannot be serialized (nothing was sent).
            TimeoutError, ConnectionError, ClosedResourceError, ValueError: as
                :meth:`send_packet`.
        """
        self._send_locked(encode_all(self._protocol, packets), timeout)

    def send_eof(self) -> None:
        """Close the sending side of the connection (``shutdown(SHUT_WR)``): the server reads
        the end of the stream after the data already sent. Receiving goes on: the server's
        answers arrive until it closes the connection.

        Waits for the sends in progress in other threads to finish first. Idempotent; does
        nothing once the client is closed or its connection broken. Later sends raise
        ``ClosedResourceError``.

        Raises:
            NotImplementedError: the client speaks TLS (TLS has no half-close that servers
                honour: close the client instead). Nothing is changed.
        """
        if self._ssl_lock is not None:
            raise tls_eof_error()
        with self._send_lock:
            if self._closed or self._broken is not None or self._eof_sent:
                return
            self._eof_sent = True
            # ENOTCONN once the server reset the connection: nothing left to half-close.
            with contextlib.suppress(OSError):
                self._socket.shutdown(_socket.SHUT_WR)

    def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the next message from the server.

        A message already received (several arrive in one read when the server answers
        pipelined requests) is returned without a system call.

        Args:
            timeout: Seconds to wait for it (``None``: no limit; ``0``: only what the kernel
                has already received). Waiting for another thread's receive counts.

        Raises:
            TimeoutError: nothing arrived within ``timeout``; the client is still usable, and
                a partly received message is kept for the next call. The message says what
                was received that forms no message (and what it looks like), or that nothing
                was.
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
        deadline = deadline_after(timeout)
        if not self._recv_lock.acquire(timeout=lock_timeout(deadline)):
            raise receive_timeout_error(timeout)
        decoder = self._decoder
        try:
            while True:
                self._check_usable()
                for packet in decoder:  # a message received already
                    return packet
                if self._eof:
                    raise peer_closed_error(decoder.buffered, self._receive_detail())
                try:
                    data = self._recv_some(RECEIVE_SIZE, deadline)
                except DeadlinePassed:
                    raise receive_timeout_error(timeout, detail=self._receive_detail()) from None
                except ClosedResourceError:
                    raise
                except OSError as exc:
                    if not self._heard and not (self._closed or self._broken is not None):
                        raise connection_lost_error(exc, self._receive_detail()) from exc
                    raise self._io_error(exc) from exc
                if data:
                    self._heard = True
                    decoder.feed(data)
                else:
                    self._eof = True
        except FramingError as exc:
            self._break(exc)
            raise
        finally:
            self._recv_lock.release()

    def _receive_detail(self) -> str:
        return receive_detail(self._protocol, self._decoder, self._heard)

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
        return self._iterate(self.recv_packet, timeout)


class TCPClient(_SyncStreamClient[SendT, RecvT], TLSClientMixin):
    """A blocking TCP client (TLS with ``ssl=``), safe to share between threads.

    The connection is made in the constructor; use the client as a context manager (or call
    :meth:`close`). ``TCP_NODELAY`` is set: small requests are not held back. To use a socket
    connected elsewhere, see :meth:`from_socket`.

    Args:
        address: The server's ``(host, port)``. A host name is resolved, and its addresses
            are tried as RFC 8305 says ("happy eyeballs", see ``happy_eyeballs_delay``): the
            first connection to succeed is used.
        protocol: The protocol seen from the client's side: it encodes requests (``SendT``)
            and decodes responses (``RecvT``).
        ssl: TLS: a client-side :class:`ssl.SSLContext`, or ``True`` for
            :func:`ssl.create_default_context` (the system's CAs, the host name checked);
            ``None`` or ``False`` (the default): plain TCP.
        server_hostname: The name checked against the server's certificate (default: the
            host of ``address``). Only with ``ssl``.
        connect_timeout: Seconds allowed for the TCP connection (every attempt included),
            then as much again at most for the TLS handshake; ``None`` for no limit.
        local_address: ``(host, port)`` to bind the socket to before connecting (default: the
            kernel's choice). Port 0 lets the kernel pick the port; host ``""`` means any
            interface. Only the server's addresses of the same family (IPv4 or IPv6) are
            tried.
        happy_eyeballs_delay: Seconds to wait for an attempt to connect to one of the host's
            addresses before starting the next one in parallel (RFC 8305's "Connection
            Attempt Delay"; an attempt that fails starts the next at once). ``None`` tries the
            addresses one at a time. Default: 0.25.

    Raises:
        TimeoutError: the connection or the TLS handshake took longer than ``connect_timeout``.
        OSError: the connection failed (``ConnectionRefusedError``, ``socket.gaierror``...,
            with the address in the message; when every address failed, the last attempt's
            error), or ``local_address`` cannot be bound.
        ssl.SSLError: the TLS handshake failed (for example, an untrusted certificate:
            ``ssl.SSLCertVerificationError``).
        ValueError: ``connect_timeout`` or ``happy_eyeballs_delay`` is negative, or
            ``server_hostname`` without ``ssl``.
        TypeError: ``protocol`` is not a ``StreamProtocol``, or ``ssl`` is not a context nor a
            bool.

    Example::

        protocol = StreamProtocol(JSONSerializer())
        with TCPClient(("localhost", 9000), protocol) as client:
            client.send_packet({"hello": "world"})
            print(client.recv_packet(timeout=5))
    """

    __slots__ = ("_tls_info",)

    def __init__(
        self,
        address: tuple[str, int],
        protocol: StreamProtocol[SendT, RecvT],
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        local_address: tuple[str, int] | None = None,
        happy_eyeballs_delay: float | None = DEFAULT_HAPPY_EYEBALLS_DELAY,
    ) -> None:
        check_protocol(protocol, StreamProtocol)
        check_timeout(connect_timeout, "connect_timeout")
        check_timeout(happy_eyeballs_delay, "happy_eyeballs_delay")
        context = _tls_arguments(ssl, server_hostname)
        host, port = address
        address = (host, port)
        deadline = deadline_after(connect_timeout)
        try:
            infos = resolve(host, port, _socket.SOCK_STREAM)
        except OSError as exc:
            raise connect_error(exc, address) from exc
        local_infos = None if local_address is None else resolve_local(local_address)
        candidates = connect_candidates(address, infos, local_infos)
        sock = _race(address, candidates, happy_eyeballs_delay, deadline, connect_timeout)
        hostname = host if server_hostname is None else server_hostname
        self._take(
            sock, protocol, context, hostname=hostname, address=address, timeout=connect_timeout
        )

    @classmethod
    def from_socket(
        cls,
        sock: _socket.socket,
        protocol: StreamProtocol[SendT, RecvT],
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> Self:
        """A client over ``sock``, a TCP socket connected elsewhere (by a library, a
        ``socketpair``-like helper, inherited from a parent process...).

        The client owns the socket from then on: it makes it non-blocking, sets
        ``TCP_NODELAY``, and closes it on :meth:`close` (or if the TLS handshake fails). The
        argument checks come first: when they fail, the socket is left as it was.

        Args:
            sock: A connected ``AF_INET`` or ``AF_INET6`` stream socket.
            protocol: The protocol seen from the client's side (see :class:`TCPClient`).
            ssl: TLS over the socket, as for :class:`TCPClient`.
            server_hostname: The name checked against the server's certificate: required
                with ``ssl`` (there is no host name to default to).
            connect_timeout: Seconds allowed for the TLS handshake; ``None`` for no limit.

        Returns:
            The client, connected.

        Raises:
            TypeError: ``sock`` is not a socket, ``protocol`` not a ``StreamProtocol``.
            ValueError: ``sock`` is not a connected TCP socket; ``server_hostname`` is
                missing with ``ssl``, or given without it; ``connect_timeout`` is negative.
            TimeoutError, OSError, ssl.SSLError: the TLS handshake failed (as for
                :class:`TCPClient`).
        """
        check_protocol(protocol, StreamProtocol)
        check_timeout(connect_timeout, "connect_timeout")
        peer = check_stream_socket(sock, (_socket.AF_INET, _socket.AF_INET6), "TCP")
        context = _tls_arguments(ssl, server_hostname)
        if context is not None and server_hostname is None:
            raise ValueError("from_socket() with ssl needs server_hostname (there is no host)")
        client = cls.__new__(cls)
        client._take(
            sock,
            protocol,
            context,
            hostname=server_hostname,
            address=peer[:2],
            timeout=connect_timeout,
        )
        return client

    def _take(
        self,
        sock: _socket.socket,
        protocol: StreamProtocol[SendT, RecvT],
        context: _ssl.SSLContext | None,
        *,
        hostname: str | None,
        address: Any,
        timeout: float | None,
    ) -> None:
        """Finish connecting over ``sock`` (TLS handshake included), which this client owns."""
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if context is not None:
                sock = context.wrap_socket(
                    sock, server_hostname=hostname or None, do_handshake_on_connect=False
                )
                _handshake(sock, address, timeout)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, protocol, tls=context is not None)
        self._tls_info = tls_info(sock) if isinstance(sock, _ssl.SSLSocket) else None

    def __repr__(self) -> str:
        return f"<TCPClient peer={self._peer!r} closed={self._closed}>"


def _tls_arguments(
    ssl: _ssl.SSLContext | bool | None, server_hostname: str | None
) -> _ssl.SSLContext | None:
    """The TLS context for ``ssl=``, after checking ``server_hostname`` goes with it."""
    context = client_ssl_context(ssl)
    if server_hostname is not None and context is None:
        raise ValueError("server_hostname is only meaningful with ssl")
    return context


def _race(
    address: tuple[str, int],
    candidates: list[Candidate],
    delay: float | None,
    deadline: float | None,
    timeout: float | None,
) -> _socket.socket:
    """Connect to the first of ``candidates`` that answers (RFC 8305; see the module docs).

    Returns:
        The connected, non-blocking socket.

    Raises:
        TimeoutError: ``deadline`` passed first.
        OSError: every attempt failed (the last one's error, with ``address`` in the message).
    """
    errors: list[OSError] = []
    pending: dict[_socket.socket, None] = {}  # attempts in progress, in start order
    selector = selectors.DefaultSelector()
    winner: _socket.socket | None = None
    index = 0
    next_start = -math.inf  # the first attempt starts at once
    try:
        while winner is None:
            now = time.monotonic()
            if index < len(candidates) and (now >= next_start or not pending):
                candidate = candidates[index]
                index += 1
                try:
                    sock, connected = _start_connect(candidate)
                except OSError as exc:
                    errors.append(exc)
                    continue  # the next one starts at once
                if connected:
                    winner = sock
                    break
                pending[sock] = None
                selector.register(sock, selectors.EVENT_WRITE)
                next_start = now + (math.inf if delay is None else delay)
                continue
            if not pending:
                break  # every attempt failed
            if deadline is not None and now >= deadline:
                raise connect_timeout_error(address, timeout)
            until = min(math.inf if deadline is None else deadline, next_start)
            if index >= len(candidates):
                until = math.inf if deadline is None else deadline
            wait = None if until == math.inf else max(until - now, 0.0)
            for key, _events in selector.select(wait):
                sock = key.fileobj  # type: ignore[assignment]
                selector.unregister(sock)
                del pending[sock]
                code = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                if code == 0 and winner is None:
                    winner = sock
                    continue
                sock.close()
                if code:
                    errors.append(OSError(code, os.strerror(code)))
                    next_start = now  # a failure starts the next attempt at once
    finally:
        for sock in pending:
            if sock is not winner:
                sock.close()
        selector.close()
    if winner is None:
        error = errors[-1]
        raise connect_error(error, address) from error
    return winner


#: What a non-blocking connect() returns while the connection is being made.
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


def _start_connect(candidate: Candidate) -> tuple[_socket.socket, bool]:
    """A non-blocking socket bound as ``candidate`` says, its connection started.

    Returns:
        The socket, and whether it is connected already.

    Raises:
        OSError: the socket could not be made or bound, or the connection failed at once.
    """
    sock = _socket.socket(candidate.family, _socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if candidate.local is not None:
            sock.bind(candidate.local)
        error = sock.connect_ex(candidate.sockaddr)
        if error not in _IN_PROGRESS and error != 0:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock, error == 0


def _handshake(sock: _ssl.SSLSocket, address: Any, timeout: float | None) -> None:
    deadline = deadline_after(timeout)
    while True:
        try:
            sock.do_handshake()
            return
        except _ssl.SSLWantReadError:
            ready = wait_ready(sock, False, deadline)
        except _ssl.SSLWantWriteError:
            ready = wait_ready(sock, True, deadline)
        except _ssl.SSLError:
            raise
        except OSError as exc:  # the server reset or closed the connection
            raise connect_error(exc, address) from exc
        if not ready:
            raise TimeoutError(
                f"the TLS handshake with {describe(address)} did not complete within "
                f"connect_timeout={timeout} s (does the server speak TLS? one that does not "
                "waits for the rest of a message that never comes)"
            )


class UnixStreamClient(_SyncStreamClient[SendT, RecvT]):
    """A blocking Unix stream socket client, safe to share between threads.

    The same API as :class:`TCPClient`; the connection is made in the constructor. To use a
    socket connected elsewhere, see :meth:`from_socket`.

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
        check_protocol(protocol, StreamProtocol)
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

    @classmethod
    def from_socket(cls, sock: _socket.socket, protocol: StreamProtocol[SendT, RecvT]) -> Self:
        """A client over ``sock``, a Unix stream socket connected elsewhere (one end of a
        ``socket.socketpair()``, a socket inherited from a parent process...).

        The client owns the socket from then on: it makes it non-blocking and closes it on
        :meth:`close`. When the argument checks fail, the socket is left as it was.

        Args:
            sock: A connected ``AF_UNIX`` stream socket.
            protocol: The protocol seen from the client's side (see :class:`TCPClient`).

        Returns:
            The client, connected.

        Raises:
            TypeError: ``sock`` is not a socket, ``protocol`` not a ``StreamProtocol``.
            ValueError: ``sock`` is not a connected Unix stream socket.
        """
        check_protocol(protocol, StreamProtocol)
        check_stream_socket(sock, (_socket.AF_UNIX,), "Unix stream")
        client = cls.__new__(cls)
        try:
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        _SyncStreamClient.__init__(client, sock, protocol, tls=False)
        return client

    def __repr__(self) -> str:
        return f"<UnixStreamClient peer={self._peer!r} closed={self._closed}>"
