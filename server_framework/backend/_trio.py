"""The trio backend (imported only when trio runs; the other trio modules are the hot-path
transports, ``servers/_trio.py`` and ``clients/_trio.py``).

Strategy: trio already has the right primitives, so most methods hand them out directly
(``trio.Event``, ``trio.Lock`` (also the fair lock), ``trio.Condition``, nurseries,
``trio.CancelScope``, ``trio.sleep_until``, ``trio.socket.getaddrinfo``). The adaptations:

- ``timeout`` scopes raise the builtin `TimeoutError` (where ``trio.fail_after`` would raise
  ``trio.TooSlowError``): they are cancel scopes with a deadline that raise on
  ``cancelled_caught``, unless ``cancel()`` was called before the deadline.
- A `Task` from `TaskGroup.start` runs in the nursery inside its own ``trio.CancelScope`` (its
  ``cancel()``), and records its outcome for ``join()``.
- `run_in_thread` is ``trio.to_thread.run_sync``, bounded by trio's default
  ``CapacityLimiter`` (40 threads; a call waits for a token, cancellably, before a thread is
  used). trio already copies the caller's `contextvars` context into the thread, so we do not
  copy it again. trio's threads come from its process-wide cache: named after the function and
  the task while they work, they stay idle for a few seconds to be reused.
- trio returns the thread's result even when a cancellation arrived meanwhile (it cannot
  interrupt the thread); a ``checkpoint_if_cancelled()`` after the call delivers that
  cancellation, as `AsyncBackend.run_in_thread` promises.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, TypeVarTuple, Unpack, cast

import trio

from server_framework.backend._abc import AddrInfo, AsyncBackend
from server_framework.backend._portal import PortalCall, ThreadsPortal
from server_framework.backend._primitives import (
    CancelScope,
    Condition,
    Event,
    Lock,
    Task,
    TaskGroup,
)

__all__ = ["TrioBackend", "run"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def run(main: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]], args: tuple[*_Ts]) -> _T:
    """Run ``main(*args)`` with ``trio.run``; return its result."""
    return trio.run(main, *args)


class _TrioCancelScope(CancelScope):
    __slots__ = ("_explicit", "_raise", "_scope")

    def __init__(self, deadline: float, raise_timeout: bool) -> None:
        self._scope = trio.CancelScope(deadline=deadline)
        self._raise = raise_timeout
        self._explicit = False  # cancel() was called before the deadline had passed

    def cancel(self) -> None:
        # trio's cancel_called also turns true once the deadline has passed (checked on read
        # while the scope is not exited): a cancel() after that leaves the timeout a timeout.
        if not self._scope.cancel_called:
            self._explicit = True
        self._scope.cancel()

    @property
    def cancel_called(self) -> bool:
        return self._scope.cancel_called

    @property
    def deadline(self) -> float:
        return self._scope.deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._scope.deadline = value

    @property
    def cancelled_caught(self) -> bool:
        return self._scope.cancelled_caught

    def __enter__(self) -> Self:
        self._scope.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        swallowed = self._scope.__exit__(*exc_info)
        if self._raise and self._scope.cancelled_caught and not self._explicit:
            raise TimeoutError from None  # the Cancelled it replaces carries no information
        return swallowed


_RUNNING = "running"
_RETURNED = "returned"
_RAISED = "raised"
_CANCELLED = "cancelled"


def _is_cancellation(exc: BaseException) -> bool:
    """True for `trio.Cancelled`, or a group of nothing but (as a nursery may raise)."""
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None


class _TrioTask(Task[_T]):
    """A task started in a nursery inside its own cancel scope, recording its outcome."""

    __slots__ = (
        "_error",
        "_error_tb",
        "_finished",
        "_name",
        "_result",
        "_scope",
        "_started",
        "_state",
    )

    def __init__(self, name: object) -> None:
        self._name = name
        self._scope = trio.CancelScope()
        self._started = trio.Event()
        self._finished = trio.Event()
        self._state = _RUNNING
        self._result: _T | None = None
        self._error: BaseException | None = None
        self._error_tb: TracebackType | None = None

    def __repr__(self) -> str:
        return f"<Task {self._name!r} state={self._state}>"

    async def _run(self, coro: Coroutine[Any, Any, _T]) -> None:
        try:
            with self._scope:
                self._started.set()  # start() resumes once this task first suspends
                result = await coro
                self._result = result
                self._state = _RETURNED
        except BaseException as exc:
            if _is_cancellation(exc):  # cancelled from outside (the group, an outer scope)
                self._state = _CANCELLED
            else:
                self._error = exc
                self._error_tb = exc.__traceback__  # before the nursery's frames are added
                self._state = _RAISED
            raise
        finally:
            if self._state == _RUNNING:  # our own scope caught the Cancelled of cancel()
                self._state = _CANCELLED
            self._finished.set()

    def done(self) -> bool:
        return self._state != _RUNNING

    def cancel(self) -> bool:
        if self._state != _RUNNING:
            return False
        self._scope.cancel()
        return True

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    async def wait(self) -> None:
        await self._finished.wait()

    async def join(self) -> _T:
        await self._finished.wait()
        return self._outcome()

    async def join_or_cancel(self) -> _T:
        try:
            await self._finished.wait()
        except trio.Cancelled:
            self._scope.cancel()
            with trio.CancelScope(shield=True):
                await self._finished.wait()
            if self._state != _RAISED:
                raise
        return self._outcome()

    def _outcome(self) -> _T:
        if self._state == _RAISED:
            assert self._error is not None
            raise self._error.with_traceback(self._error_tb)
        if self._state == _CANCELLED:
            raise concurrent.futures.CancelledError(f"task {self._name!r} was cancelled")
        return self._result  # type: ignore[return-value]  # _RETURNED: set to a _T


class _TrioTaskGroup(TaskGroup):
    __slots__ = ("_manager", "_nursery")

    def __init__(self) -> None:
        self._manager = trio.open_nursery()
        self._nursery: trio.Nursery | None = None

    def start_soon(
        self,
        coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, object]],
        *args: *_Ts,
        name: str | None = None,
    ) -> None:
        if self._nursery is None:
            raise RuntimeError("the task group is not open: enter it with 'async with' first")
        self._nursery.start_soon(coro_fn, *args, name=name)

    async def start(
        self,
        coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]],
        *args: *_Ts,
        name: str | None = None,
    ) -> Task[_T]:
        # Not nursery.start(): that runs the new task under the caller's cancel scopes until it
        # reports, which differs from asyncio; a plain start_soon and an Event behave the same
        # on both loops.
        if self._nursery is None:
            raise RuntimeError("the task group is not open: enter it with 'async with' first")
        task_name = coro_fn if name is None else name
        task: _TrioTask[_T] = _TrioTask(task_name)
        coro = coro_fn(*args)
        try:
            self._nursery.start_soon(task._run, coro, name=task_name)
        except BaseException:
            coro.close()
            raise
        try:
            await task._started.wait()
        except trio.Cancelled:
            task.cancel()
            with trio.CancelScope(shield=True):
                await task._finished.wait()
            raise
        return task

    async def __aenter__(self) -> Self:
        self._nursery = await self._manager.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._manager.__aexit__(*exc_info)


class _FutureWaiter:
    """Parks a trio task until a `concurrent.futures.Future` is done (for `_wait_future`)."""

    __slots__ = ("_abandon", "_future", "_task", "_token")

    def __init__(self, future: concurrent.futures.Future[Any], abandon_on_cancel: bool) -> None:
        self._future = future
        self._abandon = abandon_on_cancel
        self._task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        self._token = trio.lowlevel.current_trio_token()

    def on_done(self, future: concurrent.futures.Future[Any]) -> None:
        # Runs in the worker thread that finished the call (or here, if it is already done).
        try:
            self._token.run_sync_soon(self._wake)
        except trio.RunFinishedError:
            pass  # the run is over: nobody is waiting any more

    def _wake(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)

    def abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        # cancel() succeeds only if the call has not started: then it never will.
        if self._future.cancel() or self._abandon:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED
        return trio.lowlevel.Abort.FAILED  # keep waiting; the cancellation comes afterwards


class TrioBackend(AsyncBackend):
    """The backend for trio (``"trio"``).

    `run_in_thread` uses ``trio.to_thread.run_sync`` with trio's default ``CapacityLimiter``
    (40 threads, adjustable with ``trio.to_thread.current_default_thread_limiter()``).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<TrioBackend name='trio'>"

    @property
    def name(self) -> Literal["trio"]:
        return "trio"

    async def sleep(self, delay: float) -> None:
        await trio.sleep(delay)

    async def sleep_forever(self) -> None:
        await trio.sleep_forever()

    async def sleep_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline)

    def current_time(self) -> float:
        return trio.current_time()

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    def create_event(self) -> Event:
        return trio.Event()

    def create_lock(self) -> Lock:
        return trio.Lock()

    def create_fair_lock(self) -> Lock:
        # trio.Lock hands over on release (ParkingLot.unpark to the first waiter); trio's
        # StrictFIFOLock documents that guarantee but is "currently identical", and
        # trio.Condition accepts only a plain trio.Lock.
        return trio.Lock()

    def create_condition(self, lock: Lock | None = None) -> Condition:
        if lock is None:
            return trio.Condition()
        if type(lock) is not trio.Lock:
            raise TypeError(
                "trio conditions need a lock from create_lock() or create_fair_lock() of the "
                f"trio backend, not {lock!r}"
            )
        return trio.Condition(lock)

    def create_task_group(self) -> TaskGroup:
        return _TrioTaskGroup()

    def open_cancel_scope(self, *, deadline: float = math.inf) -> CancelScope:
        return _TrioCancelScope(deadline, raise_timeout=False)

    def timeout(self, delay: float) -> CancelScope:
        return _TrioCancelScope(trio.current_time() + delay, raise_timeout=True)

    def timeout_at(self, deadline: float) -> CancelScope:
        return _TrioCancelScope(deadline, raise_timeout=True)

    def move_on_after(self, delay: float) -> CancelScope:
        return _TrioCancelScope(trio.current_time() + delay, raise_timeout=False)

    def move_on_at(self, deadline: float) -> CancelScope:
        return _TrioCancelScope(deadline, raise_timeout=False)

    async def cancel_shielded(
        self, coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]], *args: *_Ts
    ) -> _T:
        with trio.CancelScope(shield=True):
            result = await coro_fn(*args)
        await trio.lowlevel.checkpoint_if_cancelled()
        return result

    def get_cancelled_exc_class(self) -> type[BaseException]:
        return trio.Cancelled

    async def run_in_thread(
        self, fn: Callable[..., _T], /, *args: Any, abandon_on_cancel: bool = False, **kwargs: Any
    ) -> _T:
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        result = await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=abandon_on_cancel)
        if not abandon_on_cancel:
            await trio.lowlevel.checkpoint_if_cancelled()
        return result

    async def _wait_future(
        self, future: concurrent.futures.Future[_T], abandon_on_cancel: bool
    ) -> _T:
        await trio.lowlevel.checkpoint_if_cancelled()
        waiter = _FutureWaiter(future, abandon_on_cancel)
        future.add_done_callback(waiter.on_done)
        await trio.lowlevel.wait_task_rescheduled(waiter.abort)
        await trio.lowlevel.checkpoint_if_cancelled()
        return future.result()

    async def getaddrinfo(  # noqa: PLR0917  (socket.getaddrinfo's signature)
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[AddrInfo]:
        # trio's own: numeric hosts without a thread, IDNA 2008, the custom resolver hook, and
        # a worker thread abandoned on cancellation otherwise.
        result = await trio.socket.getaddrinfo(host, port, family, type, proto, flags)
        # trio's annotation adds (int, bytes) addresses, for a Python without IPv6 support.
        return cast(list[AddrInfo], result)

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int = 0
    ) -> tuple[str, str]:
        return await trio.socket.getnameinfo(sockaddr, flags)

    def create_threads_portal(self) -> ThreadsPortal:
        return _TrioThreadsPortal()


