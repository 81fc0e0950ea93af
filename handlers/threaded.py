"""ThreadedHandler: write a plain, blocking ``respond``; it runs in a bounded pool of threads.

Strategy. The handler owns a `~concurrent.futures.ThreadPoolExecutor`, wrapped in an
`~server_framework.threads.AsyncExecutor`, and a `~server_framework.backend.ThreadsPortal`,
both created by ``service_init`` and entered on the server's exit stack, so they live exactly
as long as the server. One handler generator serves a whole connection (a loop around
``yield``, like `RequestResponseHandler.handle`): it takes a request, awaits
``executor.run(self.respond, request, client)`` and sends what came back. The server does not
hand a connection its next request until that generator is ready for it, so each connection
has at most one call in the pool at a time: replies keep the request order per connection,
connections run concurrently up to ``max_workers`` threads, and the pool's queue holds at most
one waiting call per connection (bounded by the server's ``max_connections``).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any, Generic, TypeVar

from protocols import ProtocolError
from server_framework.backend import ThreadsPortal
from server_framework.threads import AsyncExecutor

from .base import DatagramRequestHandler, StreamRequestHandler

__all__ = ["ThreadedHandler"]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def _default_max_workers() -> int:
    """The pool size of a `ThreadedHandler` whose ``max_workers`` is not set.

    ``min(32, os.cpu_count() + 4)``, the `~concurrent.futures.ThreadPoolExecutor` default:
    handlers run blocking I/O (database drivers, file and HTTP clients) in these threads, so
    there are more threads than cores, but not so many that a burst of slow requests turns
    into hundreds of threads. CPU-bound Python code does not run faster with more threads.
    """
    return min(32, (os.cpu_count() or 1) + 4)


def _check_max_workers(max_workers: int) -> None:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")


class ThreadedHandler(
    StreamRequestHandler[RequestT, ResponseT],
    DatagramRequestHandler[RequestT, ResponseT],
    Generic[RequestT, ResponseT],
):
    """Write a plain ``def respond``; it runs in worker threads. Stream and datagram servers.

    For blocking code: database drivers without an async API, file systems, CPU work in C
    libraries that release the GIL. Each request runs :meth:`respond` in the handler's own
    thread pool; the returned object is sent back (``None`` sends nothing).

    - **Order**: a connection (or datagram peer) has one request in a thread at a time, so its
      replies come in request order. Different connections run in parallel, up to
      ``max_workers`` threads at once; beyond that, requests wait for a free thread.
    - **Back into the loop**: from the thread, :attr:`portal` runs coroutines in the event
      loop, e.g. ``self.portal.run_coroutine(client.send_packet, progress)`` to send a message
      before the reply (it goes out before the reply). Call the ``client``'s other methods the
      same way; its ``peer_address`` and ``state`` may be read directly.
    - **Context**: `contextvars` (a structlog ``bind_contextvars`` made in ``on_connection``,
      for example) are copied into the thread for each call; changes made in the thread are
      not copied back.
    - **Errors**: an exception from :meth:`respond` is logged and closes that connection
      (ends that datagram peer's client); other clients are served as before.
    - **Shutdown**: the pool is shut down when the server stops, after every connection has
      ended; a request still running when the server's grace period ends is waited for (a
      thread cannot be interrupted), then its connection closes.

    Options can be given to the constructor or set as class attributes of a subclass
    (``max_workers = 8``). A subclass that defines ``__init__`` must call
    ``super().__init__(...)`` if it passes options; one that overrides :meth:`service_init`
    must call ``await super().service_init(exit_stack, server)`` before it uses
    :attr:`portal` or :attr:`executor`. One handler object serves one server at a time.

    Args:
        max_workers: How many threads may run :meth:`respond` at once. Default: the class
            attribute, else ``min(32, os.cpu_count() + 4)``: the
            `~concurrent.futures.ThreadPoolExecutor` default, sized for blocking I/O (more
            threads than cores, yet a burst of slow requests cannot become hundreds of threads).
        thread_name_prefix: Names of the pool's threads (``prefix_0``, ``prefix_1``...), as
            they appear in logs and debuggers. Default: the handler's class name.

    Raises:
        ValueError: ``max_workers`` is not an int >= 1.

    Example::

        class Lookup(ThreadedHandler[str, dict[str, Any]]):
            max_workers = 8

            def respond(self, request: str, client: Any) -> dict[str, Any] | None:
                # Blocking calls are fine here: this runs in one of the pool's threads.
                with contextlib.closing(sqlite3.connect(DB_PATH)) as db:
                    query = "SELECT name FROM users WHERE id = ?"
                    row = db.execute(query, (request,)).fetchone()
                return {"name": row[0]} if row else {"error": "no such user"}
    """

    #: Threads of the pool; None means ``min(32, os.cpu_count() + 4)``.
    max_workers: int | None = None
    #: Thread names' prefix; None means the handler's class name.
    thread_name_prefix: str | None = None

    _executor: AsyncExecutor[ThreadPoolExecutor] | None = None
    _portal: ThreadsPortal | None = None
    _in_pool = 0  # requests handed to the pool and not finished (the loop's thread counts)
    _pool_size = 0

    def __init__(
        self, *, max_workers: int | None = None, thread_name_prefix: str | None = None
    ) -> None:
        if max_workers is not None:
            _check_max_workers(max_workers)
            self.max_workers = max_workers
        if thread_name_prefix is not None:
            self.thread_name_prefix = thread_name_prefix

    @property
    def busy_threads(self) -> int:
        """Threads of the pool running a request now (the servers' ``threads_busy`` metric);
        requests beyond the pool's size wait for a thread and are not counted."""
        return min(self._in_pool, self._pool_size)

    @property
    def portal(self) -> ThreadsPortal:
        """The server loop's `~server_framework.backend.ThreadsPortal`, for the pool's threads.

        Raises:
            RuntimeError: The server has not started (``service_init`` has not run) or has
                stopped.
        """
        portal = self._portal
        if portal is None:
            raise RuntimeError(self._not_running_message("portal"))
        return portal

    @property
    def executor(self) -> AsyncExecutor[ThreadPoolExecutor]:
        """The handler's thread pool, to run more blocking calls from async hooks.

        Raises:
            RuntimeError: The server has not started or has stopped.
        """
        executor = self._executor
        if executor is None:
            raise RuntimeError(self._not_running_message("executor"))
        return executor

    def _not_running_message(self, what: str) -> str:
        return (
            f"{type(self).__name__}.{what} exists while a server runs this handler: it is "
            "created by service_init() (if you override service_init, call "
            "'await super().service_init(exit_stack, server)' first)"
        )

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        """Create the thread pool and the portal; they close when the server stops.

        Subclasses overriding this must call ``await super().service_init(exit_stack,
        server)`` before using :attr:`portal` or :attr:`executor`.

        Raises:
            RuntimeError: This handler object already serves a running server.
            ValueError: The ``max_workers`` class attribute is not an int >= 1.
        """
        if self._executor is not None:
            raise RuntimeError(
                f"this {type(self).__name__} already serves a running server; "
                "create one handler object per server"
            )
        max_workers = self.max_workers
        if max_workers is None:
            max_workers = _default_max_workers()
        _check_max_workers(max_workers)
        backend = server.backend()
        # Exit order is the reverse: the pool is shut down first (its threads finish while
        # the portal they may be using is still open), then the portal, then we forget both.
        exit_stack.callback(self._forget_resources)
        self._portal = await exit_stack.enter_async_context(backend.create_threads_portal())
        pool = ThreadPoolExecutor(
            max_workers, thread_name_prefix=self.thread_name_prefix or type(self).__name__
        )
        self._pool_size = max_workers
        self._executor = await exit_stack.enter_async_context(AsyncExecutor(pool, backend))

    def _forget_resources(self) -> None:
        self._executor = None
        self._portal = None

    @abstractmethod
    def respond(self, request: RequestT, client: Any) -> ResponseT | None:
        """Return the response to ``request``, or ``None`` to send nothing. Runs in a thread.

        Blocking here is the point: only this connection waits. Do not touch the event loop
        directly; go through :attr:`portal` (``self.portal.run_coroutine(...)``).

        Args:
            request: The decoded request.
            client: The `~handlers.StreamClient` or `~handlers.DatagramClient` it came from.

        Returns:
            The response to send, or ``None``.

        Raises:
            Exception: Anything raised is logged and closes this connection (datagram: ends
                this peer's client); other clients are unaffected.
        """

    def on_bad_message(self, error: ProtocolError, client: Any) -> ResponseT | None:
        """Called, in a thread like :meth:`respond`, with a message that could not be decoded.

        The default re-raises ``error`` (without a trip to the pool), which closes the
        connection. Override it to answer with an error message and keep the connection: the
        stream stays in sync after a `~protocols.DeserializeError`; after a framing error it
        is closed anyway once this returns.

        Args:
            error: What the decoder reported (``error.reason`` says what was wrong).
            client: The client the message came from.

        Returns:
            A response to send, or ``None``.
        """
        raise error

    async def handle(self, client: Any) -> AsyncGenerator[None, RequestT]:
        """Run :meth:`respond` in the pool for each request, one at a time; send the result.

        Cancellation (server shutdown past its grace period): a call waiting for a thread is
        withdrawn; a running call is waited for, its result is discarded.
        """
        run = self.executor.run
        respond = self.respond
        send = client.send_packet
        default_bad_message = type(self).on_bad_message is ThreadedHandler.on_bad_message
        while True:
            try:
                request = yield
            except ProtocolError as error:
                if default_bad_message:
                    raise
                function: Any = self.on_bad_message
                argument: Any = error
            else:
                function = respond
                argument = request
            self._in_pool += 1
            try:
                response = await run(function, argument, client)
            finally:
                self._in_pool -= 1
            if response is not None:
                await send(response)
