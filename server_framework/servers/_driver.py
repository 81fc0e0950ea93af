"""The handler driver of one connection or datagram peer, loop-agnostic: asyncio and trio alike.

Strategy (the hot path; see docs/architecture.md, "One TCP request, end to end"):

- Each connection runs in one task of its own, so the handler's code always runs *in a task*:
  ``asyncio.timeout``, task groups, cancel scopes and ``current_task()`` work as users expect.
- Inside that task, the handler's generator is stepped by hand: ``agen.asend(request)`` is a
  coroutine, and ``coro.send(None)`` runs it until it finishes or blocks. A handler that answers
  without blocking (the common case) costs no trip through the event loop per request: every
  frame already received is handled in one go, in order.
- Replies produced during such a synchronous batch are appended to one buffer (``send_packet``
  sees ``_out`` set) and written with a single write at the end of the batch.
- When a step blocks (the coroutine yields a future or a trio trap), the batch buffer is written
  out at once, and the blocked coroutine is forwarded to the task (:func:`resume_blocked`): from
  then on it behaves exactly like a normal ``await``, cancellation included. Later frames wait:
  order is kept.
- Handler generators are stepped with the loop's "first iteration" async-generator hook turned
  off while the synchronous batch runs (every loop registers each new async generator in a
  WeakSet otherwise, ~0.4 us per request); the finalizer hook stays, and the driver closes its
  generators itself when the connection ends.
"""

from __future__ import annotations

import contextvars
import errno
import inspect
import itertools
import logging
import sys
import time
import traceback
import types
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import AsyncGenerator, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import structlog

from handlers.base import RecvParams, StreamRequestHandler
from handlers.request_response import RequestResponseHandler
from protocols import DeserializeError, LengthPrefixFramer, LineFramer, ProtocolError, StreamDecoder
from protocols.diagnostics import likely_cause
from server_framework import engine
from server_framework.exceptions import BrokenResourceError, ClosedResourceError
from server_framework.metrics import LATENCY_BUCKETS
from server_framework.sockets import Address

__all__ = [
    "ACCEPT_BATCH",
    "ACCEPT_RETRY_DELAY",
    "BASE_ON_CONNECTION",
    "BASE_ON_DISCONNECTION",
    "FRAME_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_ERROR_TYPES",
    "NOT_TLS_REASONS",
    "PEER_WORDS",
    "READ_BATCH",
    "REQUEST_TIMEOUT",
    "RESOURCE_ERRNOS",
    "STREAM_WORDS",
    "Blocked",
    "ConnectionDriver",
    "DatagramInbox",
    "RateLimitedLog",
    "ServerCounters",
    "StdlibLog",
    "Wording",
    "bind_log_context",
    "bump",
    "errno_name",
    "error_name",
    "is_handshake_timeout",
    "log_bad_message",
    "new_counters",
    "next_conn_id",
    "not_tls_hint",
    "outside",
    "overrides",
    "resolve_logger",
    "resume_blocked",
    "stdlib_text",
]

logger: Final = structlog.get_logger("server_framework.servers")

bind_log_context: Final = structlog.contextvars.bind_contextvars
#: Connection (and datagram client) ids: one sequence per process, so ids in logs are unique
#: whatever the server, transport or loop.
next_conn_id: Final = itertools.count(1).__next__
#: What a wait for data returns when a deadline expired first: the handler's
#: ``RecvParams.timeout`` (time to a complete request), ``idle_timeout`` (no byte at all) or
#: ``frame_timeout`` (a frame begun and not finished).
REQUEST_TIMEOUT: Final = object()
IDLE_TIMEOUT: Final = object()
FRAME_TIMEOUT: Final = object()


#: The clock of every deadline: monotonic seconds (asyncio's loop uses it too; trio's clock is
#: its own, so the trio side converts deadlines to durations).
now: Final = time.monotonic
#: Connections accepted per wake-up of a listening socket, where we run the accept loop: a
#: connection flood costs one loop trip per batch and cannot starve the other connections.
ACCEPT_BATCH: Final = 64
#: Back-off after accept() fails for lack of descriptors or memory: retrying at once would spin.
ACCEPT_RETRY_DELAY: Final = 0.1
RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Datagrams read per wake-up of a datagram socket, on every loop (libuv reads up to 32): a
#: flood costs one loop trip per batch, and cannot starve timers and other connections.
READ_BATCH: Final = 64

_get_hooks = sys.get_asyncgen_hooks
_set_hooks = sys.set_asyncgen_hooks

#: Exceptions that mean "the peer went away" when raised by the handler's I/O.
DISCONNECT_ERRORS: Final = (ConnectionError, BrokenResourceError, ClosedResourceError)


class Wording(NamedTuple):
    """The events of the log lines that stream connections and datagram peers share, in the
    words of each: a datagram peer is no connection (it is never opened nor closed; only its
    handler starts and ends). A driver holds its kind's (``_words``), set once when it is made:
    nothing to decide per request, and the lines are written only on these rare paths."""

    disconnected: str
    bad_message: str
    handler_failed: str
    idle: str
    cancelled: str
    failed: str
    idle_option: str  # the option whose expiry ends it when idle (a metrics key)


