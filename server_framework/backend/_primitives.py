"""The primitives a backend hands out: `Event`, `Lock`, `Condition`, `CancelScope`, `TaskGroup`
and the `Task` handles of `TaskGroup.start`.

Where the loop's own primitive already has the right shape, the backend hands it out as is:
`Event`, `Lock` and `Condition` are structural types (`typing.Protocol`) satisfied by
``asyncio.Event`` / ``trio.Event``, ``asyncio.Lock`` / ``trio.Lock`` and ``asyncio.Condition`` /
``trio.Condition``, so waiting on them costs no wrapper call. Cancel scopes, task groups and
task handles differ too much between loops and get small classes, one per loop module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, TypeVarTuple, Unpack

__all__ = ["CancelScope", "Condition", "Event", "Lock", "Task", "TaskGroup"]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)
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
        """Release the lock; the next waiting task (first come, first served) takes it.

        Raises:
            RuntimeError: The lock is not held (on trio: not held by the calling task).
        """

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


class Condition(Lock, Protocol):
    """A condition variable: a `Lock` that tasks can wait on until notified.

    ``asyncio.Condition`` or ``trio.Condition``, from `AsyncBackend.create_condition`. Use it as
    a lock (``async with cond:``); while holding it, `wait` for a change and `notify` others of
    one. Check the predicate in a loop, since another task may run between the notification
    and the wake-up::

        async with cond:
            while not queue:
                await cond.wait()
            item = queue.popleft()

    Not thread-safe, like `Lock`; on trio, the task that acquired the lock must release it.
    """

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` of the tasks waiting in `wait` (in the order they started waiting).

        Args:
            n: How many waiters to wake at most.

        Raises:
            RuntimeError: The calling task does not hold the lock.
        """

    def notify_all(self) -> None:
        """Wake every task waiting in `wait`.

        Raises:
            RuntimeError: The calling task does not hold the lock.
        """

    async def wait(self) -> object:
        """Release the lock, wait until notified, then take the lock again and return.

        Returns:
            Nothing useful (the value differs between loops).

        Raises:
            RuntimeError: The calling task does not hold the lock.

        Cancellation:
            A cancellation point. Whether cancelled or notified, the lock is held again when
            this returns or raises (re-acquiring it is not interrupted), so ``async with`` can
            release it.
        """


class CancelScope(ABC):
    """A block of code that can be cancelled, at a deadline or on request.

    Returned by `AsyncBackend.open_cancel_scope` and the timeout helpers (`~AsyncBackend.timeout`,
    `~AsyncBackend.move_on_after`, ...). Enter it with ``with`` (a *sync* context manager, used
    inside a task)::

        with backend.move_on_after(5.0) as scope:
            await do_something()
        if scope.cancelled_caught:
            ...  # it took longer than 5 s and was cancelled

    When the deadline passes, or when `cancel` is called, the code inside is cancelled at its
    next cancellation point, and the scope catches that cancellation on exit:

    - scopes from `~AsyncBackend.open_cancel_scope`, `~AsyncBackend.move_on_after` and
      `~AsyncBackend.move_on_at` swallow it: execution goes on after the block;
    - scopes from `~AsyncBackend.timeout` and `~AsyncBackend.timeout_at` raise `TimeoutError`
      if the *deadline* passed first. A `cancel` call that came before the deadline is not a
      timeout: the scope then swallows the cancellation, as the others do.

    A cancellation coming from outside the scope (an enclosing scope, the task group, a
    cancelled task) always propagates, even when this scope was cancelled too. Scopes nest:
    cancelling an outer scope cancels the code inside its inner scopes, and only the outer one
    catches it. Once cancelled, a scope stays cancelled (moving the deadline later does not
    undo it).
    """

    __slots__ = ()

    @abstractmethod
    def cancel(self) -> None:
        """Cancel the code inside this scope at its next cancellation point.

        May be called before the scope is entered (the block is then cancelled at its first
        cancellation point), from inside the block, or from another task of the same loop (not
        from another thread); calling it again, or after the scope has exited, does nothing.
        """

    @property
    @abstractmethod
    def cancel_called(self) -> bool:
        """True once `cancel` has been called or the deadline has passed.

        It does not mean the code inside was actually cancelled (it may have finished before
        its next cancellation point): see `cancelled_caught` for that.
        """

    @property
    @abstractmethod
    def deadline(self) -> float:
        """The absolute deadline, on the clock of `AsyncBackend.current_time` (may be inf).

        Settable at any time, inside the block too: the deadline is rescheduled (a deadline
        already past cancels the block at its next cancellation point), and ``math.inf``
        removes it. Moving it has no effect once the scope is cancelled.
        """

    @deadline.setter
    @abstractmethod
    def deadline(self, value: float) -> None: ...

    @property
    @abstractmethod
    def cancelled_caught(self) -> bool:
        """True if this scope caught its own cancellation (deadline or `cancel`) on exit.

        For ``timeout`` scopes, also true when the scope raised `TimeoutError`.
        """

    @abstractmethod
    def __enter__(self) -> Self:
        """Start watching the deadline (and `cancel` calls) for the current task.

        Raises:
            RuntimeError: Not inside a task of the backend's loop, or the scope was already
                entered (a scope is used once).
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
            TimeoutError: (``timeout`` scopes) the deadline expired inside the block, before
                any `cancel` call.
        """


