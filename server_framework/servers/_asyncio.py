"""The servers on asyncio and uvloop: the connection driver, stream connections and their listener.

One task per connection (or datagram peer) runs the start hook, finishes blocked handler steps
and ends the connection. While that task is parked waiting for data, the transport callback
that delivered the data handles the new messages right there, *as that task*: it marks the
task as the loop's current task (``asyncio.tasks._enter_task``, what asyncio itself does around
every task step) and runs the batch in the task's context. So ``asyncio.current_task()``,
``asyncio.timeout`` and task groups behave exactly as in the task, yet a handler that does not
block costs no event-loop trip per read. A step that blocks is handed to the task, which
awaits it. The handler-driving state machine itself is loop-agnostic (``_driver``).

Streams: an ``asyncio.Protocol`` per connection. ``data_received`` feeds the connection's
decoder and, when the connection task is parked, handles the new frames inline. Replies of a
batch go out with one ``transport.write``; a sender waits only after ``pause_writing`` (the
transport's buffer passed its high-water mark, see ``server_framework._asyncio_flow``). Reading
pauses while more than ``READ_HIGH_WATER`` received bytes wait to be handled.

Datagrams are in ``_asyncio_datagram``, on the same driver.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import socket
from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from handlers.base import StreamClient
from protocols import ProxyHeaderParser, ProxyProtocolError
from server_framework import engine
from server_framework._asyncio_flow import BATCH_FULL, READ_HIGH_WATER, WriteFlow
from server_framework.backend import AsyncBackend, Event
from server_framework.sockets import (
    Address,
    PeerCredentials,
    SocketProxy,
    normalize_address,
    peer_credentials,
    set_abortive_close,
)

from ._admission import MAX_CONNECTIONS, PER_IP, REFUSAL_ANSWER_TIMEOUT, REFUSED, Admission, Token
from ._base import Listener, OptionsT
from ._driver import (
    ACCEPT_BATCH,
    ACCEPT_RETRY_DELAY,
    FIRST_REQUEST_GRACE,
    RESOURCE_ERRNOS,
    ConnectionDriver,
    DriverCore,
    RateLimitedLog,
    ServerCounters,
    begin_stop,
    bind_log_context,
    bump,
    errno_name,
    is_handshake_timeout,
    logger,
    not_tls_hint,
    now,
    stop_all,
)
from ._options import StreamOptions

__all__ = ["AsyncIODriver", "AsyncIOListener", "AsyncIOStreamListener", "drain_tasks"]

# Private but stable since Python 3.7 (C-accelerated): asyncio's own task steps use them.
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task


async def drain_tasks(
    tasks: set[asyncio.Task[None]],
    grace: float,
    what: str,
    log: Any = logger,
    counters: ServerCounters | None = None,
) -> None:
    """Let ``tasks`` finish within ``grace`` seconds, then cancel the rest (logging their count
    to ``log``, the server's logger, and counting them in ``counters``)."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=grace)
    if pending:
        if counters is not None:
            bump(counters.expired, "shutdown_timeout", len(pending))
        log.warning(f"cancelling {what} still busy after the grace period", count=len(pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)


class AsyncIOCore(DriverCore):
    """The per-read part of :class:`AsyncIODriver`: its state, and handling data inline.

    The reference of the compiled engine's ``AsyncIOCore`` (``server_framework/_cengine.pyx``),
    which replaces it when the compiled engine runs; a change to one is a change to both.
    """

    __slots__ = (
        "_context",
        "_eof",
        "_loop",
        "_task",
        "_timer",
        "_timer_at",
        "_waiter",
    )

    # Set by AsyncIODriver._init_driver (which documents them).
    _context: contextvars.Context | None
    _eof: bool
    _loop: asyncio.AbstractEventLoop
    _task: asyncio.Task[None] | None
    _timer: asyncio.TimerHandle | None
    _timer_at: float
    _waiter: asyncio.Future[object] | None

    if TYPE_CHECKING:  # provided by AsyncIODriver

        def _arm(self) -> None: ...

    def _deliver(self) -> None:
        """New data was queued: handle it inline if the task is parked, else it will see it."""
        waiter = self._waiter
        if waiter is None:
            return
        loop = self._loop
        task = self._task
        assert task is not None
        assert self._context is not None
        try:
            _enter_task(loop, task)
        except RuntimeError:  # called from inside another task: let our task do the work
            self._wake()
            return
        try:
            blocked = self._context.run(self._process_batch)
        finally:
            _leave_task(loop, task)
        if blocked is BATCH_FULL:
            self._wake()
        elif blocked is not None:
            self._wake(blocked)
        elif (
            self._lost or self._close_requested or self._stopping or self._eof or self._needs_task()
        ):
            self._wake()
        elif (  # self._timer is not None or self._may_expire(), inlined: runs for every read
            self._timer is not None
            or self._params is not None
            or self._idle_timeout is not None
            or (self._frame_timeout is not None and self._decoder.buffered)
        ):
            self._arm()

    def _process_batch(self) -> Any:
        return self._process()

    def _needs_task(self) -> bool:
        """True if the task must run before waiting again (e.g. to drain writes)."""
        return False

    def _wake(self, value: object = None) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(value)


if TYPE_CHECKING:
    _AsyncIOCore = AsyncIOCore
else:
    _AsyncIOCore = AsyncIOCore if engine.compiled is None else engine.compiled.AsyncIOCore


class AsyncIODriver(_AsyncIOCore, ConnectionDriver):
    """Task, waiter and deadline timer of one connection or datagram peer on an asyncio loop.

    Subclasses call `_init_driver`, define ``_on_start`` and ``_cleanup``, and may override
    ``_before_wait``; their per-read core may override ``_process_batch`` and ``_needs_task``.

    Deadlines (idle, frame, request; see ``ConnectionDriver._deadline``) share one timer per
    connection, armed when the connection parks and re-armed only when it fires early or a
    nearer deadline appears: a request costs no timer operation unless the handler asks for
    a ``RecvParams`` timeout.
    """

    __slots__ = ()

    def _init_driver(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task: asyncio.Task[None] | None = None
        self._context: contextvars.Context | None = None
        self._waiter: asyncio.Future[object] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the first deadline, while parked
        self._timer_at = 0.0  # when it fires (the driver's clock, monotonic)
        self._eof = False

    def _start_task(self) -> asyncio.Task[None]:
        # The task gets its own context (where the log context is bound); the batches run
        # inline by transport callbacks use the same context.
        context = self._context = contextvars.copy_context()
        task = self._task = self._loop.create_task(self._run(), context=context)
        return task

    # -- hooks -------------------------------------------------------------------------

    async def _on_start(self) -> None:
        """Runs first in the task (log context, ``on_connection``)."""

    async def _cleanup(self) -> None:
        """Runs last in the task, whatever happened."""

    async def _before_wait(self) -> None:
        """Runs before each wait for data (e.g. wait for write buffers to drain)."""

    async def _drained(self) -> None:
        """After a full batch: wait until the transport can take more (or is gone)."""

    # -- the task ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._on_start()
            while True:
                blocked = self._process_batch()
                if blocked is BATCH_FULL:
                    await self._drained()
                    continue
                if blocked is not None:
                    await self._finish_blocked(blocked)
                    continue
                if self._should_stop():
                    break
                await self._before_wait()
                woke = await self._wait_data()
                if woke is None:
                    if self._eof:
                        # Handle the messages already received (a half-closed peer still
                        # reads our replies), start nothing new.
                        self._stopping = True
                elif isinstance(woke, tuple):  # a step run inline blocked: finish it here
                    await self._finish_blocked(woke)
                elif await self._expired(woke):
                    break
        except asyncio.CancelledError:
            self._log.debug(self._words.cancelled)
            raise
        except Exception as exc:
            self._log.error(self._words.failed, exc_info=exc)
        finally:
            self._disarm()
            await self._cleanup()

    async def _wait_data(self) -> Any:
        """Wait for data to be handled (``None``, or a blocked step handed over), or a deadline.

        Returns ``None`` also on EOF and when asked to stop, or the deadline's marker.
        """
        if self._eof or self._should_stop():
            return None
        waiter: asyncio.Future[object] = self._loop.create_future()
        self._waiter = waiter
        if self._timer is not None or self._may_expire():
            self._arm()
        try:
            return await waiter
        finally:
            self._waiter = None

    def _arm(self) -> None:
        """Parked: make sure the deadline timer fires no later than the first deadline."""
        deadline = self._deadline()
        if deadline is None:
            return  # an armed timer fires, finds nothing due, and is not re-armed
        when = deadline[0]
        if self._timer is not None:
            if self._timer_at <= when:
                return  # it fires first and re-checks
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_later(when - now(), self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        """The deadline timer: wake the parked task with the deadline that expired, if any."""
        self._timer = None
        if self._waiter is None:
            return  # busy: the task re-arms when it parks again
        deadline = self._deadline()
        if deadline is None:
            return
        when, marker = deadline
        if when <= now():
            self._wake(marker)
        else:
            self._timer_at = when
            self._timer = self._loop.call_later(when - now(), self._on_timer)


class AsyncIOStreamCore(AsyncIOCore):
    """The per-read part of :class:`AsyncIOStreamConnection`: its state, ``data_received``
    and the batch of replies. The reference of the compiled engine's ``AsyncIOStreamCore``."""

    __slots__ = (
        "_admitted",
        "_ip_token",
        "_listener",
        "_peer_override",
        "_proxy",
        "_proxy_timer",
        "_reading_paused",
        "_refusal",
        "_sent_mark",
        "_transport",
        "_write_flow",
        "_write_timeout",
        "_write_timer",
        "_written",
    )

    # Set by AsyncIOStreamConnection.__init__ (which documents them).
    _admitted: bool
    _ip_token: Token
    _listener: AsyncIOStreamListener
    _peer_override: Address | None
    _proxy: ProxyHeaderParser | None
    _proxy_timer: asyncio.TimerHandle | None
    _reading_paused: bool
    _refusal: str | None
    _sent_mark: int
    _transport: asyncio.Transport | None
    _write_flow: WriteFlow
    _write_timeout: float | None
    _write_timer: asyncio.TimerHandle | None
    _written: int

    if TYPE_CHECKING:  # provided by AsyncIOStreamConnection

        def _proxy_received(self, data: bytes) -> None: ...
        def _watch_writes(self) -> None: ...
        async def _drain(self) -> None: ...
        def _closed_error(self) -> Exception: ...

    def data_received(self, data: bytes) -> None:
        if self._proxy is not None:
            self._proxy_received(data)
            return
        decoder = self._decoder
        if decoder.broken:
            return
        decoder.feed(data)
        self._received += len(data)  # self._fed(len(data)), inlined: it runs for every read
        self._counters.bytes_in += len(data)
        if self._idle_timeout is not None:
            self._last_read = now()
        if self._waiter is not None:
            self._deliver()
        elif decoder.buffered > READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _process_batch(self) -> Any:
        if self._write_flow.paused and not self._lost:
            return BATCH_FULL  # nothing more until the transport drains
        out = self._out = bytearray()
        try:
            return self._process()
        finally:
            self._out = None
            if out and not self._lost:
                transport = self._transport
                assert transport is not None
                transport.write(out)
                self._written += len(out)
                self._counters.bytes_out += len(out)
                if self._write_timer is None and transport.get_write_buffer_size():
                    self._watch_writes()

    def _needs_task(self) -> bool:
        return self._write_flow.paused

    # The handler's client.send_packet (StreamClient).
    async def send_packet(self, packet: Any) -> None:
        out = self._out
        if out is not None:
            self._protocol.encode_into(packet, out)
            if len(out) >= self._high_water:
                await self._batch_full()
            return
        transport = self._transport
        if self._lost or self._close_requested or transport is None or transport.is_closing():
            raise self._closed_error()
        data = self._protocol.encode(packet)
        transport.write(data)
        self._written += len(data)
        self._counters.bytes_out += len(data)
        if self._write_timer is None and transport.get_write_buffer_size():
            self._watch_writes()
        if self._write_flow.paused:
            await self._drain()


if TYPE_CHECKING:
    _AsyncIOStreamCore = AsyncIOStreamCore
else:
    _AsyncIOStreamCore = (
        AsyncIOStreamCore if engine.compiled is None else engine.compiled.AsyncIOStreamCore
    )


class AsyncIOStreamConnection(
    _AsyncIOStreamCore, AsyncIODriver, StreamClient[Any], asyncio.Protocol
):
    """One connection on asyncio/uvloop: the asyncio Protocol and the handler's client at once."""

    __slots__ = ()

    def __init__(self, listener: AsyncIOStreamListener) -> None:
        options = listener.options
        self._init_stream(options)
        self._init_driver(listener.loop)
        self._listener = listener
        self._admitted = False  # counted against max_connections (at accept, or when made)
        self._ip_token: Token = None  # counted against max_connections_per_ip (_admission)
        self._refusal: str | None = None  # refused: on_refused answers it, for this reason
        self._transport: asyncio.Transport | None = None
        # Reading: paused while too much received data waits (see _asyncio_flow).
        self._reading_paused = False
        # Writing: paused above the transport's high-water mark; the write deadline watches
        # that what the transport holds keeps leaving.
        self._write_flow = WriteFlow(listener.loop)
        self._write_timeout = options.write_timeout
        self._write_timer: asyncio.TimerHandle | None = None
        self._written = 0  # bytes handed to the transport
        self._sent_mark = 0  # bytes gone to the kernel when the write timer was armed
        # The PROXY protocol header, while it is awaited.
        self._proxy: ProxyHeaderParser | None = None
        self._proxy_timer: asyncio.TimerHandle | None = None
        self._peer_override: Address | None = None  # the original client, from that header

    # -- asyncio.Protocol callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)
        listener = self._listener
        if not self._admitted:
            reason = listener.admit(self)
            if reason is not None and not listener.refuse(self, reason):
                self._lost = True
                transport.close()
                return
        if self._refusal is not None:
            listener.answer(self)
            return
        options = listener.options
        if options.proxy_trusted is not None:
            peer = transport.get_extra_info("peername")
            if peer is None:  # reset before we saw it (e.g. a load balancer's health check)
                transport.close()
                return
            if not options.proxy_trusted.is_trusted(peer):
                listener.refuse_proxy(reason="untrusted peer", peer=str(peer))
                transport.close()
                return
            self._proxy = ProxyHeaderParser(options.proxy_protocol or "auto")
            self._proxy_timer = self._loop.call_later(
                options.proxy_header_timeout, self._proxy_expired
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
            listener = self._listener
            token = listener.admission.acquire_address(self._peer_override)
            if token is REFUSED:
                if listener.refuse(self, PER_IP):
                    listener.answer(self)
                else:
                    self._transport.close()
                return
            self._ip_token = token
        self._listener.tasks.add(self._start_task())
        rest = parser.remaining()
        if rest:
            self.data_received(rest)

    def _proxy_expired(self) -> None:
        self._proxy_timer = None
        bump(self._counters.expired, "proxy_header_timeout")
        self._listener.refuse_proxy(reason="no header in time")
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep the transport open: a half-closed peer still reads our replies. Not through
        # TLS, where the transport closes anyway (and asyncio and uvloop log a warning for
        # each connection that asks otherwise).
        return self._listener.options.ssl is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._wake()
        self._write_flow.stop()
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None
        if self._task is None:  # closed before its task started (refused, no PROXY header)
            self._listener.release(self)

    def pause_writing(self) -> None:
        self._write_flow.pause()
        self._watch_writes()

    def resume_writing(self) -> None:
        self._write_flow.resume()

    # -- StreamClient -------------------------------------------------------------------

    async def _batch_full(self) -> None:
        # A handler sent a lot in one step: block, so that the batch is written now, then
        # wait for the transport like any sender.
        self._counters.high_water += 1
        await asyncio.sleep(0)
        if self._write_flow.paused:
            await self._drain()

    async def aclose(self) -> None:
        self._request_close()
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.shield(task)

    def abort(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            set_abortive_close(transport.get_extra_info("socket"))
            transport.abort()  # connection_lost follows
        self._lost = True  # nothing more is written, not even the batch in progress
        self._request_close()

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

    def _ssl_object(self) -> Any:
        """The TLS session (an :class:`ssl.SSLObject`), or None without TLS."""
        assert self._transport is not None
        return self._transport.get_extra_info("ssl_object")

    @property
    def tls_peer_certificate(self) -> dict[str, Any] | None:
        tls = self._ssl_object()
        return None if tls is None else tls.getpeercert()

    @property
    def tls_peer_certificate_der(self) -> bytes | None:
        tls = self._ssl_object()
        return None if tls is None else tls.getpeercert(binary_form=True)

    @property
    def tls_cipher(self) -> tuple[str, str, int] | None:
        tls = self._ssl_object()
        return None if tls is None else tls.cipher()

    @property
    def tls_version(self) -> str | None:
        tls = self._ssl_object()
        return None if tls is None else tls.version()

    @property
    def peer_credentials(self) -> PeerCredentials | None:
        assert self._transport is not None
        return peer_credentials(self._transport.get_extra_info("socket"))

    def __repr__(self) -> str:
        return f"<AsyncIOStreamConnection id={self.id} closing={self.is_closing()}>"

    # -- driver hooks ---------------------------------------------------------------------

    async def _on_start(self) -> None:
        bind_log_context(conn_id=self.id, peer=self._peer_for_log())
        listener = self._listener
        if listener.options.log_connections:
            listener.log.debug("connection accepted")
        await self._connected()

    async def _drained(self) -> None:
        # Quietly: a peer that resets meanwhile ends the connection, not with an error.
        await self._write_flow.wait()

    async def _before_wait(self) -> None:
        if self._write_flow.paused:  # quietly: a peer that resets meanwhile is no error
            await self._write_flow.wait()
        if self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()

    async def _cleanup(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._log_unframed()
        self._decoder.close()  # an unfinished frame (up to max_frame_size) is let go now
        try:
            await self._end_handler()
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.close()
            if self._listener.options.log_connections:
                self._listener.log.debug("connection closed")
        finally:
            self._listener.release(self)

    async def _answer(self) -> None:
        """The task of a refused connection: the handler's ``on_refused``, then close."""
        listener = self._listener
        try:
            bind_log_context(conn_id=self.id, peer=self._peer_for_log())
            async with asyncio.timeout(REFUSAL_ANSWER_TIMEOUT):
                assert self._refusal is not None
                await listener.options.handler.on_refused(self, self._refusal)
        except TimeoutError:
            self._log.debug("on_refused() did not finish in time", timeout=REFUSAL_ANSWER_TIMEOUT)
        except Exception as exc:
            self._log.error("on_refused() failed", exc_info=exc)
        finally:
            self._request_close()
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.close()
            listener.release(self)

    def _watch_writes(self) -> None:
        """Data was handed to the transport: if some stays there, start the write deadline."""
        if self._write_timer is not None or self._write_timeout is None:
            return
        transport = self._transport
        assert transport is not None
        pending = transport.get_write_buffer_size()
        if pending:
            self._sent_mark = self._written - pending
            self._write_timer = self._loop.call_later(self._write_timeout, self._check_writes)

    def _check_writes(self) -> None:
        """The write deadline: close the connection if nothing left the transport meanwhile."""
        self._write_timer = None
        transport = self._transport
        if self._lost or transport is None:
            return
        pending = transport.get_write_buffer_size()
        if not pending:
            return
        sent = self._written - pending
        if sent > self._sent_mark:
            self._sent_mark = sent
            assert self._write_timeout is not None
            self._write_timer = self._loop.call_later(self._write_timeout, self._check_writes)
            return
        self._broken_reason = (
            f"the peer read nothing for {self._write_timeout} seconds (write_timeout)"
        )
        bump(self._counters.expired, "write_timeout")
        self._log.debug("closing connection: write_timeout expired", unsent=pending)
        transport.abort()  # connection_lost follows: waiting senders raise

    async def _drain(self) -> None:
        self._counters.high_water += 1
        await self._write_flow.wait()
        if self._lost:
            raise self._closed_error()


class AsyncIOListener(Listener[OptionsT]):
    """What the asyncio listeners share: start, serve until stopped, stop gracefully."""

    async def serve(self, stop: Event) -> None:
        self.stop = stop
        grace = self.options.shutdown_timeout
        try:
            await self._start()
            await stop.wait()
        except asyncio.CancelledError:
            grace = 0.0
            raise
        finally:
            await self.backend.cancel_shielded(self._stop, grace)

    @abstractmethod
    async def _start(self) -> None:
        """Start receiving (accepting connections, or reading datagrams)."""

    @abstractmethod
    async def _stop(self, grace: float) -> None:
        """Stop receiving, let work in progress finish within ``grace`` s, cancel the rest."""


class AsyncIOStreamListener(AsyncIOListener[StreamOptions]):
    """Runs one stream server's listening sockets and connections on an asyncio loop.

    Accepting: on uvloop without TLS, uvloop's own accept loop (in C; it counts a connection
    when it is made, at once). Otherwise our own, on the listening socket's readiness: it
    counts every accepted socket against ``max_connections`` before any TLS handshake (the
    loop's would count it only once the handshake is done), and backs off for
    ``ACCEPT_RETRY_DELAY`` when accept() fails for lack of descriptors or memory (CPython
    3.11's accept loop retries at once, up to ``backlog`` times per wake-up, logging each).
    """

    def __init__(
        self, options: StreamOptions, sockets: list[socket.socket], backend: AsyncBackend
    ) -> None:
        super().__init__(options, sockets, backend)
        self.loop = asyncio.get_running_loop()
        self.connections: set[AsyncIOStreamConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # the connections' tasks
        self._servers: list[asyncio.Server] = []  # uvloop's accept loops
        self._uvloop_sockets: list[socket.socket] = []  # what they accept on (given dups)
        self._accepting: list[socket.socket] = []  # our accept loop's sockets
        self._paused = False  # not accepting: at max_connections with overload="pause"
        self.admission = Admission(options, self.log)
        self._answered: set[AsyncIOStreamConnection] = set()  # refused: on_refused runs
        self._retries: list[asyncio.TimerHandle] = []  # accept back-offs
        self._handshakes: set[asyncio.Task[None]] = set()  # connections not made yet
        # The stock loop's transport factory (None on uvloop): plain TCP connections use it
        # directly, without a connect_accepted_socket task (see _accepted).
        self._make_transport: Callable[[socket.socket, asyncio.Protocol], object] | None = (
            getattr(self.loop, "_make_socket_transport", None)
            if isinstance(self.loop, asyncio.selector_events.BaseSelectorEventLoop)
            else None
        )
        log = self.log
        self.counters = counters = options.counters
        refused = counters.refused
        self._accept_failures = RateLimitedLog("accept() failed, retrying", "error", log)
        self.refuse_proxy = RateLimitedLog(
            "closing connection: PROXY protocol check failed",
            log=log,
            table=refused,
            key="proxy_protocol",
        )
        self.refuse_plaintext = RateLimitedLog(
            "closing connection: the TLS handshake failed", log=log
        )

    async def aclose(self) -> None:
        self._stop_accepting()

    def active(self) -> tuple[int, int]:
        return (len(self.connections), 0)

    async def _start(self) -> None:
        """Start accepting on every socket."""
        options = self.options
        if self.backend.name == "uvloop" and options.ssl is None:
            self._uvloop_sockets = list(self.sockets)
            await self._start_uvloop()
            return
        for sock in self.sockets:
            sock.setblocking(False)
            self._accepting.append(sock)
            self.loop.add_reader(sock.fileno(), self._on_acceptable, sock)

    async def _start_uvloop(self) -> None:
        """Start uvloop's accept loops, each on a duplicate of a listening socket: pausing
        (``overload="pause"``) closes them, which closes only the duplicate, and the kernel
        keeps queueing connections on the socket."""
        factory: Callable[[], asyncio.Protocol] = lambda: AsyncIOStreamConnection(self)  # noqa: E731
        for sock in list(self._uvloop_sockets):
            if not self._uvloop_sockets:
                return  # stopped meanwhile (a resume's task): the sockets are closed
            if sock.family == getattr(socket, "AF_UNIX", None):
                created = await self.loop.create_unix_server(factory, sock=sock.dup())
            else:
                created = await self.loop.create_server(factory, sock=sock.dup())
            if not self._uvloop_sockets:
                created.close()
                return
            self._servers.append(created)

    def _pause(self) -> None:
        """At ``max_connections`` with ``overload="pause"``: stop accepting."""
        if self._paused:
            return
        self._paused = True
        for sock in self._accepting:
            self.loop.remove_reader(sock.fileno())
        for created in self._servers:
            created.close()
        self._servers.clear()

    def _resume(self) -> None:
        """Below the limit again: accept again (unless stopping)."""
        if not self._paused or self.stopping():
            return
        self._paused = False
        for sock in self._accepting:
            self.loop.add_reader(sock.fileno(), self._on_acceptable, sock)
        if self._uvloop_sockets:
            task = self.loop.create_task(self._start_uvloop())
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _on_acceptable(self, sock: socket.socket) -> None:
        admission = self.admission
        for _ in range(ACCEPT_BATCH):
            if admission.pause and admission.over_limit(len(self.connections)):
                self._pause()
                return
            try:
                conn_sock, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the peer gave up while queued
                bump(self.counters.accept_errors, errno_name(exc))
                self._accept_failures(error=str(exc))
                if exc.errno in RESOURCE_ERRNOS:  # back off: retrying at once would spin
                    self.loop.remove_reader(sock.fileno())
                    self._retries.append(
                        self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting, sock)
                    )
                return
            self._accepted(conn_sock, peer)

    def _resume_accepting(self, sock: socket.socket) -> None:
        self._retries = [timer for timer in self._retries if not timer.cancelled()]
        if sock in self._accepting and not self._paused:
            self.loop.add_reader(sock.fileno(), self._on_acceptable, sock)

    def _accepted(self, conn_sock: socket.socket, peer: Any) -> None:
        admission = self.admission
        reason, token = admission.check(
            len(self.connections), False if self.options.proxy_trusted else peer
        )
        if reason is not None and not admission.refuse(reason):
            conn_sock.close()  # counted; the handler does not answer it
            return
        conn_sock.setblocking(False)
        if conn_sock.family != getattr(socket, "AF_UNIX", None):
            conn_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = AsyncIOStreamConnection(self)
        conn._admitted = True
        if reason is not None:
            self._will_answer(conn, reason)
        else:
            conn._ip_token = token
            self.connections.add(conn)
        if self.stopping():
            # Accepted in the turn the stop was asked (the accept loop goes away at the next):
            # it was queued before, and is served as the connections waiting then are.
            self.loop.call_later(FIRST_REQUEST_GRACE, conn._begin_stop)
        if self._make_transport is not None and self.options.ssl is None:
            # What asyncio's own accept loop does, without its task per connection: the
            # transport calls connection_made soon. (Private but stable since Python 3.4.)
            self._make_transport(conn_sock, conn)
            return
        task = self.loop.create_task(self._make_connection(conn, conn_sock, peer))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _make_connection(
        self, conn: AsyncIOStreamConnection, sock: socket.socket, peer: Any
    ) -> None:
        """Hand an accepted socket to the loop (the TLS handshake, if any, happens here)."""
        options = self.options
        tls: dict[str, Any] = {}
        if options.ssl is not None:
            tls = {
                "ssl": options.ssl,
                "ssl_handshake_timeout": options.ssl_handshake_timeout,
                "ssl_shutdown_timeout": options.ssl_shutdown_timeout,
            }
        try:
            await self.loop.connect_accepted_socket(lambda: conn, sock, **tls)
        except Exception as exc:  # a failed or timed-out handshake, a reset: that peer only
            if options.ssl is not None:
                bump(self.counters.refused, "tls_handshake")
                if is_handshake_timeout(exc):
                    bump(self.counters.expired, "ssl_handshake_timeout")
            hint = not_tls_hint(exc) if options.ssl is not None else None
            if hint is not None:
                address = normalize_address(peer)
                where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
                self.refuse_plaintext(hint=hint, peer=where)
            else:
                self.log.debug("connection failed before it started", error=str(exc) or repr(exc))
        finally:
            if conn._transport is None:  # never made: it holds nothing but its socket
                self.release(conn)
                sock.close()

    def admit(self, conn: AsyncIOStreamConnection) -> str | None:
        """Count a connection made by uvloop's accept loop: None, or why it is refused."""
        admission = self.admission
        assert conn._transport is not None
        reason, token = admission.check(
            len(self.connections),
            False if self.options.proxy_trusted else conn._transport.get_extra_info("peername"),
        )
        if reason is not None:
            if reason == MAX_CONNECTIONS and admission.pause:
                self._pause()  # uvloop's accept loop took more than the limit in one go
            return reason
        conn._ip_token = token
        self.connections.add(conn)
        if admission.pause and admission.over_limit(len(self.connections)):
            # Full now: stop uvloop's accept loop before it takes one more (it accepts first
            # and asks us after, so a connection past the limit would be refused).
            self._pause()
        if self.stopping():
            # Accepted (by uvloop's accept loop, or a TLS handshake) before we stopped
            # accepting, made only now: its first request may be on the way, as for the
            # connections that were waiting when the drain began.
            self.loop.call_later(FIRST_REQUEST_GRACE, conn._begin_stop)
        return None

    def refuse(self, conn: AsyncIOStreamConnection, reason: str) -> bool:
        """Count a refused connection; True if the handler answers it (``on_refused``, once
        the connection is made: :meth:`answer`)."""
        if not self.admission.refuse(reason):
            return False
        self._will_answer(conn, reason)
        return True

    def _will_answer(self, conn: AsyncIOStreamConnection, reason: str) -> None:
        conn._refusal = reason
        self._answered.add(conn)

    def answer(self, conn: AsyncIOStreamConnection) -> None:
        """Run a refused connection's ``on_refused`` in a task of its own (cancelled at stop)."""
        task = self.loop.create_task(conn._answer(), context=contextvars.copy_context())
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def release(self, conn: AsyncIOStreamConnection) -> None:
        self.connections.discard(conn)
        if conn._task is not None:
            self.tasks.discard(conn._task)
        token = conn._ip_token
        if token is not None:
            conn._ip_token = None
            self.admission.release_address(token)
        if conn in self._answered:
            self._answered.discard(conn)
            self.admission.answered()
        if self.admission.released(len(self.connections)):
            self._resume()

    def _stop_accepting(self) -> None:
        """Close the listening sockets at once: new clients are refused, not queued."""
        for created in self._servers:
            created.close()
        self._servers.clear()
        for sock in self._uvloop_sockets:
            sock.close()  # uvloop's accept loops had duplicates
        self._uvloop_sockets.clear()
        for sock in self._accepting:
            if not self._paused:
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self._accepting.clear()
        for timer in self._retries:
            timer.cancel()
        self._retries.clear()

    async def _drain(self, grace: float) -> None:
        """Wait until every connection has ended, ``grace`` seconds at most; then cancel the
        rest. The set is read again after each end: a connection accepted before the stop
        may be made (its task created) only after the drain began."""
        deadline = self.loop.time() + grace
        while self.connections or self.tasks or self._handshakes:
            remaining = deadline - self.loop.time()
            pending = set(self.tasks) | self._handshakes
            if remaining <= 0:
                await drain_tasks(pending, 0, "connections", self.log, self.counters)
                return
            if pending:
                await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            else:  # connections made but not started yet: they start at the next turns
                await asyncio.sleep(min(remaining, 0.005))

    async def _stop(self, grace: float) -> None:
        """Stop accepting, let requests in progress finish within ``grace`` s, cancel the rest."""
        self._stop_accepting()
        for task in self._handshakes:
            task.cancel()  # no request yet: nothing to finish
        fresh = begin_stop(self.connections)
        later = (
            self.loop.call_later(min(FIRST_REQUEST_GRACE, grace), stop_all, fresh)
            if fresh
            else None
        )
        try:
            await self._drain(grace)
        finally:
            if later is not None:
                later.cancel()
