"""The settings of one ``serve`` run: :class:`Settings`, a frozen msgspec struct.

:func:`server_framework.cli.config.load_settings` builds it from the command line, the
environment and a TOML file; a worker process gets it from its parent as JSON (the struct
encodes and decodes itself). Defaults the servers define (``max_connections``,
``shutdown_timeout``) are the servers' own constants, not copies; a setting left unset (None,
or an empty ``proxy_allow``) leaves the servers' or the framer's default in force.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from server_framework.backend import BackendName, default_backend_name
from server_framework.servers import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_OVERLOAD,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_WRITE_HIGH_WATER,
    DEFAULT_WRITE_TIMEOUT,
)
from server_framework.watchdog import DEFAULT_WARN_BLOCKED

#: Seconds a worker of ``--workers`` may take to serve after it starts (its import and
#: ``service_init`` included) before it counts as failed.
DEFAULT_START_TIMEOUT: Final = 60.0

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_START_TIMEOUT",
    "LISTENER_FIELDS",
    "ConfigError",
    "InetAddress",
    "ProxyProtocolName",
    "Settings",
]

#: The listener used when none is configured: local only, so nothing is exposed by accident.
DEFAULT_HOST: Final = "127.0.0.1"
#: See :data:`DEFAULT_HOST`.
DEFAULT_PORT: Final = 9000

#: ``(host, port)``; host ``""`` means every interface (IPv4 and IPv6, on one port).
InetAddress = tuple[str, int]

#: What ``proxy_protocol`` accepts (None: no PROXY header expected).
ProxyProtocolName = Literal["v1", "v2", "auto"]

#: The listener settings, merged as one (see :mod:`server_framework.cli.config`).
LISTENER_FIELDS: Final = ("tcp", "udp", "unix", "unix_datagram", "fd")


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The resolved settings of one ``serve`` run (immutable).

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
        start_timeout: Seconds a worker may take to serve after it starts (see
            :mod:`server_framework.cli.workers`).
        reuse_port: Set ``SO_REUSEPORT``; with several workers, each binds its own TCP/UDP
            sockets.
        max_connections: Stream connections (and datagram peers) served at once.
        max_connections_per_ip: Stream connections served at once per client address, or
            None (no limit per client).
        overload: At ``max_connections``: ``reject`` or ``pause`` (see
            :class:`~server_framework.servers.AsyncTCPServer`).
        max_datagram_rate_per_ip: Datagrams per second accepted per client address, or None.
        idle_timeout: Seconds a connection (or datagram peer) may receive nothing while
            waiting for a request, or None.
        frame_timeout: Seconds a request may take to arrive once begun; 0 turns it off.
        write_timeout: Seconds replies may make no progress; 0 turns it off.
        write_high_water: Largest batch of replies to one read, in bytes.
        shutdown_timeout: Grace period for requests in progress when stopping.
        keepalive: TCP keepalive on every stream connection.
        log_connections: Log each stream connection accepted and closed (debug lines).
        warn_blocked: Warn when the event loop is blocked longer than this many seconds;
            0 turns it off (see :mod:`server_framework.watchdog`).
        tls_cert: PEM certificate chain (may hold the key too); enables TLS.
        tls_key: PEM private key, if not in ``tls_cert``.
        tls_ca: PEM CA bundle to verify client certificates (which stay optional).
        proxy_protocol: Accept a PROXY protocol header: ``v1``, ``v2``, ``auto``, or None.
        proxy_allow: Networks (CIDR) allowed to send a PROXY header.
        metrics: Serve Prometheus metrics and health checks over HTTP on this address
            (``/metrics``, ``/ready``, ``/live``; see :mod:`server_framework.cli.metrics`), or
            None.
        log_level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        log_format: ``console``, ``json``, or None to choose by whether stderr is a terminal.
        reload: Development: serve in a child process, restarted when the source changes
            (see :mod:`server_framework.cli.reload`).
        reload_dir: The directories ``reload`` watches (default: TARGET's package or module
            directory).
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
    start_timeout: float = DEFAULT_START_TIMEOUT
    reuse_port: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_ip: int | None = None
    overload: Literal["reject", "pause"] = DEFAULT_OVERLOAD
    max_datagram_rate_per_ip: float | None = None
    idle_timeout: float | None = None
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    keepalive: bool = True
    log_connections: bool = True
    warn_blocked: float = DEFAULT_WARN_BLOCKED
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    proxy_protocol: ProxyProtocolName | None = None
    proxy_allow: tuple[str, ...] = ()
    metrics: InetAddress | None = None
    log_level: str = "info"
    log_format: Literal["console", "json"] | None = None
    reload: bool = False
    reload_dir: tuple[str, ...] = ()

    def has_listeners(self) -> bool:
        """True if any listener (or inherited descriptor) is configured."""
        return any(getattr(self, name) for name in LISTENER_FIELDS)


class ConfigError(Exception):
    """A setting is invalid; the message is one line naming the option and its source."""
