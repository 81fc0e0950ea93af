"""`ThreadsPortal`: let worker threads run code in the event loop, with the shared bookkeeping.

Strategy. The thread-side API (the four ``run_*`` methods), the deadlock guard and the life
cycle are written once here; a backend module supplies only four loop-specific pieces: how to
schedule a callback from another thread, how to start a task, how to cancel everything, and
how to open/close its task container (a nursery on trio, a set of tasks on asyncio).

Every call from a thread is *accepted* under a lock, which checks that the portal is open and
counts the call; the loop thread counts, without a lock since only it writes that count, the
calls that have finished (or were cancelled before they started). Exiting the portal first
stops accepting (under the same lock, so the accepted count is final), then waits until both
counts are equal. So a call that races with the exit either gets a
`RuntimeError` at once or is accepted and then always reaches an end: it runs, or, if the exit
comes from an exception or a cancellation, its future ends cancelled. No caller can hang on a
future that nobody will resolve, and no task outlives the ``async with``.

Results travel in `concurrent.futures.Future` objects. A future stays *pending* while its task
runs (it is marked running only to store the outcome), so the thread can still cancel it, and
cancelling it cancels the task in the loop.
"""

from __future__ import annotations

import contextvars
import enum
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Self, TypeVar

if TYPE_CHECKING:
    from server_framework.backend._primitives import Event

