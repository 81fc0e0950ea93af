"""The clients the testing kit hands out: the framework's clients, with every wait bounded.

A test that waits for a reply that never comes should fail in seconds, not hang until the CI
job is killed. So these wrappers give every receive a default timeout (``timeout``, 5 s
unless the serving says otherwise), and ``timeout=None`` means that default, never "wait
forever": pass a number to wait longer. Everything else is the wrapped client's behaviour,
errors included; the client itself is :attr:`Client.wrapped` (:attr:`AsyncClient.wrapped`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Generic, Self, TypeAlias, TypeVar

from server_framework.clients import (
    AsyncTCPClient,
    AsyncUDPClient,
    AsyncUnixDatagramClient,
    AsyncUnixStreamClient,
    TCPClient,
    UDPClient,
    UnixDatagramClient,
    UnixStreamClient,
)

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "Client"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")

#: Seconds a testing client waits at most, by default, to connect and for each message.
DEFAULT_TIMEOUT = 5.0

AnyBlockingClient: TypeAlias = (
    TCPClient[SendT, RecvT]
    | UnixStreamClient[SendT, RecvT]
    | UDPClient[SendT, RecvT]
    | UnixDatagramClient[SendT, RecvT]
)
AnyAsyncClient: TypeAlias = (
    AsyncTCPClient[SendT, RecvT]
    | AsyncUnixStreamClient[SendT, RecvT]
    | AsyncUDPClient[SendT, RecvT]
    | AsyncUnixDatagramClient[SendT, RecvT]
)


class Client(Generic[SendT, RecvT]):
    """A blocking client of a served handler, whose waits are all bounded.

    It wraps a connected :class:`~server_framework.clients.TCPClient` (or ``UDPClient``,
    ``UnixStreamClient``, ``UnixDatagramClient``, by transport); the serving that made it
    closes it on exit. Safe to share between threads, as the wrapped client is.

    Attributes:
        timeout: The default of every ``timeout=`` argument, in seconds.
    """

    __slots__ = ("_wrapped", "timeout")

    def __init__(self, wrapped: AnyBlockingClient[SendT, RecvT], timeout: float) -> None:
        self._wrapped = wrapped
        self.timeout = timeout

    @property
    def wrapped(self) -> AnyBlockingClient[SendT, RecvT]:
        """The framework client this one wraps (for what the wrapper does not offer)."""
        return self._wrapped

    def send_packet(self, packet: SendT) -> None:
        """Send one message (see ``TCPClient.send_packet``)."""
        self._wrapped.send_packet(packet)

    def send_packets(self, packets: Iterable[SendT]) -> None:
        """Send several messages: in one write on a stream, one datagram each otherwise."""
        wrapped = self._wrapped
        if isinstance(wrapped, TCPClient | UnixStreamClient):
            wrapped.send_packets(packets)
        else:
            for packet in packets:
                wrapped.send_packet(packet)

    def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the next message from the server.

        Args:
            timeout: Seconds to wait at most; ``None`` means :attr:`timeout`, never "forever".

        Raises:
            TimeoutError: nothing arrived in time.
            ConnectionError: the server closed the connection (stream transports).
            ProtocolError: the server sent something the protocol cannot decode.
        """
        return self._wrapped.recv_packet(self.timeout if timeout is None else timeout)

    def request(self, packet: SendT, timeout: float | None = None) -> RecvT:
        """Send ``packet`` and return the next message: one request, one reply.

        Args:
            packet: The request.
            timeout: As for :meth:`recv_packet`.
        """
        self.send_packet(packet)
        return self.recv_packet(timeout)

    def iter_received_packets(self, timeout: float | None = None) -> Iterator[RecvT]:
        """Iterate over the messages received, until the server closes the connection or
        ``timeout`` seconds (default :attr:`timeout`) pass without one."""
        return self._wrapped.iter_received_packets(self.timeout if timeout is None else timeout)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._wrapped.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<testing.Client {self._wrapped!r}>"


class AsyncClient(Generic[SendT, RecvT]):
    """An async client of a served handler (asyncio, uvloop or trio), whose waits are bounded.

    It wraps a connected :class:`~server_framework.clients.AsyncTCPClient` (or
    ``AsyncUDPClient``, ``AsyncUnixStreamClient``, ``AsyncUnixDatagramClient``, by
    transport); the serving that made it closes it on exit.

    Attributes:
        timeout: The default of every ``timeout=`` argument, in seconds.
    """

    __slots__ = ("_wrapped", "timeout")

    def __init__(self, wrapped: AnyAsyncClient[SendT, RecvT], timeout: float) -> None:
        self._wrapped = wrapped
        self.timeout = timeout

    @property
    def wrapped(self) -> AnyAsyncClient[SendT, RecvT]:
        """The framework client this one wraps (for what the wrapper does not offer)."""
        return self._wrapped

    async def send_packet(self, packet: SendT) -> None:
        """Send one message (see ``AsyncTCPClient.send_packet``)."""
        await self._wrapped.send_packet(packet)

    async def send_packets(self, packets: Iterable[SendT]) -> None:
        """Send several messages: in one write on a stream, one datagram each otherwise."""
        wrapped = self._wrapped
        if isinstance(wrapped, AsyncTCPClient | AsyncUnixStreamClient):
            await wrapped.send_packets(packets)
        else:
            for packet in packets:
                await wrapped.send_packet(packet)

    async def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the next message from the server.

        Args:
            timeout: Seconds to wait at most; ``None`` means :attr:`timeout`, never "forever".

        Raises:
            TimeoutError: nothing arrived in time.
            ConnectionError: the server closed the connection (stream transports).
            ProtocolError: the server sent something the protocol cannot decode.
        """
        return await self._wrapped.recv_packet(self.timeout if timeout is None else timeout)

    async def request(self, packet: SendT, timeout: float | None = None) -> RecvT:
        """Send ``packet`` and return the next message: one request, one reply.

        Args:
            packet: The request.
            timeout: As for :meth:`recv_packet`.
        """
        await self.send_packet(packet)
        return await self.recv_packet(timeout)

    def iter_received_packets(self, timeout: float | None = None) -> AsyncIterator[RecvT]:
        """Iterate over the messages received, until the server closes the connection or
        ``timeout`` seconds (default :attr:`timeout`) pass without one."""
        return self._wrapped.iter_received_packets(self.timeout if timeout is None else timeout)

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        await self._wrapped.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<testing.AsyncClient {self._wrapped!r}>"
