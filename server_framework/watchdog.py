"""Blocked-loop detection: one warning, with the blocking code's stack, when a loop stalls.

A handler that calls ``time.sleep``, a blocking database driver or a long computation in the
event loop stops every other connection of the process; in production it shows only as
latency. :func:`watch_loop` finds it as it happens:

- **A heartbeat** in the loop: a task that notes the time, then sleeps ``interval`` seconds
  (a quarter of the threshold). It costs one wake-up per interval, nothing per request.
- **A sampler thread**, one per process for every watched loop: when a loop's last beat is
  older than ``threshold`` seconds, it takes the stack of that loop's thread
  (``sys._current_frames``), finds in it the request handler's method and the connection it
  was serving, and logs **one** warning per stall, ``event loop blocked``, with
  ``blocked_for``, ``handler`` (``Class.method``), ``peer`` and ``stack``. When the loop beats
  again, one INFO line, ``event loop unblocked``, says how long it was.

Servers run it while they serve (``warn_blocked=``, default :data:`DEFAULT_WARN_BLOCKED`
seconds; the command line's ``--warn-blocked``; 0 or None turns it off). Several servers on one
loop share its heartbeat; the warning is logged once per stall, not once per server.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any, Final, Protocol

import structlog

from server_framework.backend import AsyncBackend

__all__ = ["DEFAULT_WARN_BLOCKED", "LoopWatch", "describe_frames", "watch_loop"]

logger: Final = structlog.get_logger("server_framework.watchdog")

#: Seconds a loop may go without running its heartbeat before the warning.
DEFAULT_WARN_BLOCKED: Final = 0.2

#: The handler methods looked for in a blocked stack (the innermost one wins).
_HANDLER_METHODS: Final = frozenset(
    {"handle", "respond", "on_connection", "on_disconnection", "service_init", "on_bad_message"}
)

#: Stack frames kept in the warning, innermost last.
_STACK_LIMIT: Final = 30


def _heartbeat_interval(threshold: float) -> float:
    """Seconds between two heartbeats for a ``threshold``: a quarter of it (5 ms at least)."""
    return max(0.005, threshold / 4)


class _Loop:
    """One watched loop: its thread, its last beat, and whether this stall was reported."""

    __slots__ = (
        "beat",
        "interval",
        "last_lag",
        "name",
        "thread_id",
        "threshold",
        "users",
        "warned_at",
    )

    def __init__(self, thread_id: int, threshold: float, name: str) -> None:
        self.thread_id = thread_id
        self.threshold = threshold
        self.interval = _heartbeat_interval(threshold)
        self.name = name
        self.beat = time.monotonic()
        self.last_lag = 0.0  # how late the last heartbeat ran
        self.users = 0
        self.warned_at: float | None = None

    def lag(self) -> float:
        """The event-loop lag: how late the last heartbeat ran, or how long the loop has run
        no heartbeat beyond its interval if that is more (it is blocked now). Seconds."""
        return max(self.last_lag, time.monotonic() - self.beat - self.interval, 0.0)


class _Sampler:
    """The process's sampler thread, running while at least one loop is watched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[int, _Loop] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def attach(self, thread_id: int, threshold: float, name: str) -> _Loop:
        with self._lock:
            loop = self._loops.get(thread_id)
            if loop is None:
                loop = self._loops[thread_id] = _Loop(thread_id, threshold, name)
            loop.threshold = min(loop.threshold, threshold)
            loop.interval = _heartbeat_interval(loop.threshold)
            loop.users += 1
            if self._thread is None:
                self._wake.clear()
                self._thread = threading.Thread(
                    target=self._run, name="server_framework watchdog", daemon=True
                )
                self._thread.start()
            return loop

    def detach(self, loop: _Loop) -> None:
        thread = None
        with self._lock:
            loop.users -= 1
            if loop.users == 0:
                self._loops.pop(loop.thread_id, None)
            if not self._loops and self._thread is not None:
                thread, self._thread = self._thread, None
                self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                loops = list(self._loops.values())
            if not loops:
                return
            interval = min(loop.threshold for loop in loops) / 4
            if self._wake.wait(max(0.005, min(interval, 0.25))):
                return
            now = time.monotonic()
            for loop in loops:
                self._check(loop, now)

    def _check(self, loop: _Loop, now: float) -> None:
        stalled = now - loop.beat
        if loop.warned_at is not None:
            if stalled < loop.threshold:  # it beat again
                blocked = loop.beat - loop.warned_at
                loop.warned_at = None
                logger.info("event loop unblocked", backend=loop.name, blocked_for=blocked)
            return
        if stalled < loop.threshold:
            return
        frame = sys._current_frames().get(loop.thread_id)
        if frame is not None and _waiting_for_events(frame):
            # Not blocked by code: the loop waits in its selector and the heartbeat is late
            # (a starved CPU, a paused process). Look again at the next sample.
            return
        loop.warned_at = loop.beat
        logger.warning(
            "event loop blocked",
            backend=loop.name,
            blocked_for=round(stalled, 3),
            threshold=loop.threshold,
            **describe_frames(frame),
        )


