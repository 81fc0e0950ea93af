"""The settings of ``server-framework serve``: one frozen object, loaded from four sources.

Every option has one name, used three ways (see :data:`OPTIONS`, the single table they all come
from):

- on the command line as ``--max-connections 500``;
- in the environment as ``SERVER_FRAMEWORK_MAX_CONNECTIONS=500``;
- in a TOML file (``--config server.toml``, or ``SERVER_FRAMEWORK_CONFIG=server.toml``) as
  ``max_connections = 500``.

Precedence, option by option: command line > environment > file > default. The listeners
(``tcp``, ``udp``, ``unix``, ``unix_datagram``, ``fd``) count as *one* setting: the
highest-precedence source that names any listener defines all of them, so ``--udp :9000`` on
the command line never silently adds to a ``tcp`` list from the file. With no listener at all
(and no systemd socket activation), the server listens on ``tcp 127.0.0.1:9000``: local only,
never exposed by accident.

Lists (the listeners, ``proxy_allow``) are repeated options on the command line
(``--tcp A --tcp B``), comma-separated in the environment (``SERVER_FRAMEWORK_TCP=A,B``) and
TOML arrays (``tcp = ["A", "B"]``, a single string is accepted too). An empty environment
variable counts as unset.

Every value is validated where it is read, and an error names the option and where it came
from, on one line: ``--tcp: expected HOST:PORT, got 'abc'``,
``SERVER_FRAMEWORK_WORKERS: expected an integer >= 1, got 'two'``,
``server.toml: idle_timeout: expected a number of seconds > 0, got '-1'``.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from server_framework.backend import BackendName, default_backend_name

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ENV_PREFIX",
    "OPTIONS",
    "TARGET_OPTION",
    "ConfigError",
    "InetAddress",
    "LoadedSettings",
    "Option",
    "Settings",
    "build_parser",
    "format_inet",
    "load_settings",
    "parse_inet",
    "render_toml",
]

#: Prefix of the environment variables: ``SERVER_FRAMEWORK_<OPTION>``.
ENV_PREFIX: Final = "SERVER_FRAMEWORK_"
#: The listener used when none is configured: local only, so nothing is exposed by accident.
DEFAULT_HOST: Final = "127.0.0.1"
#: See :data:`DEFAULT_HOST`.
DEFAULT_PORT: Final = 9000

#: ``(host, port)``; host ``""`` means every interface (IPv4 and IPv6, on one port).
InetAddress = tuple[str, int]

PROTOCOL_NAMES: Final = ("json", "msgpack", "cbor", "line", "text", "bytes")
FRAMING_NAMES: Final = (
    "line",
    "crlf",
    "length-prefix",
    "length-prefix-1",
    "length-prefix-2",
    "length-prefix-4",
    "length-prefix-8",
)
BACKEND_NAMES: Final = ("asyncio", "uvloop", "trio")
PROXY_PROTOCOL_NAMES: Final = ("v1", "v2", "auto")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("console", "json", "auto")

#: The listener settings, merged as one (see the module documentation).
LISTENER_FIELDS: Final = ("tcp", "udp", "unix", "unix_datagram", "fd")


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The resolved settings of one ``serve`` run (immutable; see the module documentation).

    Attributes:
        target: ``MODULE:ATTR`` or ``MODULE:FACTORY()`` naming the request handler.
        tcp: TCP listeners, ``(host, port)``; host ``""`` is every interface.
        udp: UDP listeners.
        unix: Unix stream socket paths.
        unix_datagram: Unix datagram socket paths.
        fd: Inherited, already bound socket file descriptors (stream or datagram).
        protocol: ``json``, ``msgpack``, ``cbor``, ``line`` (= ``text``), ``bytes``, or
            ``MODULE:ATTR``.
        framing: Stream framing, or None for the protocol's own default.
        max_frame_size: Largest incoming stream frame in bytes, or None for the framer's
            default (1 MiB).
        backend: ``asyncio``, ``uvloop`` or ``trio``.
        workers: Worker processes; 1 serves in the main process.
        reuse_port: Set ``SO_REUSEPORT``; with several workers, each binds its own TCP/UDP
            sockets.
        max_connections: Stream connections (and datagram peers) served at once.
        idle_timeout: Seconds a connection (or datagram peer) may wait for a request, or None.
        shutdown_timeout: Grace period for requests in progress when stopping.
        tls_cert: PEM certificate chain (may hold the key too); enables TLS.
        tls_key: PEM private key, if not in ``tls_cert``.
        tls_ca: PEM CA bundle to verify client certificates (which stay optional).
        proxy_protocol: Accept a PROXY protocol header: ``v1``, ``v2``, ``auto``, or None.
        proxy_allow: Networks (CIDR) allowed to send a PROXY header.
        log_level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        log_format: ``console``, ``json``, or None to choose by whether stderr is a terminal.
    """

    target: str | None = None
    tcp: tuple[InetAddress, ...] = ()
    udp: tuple[InetAddress, ...] = ()
    unix: tuple[str, ...] = ()
    unix_datagram: tuple[str, ...] = ()
    fd: tuple[int, ...] = ()
    protocol: str = "json"
    framing: str | None = None
    max_frame_size: int | None = None
    backend: BackendName = msgspec.field(default_factory=default_backend_name)
    workers: int = 1
    reuse_port: bool = False
    max_connections: int = 10_000  # the servers' DEFAULT_MAX_CONNECTIONS (a test pins it)
    idle_timeout: float | None = None
    shutdown_timeout: float = 10.0  # the servers' DEFAULT_SHUTDOWN_TIMEOUT (a test pins it)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    proxy_protocol: Literal["v1", "v2", "auto"] | None = None
    proxy_allow: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: Literal["console", "json"] | None = None

    def has_listeners(self) -> bool:
        """True if any listener (or inherited descriptor) is configured."""
        return any(getattr(self, name) for name in LISTENER_FIELDS)


