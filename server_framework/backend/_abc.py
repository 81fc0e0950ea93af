"""The backend interface: what the runtime may ask of an event loop, and nothing more.

Strategy. Servers, clients and handlers talk to one `AsyncBackend` object; one module per loop
implements it (``_asyncio.py`` for asyncio and uvloop, ``_trio.py`` for trio) and is imported
only when that loop is chosen, so nothing above this layer imports asyncio or trio.

Where the loop's own primitive already has the right shape, the backend hands it out as is:
`Event` and `Lock` are structural types (`typing.Protocol`) satisfied by ``asyncio.Event`` /
``trio.Event`` and ``asyncio.Lock`` / ``trio.Lock``, so waiting on them costs no wrapper call.
Cancel scopes and task groups differ too much between loops and get small classes.
"""

from __future__ import annotations

import concurrent.futures
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar, TypeVarTuple, Unpack

from server_framework.backend._portal import ThreadsPortal

__all__ = ["AsyncBackend", "BackendName", "CancelScope", "Event", "Lock", "TaskGroup"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

BackendName = Literal["asyncio", "uvloop", "trio"]
"""The name of an event loop: ``"asyncio"``, ``"uvloop"`` (asyncio's API on libuv) or ``"trio"``."""


class Event(Protocol):
    """A one-shot flag that tasks can wait for (``asyncio.Event`` or ``trio.Event``).

    Not thread-safe: set it from the loop thread (from another thread, use
    ``portal.run_sync(event.set)``). There is no ``clear()``: create a new event instead.
    """

    def set(self) -> None:
        """Set the flag and wake every waiting task."""

    def is_set(self) -> bool:
        """Return True if the flag is set."""

    async def wait(self) -> object:
        """Wait until the flag is set (at once if it already is).

        Returns:
            Nothing useful (the value differs between loops).

        Cancellation:
            A cancellation point; cancelling the wait does not affect the flag.
        """


class Lock(Protocol):
    """A mutual-exclusion lock for tasks (``asyncio.Lock`` or ``trio.Lock``).

    Use it as ``async with lock:``. It is not reentrant; on trio, the task that acquired it
    must be the one that releases it (trio checks this, asyncio does not).
    """

    async def acquire(self) -> object:
        """Wait until the lock is free, then take it.

        Returns:
            Nothing useful (the value differs between loops).

        Cancellation:
            A cancellation point; if cancelled, the lock was not taken.
        """

    def release(self) -> None:
        """Release the lock; the next waiting task (first come, first served) takes it."""

    def locked(self) -> bool:
        """Return True if some task holds the lock."""

    async def __aenter__(self) -> None:
        """Acquire the lock (see `acquire`)."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the lock."""


class CancelScope(ABC):
    """A deadline around a block of code, returned by the backend's timeout helpers.

    Enter it with ``with`` (a *sync* context manager, used inside a task)::

        with backend.move_on_after(5.0) as scope:
            await do_something()
        if scope.cancelled_caught:
            ...  # it took longer than 5 s and was cancelled

    At the deadline, the code inside is cancelled at its next cancellation point. Then:
    scopes from ``move_on_after`` / ``move_on_at`` swallow that cancellation (execution goes
    on after the block) and those from ``timeout`` / ``timeout_at`` raise `TimeoutError`.
    A cancellation coming from outside the scope always propagates.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def deadline(self) -> float:
        """The absolute deadline, on the clock of `AsyncBackend.current_time` (may be inf)."""

    @property
    @abstractmethod
    def cancelled_caught(self) -> bool:
        """True if the deadline expired and this scope caught the resulting cancellation."""

    @abstractmethod
    def __enter__(self) -> Self:
        """Start watching the deadline for the current task.

        Raises:
            RuntimeError: Not inside a task of the backend's loop.
        """

    @abstractmethod
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop watching; turn this scope's own cancellation into the configured outcome.

        Raises:
            TimeoutError: (``timeout`` scopes) the deadline expired inside the block.
        """


class TaskGroup(ABC):
    """Structured concurrency: run tasks and wait for all of them to finish.

    ::

        async with backend.create_task_group() as tg:
            tg.start_soon(serve_one, conn_a)
            tg.start_soon(serve_one, conn_b, name="conn-b")
        # here, both tasks have finished

    If a task (or the block itself) raises, the other tasks are cancelled, the group waits for
    them, and the error(s) propagate out of ``async with`` as an `ExceptionGroup` (a
    `BaseExceptionGroup` if a `BaseException` such as `KeyboardInterrupt` is among them), on
    every loop: that is what both ``asyncio.TaskGroup`` and trio nurseries do. Catch with
    ``except* SomeError``.

    Cancellation:
        Cancelling the task that runs the ``async with`` cancels every task in the group; the
        exit waits for them to finish, then the cancellation propagates.
    """

    __slots__ = ()

    @abstractmethod
    def start_soon(
        self,
        coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, object]],
        *args: *_Ts,
        name: str | None = None,
    ) -> None:
        """Start ``coro_fn(*args)`` as a new task in this group (it runs from the next checkpoint).

        Args:
            coro_fn: A coroutine function; its return value is discarded.
            *args: Positional arguments for ``coro_fn`` (use `functools.partial` for keywords).
            name: A name for the task, for debugging.

        Raises:
            RuntimeError: The group is not open (not entered yet, or finished).
        """

    @abstractmethod
    async def __aenter__(self) -> Self:
        """Open the group."""

    @abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Wait for every task of the group; raise their errors as an `ExceptionGroup`."""


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