class _TrioThreadsPortal(ThreadsPortal):
    __slots__ = ("_nursery", "_nursery_manager", "_token")

    def __init__(self) -> None:
        super().__init__()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery_manager = trio.open_nursery()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> Self:
        token = trio.lowlevel.current_trio_token()  # raises outside trio, before we open
        self._open()
        self._token = token
        self._drained = trio.Event()
        # No checkpoint in between: no thread's callback can run before the nursery exists.
        self._nursery = await self._nursery_manager.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        cancellation: BaseException | None = None
        drained = self._stop_accepting()
        if exc_type is not None:
            # Calls not started yet will end cancelled (``_cancelling``), so nothing more is
            # spawned and the nursery alone knows what to wait for.
            self._cancel_all()
        elif not drained:
            assert self._drained is not None
            try:
                await self._drained.wait()
            except trio.Cancelled as cancelled:
                cancellation = cancelled
                self._cancel_all()
        try:
            # Our tasks report to their futures and never raise but for cancellation, so the
            # block's own exception is not handed to the nursery (it would wrap it in a group).
            await self._nursery_manager.__aexit__(None, None, None)
        finally:
            self._close()
        if cancellation is not None:
            raise cancellation

    def _call_soon_threadsafe(
        self, callback: Callable[[PortalCall[Any]], None], call: PortalCall[Any]
    ) -> None:
        assert self._token is not None
        self._token.run_sync_soon(callback, call)

    def _start_task(self, call: PortalCall[Any]) -> None:
        future = call.future
        if self._cancelling or future.cancelled():
            future.cancel()
            self._call_finished()
            return
        scope = trio.CancelScope() if call.cancellable else None
        try:
            # trio gives a new task a copy of the current context: the calling thread's.
            call.context.run(self._spawn, call, scope)
        except BaseException as exc:
            call.set_exception(exc)
            self._call_finished()
            return
        if scope is not None:
            future.add_done_callback(functools.partial(self._future_done, scope))

    def _spawn(self, call: PortalCall[Any], scope: trio.CancelScope | None) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._run_task, call, scope, name=call.fn)

    async def _run_task(self, call: PortalCall[Any], scope: trio.CancelScope | None) -> None:
        future = call.future
        try:
            if scope is None:
                result = await call.fn(*call.args, **call.kwargs)
            else:
                with scope:
                    result = await call.fn(*call.args, **call.kwargs)
        except BaseException as exc:
            if isinstance(exc, trio.Cancelled):
                future.cancel()
            else:
                call.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # cancellation, KeyboardInterrupt: let trio handle them
        else:
            if scope is not None and scope.cancelled_caught:  # the thread cancelled the future
                future.cancel()
            else:
                call.set_result(result)
        finally:
            self._call_finished()

    def _future_done(self, scope: trio.CancelScope, future: concurrent.futures.Future[Any]) -> None:
        # Runs in whichever thread completed the future; only a cancellation concerns us.
        if future.cancelled():
            assert self._token is not None
            try:
                self._token.run_sync_soon(scope.cancel)
            except trio.RunFinishedError:
                pass  # the run is over: the task is long gone

    def _cancel_all(self) -> None:
        self._cancelling = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
