"""The asyncio backend, for the stock loop and for uvloop alike.

uvloop implements asyncio's event loop API on libuv, so one class serves both: the only
difference is which loop `run` starts (``asyncio.Runner`` with or without
``loop_factory=uvloop.new_event_loop``), and the backend's `name`. uvloop is imported only when
it is asked for, or found already imported.

Strategy:

- Primitives are the loop's own (``asyncio.Event``, ``asyncio.Lock`` (also the fair lock: it
  hands over in arrival order), ``asyncio.Condition``, ``asyncio.TaskGroup``). A `Task` handle
  from `TaskGroup.start` wraps the ``asyncio.Task`` the group created; the task's coroutine is
  wrapped once to report that it has started.
- Cancel scopes are written here, as *sync* context managers: at the deadline or on
  ``cancel()`` a loop callback cancels the task, and on exit the scope recognises its own
  cancellation the way ``asyncio.Timeout`` does (``Task.uncancel()`` against the count seen
  on entry).
- Name resolution is the loop's own ``getaddrinfo`` / ``getnameinfo``.
- Worker threads are the loop's default executor (``loop.run_in_executor(None, ...)``), a
  ``ThreadPoolExecutor`` bounded by its ``max_workers``: ``min(32, os.cpu_count() + 4)`` unless
  the application installed another one with ``loop.set_default_executor``. Its threads are
  named ``asyncio_N`` / ``uvloop_N``, and ``asyncio.Runner`` shuts it down (joining them) when
  `run` returns. The awaiting task waits on a shielded future, so a cancellation cannot detach
  it from a call that is running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import math
import sys
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, TypeVarTuple, Unpack, cast

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

__all__ = ["AsyncIOBackend", "detect_backend_name", "run"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def detect_backend_name() -> Literal["asyncio", "uvloop"] | None:
    """Return ``"uvloop"`` or ``"asyncio"`` for the loop running in this thread, or None."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    # A uvloop loop exists only if uvloop was imported: no need to import it to check.
    uvloop = sys.modules.get("uvloop.loop")
    if uvloop is not None and isinstance(loop, uvloop.Loop):
        return "uvloop"
    return "asyncio"


def run(
    main: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]],
    args: tuple[*_Ts],
    use_uvloop: bool,
) -> _T:
    """Run ``main(*args)`` in a new asyncio (or uvloop) event loop; return its result."""
    # Check before creating the coroutine, which would otherwise never be awaited.
    if detect_backend_name() is not None:
        raise RuntimeError(
            "server_framework.run() cannot be called from a running event loop: await the "
            "coroutine instead"
        )
    if use_uvloop:
        import uvloop  # noqa: PLC0415  (imported only when asked for)

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        return runner.run(main(*args))


_CREATED = 0
_ENTERED = 1
_EXITED = 2