__all__ = ["PortalCall", "ThreadsPortal"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class PortalCall(Generic[_T]):
    """One call accepted from a thread: what to run, in which context, and its future."""

    __slots__ = ("args", "cancellable", "context", "fn", "future", "kwargs")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        cancellable: bool,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # The calling thread's context: context flows from the thread into the loop.
        self.context = contextvars.copy_context()
        self.future: Future[_T] = Future()
        self.cancellable = cancellable

    def claim(self) -> bool:
        """Mark the future running; return False if its thread has cancelled it already.

        Only a cancellable future may have been cancelled by its thread (the portal cancels
        the others itself, and then does not run them), so the others skip the future's lock:
        every lock taken in the loop thread shows in the round trip (most on uvloop).
        """
        return not self.cancellable or self.future.set_running_or_notify_cancel()

    def set_result(self, result: _T) -> None:
        """Store a task's result in the future, unless its thread cancelled it meanwhile."""
        if self.claim():
            self.future.set_result(result)

    def set_exception(self, exc: BaseException) -> None:
        """Store a task's exception in the future, unless its thread cancelled it meanwhile."""
        if self.claim():
            self.future.set_exception(exc)


class ThreadsPortal(ABC):
    """A way back into the event loop for code running in other threads.

    Create it with ``backend.create_threads_portal()`` and enter it in the event loop::

        async with backend.create_threads_portal() as portal:
            result = await backend.run_in_thread(blocking_work, portal)

        def blocking_work(portal: ThreadsPortal) -> int:
            portal.run_sync(event.set)                       # a plain callable, in the loop
            return portal.run_coroutine(fetch_something, 42)  # a coroutine, in the loop

    From any thread but the loop's own, while the portal is open:

    - `run_coroutine` / `run_sync` block until the call is done and return its result or
      raise its exception;
    - `run_coroutine_soon` / `run_sync_soon` return a `concurrent.futures.Future` at once;
      cancelling that future cancels the call in the loop (and the future ends cancelled).

    The call runs in a copy of the *calling thread's* `contextvars` context. An exception in a
    call goes to its future only: it never crashes the portal or the other calls.

    Calling any of the four methods from the event loop's own thread raises `RuntimeError` at
    once (a blocking call there would deadlock), as does calling them before the portal is
    entered or after it has exited.

    Cancellation:
        On exit, the portal waits for the calls it has accepted. When the ``async with`` block
        ends with an exception (a cancellation, such as a server shutdown, or an error), the
        calls still running are cancelled first, and the calls not started yet end cancelled
        without running. If the exit is cancelled while it waits, it cancels them too, waits
        for them to unwind, then re-raises the cancellation.
    """

    __slots__ = (
        "_accepted",
        "_cancelling",
        "_drained",
        "_finished",
        "_lock",
        "_loop_thread",
        "_state",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._loop_thread: int | None = None
        # Calls accepted (written under ``_lock``, by any thread) and calls finished (written by
        # the loop thread only); ``_accepted`` stops changing once the state leaves OPEN.
        self._accepted = 0
        self._finished = 0
        # Set in the loop thread when calls must end cancelled instead of starting.
        self._cancelling = False
        # Set when every accepted call has finished, while closing; created at ``__aenter__``.
        self._drained: Event | None = None

    # ------------------------------------------------------------------ thread side

    def run_coroutine(
        self, coro_fn: Callable[_P, Coroutine[Any, Any, _T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``await coro_fn(*args, **kwargs)`` in the event loop; block until it is done.

        Args:
            coro_fn: A coroutine function, called in the loop thread.
            *args: Positional arguments for ``coro_fn``.
            **kwargs: Keyword arguments for ``coro_fn``.

        Returns:
            What the coroutine returns.

        Raises:
            RuntimeError: Called from the event loop thread, or the portal is not open.
            concurrent.futures.CancelledError: The call was cancelled in the loop (for
                example because the portal exited on a cancellation).
            Exception: Whatever the coroutine raises.
        """
        # Nobody else sees this future, so nobody can cancel it: skip the per-call cancel hook
        # (a cancel scope on trio costs more than the rest of the loop-side work).
        call: PortalCall[_T] = PortalCall(coro_fn, args, kwargs, cancellable=False)
        self._submit(self._start_task, call)
        return call.future.result()

    def run_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn(*args, **kwargs)`` in the event loop thread; block until it returns.

        Use it for quick, non-blocking calls that must happen in the loop thread, such as
        ``event.set``.

        Args:
            fn: A plain callable, called in the loop thread.
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            What ``fn`` returns.

        Raises:
            RuntimeError: Called from the event loop thread, or the portal is not open.
            concurrent.futures.CancelledError: The portal exited on a cancellation before the
                call could run.
            Exception: Whatever ``fn`` raises.
        """
        call: PortalCall[_T] = PortalCall(fn, args, kwargs, cancellable=False)
        self._submit(self._run_sync_call, call)
        return call.future.result()

    def run_coroutine_soon(
        self, coro_fn: Callable[_P, Coroutine[Any, Any, _T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]:
        """Start ``coro_fn(*args, **kwargs)`` as a task in the event loop; return at once.

        Args:
            coro_fn: A coroutine function, called in the loop thread.
            *args: Positional arguments for ``coro_fn``.
            **kwargs: Keyword arguments for ``coro_fn``.

        Returns:
            A future for the outcome. Cancelling it cancels the task; the future then ends
            cancelled whatever the task does with the cancellation.

        Raises:
            RuntimeError: Called from the event loop thread, or the portal is not open.
        """
        call: PortalCall[_T] = PortalCall(coro_fn, args, kwargs, cancellable=True)
        self._submit(self._start_task, call)
        return call.future

    def run_sync_soon(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` in the event loop thread; return at once.

        Args:
            fn: A plain callable, called in the loop thread.
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            A future for the outcome. Cancelling it before the call ran prevents the call.

        Raises:
            RuntimeError: Called from the event loop thread, or the portal is not open.
        """
        call: PortalCall[_T] = PortalCall(fn, args, kwargs, cancellable=True)
        self._submit(self._run_sync_call, call)
        return call.future

    def _submit(self, callback: Callable[[PortalCall[Any]], None], call: PortalCall[Any]) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                "ThreadsPortal methods are for other threads: called from the event loop's own "
                "thread they would deadlock. In the loop, await the coroutine or call the "
                "function directly."
            )
        with self._lock:
            if self._state is not _State.OPEN:
                raise RuntimeError(self._not_open_message())
            self._accepted += 1
        try:
            self._call_soon_threadsafe(callback, call)
        except BaseException:
            # The loop is gone (it cannot run the callback); nobody waits for this call.
            with self._lock:
                self._accepted -= 1
            raise

    def _not_open_message(self) -> str:
        if self._state is _State.NEW:
            return (
                "the ThreadsPortal is not open yet: enter it first, in the event loop, with "
                "'async with backend.create_threads_portal() as portal:'"
            )
        return "the ThreadsPortal is closed: its 'async with' block has exited"

    # ------------------------------------------------------------------ loop side

    def _open(self) -> None:
        """Mark the portal open; call it first in ``__aenter__``, in the loop thread."""
        with self._lock:
            if self._state is not _State.NEW:
                raise RuntimeError("a ThreadsPortal can be entered only once; create a new one")
            self._loop_thread = threading.get_ident()
            self._state = _State.OPEN

    def _stop_accepting(self) -> bool:
        """Refuse new calls from now on; return True if no accepted call is outstanding."""
        with self._lock:
            self._state = _State.CLOSING
            return self._finished == self._accepted

    def _close(self) -> None:
        with self._lock:
            self._state = _State.CLOSED

    def _call_finished(self) -> None:
        """Account for one accepted call that has ended (in the loop thread)."""
        # No lock: the exit runs in this same thread, and sets CLOSING (after which
        # ``_accepted`` is final) before it reads the counts.
        self._finished += 1
        if self._state is _State.CLOSING and self._finished == self._accepted:
            assert self._drained is not None
            self._drained.set()

    def _run_sync_call(self, call: PortalCall[Any]) -> None:
        # Scheduled by `run_sync[_soon]`; runs in the loop thread and must never raise (on trio an
        # exception in such a callback would crash the run).
        future = call.future
        try:
            if self._cancelling:
                future.cancel()
            elif call.claim():  # from here on, the thread can no longer cancel it
                try:
                    result = call.context.run(call.fn, *call.args, **call.kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            self._call_finished()

    @abstractmethod
    def _call_soon_threadsafe(
        self, callback: Callable[[PortalCall[Any]], None], call: PortalCall[Any]
    ) -> None:
        """Schedule ``callback(call)`` in the loop thread, from any thread."""

    @abstractmethod
    def _start_task(self, call: PortalCall[Any]) -> None:
        """Start ``call.fn`` as a task in ``call.context`` (in the loop thread).

        Must never raise, and must end with `_call_finished` once the task is done. If
        ``self._cancelling`` is set, cancel the future instead of starting. If
        ``call.cancellable``, cancelling the future (from any thread) must cancel the task.
        """

    @abstractmethod
    def _cancel_all(self) -> None:
        """Set ``self._cancelling`` and cancel every running task (in the loop thread)."""

    @abstractmethod
    async def __aenter__(self) -> Self:
        """Open the portal; must be awaited in the event loop thread.

        Raises:
            RuntimeError: The portal was entered before.
        """

    @abstractmethod
    async def __aexit__(self, *exc_info: Any) -> None:
        """Close the portal: refuse new calls, then wait for the accepted ones.

        Cancellation:
            If the block ended with an exception, running calls are cancelled first. If a
            cancellation arrives while waiting, the calls are cancelled, the exit waits for
            them to unwind, then re-raises the cancellation.
        """
