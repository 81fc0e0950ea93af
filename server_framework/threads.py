"""Threads: your own worker pool for async code (`AsyncExecutor`), the way back (``ThreadsPortal``).

Three tools, one direction each:

- ``await backend.run_in_thread(fn, *args)``: loop -> thread, on the backend's bounded default
  pool (see `AsyncBackend.run_in_thread`);
- `AsyncExecutor`: loop -> thread, on a pool you choose (a handler's own
  ``ThreadPoolExecutor``, sized for its work), shut down when its ``async with`` exits;
- `~server_framework.backend.ThreadsPortal` (``backend.create_threads_portal()``): thread ->
  loop.

Strategy of `AsyncExecutor`: each call is submitted with ``executor.submit`` (as
``context.run(fn, ...)`` on a copy of the caller's `contextvars` context, except for process
pools) and its `concurrent.futures.Future` is awaited through the backend, which knows how to
wake its loop from another thread. On cancellation, ``future.cancel()`` says atomically whether
the call had started. Shutting down, which blocks until the running work is done, happens in a
thread of its own so the event loop never stalls.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, ParamSpec, Self, TypeVar

import sniffio

from server_framework.backend import AsyncBackend, BackendName, current, get_backend

__all__ = ["AsyncExecutor"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_ExecutorT = TypeVar("_ExecutorT", bound=concurrent.futures.Executor)


class AsyncExecutor(Generic[_ExecutorT]):
    """Await calls run by a `concurrent.futures.Executor`, without blocking the event loop.

    ::

        async with AsyncExecutor(ThreadPoolExecutor(max_workers=4)) as executor:
            digest = await executor.run(hashlib.sha256, payload)
            async for size in executor.map(os.path.getsize, paths):
                ...
        # here the pool is shut down and its threads have exited

    In a request handler, enter it on the ``service_init`` exit stack so the pool lives as long
    as the server: ``await exit_stack.enter_async_context(AsyncExecutor(pool))``.

    Each call runs in a copy of the caller's `contextvars` context (in which sniffio sees no
    event loop: the worker thread runs none), except with a
    `~concurrent.futures.ProcessPoolExecutor` or ``handle_contexts=False``: a context cannot be
    sent to another process (there, as always, use module-level functions and picklable
    arguments).

    The signature is EasyNetwork's (``AsyncExecutor(executor, backend=None, *,
    handle_contexts=True)``), as are `run`, `map`, `shutdown`, `shutdown_nowait`, `backend`
    and `wrapped`.

    Args:
        executor: The executor to run calls in. `AsyncExecutor` shuts it down on exit.
        backend: The backend of the loop that awaits the calls, or its name (``"asyncio"``,
            ``"uvloop"``, ``"trio"``); None means the running loop's
            (`server_framework.backend.current()`), found now if a loop runs in this thread,
            else at first use.
        handle_contexts: Run each call in a copy of the caller's context (the default); False
            for executors that cannot take one.

    Raises:
        TypeError: ``executor`` is not a `concurrent.futures.Executor`, or ``backend`` is
            neither an `AsyncBackend`, a backend name nor None.
        ValueError: Unknown backend name.
    """

    __slots__ = ("_backend", "_copy_context", "_executor")

    def __init__(
        self,
        executor: _ExecutorT,
        backend: AsyncBackend | BackendName | None = None,
        *,
        handle_contexts: bool = True,
    ) -> None:
        if not isinstance(executor, concurrent.futures.Executor):
            raise TypeError(
                f"AsyncExecutor wraps a concurrent.futures.Executor, not {type(executor).__name__}"
            )
        if isinstance(backend, str):
            backend = get_backend(backend)
        elif backend is None:
            try:
                backend = current()
            except RuntimeError:  # no loop in this thread (yet): found at first use
                backend = None
        elif not isinstance(backend, AsyncBackend):
            raise TypeError(
                "backend must be an AsyncBackend, a backend name ('asyncio', 'uvloop', "
                f"'trio') or None, not {type(backend).__name__}"
            )
        self._executor = executor
        self._backend: AsyncBackend | None = backend
        self._copy_context = bool(handle_contexts) and not isinstance(
            executor, concurrent.futures.ProcessPoolExecutor
        )

    @property
    def wrapped(self) -> _ExecutorT:
        """The underlying executor."""
        return self._executor

    def _submit(
        self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[_T]:
        if self._copy_context:
            # One copy per call: a Context cannot be entered by two threads at once.
            context = contextvars.copy_context()
            context.run(sniffio.current_async_library_cvar.set, None)
            return self._executor.submit(context.run, fn, *args, **kwargs)
        return self._executor.submit(fn, *args, **kwargs)

    def _get_backend(self) -> AsyncBackend:
        backend = self._backend
        if backend is None:
            backend = self._backend = current()
        return backend

    def backend(self) -> AsyncBackend:
        """The backend of the loop that awaits the calls; callable from any thread.

        A worker thread (or a `~server_framework.backend.ThreadsPortal` caller) can use it to
        reach the loop, e.g. ``executor.backend().create_threads_portal()`` from the loop, or
        its name and clock.

        Raises:
            RuntimeError: No backend was given and the executor was neither made nor used in
                a running loop yet, and none runs in this thread.
        """
        return self._get_backend()

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn(*args, **kwargs)`` in the executor and return its result.

        Args:
            fn: A blocking callable.
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            What ``fn`` returns.

        Raises:
            RuntimeError: The executor is shut down.
            concurrent.futures.CancelledError: The executor dropped the call before it started
                (``shutdown(cancel_futures=True)``).
            Exception: Whatever ``fn`` raises.

        Cancellation:
            As `AsyncBackend.run_in_thread` without abandoning: a call still queued is
            withdrawn and the cancellation raised at once; a running call is waited for, then
            the cancellation is raised (its result is discarded).
        """
        future = self._submit(fn, args, kwargs)
        return await self._get_backend()._wait_future(future, abandon_on_cancel=False)

    async def map(self, fn: Callable[..., _T], /, *iterables: Iterable[Any]) -> AsyncIterator[_T]:
        """Run ``fn`` over the iterables in the executor; yield the results in order.

        Like `concurrent.futures.Executor.map`: every call is submitted at once (the iterables
        are consumed first), and results are yielded in the order of the inputs as they become
        available. If a call raises, the iteration stops with that exception.

        Args:
            fn: A blocking callable taking one argument from each iterable.
            *iterables: The arguments; the shortest iterable ends the calls.

        Yields:
            ``fn``'s results, in input order.

        Raises:
            RuntimeError: The executor is shut down.
            Exception: Whatever a call raises.

        Cancellation:
            When the iteration stops early (an error, ``break`` followed by ``aclose()``, or a
            cancellation), calls not started yet are withdrawn; a cancellation while waiting
            for a running call behaves as in `run`. Use ``contextlib.aclosing`` to stop early
            without waiting for garbage collection.
        """
        backend = self._get_backend()
        futures = [self._submit(fn, args, {}) for args in zip(*iterables, strict=False)]
        try:
            for future in futures:
                yield await backend._wait_future(future, abandon_on_cancel=False)
        finally:
            for future in futures:
                future.cancel()  # a no-op for the calls already started or done

    def shutdown_nowait(self, *, cancel_futures: bool = False) -> None:
        """Ask the executor to shut down, without waiting for the running calls.

        Args:
            cancel_futures: Also drop the calls not started yet.
        """
        self._executor.shutdown(wait=False, cancel_futures=cancel_futures)

    async def shutdown(self, *, cancel_futures: bool = False) -> None:
        """Shut the executor down and wait for its running calls, off the event loop.

        Calls made after it raise `RuntimeError`. The blocking ``shutdown(wait=True)`` runs in
        a thread of its own (named ``AsyncExecutor.shutdown``), not in the backend's pool,
        which blocking handlers may keep busy.

        Args:
            cancel_futures: Also drop the calls not started yet (the running ones are always
                waited for).

        Cancellation:
            A cancellation while waiting drops the calls not started yet, still waits for the
            running ones (so no thread outlives the call), then propagates.
        """
        backend = self._get_backend()
        cancelled_exc_class = backend.get_cancelled_exc_class()
        if cancel_futures:
            self._executor.shutdown(wait=False, cancel_futures=True)
        done = self._shutdown_in_thread()
        try:
            # Abandon on cancellation, so that we can drop the queued calls at once (below).
            await backend._wait_future(done, abandon_on_cancel=True)
        except cancelled_exc_class:
            self._executor.shutdown(wait=False, cancel_futures=True)
            await backend.cancel_shielded(backend._wait_future, done, False)
            raise

    async def __aenter__(self) -> Self:
        """Return self (and find the backend, if it was not given)."""
        self._get_backend()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """`shutdown`: wait for the running calls; after a cancellation, drop the queued ones."""
        cancelled_exc_class = self._get_backend().get_cancelled_exc_class()
        cancelled = exc_type is not None and issubclass(exc_type, cancelled_exc_class)
        await self.shutdown(cancel_futures=cancelled)

    def _shutdown_in_thread(self) -> concurrent.futures.Future[None]:
        """Start ``shutdown(wait=True)`` in a new thread; return a future for its end."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Running from the start: a cancelled wait must not cancel it (we wait for it again).
        done.set_running_or_notify_cancel()

        def shutdown() -> None:
            try:
                self._executor.shutdown(wait=True)
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        threading.Thread(target=shutdown, name="AsyncExecutor.shutdown").start()
        return done