STREAM_WORDS: Final = Wording(
    disconnected="client disconnected during a request",
    bad_message="closing connection after a bad message",
    handler_failed="request handler failed; closing the connection",
    idle="closing idle connection",
    cancelled="connection cancelled",
    failed="connection failed",
    idle_option="idle_timeout",
)
PEER_WORDS: Final = Wording(
    disconnected="peer gone during a request",
    bad_message="dropping peer after a bad message",
    handler_failed="request handler failed; ending the peer's handler",
    idle="dropping idle peer",
    cancelled="peer's handler cancelled",
    failed="peer's handler failed",
    idle_option="client_idle_timeout",
)


class StdlibLog:
    """A server's lines sent to a stdlib :class:`logging.Logger` (``logger=``), called as the
    framework calls its structlog logger (``log.debug(event, **fields)``).

    Each line is one message, the event then its fields, the connection's context
    (``conn_id``, ``peer``, in name order) first: ``connection accepted conn_id=3
    peer=127.0.0.1:40112``. Text fields are quoted (``repr``) unless they are one plain word,
    so a peer's text can neither break a line nor pass for another field; an ``exc_info``
    goes to the logger as such, for its handlers to format. A line below the logger's level
    costs one check. Records point at the framework's line that logged them
    (``stacklevel``), not at this class.
    """

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at DEBUG level."""
        if self.logger.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at INFO level."""
        if self.logger.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at WARNING level."""
        if self.logger.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at ERROR level."""
        if self.logger.isEnabledFor(logging.ERROR):
            self._emit(logging.ERROR, event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Log ``event`` at CRITICAL level."""
        if self.logger.isEnabledFor(logging.CRITICAL):
            self._emit(logging.CRITICAL, event, fields)

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        exc_info = fields.pop("exc_info", None)
        context = structlog.contextvars.get_contextvars()  # in no set order: sorted below
        text = stdlib_text(event, {**dict(sorted(context.items())), **fields})
        # stacklevel 3: past _emit and the level's method, to the line that logged.
        self.logger.log(level, "%s", text, exc_info=exc_info, stacklevel=3)


def stdlib_text(event: str, fields: dict[str, Any]) -> str:
    """``event`` and its fields as one line of text (see :class:`StdlibLog`)."""
    parts = [event]
    for key, value in fields.items():
        if isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, str):
            text = value
            if not text or not text.isprintable() or any(c in text for c in " '\\\"="):
                text = repr(text)
        else:
            text = repr(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def resolve_logger(given: Any) -> Any:
    """What a server logs through, from its ``logger=`` option: the framework's own structlog
    logger (None), a structlog logger (anything with its ``debug``, ``info``, ``warning`` and
    ``error`` methods) as given, or a stdlib :class:`logging.Logger` behind a
    :class:`StdlibLog`.

    Raises:
        TypeError: ``given`` is none of these.
    """
    if given is None:
        return logger
    if isinstance(given, logging.Logger):
        return StdlibLog(given)
    if not all(
        callable(getattr(given, name, None)) for name in ("debug", "info", "warning", "error")
    ):
        raise TypeError(
            "logger must be a logging.Logger or a structlog logger (with debug, info, warning "
            f"and error methods), got {given!r}"
        )
    return given


def log_bad_message(event: str, exc: ProtocolError, log: Any = logger) -> None:
    """Log (warning) the bad message that ends a connection or a peer's handler; with a
    ``hint`` when its bytes look like another protocol (a TLS handshake, an HTTP request...:
    ``protocols.diagnostics.likely_cause``), worked out here, on the error path only.

    The compiled engine's twin is ``_cengine._log_bad_message``."""
    data = exc.data if isinstance(exc, DeserializeError) else b""
    hint = likely_cause(data, peer="the client") if data else None
    if hint is None:
        log.warning(event, error=str(exc))
    else:
        log.warning(event, error=str(exc), hint=hint)


#: OpenSSL's reasons for a failed handshake whose client sent something that is not TLS
#: (plaintext, an HTTP request or proxy request, garbage).
NOT_TLS_REASONS: Final = frozenset(
    {
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "WRONG_VERSION_NUMBER",
    }
)


def not_tls_hint(exc: BaseException) -> str | None:
    """The hint for a server's TLS handshake that failed with ``exc`` (or its cause) because
    the client does not speak TLS; None for any other failure."""
    for error in (exc, exc.__cause__):
        reason = getattr(error, "reason", None)
        if reason in NOT_TLS_REASONS:
            sent = "a plain HTTP request" if reason.startswith("HTTP") else "plaintext"
            return (
                f"the client does not speak TLS (it sent {sent}: {reason}): connect with TLS, "
                "or serve without it"
            )
    return None


# What blocked: a step of the handler's generator, a ``respond()`` call, or a ``send_packet``.
_STEP: Final = 0
_RESPOND: Final = 1
_SEND: Final = 2
Blocked = tuple[Coroutine[Any, Any, Any], Any, int]


#: The base class's no-op hooks: a handler that keeps them is not called (no coroutine made).
BASE_ON_CONNECTION: Final = StreamRequestHandler.on_connection
BASE_ON_DISCONNECTION: Final = StreamRequestHandler.on_disconnection


def overrides(hook: Any, base: Any) -> bool:
    """False if ``hook`` (a handler's bound method) is ``base``, the base class's no-op."""
    return getattr(hook, "__func__", None) is not base


#: Handler class -> whether its ``respond`` may be called directly (``_fast_respond``); a
#: plain dict (a WeakKeyDictionary lookup is a Python call and a weakref per connection),
#: emptied when it holds ``_FAST_TYPES_MAX`` classes.
_FAST_TYPES: Final[dict[type, bool]] = {}
_FAST_TYPES_MAX: Final = 64


def _fast_respond(handler: Any) -> Any:
    """``handler.respond`` if the driver may call it directly instead of driving ``handle``
    (a ``RequestResponseHandler`` that keeps its ``handle``; the answer cached per class)."""
    kind = type(handler)
    fast = _FAST_TYPES.get(kind)
    if fast is None:
        if len(_FAST_TYPES) >= _FAST_TYPES_MAX:
            _FAST_TYPES.clear()
        fast = _FAST_TYPES[kind] = (
            isinstance(handler, RequestResponseHandler)
            and kind.handle is RequestResponseHandler.handle
        )
    return handler.respond if fast else None


def _protocol_decoder(protocol: Any) -> Any:
    return protocol.decoder()


#: A stream connection's decoder for ``protocol``: the compiled engine's own decoders for the
#: stock framers (``LineFramer``, ``LengthPrefixFramer``, ``FixedSizeFramer``), else
#: ``protocol.decoder()``.
make_decoder: Final = _protocol_decoder if engine.compiled is None else engine.compiled.make_decoder


def _protocol_inbox(protocol: Any, limit: int) -> Any:
    return DatagramInbox(protocol.decode, limit)


#: A datagram peer's inbox: the compiled engine's twin of :class:`DatagramInbox`, or that.
make_inbox: Final = _protocol_inbox if engine.compiled is None else engine.compiled.make_inbox


def _release_frames(exc: BaseException) -> None:
    """Let the decoder's and the serializer's frames in ``exc``'s tracebacks drop their locals.

    A bad message's exception goes to the handler, and its traceback keeps the frames that
    raised it, whose locals hold the whole received buffer and the offending frame (1 MiB
    and more); the exception and those frames then form a cycle that only the garbage
    collector frees. The error itself keeps a 64-byte excerpt, which is all a log needs.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


class RateLimitedLog:
    """Counts an event and logs its 1st, 2nd, 4th, 8th... occurrence: a flood of refused
    connections or dropped datagrams cannot flood the log, yet the count keeps growing."""

    __slots__ = ("_event", "_key", "_level", "_table", "count", "log")

    def __init__(
        self,
        event: str,
        level: str = "warning",
        log: Any = logger,
        *,
        table: dict[str, int] | None = None,
        key: str = "",
    ) -> None:
        self._event = event
        self._level = level
        self._table = table  # a ServerCounters table where each occurrence counts as key
        self._key = key
        self.count = 0
        self.log = log  # the server's logger

    def __call__(self, **details: Any) -> None:
        """Count one occurrence; log it if the count is a power of two."""
        if self._table is not None:
            bump(self._table, self._key)
        self.count += 1
        count = self.count
        if count & (count - 1) == 0:
            getattr(self.log, self._level)(self._event, count=count, **details)


def outside(log: Any, event: str, **fields: Any) -> None:
    """Log ``event`` outside the running connection's log context: a transition is the
    server's (or a client address's), not the connection that happened to cause it."""
    contextvars.Context().run(log, event, **fields)


@types.coroutine
def resume_blocked(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Continue, as a plain ``await``, a coroutine whose first ``send(None)`` suspended.

    Everything the running task sends or throws in is forwarded to ``coro``, everything
    ``coro`` yields is forwarded to the task, so futures, trio traps and cancellation behave as
    if the task had awaited ``coro`` from the start. Returns the coroutine's return value.
    """
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class DatagramInbox:
    """The "decoder" of a datagram peer: a bounded queue of datagrams, decoded when taken.

    It offers what the driver uses of a :class:`~protocols.StreamDecoder` (``feed``,
    iteration, ``buffered``, ``broken``), so one driver serves streams and datagrams alike.
    """

    __slots__ = ("_decode", "_items", "_limit")
    broken = False

    def __init__(self, decode: Any, limit: int) -> None:
        self._decode = decode
        self._limit = limit
        self._items: list[bytes] = []

    def feed(self, datagram: bytes) -> bool:
        """Queue a datagram; False (and nothing queued) when the queue is full."""
        items = self._items
        if len(items) >= self._limit:
            return False
        items.append(datagram)
        return True

    def __iter__(self) -> DatagramInbox:
        return self

    def __next__(self) -> Any:
        items = self._items
        if not items:
            raise StopIteration
        return self._decode(items.pop(0))

    @property
    def buffered(self) -> int:
        """How many datagrams wait to be handled."""
        return len(self._items)

    def take_all(self) -> list[bytes]:
        """Remove and return the waiting datagrams, undecoded."""
        items, self._items = self._items, []
        return items


