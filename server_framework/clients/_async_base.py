"""What the async clients share (``_async_stream``: :class:`AsyncTCPClient`,
:class:`AsyncUnixStreamClient`; ``_async_datagram``: :class:`AsyncUDPClient`,
:class:`AsyncUnixDatagramClient`), on asyncio, uvloop or trio, and what a loop must provide.

Usage: ``async with AsyncTCPClient(address, protocol) as client:`` connects on entry and closes
on exit; ``await client.connect()`` and ``await client.aclose()`` do the same by hand. The
constructor does no I/O, so a client can be made anywhere; it is then used only in the loop
(and the thread) that connected it.

Strategy. These classes hold what does not depend on the loop: the protocol and the stream
decoder, timeouts (through the backend's cancel scopes), the busy check of receivers, and the
errors' wording. Under each, a loop-specific *transport* moves bytes: for asyncio and uvloop an
``asyncio.Protocol`` whose ``data_received`` feeds the decoder directly (``_asyncio.py``), for
trio the trio socket or ``trio.SSLStream`` (``_trio.py``). Those modules are imported by
``connect()``, for the loop running it; nothing else here imports asyncio or trio.

Per message, the costs are those of the wire layer plus one call: a ``recv_packet`` returns an
already-decoded message without waiting (every frame of a read is decoded before the next
read), and ``send_packet`` encodes then hands the bytes to the transport in one call (asyncio:
``transport.write``, which sends at once; trio: one ``send`` when the socket has room).
"""

from __future__ import annotations

import math
import socket as _socket
import ssl as _ssl
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Self

from protocols import StreamDecoder
from server_framework.backend import AsyncBackend, CancelScope, current
from server_framework.exceptions import BusyResourceError
from server_framework.sockets import Address, SocketProxy, normalize_address

from ._common import (
    check_timeout,
    closed_error,
    connect_timeout_error,
)

__all__ = [
    "AsyncClientBase",
    "Connector",
    "DatagramTransport",
    "StreamTransport",
    "connector_for",
]


# -- what the loop-specific modules provide ---------------------------------------------------


class StreamTransport(ABC):
    """The bytes of one stream connection, on one event loop (internal)."""

    __slots__ = ()

    @abstractmethod
    async def receive(self) -> bool:
        """Wait for more bytes and feed them to the connection's decoder.

        Returns:
            True once something was fed, False at the end of the stream (at once if it was
            reached before).

        Raises:
            ConnectionError: the connection broke.
            ClosedResourceError: we closed it (before or during the call).

        Cancellation: nothing received is lost.
        """

    @abstractmethod
    async def send_all(self, data: bytes | bytearray) -> None:
        """Send all of ``data``; the data of concurrent calls never interleave.

        Raises:
            ConnectionError: the connection broke, or the server closed it.
            ClosedResourceError: we closed it.
        """

    @abstractmethod
    def abort(self) -> None:
        """Close at once, without any goodbye (after a framing error)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close gracefully (flush, TLS ``close_notify``) within a bounded time. Idempotent."""

    @abstractmethod
    def extra(self) -> tuple[Any, Any, Any]:
        """``(socket-like object, peer address, local address)`` as the OS reports them."""


class DatagramTransport(ABC):
    """One connected datagram socket, on one event loop (internal)."""

    __slots__ = ()

    @abstractmethod
    async def receive(self) -> bytes:
        """Wait for the next datagram and return it.

        Raises:
            OSError: from the socket (``ConnectionRefusedError`` for an unreachable server).
            ClosedResourceError: we closed it (before or during the call).
        """

    @abstractmethod
    async def send(self, data: bytes) -> None:
        """Send one datagram, waiting only if the socket's buffer is full.

        Raises:
            OSError: from the socket.
            ClosedResourceError: we closed it.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close the socket; waiting receivers and senders get ``ClosedResourceError``."""