class ConfigError(Exception):
    """A setting is invalid; the message is one line naming the option and its source."""


# -- parsing one value ------------------------------------------------------------------------
# Each parser takes the text of one value (one list item for lists) and returns the typed value,
# or raises ValueError with what was expected; the caller adds the option and the source.


def _expected(what: str, text: str) -> ValueError:
    return ValueError(f"expected {what}, got {text!r}")


def _parse_port(port: str, text: str) -> int:
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _expected("HOST:PORT with a port in 0..65535", text)
    return int(port)


def parse_inet(text: str) -> InetAddress:
    """Parse ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``*:PORT`` (every interface).

    Raises:
        ValueError: not one of those forms, or a bad port or IPv6 address.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise _expected("[IPV6]:PORT", text)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _expected("[IPV6]:PORT with a valid IPv6 address", text) from None
        return host, _parse_port(port, text)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise _expected("HOST:PORT", text)
    if ":" in host:
        raise ValueError(f"expected HOST:PORT, got {text!r} (write IPv6 addresses as [::1]:9000)")
    if host == "*":
        host = ""
    if host and not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise _expected("HOST:PORT with a host name or address", text)
    return host, _parse_port(port, text)


def format_inet(address: InetAddress) -> str:
    """The inverse of :func:`parse_inet`: ``127.0.0.1:9000``, ``[::1]:9000``, ``*:9000``."""
    host, port = address
    if not host:
        return f"*:{port}"
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


#: The longest Unix socket path Linux accepts (``sun_path`` is 108 bytes, NUL included).
_MAX_UNIX_PATH = 107


def _parse_unix_path(text: str) -> str:
    if not text:
        raise _expected("a socket path", text)
    if len(os.fsencode(text)) > _MAX_UNIX_PATH:
        raise ValueError(f"socket path too long ({len(text)} bytes, at most {_MAX_UNIX_PATH})")
    return text


def _parse_fd(text: str) -> int:
    if not text.strip().isdigit():
        raise _expected("a file descriptor number", text)
    return int(text)


def _parse_int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _expected(f"an integer >= {minimum}", text) from None
        if value < minimum:
            raise _expected(f"an integer >= {minimum}", text)
        return value

    return parse


_SIZE_UNITS: Final = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}


def _parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS or int(match.group(1)) == 0:
        raise _expected("a size in bytes > 0 (e.g. 65536, 64K, 1M)", text)
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _parse_seconds(*, allow_zero: bool) -> Callable[[str], float]:
    what = "a number of seconds " + (">= 0" if allow_zero else "> 0")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _expected(what, text) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise _expected(what, text)
        return value

    return parse


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _expected("a boolean (true/false, 1/0, yes/no, on/off)", text)


def _parse_choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise _expected("one of " + ", ".join(choices), text)
        return lowered

    return parse


_IMPORT_PATH: Final = re.compile(
    r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(\(\))?"
)


def _parse_target(text: str) -> str:
    text = text.strip()
    if not _IMPORT_PATH.fullmatch(text):
        raise _expected("MODULE:ATTR or MODULE:FACTORY() (e.g. myapp.handlers:Echo)", text)
    return text


def _parse_protocol(text: str) -> str:
    text = text.strip()
    if text.lower() in PROTOCOL_NAMES:
        return "line" if text.lower() == "text" else text.lower()
    if _IMPORT_PATH.fullmatch(text):
        return text
    raise _expected("one of " + ", ".join(PROTOCOL_NAMES) + " or MODULE:ATTR", text)


def _parse_network(text: str) -> str:
    text = text.strip()
    if text.lower() == "unix":  # peers on Unix stream listeners
        return "unix"
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {fixed}?") from None
        raise _expected(
            "a network in CIDR form (e.g. 10.0.0.0/8, 192.0.2.7) or 'unix'", text
        ) from None


def _parse_log_format(text: str) -> str | None:
    value = _parse_choice(LOG_FORMATS)(text)
    return None if value == "auto" else value


def _parse_file(text: str) -> str:
    if not text.strip():
        raise _expected("a file path", text)
    return text


# -- the option table -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its field name (= TOML key), parser and help; the flag and variable follow.

    Attributes:
        name: The :class:`Settings` field and the TOML key.
        group: The ``--help`` section it is listed in.
        metavar: What the value looks like in ``--help`` (None for a flag).
        help: One sentence for ``--help``, default included.
        parse: Turns the text of one value (one item, for lists) into the typed value;
            raises ``ValueError`` saying what was expected.
        repeatable: A list setting.
    """

    name: str
    group: str
    metavar: str | None
    help: str
    parse: Callable[[str], Any]
    repeatable: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag: ``--max-connections`` for ``max_connections``."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable: ``SERVER_FRAMEWORK_MAX_CONNECTIONS``."""
        return ENV_PREFIX + self.name.upper()


