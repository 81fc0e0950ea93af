"""The options of ``serve``: one table, :data:`OPTIONS`, for the flags, variables and TOML keys.

Every setting has one name, used three ways: ``--max-connections 500`` on the command line,
``SERVER_FRAMEWORK_MAX_CONNECTIONS=500`` in the environment, ``max_connections = 500`` in a
TOML file. An :class:`Option` holds that name, the parser of one value (from
:mod:`server_framework.cli.values`) and the ``--help`` text; the flag and the variable are
derived from the name. Defaults quoted in the help come from their definitions (the servers'
``DEFAULT_*``, the framers' ``DEFAULT_MAX_FRAME_SIZE``), so the help cannot drift from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from protocols import DEFAULT_MAX_FRAME_SIZE
from server_framework.cli.settings import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_START_TIMEOUT
from server_framework.cli.values import (
    BACKEND_NAMES,
    FRAMING_NAMES,
    LOG_FORMATS,
    LOG_LEVEL_NAMES,
    OVERLOAD_NAMES,
    PROXY_PROTOCOL_NAMES,
    format_inet,
    parse_bool,
    parse_choice,
    parse_deadline,
    parse_directory,
    parse_fd,
    parse_file,
    parse_inet,
    parse_int,
    parse_log_format,
    parse_network,
    parse_protocol,
    parse_rate,
    parse_seconds,
    parse_size,
    parse_target,
    parse_unix_path,
)
from server_framework.servers import (
    DEFAULT_CLIENT_IDLE_TIMEOUT,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_OVERLOAD,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_WRITE_HIGH_WATER,
    DEFAULT_WRITE_TIMEOUT,
)
from server_framework.watchdog import DEFAULT_WARN_BLOCKED

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "OPTIONS", "TARGET_OPTION", "Option"]

#: Prefix of the environment variables: ``SERVER_FRAMEWORK_<OPTION>``.
ENV_PREFIX: Final = "SERVER_FRAMEWORK_"
#: The environment variable naming the TOML file (``--config`` wins over it).
CONFIG_ENV: Final = ENV_PREFIX + "CONFIG"


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its field name (= TOML key), parser and help; the flag and variable follow.

    Attributes:
        name: The :class:`~server_framework.cli.settings.Settings` field and the TOML key.
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


def _choices(names: tuple[str, ...]) -> str:
    """A metavar listing the choices: ``{debug,info,...}``."""
    return "{" + ",".join(names) + "}"


def _size(size: int) -> str:
    """A size as ``--max-frame-size`` writes it: ``1M``, ``64K``, or a number of bytes."""
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


_DEFAULT_LISTENER = format_inet((DEFAULT_HOST, DEFAULT_PORT))
_LISTENERS = f"listeners (repeatable; with none at all: --tcp {_DEFAULT_LISTENER})"
_PROTOCOL = "protocol"
_PROCESSES = "event loop and processes"
_LIMITS = "limits"
_TLS = "TLS (on every stream listener)"
_PROXY = "PROXY protocol (stream listeners)"
_METRICS = "metrics and health checks"
_LOGGING = "logging"
_DEVELOPMENT = "development"

#: ``TARGET``: positional on the command line, ``target`` in TOML, ``SERVER_FRAMEWORK_TARGET``.
TARGET_OPTION: Final = Option(
    name="target",
    group="",
    metavar="TARGET",
    help="the request handler: MODULE:ATTR (a class, an instance) or MODULE:FACTORY()",
    parse=parse_target,
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
        parse=parse_unix_path,
        repeatable=True,
    ),
    Option(
        name="unix_datagram",
        group=_LISTENERS,
        metavar="PATH",
        help="listen on a Unix datagram socket",
        parse=parse_unix_path,
        repeatable=True,
    ),
    Option(
        name="fd",
        group=_LISTENERS,
        metavar="N",
        help="serve an inherited socket, already bound (and listening, for a stream socket); "
        "systemd's LISTEN_FDS sockets are served without it",
        parse=parse_fd,
        repeatable=True,
    ),
    Option(
        name="protocol",
        group=_PROTOCOL,
        metavar="NAME",
        help="json (JSON lines, the default), msgpack (length-prefixed), cbor "
        "(length-prefixed), line or text (UTF-8 lines), bytes (raw lines), or MODULE:ATTR "
        "naming a StreamProtocol, DatagramProtocol or Serializer, or a factory of one",
        parse=parse_protocol,
    ),
    Option(
        name="framing",
        group=_PROTOCOL,
        metavar="{line,crlf,length-prefix[-1|-2|-4|-8]}",
        help="how stream messages are delimited: a newline, CRLF, or a big-endian length "
        "header of 4 (or 1, 2, 8) bytes (default: the protocol's own)",
        parse=parse_choice(FRAMING_NAMES),
    ),
    Option(
        name="max_frame_size",
        group=_PROTOCOL,
        metavar="BYTES",
        help="largest incoming stream message, e.g. 65536, 64K, 1M (default: "
        f"{_size(DEFAULT_MAX_FRAME_SIZE)})",
        parse=parse_size,
    ),
    Option(
        name="backend",
        group=_PROCESSES,
        metavar=_choices(BACKEND_NAMES),
        help="the event loop (default: uvloop where installed, else asyncio)",
        parse=parse_choice(BACKEND_NAMES),
    ),
    Option(
        name="workers",
        group=_PROCESSES,
        metavar="N",
        help="worker processes sharing the listeners, restarted if they crash "
        "(default: 1, serve in this process)",
        parse=parse_int(1),
    ),
    Option(
        name="start_timeout",
        group=_PROCESSES,
        metavar="SECONDS",
        help="with --workers: a worker must serve within this long of its start (import and "
        "service_init included); else it is stopped and counts as failed: at start-up the "
        "server stops, on a reload (SIGHUP) the old workers keep serving, a replacement is "
        f"retried (default: {DEFAULT_START_TIMEOUT:g})",
        parse=parse_seconds(allow_zero=False),
    ),
    Option(
        name="reuse_port",
        group=_PROCESSES,
        metavar=None,
        help="set SO_REUSEPORT; with --workers, each worker binds its own TCP/UDP sockets "
        "and the kernel spreads clients over them (default: off)",
        parse=parse_bool,
    ),
    Option(
        name="max_connections",
        group=_LIMITS,
        metavar="N",
        help="connections (and datagram peers) served at once, per process (default: "
        f"{DEFAULT_MAX_CONNECTIONS})",
        parse=parse_int(1),
    ),
    Option(
        name="max_connections_per_ip",
        group=_LIMITS,
        metavar="N",
        help="connections served at once per client address (an IPv4 address, an IPv6 /64; "
        "behind a trusted PROXY header, the original client's); beyond it a client's new "
        "connections are refused (default: no limit per client)",
        parse=parse_int(1),
    ),
    Option(
        name="overload",
        group=_LIMITS,
        metavar=_choices(OVERLOAD_NAMES),
        help="at --max-connections: 'reject' accepts and closes each new connection (after "
        "the handler's on_refused, if it has one); 'pause' stops accepting until a tenth of "
        "the connections have ended, and the kernel's backlog queues new ones "
        f"(default: {DEFAULT_OVERLOAD})",
        parse=parse_choice(OVERLOAD_NAMES),
    ),
    Option(
        name="max_datagram_rate_per_ip",
        group=_LIMITS,
        metavar="PER_SECOND",
        help="datagrams accepted per second from one client address, in bursts of up to a "
        "second's worth; the excess is dropped and counted (default: no limit per client)",
        parse=parse_rate,
    ),
    Option(
        name="idle_timeout",
        group=_LIMITS,
        metavar="SECONDS",
        help="close a connection that receives no byte at all for this long while waiting for "
        "a request, and forget a datagram peer silent this long (default: never for "
        "connections, "
        f"{DEFAULT_CLIENT_IDLE_TIMEOUT:g} for peers)",
        parse=parse_seconds(allow_zero=False),
    ),
    Option(
        name="frame_timeout",
        group=_LIMITS,
        metavar="SECONDS",
        help="once a request has begun to arrive, the whole of it must arrive within this "
        f"many seconds, however slowly it trickles; 0 or off: no limit (default: "
        f"{DEFAULT_FRAME_TIMEOUT:g})",
        parse=parse_deadline,
    ),
    Option(
        name="write_timeout",
        group=_LIMITS,
        metavar="SECONDS",
        help="close a connection whose replies make no progress for this many seconds (the "
        f"peer reads nothing); 0 or off: no limit (default: {DEFAULT_WRITE_TIMEOUT:g})",
        parse=parse_deadline,
    ),
    Option(
        name="write_high_water",
        group=_LIMITS,
        metavar="BYTES",
        help="the replies to one read are written in batches of at most this size; past it "
        "the connection waits for the peer to read (default: "
        f"{_size(DEFAULT_WRITE_HIGH_WATER)})",
        parse=parse_size,
    ),
    Option(
        name="shutdown_timeout",
        group=_LIMITS,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, time given to requests in progress before they are "
        f"cancelled (default: {DEFAULT_SHUTDOWN_TIMEOUT:g})",
        parse=parse_seconds(allow_zero=True),
    ),
    Option(
        name="keepalive",
        group=_LIMITS,
        metavar=None,
        help="TCP keepalive on every connection: the kernel probes a connection silent for "
        "about two hours and closes it if the peer's host is gone (default: on)",
        parse=parse_bool,
    ),
    Option(
        name="warn_blocked",
        group=_LIMITS,
        metavar="SECONDS",
        help="warn (once per stall, with the blocking code's stack) when the event loop runs "
        f"no other task for longer than this; 0 turns it off (default: {DEFAULT_WARN_BLOCKED:g})",
        parse=parse_seconds(allow_zero=True),
    ),
    Option(
        name="tls_cert",
        group=_TLS,
        metavar="FILE",
        help="PEM certificate chain (may include the key); turns TLS on",
        parse=parse_file,
    ),
    Option(
        name="tls_key",
        group=_TLS,
        metavar="FILE",
        help="PEM private key, if it is not in --tls-cert",
        parse=parse_file,
    ),
    Option(
        name="tls_ca",
        group=_TLS,
        metavar="FILE",
        help="PEM CA bundle: ask clients for a certificate and verify it against these CAs "
        "(clients without one are still accepted)",
        parse=parse_file,
    ),
    Option(
        name="proxy_protocol",
        group=_PROXY,
        metavar=_choices(PROXY_PROTOCOL_NAMES),
        help="expect a PROXY protocol header before the data (default: off)",
        parse=parse_choice(PROXY_PROTOCOL_NAMES),
    ),
    Option(
        name="proxy_allow",
        group=_PROXY,
        metavar="CIDR,...",
        help="networks (CIDR), or 'unix' for Unix socket peers, allowed to send a PROXY "
        "header (repeatable; default: loopback and Unix peers only)",
        parse=parse_network,
        repeatable=True,
    ),
    Option(
        name="metrics",
        group=_METRICS,
        metavar="HOST:PORT",
        help="serve Prometheus metrics (/metrics) and health checks (/ready, /live) over HTTP "
        "on this address, e.g. 127.0.0.1:9100 (this machine only) or :9100 (every interface); "
        "with --workers, summed over the workers; needs prometheus-client (default: off)",
        parse=parse_inet,
    ),
    Option(
        name="log_connections",
        group=_LOGGING,
        metavar=None,
        help="log each connection accepted and closed (two debug lines; shown with "
        "--log-level debug) (default: on)",
        parse=parse_bool,
    ),
    Option(
        name="log_level",
        group=_LOGGING,
        metavar=_choices(LOG_LEVEL_NAMES),
        help="the least severe level logged (default: info)",
        parse=parse_choice(LOG_LEVEL_NAMES),
    ),
    Option(
        name="log_format",
        group=_LOGGING,
        metavar=_choices(LOG_FORMATS),
        help="console (for people) or json (one object per line) (default: auto, console "
        "when stderr is a terminal, else json)",
        parse=parse_log_format,
    ),
    Option(
        name="reload",
        group=_DEVELOPMENT,
        metavar=None,
        help="development only: serve in a child process and restart it when a .py file "
        "(or the --config file) changes; needs watchfiles, not with --workers (default: off)",
        parse=parse_bool,
    ),
    Option(
        name="reload_dir",
        group=_DEVELOPMENT,
        metavar="DIR",
        help="a directory --reload watches (repeatable; default: the directory of TARGET's "
        "package, or of its module)",
        parse=parse_directory,
        repeatable=True,
    ),
)
