"""Stream server transport for asyncio and uvloop: an ``asyncio.Protocol`` per connection.

``data_received`` feeds the connection's decoder and, when the connection task is parked,
handles the new frames inline as that task (see ``_asyncio_driver``). Replies of a batch go
out with one ``transport.write``; a sender waits only after ``pause_writing`` (the transport's
buffer passed its high-water mark). Reading pauses while more than ``READ_HIGH_WATER``
received bytes wait to be handled.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from handlers.base import StreamClient
from protocols import ProxyHeaderParser, ProxyProtocolError
from server_framework.backend import AsyncBackend, Event
from server_framework.sockets import Address, SocketProxy, normalize_address

from ._asyncio_driver import AsyncIODriver, drain_tasks
from ._base import _Listener
from ._driver import Blocked, RateLimitedLog, bind_log_context, logger, next_conn_id

if TYPE_CHECKING:
    from ._stream import AsyncStreamServerBase

#: Pause reading while this many received bytes wait to be handled (a blocked handler facing a
#: fast sender); resume once the backlog is consumed. Matches asyncio's default write limit.
READ_HIGH_WATER: Final = 64 * 1024


class AsyncIOStreamConnection(AsyncIODriver, StreamClient[Any], asyncio.Protocol):
    """One connection on asyncio/uvloop: the asyncio Protocol and the handler's client at once."""

    __slots__ = (
        "_drain_waiter",
        "_idle_timeout",
        "_listener",
        "_peer_override",
        "_proxy",
        "_proxy_timer",
        "_reading_paused",
        "_transport",
        "_write_paused",
    )

    def __init__(self, listener: AsyncIOStreamListener) -> None:
        server = listener.server
        protocol = server._protocol
        super().__init__(server, server._handler, protocol, protocol.decoder(), next_conn_id())
        self._init_driver(listener.loop)
        self._listener = listener
        self._idle_timeout = server._idle_timeout
        self._transport: asyncio.Transport | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._reading_paused = False
        self._proxy: ProxyHeaderParser | None = None  # waiting for a PROXY protocol header
        self._proxy_timer: asyncio.TimerHandle | None = None
        self._peer_override: Address | None = None  # the original client, from that header

    # -- asyncio.Protocol callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)
        listener = self._listener
        if not listener.admit(self):
            self._lost = True
            transport.close()
            return
        server = listener.server
        if server._proxy_trusted is not None:
            peer = transport.get_extra_info("peername")
            if peer is None:  # reset before we saw it (e.g. a load balancer's health check)
                transport.close()
                return
            if not server._proxy_trusted.is_trusted(peer):
                listener.refuse_proxy(reason="untrusted peer", peer=str(peer))
                transport.close()
                return
            self._proxy = ProxyHeaderParser(server._proxy_protocol or "auto")
            self._proxy_timer = self._loop.call_later(
                server._proxy_header_timeout, self._proxy_expired
            )
            return  # the task starts once the header is in
        listener.tasks.add(self._start_task())

    def _proxy_received(self, data: bytes) -> None:
        parser = self._proxy
        assert parser is not None
        assert self._transport is not None
        try:
            header = parser.feed(data)
        except ProxyProtocolError as exc:
            self._listener.refuse_proxy(reason="invalid header", error=str(exc))
            self._transport.close()
            return
        if header is None:
            return
        self._proxy = None
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None
        if not header.is_local and header.source is not None:
            self._peer_override = normalize_address(header.source)
        self._listener.tasks.add(self._start_task())
        rest = parser.remaining()
        if rest:
            self.data_received(rest)

    def _proxy_expired(self) -> None:
        self._proxy_timer = None
        self._listener.refuse_proxy(reason="no header in time")
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._proxy is not None:
            self._proxy_received(data)
            return
        decoder = self._decoder
        if decoder.broken:
            return
        decoder.feed(data)
        if self._waiter is not None:
            self._deliver()
        elif decoder.buffered > READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep the transport open: a half-closed peer still reads our replies (not for TLS,
        # where asyncio ignores this and closes).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._wake()
        self._wake_drain()
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None
        if self._task is None:  # closed before its task started (refused, no PROXY header)
            self._listener.release(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- StreamClient -------------------------------------------------------------------

    async def send_packet(self, packet: Any) -> None:
        out = self._out
        if out is not None:
            self._protocol.encode_into(packet, out)
            return
        transport = self._transport
        if self._lost or self._close_requested or transport is None or transport.is_closing():
            raise self._closed_error()
        transport.write(self._protocol.encode(packet))
        if self._write_paused:
            await self._drain()

    async def aclose(self) -> None:
        self._request_close()
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.shield(task)

    def is_closing(self) -> bool:
        transport = self._transport
        return self._lost or self._close_requested or transport is None or transport.is_closing()

    def backend(self) -> AsyncBackend:
        return self._listener.backend

    @property
    def peer_address(self) -> Address:
        if self._peer_override is not None:
            return self._peer_override
        assert self._transport is not None
        return normalize_address(self._transport.get_extra_info("peername"))

    @property
    def local_address(self) -> Address:
        assert self._transport is not None
        return normalize_address(self._transport.get_extra_info("sockname"))

    @property
    def socket(self) -> SocketProxy:
        assert self._transport is not None
        return SocketProxy(self._transport.get_extra_info("socket"))

    def __repr__(self) -> str:
        return f"<AsyncIOStreamConnection id={self.id} closing={self.is_closing()}>"

    # -- driver hooks ---------------------------------------------------------------------

    async def _on_start(self) -> None:
        bind_log_context(conn_id=self.id, peer=self._peer_for_log())
        logger.debug("connection accepted")
        await self._handler.on_connection(self)

    def _process_batch(self) -> Blocked | None:
        out = self._out = bytearray()
        try:
            return self._process()
        finally:
            self._out = None
            if out and not self._lost:
                assert self._transport is not None
                self._transport.write(out)

    def _needs_task(self) -> bool:
        return self._write_paused

    async def _before_wait(self) -> None:
        if self._write_paused:
            await self._drain()
        if self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()

    async def _cleanup(self) -> None:
        try:
            await self._close_generator()
            await self._notify_disconnection()
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.close()
            logger.debug("connection closed")
        finally:
            self._listener.release(self)

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _drain(self) -> None:
        while self._write_paused and not self._lost:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await asyncio.shield(waiter)
        if self._lost:
            raise self._closed_error()


class AsyncIOStreamListener(_Listener):
    """Runs one stream server's listening sockets and connections on an asyncio loop."""

    def __init__(
        self,
        server: AsyncStreamServerBase[Any, Any],
        sockets: list[socket.socket],
        backend: AsyncBackend,
        ssl_context: _ssl.SSLContext | None,
    ) -> None:
        self.server = server
        self.sockets = sockets
        self.backend = backend
        self.ssl = ssl_context
        self.loop = asyncio.get_running_loop()
        self.connections: set[AsyncIOStreamConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []
        self._refusals = RateLimitedLog("refusing connection: max_connections reached")
        self.refuse_proxy = RateLimitedLog("closing connection: PROXY protocol check failed")

    async def serve(self, stop: Event) -> None:
        grace = self.server._shutdown_timeout
        try:
            await self._start()
            await stop.wait()
        except asyncio.CancelledError:
            grace = 0.0
            raise
        finally:
            await self.backend.cancel_shielded(self._stop, grace)

    async def aclose(self) -> None:
        self._stop_accepting()

    async def _start(self) -> None:
        """Start accepting on every socket."""
        factory: Callable[[], asyncio.Protocol] = lambda: AsyncIOStreamConnection(self)  # noqa: E731
        server = self.server
        for sock in self.sockets:
            kwargs: dict[str, Any] = {"sock": sock, "backlog": server._backlog}
            if self.ssl is not None:
                kwargs.update(
                    ssl=self.ssl,
                    ssl_handshake_timeout=server._ssl_handshake_timeout,
                    ssl_shutdown_timeout=server._ssl_shutdown_timeout,
                )
            if sock.family == getattr(socket, "AF_UNIX", None):
                created = await self.loop.create_unix_server(factory, **kwargs)
            else:
                created = await self.loop.create_server(factory, **kwargs)
            self._servers.append(created)

    def admit(self, conn: AsyncIOStreamConnection) -> bool:
        if self.server._stop_requested or len(self.connections) >= self.server._max_connections:
            self._refusals(max_connections=self.server._max_connections)
            return False
        self.connections.add(conn)
        return True

    def release(self, conn: AsyncIOStreamConnection) -> None:
        self.connections.discard(conn)
        if conn._task is not None:
            self.tasks.discard(conn._task)

    def _stop_accepting(self) -> None:
        for created in self._servers:
            created.close()
        self._servers.clear()

    async def _stop(self, grace: float) -> None:
        """Stop accepting, let requests in progress finish within ``grace`` s, cancel the rest."""
        self._stop_accepting()
        for conn in list(self.connections):
            conn._begin_stop()
        await drain_tasks(set(self.tasks), grace, "connections")
