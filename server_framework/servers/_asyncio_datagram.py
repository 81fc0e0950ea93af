"""The datagram servers on asyncio and uvloop: peers' clients, endpoints and their listener.

Datagrams: on plain asyncio, receiving uses ``loop.add_reader`` and non-blocking ``recvfrom``
calls, up to ``READ_BATCH`` datagrams per wake-up: asyncio's own datagram transport reads one
datagram per loop iteration, which caps a plain-asyncio UDP server at a fraction of what the
socket can deliver; the batch bound keeps a flood from starving timers and other connections.
On uvloop, its own UDP transport already reads in batches, in C: we use it (Unix datagrams
may be longer than a UDP payload, so they go through our reader, which sees them whole).
Each datagram goes to its peer's client, and is handled inline when that client's task is
parked. Sending tries ``sendto`` at once; only when the socket buffer is full does the sender
wait for the socket to become writable.
The routing of a datagram to its peer's client is loop-agnostic (``_peer.DatagramEndpoint``).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from server_framework import engine
from server_framework.backend import AsyncBackend
from server_framework.exceptions import ClosedResourceError

from ._asyncio import AsyncIOCore, AsyncIODriver, AsyncIOListener, drain_tasks
from ._driver import READ_BATCH, bind_log_context
from ._options import DatagramOptions
from ._peer import RECEIVE_LIMIT, DatagramEndpoint, DatagramPeer

__all__ = ["AsyncIODatagramListener"]


class AsyncIODatagramCore(AsyncIOCore):
    """The per-datagram part of :class:`AsyncIODatagramClient`: its address, its endpoint,
    and ``send_packet``. The reference of the compiled engine's ``AsyncIODatagramCore``."""

    __slots__ = ("_address", "_endpoint")

    _address: Any
    _endpoint: AsyncIODatagramEndpoint

    async def send_packet(self, packet: Any) -> None:
        """The handler's ``client.send_packet``: encode, then ``sendto`` at once (on uvloop's
        transport, which buffers when the socket is full), or ``endpoint.send``."""
        data = self._protocol.encode(packet)
        endpoint = self._endpoint
        transport = endpoint._transport
        if transport is not None and not endpoint.closed:
            transport.sendto(data, self._address)
            self._counters.bytes_out += len(data)
            return
        await endpoint.send(data, self._address)


class DatagramRouter:
    """Hands each datagram an endpoint reads to its peer's client (``_peer.DatagramEndpoint.
    _dispatch``). The reference of the compiled engine's ``DatagramRouter``, which does the
    same for a peer that has a client, in C (a new peer still goes through ``_dispatch``)."""

    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: AsyncIODatagramEndpoint) -> None:
        self._endpoint = endpoint

    def dispatch(self, data: bytes, address: Any) -> None:
        """Route one received datagram."""
        self._endpoint._dispatch(data, address)


if TYPE_CHECKING:
    _AsyncIODatagramCore = AsyncIODatagramCore
    _DatagramRouter = DatagramRouter
else:
    _AsyncIODatagramCore = (
        AsyncIODatagramCore if engine.compiled is None else engine.compiled.AsyncIODatagramCore
    )
    _DatagramRouter = DatagramRouter if engine.compiled is None else engine.compiled.DatagramRouter


class AsyncIODatagramClient(_AsyncIODatagramCore, DatagramPeer, AsyncIODriver):
    """One peer address of a datagram server on asyncio/uvloop."""

    __slots__ = ()

    def __init__(self, endpoint: AsyncIODatagramEndpoint, address: Any) -> None:
        self._init_peer(endpoint.options)
        self._init_driver(endpoint.loop)
        self._endpoint = endpoint
        self._address = address

    async def _on_start(self) -> None:
        bind_log_context(conn_id=self.id, peer=self._peer_for_log())

    async def _cleanup(self) -> None:
        try:
            await self._close_generator()
        finally:
            self._endpoint.forget(self)


class AsyncIODatagramEndpoint(DatagramEndpoint[AsyncIODatagramClient]):
    """One bound datagram socket on asyncio: reads in batches, dispatches to peers, sends."""

    def __init__(self, listener: AsyncIODatagramListener, sock: socket.socket) -> None:
        super().__init__(listener, sock)
        self.tasks = listener.tasks
        self.loop = listener.loop
        self._writable: asyncio.Future[None] | None = None
        self._reading = False
        self._receiving = True
        self._transport: asyncio.DatagramTransport | None = None
        self._router = _DatagramRouter(self)

    async def start(self) -> None:
        if self.backend.name == "uvloop" and self.sock.family != getattr(socket, "AF_UNIX", None):
            # uvloop's UDP transport reads in batches, in C (a UDP payload fits in
            # MAX_DATAGRAM_SIZE); Unix datagrams may be longer: our reader sees them whole.
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: _UVLoopDatagramProtocol(self._router, self.options.log), sock=self.sock
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
        dispatch = self._router.dispatch
        for _ in range(READ_BATCH):
            try:
                data, address = recvfrom(RECEIVE_LIMIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # E.g. an ICMP error queued for the socket: it concerns one peer, not us.
                self.options.log.debug("recvfrom() failed", error=str(exc))
                continue
            dispatch(data, address)

    def _dispatch(self, data: bytes, address: Any) -> None:
        if self._receiving:
            super()._dispatch(data, address)

    def _new_client(self, address: Any) -> AsyncIODatagramClient:
        return AsyncIODatagramClient(self, address)

    def _start(self, client: AsyncIODatagramClient) -> None:
        self.tasks.add(client._start_task())

    def _notify(self, client: AsyncIODatagramClient) -> None:
        if client._waiter is not None:
            client._deliver()

    def forget(self, client: AsyncIODatagramClient) -> None:
        if client._task is not None:
            self.tasks.discard(client._task)
        super().forget(client)

    async def send(self, data: bytes, address: Any) -> None:
        if self.closed:
            raise ClosedResourceError("the server's socket is closed")
        counters = self.options.counters
        if self._transport is not None:
            self._transport.sendto(data, address)  # buffers (with flow control) when full
            counters.bytes_out += len(data)
            return
        while True:
            try:
                self.sock.sendto(data, address)
                counters.bytes_out += len(data)
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

    __slots__ = ("_log", "datagram_received")

    def __init__(self, router: DatagramRouter, log: Any) -> None:
        self.datagram_received = router.dispatch  # type: ignore[method-assign,assignment]
        self._log = log

    def error_received(self, exc: Exception) -> None:
        # E.g. an ICMP error for one peer: it concerns that peer, not the server.
        self._log.debug("datagram socket error", error=str(exc))


class AsyncIODatagramListener(AsyncIOListener[DatagramOptions]):
    """Runs a datagram server's sockets and peers on an asyncio loop."""

    def __init__(
        self, options: DatagramOptions, sockets: list[socket.socket], backend: AsyncBackend
    ) -> None:
        super().__init__(options, sockets, backend)
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.endpoints = [AsyncIODatagramEndpoint(self, sock) for sock in sockets]

    async def _start(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.start()

    def active(self) -> tuple[int, int]:
        return (0, sum(len(endpoint.clients) for endpoint in self.endpoints))

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()

    async def _stop(self, grace: float) -> None:
        for endpoint in self.endpoints:
            endpoint.stop_reading()
            for client in list(endpoint.clients.values()):
                client._begin_stop()
        await drain_tasks(set(self.tasks), grace, "peers", self.options.log, self.options.counters)
        for endpoint in self.endpoints:
            endpoint.close()
