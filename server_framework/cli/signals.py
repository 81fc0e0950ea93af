"""Signals: SIGTERM and SIGINT stop serving gracefully; a second SIGINT exits at once.

Three stages, one strategy each:

- Before the event loop runs, SIGTERM only sets a flag (:func:`catch_early_sigterm`,
  :func:`stopped_early`); serving then stops as soon as it starts, and the parent of
  ``--workers`` does not start them.
- While serving, the event loop's own signal API delivers the signal in the loop
  (``watch_signals`` of ``server_framework._signals``, which
  :func:`server_framework.run` uses for scripts too: ``loop.add_signal_handler`` on asyncio
  and uvloop, ``trio.open_signal_receiver`` on trio). :func:`stop_on_signal` sets the stop
  event and logs it.
- After the first signal, SIGINT gets a plain ``signal.signal`` handler (the same module's
  ``force_exit_handler``) that bypasses the loop, so a second Ctrl-C exits at once (130)
  even if a handler has blocked the event loop.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Final

import structlog

from server_framework._signals import force_exit_handler
from server_framework.backend import Event

__all__ = ["catch_early_sigterm", "stop_on_signal", "stopped_early"]

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
