"""Async stream clients: :class:`AsyncTCPClient` (TLS with ``ssl=``) and
:class:`AsyncUnixStreamClient` (see ``_async_base`` for the design). ``from_socket`` makes
either from a socket connected elsewhere, taken over by ``connect()`` on the loop that runs it.

Receiving: ``recv_packet`` first takes a message the decoder already holds (every frame of a
read was decoded, so pipelined responses cost no wait at all); only when it holds none does it
ask the transport for more bytes, under the backend's timeout scope if a timeout is given. A
framing error breaks the connection (``ClientBase._break``): the transport is aborted.

Connecting: a TCP host name is resolved in a worker thread (a numeric host is not), then its
addresses are raced as RFC 8305 says (`_race`): one task per attempt in a task group of the
backend, started ``happy_eyeballs_delay`` apart or as soon as the previous attempt failed; the
first connected socket wins and the group is cancelled (the other attempts close their
sockets). The same code on the three loops, rather than each loop's own: uvloop's
``create_connection`` has no happy eyeballs, and trio's ``open_tcp_stream`` binds no local
port. The TLS handshake runs on the winner only (``Connector.open_stream``).

``send_eof()`` half-closes a plain connection (asyncio: ``transport.write_eof()``; trio:
``shutdown(SHUT_WR)`` after the sends in progress); receiving goes on. Not over TLS (see
:func:`~._common.tls_eof_error`).
"""

from __future__ import annotations

import math
import os
import socket as _socket
import ssl as _ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, Self, TypeVar

from protocols import FramingError, ProtocolError, StreamDecoder, StreamProtocol
from server_framework.backend import AsyncBackend

from ._async_base import AsyncClientBase
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
    encode_all,
    eof_sent_error,
    local_infos_numeric,
    peer_closed_error,
    receive_detail,
    receive_timeout_error,
    resolve,
    resolve_local,
    resolve_numeric,
    tls_eof_error,
    tls_info,
)
from ._transport import ClientTLS, Connector, StreamTransport

