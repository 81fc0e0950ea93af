"""Datagram server transport for asyncio and uvloop.

On plain asyncio, receiving uses ``loop.add_reader`` and non-blocking ``recvfrom`` calls, up
to ``READ_BATCH`` datagrams per wake-up: asyncio's own datagram transport reads one datagram
per loop iteration, which caps a plain-asyncio UDP server at a fraction of what the socket can
deliver; the batch bound keeps a flood from starving timers and other connections. On uvloop,
its own datagram transport already reads in batches, in C: we use it. Each datagram goes to its
peer's client, and is handled inline when that client's task is parked (``_asyncio_driver``).

Sending tries ``sendto`` at once; only when the socket buffer is full does the sender wait for
the socket to become writable.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, Final

from server_framework.backend import AsyncBackend, Event
from server_framework.exceptions import ClosedResourceError

from ._asyncio_driver import AsyncIODriver, drain_tasks
from ._base import _Listener
from ._driver import DatagramInbox, bind_log_context, logger, next_conn_id
from ._peer import DatagramPeer

if TYPE_CHECKING:
    from ._datagram import AsyncDatagramServerBase

#: Datagrams read per wake-up of the socket (libuv reads up to 32).
READ_BATCH: Final = 64
#: Largest datagram read; a larger one is truncated by the kernel (and fails to decode).
MAX_DATAGRAM_SIZE: Final = 65536


class AsyncIODatagramClient(AsyncIODriver, DatagramPeer):
    """One peer address of a datagram server on asyncio/uvloop."""

    __slots__ = ("_address", "_endpoint", "_idle_timeout")

    def __init__(self, endpoint: AsyncIODatagramEndpoint, address: Any) -> None:
        server = endpoint.server
        protocol = server._protocol
        inbox = DatagramInbox(protocol.decode, server._client_queue_size)
        super().__init__(server, server._handler, protocol, inbox, next_conn_id())
        self._init_driver(endpoint.loop)
        self._endpoint = endpoint
        self._address = address
        self._idle_timeout = server._idle_timeout

    async def _on_start(self) -> None:
        bind_log_context(conn_id=self.id, peer=self._peer_for_log())

    async def _cleanup(self) -> None:
        try:
            await self._close_generator()
        finally:
            self._endpoint.forget(self)


class AsyncIODatagramEndpoint:
    """One bound datagram socket: reads in batches, dispatches to peers, sends."""

    def __init__(self, listener: AsyncIODatagramListener, sock: socket.socket) -> None:
        self.listener = listener
        self.server = listener.server
        self.backend = listener.backend
        self.loop = listener.loop
        self.sock = sock
        self.clients: dict[Any, AsyncIODatagramClient] = {}
        self.closed = False
        self._writable: asyncio.Future[None] | None = None
        self._reading = False
        self._receiving = True
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        if self.backend.name == "uvloop":
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: _UVLoopDatagramProtocol(self), sock=self.sock
            )
            self._transport = transport
            return
        self.loop.add_reader(self.sock.fileno(), self._on_readable)
        self._reading = True

    def stop_reading(self) -> None:
        # uvloop's datagram transport cannot pause: from now on _dispatch drops what it reads.
        self._receiving = False
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        self.stop_reading()
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _on_readable(self) -> None:
        recvfrom = self.sock.recvfrom
        for _ in range(READ_BATCH):
            try:
                data, address = recvfrom(MAX_DATAGRAM_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # E.g. an ICMP error queued for the socket: it concerns one peer, not us.
                logger.debug("recvfrom() failed", error=str(exc))
                continue
            self._dispatch(data, address)

    def _dispatch(self, data: bytes, address: Any) -> None:
        if not self._receiving:
            return
        client = self.clients.get(address)
        server = self.server
        if client is None:
            if server._stop_requested:
                return
            if len(self.clients) >= server._max_clients:
                server._count_drop("max_clients reached")
                return
            client = self.clients[address] = AsyncIODatagramClient(self, address)
            client._decoder.feed(data)
            self.listener.tasks.add(client._start_task())
            return
        if not client._decoder.feed(data):
            server._count_drop("client queue full")
            return
        if client._waiter is not None:
            client._deliver()

    def forget(self, client: AsyncIODatagramClient) -> None:
        if client._task is not None:
            self.listener.tasks.discard(client._task)
        if self.clients.get(client._address) is not client:
            return
        del self.clients[client._address]
        # Datagrams that arrived while the client was closing (after a handler error) go to
        # a fresh client for the same peer: nothing received is lost.
        pending = client._decoder.take_all()
        if pending and not self.server._stop_requested:
            successor = self.clients[client._address] = AsyncIODatagramClient(self, client._address)
            for datagram in pending:
                successor._decoder.feed(datagram)
            self.listener.tasks.add(successor._start_task())

    async def send(self, data: bytes, address: Any) -> None:
        if self.closed:
            raise ClosedResourceError("the server's socket is closed")
        if self._transport is not None:
            self._transport.sendto(data, address)  # buffers (with flow control) when full
            return
        while True:
            try:
                self.sock.sendto(data, address)
                return
            except (BlockingIOError, InterruptedError):
                await self._wait_writable()

    async def _wait_writable(self) -> None:
        waiter = self._writable
        if waiter is None:
            waiter = self._writable = self.loop.create_future()
            fd = self.sock.fileno()

            def ready() -> None:
                self.loop.remove_writer(fd)
                self._writable = None
                if not waiter.done():
                    waiter.set_result(None)

            self.loop.add_writer(fd, ready)
        await asyncio.shield(waiter)


class _UVLoopDatagramProtocol(asyncio.DatagramProtocol):
    """uvloop's transport calls this for each datagram, from its own batched C read loop."""

    __slots__ = ("_dispatch",)

    def __init__(self, endpoint: AsyncIODatagramEndpoint) -> None:
        self._dispatch = endpoint._dispatch

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._dispatch(data, addr)

    def error_received(self, exc: Exception) -> None:
        # E.g. an ICMP error for one peer: it concerns that peer, not the server.
        logger.debug("datagram socket error", error=str(exc))


class AsyncIODatagramListener(_Listener):
    """Runs a datagram server's sockets and peers on an asyncio loop."""

    def __init__(
        self,
        server: AsyncDatagramServerBase[Any, Any],
        sockets: list[socket.socket],
        backend: AsyncBackend,
    ) -> None:
        self.server = server
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.endpoints = [AsyncIODatagramEndpoint(self, sock) for sock in sockets]

    async def serve(self, stop: Event) -> None:
        grace = self.server._shutdown_timeout
        try:
            for endpoint in self.endpoints:
                await endpoint.start()
            await stop.wait()
        except asyncio.CancelledError:
            grace = 0.0
            raise
        finally:
            await self.backend.cancel_shielded(self._stop, grace)

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()

    async def _stop(self, grace: float) -> None:
        for endpoint in self.endpoints:
            endpoint.stop_reading()
            for client in list(endpoint.clients.values()):
                client._begin_stop()
        await drain_tasks(set(self.tasks), grace, "clients")
        for endpoint in self.endpoints:
            endpoint.close()
