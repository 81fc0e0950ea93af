"""The trio backend (imported only when trio runs; the other trio modules are the hot-path
transports, ``servers/_trio.py`` and ``clients/_trio.py``).

Strategy: trio already has the right primitives, so most methods hand them out directly
(``trio.Event``, ``trio.Lock``, nurseries, ``trio.CancelScope``). The adaptations:

- ``timeout`` scopes raise the builtin `TimeoutError` (where ``trio.fail_after`` would raise
  ``trio.TooSlowError``): they are cancel scopes with a deadline that raise on
  ``cancelled_caught``.
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
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Self, TypeVar, TypeVarTuple, Unpack

import trio

from server_framework.backend._abc import AsyncBackend
from server_framework.backend._portal import PortalCall, ThreadsPortal
from server_framework.backend._primitives import CancelScope, Event, Lock, TaskGroup

__all__ = ["TrioBackend", "run"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def run(main: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]], args: tuple[*_Ts]) -> _T:
    """Run ``main(*args)`` with ``trio.run``; return its result."""
    return trio.run(main, *args)


class _TrioCancelScope(CancelScope):
    __slots__ = ("_raise", "_scope")

    def __init__(self, deadline: float, raise_timeout: bool) -> None:
        self._scope = trio.CancelScope(deadline=deadline)
        self._raise = raise_timeout

    @property
    def deadline(self) -> float:
        return self._scope.deadline

    @property
    def cancelled_caught(self) -> bool:
        return self._scope.cancelled_caught

    def __enter__(self) -> Self:
        self._scope.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        swallowed = self._scope.__exit__(*exc_info)
        if self._raise and self._scope.cancelled_caught:
            raise TimeoutError from None  # the Cancelled it replaces carries no information
        return swallowed


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

    def current_time(self) -> float:
        return trio.current_time()

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    def create_event(self) -> Event:
        return trio.Event()

    def create_lock(self) -> Lock:
        return trio.Lock()

    def create_task_group(self) -> TaskGroup:
        return _TrioTaskGroup()

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