class Connector(ABC):
    """Opens transports on one event loop (internal; one instance per loop module)."""

    __slots__ = ()

    @abstractmethod
    async def open_tcp(
        self,
        family: int,
        sockaddr: Any,
        decoder: StreamDecoder[Any],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> StreamTransport:
        """Connect to one resolved address (TLS handshake included), ``TCP_NODELAY`` set.

        Raises:
            OSError: the connection failed.
            ssl.SSLError: the TLS handshake failed.
        """

    @abstractmethod
    async def open_unix(self, path: str, decoder: StreamDecoder[Any]) -> StreamTransport:
        """Connect to a Unix stream socket.

        Raises:
            OSError: the connection failed.
        """

    @abstractmethod
    def open_datagram(self, sock: _socket.socket) -> DatagramTransport:
        """Take over a connected, non-blocking datagram socket."""


def connector_for(backend: AsyncBackend) -> Connector:
    """The connector of the loop ``backend`` runs (its module is imported on first use)."""
    if backend.name == "trio":
        from ._trio import CONNECTOR  # noqa: PLC0415  (trio only when it runs)

        return CONNECTOR
    from ._asyncio import CONNECTOR as ASYNCIO_CONNECTOR  # noqa: PLC0415

    return ASYNCIO_CONNECTOR


# -- shared by every async client -------------------------------------------------------------


class AsyncClientBase(ABC):
    """Connection state and the lifecycle methods every async client shares."""

    __slots__ = (
        "_backend",
        "_closed",
        "_connect_timeout",
        "_local",
        "_peer",
        "_receiving",
        "_socket",
    )

    def __init__(self, connect_timeout: float | None) -> None:
        check_timeout(connect_timeout, "connect_timeout")
        self._connect_timeout = connect_timeout
        # Set by connect().
        self._backend: AsyncBackend | None = None
        self._socket: Any = None
        self._peer: Address | None = None
        self._local: Address | None = None
        # Changing state.
        self._closed = False
        self._receiving = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Connect to the server, within ``connect_timeout`` (``async with`` calls this).

        Raises:
            TimeoutError: connecting took longer than ``connect_timeout``.
            OSError: the connection failed (``ConnectionRefusedError``, ``FileNotFoundError``,
                ``socket.gaierror``..., with the address in the message).
            ssl.SSLError: the TLS handshake failed (for example, an untrusted certificate).
            ClosedResourceError: :meth:`aclose` was called meanwhile.
            RuntimeError: ``connect`` was already called on this client, or no supported event
                loop is running.

        Cancellation: nothing is left open; the client cannot be connected again (make a new
            one).
        """
        if self._backend is not None or self._closed:
            raise RuntimeError("connect() can be called only once per client: make a new client")
        backend = self._backend = current()
        timeout = self._connect_timeout
        scope = backend.timeout(math.inf if timeout is None else timeout)
        try:
            with scope:
                await self._open(connector_for(backend), backend)
        except BaseException as exc:
            self._open_failed()
            if isinstance(exc, TimeoutError) and scope.cancelled_caught:
                raise connect_timeout_error(self._target(), timeout) from None
            raise
        if self.is_closed():  # aclose() ran while we were connecting (mypy: not narrowed)
            await self._close_transport()
            raise closed_error()

    async def aclose(self) -> None:
        """Close the connection (gracefully: buffered data is sent, TLS says goodbye).
        Idempotent.

        Tasks waiting in ``send_packet`` or ``recv_packet`` of this client get
        :class:`~server_framework.exceptions.ClosedResourceError`.

        Cancellation: the connection is closed anyway (abruptly, if the graceful part was
            interrupted), then the cancellation propagates.
        """
        if self._closed:
            return
        self._closed = True
        await self._close_transport()

    def is_closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    @property
    def peer_address(self) -> Address:
        """The server's address: ``(host, port)``, or the socket path for Unix sockets.

        Raises:
            RuntimeError: the client was never connected.
        """
        if self._peer is None:
            raise self._not_connected()
        return self._peer

    @property
    def local_address(self) -> Address:
        """This end's address: ``(host, port)``, or a path (``""`` if unnamed) for Unix sockets.

        Raises:
            RuntimeError: the client was never connected.
        """
        if self._local is None:
            raise self._not_connected()
        return self._local

    @property
    def socket(self) -> SocketProxy:
        """The client's socket, for options such as ``SO_KEEPALIVE`` (see ``SocketProxy``).

        Raises:
            RuntimeError: the client was never connected.
        """
        if self._socket is None:
            raise self._not_connected()
        return SocketProxy(self._socket)

    def _connected(self, sock: Any, peer: Any, local: Any) -> None:
        self._socket = sock
        self._peer = normalize_address(peer)
        self._local = normalize_address(local)

    def _not_connected(self) -> RuntimeError:
        return RuntimeError(
            "the client is not connected: use 'async with client:' or 'await client.connect()'"
        )

    def _busy(self) -> BusyResourceError:
        return BusyResourceError(
            "another task is already receiving on this client: receive from one task only"
        )

    def _timeout_scope(self, timeout: float) -> CancelScope:
        assert self._backend is not None
        return self._backend.timeout(timeout)

    @abstractmethod
    def _target(self) -> Any:
        """The server's address as given, for messages."""

    @abstractmethod
    async def _open(self, connector: Connector, backend: AsyncBackend) -> None:
        """Open the transport and record it (``_connected``)."""

    @abstractmethod
    async def _close_transport(self) -> None:
        """Close what ``_open`` opened."""

    def _open_failed(self) -> None:  # noqa: B027  (an optional hook)
        """Clean up after ``_open`` failed or was cancelled (it closed its own sockets)."""