_LISTENERS = "listeners (repeatable; with none at all: --tcp 127.0.0.1:9000)"
_PROTOCOL = "protocol"
_PROCESSES = "event loop and processes"
_LIMITS = "limits"
_TLS = "TLS (on every stream listener)"
_PROXY = "PROXY protocol (stream listeners)"
_LOGGING = "logging"

#: ``TARGET``: positional on the command line, ``target`` in TOML, ``SERVER_FRAMEWORK_TARGET``.
TARGET_OPTION: Final = Option(
    name="target",
    group="",
    metavar="TARGET",
    help="the request handler: MODULE:ATTR (a class, an instance) or MODULE:FACTORY()",
    parse=_parse_target,
)

#: Every option of ``serve`` but TARGET, in ``--help`` order.
OPTIONS: Final[tuple[Option, ...]] = (
    Option(
        name="tcp",
        group=_LISTENERS,
        metavar="HOST:PORT",
        help="listen on TCP; [::1]:PORT for IPv6, *:PORT for every interface, port 0 for any "
        "free port",
        parse=parse_inet,
        repeatable=True,
    ),
    Option(
        name="udp",
        group=_LISTENERS,
        metavar="HOST:PORT",
        help="listen on UDP (same forms as --tcp)",
        parse=parse_inet,
        repeatable=True,
    ),
    Option(
        name="unix",
        group=_LISTENERS,
        metavar="PATH",
        help="listen on a Unix stream socket",
        parse=_parse_unix_path,
        repeatable=True,
    ),
    Option(
        name="unix_datagram",
        group=_LISTENERS,
        metavar="PATH",
        help="listen on a Unix datagram socket",
        parse=_parse_unix_path,
        repeatable=True,
    ),
    Option(
        name="fd",
        group=_LISTENERS,
        metavar="N",
        help="serve an inherited socket, already bound (and listening, for a stream socket); "
        "systemd's LISTEN_FDS sockets are served without it",
        parse=_parse_fd,
        repeatable=True,
    ),
    Option(
        name="protocol",
        group=_PROTOCOL,
        metavar="NAME",
        help="json (JSON lines, the default), msgpack (length-prefixed), cbor "
        "(length-prefixed), line or text (UTF-8 lines), bytes (raw lines), or MODULE:ATTR "
        "naming a StreamProtocol, DatagramProtocol or Serializer, or a factory of one",
        parse=_parse_protocol,
    ),
    Option(
        name="framing",
        group=_PROTOCOL,
        metavar="{line,crlf,length-prefix[-1|-2|-4|-8]}",
        help="how stream messages are delimited: a newline, CRLF, or a big-endian length "
        "header of 4 (or 1, 2, 8) bytes (default: the protocol's own)",
        parse=_parse_choice(FRAMING_NAMES),
    ),
    Option(
        name="max_frame_size",
        group=_PROTOCOL,
        metavar="BYTES",
        help="largest incoming stream message, e.g. 65536, 64K, 1M (default: 1M)",
        parse=_parse_size,
    ),
    Option(
        name="backend",
        group=_PROCESSES,
        metavar="{asyncio,uvloop,trio}",
        help="the event loop (default: uvloop where installed, else asyncio)",
        parse=_parse_choice(BACKEND_NAMES),
    ),
    Option(
        name="workers",
        group=_PROCESSES,
        metavar="N",
        help="worker processes sharing the listeners, restarted if they crash "
        "(default: 1, serve in this process)",
        parse=_parse_int(1),
    ),
    Option(
        name="reuse_port",
        group=_PROCESSES,
        metavar=None,
        help="set SO_REUSEPORT; with --workers, each worker binds its own TCP/UDP sockets "
        "and the kernel spreads clients over them (default: off)",
        parse=_parse_bool,
    ),
    Option(
        name="max_connections",
        group=_LIMITS,
        metavar="N",
        help="connections (and datagram peers) served at once, per process (default: 10000)",
        parse=_parse_int(1),
    ),
    Option(
        name="idle_timeout",
        group=_LIMITS,
        metavar="SECONDS",
        help="close a connection that waits this long for a request, and forget a datagram "
        "peer silent this long (default: never for connections, 30 for peers)",
        parse=_parse_seconds(allow_zero=False),
    ),
    Option(
        name="shutdown_timeout",
        group=_LIMITS,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, time given to requests in progress before they are "
        "cancelled (default: 10)",
        parse=_parse_seconds(allow_zero=True),
    ),
    Option(
        name="tls_cert",
        group=_TLS,
        metavar="FILE",
        help="PEM certificate chain (may include the key); turns TLS on",
        parse=_parse_file,
    ),
    Option(
        name="tls_key",
        group=_TLS,
        metavar="FILE",
        help="PEM private key, if it is not in --tls-cert",
        parse=_parse_file,
    ),
    Option(
        name="tls_ca",
        group=_TLS,
        metavar="FILE",
        help="PEM CA bundle: ask clients for a certificate and verify it against these CAs "
        "(clients without one are still accepted)",
        parse=_parse_file,
    ),
    Option(
        name="proxy_protocol",
        group=_PROXY,
        metavar="{v1,v2,auto}",
        help="expect a PROXY protocol header before the data (default: off)",
        parse=_parse_choice(PROXY_PROTOCOL_NAMES),
    ),
    Option(
        name="proxy_allow",
        group=_PROXY,
        metavar="CIDR,...",
        help="networks (CIDR), or 'unix' for Unix socket peers, allowed to send a PROXY "
        "header (repeatable; default: loopback and Unix peers only)",
        parse=_parse_network,
        repeatable=True,
    ),
    Option(
        name="log_level",
        group=_LOGGING,
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help="the least severe level logged (default: info)",
        parse=_parse_choice(LOG_LEVELS),
    ),
    Option(
        name="log_format",
        group=_LOGGING,
        metavar="{console,json,auto}",
        help="console (for people) or json (one object per line) (default: auto, console "
        "when stderr is a terminal, else json)",
        parse=_parse_log_format,
    ),
)

