"""Signals: SIGTERM and SIGINT stop serving gracefully; a second SIGINT exits at once.

Three stages, one strategy each:

- Before the event loop runs, SIGTERM only sets a flag (:func:`catch_early_sigterm`,
  :func:`stopped_early`); serving then stops as soon as it starts, and the parent of
  ``--workers`` does not start them.
- While serving, the event loop's own signal API delivers the signal in the loop
  (:func:`watch_signals`: ``loop.add_signal_handler`` on asyncio and uvloop,
  ``trio.open_signal_receiver`` on trio, chosen by :func:`server_framework._loops.is_trio`).
  That is the one place above the backend layer that names a loop; each is imported only
  when it runs. :func:`stop_on_signal` sets the stop event and logs it.
- After the first signal, SIGINT gets a plain ``signal.signal`` handler
  (:func:`force_exit_handler`) that bypasses the loop, so a second Ctrl-C exits at once (130)
  even if a handler has blocked the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import structlog

from server_framework._loops import is_trio
from server_framework.backend import AsyncBackend, Event
from server_framework.cli.exits import EXIT_FORCED
from server_framework.log import resolve_format

__all__ = [
    "catch_early_sigterm",
    "force_exit_handler",
    "stop_on_signal",
    "stopped_early",
    "watch_signals",
]

logger: Final = structlog.get_logger(__name__)

#: Set by SIGTERM before the event loop watches signals; serving then stops as soon as it starts.
_early_stop = False


def _early_sigterm(signum: int, frame: object) -> None:
    global _early_stop
    _early_stop = True


def catch_early_sigterm() -> None:
    """Until the event loop watches signals, let SIGTERM only note that we should stop."""
    signal.signal(signal.SIGTERM, _early_sigterm)


def stopped_early() -> bool:
    """True if SIGTERM arrived while :func:`catch_early_sigterm`'s handler was in place."""
    return _early_stop


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
        os._exit(EXIT_FORCED)

    return force_exit


def stop_on_signal(
    stop: Event, *, sigint: bool, grace: float, log_format: str | None
) -> Callable[[int], None]:
    """What a watched signal does while serving: set ``stop`` once, and log it.

    Args:
        stop: The event that stops serving.
        sigint: SIGINT is ours to handle (not in a worker): after the first signal, a second
            SIGINT exits at once (see :func:`force_exit_handler`).
        grace: The shutdown timeout, for the log line.
        log_format: The log format, for the forced exit's line.
    """
    force_exit = force_exit_handler(log_format)

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            if signum == signal.SIGINT and sigint:
                force_exit(signum, None)  # the loop saw it before the handler below could
            logger.info("already stopping", signal=name)
            return
        if sigint:
            # From now on SIGINT does not go through the loop, which a handler might block.
            signal.signal(signal.SIGINT, force_exit)
        logger.info("stopping: finishing requests in progress", signal=name, grace=grace)
        stop.set()

    return on_signal


@contextlib.asynccontextmanager
async def watch_signals(
    backend: AsyncBackend, on_signal: Callable[[int], None], signums: tuple[int, ...]
) -> AsyncIterator[None]:
    """Call ``on_signal(signum)`` in the loop when one of ``signums`` arrives, while inside."""
    if is_trio(backend):
        import trio  # noqa: PLC0415  (imported only when trio runs)

        with trio.open_signal_receiver(*signums) as receiver:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for signum in receiver:
                        on_signal(signum)

                nursery.start_soon(watch)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
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