class ServerCounters:
    """What one server counts (:mod:`server_framework.metrics`), shared by its listener and
    every connection or datagram peer it serves, updated in the loop's thread only.

    The integers are bumped on the request path (``requests`` and the latency buckets per
    request, bytes per read and per write, ``datagrams`` per datagram); the tables (refusals,
    handler errors, deadlines, accept errors, drops: reason -> count) only on the rare paths,
    through :func:`bump`. This class is the reference of the compiled engine's
    ``ServerCounters``, whose integers are C fields.
    """

    __slots__ = (
        "accept_errors",
        "accepted",
        "buckets",
        "bytes_in",
        "bytes_out",
        "datagrams",
        "dropped",
        "errors",
        "expired",
        "high_water",
        "latency_sum",
        "refused",
        "requests",
    )

    def __init__(self) -> None:
        self.accepted = 0  # connections accepted
        self.requests = 0  # requests handled (what the latency histogram counts)
        self.bytes_in = 0
        self.bytes_out = 0
        self.high_water = 0  # a connection's replies reached the high-water mark
        self.datagrams = 0  # datagrams received
        self.latency_sum = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.refused: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.expired: dict[str, int] = {}
        self.accept_errors: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def observe(self, seconds: float) -> None:
        """Count one request handled in ``seconds``."""
        self.requests += 1
        self.latency_sum += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def bucket_counts(self) -> tuple[int, ...]:
        """Requests per latency bucket (see :class:`~server_framework.metrics.LatencyHistogram`)."""
        return tuple(self.buckets)