class _AsyncIOCancelScope(CancelScope):
    """A cancel scope on asyncio: the task is cancelled by a loop callback, never directly.

    Both the deadline and `cancel` go through a handle (``call_at`` / ``call_soon``) that is
    cancelled on exit. A loop callback runs only while the task is suspended, and while the
    scope is entered that means suspended *inside* the block, so the resulting cancellation is
    always delivered inside the block: it cannot leak out after a block that ended without
    suspending (on 3.11, ``Task.uncancel()`` does not withdraw a delivery still pending).

    On exit, the scope recognises its own cancellation the way ``asyncio.Timeout`` does: it
    withdraws its request with ``Task.uncancel()``, and the `asyncio.CancelledError` is its own
    only if no other request (an enclosing scope, ``task.cancel()`` from elsewhere) remains
    beyond the count seen on entry.
    """

    __slots__ = (
        "_cancel_called",
        "_cancelled_caught",
        "_cancelling",
        "_deadline",
        "_explicit",
        "_fired",
        "_handle",
        "_raise",
        "_state",
        "_task",
    )

    def __init__(self, deadline: float, raise_timeout: bool) -> None:
        self._deadline = deadline
        self._raise = raise_timeout
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.Handle | None = None
        self._state = _CREATED
        self._cancelling = 0
        self._cancel_called = False  # cancel() called, or the deadline handle fired
        self._explicit = False  # cancel() was called before the deadline had passed
        self._fired = False  # we asked the task to cancel (once at most)
        self._cancelled_caught = False

    def cancel(self) -> None:
        if self._cancel_called or self._state == _EXITED:
            self._cancel_called = True
            return
        # A cancel() once the deadline has passed does not turn the timeout into a non-timeout.
        if not self._deadline_passed():
            self._explicit = True
        self._cancel_called = True
        if self._state == _ENTERED:
            self._schedule(-math.inf)

    @property
    def cancel_called(self) -> bool:
        if not self._cancel_called and self._state != _EXITED and self._deadline_passed():
            # Latched, as trio does: moving the deadline later no longer undoes it. Entered, the
            # deadline handle is due; not entered yet, __enter__ schedules the cancellation.
            self._cancel_called = True
        return self._cancel_called

    def _deadline_passed(self) -> bool:
        if self._deadline == math.inf:
            return False
        loop = self._task.get_loop() if self._task is not None else asyncio._get_running_loop()
        return loop is not None and loop.time() >= self._deadline

    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        value = float(value)
        if math.isnan(value):
            raise ValueError("a deadline cannot be NaN")
        self._deadline = value
        if self._state == _ENTERED and not self._cancel_called:
            self._schedule(self._deadline)

    @property
    def cancelled_caught(self) -> bool:
        return self._cancelled_caught

    def _schedule(self, when: float) -> None:
        """(Re)arm the handle that cancels the task at ``when`` (-inf: soon; inf: never)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if when == math.inf:
            return
        assert self._task is not None
        loop = self._task.get_loop()
        if when <= loop.time():
            self._handle = loop.call_soon(self._fire)
        else:
            self._handle = loop.call_at(when, self._fire)

    def __enter__(self) -> Self:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a cancel scope must be entered inside an asyncio task")
        if self._state != _CREATED:
            raise RuntimeError("a cancel scope can be entered only once")
        self._task = task
        self._state = _ENTERED
        # Cancellations requested before entry are not ours to catch.
        self._cancelling = task.cancelling()
        self._schedule(-math.inf if self._cancel_called else self._deadline)
        return self

    def _fire(self) -> None:
        # Runs only while the task is suspended inside the block (the handle is cancelled
        # on exit), so the cancellation is always delivered inside the block.
        self._handle = None
        self._fired = True
        self._cancel_called = True
        assert self._task is not None
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._state = _EXITED
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._fired:
            return None
        assert self._task is not None
        # Withdraw our cancel request; if nobody else asked for a cancellation meanwhile, the
        # CancelledError (if any) is ours.
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            self._cancelled_caught = True
            if self._raise and not self._explicit:
                raise TimeoutError from exc
            return True
        return None


class _AsyncIOTaskGroup(TaskGroup):
    __slots__ = ("_group",)

    def __init__(self) -> None:
        self._group = asyncio.TaskGroup()

    def start_soon(
        self,
        coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, object]],
        *args: *_Ts,
        name: str | None = None,
    ) -> None:
        coro = coro_fn(*args)
        try:
            self._group.create_task(coro, name=name)
        except BaseException:
            coro.close()  # never started: close it rather than warn "never awaited"
            raise

    async def start(
        self,
        coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]],
        *args: *_Ts,
        name: str | None = None,
    ) -> Task[_T]:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        coro = coro_fn(*args)
        wrapper = _run_started(started, coro)
        try:
            task = self._group.create_task(wrapper, name=name)
        except BaseException:
            wrapper.close()
            coro.close()
            raise
        task.add_done_callback(functools.partial(_started_task_done, started, coro))
        try:
            await started
        except asyncio.CancelledError:
            task.cancel()
            await _wait_uninterrupted(task)
            raise
        return _AsyncIOTask(task)

    async def __aenter__(self) -> Self:
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        await self._group.__aexit__(*exc_info)
        return None


async def _run_started(started: asyncio.Future[None], coro: Coroutine[Any, Any, _T]) -> _T:
    """The coroutine of a task from `TaskGroup.start`: report it has started, then run it."""
    if not started.done():  # done: start() was cancelled meanwhile (and cancels this task)
        started.set_result(None)
    return await coro


def _started_task_done(
    started: asyncio.Future[None], coro: Coroutine[Any, Any, object], _: asyncio.Task[Any]
) -> None:
    # A task cancelled before its first step never ran _run_started: let start() return all
    # the same, and close the inner coroutine, which would otherwise warn "never awaited"
    # (closing a finished coroutine does nothing).
    if not started.done():
        started.set_result(None)
    coro.close()


async def _wait_uninterrupted(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` is done, whatever cancellation the calling task receives meanwhile.

    The caller is about to raise a cancellation of its own: the ones received here are
    redundant.
    """
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            continue


