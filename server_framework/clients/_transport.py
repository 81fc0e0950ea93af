"""What an event loop must provide to the async clients: the per-loop transport interface.

Three abstract classes, implemented once for asyncio and uvloop (``_asyncio.py``) and once for
trio (``_trio.py``): a `Connector` opens connections, a `StreamTransport` moves the bytes of one
stream connection into the client's decoder, a `DatagramTransport` sends and receives the
datagrams of one connected socket. The async clients (``_async_base.py`` and its children) are
written against these classes only; ``server_framework._loops.connector`` picks the
implementation for the loop that runs ``connect()``.

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
    #: The name checked against the server's certificate.
    server_hostname: str


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
        self, family: int, sockaddr: Any, decoder: StreamDecoder[Any], tls: ClientTLS | None
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