_ALL_OPTIONS: Final = (TARGET_OPTION, *OPTIONS)
_BY_NAME: Final = {option.name: option for option in _ALL_OPTIONS}
#: The environment variable naming the TOML file (``--config`` wins over it).
CONFIG_ENV: Final = ENV_PREFIX + "CONFIG"

# -- the command line ---------------------------------------------------------------------------

_EPILOG = """\
configuration:
  Every option can also be set in the environment as SERVER_FRAMEWORK_<OPTION>
  (SERVER_FRAMEWORK_MAX_CONNECTIONS=500; lists comma-separated: SERVER_FRAMEWORK_TCP=a:1,b:2)
  or in a TOML file (--config FILE, or SERVER_FRAMEWORK_CONFIG=FILE) as option = value with
  underscores (max_connections = 500, tcp = ["a:1", "b:2"], target = "app:Handler").
  Precedence: command line > environment > file > default. The listener options count as one:
  the strongest source naming any listener gives them all. --print-config shows the result.

target:
  MODULE:ATTR names a request handler class (created with no arguments), a handler instance,
  or a function returning one; MODULE:FUNC() calls it too. The current directory is
  importable. Stream listeners need a StreamRequestHandler, datagram listeners a
  DatagramRequestHandler; to serve both, use one subclassing both (any
  handlers.RequestResponseHandler does), e.g. server_framework.demo:EchoHandler.

signals and exit codes:
  SIGTERM or SIGINT: stop accepting, give requests in progress --shutdown-timeout seconds,
  cancel the rest, exit 0. A second SIGINT exits at once (130). With --workers, the parent
  forwards the stop to every worker and waits for them.
  Exit codes: 0 stopped cleanly; 1 failed while serving; 2 bad usage or configuration;
  3 start-up failure (TARGET does not import, a bind fails, a worker fails to start); 130
  forced exit.

examples:
  server-framework serve server_framework.demo:EchoHandler --tcp 127.0.0.1:9000 --udp 127.0.0.1:9000
  server-framework serve myapp:Handler --tcp *:8000 --protocol msgpack --workers 4
  SERVER_FRAMEWORK_WORKERS=8 server-framework serve 'myapp:create()' --config prod.toml
"""


