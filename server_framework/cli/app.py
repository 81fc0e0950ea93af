"""The application: what TARGET, ``--protocol`` and the TLS options resolve to.

:func:`load_app` gathers it into an :class:`App`. ``MODULE:ATTR`` targets are imported with
:mod:`importlib`; a class is instantiated with no arguments, an instance of the expected kind
kept as is, any other callable called (``MODULE:FACTORY()`` always calls). The handler must fit
the listeners: a stream handler for stream listeners, a datagram handler for datagram ones.
``--protocol`` is a serializer name (framed by ``--framing``, else its own default), or a
``MODULE:ATTR`` naming a ready-made protocol or a serializer. TLS is a server context from the
PEM files. Every failure is a one-line :class:`~server_framework.cli.exits.StartupError`:
exit 3 if something does not import, build or load, exit 2 if it does not fit.
"""

from __future__ import annotations

import importlib
import inspect
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from handlers import DatagramRequestHandler, StreamRequestHandler
from handlers.checks import check_handler
from protocols import (
    BytesSerializer,
    CBORSerializer,
    DatagramProtocol,
    Framer,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    MsgPackSerializer,
    Serializer,
    StreamProtocol,
    StringSerializer,
)
from server_framework._shadow import hidden_user_module
from server_framework.cli.exits import EXIT_USAGE, StartupError, os_error_reason
from server_framework.cli.settings import Settings

__all__ = ["App", "load_app", "load_handler", "load_protocols", "load_ssl_context"]

logger: Final = structlog.get_logger(__name__)


@dataclass(frozen=True)
class App:
    """What TARGET and the options resolve to, ready to build servers with."""

    handler: Any
    stream_protocol: StreamProtocol[Any, Any] | None
    datagram_protocol: DatagramProtocol[Any, Any] | None
    ssl_context: ssl.SSLContext | None


def _import(spec: str, what: str) -> tuple[Any, bool]:
    """Import ``MODULE:ATTR[()]``; return the object and whether ``()`` asks to call it."""
    module_name, _, attr = spec.partition(":")
    call = attr.endswith("()")
    attr = attr.removesuffix("()")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # SyntaxError, ImportError, whatever the module raises
        hidden = isinstance(exc, ImportError) and hidden_user_module(exc.name or "")
        if hidden:  # the module imports `handlers` or `protocols`, meaning a file of its own
            raise StartupError(f"{what} {spec}: {hidden}") from exc
        message = f"{what} {spec}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        raise StartupError(message) from exc
    path = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            hidden = hidden_user_module(module_name)
            if hidden:
                raise StartupError(f"{what} {spec}: {hidden}") from exc
            raise StartupError(f"{what} {spec}: {path!r} has no attribute {part!r}") from exc
        path = f"{path}.{part}"
    return obj, call


def _instantiate(obj: Any, call: bool, spec: str, what: str, wanted: tuple[type, ...]) -> Any:
    """A class is instantiated, an instance of ``wanted`` kept, any other callable called."""
    if isinstance(obj, wanted) and not call:
        return obj
    if inspect.isclass(obj) and not issubclass(obj, wanted):
        names = " or ".join(f"{cls.__module__}.{cls.__qualname__}" for cls in wanted)
        raise StartupError(f"{what} {spec}: {obj.__qualname__} is not a {names}", EXIT_USAGE)
    if not callable(obj):
        raise StartupError(
            f"{what} {spec}: expected a class, an instance or a factory, got {type(obj).__name__}",
            EXIT_USAGE,
        )
    try:
        return obj()
    except Exception as exc:
        name = getattr(obj, "__qualname__", repr(obj))
        raise StartupError(f"{what} {spec}: {name}() failed: {type(exc).__name__}: {exc}") from exc


def load_handler(settings: Settings, stream: bool, datagram: bool) -> Any:
    """Import and instantiate TARGET; check that it can serve the listeners' kinds.

    Raises:
        StartupError: exit 3 if it does not import or its construction fails, exit 2 if it is
            not a handler or not one for these listeners.
    """
    assert settings.target is not None
    spec = settings.target
    kinds = (StreamRequestHandler, DatagramRequestHandler)
    obj, call = _import(spec, "TARGET")
    handler = _instantiate(obj, call, spec, "TARGET", kinds)
    if inspect.iscoroutine(handler):
        handler.close()
        raise StartupError(
            f"TARGET {spec}: the factory is a coroutine function; make it a plain function "
            "(asynchronous set-up belongs in the handler's service_init)",
            EXIT_USAGE,
        )
    if not isinstance(handler, kinds):
        raise StartupError(
            f"TARGET {spec}: expected a request handler, got {type(handler).__name__}", EXIT_USAGE
        )
    name = type(handler).__qualname__
    both = "or one subclassing both handler bases, such as a handlers.RequestResponseHandler"
    if stream and not isinstance(handler, StreamRequestHandler):
        raise StartupError(
            f"TARGET {spec}: {name} is a datagram handler but stream listeners are configured "
            f"(--tcp/--unix/--fd); serve it on --udp/--unix-datagram, {both}",
            EXIT_USAGE,
        )
    if datagram and not isinstance(handler, DatagramRequestHandler):
        raise StartupError(
            f"TARGET {spec}: {name} is a stream handler but datagram listeners are configured "
            f"(--udp/--unix-datagram/--fd); serve it on --tcp/--unix, {both}",
            EXIT_USAGE,
        )
    try:
        if stream:
            check_handler(handler, "stream")
        if datagram:
            check_handler(handler, "datagram")
    except TypeError as exc:
        raise StartupError(f"TARGET {spec}: {exc}") from exc
    return handler


