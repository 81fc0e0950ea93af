"""Standalone servers: the asynchronous servers, for synchronous programs.

A standalone server binds its sockets at construction (so :meth:`get_addresses` is known at
once), runs its own event loop in :meth:`serve_forever` (which blocks the calling thread), and
stops when :meth:`shutdown` is called from any other thread, or from the loop's own thread
(a handler), where it only requests the stop and returns at once instead of deadlocking.

Typical use in a background thread::

    server = StandaloneTCPServer("127.0.0.1", 0, protocol, handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    server.wait_started()
    ...
    server.shutdown()        # returns once the server has stopped
    thread.join()
    server.server_close()    # or use the server as a context manager
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Generic, Self, TypeVar

from handlers.base import DatagramRequestHandler, StreamRequestHandler
from protocols import DatagramProtocol, StreamProtocol
from server_framework.backend import BackendName, ThreadsPortal, current, run
from server_framework.metrics import ServerMetrics
from server_framework.sockets import Address, SocketProxy

from ._base import AsyncBaseServer, SupportsSet
from ._datagram import AsyncUDPServer, AsyncUnixDatagramServer
from ._stream import AsyncTCPServer, AsyncUnixStreamServer

__all__ = [
    "StandaloneServer",
    "StandaloneTCPServer",
    "StandaloneUDPServer",
    "StandaloneUnixDatagramServer",
    "StandaloneUnixStreamServer",
]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ServerT = TypeVar("ServerT", bound=AsyncBaseServer[Any])


class StandaloneServer(Generic[ServerT]):
    """A synchronous facade over an asynchronous server (see the module documentation).

    Args:
        server: The asynchronous server to run; it must not have been entered.
        backend: The event loop to run it on (default: uvloop where installed, else asyncio).
    """

    def __init__(self, server: ServerT, *, backend: BackendName | None = None) -> None:
        self._server = server
        self._backend_name = backend
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._portal: ThreadsPortal | None = None
        self._loop_thread: int | None = None
        self._shutdown_requested = False
        self._running = False
        self._closed = False
        server._bind()

    @property
    def server(self) -> ServerT:
        """The underlying asynchronous server."""
        return self._server

    def serve_forever(self, *, is_up_event: SupportsSet | None = None) -> None:
        """Run the event loop and serve until :meth:`shutdown`; blocks the calling thread.

        In the main thread, Ctrl-C and SIGTERM stop it gracefully, as under
        :func:`server_framework.run` (after Ctrl-C, ``SystemExit(130)``).

        Args:
            is_up_event: Set (e.g. a ``threading.Event``) once the server serves.

        Raises:
            RuntimeError: already serving, or closed.
        """
        with self._lock:
            if self._running or self._closed:
                raise RuntimeError("the server is already serving or closed")
            self._running = True
            self._stopped.clear()
        try:
            run(self._main, is_up_event, backend=self._backend_name)
        finally:
            with self._lock:
                self._running = False
                self._portal = None
                self._loop_thread = None
            self._started.set()  # unblock wait_started() callers if start-up failed
            self._stopped.set()

    async def _main(self, is_up_event: SupportsSet | None) -> None:
        server = self._server
        async with server, current().create_threads_portal() as portal:
            with self._lock:
                self._portal = portal
                self._loop_thread = threading.get_ident()
                stop_now = self._shutdown_requested
            self._started.set()
            if stop_now:
                return
            await server.serve_forever(is_up_event=is_up_event)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until :meth:`serve_forever` accepts clients (or has failed); False on timeout."""
        return self._started.wait(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop serving: from another thread, returns once the server has stopped.

        From the server's own loop thread (e.g. inside a handler) it only requests the stop
        and returns at once. Before :meth:`serve_forever` starts, it makes it return at once.

        Args:
            timeout: Longest wait for the stop, in seconds (None: as long as it takes).
        """
        with self._lock:
            self._shutdown_requested = True
            portal = self._portal
            in_loop = self._loop_thread == threading.get_ident()
            running = self._running
        if in_loop:
            self._server._request_shutdown()
            return
        if portal is not None:
            try:
                portal.run_sync(self._server._request_shutdown)
            except RuntimeError:
                pass  # the portal just closed: the server is stopping anyway
        if running:
            self._stopped.wait(timeout)

    def is_serving(self) -> bool:
        """True while the server accepts clients."""
        return self._server.is_serving()

    @property
    def metrics(self) -> ServerMetrics:
        """What the server has counted so far (see the asynchronous server's ``metrics``);
        readable from any thread."""
        return self._server.metrics

    def get_addresses(self) -> list[Address]:
        """The bound addresses (known from construction)."""
        return self._server.get_addresses()

    def get_sockets(self) -> list[SocketProxy]:
        """The bound sockets, as :class:`~server_framework.sockets.SocketProxy` views."""
        return self._server.get_sockets()

    def is_listening(self) -> bool:
        """True while the sockets are bound and open (from construction until closed)."""
        return self._server.is_listening()

    def server_close(self) -> None:
        """Stop (if serving) and release the sockets; idempotent."""
        self.shutdown()
        with self._lock:
            if self._closed or self._running:
                return
            self._closed = True
        self._server._close_sockets()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server_close()


class StandaloneTCPServer(
    StandaloneServer[AsyncTCPServer[RequestT, ResponseT]], Generic[RequestT, ResponseT]
):
    """:class:`~server_framework.servers.AsyncTCPServer` for synchronous programs.

    Takes the same arguments, plus ``backend="asyncio" | "uvloop" | "trio"``.
    """

    def __init__(
        self,
        host: str | Sequence[str] | None,
        port: int,
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        *,
        backend: BackendName | None = None,
        **options: Any,
    ) -> None:
        super().__init__(AsyncTCPServer(host, port, protocol, handler, **options), backend=backend)


class StandaloneUnixStreamServer(
    StandaloneServer[AsyncUnixStreamServer[RequestT, ResponseT]], Generic[RequestT, ResponseT]
):
    """:class:`~server_framework.servers.AsyncUnixStreamServer` for synchronous programs."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        *,
        backend: BackendName | None = None,
        **options: Any,
    ) -> None:
        super().__init__(AsyncUnixStreamServer(path, protocol, handler, **options), backend=backend)


class StandaloneUDPServer(
    StandaloneServer[AsyncUDPServer[RequestT, ResponseT]], Generic[RequestT, ResponseT]
):
    """:class:`~server_framework.servers.AsyncUDPServer` for synchronous programs."""

    def __init__(
        self,
        host: str | Sequence[str] | None,
        port: int,
        protocol: DatagramProtocol[ResponseT, RequestT],
        handler: DatagramRequestHandler[RequestT, ResponseT],
        *,
        backend: BackendName | None = None,
        **options: Any,
    ) -> None:
        super().__init__(AsyncUDPServer(host, port, protocol, handler, **options), backend=backend)


class StandaloneUnixDatagramServer(
    StandaloneServer[AsyncUnixDatagramServer[RequestT, ResponseT]], Generic[RequestT, ResponseT]
):
    """:class:`~server_framework.servers.AsyncUnixDatagramServer` for synchronous programs."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: DatagramProtocol[ResponseT, RequestT],
        handler: DatagramRequestHandler[RequestT, ResponseT],
        *,
        backend: BackendName | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            AsyncUnixDatagramServer(path, protocol, handler, **options), backend=backend
        )