_sampler: Final = _Sampler()


def describe_frames(frame: FrameType | None) -> dict[str, Any]:
    """What a blocked thread's stack says: the handler method and peer, and the stack itself.

    Args:
        frame: The innermost frame of the blocked thread (None: the thread is gone).

    Returns:
        ``handler`` (``Class.method`` of the innermost request-handler method on the stack, or
        None), ``peer`` (the ``client.peer_address`` that method was serving, or None) and
        ``stack`` (the formatted stack, innermost last, at most 30 frames).
    """
    if frame is None:
        return {"handler": None, "peer": None, "stack": None}
    handler = peer = None
    current: FrameType | None = frame
    while current is not None:
        code = current.f_code
        if code.co_name in _HANDLER_METHODS and "self" in code.co_varnames:
            handler = code.co_qualname
            peer = _peer_of(current)
            break
        current = current.f_back
    stack = "".join(traceback.format_stack(frame, limit=_STACK_LIMIT))
    return {"handler": handler, "peer": peer, "stack": stack}


def _waiting_for_events(frame: FrameType) -> bool:
    """True if the thread's innermost Python frame is its loop waiting for I/O events."""
    code = frame.f_code
    filename = code.co_filename.replace("\\", "/")
    if code.co_name == "select" and filename.endswith("/selectors.py"):
        return True  # asyncio's selector loop
    if code.co_name == "run" and filename.endswith("/asyncio/runners.py"):
        return True  # uvloop: its loop (in C) runs no Python code between events
    return code.co_name == "get_events" and "/trio/" in filename  # trio's I/O manager


def _peer_of(frame: FrameType) -> str | None:
    try:
        client = frame.f_locals.get("client")
        address = getattr(client, "peer_address", None)
    except Exception:  # a property of the user's client object may fail; the warning must not
        return None
    return None if address is None else str(address)


class LoopWatch(Protocol):
    """What :func:`watch_loop` gives the code it watches: the loop's lag, as measured."""

    def lag(self) -> float:
        """The event-loop lag in seconds: how late the last heartbeat ran, or the current
        stall if the loop runs no heartbeat now."""


@contextlib.asynccontextmanager
async def watch_loop(
    backend: AsyncBackend, threshold: float | None
) -> AsyncIterator[LoopWatch | None]:
    """Watch the running loop while inside: one warning per stall longer than ``threshold``.

    Args:
        backend: The running loop's backend.
        threshold: Seconds without a heartbeat that count as blocked; None or 0: do nothing.

    Yields:
        The loop's :class:`LoopWatch` (its lag, readable from any thread), or None when
        ``threshold`` turns the watch off.
    """
    if not threshold:
        yield None
        return
    loop = _sampler.attach(threading.get_ident(), threshold, backend.name)
    interval = _heartbeat_interval(threshold)
    clock = time.monotonic
    try:
        # No task group: an error of the body must not come out of it wrapped in a group.
        if backend.name == "trio":
            import trio  # noqa: PLC0415  (imported only when trio runs)

            scope = trio.CancelScope()

            async def heartbeat() -> None:
                with scope:
                    last = loop.beat = clock()
                    while True:
                        await trio.sleep(interval)
                        beat = loop.beat = clock()
                        loop.last_lag = max(0.0, beat - last - interval)
                        last = beat

            trio.lowlevel.spawn_system_task(heartbeat, name="server_framework heartbeat")
            try:
                yield loop
            finally:
                scope.cancel()
        else:
            import asyncio  # noqa: PLC0415  (asyncio and uvloop)

            running = asyncio.get_running_loop()
            handle: asyncio.TimerHandle | None = None
            last = loop.beat = clock()

            def beat() -> None:
                nonlocal handle, last
                now = loop.beat = clock()
                loop.last_lag = max(0.0, now - last - interval)
                last = now
                handle = running.call_later(interval, beat)

            handle = running.call_later(interval, beat)
            try:
                yield loop
            finally:
                assert handle is not None
                handle.cancel()
    finally:
        _sampler.detach(loop)
