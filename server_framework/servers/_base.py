"""The server lifecycle shared by every transport: enter, serve, shut down, exit.

``async with server:`` binds the sockets (so ``get_addresses()`` is known at once, even with
``port=0``) and runs the handler's ``service_init``; ``await server.serve_forever()`` accepts
until ``await server.shutdown()`` (from any task; ``Standalone*`` servers add "from any thread");
leaving the ``async with`` block shuts down if needed, then closes what ``service_init``
entered on its exit stack, the sockets, and any Unix socket file we created.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, Final, Generic, Protocol, Self, TypeVar

import structlog

from server_framework import engine
from server_framework._signals import serving
from server_framework.backend import AsyncBackend, Event, current
from server_framework.log import ensure_logging
from server_framework.metrics import LATENCY_BUCKETS, LatencyHistogram, ServerMetrics
from server_framework.metrics import register as register_metrics
from server_framework.metrics import unregister as unregister_metrics
from server_framework.sockets import (
    Address,
    SocketProxy,
    UnixSocketFile,
    check_adopted,
    normalize_address,
    unix_text,
)
from server_framework.watchdog import LoopWatch, watch_loop

from ._options import DatagramOptions, StreamOptions

__all__ = ["AsyncBaseServer", "Listener"]

logger: Final = structlog.get_logger("server_framework.servers")


def _address_text(address: Address) -> str:
    """``127.0.0.1:9000``, ``[::1]:9000``, or a Unix socket's path, for log lines."""
    if isinstance(address, str):
        return unix_text(address)
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


OptionsT = TypeVar("OptionsT", bound=StreamOptions | DatagramOptions)


class SupportsSet(Protocol):
    """An event to set: ``threading.Event``, ``asyncio.Event``, ``trio.Event``..."""

    def set(self) -> object:
        """Set it."""


class Listener(ABC, Generic[OptionsT]):
    """The loop-specific part of a server (one implementation per event loop).

    It gets the server's options, its bound sockets and the backend, never the server itself.
    """

    def __init__(self, options: OptionsT, sockets: list[socket.socket], backend: AsyncBackend):
        self.options: OptionsT = options
        self.sockets = sockets
        self.backend = backend
        #: The ``stop`` event of `serve`: set once the server is asked to shut down.
        self.stop: Event | None = None
        #: The servers' logger as a concrete bound logger, for the lines logged once per
        #: connection: the module's lazy proxy finds its method through ``__getattr__`` on
        #: every call (an AttributeError made and dropped each time, about 4k instructions
        #: per line). Bound when the listener is made, which ``__aenter__`` does after
        #: ``ensure_logging``: these lines follow the configuration in force at start. A
        #: server given its own ``logger=`` logs through that (``options.log``).
        self.log: Any = logger.bind() if options.logger is None else options.log

    def stopping(self) -> bool:
        """True once the server is shutting down: new peers are refused."""
        return self.stop is not None and self.stop.is_set()

    def active(self) -> tuple[int, int]:
        """``(connections, datagram peers)`` served now (read from any thread: a length)."""
        return (0, 0)

    @abstractmethod
    async def serve(self, stop: Event) -> None:
        """Accept and serve until ``stop`` is set, then stop gracefully (see ``shutdown``)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the listener holds if ``serve`` never ran."""