def bump(table: dict[str, int], key: str, count: int = 1) -> None:
    """Count ``count`` more ``key`` in one of :class:`ServerCounters`' tables."""
    table[key] = table.get(key, 0) + count


def errno_name(exc: OSError) -> str:
    """An OS error's errno as the metrics name it: ``EMFILE`` (the number if unknown)."""
    if exc.errno is None:
        return type(exc).__name__
    return errno.errorcode.get(exc.errno, str(exc.errno))


def is_handshake_timeout(exc: BaseException) -> bool:
    """True if a failed TLS handshake ran out of ``ssl_handshake_timeout``: asyncio and uvloop
    abort it with "SSL handshake is taking longer than N seconds"; trio's scope raises
    TimeoutError."""
    return isinstance(exc, TimeoutError) or "taking longer than" in str(exc)


#: Distinct exception types counted in ``handler_errors``; beyond, they count as ``"other"``
#: (a label per type in Prometheus: their number must stay bounded).
MAX_ERROR_TYPES: Final = 64


def error_name(exc: BaseException, counted: dict[str, int] | None = None) -> str:
    """How the metrics name an exception's type: ``ValueError``, ``mymodule.QuotaError``;
    ``"other"`` for a new type when ``counted`` already holds :data:`MAX_ERROR_TYPES`."""
    kind = type(exc)
    module = kind.__module__
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    if counted is not None and len(counted) >= MAX_ERROR_TYPES and name not in counted:
        return "other"
    return name


if TYPE_CHECKING:
    _ServerCounters = ServerCounters
else:
    _ServerCounters = ServerCounters if engine.compiled is None else engine.compiled.ServerCounters


def new_counters() -> ServerCounters:
    """A server's counters, of the engine that runs."""
    return _ServerCounters()


