"""What a server's listener and connections are told: one frozen options object per server.

The server facades (``AsyncTCPServer``, ``AsyncUDPServer``...) take keyword arguments, build one
`StreamOptions` or `DatagramOptions` (which checks every value, once), and hand it to the
loop-specific listener, which hands it to each connection. Nothing below the facade reads the
facade. The defaults are declared here, once; the command line uses the same ones.
"""

from __future__ import annotations

import math
import ssl as _ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from handlers.base import DatagramRequestHandler, StreamRequestHandler
from handlers.checks import check_handler
from protocols import DatagramProtocol, StreamProtocol, TrustedProxies
from server_framework.sockets import DEFAULT_BACKLOG
from server_framework.watchdog import DEFAULT_WARN_BLOCKED

from ._driver import RateLimitedLog, ServerCounters, new_counters, resolve_logger
from ._limits import DEFAULT_PREFIXES, check_prefixes

# The DEFAULT_* constants are public through the package, server_framework.servers.
__all__ = ["DatagramOptions", "StreamOptions"]

#: Default grace period of a shutdown: under Kubernetes' 30 s termination grace period, long
#: enough for ordinary requests to finish.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 10.0
#: Default connection limit. Each idle connection costs a few KiB of memory plus a file
#: descriptor; raise it (and ``ulimit -n``) for large fan-in.
DEFAULT_MAX_CONNECTIONS: Final = 10_000
#: Once the first byte of a frame (a request) has arrived, the whole frame must arrive within this
#: many seconds, however it trickles in (nginx's client_header_timeout is 60 s, HAProxy's
#: ``timeout http-request`` is often 10 s): bounds what a slow sender can hold, a partial frame.
DEFAULT_FRAME_TIMEOUT: Final = 30.0
#: A send that makes no progress for this many seconds (the peer reads nothing) closes the
#: connection: nginx's send_timeout is 60 s.
DEFAULT_WRITE_TIMEOUT: Final = 60.0
#: Replies of one read are written in batches of at most this many bytes (plus one reply);
#: past it, the connection's handler waits until the transport drains. asyncio's own default
#: write high-water mark: a peer that never reads costs about this much plus kernel buffers.
DEFAULT_WRITE_HIGH_WATER: Final = 64 * 1024
#: TLS handshake deadline: a client that connects and never completes its handshake is closed
#: after this many seconds (asyncio's own default is 60 s; 10 s is plenty on any network).
DEFAULT_SSL_HANDSHAKE_TIMEOUT: Final = 10.0
#: TLS close_notify exchange deadline on close.
DEFAULT_SSL_SHUTDOWN_TIMEOUT: Final = 10.0
#: Who may send a PROXY protocol header unless told otherwise: a load balancer on this host.
DEFAULT_PROXY_ALLOW: Final = ("127.0.0.0/8", "::1/128", "unix")
#: Deadline for the PROXY header after accept (the spec suggests at least 3 s).
DEFAULT_PROXY_HEADER_TIMEOUT: Final = 5.0
#: Peers served at once (each costs a task and a handler generator, a few KiB).
DEFAULT_MAX_CLIENTS: Final = 10_000
#: Datagrams waiting per peer while its handler is busy. A peer that sends faster than its
#: handler answers loses the excess, as it would in the kernel's socket buffer.
DEFAULT_CLIENT_QUEUE_SIZE: Final = 64
#: Seconds of silence after which a peer's client (task, generator, state) is dropped.
DEFAULT_CLIENT_IDLE_TIMEOUT: Final = 30.0
#: What a stream server does at ``max_connections``: ``"reject"`` accepts and closes each new
#: connection (after the handler's ``on_refused``, if it has one), so clients learn at once;
#: ``"pause"`` stops accepting until a tenth of the connections have ended, and the kernel's
#: backlog queues the newcomers.
DEFAULT_OVERLOAD: Final = "reject"


