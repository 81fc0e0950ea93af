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

A program that configures nothing still gets safe logging: when a server starts and structlog
is not configured, :func:`ensure_logging` installs INFO and above (no per-connection lines)
to stderr, through a bounded queue that a background thread drains: a stderr pipe that nobody
reads makes lines drop (and be counted, in a line written once the pipe moves again), never
the event loop stall. In console output, control characters in logged text (CR, LF, ESC...,
which a peer may put in a message) are shown escaped, ``\\xNN``, so a record stays one line.
"""

from __future__ import annotations

import atexit
import collections
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LOG_LEVELS", "configure_logging", "ensure_logging", "resolve_format"]

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


#: Control characters (C0, DEL, C1): shown escaped in console output.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def _escape(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN``."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _escape_controls(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A console processor: escape control characters in the text values of a record."""
    for key, value in event_dict.items():
        if isinstance(value, str) and _CONTROL.search(value):
            event_dict[key] = _escape(value)
    return event_dict


def _format_exception(sio: TextIO, exc_info: Any) -> None:
    """The console's traceback, with each exception's message escaped (it may be a peer's)."""
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(exc, BaseExceptionGroup):  # trio's groups: the standard layout, escaped
        lines = traceback.format_exception(exc)
        sio.write("\n" + "\n".join(_escape(line) for line in "".join(lines).split("\n")))
        return
    chain: list[tuple[BaseException, str]] = []
    link = ""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "The above exception was the direct cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "During handling of the above exception"
        else:
            current = None
    parts: list[str] = []
    for error, then in reversed(chain):
        parts.append("Traceback (most recent call last):\n")
        parts += traceback.format_tb(error.__traceback__)
        name = type(error).__qualname__
        if type(error).__module__ not in ("builtins", "__main__"):
            name = f"{type(error).__module__}.{name}"
        message = str(error)
        parts.append(f"{name}: {_escape(message)}\n" if message else f"{name}\n")
        if then:
            parts.append(f"\n{then}, another exception occurred:\n\n")
    sio.write("\n" + "".join(parts).rstrip("\n"))


class _BackgroundWriter:
    """A stream that never blocks its caller: lines queue up (bounded), a thread writes them.

    When the queue holds ``limit`` bytes, new lines are dropped and counted; the writer
    reports the count in a line of its own once the stream takes lines again. At exit,
    what is queued gets a second to go out.
    """

    def __init__(self, stream: TextIO, note: Callable[[str], str], limit: int) -> None:
        self._stream = stream
        self._note = note  # renders a line of our own (the drop count) in the stream's format
        self._limit = limit
        self._lines: collections.deque[str] = collections.deque()
        self._size = 0
        self._dropped = 0
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def isatty(self) -> bool:
        """Whether the underlying stream is a terminal."""
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty is not None and isatty())

    def write(self, text: str) -> int:
        """Queue ``text``, or drop it if the queue is full; never blocks on the stream."""
        with self._ready:
            if self._size + len(text) > self._limit:
                self._dropped += 1
                return 0
            self._lines.append(text)
            self._size += len(text)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="server_framework log writer", daemon=True
                )
                self._thread.start()
                atexit.register(self._drain_at_exit)
            self._ready.notify()
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the writer thread flushes after each batch of lines."""

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._lines:
                    self._ready.wait()
                lines = list(self._lines)
                self._lines.clear()
                self._size = 0
                dropped, self._dropped = self._dropped, 0
            try:
                self._stream.write("".join(lines))
                if dropped:
                    event = f"dropped {dropped} log lines: the log stream was not being read"
                    self._stream.write(self._note(event) + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # the stream is closed or broken: nothing to do
                pass

    def _drain_at_exit(self) -> None:
        deadline = time.monotonic() + 1.0
        while self._lines and time.monotonic() < deadline:
            time.sleep(0.01)


#: Bytes the default log queue holds at most (about 5,000 lines) before dropping lines.
DEFAULT_LOG_QUEUE: Final = 1024 * 1024


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
    _configure(level, fmt, sys.stderr if stream is None else stream, extra, stdlib=True)


def ensure_logging() -> None:
    """Install the safe default logging, unless the program configured structlog itself.

    The servers call it when they start. The default: INFO and above (a server start and
    stop, warnings, errors; no line per connection), to stderr through a bounded queue that
    a background thread drains (a stderr that nobody reads drops lines, counted, and never
    stalls the event loop), console on a terminal and JSON otherwise. The stdlib ``logging``
    configuration is left as the program has it. Call :func:`configure_logging` (or
    ``structlog.configure``) before starting a server to choose otherwise.
    """
    if structlog.is_configured():
        return
    fmt = resolve_format(None, sys.stderr)
    writer = _BackgroundWriter(sys.stderr, _note_renderer(fmt), DEFAULT_LOG_QUEUE)
    _configure("info", fmt, writer, None, stdlib=False)


def _note_renderer(fmt: str) -> Callable[[str], str]:
    """How the background writer renders a warning of its own, in the stream's format."""

    def note(event: str) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if fmt == "json":
            return _render_json(
                None, "warning", {"timestamp": stamp, "level": "warning", "event": event}
            )
        return f"{stamp} [warning  ] {event}"

    return note


def _configure(
    level: str | int,
    fmt: str | None,
    stream: Any,
    extra: Mapping[str, Any] | None,
    *,
    stdlib: bool,
) -> None:
    if isinstance(level, str):
        try:
            level = LOG_LEVELS[level.lower()]
        except KeyError:
            names = ", ".join(LOG_LEVELS)
            raise ValueError(f"unknown log level {level!r}: use one of {names}") from None
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
        tail = [_escape_controls]
        isatty = getattr(stream, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(
            colors=isatty is not None and isatty(),
            exception_formatter=_format_exception,
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
    if not stdlib:
        return

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
