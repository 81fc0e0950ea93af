"""SIGINT and SIGTERM while a loop runs: stop serving gracefully, as the command line does.

Shared by :func:`server_framework.run` (and so by every standalone server) and the command
line (:mod:`server_framework.cli.signals`, :mod:`server_framework.cli.serve`).

- :func:`watch_signals` delivers signals *in the loop* through its own API
  (``loop.add_signal_handler`` on asyncio and uvloop, ``trio.open_signal_receiver`` on trio).
- :func:`force_exit_handler` is the plain ``signal.signal`` handler a second Ctrl-C meets: it
  exits at once (130) even if a handler has blocked the loop.
- :func:`run_interruptible` is what :func:`server_framework.run` runs when the signals are its
  to handle (the main thread, and Python's own handlers in place: a program that installed its
  own keeps them). A server's ``serve_forever`` joins the run's :class:`Interrupts` while it
  serves (:func:`serving`); the first SIGINT or SIGTERM asks every joined server to shut down
  gracefully (requests in progress finish within its ``shutdown_timeout``) and lets ``main``
  return; with no server serving, ``main`` is cancelled. After a SIGINT, ``run`` then raises
  ``SystemExit(130)`` (128 + SIGINT, what a shell reports for an interrupted program): no
  traceback. After a SIGTERM it returns what ``main`` returned (or raises ``SystemExit(143)``
  if ``main`` was cancelled).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Final, Protocol

import structlog

from server_framework.log import resolve_format

__all__ = [
    "EXIT_INTERRUPTED",
    "Interrupts",
    "force_exit_handler",
    "run_interruptible",
    "serving",
    "signals_are_ours",
    "watch_signals",
]

logger: Final = structlog.get_logger("server_framework")

#: 128 + SIGINT: how a shell reports a program ended by Ctrl-C.
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT
#: 128 + SIGTERM.
EXIT_TERMINATED: Final = 128 + signal.SIGTERM


class Loop(Protocol):
    """What this module needs of an ``AsyncBackend``: its name (it must not import the backend
    package, which imports it)."""

    @property
    def name(self) -> str: ...


class Stoppable(Protocol):
    """What :class:`Interrupts` needs of a server."""

    def _request_shutdown(self) -> None: ...

    def _grace(self) -> float: ...


def force_exit_handler(log_format: str | None) -> Callable[[int, object], None]:
    """The handler of a second SIGINT: exit now (130), even if the event loop is blocked.

    It writes its line with ``os.write``: a logger's lock may be held by the code it interrupts.
    """
    event = "second SIGINT: exiting without waiting for requests in progress"
    as_json = resolve_format(log_format, sys.stderr) == "json"

    def force_exit(signum: int, frame: object) -> None:
        if as_json:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            line = json.dumps({"timestamp": stamp, "level": "warning", "event": event})
        else:
            line = f"[warning  ] {event}"
        os.write(2, line.encode() + b"\n")
        os._exit(EXIT_INTERRUPTED)

    return force_exit


@contextlib.asynccontextmanager
async def watch_signals(
    backend: Loop, on_signal: Callable[[int], None], signums: tuple[int, ...]
) -> AsyncIterator[None]:
    """Call ``on_signal(signum)`` in the loop when one of ``signums`` arrives, while inside."""
    if backend.name == "trio":
        import trio  # noqa: PLC0415  (imported only when trio runs)

        # A system task, not a nursery: an exception from the body must not come out of it
        # wrapped in an ExceptionGroup.
        with trio.open_signal_receiver(*signums) as receiver:
            watching = trio.CancelScope()

            async def watch() -> None:
                with watching:
                    while not watching.cancel_called:
                        try:
                            signum = await receiver.__anext__()
                        except RuntimeError:  # the block below exited before this task ran
                            return
                        on_signal(signum)

            trio.lowlevel.spawn_system_task(watch)
            try:
                yield
            finally:
                watching.cancel()
        return
    import asyncio  # noqa: PLC0415  (asyncio and uvloop)

    loop = asyncio.get_running_loop()
    for signum in signums:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in signums:
            loop.remove_signal_handler(signum)


def signals_are_ours() -> tuple[int, ...]:
    """The signals :func:`server_framework.run` may handle here: none outside the main thread.

    SIGINT when its handler is Python's own (``KeyboardInterrupt``), SIGTERM when it has none.
    """
    if threading.current_thread() is not threading.main_thread():
        return ()
    signums: list[int] = []
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signums.append(signal.SIGINT)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signums.append(signal.SIGTERM)
    return tuple(signums)


class Interrupts:
    """One run's signal state: the servers serving in it, and the signal that stopped it."""

    def __init__(self, cancel_main: Callable[[], None], signums: tuple[int, ...]) -> None:
        self.servers: set[Stoppable] = set()
        self.signum: int | None = None
        self.cancelled = False
        self._cancel_main = cancel_main
        self._sigint = signal.SIGINT in signums

    def on_signal(self, signum: int) -> None:
        """The first signal stops the servers (or cancels ``main``); a second SIGINT exits."""
        name = signal.Signals(signum).name
        if self.signum is not None:
            if signum == signal.SIGINT:
                force_exit_handler(None)(signum, None)
            logger.info("already stopping", signal=name)
            return
        self.signum = signum
        if self._sigint:
            # From now on SIGINT does not go through the loop, which a handler might block.
            signal.signal(signal.SIGINT, force_exit_handler(None))
        if not self.servers:
            self.cancelled = True
            self._cancel_main()
            return
        grace = max(server._grace() for server in self.servers)
        logger.info("stopping: finishing requests in progress", signal=name, grace=grace)
        for server in list(self.servers):
            server._request_shutdown()