__all__ = ["AsyncTCPClient", "AsyncUnixStreamClient"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")


class _AsyncStreamClient(AsyncClientBase, Generic[SendT, RecvT]):
    """What :class:`AsyncTCPClient` and :class:`AsyncUnixStreamClient` share."""

    __slots__ = ("_decoder", "_eof_sent", "_given", "_heard", "_protocol", "_transport")

    def __init__(
        self, protocol: StreamProtocol[SendT, RecvT], connect_timeout: float | None
    ) -> None:
        check_protocol(protocol, StreamProtocol)
        super().__init__(connect_timeout)
        self._protocol = protocol
        self._decoder: StreamDecoder[RecvT] = protocol.decoder()
        self._transport: StreamTransport | None = None
        self._heard = False  # the server sent something (else errors say it sent nothing)
        self._eof_sent = False
        # A socket given to from_socket(), until connect() takes it over (or aclose() closes
        # it).
        self._given: _socket.socket | None = None

    async def send_packet(self, packet: SendT) -> None:
        """Serialize, frame and send ``packet``.

        Returns once the bytes are handed to the operating system (asyncio: to the transport,
        which waits only when the server reads slower than we write). Tasks may send at the
        same time: frames are never interleaved.

        Raises:
            SerializeError: ``packet`` cannot be serialized (nothing was sent).
            ConnectionError: the server closed or broke the connection, or an earlier framing
                error made the connection unusable.
            ClosedResourceError: the client is closed (before or during the call).
            RuntimeError: the client is not connected yet.

        Cancellation: on asyncio the frame is then either entirely queued or not at all. On
            trio, a send cancelled after writing part of the frame leaves the connection
            unusable (it is closed, and later calls raise ``ConnectionError``).
        """
        transport = self._sender()
        await transport.send_all(self._protocol.encode(packet))

    async def send_packets(self, packets: Iterable[SendT]) -> None:
        """Serialize and frame every packet into one buffer, and send it in one call.

        For pipelined requests: one system call (and, on trio, one checkpoint) for the batch
        instead of one per packet; the batch is never interleaved with other tasks' frames.

        Args:
            packets: The packets, sent in this order.

        Raises:
            SerializeError: a packet cannot be serialized (nothing was sent).
            ConnectionError, ClosedResourceError, RuntimeError: as :meth:`send_packet`.

        Cancellation: as :meth:`send_packet`, the batch counting as one frame.
        """
        transport = self._sender()
        buffer = encode_all(self._protocol, packets)
        if buffer:
            await transport.send_all(buffer)

    async def send_eof(self) -> None:
        """Close the sending side of the connection: the server reads the end of the stream
        after the data already sent. Receiving goes on: the server's answers arrive until it
        closes the connection.

        The sends in progress in other tasks go first. Idempotent; does nothing once the
        client is closed or its connection broken. Later sends raise ``ClosedResourceError``.

        Raises:
            NotImplementedError: the client speaks TLS (TLS has no half-close that servers
                honour: close the client instead). Nothing is changed.
            RuntimeError: the client is not connected yet.
        """
        if self._uses_tls():
            raise tls_eof_error()
        transport = self._transport
        if transport is None:
            if self._closed or self._broken is not None:
                return
            raise self._not_connected()
        if self._eof_sent:
            return
        self._eof_sent = True
        await transport.send_eof()

    def _uses_tls(self) -> bool:
        return False

    async def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the next message from the server.

        A message already received (several arrive in one read when the server answers
        pipelined requests) is returned at once, without yielding to the event loop.

        Args:
            timeout: Seconds to wait for it (``None``: no limit; ``0``: only a message already
                received).

        Raises:
            TimeoutError: nothing arrived within ``timeout``; the client is still usable. The
                message says what was received that forms no message (and what it looks
                like), or that nothing was.
            DeserializeError: the next message is invalid; it was consumed and the client is
                still usable (the next call returns the message after it).
            FramingError: the stream cannot be split into messages any more (for example,
                :class:`~protocols.FrameTooLargeError`); the connection is closed and every
                later call raises ``ConnectionError``.
            ConnectionError: the server closed the connection (after every message it sent
                was returned) or broke it.
            BusyResourceError: another task is receiving on this client.
            ClosedResourceError: the client is closed (before or during the call).
            RuntimeError: the client is not connected yet.
            ValueError: ``timeout`` is negative.

        Cancellation: nothing received is lost; a partly received message is kept for the
            next call.
        """
        if self._receiving:
            raise self._busy()
        transport = self._transport
        if transport is None:
            raise self._unusable()
        decoder = self._decoder
        try:
            for packet in decoder:  # a message received already (fed by the transport)
                self._heard = True
                return packet
            if timeout is None:
                return await self._receive(transport, decoder)
            check_timeout(timeout)
            scope = self._timeout_scope(timeout)
            try:
                with scope:
                    return await self._receive(transport, decoder)
            except TimeoutError:
                if scope.cancelled_caught:
                    detail = receive_detail(self._protocol, decoder, self._heard)
                    raise receive_timeout_error(timeout, detail=detail) from None
                raise
        except FramingError as exc:
            self._break(exc)
            raise
        except ProtocolError:
            self._heard = True  # a bad message is something
            raise

    async def _receive(self, transport: StreamTransport, decoder: StreamDecoder[RecvT]) -> RecvT:
        self._receiving = True
        try:
            try:
                while await transport.receive():
                    self._heard = True
                    for packet in decoder:
                        return packet
            except ConnectionError as exc:
                if self._heard or type(exc) is not ConnectionError:
                    raise
                # A reset (or a broken TLS session) before the server sent a byte: say so.
                detail = receive_detail(self._protocol, decoder, self._heard)
                raise ConnectionError(f"{exc} ({detail})") from exc
            self._eof = True
            raise peer_closed_error(
                decoder.buffered, receive_detail(self._protocol, decoder, self._heard)
            )
        finally:
            self._receiving = False

    def iter_received_packets(self, timeout: float | None = None) -> AsyncIterator[RecvT]:
        """Iterate (``async for``) over the messages from the server, until it closes the
        connection or until ``timeout`` seconds pass without a message.

        Args:
            timeout: The longest wait for each message (``None``, the default: until the server
                closes the connection; ``0``: only the messages already received).

        Raises:
            DeserializeError, FramingError, ConnectionError, BusyResourceError,
                ClosedResourceError: as :meth:`recv_packet` (``ConnectionError`` only for a
                broken connection: a closed one ends the iteration). After a
                ``DeserializeError`` the iteration is over, but the client is usable.
            ValueError: ``timeout`` is negative.

        Cancellation: nothing received is lost (see :meth:`recv_packet`).
        """
        check_timeout(timeout)
        return self._iterate(self.recv_packet, timeout)

    def _sender(self) -> StreamTransport:
        """The transport to send on, or the error of a client that cannot send."""
        transport = self._transport
        if transport is None:
            raise self._unusable()
        if self._eof_sent:
            raise eof_sent_error()
        if self._eof:
            raise peer_closed_error()
        return transport

    def _shut_down(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    async def _close_transport(self) -> None:
        self._close_given()
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    def _open_failed(self) -> None:
        self._close_given()

    def _close_given(self) -> None:
        given, self._given = self._given, None
        if given is not None:
            given.close()

    def _take_given(self, sock: _socket.socket) -> Self:
        """``from_socket``: keep ``sock`` for ``connect()`` to take over (this client owns it)."""
        self._given = sock
        return self

    async def _open_stream(
        self, connector: Connector, sock: Any, tls: ClientTLS | None, target: Any
    ) -> None:
        """Make the transport over the connected ``sock`` (TLS handshake included)."""
        try:
            transport = await connector.open_stream(sock, self._decoder, tls)
        except _ssl.SSLError:
            raise
        except OSError as exc:  # the server closed or reset the connection in the handshake
            raise connect_error(exc, target) from exc
        self._transport = transport
        self._connected(*transport.extra())


class AsyncTCPClient(_AsyncStreamClient[SendT, RecvT], TLSClientMixin):
    """An async TCP client (TLS with ``ssl=``) for asyncio, uvloop and trio.

    Connects on ``async with`` (or ``await client.connect()``); ``TCP_NODELAY`` is set. To use
    a socket connected elsewhere, see :meth:`from_socket`.

    Args:
        address: The server's ``(host, port)``. A host name is resolved (in a worker thread),
            and its addresses are tried as RFC 8305 says ("happy eyeballs", see
            ``happy_eyeballs_delay``): the first connection to succeed is used.
        protocol: The protocol seen from the client's side: it encodes requests (``SendT``)
            and decodes responses (``RecvT``).
        ssl: TLS: a client-side :class:`ssl.SSLContext`, or ``True`` for
            :func:`ssl.create_default_context` (the system's CAs, the host name checked; made
            here, in the constructor); ``None`` or ``False`` (the default): plain TCP.
        server_hostname: The name checked against the server's certificate (default: the
            host of ``address``). Only with ``ssl``.
        connect_timeout: Seconds allowed to connect, name resolution, every attempt and the
            TLS handshake included; ``None`` for no limit.
        local_address: ``(host, port)`` to bind the socket to before connecting (default: the
            kernel's choice). Port 0 lets the kernel pick the port; host ``""`` means any
            interface. Only the server's addresses of the same family (IPv4 or IPv6) are
            tried.
        happy_eyeballs_delay: Seconds to wait for an attempt to connect to one of the host's
            addresses before starting the next one in parallel (RFC 8305's "Connection
            Attempt Delay"; an attempt that fails starts the next at once). ``None`` tries the
            addresses one at a time. Default: 0.25.

    Raises:
        ValueError: ``connect_timeout`` or ``happy_eyeballs_delay`` is negative, or
            ``server_hostname`` without ``ssl``.
        TypeError: ``protocol`` is not a ``StreamProtocol``, or ``ssl`` is not a context nor a
            bool.

    Example::

        protocol = StreamProtocol(JSONSerializer())
        async with AsyncTCPClient(("localhost", 9000), protocol) as client:
            await client.send_packet({"hello": "world"})
            print(await client.recv_packet(timeout=5))
    """

    __slots__ = ("_address", "_delay", "_local_address", "_tls", "_tls_info")

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
        super().__init__(protocol, connect_timeout)
        check_timeout(happy_eyeballs_delay, "happy_eyeballs_delay")
        context = client_ssl_context(ssl)
        if server_hostname is not None and context is None:
            raise ValueError("server_hostname is only meaningful with ssl")
        host, port = address
        self._address = (host, port)
        self._local_address = local_address
        self._delay = happy_eyeballs_delay
        self._tls: ClientTLS | None = None
        self._tls_info = None
        if context is not None:
            hostname = host if server_hostname is None else server_hostname
            self._tls = ClientTLS(context, hostname or None)

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
        """A client over ``sock``, a TCP socket connected elsewhere (by a blocking library, a
        parent process...); ``connect()`` (or ``async with``) takes it over on the loop that
        runs it, after the TLS handshake if ``ssl``.

        The client owns the socket from then on: it is closed by :meth:`aclose` (also before
        ``connect``) and if ``connect`` fails. When the argument checks fail, the socket is
        left as it was.

        Args:
            sock: A connected ``AF_INET`` or ``AF_INET6`` stream socket.
            protocol: The protocol seen from the client's side (see :class:`AsyncTCPClient`).
            ssl: TLS over the socket, as for :class:`AsyncTCPClient`.
            server_hostname: The name checked against the server's certificate: required
                with ``ssl`` (there is no host name to default to).
            connect_timeout: Seconds ``connect`` allows for the TLS handshake; ``None`` for no
                limit.

        Returns:
            The client, not connected yet.

        Raises:
            TypeError: ``sock`` is not a socket, ``protocol`` not a ``StreamProtocol``.
            ValueError: ``sock`` is not a connected TCP socket; ``server_hostname`` is
                missing with ``ssl``, or given without it; ``connect_timeout`` is negative.
        """
        check_protocol(protocol, StreamProtocol)
        peer = check_stream_socket(sock, (_socket.AF_INET, _socket.AF_INET6), "TCP")
        if ssl not in (None, False) and server_hostname is None:
            raise ValueError("from_socket() with ssl needs server_hostname (there is no host)")
        client = cls(
            peer[:2],
            protocol,
            ssl=ssl,
            server_hostname=server_hostname,
            connect_timeout=connect_timeout,
        )
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        return client._take_given(sock)

    def _target(self) -> Any:
        return self._address

    def _uses_tls(self) -> bool:
        return self._tls is not None

    async def _open(self, connector: Connector, backend: AsyncBackend) -> None:
        sock, self._given = self._given, None
        if sock is None:
            sock = await self._connect_socket(connector, backend)
        await self._open_stream(connector, sock, self._tls, self._address)
        assert self._transport is not None
        ssl_object = self._transport.ssl_object()
        self._tls_info = None if ssl_object is None else tls_info(ssl_object)

    async def _connect_socket(self, connector: Connector, backend: AsyncBackend) -> Any:
        """Resolve the address (and ``local_address``) and race the attempts."""
        host, port = self._address
        local = self._local_address
        try:
            infos = resolve_numeric(host, port, _socket.SOCK_STREAM)
            if infos is None:
                infos = await backend.run_in_thread(
                    resolve, host, port, _socket.SOCK_STREAM, abandon_on_cancel=True
                )
        except OSError as exc:
            raise connect_error(exc, self._address) from exc
        local_infos = None
        if local is not None:
            local_infos = local_infos_numeric(local)
            if local_infos is None:
                local_infos = await backend.run_in_thread(
                    resolve_local, local, abandon_on_cancel=True
                )
        candidates = connect_candidates(self._address, infos, local_infos)
        return await _race(backend, connector, candidates, self._delay, self._address)

    def __repr__(self) -> str:
        return f"<AsyncTCPClient server={self._address!r} closed={self._closed}>"


async def _race(
    backend: AsyncBackend,
    connector: Connector,
    candidates: list[Candidate],
    delay: float | None,
    address: tuple[str, int],
) -> Any:
    """Connect to the first of ``candidates`` that answers (RFC 8305; see the module docs).

    Returns:
        The connected socket (``Connector.connect_tcp``'s).

    Raises:
        OSError: every attempt failed (the last one's error, with ``address`` in the message).
    """
    if len(candidates) == 1:  # a numeric host: no tasks
        family, sockaddr, local = candidates[0]
        try:
            return await connector.connect_tcp(family, sockaddr, local)
        except OSError as exc:
            raise connect_error(exc, address) from exc
    winner: Any = None
    errors: list[BaseException | None] = [None] * len(candidates)

    async def attempt(index: int, failed: Any) -> None:
        nonlocal winner
        family, sockaddr, local = candidates[index]
        try:
            sock = await connector.connect_tcp(family, sockaddr, local)
        except Exception as exc:  # reported after the race
            errors[index] = exc
            failed.set()  # the next attempt starts at once
            return
        if winner is not None:  # another one won meanwhile
            sock.close()
            return
        winner = sock
        race.cancel()  # the attempts in progress, and the wait for the next start

    with backend.open_cancel_scope() as race:
        async with backend.create_task_group() as tasks:
            for index in range(len(candidates)):
                failed = backend.create_event()
                tasks.start_soon(attempt, index, failed)
                with backend.move_on_after(math.inf if delay is None else delay):
                    await failed.wait()
    if winner is not None:
        return winner
    # Every attempt ran and failed (a cancellation from outside propagated instead).
    for failure in errors:
        if failure is not None and not isinstance(failure, OSError):
            raise failure  # not a network error: a bug, or a bad local_address
    error = errors[-1]
    assert isinstance(error, OSError)
    raise connect_error(error, address) from error


class AsyncUnixStreamClient(_AsyncStreamClient[SendT, RecvT]):
    """An async Unix stream socket client for asyncio, uvloop and trio.

    The same API as :class:`AsyncTCPClient`; connects on ``async with``. To use a socket
    connected elsewhere, see :meth:`from_socket`.

    Args:
        path: The server's socket path.
        protocol: The protocol seen from the client's side (see :class:`AsyncTCPClient`).
        connect_timeout: Seconds allowed to connect; ``None`` for no limit.

    Raises:
        ValueError: ``connect_timeout`` is negative.
    """

    __slots__ = ("_path",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: StreamProtocol[SendT, RecvT],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(protocol, connect_timeout)
        self._path = os.fspath(path)

    @classmethod
    def from_socket(cls, sock: _socket.socket, protocol: StreamProtocol[SendT, RecvT]) -> Self:
        """A client over ``sock``, a Unix stream socket connected elsewhere (one end of a
        ``socket.socketpair()``, a socket inherited from a parent process...);
        ``connect()`` (or ``async with``) takes it over on the loop that runs it.

        The client owns the socket from then on: it is closed by :meth:`aclose` (also before
        ``connect``) and if ``connect`` fails. When the argument checks fail, the socket is
        left as it was.

        Args:
            sock: A connected ``AF_UNIX`` stream socket.
            protocol: The protocol seen from the client's side (see :class:`AsyncTCPClient`).

        Returns:
            The client, not connected yet.

        Raises:
            TypeError: ``sock`` is not a socket, ``protocol`` not a ``StreamProtocol``.
            ValueError: ``sock`` is not a connected Unix stream socket.
        """
        check_protocol(protocol, StreamProtocol)
        peer = check_stream_socket(sock, (_socket.AF_UNIX,), "Unix stream")
        return cls(os.fsdecode(peer), protocol)._take_given(sock)

    def _target(self) -> Any:
        return self._path

    async def _open(self, connector: Connector, backend: AsyncBackend) -> None:
        sock, self._given = self._given, None
        if sock is not None:
            await self._open_stream(connector, sock, None, self._path)
            return
        try:
            transport = await connector.open_unix(self._path, self._decoder)
        except OSError as exc:
            raise connect_error(exc, self._path) from exc
        self._transport = transport
        self._connected(*transport.extra())

    def __repr__(self) -> str:
        return f"<AsyncUnixStreamClient server={self._path!r} closed={self._closed}>"