class Task(ABC, Generic[_T_co]):
    """A handle on a task started with `TaskGroup.start`: its state, its result, cancelling it.

    The task belongs to its group all the same: the group waits for it, and an error it raises
    propagates out of the group (in an `ExceptionGroup`) as well as through `join`::

        async with backend.create_task_group() as tg:
            task = await tg.start(fetch, url)
            ...
            page = await task.join()

    Waiting through the handle never cancels the task (but `join_or_cancel` does, when the
    waiter is cancelled); `cancel` does.
    """

    __slots__ = ()

    @abstractmethod
    def done(self) -> bool:
        """True if the task has finished: returned, raised, or ended by cancellation."""

    @abstractmethod
    def cancel(self) -> bool:
        """Ask for the task to be cancelled at its next cancellation point.

        Only the task is cancelled, not its group; the group does not count a task that ends
        by this cancellation as failed.

        Returns:
            True if the request was made, False if the task had already finished.
        """

    @abstractmethod
    def cancelled(self) -> bool:
        """True if the task has finished by cancellation (its own `cancel`, or its group's).

        False while it runs, and if it caught the cancellation and finished otherwise.
        """

    @abstractmethod
    async def wait(self) -> None:
        """Wait until the task has finished, without looking at its outcome.

        Cancellation:
            A cancellation point; cancelling the wait does not cancel the task.
        """

    @abstractmethod
    async def join(self) -> _T_co:
        """Wait until the task has finished, and return its result.

        Returns:
            What the task's coroutine returned.

        Raises:
            concurrent.futures.CancelledError: The task ended by cancellation (a plain
                `Exception`, on every loop: the *waiting* task was not cancelled).
            BaseException: Whatever the task raised (the same exception also propagates out of
                the group).

        Cancellation:
            A cancellation point; cancelling the join does not cancel the task.
        """

    @abstractmethod
    async def join_or_cancel(self) -> _T_co:
        """Like `join`, but cancelling the waiting task cancels the task too.

        Returns:
            What the task's coroutine returned.

        Raises:
            concurrent.futures.CancelledError: The task ended by cancellation while the waiter
                was not cancelled.
            BaseException: Whatever the task raised.

        Cancellation:
            If the waiting task is cancelled, the task is cancelled and waited for (that wait
            is not interrupted), then the waiter's cancellation propagates; as with
            `AsyncBackend.cancel_shielded`, an error raised by the task wins over it.
        """


class TaskGroup(ABC):
    """Structured concurrency: run tasks and wait for all of them to finish.

    ::

        async with backend.create_task_group() as tg:
            tg.start_soon(serve_one, conn_a)
            tg.start_soon(serve_one, conn_b, name="conn-b")
            listener = await tg.start(listen, port)  # a Task handle, once it runs
        # here, every task has finished

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
    async def start(
        self,
        coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]],
        *args: *_Ts,
        name: str | None = None,
    ) -> Task[_T]:
        """Start ``coro_fn(*args)`` as a new task in this group, once it has started running.

        Returns when the task has run up to its first suspension (its first ``await`` that
        waits), with a `Task` handle to join or cancel it. Use `start_soon` when no handle is
        needed: it is cheaper.

        Args:
            coro_fn: A coroutine function.
            *args: Positional arguments for ``coro_fn`` (use `functools.partial` for keywords).
            name: A name for the task, for debugging.

        Returns:
            A handle on the task.

        Raises:
            RuntimeError: The group is not open (not entered yet, or finished).

        Cancellation:
            A cancellation point. If the calling task is cancelled before `start` returns, the
            new task is cancelled too and waited for, then the cancellation propagates (no
            handle is returned). A task the group cancels before its first step (it is
            shutting down) is returned as it is: finished and `~Task.cancelled`.
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