_current: contextvars.ContextVar[Interrupts | None] = contextvars.ContextVar(
    "server_framework_interrupts", default=None
)


@contextlib.contextmanager
def serving(server: Stoppable) -> Iterator[None]:
    """While inside, a signal to the run this task belongs to stops ``server`` gracefully."""
    interrupts = _current.get()
    if interrupts is None:
        yield
        return
    if interrupts.signum is not None:  # a signal came before the server could serve
        server._request_shutdown()
    interrupts.servers.add(server)
    try:
        yield
    finally:
        interrupts.servers.discard(server)


async def run_interruptible(
    backend: Loop,
    main: Callable[..., Coroutine[Any, Any, Any]],
    args: tuple[Any, ...],
    signums: tuple[int, ...],
) -> tuple[Any, int | None]:
    """Run ``main(*args)`` with ``signums`` handled; return its result and the exit code due.

    The exit code is None when no signal came, else what ``run`` must exit with once the loop
    is closed: 130 after SIGINT, 143 after a SIGTERM that found no server to stop, None after
    a SIGTERM whose servers drained (``main`` returned normally).
    """
    if backend.name == "trio":
        import trio  # noqa: PLC0415

        scope = trio.CancelScope()
        interrupts = Interrupts(scope.cancel, signums)
        result = None
        token = _current.set(interrupts)
        try:
            async with watch_signals(backend, interrupts.on_signal, signums):
                with scope:
                    result = await main(*args)
        finally:
            _current.reset(token)
    else:
        import asyncio  # noqa: PLC0415

        task = asyncio.current_task()
        assert task is not None

        def cancel() -> None:
            task.cancel()

        interrupts = Interrupts(cancel, signums)
        token = _current.set(interrupts)
        result = None
        try:
            async with watch_signals(backend, interrupts.on_signal, signums):
                try:
                    result = await main(*args)
                except asyncio.CancelledError:
                    if not interrupts.cancelled:
                        raise
                    task.uncancel()
        finally:
            _current.reset(token)
    if interrupts.signum is None:
        return result, None
    if interrupts.signum == signal.SIGINT:
        return result, EXIT_INTERRUPTED
    return result, EXIT_TERMINATED if interrupts.cancelled else None
