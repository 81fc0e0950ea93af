"""The command line: ``python -m server_framework serve TARGET [options]``, or ``server-framework``.

What ``serve`` does, in order (``--help`` lists the options; :mod:`server_framework.config`
says how settings are merged):

1. Parse the command line, the environment and the TOML file into one frozen
   :class:`~server_framework.config.Settings`. A bad option or value is one line on stderr
   and exit code 2. ``--print-config`` prints the result as TOML and exits 0.
2. Configure logging (:func:`server_framework.log.configure_logging`): console on a terminal,
   JSON otherwise.
3. Take the inherited sockets: ``--fd N`` and systemd's ``LISTEN_FDS`` (only when
   ``LISTEN_PID`` is our pid; the variables are then removed from the environment, as
   ``sd_listen_fds`` does, so that no child takes them for its own). Inherited sockets are
   never re-bound nor ``listen()``-ed, and their Unix socket files are never removed.
4. With ``--workers N`` (N > 1): bind, then hand over to
   :class:`server_framework.workers.Supervisor`.
5. Otherwise: load the application (TARGET, the protocols, TLS), bind the listeners, and serve
   them in this process: every stream socket in one stream server and every datagram socket in
   one datagram server (``from_sockets``), sharing the one handler object. (A handler serving
   both kinds therefore sees ``service_init`` once per server.)

Failures at start-up (TARGET does not import, a bind fails, a certificate does not load...)
are one line logged at ERROR and exit code 3; the traceback is shown with
``--log-level debug`` only. A TARGET that does not fit the listeners (a stream-only handler
with ``--udp``) is a usage error, exit 2.

Signals: SIGTERM or SIGINT stops accepting, lets requests in progress finish within
``--shutdown-timeout``, cancels the rest (the servers log how many), and exits 0. The event
loop's own signal API is used (``loop.add_signal_handler`` on asyncio/uvloop,
``trio.open_signal_receiver`` on trio): that is the one place above the backend layer that
names a loop. After the first signal, SIGINT gets a plain ``signal.signal`` handler, so a second
Ctrl-C exits at once (130) even if a handler has blocked the event loop.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import json
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import structlog

from handlers import DatagramRequestHandler, StreamRequestHandler
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
from server_framework.backend import AsyncBackend, current, run
from server_framework.config import (
    ConfigError,
    Settings,
    build_parser,
    format_inet,
    load_settings,
    render_toml,
)
from server_framework.log import configure_logging, resolve_format
from server_framework.servers import AsyncDatagramServerBase, AsyncStreamServerBase
from server_framework.sockets import UnixSocketFile, bind_inet, bind_unix
from server_framework.workers import Supervisor, WorkerSpec, notify_ready, watch_parent

__all__ = [
    "EXIT_FAILURE",
    "EXIT_FORCED",
    "EXIT_OK",
    "EXIT_STARTUP",
    "EXIT_USAGE",
    "App",
    "Listeners",
    "StartupError",
    "load_app",
    "load_handler",
    "load_protocols",
    "load_ssl_context",
    "main",
    "proxy_protocol_options",
    "run_worker",
]

logger: Final = structlog.get_logger("server_framework.cli")

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

_PROG: Final = "server-framework"


class StartupError(Exception):
    """Serving cannot start; the message is one line, ``exit_code`` 2 (usage) or 3."""

    def __init__(self, message: str, exit_code: int = EXIT_STARTUP) -> None:
        message = " ".join(message.split("\n"))  # an exception's text may span lines
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# -- entry points ---------------------------------------------------------------------------


def _version() -> str:
    try:
        return importlib.metadata.version("server-framework")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a tree
        return "unknown"


def _print_error(message: str) -> None:
    print(f"{_PROG}: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (see ``--help``).

    Args:
        argv: The arguments, without the program name (default: ``sys.argv[1:]``).
    """
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:  # Ctrl-C before (or after) the event loop watches signals
        _print_error("interrupted")
        return EXIT_FORCED
    except BaseExceptionGroup as group:  # the same, raised through a trio nursery
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        _print_error("interrupted")
        return EXIT_FORCED


