"""The primitives a backend hands out: `Event`, `Lock`, `CancelScope`, `TaskGroup`.

Where the loop's own primitive already has the right shape, the backend hands it out as is:
`Event` and `Lock` are structural types (`typing.Protocol`) satisfied by ``asyncio.Event`` /
``trio.Event`` and ``asyncio.Lock`` / ``trio.Lock``, so waiting on them costs no wrapper call.
Cancel scopes and task groups differ too much between loops and get small classes, one per
loop module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, TypeVarTuple, Unpack

__all__ = ["CancelScope", "Event", "Lock", "TaskGroup"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


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
