"""What an event loop must provide to the async clients: the per-loop transport interface.

Three abstract classes, implemented once for asyncio and uvloop (``_asyncio.py``) and once for
trio (``_trio.py``): a `Connector` opens connections, a `StreamTransport` moves the bytes of one
stream connection into the client's decoder, a `DatagramTransport` sends and receives the
datagrams of one connected socket. The async clients (``_async_base.py`` and its children) are
written against these classes only; ``server_framework._loops.connector`` picks the
implementation for the loop that runs ``connect()``. A TCP client races its connection attempts
(`Connector.connect_tcp`, one per address) itself, above this interface, on the backend's
tasks; the winner becomes a transport through `Connector.open_stream`.

This module imports no loop and nothing of the clients' other modules: the loop modules import
it, and it imports none of them back.
"""

from __future__ import annotations

import socket as _socket
import ssl as _ssl
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

from protocols import StreamDecoder

__all__ = ["ClientTLS", "Connector", "DatagramTransport", "StreamTransport"]


class ClientTLS(NamedTuple):
    """How a TCP client speaks TLS."""

    #: The client-side context (certificates trusted, protocol versions...).
    context: _ssl.SSLContext
    #: The name sent (SNI) and checked against the server's certificate (None: neither).
    server_hostname: str | None


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
    async def send_eof(self) -> None:
        """Shut the sending side down, after the data of the sends in progress (plain TCP and
        Unix connections only: the client refuses TLS before). Nothing if the connection is
        gone already.
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

    @abstractmethod
    def ssl_object(self) -> Any:
        """What answers ``getpeercert()``, ``cipher()`` and ``version()`` for a TLS connection
        (an ``ssl.SSLObject``, a ``trio.SSLStream``), or None."""


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
    async def connect_tcp(self, family: int, sockaddr: Any, local: Any) -> Any:
        """Make a TCP socket, bind it to ``local`` (unless None) and connect it to ``sockaddr``
        (one attempt of a host's race), ``TCP_NODELAY`` set.

        Returns:
            The connected socket, of the kind `open_stream` takes (it has ``close()``).

        Raises:
            OSError: the socket could not be bound, or the connection failed.

        Cancellation: the socket is closed.
        """

    @abstractmethod
    async def open_stream(
        self, sock: Any, decoder: StreamDecoder[Any], tls: ClientTLS | None
    ) -> StreamTransport:
        """Take over a connected stream socket (from `connect_tcp`, or a ``socket.socket``
        given to ``from_socket``: TCP or Unix) and make its transport, after the TLS handshake
        if ``tls``. The socket is closed if this fails.

        Raises:
            OSError: the server closed or reset the connection during the handshake.
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