def _main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _early_sigterm)
    parser = build_parser(_version())
    try:
        namespace = parser.parse_args(argv)
        activated = _systemd_fds()
        loaded = load_settings(namespace, os.environ, activated_fds=len(activated))
    except ConfigError as exc:
        _print_error(str(exc))
        return EXIT_USAGE
    if getattr(namespace, "print_config", False):
        sys.stdout.write(render_toml(loaded))
        return EXIT_OK
    settings = loaded.settings
    if settings.target is None:
        _print_error(
            "TARGET is missing: give MODULE:ATTR (e.g. server_framework.demo:EchoHandler), "
            f"set SERVER_FRAMEWORK_TARGET, or target in the config file (see '{_PROG} serve "
            "--help')"
        )
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    for warning in loaded.warnings:
        logger.warning(warning)
    _make_cwd_importable()
    listeners = Listeners()
    try:
        _adopt(listeners, [(fd, f"--fd {fd}") for fd in settings.fd])
        _adopt(listeners, [(fd, f"LISTEN_FDS fd {fd}") for fd in activated])
        if activated:
            logger.info("using sockets from systemd socket activation", fds=activated)
        if settings.workers > 1:
            return _supervise(settings, listeners)
        app = load_app(settings, listeners.kinds(settings))
        _bind(listeners, settings)
        logger.info("listening", listeners=listeners.names)
        return run(_serve, settings, app, listeners, _log_ready, True, backend=settings.backend)
    except StartupError as exc:
        _report(exc, settings)
        return exc.exit_code
    except Exception:
        logger.exception("server failed")
        return EXIT_FAILURE
    finally:
        listeners.close()


def run_worker(spec_json: str) -> int:
    """The entry point of a worker process (see :mod:`server_framework.workers`).

    Args:
        spec_json: The :class:`~server_framework.workers.WorkerSpec`, as JSON.

    Returns:
        The worker's exit code.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, for everyone
    signal.signal(signal.SIGTERM, _early_sigterm)
    spec = msgspec.json.decode(spec_json, type=WorkerSpec)
    settings = spec.settings
    configure_logging(
        settings.log_level, settings.log_format, extra={"worker": spec.index, "pid": os.getpid()}
    )
    watch_parent(spec.parent_fd)
    _make_cwd_importable()
    listeners = Listeners()
    try:
        _adopt(listeners, [(fd, f"fd {fd}") for fd in spec.fds], inherited=False)
        if spec.bind_inet:
            _bind(listeners, settings, unix=False)
        app = load_app(settings, listeners.kinds(settings))

        def ready() -> None:
            notify_ready(spec.ready_fd)
            logger.info("ready", backend=settings.backend)

        return run(_serve, settings, app, listeners, ready, False, backend=settings.backend)
    except StartupError as exc:
        _report(exc, settings)
        return exc.exit_code
    except Exception:
        logger.exception("worker failed")
        return EXIT_FAILURE
    finally:
        listeners.close()


def _report(exc: StartupError, settings: Settings) -> None:
    cause = exc.__cause__
    if settings.log_level == "debug" and cause is not None:
        logger.error(exc.message, exc_info=cause)
    else:
        logger.error(exc.message)


def _make_cwd_importable() -> None:
    """Let TARGET name modules of the current directory (``python -m`` does; a script not)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


# -- signals --------------------------------------------------------------------------------

#: Set by SIGTERM before the event loop watches signals; serving then stops as soon as it starts.
_early_stop = False


def _early_sigterm(signum: int, frame: object) -> None:
    global _early_stop
    _early_stop = True