class AsyncBaseServer(ABC, Generic[OptionsT]):
    """What every asynchronous server offers, whatever its transport.

    Usage::

        async with AsyncTCPServer("127.0.0.1", 9000, protocol, handler) as server:
            await server.serve_forever()
    """

    def __init__(self, options: OptionsT) -> None:
        self._options: OptionsT = options
        self._backend: AsyncBackend | None = None
        self._sockets: list[socket.socket] = []
        self._adopted: list[socket.socket] = []  # see _adopt
        self._unix_file: UnixSocketFile | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._listener: Listener[OptionsT] | None = None
        self._stop_event: Event | None = None
        self._stopped_event: Event | None = None
        self._stop_requested = False
        self._serving = False
        self._closed = False
        self._sockets_closed = False
        self._watch: LoopWatch | None = None  # the loop's lag, while serving
        self._name = ""  # the listener's name in metrics, once bound

    # -- to be provided by each transport ------------------------------------------------

    @abstractmethod
    def _bind(self) -> None:
        """Create and bind ``self._sockets`` (and ``self._unix_file``)."""

    def _adopt(self, sockets: Sequence[socket.socket], kind: socket.SocketKind) -> None:
        """Serve ``sockets``, bound by someone else (``from_sockets``), instead of binding."""
        check_adopted(list(sockets), kind)
        self._adopted = list(sockets)

    def _bind_adopted(self) -> None:
        """The ``_bind`` of a server on adopted sockets: use them as they are."""
        for sock in self._adopted:
            sock.setblocking(False)
        self._sockets = list(self._adopted)

    @abstractmethod
    def _make_listener(self, backend: AsyncBackend) -> Listener[OptionsT]:
        """Return the loop-specific listener for the bound sockets."""

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._backend is not None:
            raise RuntimeError("a server can be entered only once")
        ensure_logging()  # a program that configured nothing gets the safe default
        engine.note_fallback()  # no compiled engine (no C compiler at install): say so once
        backend = self._backend = current()
        self._stop_event = backend.create_event()
        self._stopped_event = backend.create_event()
        if self._stop_requested:
            self._stop_event.set()
        if not self._sockets:  # a standalone server binds at construction
            self._bind()
        stack = AsyncExitStack()
        try:
            await stack.__aenter__()
            self._exit_stack = stack
            await self._options.handler.service_init(stack, self)
            self._listener = self._make_listener(backend)
            self._name = self._listener_name()
        except BaseException:
            await self._close_resources()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.shutdown()
        await self._close_resources()

    async def serve_forever(self, *, is_up_event: SupportsSet | None = None) -> None:
        """Accept and serve clients until :meth:`shutdown` is called.

        Args:
            is_up_event: Set (its ``set()`` called, e.g. a ``threading.Event`` or the loop's
                event) once the server serves, as EasyNetwork's ``serve_forever`` does.

        Raises:
            RuntimeError: the server is not entered (``async with server:``), already
                serving, or closed.

        Cancellation: cancelling ``serve_forever`` stops the server like :meth:`shutdown`,
        without the grace period (connections are cancelled at once).
        """
        if self._listener is None or self._stop_event is None or self._closed:
            raise RuntimeError(
                "enter the server first: async with server: await server.serve_forever()"
            )
        if self._serving:
            raise RuntimeError("the server is already serving")
        if self._stop_requested:
            return
        self._serving = True
        self._options.log.info(
            "server started",
            transport=self._transport_name(),
            addresses=[_address_text(address) for address in self.get_addresses()],
            backend=self.backend().name,
        )
        if is_up_event is not None:
            is_up_event.set()
        register_metrics(self)
        try:
            # Ctrl-C under server_framework.run() stops it gracefully; a blocked loop is told.
            with serving(self):
                async with watch_loop(self.backend(), self._options.warn_blocked) as watch:
                    self._watch = watch
                    await self._listener.serve(self._stop_event)
        finally:
            unregister_metrics(self)
            self._watch = None
            self._serving = False
            self._close_sockets()
            assert self._stopped_event is not None
            self._stopped_event.set()
            self._options.log.info("server stopped")

    async def shutdown(self) -> None:
        """Stop accepting, let requests in progress finish, close connections; then return.

        Connections waiting for a request are closed at once; those handling one get up to
        ``shutdown_timeout`` seconds to finish it before they are cancelled. Safe to call
        several times, and before or without ``serve_forever``.
        """
        self._request_shutdown()
        if self._serving:
            assert self._stopped_event is not None
            await self._stopped_event.wait()

    def _grace(self) -> float:
        """How long requests in progress may take to finish once shutdown starts."""
        return self._options.shutdown_timeout

    def _request_shutdown(self) -> None:
        """Ask ``serve_forever`` to stop, without waiting (call it in the loop's thread)."""
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()

    def _listener_name(self) -> str:
        """The server's name in metrics: its transport and first address."""
        transport = self._transport_name()
        addresses = self.get_addresses()
        return f"{transport}://{_address_text(addresses[0])}" if addresses else transport

    def is_serving(self) -> bool:
        """True while :meth:`serve_forever` accepts clients."""
        return self._serving and not self._stop_requested

    @property
    def metrics(self) -> ServerMetrics:
        """What the server has counted so far: a :class:`~server_framework.metrics.ServerMetrics`
        snapshot (counters since the server was made, gauges as they are now). Readable from
        any thread, before, while and after serving."""
        counters = self._options.counters
        listener = self._listener
        connections, peers = listener.active() if listener is not None else (0, 0)
        watch = self._watch
        handler = self._options.handler
        busy = getattr(handler, "busy_threads", 0)
        buckets = counters.bucket_counts()
        return ServerMetrics(
            listener=self._name or self._transport_name(),
            transport=self._transport_name(),
            serving=self.is_serving(),
            draining=self._serving and self._stop_requested,
            connections_accepted=counters.accepted,
            connections_refused=dict(counters.refused),
            connections_active=connections,
            peers_active=peers,
            requests=counters.requests,
            bytes_received=counters.bytes_in,
            bytes_sent=counters.bytes_out,
            handler_errors=dict(counters.errors),
            deadlines_expired=dict(counters.expired),
            accept_errors=dict(counters.accept_errors),
            datagrams_received=counters.datagrams,
            datagrams_dropped=dict(counters.dropped),
            write_high_water_hits=counters.high_water,
            threads_busy=busy if isinstance(busy, int) else 0,
            loop_lag=watch.lag() if watch is not None else float("nan"),
            latency=LatencyHistogram(
                bounds=LATENCY_BUCKETS,
                counts=buckets,
                sum=counters.latency_sum,
                count=sum(buckets),
            ),
        )

    def _transport_name(self) -> str:
        """What the server speaks, as logs and the command line name it: ``"tcp"``,
        ``"tls"``, ``"udp"``, ``"unix"`` or ``"unix-datagram"`` (from its bound sockets, so
        adopted ones too)."""
        options = self._options
        unix = bool(self._sockets) and self._sockets[0].family == getattr(socket, "AF_UNIX", -1)
        if isinstance(options, StreamOptions):
            if unix:
                return "unix"
            return "tls" if options.ssl is not None else "tcp"
        return "unix-datagram" if unix else "udp"

    def get_addresses(self) -> list[Address]:
        """The bound addresses: ``(host, port)`` tuples, or the Unix socket path."""
        if self._sockets_closed:
            return []
        if self._unix_file is not None:
            return [self._unix_file.path]
        # A listener closes its sockets as soon as it stops accepting.
        return [
            normalize_address(sock.getsockname()) for sock in self._sockets if sock.fileno() >= 0
        ]

    def get_sockets(self) -> list[SocketProxy]:
        """The bound sockets, as :class:`~server_framework.sockets.SocketProxy` views (options,
        addresses, ``fileno``; no I/O); empty once they are closed."""
        if self._sockets_closed:
            return []
        return [SocketProxy(sock) for sock in self._sockets if sock.fileno() >= 0]

    def is_listening(self) -> bool:
        """True while the server's sockets are bound and open: the kernel queues connections
        (or datagrams) for it, from entering (construction, for a standalone server) until
        the server stops serving or is closed."""
        return bool(self._sockets) and not self._sockets_closed

    async def server_close(self) -> None:
        """Shut down (as :meth:`shutdown`), close the sockets and release what ``service_init``
        entered on its exit stack; leaving ``async with`` does the same. Safe to call several
        times."""
        await self.shutdown()
        await self._close_resources()

    def backend(self) -> AsyncBackend:
        """The :class:`~server_framework.backend.AsyncBackend` the server runs on.

        Raises:
            RuntimeError: the server has not been entered yet.
        """
        if self._backend is None:
            raise RuntimeError("the server's backend is known once the server is entered")
        return self._backend

    # -- internals ---------------------------------------------------------------------

    def _close_sockets(self) -> None:
        self._sockets_closed = True
        for sock in self._sockets:
            sock.close()
        if self._unix_file is not None:
            self._unix_file.unlink()

    async def _close_resources(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._listener is not None and not self._serving:
                await self._listener.aclose()
        finally:
            self._close_sockets()
            stack, self._exit_stack = self._exit_stack, None
            if stack is not None:
                await stack.aclose()
