"""Exit codes of ``server-framework``, and the start-up failure that carries one.

One table for the process that serves, the parent of ``--workers`` and its workers alike: a
worker's usage error (2) becomes its parent's exit code. A start-up failure is raised as a
:class:`StartupError` wherever it is found (loading TARGET, binding, adopting a descriptor)
and turned into one logged line and an exit code by :func:`report` at the top.
:func:`os_error_reason` words the operating system's errors in those lines.
"""

from __future__ import annotations

from typing import Final

import structlog

from server_framework.cli.settings import Settings

__all__ = [
    "EXIT_FAILURE",
    "EXIT_FORCED",
    "EXIT_OK",
    "EXIT_STARTUP",
    "EXIT_USAGE",
    "StartupError",
    "os_error_reason",
    "report",
]

logger: Final = structlog.get_logger(__name__)

#: Stopped cleanly.
EXIT_OK: Final = 0
#: Failed while serving.
EXIT_FAILURE: Final = 1
#: Bad usage or configuration (argparse's own code).
EXIT_USAGE: Final = 2
#: Start-up failure: TARGET does not import, a bind fails, a worker cannot start...
EXIT_STARTUP: Final = 3
#: Forced exit (second SIGINT): 128 + SIGINT, as a shell reports an interrupted program.
EXIT_FORCED: Final = 130


class StartupError(Exception):
    """Serving cannot start; the message is one line, ``exit_code`` 2 (usage) or 3."""

    def __init__(self, message: str, exit_code: int = EXIT_STARTUP) -> None:
        message = " ".join(message.split("\n"))  # an exception's text may span lines
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def report(exc: StartupError, settings: Settings) -> None:
    """Log a start-up failure at ERROR, on one line; with its cause's traceback at debug level."""
    cause = exc.__cause__
    if settings.log_level == "debug" and cause is not None:
        logger.error(exc.message, exc_info=cause)
    else:
        logger.error(exc.message)


def os_error_reason(exc: OSError) -> str:
    """What went wrong, for a one-line message: the error's ``strerror`` (its text otherwise)."""
    return exc.strerror or str(exc)
