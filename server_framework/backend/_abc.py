"""The backend interface: what the runtime may ask of an event loop, and nothing more.

Strategy. Servers, clients and handlers talk to one `AsyncBackend` object; one module per loop
implements it (``_asyncio.py`` for asyncio and uvloop, ``_trio.py`` for trio) and is imported
only when that loop is chosen, so nothing above this layer imports asyncio or trio.

The primitives it hands out (events, locks, cancel scopes, task groups) are declared in
``_primitives``, the threads portal in ``_portal``; neither imports this module.
"""

from __future__ import annotations

import concurrent.futures
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack

from server_framework.backend._portal import ThreadsPortal
from server_framework.backend._primitives import CancelScope, Event, Lock, TaskGroup

__all__ = ["AsyncBackend", "BackendName"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

BackendName = Literal["asyncio", "uvloop", "trio"]
"""The name of an event loop: ``"asyncio"``, ``"uvloop"`` (asyncio's API on libuv) or ``"trio"``."""


class AsyncBackend(ABC):
    """One event loop's primitives, behind one interface (asyncio, uvloop or trio).

    Get the backend of the running loop with `server_framework.backend.current`, or one by name
    with `server_framework.backend.get_backend`; there is one instance per name. Every method
    but `name`, `create_*`, `get_cancelled_exc_class` and the scope factories must be called
    from a task running in that loop.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def name(self) -> BackendName:
        """The loop's name: ``"asyncio"``, ``"uvloop"`` or ``"trio"``."""

    @abstractmethod
    async def sleep(self, delay: float) -> None:
        """Sleep for ``delay`` seconds (0 just lets other tasks run).

        Cancellation:
            A cancellation point.
        """

    @abstractmethod
    async def sleep_forever(self) -> None:
        """Sleep until cancelled.

        Cancellation:
            The only way out.
        """

    @abstractmethod
    def current_time(self) -> float:
        """The loop's monotonic clock, in seconds; deadlines are expressed on it."""

    @abstractmethod
    async def checkpoint(self) -> None:
        """Let other tasks run, and raise if this task has been cancelled.

        Cancellation:
            A cancellation point.
        """

    @abstractmethod
    def create_event(self) -> Event:
        """Create an `Event` for this loop."""

    @abstractmethod
    def create_lock(self) -> Lock:
        """Create a `Lock` for this loop."""

    @abstractmethod
    def create_task_group(self) -> TaskGroup:
        """Create a `TaskGroup`; enter it with ``async with``."""

    @abstractmethod
    def timeout(self, delay: float) -> CancelScope:
        """A scope that raises `TimeoutError` if its block runs longer than ``delay`` seconds.

        Args:
            delay: Seconds from now; ``math.inf`` for no deadline.

        Raises:
            TimeoutError: (on exit) the block was cancelled at the deadline. An error raised by
                the block itself, `TimeoutError` included, propagates unchanged.
        """

    @abstractmethod
    def timeout_at(self, deadline: float) -> CancelScope:
        """Like `timeout`, with an absolute deadline on the `current_time` clock."""

    @abstractmethod
    def move_on_after(self, delay: float) -> CancelScope:
        """A scope that cancels its block after ``delay`` seconds and carries on after it.

        Check ``scope.cancelled_caught`` to know whether the deadline expired.

        Args:
            delay: Seconds from now; ``math.inf`` for no deadline.
        """

    @abstractmethod
    def move_on_at(self, deadline: float) -> CancelScope:
        """Like `move_on_after`, with an absolute deadline on the `current_time` clock."""

    @abstractmethod
    async def cancel_shielded(
        self, coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]], *args: *_Ts
    ) -> _T:
        """Run ``await coro_fn(*args)`` protected from outside cancellation (e.g. cleanup).

        Args:
            coro_fn: A coroutine function.
            *args: Positional arguments for ``coro_fn``.

        Returns:
            What the coroutine returns.

        Raises:
            Exception: Whatever the coroutine raises (it wins over a pending cancellation).

        Cancellation:
            The coroutine runs to the end even if the calling task is cancelled meanwhile;
            the cancellation is then delivered when it has finished (its result is
            discarded). On asyncio the coroutine runs in a separate task, in a copy of the
            caller's `contextvars` context (changes it makes to context variables are not
            seen by the caller); on trio it runs in the calling task.
        """

    @abstractmethod
    def get_cancelled_exc_class(self) -> type[BaseException]:
        """The loop's cancellation exception (``asyncio.CancelledError`` or ``trio.Cancelled``).

        Catch it only to clean up, and always re-raise it.
        """

    @abstractmethod
    async def run_in_thread(
        self, fn: Callable[..., _T], /, *args: Any, abandon_on_cancel: bool = False, **kwargs: Any
    ) -> _T:
        """Run ``fn(*args, **kwargs)`` in a worker thread and return its result.

        The worker pool is bounded (see the backend's class documentation), so blocking calls
        cannot exhaust the process's threads; calls beyond the bound wait for a free worker.
        The caller's `contextvars` context is copied into the thread, so a structlog binding
        made in a handler shows up in the worker's log lines (changes made by ``fn`` do not
        flow back).

        Args:
            fn: A blocking callable.
            *args: Positional arguments for ``fn``.
            abandon_on_cancel: What cancellation does once ``fn`` is running (see below).
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            What ``fn`` returns.

        Raises:
            Exception: Whatever ``fn`` raises.

        Cancellation:
            If the call is still waiting for a worker, it is withdrawn and the cancellation is
            raised at once. Once ``fn`` runs, by default the task waits for it to return and
            then raises the cancellation (the result is discarded): a cancelled task never
            leaves work behind. With ``abandon_on_cancel=True`` the task stops waiting at once;
            ``fn`` finishes in the background and its outcome is discarded.
        """

    @abstractmethod
    def create_threads_portal(self) -> ThreadsPortal:
        """Create a `ThreadsPortal` for this loop; enter it with ``async with`` in the loop."""

    @abstractmethod
    async def _wait_future(
        self, future: concurrent.futures.Future[_T], abandon_on_cancel: bool
    ) -> _T:
        """Wait for a call submitted to an executor (for `AsyncExecutor`); return its result.

        Internal to server_framework: same semantics as `run_in_thread` once submitted. On
        cancellation, ``future.cancel()`` tells atomically whether the call never runs (it was
        still queued) or is running (then it is waited for, unless abandoned).

        Raises:
            concurrent.futures.CancelledError: The executor cancelled the call (for example,
                ``shutdown(cancel_futures=True)``) before it started.
        """
