"""Async stream clients: :class:`AsyncTCPClient` (TLS with ``ssl=``) and
:class:`AsyncUnixStreamClient` (see ``_async_base`` for the design).

Receiving: ``recv_packet`` first takes a message the decoder already holds (every frame of a
read was decoded, so pipelined responses cost no wait at all); only when it holds none does it
ask the transport for more bytes, under the backend's timeout scope if a timeout is given. A
framing error breaks the connection (``ClientBase._break``): the transport is aborted.

Connecting: a TCP host name is resolved in a worker thread (a numeric host is not), then its
addresses are tried in turn, each through the loop's connector.
"""

from __future__ import annotations

import os
import socket as _socket
import ssl as _ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, TypeVar

from protocols import FramingError, ProtocolError, StreamDecoder, StreamProtocol
from server_framework.backend import AsyncBackend

from ._async_base import AsyncClientBase
from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    check_protocol,
    check_timeout,
    connect_error,
    encode_all,
    peer_closed_error,
    receive_detail,
    receive_timeout_error,
    resolve,
    resolve_numeric,
)
from ._transport import ClientTLS, Connector, StreamTransport

__all__ = ["AsyncTCPClient", "AsyncUnixStreamClient"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")


class _AsyncStreamClient(AsyncClientBase, Generic[SendT, RecvT]):
    """What :class:`AsyncTCPClient` and :class:`AsyncUnixStreamClient` share."""

    __slots__ = ("_decoder", "_heard", "_protocol", "_transport")

    def __init__(
        self, protocol: StreamProtocol[SendT, RecvT], connect_timeout: float | None
    ) -> None:
        check_protocol(protocol, StreamProtocol)
        super().__init__(connect_timeout)
        self._protocol = protocol
        self._decoder: StreamDecoder[RecvT] = protocol.decoder()
        self._transport: StreamTransport | None = None
        self._heard = False  # the server sent something (else errors say it sent nothing)

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
        if self._eof:
            raise peer_closed_error()
        return transport

    def _shut_down(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    async def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    def _opened(self, transport: StreamTransport) -> None:
        self._transport = transport
        self._connected(*transport.extra())


class AsyncTCPClient(_AsyncStreamClient[SendT, RecvT]):
    """An async TCP client (TLS with ``ssl=``) for asyncio, uvloop and trio.

    Connects on ``async with`` (or ``await client.connect()``); ``TCP_NODELAY`` is set.

    Args:
        address: The server's ``(host, port)``; a host name is resolved (in a worker thread),
            and its addresses are tried in turn.
        protocol: The protocol seen from the client's side: it encodes requests (``SendT``)
            and decodes responses (``RecvT``).
        ssl: A client-side :class:`ssl.SSLContext` to speak TLS.
        server_hostname: The name checked against the server's certificate (default: the
            host of ``address``). Only with ``ssl``.
        connect_timeout: Seconds allowed to connect, name resolution and TLS handshake
            included; ``None`` for no limit.

    Raises:
        ValueError: ``connect_timeout`` is negative, or ``server_hostname`` without ``ssl``.

    Example::

        protocol = StreamProtocol(JSONSerializer())
        async with AsyncTCPClient(("localhost", 9000), protocol) as client:
            await client.send_packet({"hello": "world"})
            print(await client.recv_packet(timeout=5))
    """

    __slots__ = ("_address", "_tls")

    def __init__(
        self,
        address: tuple[str, int],
        protocol: StreamProtocol[SendT, RecvT],
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(protocol, connect_timeout)
        if server_hostname is not None and ssl is None:
            raise ValueError("server_hostname is only meaningful with ssl")
        host, port = address
        self._address = (host, port)
        self._tls: ClientTLS | None = None
        if ssl is not None:
            self._tls = ClientTLS(ssl, host if server_hostname is None else server_hostname)

    def _target(self) -> Any:
        return self._address

    async def _open(self, connector: Connector, backend: AsyncBackend) -> None:
        host, port = self._address
        infos = resolve_numeric(host, port, _socket.SOCK_STREAM)
        if infos is None:
            try:
                infos = await backend.run_in_thread(
                    resolve, host, port, _socket.SOCK_STREAM, abandon_on_cancel=True
                )
            except OSError as exc:
                raise connect_error(exc, self._address) from exc
        error: OSError | None = None
        for family, sockaddr in infos:
            try:
                transport = await connector.open_tcp(family, sockaddr, self._decoder, self._tls)
            except _ssl.SSLError:
                raise
            except OSError as exc:
                error = exc
                continue
            self._opened(transport)
            return
        assert error is not None  # getaddrinfo never returns an empty list
        raise connect_error(error, self._address) from error

    def __repr__(self) -> str:
        return f"<AsyncTCPClient server={self._address!r} closed={self._closed}>"


class AsyncUnixStreamClient(_AsyncStreamClient[SendT, RecvT]):
    """An async Unix stream socket client for asyncio, uvloop and trio.

    The same API as :class:`AsyncTCPClient`; connects on ``async with``.

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

    def _target(self) -> Any:
        return self._path

    async def _open(self, connector: Connector, backend: AsyncBackend) -> None:
        try:
            transport = await connector.open_unix(self._path, self._decoder)
        except OSError as exc:
            raise connect_error(exc, self._path) from exc
        self._opened(transport)

    def __repr__(self) -> str:
        return f"<AsyncUnixStreamClient server={self._path!r} closed={self._closed}>"