class _AsyncIOTask(Task[_T]):
    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[_T]) -> None:
        self._task = task

    def __repr__(self) -> str:
        return f"<Task {self._task.get_name()!r} of {self._task!r}>"

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> bool:
        return self._task.cancel()

    def cancelled(self) -> bool:
        return self._task.cancelled()

    async def wait(self) -> None:
        if not self._task.done():
            await asyncio.wait((self._task,))  # cancelling asyncio.wait leaves the task alone

    async def join(self) -> _T:
        await self.wait()
        return self._outcome()

    async def join_or_cancel(self) -> _T:
        task = self._task
        if not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError:
                task.cancel()
                await _wait_uninterrupted(task)
                if task.cancelled() or task.exception() is None:
                    raise
        return self._outcome()

    def _outcome(self) -> _T:
        if self._task.cancelled():
            raise concurrent.futures.CancelledError(f"task {self._task.get_name()!r} was cancelled")
        return self._task.result()


_QUEUED = 0
_STARTED = 1
_WITHDRAWN = 2


class _WorkerCall(Generic[_T]):
    """``fn(*args, **kwargs)`` to be run once in a worker thread, in the caller's context.

    ``loop.run_in_executor`` hides the executor's `concurrent.futures.Future`, whose
    ``cancel()`` would tell whether the call has started; this object keeps that information
    itself, with a per-call lock that is uncontended but for that one race (a fraction of a
    microsecond, against a thread round trip of tens). Create it in the loop thread (the
    context is copied there); call it in the worker.
    """

    __slots__ = ("_args", "_context", "_fn", "_kwargs", "_lock", "_state")

    def __init__(
        self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        # One copy per call: a Context cannot be entered by two threads at once.
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()
        self._state = _QUEUED

    def __call__(self) -> _T:
        """Run the call in the worker thread (unless it was withdrawn first).

        Raises:
            concurrent.futures.CancelledError: the awaiting task withdrew the call before it
                started; nobody reads this outcome.
            Exception: whatever the function raises.
        """
        with self._lock:
            if self._state == _WITHDRAWN:
                raise concurrent.futures.CancelledError("withdrawn before it started")
            self._state = _STARTED
        return self._context.run(self._fn, *self._args, **self._kwargs)

    def withdraw(self) -> bool:
        """Make sure the call never starts, if it has not started yet.

        Returns:
            True if the call will never run; False if it is running or has already run.
        """
        with self._lock:
            if self._state == _STARTED:
                return False
            self._state = _WITHDRAWN
            return True


async def _wait_call(
    future: asyncio.Future[_T], withdraw: Callable[[], bool], abandon_on_cancel: bool
) -> _T:
    """Await a worker call's future with `AsyncBackend.run_in_thread` cancellation semantics.

    ``withdraw()`` must return True, atomically, if the call will never start (it was still
    queued), False if it is running or done.
    """
    try:
        # Shielded: a cancellation of this task must not cancel ``future``, which is our only
        # way to learn when a running call returns.
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if future.cancelled():
            # The executor dropped the call (shutdown with cancel_futures=True), this task was
            # not cancelled: report it as an error, not as a cancellation of the task.
            raise concurrent.futures.CancelledError("the executor cancelled the call") from None
        if withdraw() or abandon_on_cancel:
            # Not started (it never will), or abandoned: drop it from the executor's queue and
            # discard its outcome.
            future.cancel()
            raise
        while not future.done():
            try:
                await asyncio.wait((future,))
            except asyncio.CancelledError:
                continue  # asked again; we are already going to raise
        if not future.cancelled():
            future.exception()  # the outcome is discarded: mark it retrieved, so it is not logged
        raise


class AsyncIOBackend(AsyncBackend):
    """The backend for asyncio's stock event loop (``"asyncio"``) and for uvloop (``"uvloop"``).

    `run_in_thread` uses the running loop's default executor: a ``ThreadPoolExecutor`` with
    ``min(32, os.cpu_count() + 4)`` threads unless the application set another one with
    ``loop.set_default_executor``.
    """

    __slots__ = ("_name",)

    def __init__(self, name: Literal["asyncio", "uvloop"]) -> None:
        """Create the backend; use `server_framework.backend.get_backend` instead.

        Args:
            name: ``"asyncio"`` or ``"uvloop"``: the loop this backend object stands for.
        """
        self._name: Literal["asyncio", "uvloop"] = name

    def __repr__(self) -> str:
        return f"<AsyncIOBackend name={self._name!r}>"

    @property
    def name(self) -> Literal["asyncio", "uvloop"]:
        return self._name

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)

    async def sleep_forever(self) -> None:
        await asyncio.get_running_loop().create_future()

    async def sleep_until(self, deadline: float) -> None:
        if deadline == math.inf:
            await self.sleep_forever()
            return
        loop = asyncio.get_running_loop()
        delay = deadline - loop.time()
        if delay <= 0:
            await asyncio.sleep(0)
            return
        # A timer may fire a little early (asyncio runs those within the clock resolution,
        # uvloop rounds to milliseconds): sleep again for the rest.
        while delay > 0:
            await asyncio.sleep(delay)
            delay = deadline - loop.time()

    def current_time(self) -> float:
        return asyncio.get_running_loop().time()

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    def create_event(self) -> Event:
        return asyncio.Event()

    def create_lock(self) -> Lock:
        return asyncio.Lock()

    def create_fair_lock(self) -> Lock:
        # asyncio.Lock hands over in arrival order: release() wakes the first waiter, and an
        # acquire() finding a live waiter queues behind it, even if the lock looks free.
        return asyncio.Lock()

    def create_condition(self, lock: Lock | None = None) -> Condition:
        if lock is None:
            return asyncio.Condition()
        if not isinstance(lock, asyncio.Lock):
            raise TypeError(
                f"{self._name} conditions need a lock from create_lock() or create_fair_lock() "
                f"of the {self._name} backend, not {lock!r}"
            )
        # asyncio.Lock binds to a loop on its first contended acquire (``_loop``, from its
        # _LoopBoundMixin); Condition.wait would then fail with a RuntimeError on this loop.
        bound = getattr(lock, "_loop", None)
        if bound is not None and bound is not asyncio._get_running_loop():
            raise TypeError(f"{lock!r} belongs to another event loop")
        return asyncio.Condition(lock)

    def create_task_group(self) -> TaskGroup:
        return _AsyncIOTaskGroup()

    def open_cancel_scope(self, *, deadline: float = math.inf) -> CancelScope:
        return _AsyncIOCancelScope(deadline, raise_timeout=False)

    def timeout(self, delay: float) -> CancelScope:
        return _AsyncIOCancelScope(self.current_time() + delay, raise_timeout=True)

    def timeout_at(self, deadline: float) -> CancelScope:
        return _AsyncIOCancelScope(deadline, raise_timeout=True)

    def move_on_after(self, delay: float) -> CancelScope:
        return _AsyncIOCancelScope(self.current_time() + delay, raise_timeout=False)

    def move_on_at(self, deadline: float) -> CancelScope:
        return _AsyncIOCancelScope(deadline, raise_timeout=False)

    async def cancel_shielded(
        self, coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]], *args: *_Ts
    ) -> _T:
        # asyncio delivers a cancellation into the awaited coroutine chain; the only way to keep
        # it out is to run the coroutine in its own task and wait for that task to finish.
        task = asyncio.get_running_loop().create_task(coro_fn(*args))
        cancellation: asyncio.CancelledError | None = None
        while not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError as exc:
                cancellation = exc
        if cancellation is not None and (task.cancelled() or task.exception() is None):
            raise cancellation
        return task.result()

    def get_cancelled_exc_class(self) -> type[BaseException]:
        return asyncio.CancelledError

    async def run_in_thread(
        self, fn: Callable[..., _T], /, *args: Any, abandon_on_cancel: bool = False, **kwargs: Any
    ) -> _T:
        call = _WorkerCall(fn, args, kwargs)
        future = asyncio.get_running_loop().run_in_executor(None, call)
        return await _wait_call(future, call.withdraw, abandon_on_cancel)

    async def _wait_future(
        self, future: concurrent.futures.Future[_T], abandon_on_cancel: bool
    ) -> _T:
        return await _wait_call(asyncio.wrap_future(future), future.cancel, abandon_on_cancel)

    async def getaddrinfo(  # noqa: PLR0917  (socket.getaddrinfo's signature)
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[AddrInfo]:
        # The loop's own: asyncio's runs socket.getaddrinfo in the default executor (a
        # cancellation abandons it), uvloop's uses libuv's thread pool; a loop subclass that
        # overrides it is honoured, as asyncio's own connection methods do.
        result = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )
        # typeshed adds (int, bytes) addresses, for a Python built without IPv6 support.
        return cast(list[AddrInfo], result)

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int = 0
    ) -> tuple[str, str]:
        return await asyncio.get_running_loop().getnameinfo(sockaddr, flags)

    def create_threads_portal(self) -> ThreadsPortal:
        return _AsyncIOThreadsPortal()


