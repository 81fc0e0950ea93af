"""Datagram server transport for trio.

One receiver task per socket. After each ``await recvfrom`` (one trip through the scheduler)
it drains up to ``READ_BATCH - 1`` more datagrams that are already waiting with non-blocking
reads on the underlying socket, so a busy socket costs one checkpoint per batch, not per
datagram. Each datagram goes to its peer's client, whose own task runs the handler.

Sending tries a non-blocking ``sendto`` first; only when the socket buffer is full does the
sender wait (under a lock, since trio allows one task at a time to wait for writability).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Final

import trio

from server_framework.backend import AsyncBackend, Event
from server_framework.exceptions import ClosedResourceError

from ._base import _Listener
from ._driver import (
    IDLE_TIMEOUT,
    REQUEST_TIMEOUT,
    ConnectionDriver,
    DatagramInbox,
    bind_log_context,
    logger,
    next_conn_id,
)
from ._peer import DatagramPeer

if TYPE_CHECKING:
    from ._datagram import AsyncDatagramServerBase

READ_BATCH: Final = 64
MAX_DATAGRAM_SIZE: Final = 65536


class TrioDatagramClient(ConnectionDriver, DatagramPeer):
    """One peer address of a datagram server on trio."""

    __slots__ = ("_address", "_endpoint", "_event")

    def __init__(self, endpoint: TrioDatagramEndpoint, address: Any) -> None:
        server = endpoint.server
        protocol = server._protocol
        inbox = DatagramInbox(protocol.decode, server._client_queue_size)
        super().__init__(server, server._handler, protocol, inbox, next_conn_id())
        self._endpoint = endpoint
        self._address = address
        self._event: trio.Event | None = None

    async def run(self) -> None:
        """The client's task: handle its datagrams until it idles out or the server stops."""
        try:
            bind_log_context(conn_id=self.id, peer=self._peer_for_log())
            while True:
                blocked = self._process()
                if blocked is not None:
                    await self._finish_blocked(blocked)
                    continue
                if self._should_stop():
                    break
                woke = await self._wait_data()
                if woke is IDLE_TIMEOUT:
                    break
                if woke is REQUEST_TIMEOUT:
                    await self._throw_timeout()
        except Exception as exc:
            logger.error("datagram client failed", exc_info=exc)
        finally:
            with trio.CancelScope(shield=True):
                await self._close_generator()
            self._endpoint.forget(self)

    async def _wait_data(self) -> object:
        if self._decoder.buffered or self._should_stop():
            return None
        timeout, marker = self._wait_timeout(self._endpoint.server._idle_timeout)
        event = self._event = trio.Event()
        try:
            with trio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
                await event.wait()
        finally:
            self._event = None
        return marker if scope.cancelled_caught else None

    def _wake(self) -> None:
        event = self._event
        if event is not None:
            event.set()


class TrioDatagramEndpoint:
    """One bound datagram socket on trio: the receiver loop, peers, and sending."""

    def __init__(self, listener: TrioDatagramListener, sock: socket.socket) -> None:
        self.listener = listener
        self.server = listener.server
        self.backend = listener.backend
        self.raw = sock
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.clients: dict[Any, TrioDatagramClient] = {}
        self.closed = False
        self.nursery: trio.Nursery | None = None  # where client tasks run, once serving
        self._send_lock = trio.Lock()

    async def receive_loop(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        recvfrom = self.sock.recvfrom
        raw_recvfrom = self.raw.recvfrom
        while True:
            try:
                data, address = await recvfrom(MAX_DATAGRAM_SIZE)
            except OSError as exc:
                logger.debug("recvfrom() failed", error=str(exc))
                continue
            self._dispatch(data, address, nursery)
            for _ in range(READ_BATCH - 1):
                try:
                    data, address = raw_recvfrom(MAX_DATAGRAM_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    logger.debug("recvfrom() failed", error=str(exc))
                    continue
                self._dispatch(data, address, nursery)

    def _dispatch(self, data: bytes, address: Any, nursery: trio.Nursery) -> None:
        client = self.clients.get(address)
        server = self.server
        if client is None:
            if server._stop_requested:
                return
            if len(self.clients) >= server._max_clients:
                server._count_drop("max_clients reached")
                return
            client = self.clients[address] = TrioDatagramClient(self, address)
            client._decoder.feed(data)
            nursery.start_soon(client.run)
            return
        if not client._decoder.feed(data):
            server._count_drop("client queue full")
            return
        client._wake()

    def forget(self, client: TrioDatagramClient) -> None:
        if self.clients.get(client._address) is client:
            del self.clients[client._address]
            # Datagrams that arrived while the client was closing (after a handler error) go
            # to a fresh client for the same peer: nothing received is lost.
            pending = client._decoder.take_all()
            if pending and not self.server._stop_requested and self.nursery is not None:
                successor = self.clients[client._address] = TrioDatagramClient(
                    self, client._address
                )
                for datagram in pending:
                    successor._decoder.feed(datagram)
                self.nursery.start_soon(successor.run)
        self.listener.client_ended()

    async def send(self, data: bytes, address: Any) -> None:
        if self.closed:
            raise ClosedResourceError("the server's socket is closed")
        try:
            self.raw.sendto(data, address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        async with self._send_lock:
            await self.sock.sendto(data, address)


class TrioDatagramListener(_Listener):
    """Runs a datagram server's receiver loops and peers on trio."""

    def __init__(
        self,
        server: AsyncDatagramServerBase[Any, Any],
        sockets: list[socket.socket],
        backend: AsyncBackend,
    ) -> None:
        self.server = server
        self.backend = backend
        self.endpoints = [TrioDatagramEndpoint(self, sock) for sock in sockets]
        self._draining = False
        self._drained = trio.Event()

    def _client_count(self) -> int:
        return sum(len(endpoint.clients) for endpoint in self.endpoints)

    def client_ended(self) -> None:
        if self._draining and not self._client_count():
            self._drained.set()

    async def serve(self, stop: Event) -> None:
        grace = self.server._shutdown_timeout
        async with trio.open_nursery() as clients:
            try:
                async with trio.open_nursery() as receivers:
                    for endpoint in self.endpoints:
                        receivers.start_soon(endpoint.receive_loop, clients)
                    await stop.wait()
                    receivers.cancel_scope.cancel()
            except trio.Cancelled:
                grace = 0.0
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await self._drain(grace, clients)

    async def _drain(self, grace: float, nursery: trio.Nursery) -> None:
        self._draining = True
        for endpoint in self.endpoints:
            for client in list(endpoint.clients.values()):
                client._begin_stop()
        if self._client_count():
            with trio.move_on_after(grace):
                await self._drained.wait()
        if self._client_count():
            logger.warning(
                "cancelling clients still busy after the grace period", count=self._client_count()
            )
        nursery.cancel_scope.cancel()
        for endpoint in self.endpoints:
            endpoint.closed = True

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            endpoint.closed = True
        await trio.lowlevel.checkpoint()