class _ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one-line :class:`ConfigError` exceptions."""

    def error(self, message: str) -> Any:  # argparse's signature says NoReturn
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def build_parser(version: str = "") -> argparse.ArgumentParser:
    """The ``server-framework`` argument parser (with its ``serve`` subcommand).

    Options not given on the command line are absent from the parsed namespace (not set to
    their default), so that the environment and the file can supply them.

    Errors raise :class:`ConfigError` (one line) instead of printing usage and exiting;
    ``--help`` and ``--version`` print and raise ``SystemExit(0)`` as usual.
    """
    parser = _ArgumentParser(
        prog="server-framework",
        description="Run a server_framework request handler from the command line.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"server-framework {version}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a request handler on TCP, UDP and Unix sockets",
        description="Serve TARGET, a request handler, on the given listeners until SIGTERM or "
        "SIGINT.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    serve.add_argument("target", nargs="?", metavar="TARGET", help=TARGET_OPTION.help)
    serve.add_argument(
        "--config", metavar="FILE", help="read settings from this TOML file (see below)"
    )
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings as TOML, with where each came from, and exit",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        if option.group not in groups:
            groups[option.group] = serve.add_argument_group(option.group)
        group = groups[option.group]
        if option.parse is _parse_bool:
            group.add_argument(option.flag, action=argparse.BooleanOptionalAction, help=option.help)
        else:
            group.add_argument(
                option.flag,
                metavar=option.metavar,
                action="append" if option.repeatable else "store",
                help=option.help,
            )
    return parser


# -- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedSettings:
    """The result of :func:`load_settings`.

    Attributes:
        settings: The merged, validated settings.
        sources: For each field set by something other than its default, where it came from:
            a flag (``--tcp``), a variable (``SERVER_FRAMEWORK_TCP``) or ``FILE: key``.
        warnings: Things worth logging once logging is set up (unknown variables...).
    """

    settings: Settings
    sources: dict[str, str]
    warnings: list[str]


_Layer = dict[str, tuple[Any, str]]  # field -> (typed value, source label)


def _parse_value(option: Option, texts: Sequence[str], source: str) -> Any:
    try:
        if option.repeatable:
            return tuple(option.parse(text) for text in texts)
        return option.parse(texts[0])
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _cli_layer(namespace: argparse.Namespace) -> _Layer:
    layer: _Layer = {}
    given = vars(namespace)
    for option in _ALL_OPTIONS:
        if option.name not in given:
            continue
        raw = given[option.name]
        source = "TARGET" if option is TARGET_OPTION else option.flag
        if isinstance(raw, bool):  # --reuse-port / --no-reuse-port
            layer[option.name] = (raw, source)
            continue
        texts = raw if isinstance(raw, list) else [raw]
        if option.name == "proxy_allow":
            texts = [item for text in texts for item in text.split(",") if item.strip()]
        layer[option.name] = (_parse_value(option, texts, source), source)
    return layer


def _env_layer(environ: Mapping[str, str]) -> tuple[_Layer, list[str]]:
    layer: _Layer = {}
    for option in _ALL_OPTIONS:
        raw = environ.get(option.env, "")
        if not raw.strip():
            continue
        texts = [item for item in raw.split(",") if item.strip()] if option.repeatable else [raw]
        layer[option.name] = (_parse_value(option, texts, option.env), option.env)
    known = {option.env for option in _ALL_OPTIONS} | {CONFIG_ENV}
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"ignoring unknown environment variable {name}{hint}")
    return layer, warnings


def _file_layer(path: str) -> _Layer:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    layer: _Layer = {}
    for key, value in document.items():
        option = _BY_NAME.get(key)
        if option is None:
            close = difflib.get_close_matches(key.replace("-", "_"), sorted(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown setting {key!r}{hint}")
        source = f"{path}: {key}"
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not option.repeatable:
            raise ConfigError(f"{source}: expected a single value, got a list")
        texts = []
        for item in items:
            if isinstance(item, dict | list):
                raise ConfigError(f"{source}: expected a value, got {type(item).__name__}")
            texts.append(str(item).lower() if isinstance(item, bool) else str(item))
        layer[key] = (_parse_value(option, texts, source), source)
    return layer


def _check(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Checks that involve several settings, or the machine."""

    def source(name: str) -> str:
        return sources.get(name, _BY_NAME[name].flag)

    for name in ("tls_key", "tls_ca"):
        if name in values and "tls_cert" not in values:
            raise ConfigError(f"{source(name)}: needs a certificate (--tls-cert) to turn TLS on")
    if values.get("proxy_allow") and "proxy_protocol" not in values:
        raise ConfigError(f"{source('proxy_allow')}: needs --proxy-protocol")
    framing = values.get("framing")
    size = values.get("max_frame_size")
    if size is not None and framing in ("length-prefix-1", "length-prefix-2"):
        limit = 255 if framing == "length-prefix-1" else 65535
        if size > limit:
            raise ConfigError(
                f"{source('max_frame_size')}: {framing} framing allows at most {limit} bytes"
            )
    if values.get("backend") == "uvloop" and not _uvloop_installed():
        raise ConfigError(f"{source('backend')}: uvloop is not installed; use asyncio or trio")