class _AsyncIOThreadsPortal(ThreadsPortal):
    __slots__ = ("_loop", "_tasks")

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()  # raises outside a loop, before we open
        self._open()
        self._loop = loop
        self._drained = asyncio.Event()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        drained = self._stop_accepting()
        if exc_type is not None:
            self._cancel_all()
        cancellation: asyncio.CancelledError | None = None
        assert self._drained is not None
        while not drained:
            try:
                await self._drained.wait()
                drained = True
            except asyncio.CancelledError as cancelled:
                cancellation = cancelled
                self._cancel_all()
        self._close()
        if cancellation is not None:
            raise cancellation

    def _call_soon_threadsafe(
        self, callback: Callable[[PortalCall[Any]], None], call: PortalCall[Any]
    ) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback, call)

    def _start_task(self, call: PortalCall[Any]) -> None:
        future = call.future
        if self._cancelling or future.cancelled():
            future.cancel()
            self._call_finished()
            return
        assert self._loop is not None
        try:
            coro = call.context.run(call.fn, *call.args, **call.kwargs)
            task = self._loop.create_task(coro, context=call.context)
        except BaseException as exc:  # coro_fn is not a coroutine function, for example
            call.set_exception(exc)
            self._call_finished()
            return
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, call))
        if call.cancellable:
            future.add_done_callback(functools.partial(self._future_done, task))

    def _task_done(self, call: PortalCall[Any], task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            call.future.cancel()
        else:
            exc = task.exception()  # also marks it retrieved: asyncio will not log it
            if exc is None:
                call.set_result(task.result())
            else:
                call.set_exception(exc)
        self._call_finished()

    def _future_done(self, task: asyncio.Task[Any], future: concurrent.futures.Future[Any]) -> None:
        # Runs in whichever thread completed the future; only a cancellation concerns us.
        if future.cancelled():
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop is closed: the task is long gone

    def _cancel_all(self) -> None:
        self._cancelling = True
        for task in self._tasks:
            task.cancel()