class DriverCore:
    """The per-request part of :class:`ConnectionDriver`: its state, and stepping the handler.

    This class is the reference of the compiled engine's ``DriverCore``
    (``server_framework/_cengine.pyx``), which replaces it when the compiled engine runs
    (:mod:`server_framework.engine`): every method here has its twin there, with the same
    behaviour; a change to one is a change to both (the whole test suite runs on both engines).
    Subclasses provide ``_wake``, ``_batch_full`` and ``send_packet`` (see
    :class:`ConnectionDriver`).
    """

    __slots__ = (
        "_agen",
        "_broken_reason",
        "_close_requested",
        "_counters",
        "_decoder",
        "_frame_mark",
        "_frame_started",
        "_frame_timeout",
        "_fresh",
        "_handler",
        "_high_water",
        "_idle_timeout",
        "_last_read",
        "_log",
        "_lost",
        "_out",
        "_params",
        "_pending_since",
        "_protocol",
        "_received",
        "_request_deadline",
        "_respond",
        "_stopping",
        "_words",
        "id",
        "state",
    )

    _decoder: Any  # a StreamDecoder, or a DatagramInbox

    if TYPE_CHECKING:  # provided by ConnectionDriver's subclasses

        def _wake(self) -> None: ...
        async def _batch_full(self) -> None: ...
        async def send_packet(self, packet: Any) -> None: ...

    def __init__(
        self,
        handler: Any,
        protocol: Any,
        decoder: StreamDecoder[Any] | DatagramInbox,
        conn_id: int,
        *,
        idle_timeout: float | None,
        frame_timeout: float | None = None,
        high_water: int = sys.maxsize,
        words: Wording,
        log: Any = None,
        counters: ServerCounters | None = None,
    ) -> None:
        # What the server configured (see StreamOptions / DatagramOptions).
        self._handler = handler
        self._protocol = protocol
        self._respond = _fast_respond(handler)
        self._idle_timeout = idle_timeout
        self._frame_timeout = frame_timeout
        self._high_water = high_water  # replies of one batch, in bytes, before a flush
        # Input: the decoder, and what the deadlines need to know of it.
        self._decoder = decoder
        self._received = 0  # bytes fed to the decoder so far
        self._last_read = now()  # when bytes last arrived (the idle deadline counts from it)
        self._frame_mark = -1  # bytes consumed when the pending partial frame was first seen
        self._frame_started: float | None = None  # when that partial frame was first seen
        # The handler: its generator, what it last yielded, the replies of a batch.
        self._agen: AsyncGenerator[Any, Any] | None = None
        self._fresh = False  # the current generator has not yielded yet
        self._params: RecvParams | None = None
        self._request_deadline = 0.0  # when _params.timeout expires (if it has one)
        self._out: bytearray | None = None  # replies of the running synchronous batch
        # How it ends.
        self._broken_reason: str | None = None  # why we broke it (a deadline), for errors
        self._stopping = False  # the server is shutting down: no new request cycle
        self._lost = False  # the transport is gone (peer closed, reset, or we closed)
        self._close_requested = False  # we decided to close: stop handling requests
        self._words = words  # what the log lines call it: a connection, or a datagram peer
        self._log = logger if log is None else log  # the server's logger (resolve_logger)
        self.id = conn_id
        self.state: dict[str, Any] = {}
        # The server's counters, and when the request whose step blocked began (0.0: none;
        # a request's latency counts from the start of the batch that handles it).
        self._counters = counters if counters is not None else new_counters()
        self._pending_since = 0.0

    # -- the state machine --------------------------------------------------------------

    def _process(self) -> Blocked | None:
        """Handle every complete message received so far, synchronously while nothing blocks.

        Returns ``None`` when more data is needed or the connection must close, or the blocked
        step that the caller must finish with :meth:`_finish_blocked`.
        """
        if self._respond is not None:
            return self._process_responses()
        decoder = self._decoder
        counters = self._counters
        batch_at = now()
        while not (self._lost or self._close_requested):
            timed = False
            agen = self._agen
            if agen is None:
                if self._stopping and not decoder.buffered:
                    return None
                agen = self._agen = self._handler.handle(self)
                self._fresh = True
                # The loop's "first iteration" hook runs when the first asend() is created:
                # keep our generators out of its WeakSet (the finalizer hook stays).
                hooks = _get_hooks()
                _set_hooks(None, hooks.finalizer)
                try:
                    coro = agen.asend(None)
                finally:
                    _set_hooks(*hooks)
            else:
                try:
                    request = next(decoder)
                except StopIteration:
                    return None
                except ProtocolError as exc:
                    _release_frames(exc)
                    coro = agen.athrow(exc)
                else:
                    coro = agen.asend(request)
                    timed = True
            # self._step(coro), inlined: this runs for every request.
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                self._on_yield(stop.value)
            except StopAsyncIteration:
                self._on_return()
            except Exception as exc:
                self._on_error(exc)
            else:
                if timed:
                    self._pending_since = batch_at
                return (coro, yielded, _STEP)
            if timed:
                counters.observe(now() - batch_at)
            if decoder.broken:
                self._on_framing_error()
        return None

    def _process_responses(self) -> Blocked | None:
        """The :class:`RequestResponseHandler` path: ``respond()`` called directly, no generator."""
        decoder = self._decoder
        respond = self._respond
        send = self.send_packet
        counters = self._counters
        batch_at = now()
        while not (self._lost or self._close_requested):
            try:
                request = next(decoder)
            except StopIteration:
                return None
            except ProtocolError as exc:
                _release_frames(exc)
                error: ProtocolError | None = exc
            else:
                error = None
            try:
                if error is None:
                    coro = respond(request, self)
                else:
                    coro = self._handler.on_bad_message(error, self)
                yielded = coro.send(None)
            except StopIteration as stop:
                if error is None:
                    counters.observe(now() - batch_at)
                if stop.value is not None:
                    blocked = self._send_response(send, stop.value)
                    if blocked is not None:
                        return blocked
            except Exception as exc:  # raised by respond(), or by a respond() that is not async
                if error is None:
                    counters.observe(now() - batch_at)
                self._on_error(exc)
            else:
                if error is None:
                    self._pending_since = batch_at
                return (coro, yielded, _RESPOND)
            if decoder.broken:
                self._on_framing_error()
        return None

    def _send_response(self, send: Any, response: Any) -> Blocked | None:
        """Send ``respond()``'s result; the blocked send if it has to wait.

        Inside a synchronous batch (``_out`` set) this is what ``send_packet`` does, without
        its coroutine: encode into the batch, and wait for ``_batch_full()`` past the mark.
        """
        out = self._out
        try:
            if out is not None:
                self._protocol.encode_into(response, out)
                if len(out) < self._high_water:
                    return None
                coro = self._batch_full()
            else:
                coro = send(response)
            yielded = coro.send(None)
        except StopIteration:
            return None
        except Exception as exc:
            self._on_error(exc)
            return None
        return (coro, yielded, _SEND)

    def _step(self, coro: Coroutine[Any, Any, Any]) -> Blocked | None:
        """Run one step of the handler's generator until it yields, returns, fails or blocks.

        (:meth:`_process` does the same inline: it is the per-request hot path.)
        """
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            self._on_yield(stop.value)
        except StopAsyncIteration:
            self._on_return()
        except Exception as exc:
            self._on_error(exc)
        else:
            return (coro, yielded, _STEP)
        return None

    def _on_yield(self, value: Any) -> None:
        if value is not None:
            if not isinstance(value, RecvParams):
                try:  # EasyNetwork's shorthand: yield 5.0 is yield RecvParams(timeout=5.0)
                    value = _timeout_params(value)
                except (TypeError, ValueError) as exc:
                    # The generator is kept: the connection's end closes it (aclose()).
                    self._close_after_error(exc)
                    return
            if value.timeout is not None:
                self._request_deadline = now() + value.timeout
        self._params = value
        self._fresh = False

    def _on_return(self) -> None:
        fresh = self._fresh
        self._agen = None
        self._params = None
        if fresh:
            # Returned before its first yield: the handler does not want this connection.
            self._request_close()

    def _on_error(self, exc: Exception) -> None:
        self._agen = None
        self._params = None
        if self._lost and isinstance(exc, DISCONNECT_ERRORS):
            self._log.debug(self._words.disconnected, error=str(exc))
            self._request_close()
        elif isinstance(exc, ProtocolError):
            log_bad_message(self._words.bad_message, exc, self._log)
            self._request_close()
        else:
            self._close_after_error(exc)

    def _on_framing_error(self) -> None:
        # Streams only: a datagram peer's inbox never breaks.
        self._log.warning("closing connection: the stream cannot be framed any more")
        self._request_close()

    def _close_after_error(self, exc: BaseException) -> None:
        errors = self._counters.errors
        bump(errors, error_name(exc, errors))
        self._log.error(self._words.handler_failed, exc_info=exc)
        self._request_close()

    def _request_close(self) -> None:
        """Stop handling requests; the connection task then closes the connection."""
        self._close_requested = True
        self._wake()