def _uvloop_installed() -> bool:
    import importlib.util  # noqa: PLC0415  (only needed for this one check)

    return importlib.util.find_spec("uvloop") is not None


def load_settings(
    namespace: argparse.Namespace, environ: Mapping[str, str], *, activated_fds: int = 0
) -> LoadedSettings:
    """Merge the command line, the environment and the TOML file into :class:`Settings`.

    Args:
        namespace: What :func:`build_parser` parsed for ``serve`` (only the options given).
        environ: The environment (``os.environ``).
        activated_fds: Sockets passed by systemd socket activation; when there are some, no
            default listener is added.

    Raises:
        ConfigError: an invalid value, an unknown TOML key, an unreadable file... (one line).
    """
    given = vars(namespace)
    config_path = given.get("config") or environ.get(CONFIG_ENV, "").strip() or None
    file_layer = _file_layer(config_path) if config_path else {}
    env_layer, warnings = _env_layer(environ)
    cli_layer = _cli_layer(namespace)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in (file_layer, env_layer, cli_layer):  # weakest first
        if any(name in layer for name in LISTENER_FIELDS):
            for name in LISTENER_FIELDS:
                values.pop(name, None)
                sources.pop(name, None)
        for name, (value, source) in layer.items():
            values[name] = value
            sources[name] = source
    if not any(values.get(name) for name in LISTENER_FIELDS) and activated_fds == 0:
        values["tcp"] = ((DEFAULT_HOST, DEFAULT_PORT),)
    _check(values, sources)
    return LoadedSettings(Settings(**values), sources, warnings)


# -- printing -----------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON strings are TOML basic strings, once DEL (allowed in JSON) is escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return _toml_value(format_inet(value))
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def render_toml(loaded: LoadedSettings) -> str:
    """The settings as a TOML document usable with ``--config``, each line saying its source."""
    settings = loaded.settings
    lines = [
        "# server-framework serve: resolved settings",
        "# (command line > environment > file > default)",
    ]
    for option in _ALL_OPTIONS:
        value = getattr(settings, option.name)
        source = loaded.sources.get(option.name, "default")
        if value is None or (option.name in LISTENER_FIELDS and not value):
            lines.append(f"# {option.name}: not set ({source})")
        else:
            lines.append(f"{option.name} = {_toml_value(value)}  # {source}")
    return "\n".join(lines) + "\n"
