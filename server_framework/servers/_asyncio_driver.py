"""The asyncio/uvloop side of the handler driver, shared by stream connections and datagram clients.

Each connection (or datagram peer) has one task, which runs the start hook, finishes blocked
handler steps and ends the connection. While that task is parked waiting for data, the
transport callback that delivered the data handles the new messages right there, *as that
task*: it marks the task as the loop's current task (``asyncio.tasks._enter_task``, what
asyncio itself does around every task step) and runs the batch in the task's context. So
``asyncio.current_task()``, ``asyncio.timeout`` and task groups behave exactly as in the task,
yet a handler that does not block costs no event-loop trip per read. A step that blocks is
handed to the task, which awaits it.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from ._driver import IDLE_TIMEOUT, REQUEST_TIMEOUT, Blocked, ConnectionDriver, logger

__all__ = ["AsyncIODriver", "drain_tasks"]

# Private but stable since Python 3.7 (C-accelerated): asyncio's own task steps use them.
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task


async def drain_tasks(tasks: set[asyncio.Task[None]], grace: float, what: str) -> None:
    """Let ``tasks`` finish within ``grace`` seconds, then cancel the rest (logging their count)."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=grace)
    if pending:
        logger.warning(f"cancelling {what} still busy after the grace period", count=len(pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)


def _expire(waiter: asyncio.Future[object], marker: object) -> None:  # a timer callback
    if not waiter.done():
        waiter.set_result(marker)


class AsyncIODriver(ConnectionDriver):
    """Task, waiter and timer of one connection or datagram peer on an asyncio loop.

    Subclasses define ``_loop``/``_idle_timeout`` (as slots or properties), ``_on_start``,
    ``_cleanup``, and may override ``_process_batch`` and ``_before_wait``.
    """

    __slots__ = (
        "_context",
        "_eof",
        "_idle_timer",
        "_last_active",
        "_loop",
        "_task",
        "_timer",
        "_waiter",
    )

    _idle_timeout: float | None

    def _init_driver(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task: asyncio.Task[None] | None = None
        self._context: contextvars.Context | None = None
        self._waiter: asyncio.Future[object] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the handler's RecvParams timeout
        self._idle_timer: asyncio.TimerHandle | None = None  # checks _last_active, rarely re-armed
        self._last_active = loop.time()  # idle time counts from accept, then from each batch
        self._eof = False

    def _start_task(self) -> asyncio.Task[None]:
        # The task gets its own context (where the log context is bound); the batches run
        # inline by transport callbacks use the same context.
        context = self._context = contextvars.copy_context()
        task = self._task = self._loop.create_task(self._run(), context=context)
        return task

    # -- hooks -------------------------------------------------------------------------

    async def _on_start(self) -> None:
        """Runs first in the task (log context, ``on_connection``)."""

    async def _cleanup(self) -> None:
        """Runs last in the task, whatever happened."""

    async def _before_wait(self) -> None:
        """Runs before each wait for data (e.g. wait for write buffers to drain)."""

    def _process_batch(self) -> Blocked | None:
        return self._process()

    # -- the task ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._on_start()
            while True:
                blocked = self._process_batch()
                if blocked is not None:
                    await self._finish_blocked(blocked)
                    continue
                if self._should_stop():
                    break
                await self._before_wait()
                woke = await self._wait_data()
                if woke is None:
                    if self._eof:
                        # Handle the messages already received (a half-closed peer still
                        # reads our replies), start nothing new.
                        self._stopping = True
                elif woke is IDLE_TIMEOUT:
                    logger.debug("closing idle connection")
                    break
                elif woke is REQUEST_TIMEOUT:
                    await self._throw_timeout()
                else:  # a step that a transport callback ran inline blocked: finish it here
                    await self._finish_blocked(woke)
        except asyncio.CancelledError:
            logger.debug("connection cancelled")
            raise
        except Exception as exc:
            logger.error("connection failed", exc_info=exc)
        finally:
            for timer in (self._timer, self._idle_timer):
                if timer is not None:
                    timer.cancel()
            self._timer = self._idle_timer = None
            await self._cleanup()

    def _deliver(self) -> None:
        """New data was queued: handle it inline if the task is parked, else it will see it."""
        waiter = self._waiter
        if waiter is None:
            return
        loop = self._loop
        task = self._task
        assert task is not None
        assert self._context is not None
        try:
            _enter_task(loop, task)
        except RuntimeError:  # called from inside another task: let our task do the work
            self._wake()
            return
        try:
            blocked = self._context.run(self._process_batch)
        finally:
            _leave_task(loop, task)
        if blocked is not None:
            self._wake(blocked)
        elif self._should_stop() or self._eof or self._needs_task():
            self._wake()
        else:
            self._last_active = loop.time()
            if self._timer is not None or self._params is not None:
                self._arm_request_timer(waiter)

    def _needs_task(self) -> bool:
        """True if the task must run before waiting again (e.g. to drain writes)."""
        return False

    async def _wait_data(self) -> Any:
        """Wait for data to be handled (``None``, or a blocked step handed over), or a timeout.

        Returns ``None`` also on EOF and when asked to stop, or the timeout's marker.
        """
        if self._eof or self._should_stop():
            return None
        loop = self._loop
        waiter: asyncio.Future[object] = loop.create_future()
        self._waiter = waiter
        self._last_active = loop.time()
        self._arm_request_timer(waiter)
        if self._idle_timeout is not None and self._idle_timer is None:
            self._idle_timer = loop.call_later(self._idle_timeout, self._check_idle)
        try:
            return await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _arm_request_timer(self, waiter: asyncio.Future[object]) -> None:
        """(Re)start the timer of the handler's ``RecvParams.timeout``, if it asked for one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        params = self._params
        if params is not None and params.timeout is not None:
            self._timer = self._loop.call_later(params.timeout, _expire, waiter, REQUEST_TIMEOUT)

    def _check_idle(self) -> None:
        """The idle timer: close if parked and quiet for ``idle_timeout``, else check again later.

        One timer per connection, re-armed only when it fires, instead of a new timer per
        request: the activity time is a float updated per batch.
        """
        idle = self._idle_timeout
        assert idle is not None
        remaining = self._last_active + idle - self._loop.time()
        if self._waiter is not None and remaining <= 0:
            self._idle_timer = None
            self._wake(IDLE_TIMEOUT)
            return
        self._idle_timer = self._loop.call_later(max(remaining, 0.0) or idle, self._check_idle)

    def _wake(self, value: object = None) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(value)