if TYPE_CHECKING:
    _Core = DriverCore
else:
    _Core = DriverCore if engine.compiled is None else engine.compiled.DriverCore


class ConnectionDriver(_Core, ABC):
    """The handler-driving state machine of one connection or datagram peer (loop-agnostic).

    Subclasses (per event loop and transport) provide the I/O: waiting for data, writing,
    closing, and ``send_packet``. They call :meth:`_process` whenever messages may be ready;
    it returns ``None`` when it needs more data, or a blocked step for the task to ``await``
    through :meth:`_finish_blocked`. The per-request part is :class:`DriverCore` (compiled
    when the compiled engine runs); what runs once per connection or per wait is here.
    """

    __slots__ = ()

    def _init_stream(self, options: Any) -> None:
        """``__init__`` for a stream connection, from its server's ``StreamOptions``."""
        protocol = options.protocol
        _Core.__init__(
            self,
            options.handler,
            protocol,
            make_decoder(protocol),
            next_conn_id(),
            idle_timeout=options.idle_timeout,
            frame_timeout=options.frame_timeout,
            high_water=options.write_high_water,
            words=STREAM_WORDS,
            log=options.log,
            counters=options.counters,
        )

    def _init_peer(self, options: Any) -> None:
        """``__init__`` for a datagram peer's client, from its server's ``DatagramOptions``."""
        protocol = options.protocol
        inbox = make_inbox(protocol, options.client_queue_size)
        _Core.__init__(
            self,
            options.handler,
            protocol,
            inbox,
            next_conn_id(),
            idle_timeout=options.client_idle_timeout,
            words=PEER_WORDS,
            log=options.log,
            counters=options.counters,
        )

    async def _finish_blocked(self, blocked: Blocked) -> None:
        """Await a step that blocked during :meth:`_process`, then record its outcome."""
        coro, yielded, kind = blocked
        try:
            value = await resume_blocked(coro, yielded)
            self._end_request()
            if kind == _RESPOND and value is not None:
                await self.send_packet(value)
        except StopAsyncIteration:
            self._end_request()
            self._on_return()
        except Exception as exc:
            self._end_request()
            self._on_error(exc)
        else:
            if kind == _STEP:
                self._on_yield(value)
        if self._decoder.broken:
            self._on_framing_error()

    def _end_request(self) -> None:
        """The request whose step blocked is done: count it, with its latency."""
        since = self._pending_since
        if since:
            self._pending_since = 0.0
            self._counters.observe(now() - since)

    async def _expired(self, marker: object) -> bool:
        """A deadline expired while parked: True if the connection ends (``idle_timeout``,
        ``frame_timeout``); a request timeout is thrown into the handler instead (False)."""
        expired = self._counters.expired
        if marker is REQUEST_TIMEOUT:
            bump(expired, "request_timeout")
            await self._throw_timeout()
            return False
        if marker is IDLE_TIMEOUT:
            bump(expired, self._words.idle_option)
            self._log.debug(self._words.idle)
        else:
            bump(expired, "frame_timeout")
            self._log.debug("closing connection: frame_timeout expired mid-frame")
        return True

    async def _throw_timeout(self) -> None:
        """The requested ``RecvParams.timeout`` expired: throw TimeoutError into the handler."""
        agen = self._agen
        assert agen is not None
        timeout = self._params.timeout if self._params is not None else None
        blocked = self._step(agen.athrow(TimeoutError(f"no request within {timeout} seconds")))
        if blocked is not None:
            await self._finish_blocked(blocked)

    def _fed(self, size: int) -> None:
        """``size`` received bytes were fed to the decoder (for the idle and frame deadlines).

        (The asyncio stream connection inlines this: it runs for every read.)
        """
        self._received += size
        if self._idle_timeout is not None:
            self._last_read = now()

    def _may_expire(self) -> bool:
        """False if no deadline can apply while parked: no timer needed (the common case)."""
        return (
            self._params is not None
            or self._idle_timeout is not None
            or (self._frame_timeout is not None and self._decoder.buffered != 0)
        )

    def _deadline(self) -> tuple[float, object] | None:
        """The first deadline of a connection parked for data: ``(when, marker)``, or None.

        Called when every complete message is handled, so what the decoder still holds is the
        beginning of a frame: the frame deadline runs from when that frame was first seen
        (the bytes consumed so far tell a new frame from the same one, trickled). The idle
        deadline runs from the last byte received, the request deadline from the handler's
        ``yield RecvParams(timeout=...)``.
        """
        when = 0.0
        marker = None
        idle = self._idle_timeout
        if idle is not None:
            when = self._last_read + idle
            marker = IDLE_TIMEOUT
        frame_timeout = self._frame_timeout
        if frame_timeout is not None:
            buffered = self._decoder.buffered
            if buffered:
                consumed = self._received - buffered
                if consumed != self._frame_mark:
                    self._frame_mark = consumed
                    self._frame_started = now()
                assert self._frame_started is not None
                frame_ends = self._frame_started + frame_timeout
                if marker is None or frame_ends < when:
                    when = frame_ends
                    marker = FRAME_TIMEOUT
        params = self._params
        if (
            params is not None
            and params.timeout is not None
            and (marker is None or self._request_deadline < when)
        ):
            when = self._request_deadline
            marker = REQUEST_TIMEOUT
        return None if marker is None else (when, marker)

    def _closed_error(self) -> Exception:
        """The error for I/O on a connection that we closed, or that the peer closed."""
        if self._close_requested:
            return ClosedResourceError("the connection is closed")
        return BrokenResourceError(self._broken_reason or "the peer closed the connection")

    def _begin_stop(self) -> None:
        """The server is shutting down: finish what was received, then close."""
        self._stopping = True
        self._wake()

    def _should_stop(self) -> bool:
        return self._lost or self._close_requested or self._stopping

    # -- to be provided per event loop and transport ----------------------------------------

    @abstractmethod
    def _wake(self) -> None:
        """Wake the connection task if it is waiting for data."""

    @abstractmethod
    async def send_packet(self, packet: Any) -> None:
        """Encode and send one reply (the handler's ``client.send_packet``).

        Inside a synchronous batch (``_out`` set: stream connections), append it to the batch
        with ``_protocol.encode_into`` and, once the batch reaches ``_high_water`` bytes,
        ``await self._batch_full()``.
        """

    async def _batch_full(self) -> None:
        """The batch of replies reached ``_high_water`` bytes: let it be written, and wait
        until the transport takes more (stream connections override it)."""

    @property
    @abstractmethod
    def peer_address(self) -> Address:
        """The peer's address (the handler's ``client.peer_address``)."""

    async def _close_generator(self) -> None:
        agen, self._agen = self._agen, None
        if agen is not None:
            try:
                await agen.aclose()
            except Exception as exc:
                self._log.error("request handler failed while closing", exc_info=exc)

    async def _connected(self) -> None:
        """A stream connection starts: call the handler's ``on_connection`` (unless it keeps
        the base class's no-op). A coroutine is awaited. An async generator becomes the
        connection's generator, stepped to its first ``yield`` here: ``_process`` then drives
        it exactly as it drives ``handle`` (same requests, ``RecvParams``, errors), and starts
        ``handle`` once it returns. Once per connection; a handler without an ``on_connection``
        pays one comparison."""
        on_connection = self._handler.on_connection
        if not overrides(on_connection, BASE_ON_CONNECTION):
            return
        started = on_connection(self)
        if not inspect.isasyncgen(started):
            await started
            return
        respond = self._respond
        if respond is not None:
            # respond() is called directly only when no generator stands in between: the
            # exchange goes through the generator path, and the direct path resumes after it.
            self._respond = None
            started = self._exchange_then_respond(started, respond)
        self._agen = started
        self._fresh = False  # returning before any yield is no refusal: handle() comes next
        blocked = self._step(started.asend(None))
        if blocked is not None:
            await self._finish_blocked(blocked)

    async def _exchange_then_respond(
        self, exchange: AsyncGenerator[Any, Any], respond: Any
    ) -> AsyncGenerator[Any, Any]:
        """``exchange`` (an ``on_connection`` generator of a handler whose ``respond()`` the
        driver calls directly), forwarded step by step; once it returns, ``respond()`` is
        called directly again. (The first requests after it, if already received, go through
        the handler's ``handle``, ``RequestResponseHandler``'s generator equivalent, which
        then stays parked until the connection ends.)"""
        try:
            value = await exchange.asend(None)
            while True:
                try:
                    request = yield value
                except Exception as exc:  # thrown in by the driver: a bad message, a timeout
                    value = await exchange.athrow(exc)
                else:
                    value = await exchange.asend(request)
        except StopAsyncIteration:
            self._respond = respond
        finally:
            await exchange.aclose()  # closed with us (nothing to do if it returned)

    async def _end_handler(self) -> None:
        """A stream connection ended: close the handler's generator, then call
        ``on_disconnection`` (unless the handler keeps the base class's no-op)."""
        if self._agen is not None:
            await self._close_generator()
        on_disconnection = self._handler.on_disconnection
        if overrides(on_disconnection, BASE_ON_DISCONNECTION):
            try:
                await on_disconnection(self)
            except Exception as exc:
                self._log.error("on_disconnection() failed", exc_info=exc)

    def _log_unframed(self) -> None:
        """A stream connection ends holding bytes that never became a frame: if they point to
        a mismatch (a TLS ClientHello on a plaintext port, text on a length-prefixed one...:
        ``protocols.diagnostics.likely_cause``), say so at warning level, else at debug level.

        Called once, when the connection ends, before its decoder is closed: a client that
        speaks another protocol often sends something the decoder waits on forever (a TLS
        ClientHello without a newline), then gives up and closes; this is the one place that
        sees its bytes."""
        decoder = self._decoder
        pending = decoder.buffered
        if not pending or decoder.broken:
            return
        framer = getattr(self._protocol, "framer", None)
        if isinstance(framer, LineFramer):
            hint = likely_cause(
                decoder.peek(), framing="line", delimiter=framer.delimiter, peer="the client"
            )
        elif isinstance(framer, LengthPrefixFramer):
            hint = likely_cause(decoder.peek(), framing="length-prefix", peer="the client")
        else:
            hint = likely_cause(decoder.peek(), peer="the client")
        if hint is None:
            self._log.debug("connection ended in the middle of a frame", unframed=pending)
        else:
            self._log.warning(
                "connection ended in the middle of a frame", unframed=pending, hint=hint
            )

    def _peer_for_log(self) -> str:
        try:
            peer = self.peer_address
        except OSError:  # pragma: no cover - the peer is already gone
            return "?"
        return peer if isinstance(peer, str) else f"{peer[0]}:{peer[1]}"


#: At shutdown, a connection that has not sent a byte yet gets this long (at most the grace
#: period) to send its first request before it is treated as idle and closed: it was accepted
#: just before the stop, and its request is usually on its way (a client that connects and
#: writes at once, a worker of a zero-downtime restart being replaced).
FIRST_REQUEST_GRACE: Final = 0.5


def begin_stop(connections: Iterable[ConnectionDriver]) -> list[ConnectionDriver]:
    """Ask each connection to finish what it received and close; return those that have not
    received a byte yet, to be asked again after :data:`FIRST_REQUEST_GRACE`."""
    fresh = []
    for conn in list(connections):
        if conn._received == 0:
            fresh.append(conn)
        else:
            conn._begin_stop()
    return fresh


def stop_all(connections: Iterable[ConnectionDriver]) -> None:
    """Ask each connection to finish what it received and close."""
    for conn in connections:
        conn._begin_stop()


def _timeout_params(value: object) -> RecvParams:
    """``yield 5.0`` (EasyNetwork's shorthand) as ``RecvParams(timeout=5.0)``; else TypeError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return RecvParams(timeout=value)
    raise TypeError(
        f"handle() may yield None, a timeout in seconds or RecvParams, it yielded {value!r}"
    )
