"""What the async clients share (``_async_stream``: :class:`AsyncTCPClient`,
:class:`AsyncUnixStreamClient`; ``_async_datagram``: :class:`AsyncUDPClient`,
:class:`AsyncUnixDatagramClient`), on asyncio, uvloop or trio: `AsyncClientBase`.

Usage: ``async with AsyncTCPClient(address, protocol) as client:`` connects on entry and closes
on exit; ``await client.connect()`` and ``await client.aclose()`` do the same by hand. The
constructor does no I/O, so a client can be made anywhere; it is then used only in the loop
(and the thread) that connected it.

Strategy. These classes hold what does not depend on the loop: the protocol and the stream
decoder, timeouts (through the backend's cancel scopes), the busy check of receivers, and the
connect/close lifecycle; the state and the rules shared with the blocking clients (usability,
errors, the end of an iteration) are `ClientBase`'s (``_client_base``). Under each client, a
loop-specific *transport* (the interface is ``_transport``) moves bytes: for asyncio and
uvloop an ``asyncio.Protocol`` whose ``data_received`` feeds the decoder directly
(``_asyncio.py``), for trio the trio socket or ``trio.SSLStream`` (``_trio.py``).
``connect()`` asks ``server_framework._loops.connector`` for the running loop's connector,
which imports that loop's module on first use; nothing here imports asyncio or trio.

Per message, the costs are those of the wire layer plus one call: a ``recv_packet`` returns an
already-decoded message without waiting (every frame of a read is decoded before the next
read), and ``send_packet`` encodes then hands the bytes to the transport in one call (asyncio:
``transport.write``, which sends at once; trio: one ``send`` when the socket has room).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self, TypeVar

from server_framework._loops import connector
from server_framework.backend import AsyncBackend, CancelScope, current
from server_framework.exceptions import BusyResourceError

from ._client_base import ClientBase
from ._common import check_timeout, closed_error, connect_timeout_error
from ._transport import Connector

__all__ = ["AsyncClientBase"]

T = TypeVar("T")


class AsyncClientBase(ClientBase, ABC):
    """The connect/close lifecycle, timeouts and receivers' bookkeeping of every async client."""

    __slots__ = ("_backend", "_connect_timeout", "_receiving")

    def __init__(self, connect_timeout: float | None) -> None:
        check_timeout(connect_timeout, "connect_timeout")
        super().__init__()
        self._connect_timeout = connect_timeout
        self._backend: AsyncBackend | None = None  # set by connect()
        self._receiving = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
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
                await self._open(connector(backend), backend)
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

    def backend(self) -> AsyncBackend:
        """The backend of the loop this client runs in: the one that connected it, or, before
        :meth:`connect`, the running loop's (the one ``connect`` would use).

        Raises:
            RuntimeError: the client is not connected and no supported event loop is running.
        """
        return self._backend if self._backend is not None else current()

    def _busy(self) -> BusyResourceError:
        return BusyResourceError(
            "another task is already receiving on this client: receive from one task only"
        )

    def _timeout_scope(self, timeout: float) -> CancelScope:
        assert self._backend is not None
        return self._backend.timeout(timeout)

    async def _iterate(
        self, receive: Callable[[float | None], Awaitable[T]], timeout: float | None
    ) -> AsyncIterator[T]:
        """``iter_received_packets``: ``receive`` until an error that `_ends_iteration`."""
        while True:
            try:
                packet = await receive(timeout)
            except (TimeoutError, ConnectionError) as exc:
                if self._ends_iteration(exc):
                    return
                raise
            yield packet

    @abstractmethod
    def _target(self) -> Any:
        """The server's address as given, for messages."""

    @abstractmethod
    async def _open(self, connector: Connector, backend: AsyncBackend) -> None:
        """Open the transport and record it (``_connected``)."""

    @abstractmethod
    async def _close_transport(self) -> None:
        """Close what ``_open`` opened."""

    def _open_failed(self) -> None:
        """Clean up after ``_open`` failed or was cancelled (it closed its own sockets)."""