#: The serializer and the default framing of each ``--protocol`` name.
_NAMED_PROTOCOLS: Final[dict[str, tuple[Callable[[], Serializer[Any, Any]], str]]] = {
    "json": (JSONSerializer, "line"),
    "msgpack": (MsgPackSerializer, "length-prefix"),
    "cbor": (CBORSerializer, "length-prefix"),
    "line": (StringSerializer, "line"),
    "bytes": (BytesSerializer, "line"),
}


def _framer(framing: str, max_frame_size: int | None) -> Framer:
    if framing in ("line", "crlf"):
        delimiter = b"\n" if framing == "line" else b"\r\n"
        if max_frame_size is None:
            return LineFramer(delimiter)
        return LineFramer(delimiter, max_frame_size=max_frame_size)
    header = int(framing.rpartition("-")[2]) if framing[-1].isdigit() else 4
    return LengthPrefixFramer(header, max_frame_size=max_frame_size)


def load_protocols(
    settings: Settings, stream: bool, datagram: bool
) -> tuple[StreamProtocol[Any, Any] | None, DatagramProtocol[Any, Any] | None]:
    """The stream and datagram protocols for ``--protocol``, ``--framing``, ``--max-frame-size``.

    Raises:
        StartupError: exit 3 if a ``MODULE:ATTR`` protocol does not import or build, exit 2 if
            it is not a protocol (or serializer) usable with the listeners.
    """
    spec = settings.protocol
    if spec in _NAMED_PROTOCOLS:
        make, default_framing = _NAMED_PROTOCOLS[spec]
        try:
            serializer = make()
        except ImportError as exc:  # cbor2 not installed
            raise StartupError(f"--protocol {spec}: {exc}") from exc
    else:
        kinds = (Serializer, StreamProtocol, DatagramProtocol)
        obj, call = _import(spec, "--protocol")
        made = _instantiate(obj, call, spec, "--protocol", kinds)
        if isinstance(made, StreamProtocol | DatagramProtocol):
            return _check_ready_made(settings, made, stream, datagram)
        if not isinstance(made, Serializer):
            raise StartupError(
                f"--protocol {spec}: expected a Serializer, StreamProtocol or DatagramProtocol, "
                f"got {type(made).__name__}",
                EXIT_USAGE,
            )
        serializer, default_framing = made, "length-prefix"
    stream_protocol = None
    if stream:
        framing = settings.framing or default_framing
        try:
            framer = _framer(framing, settings.max_frame_size)
        except ValueError as exc:
            raise StartupError(f"--max-frame-size: {exc}", EXIT_USAGE) from exc
        stream_protocol = StreamProtocol(serializer, framer)
    return stream_protocol, DatagramProtocol(serializer) if datagram else None


def _check_ready_made(
    settings: Settings,
    protocol: StreamProtocol[Any, Any] | DatagramProtocol[Any, Any],
    stream: bool,
    datagram: bool,
) -> tuple[StreamProtocol[Any, Any] | None, DatagramProtocol[Any, Any] | None]:
    spec = settings.protocol
    kind = type(protocol).__name__
    for option, value in (
        ("--framing", settings.framing),
        ("--max-frame-size", settings.max_frame_size),
    ):
        if value is not None:
            raise StartupError(
                f"{option}: does not apply to a ready-made {kind} (--protocol {spec}); "
                "configure its framer, or give a Serializer instead",
                EXIT_USAGE,
            )
    if isinstance(protocol, StreamProtocol):
        if datagram:
            raise StartupError(
                f"--protocol {spec}: a StreamProtocol cannot serve datagram listeners; "
                "give a Serializer (used for both kinds) instead",
                EXIT_USAGE,
            )
        return protocol, None
    if stream:
        raise StartupError(
            f"--protocol {spec}: a DatagramProtocol cannot serve stream listeners; "
            "give a Serializer (used for both kinds) instead",
            EXIT_USAGE,
        )
    return None, protocol


def load_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context for ``--tls-cert``/``--tls-key``/``--tls-ca``, or None.

    Client certificates are requested and verified against ``--tls-ca`` when it is given, but
    optional (``CERT_OPTIONAL``): the handler can look at the peer's certificate.

    Raises:
        StartupError: a file cannot be read or is not valid PEM (exit 3).
    """
    if settings.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        what = settings.tls_cert + (f" / {settings.tls_key}" if settings.tls_key else "")
        reason = getattr(exc, "reason", None) or os_error_reason(exc)
        raise StartupError(f"--tls-cert: cannot load {what}: {reason}") from exc
    if settings.tls_ca is not None:
        try:
            context.load_verify_locations(settings.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or os_error_reason(exc)
            raise StartupError(f"--tls-ca: cannot load {settings.tls_ca}: {reason}") from exc
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def load_app(settings: Settings, kinds: tuple[bool, bool]) -> App:
    """Resolve TARGET, the protocols and TLS for listeners of the given kinds.

    Args:
        settings: The settings.
        kinds: ``(stream, datagram)``: whether there are stream and datagram listeners.

    Raises:
        StartupError: see :func:`load_handler`, :func:`load_protocols`, :func:`load_ssl_context`.
    """
    stream, datagram = kinds
    if settings.tls_cert is not None and not stream:
        raise StartupError(
            "--tls-cert: TLS needs a stream listener (--tcp, --unix or a stream --fd)", EXIT_USAGE
        )
    handler = load_handler(settings, stream, datagram)
    stream_protocol, datagram_protocol = load_protocols(settings, stream, datagram)
    ssl_context = load_ssl_context(settings)
    if ssl_context is not None and datagram:
        logger.warning("TLS applies to stream listeners only; datagram listeners stay plain")
    return App(handler, stream_protocol, datagram_protocol, ssl_context)