def _force_exit_handler(log_format: str | None) -> Callable[[int, object], None]:
    """The handler of a second SIGINT: exit now, even if the event loop is blocked.

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


@contextlib.asynccontextmanager
async def _watch_signals(
    backend: AsyncBackend, on_signal: Callable[[int], None], signums: tuple[int, ...]
) -> AsyncIterator[None]:
    """Call ``on_signal(signum)`` in the loop when one of ``signums`` arrives, while inside."""
    if backend.name == "trio":
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


# -- listeners ------------------------------------------------------------------------------


@dataclass
class Listeners:
    """The sockets to serve, by kind, and the Unix socket files we created (to remove)."""

    stream: list[socket.socket] = field(default_factory=list)
    datagram: list[socket.socket] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    files: list[UnixSocketFile] = field(default_factory=list)

    def add(self, sock: socket.socket, origin: str = "") -> None:
        """Add a bound socket (``origin`` says where an inherited one came from)."""
        (self.stream if sock.type == socket.SOCK_STREAM else self.datagram).append(sock)
        self.names.append(_describe(sock) + (f" ({origin})" if origin else ""))

    def fds(self) -> list[int]:
        """The file descriptors of every socket."""
        return [sock.fileno() for sock in (*self.stream, *self.datagram)]

    def kinds(self, settings: Settings) -> tuple[bool, bool]:
        """``(stream, datagram)``: which kinds of listener there are or will be."""
        stream = bool(self.stream or settings.tcp or settings.unix)
        datagram = bool(self.datagram or settings.udp or settings.unix_datagram)
        return stream, datagram

    def close(self) -> None:
        """Close every socket and remove the Unix socket files we created (still ours)."""
        for sock in (*self.stream, *self.datagram):
            sock.close()
        for file in self.files:
            file.unlink()
        self.stream.clear()
        self.datagram.clear()
        self.files.clear()


def _describe(sock: socket.socket) -> str:
    kind = "tcp" if sock.type == socket.SOCK_STREAM else "udp"
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        kind = "unix" if sock.type == socket.SOCK_STREAM else "unix-datagram"
        return f"{kind} {os.fsdecode(address) if address else '(unnamed)'}"
    return f"{kind} {format_inet((address[0], address[1]))}"


def _os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _systemd_fds() -> list[int]:
    """The sockets systemd passed us (``LISTEN_FDS``), removing its variables from the env.

    Raises:
        ConfigError: ``LISTEN_FDS`` is not a number.
    """
    pid = os.environ.get("LISTEN_PID", "")
    count = os.environ.get("LISTEN_FDS", "")
    if not pid or not count or pid.strip() != str(os.getpid()):
        return []  # none, or meant for another process (e.g. our parent)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not count.strip().isdigit():
        raise ConfigError(f"LISTEN_FDS: expected a number of sockets, got {count!r}")
    first = 3  # SD_LISTEN_FDS_START
    return list(range(first, first + int(count)))


def _adopt(listeners: Listeners, fds: list[tuple[int, str]], *, inherited: bool = True) -> None:
    """Wrap inherited descriptors in sockets, after checking they can be served."""
    seen = set(listeners.fds())
    for fd, origin in fds:
        if fd in seen:
            raise StartupError(f"{origin}: the same descriptor is given twice", EXIT_USAGE)
        seen.add(fd)
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise StartupError(f"{origin}: not a usable socket: {_os_error(exc)}") from exc
        sock.set_inheritable(False)
        if sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
            socket.AF_UNIX,
        ) or sock.type not in (
            socket.SOCK_STREAM,
            socket.SOCK_DGRAM,
        ):
            sock.detach()
            raise StartupError(f"{origin}: not a TCP, UDP or Unix socket ({sock!r})")
        if sock.type == socket.SOCK_STREAM and not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            sock.detach()
            raise StartupError(f"{origin}: a stream socket that is not listening")
        listeners.add(sock, origin if inherited else "")


def _bind(
    listeners: Listeners, settings: Settings, *, inet: bool = True, unix: bool = True
) -> None:
    """Bind the configured listeners into ``listeners``.

    Raises:
        StartupError: a bind failed (what was bound so far stays in ``listeners``, to close).
    """
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM)
    if inet:
        for kind, addresses, name in zip(
            kinds, (settings.tcp, settings.udp), ("tcp", "udp"), strict=True
        ):
            for host, port in addresses:
                where = f"{name} {format_inet((host, port))}"
                try:
                    socks = bind_inet(host or None, port, kind, reuse_port=settings.reuse_port)
                except OSError as exc:
                    raise StartupError(f"{where}: cannot bind: {_os_error(exc)}") from exc
                for sock in socks:
                    listeners.add(sock)
    if unix:
        paths = (settings.unix, settings.unix_datagram)
        for kind, unix_paths, name in zip(kinds, paths, ("unix", "unix-datagram"), strict=True):
            for path in unix_paths:
                try:
                    sock, file = bind_unix(path, kind)
                except OSError as exc:
                    raise StartupError(f"{name} {path}: cannot bind: {_os_error(exc)}") from exc
                listeners.files.append(file)
                listeners.add(sock)


def _resolve_ports(settings: Settings) -> Settings:
    """For ``--reuse-port`` workers: check the TCP/UDP addresses bind, and fix port 0.

    The parent binds each address once with ``SO_REUSEPORT`` and closes it at once, so that a
    bad address fails before any worker starts, and every worker binds the same port.
    """
    probe = Listeners()
    resolved: dict[str, list[tuple[str, int]]] = {"tcp": [], "udp": []}
    try:
        for name in ("tcp", "udp"):
            for host, port in getattr(settings, name):
                one = msgspec.structs.replace(settings, tcp=(), udp=())
                one = msgspec.structs.replace(one, **{name: ((host, port),)})
                _bind(probe, one, unix=False)
                sock = (probe.stream if name == "tcp" else probe.datagram)[-1]
                resolved[name].append((host, sock.getsockname()[1]))
    finally:
        probe.close()
    return msgspec.structs.replace(settings, tcp=tuple(resolved["tcp"]), udp=tuple(resolved["udp"]))


def _supervise(settings: Settings, listeners: Listeners) -> int:
    worker_settings = msgspec.structs.replace(
        settings, log_format=resolve_format(settings.log_format, sys.stderr)
    )
    if settings.reuse_port:
        worker_settings = _resolve_ports(worker_settings)
        _bind(listeners, settings, inet=False)
        names = [f"tcp {format_inet(a)}" for a in worker_settings.tcp]
        names += [f"udp {format_inet(a)}" for a in worker_settings.udp]
        logger.info("listening", listeners=names + listeners.names, reuse_port=True)
    else:
        _bind(listeners, settings)
        logger.info("listening", listeners=listeners.names)
    supervisor = Supervisor(worker_settings, listeners.fds(), bind_inet=settings.reuse_port)
    if _early_stop:  # SIGTERM while we were binding
        return EXIT_OK
    return supervisor.run()


# -- the application: handler, protocols, TLS -----------------------------------------------


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
        message = f"{what} {spec}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        raise StartupError(message) from exc
    path = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
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
        reason = getattr(exc, "reason", None) or _os_error(exc)
        raise StartupError(f"--tls-cert: cannot load {what}: {reason}") from exc
    if settings.tls_ca is not None:
        try:
            context.load_verify_locations(settings.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or _os_error(exc)
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


# -- serving --------------------------------------------------------------------------------


def proxy_protocol_options(settings: Settings) -> dict[str, Any]:
    """The stream servers' PROXY protocol options from the settings.

    Returns ``proxy_protocol=`` and ``proxy_allow=`` only when they are set, so the servers'
    own defaults (no PROXY header; loopback and Unix peers trusted) apply otherwise.
    """
    options: dict[str, Any] = {}
    if settings.proxy_protocol is not None:
        options["proxy_protocol"] = settings.proxy_protocol
    if settings.proxy_allow:
        options["proxy_allow"] = list(settings.proxy_allow)
    return options


def _servers(settings: Settings, app: App, listeners: Listeners) -> list[Any]:
    servers: list[Any] = []
    try:
        if listeners.stream:
            assert app.stream_protocol is not None
            servers.append(
                AsyncStreamServerBase.from_sockets(
                    listeners.stream,
                    app.stream_protocol,
                    app.handler,
                    ssl=app.ssl_context,
                    max_connections=settings.max_connections,
                    idle_timeout=settings.idle_timeout,
                    shutdown_timeout=settings.shutdown_timeout,
                    **proxy_protocol_options(settings),
                )
            )
        if listeners.datagram:
            assert app.datagram_protocol is not None
            idle: dict[str, Any] = {}
            if settings.idle_timeout is not None:
                idle["client_idle_timeout"] = settings.idle_timeout
            servers.append(
                AsyncDatagramServerBase.from_sockets(
                    listeners.datagram,
                    app.datagram_protocol,
                    app.handler,
                    max_clients=settings.max_connections,
                    shutdown_timeout=settings.shutdown_timeout,
                    **idle,
                )
            )
    except (TypeError, ValueError) as exc:
        raise StartupError(f"cannot create the server: {exc}") from exc
    return servers


def _log_ready() -> None:
    logger.info("ready", pid=os.getpid(), backend=current().name)


async def _serve(
    settings: Settings,
    app: App,
    listeners: Listeners,
    on_ready: Callable[[], None],
    sigint: bool,
) -> int:
    """Serve ``listeners`` until SIGTERM (or SIGINT, if ``sigint``); return the exit code."""
    backend = current()
    stop = backend.create_event()

    force_exit = _force_exit_handler(settings.log_format)

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
        logger.info(
            "stopping: finishing requests in progress",
            signal=name,
            grace=settings.shutdown_timeout,
        )
        stop.set()

    try:
        servers = _servers(settings, app, listeners)
    except StartupError as exc:
        _report(exc, settings)
        return exc.exit_code
    signums = (signal.SIGINT, signal.SIGTERM) if sigint else (signal.SIGTERM,)
    async with _watch_signals(backend, on_signal, signums), contextlib.AsyncExitStack() as stack:
        if _early_stop:
            on_signal(signal.SIGTERM)
        try:
            for server in servers:
                await stack.enter_async_context(server)
        except Exception as exc:
            error = StartupError(f"start-up failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            _report(error, settings)
            return EXIT_STARTUP
        async with backend.create_task_group() as task_group:
            for server in servers:
                task_group.start_soon(server.serve_forever)
            on_ready()
            await stop.wait()
            for server in servers:
                task_group.start_soon(server.shutdown)
    logger.info("stopped")
    return EXIT_OK
