"""The asyncio backend, for the stock loop and for uvloop alike.

uvloop implements asyncio's event loop API on libuv, so one class serves both: the only
difference is which loop `run` starts (``asyncio.Runner`` with or without
``loop_factory=uvloop.new_event_loop``), and the backend's `name`. uvloop is imported only when
it is asked for, or found already imported.

Strategy:

- Primitives are the loop's own (``asyncio.Event``, ``asyncio.Lock``, ``asyncio.TaskGroup``).
- Cancel scopes are written here, as *sync* context managers: at the deadline a timer handle
  cancels the task, and on exit the scope recognises its own cancellation the way
  ``asyncio.Timeout`` does (``Task.uncancel()`` against the count seen on entry).
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
from typing import Any, Generic, Literal, Self, TypeVar, TypeVarTuple, Unpack

from server_framework.backend._abc import AsyncBackend
from server_framework.backend._portal import PortalCall, ThreadsPortal
from server_framework.backend._primitives import CancelScope, Event, Lock, TaskGroup

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


class _AsyncIOCancelScope(CancelScope):
    __slots__ = (
        "_cancelled_caught",
        "_cancelling",
        "_deadline",
        "_fired",
        "_handle",
        "_raise",
        "_task",
    )

    def __init__(self, deadline: float, raise_timeout: bool) -> None:
        self._deadline = deadline
        self._raise = raise_timeout
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.Handle | None = None
        self._cancelling = 0
        self._fired = False
        self._cancelled_caught = False

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def cancelled_caught(self) -> bool:
        return self._cancelled_caught

    def __enter__(self) -> Self:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a cancel scope must be entered inside an asyncio task")
        if self._task is not None:
            raise RuntimeError("a cancel scope can be entered only once")
        self._task = task
        # Cancellations requested before entry are not ours to catch.
        self._cancelling = task.cancelling()
        if self._deadline != math.inf:
            loop = asyncio.get_running_loop()
            if self._deadline <= loop.time():
                self._handle = loop.call_soon(self._fire)
            else:
                self._handle = loop.call_at(self._deadline, self._fire)
        return self

    def _fire(self) -> None:
        # Runs only while the task is suspended inside the block (the handle is cancelled
        # on exit), so the cancellation is always delivered inside the block.
        self._handle = None
        self._fired = True
        assert self._task is not None
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
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
            if self._raise:
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

    async def __aenter__(self) -> Self:
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        await self._group.__aexit__(*exc_info)
        return None


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

    def current_time(self) -> float:
        return asyncio.get_running_loop().time()

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    def create_event(self) -> Event:
        return asyncio.Event()

    def create_lock(self) -> Lock:
        return asyncio.Lock()

    def create_task_group(self) -> TaskGroup:
        return _AsyncIOTaskGroup()

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
