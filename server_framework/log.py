"""Logging set-up: one call, :func:`configure_logging`, for structlog and the stdlib alike.

The framework logs through structlog (``structlog.get_logger(...)``); servers bind ``conn_id``
and ``peer`` in the connection's context once, and every line logged in it carries them
(``merge_contextvars``). :func:`configure_logging` sets the pipeline up:

- a *filtering* bound logger (``make_filtering_bound_logger``): a call below the level is a
  no-op method, so a disabled ``logger.debug(...)`` on a hot path costs one call;
- context variables merged, the level and an ISO 8601 UTC timestamp added;
- rendered last: ``console`` (aligned, coloured on a terminal) for people, ``json`` (one
  object per line, encoded by msgspec) for log collectors. The default picks console when the
  stream is a terminal, JSON otherwise;
- the stdlib ``logging`` root logger routed through the same renderer, so asyncio's own
  messages ("Task exception was never retrieved"...), third-party libraries and
  :mod:`warnings` come out in the same format, on the same stream;
- ``cache_logger_on_first_use=True``: a logger is bound to the configuration on its first
  call, so configure logging before anything logs (a logger already used keeps its old
  configuration).

Calling it again replaces the previous configuration (our stdlib handler is swapped, never
duplicated), so it is idempotent.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, Literal, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LOG_LEVELS", "configure_logging", "resolve_format"]

#: Level names accepted by :func:`configure_logging`.
LOG_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: Marks the stdlib handler we install, so a second call replaces it.
_HANDLER_MARK: Final = "_server_framework_handler"


def _jsonable(obj: Any) -> Any:
    """msgspec's fallback for objects it cannot encode (exceptions, paths...): their text."""
    try:
        return str(obj)
    except Exception:  # a broken __str__ must not lose the log line
        return repr(obj)


#: Keys a reader looks for first, placed at the start of each JSON line.
_FIRST_KEYS: Final = ("timestamp", "level", "event")
_json_encoder: Final = msgspec.json.Encoder(enc_hook=_jsonable)


def _render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """The last processor for ``fmt="json"``: one JSON object, one line, in reading order."""
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return _json_encoder.encode(ordered).decode()


def _add_fields(fields: Mapping[str, Any]) -> Processor:
    def add_fields(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add_fields


def resolve_format(fmt: str | None, stream: TextIO) -> Literal["console", "json"]:
    """``fmt`` if given (``"console"`` or ``"json"``); for None or ``"auto"``, console on a TTY.

    Raises:
        ValueError: an unknown format name.
    """
    if fmt in (None, "auto"):
        isatty = getattr(stream, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    if fmt == "console":
        return "console"
    if fmt == "json":
        return "json"
    raise ValueError(f"unknown log format {fmt!r}: use 'console', 'json' or 'auto'")


def configure_logging(
    level: str | int = "info",
    fmt: str | None = None,
    *,
    stream: TextIO | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Configure structlog and the stdlib ``logging`` root logger to write to ``stream``.

    Args:
        level: The least severe level written: a name (``"debug"`` ... ``"critical"``) or a
            :mod:`logging` level number.
        fmt: ``"console"``, ``"json"``, or None / ``"auto"``: console if ``stream`` is a
            terminal, else JSON.
        stream: Where lines go (default: ``sys.stderr`` at the time of the call).
        extra: Fields added to every line (e.g. ``{"worker": 2}``), unless the line sets them.

    Raises:
        ValueError: an unknown level or format name.
    """
    if isinstance(level, str):
        try:
            level = LOG_LEVELS[level.lower()]
        except KeyError:
            names = ", ".join(LOG_LEVELS)
            raise ValueError(f"unknown log level {level!r}: use one of {names}") from None
    stream = sys.stderr if stream is None else stream
    resolved = resolve_format(fmt, stream)

    shared: list[Processor] = [structlog.contextvars.merge_contextvars]
    if extra:
        shared.append(_add_fields(dict(extra)))
    shared += [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if resolved == "json":
        tail: list[Processor] = [structlog.processors.format_exc_info]
        renderer = _render_json
    else:
        tail = []
        isatty = getattr(stream, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(
            colors=isatty is not None and isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            *tail,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