def _check_positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_at_least_one(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_bool(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_shutdown_timeout(value: float) -> None:
    if value < 0 or math.isnan(value):
        raise ValueError(f"shutdown_timeout must be >= 0, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOptions:
    """Everything a stream listener and its connections need to know, checked once.

    Attributes mirror the keyword arguments of :class:`~server_framework.servers.AsyncTCPServer`;
    ``proxy_trusted`` is ``proxy_allow`` parsed (None without the PROXY protocol): the one place
    that decides who may send a PROXY header, checked on every connection; ``log`` is what the
    server logs through (``logger`` resolved: see ``_driver.resolve_logger``); ``counters``
    what it counts (``server.metrics``), held here because every connection holds this object.
    """

    protocol: StreamProtocol[Any, Any]
    handler: StreamRequestHandler[Any, Any]
    ssl: _ssl.SSLContext | None = None
    backlog: int = DEFAULT_BACKLOG
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float | None = None
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT
    write_timeout: float | None = DEFAULT_WRITE_TIMEOUT
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT
    ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT
    proxy_protocol: Literal["v1", "v2", "auto"] | None = None
    proxy_allow: Iterable[str] = DEFAULT_PROXY_ALLOW
    proxy_header_timeout: float = DEFAULT_PROXY_HEADER_TIMEOUT
    keepalive: bool = True
    logger: Any = None
    log_connections: bool = True
    warn_blocked: float | None = DEFAULT_WARN_BLOCKED
    max_connections_per_ip: int | None = None
    ip_prefixes: tuple[int, int] = DEFAULT_PREFIXES
    overload: Literal["reject", "pause"] = DEFAULT_OVERLOAD
    proxy_trusted: TrustedProxies | None = field(init=False)
    log: Any = field(init=False, compare=False, repr=False)
    counters: ServerCounters = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, StreamProtocol):
            raise TypeError(f"expected a StreamProtocol, got {self.protocol!r}")
        if not isinstance(self.handler, StreamRequestHandler):
            raise TypeError(f"expected a StreamRequestHandler instance, got {self.handler!r}")
        check_handler(self.handler, "stream")
        _check_at_least_one("max_connections", self.max_connections)
        _check_positive("idle_timeout", self.idle_timeout, allow_none=True)
        _check_positive("frame_timeout", self.frame_timeout, allow_none=True)
        _check_positive("write_timeout", self.write_timeout, allow_none=True)
        _check_at_least_one("write_high_water", self.write_high_water)
        _check_shutdown_timeout(self.shutdown_timeout)
        _check_positive("ssl_handshake_timeout", self.ssl_handshake_timeout)
        _check_positive("ssl_shutdown_timeout", self.ssl_shutdown_timeout)
        _check_positive("proxy_header_timeout", self.proxy_header_timeout)
        _check_bool("keepalive", self.keepalive)
        _check_bool("log_connections", self.log_connections)
        _check_warn_blocked(self.warn_blocked)
        if self.max_connections_per_ip is not None:
            _check_at_least_one("max_connections_per_ip", self.max_connections_per_ip)
        object.__setattr__(self, "ip_prefixes", check_prefixes(self.ip_prefixes, "ip_prefixes"))
        if self.overload not in ("reject", "pause"):
            raise ValueError(f"overload must be 'reject' or 'pause', got {self.overload!r}")
        if self.proxy_protocol not in (None, "v1", "v2", "auto"):
            raise ValueError(
                f"proxy_protocol must be 'v1', 'v2', 'auto' or None, got {self.proxy_protocol!r}"
            )
        if self.proxy_protocol is not None and self.ssl is not None:
            raise ValueError(
                "the PROXY protocol with ssl= is not supported yet: terminate TLS at the load "
                "balancer, or run TLS without the PROXY protocol"
            )
        trusted = TrustedProxies(self.proxy_allow) if self.proxy_protocol is not None else None
        object.__setattr__(self, "proxy_trusted", trusted)  # a derived field of a frozen class
        object.__setattr__(self, "log", resolve_logger(self.logger))
        object.__setattr__(self, "counters", new_counters())


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramOptions:
    """Everything a datagram listener and its peers need to know, checked once.

    Attributes mirror the keyword arguments of :class:`~server_framework.servers.AsyncUDPServer`;
    ``drops`` counts (and logs, at a bounded rate) the datagrams dropped at a limit; ``log`` is
    what the server logs through (``logger`` resolved); ``counters`` what it counts.
    """

    protocol: DatagramProtocol[Any, Any]
    handler: DatagramRequestHandler[Any, Any]
    max_clients: int = DEFAULT_MAX_CLIENTS
    client_queue_size: int = DEFAULT_CLIENT_QUEUE_SIZE
    client_idle_timeout: float = DEFAULT_CLIENT_IDLE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    logger: Any = None
    warn_blocked: float | None = DEFAULT_WARN_BLOCKED
    max_datagram_rate_per_ip: float | None = None
    datagram_burst: float | None = None
    ip_prefixes: tuple[int, int] = DEFAULT_PREFIXES
    drops: RateLimitedLog = field(
        default_factory=lambda: RateLimitedLog("dropping datagram"), compare=False
    )
    log: Any = field(init=False, compare=False, repr=False)
    counters: ServerCounters = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, DatagramProtocol):
            raise TypeError(f"expected a DatagramProtocol, got {self.protocol!r}")
        if not isinstance(self.handler, DatagramRequestHandler):
            raise TypeError(f"expected a DatagramRequestHandler instance, got {self.handler!r}")
        check_handler(self.handler, "datagram")
        _check_at_least_one("max_clients", self.max_clients)
        _check_at_least_one("client_queue_size", self.client_queue_size)
        if not self.client_idle_timeout > 0:
            raise ValueError(f"client_idle_timeout must be > 0, got {self.client_idle_timeout}")
        _check_shutdown_timeout(self.shutdown_timeout)
        _check_warn_blocked(self.warn_blocked)
        _check_positive("max_datagram_rate_per_ip", self.max_datagram_rate_per_ip, allow_none=True)
        _check_positive("datagram_burst", self.datagram_burst, allow_none=True)
        if self.datagram_burst is not None and self.max_datagram_rate_per_ip is None:
            raise ValueError("datagram_burst applies with max_datagram_rate_per_ip only")
        object.__setattr__(self, "ip_prefixes", check_prefixes(self.ip_prefixes, "ip_prefixes"))
        object.__setattr__(self, "log", resolve_logger(self.logger))
        object.__setattr__(self, "counters", new_counters())
        self.drops.log = self.log


def _check_warn_blocked(value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value >= 0):
        raise ValueError(f"warn_blocked must be >= 0 seconds (0: off) or None, got {value!r}")
