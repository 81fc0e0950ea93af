"""Stream servers: TCP (optionally TLS) and Unix stream sockets."""

from __future__ import annotations

import os
import socket
import ssl as _ssl
from collections.abc import Iterable, Sequence
from typing import Any, Generic, Literal, TypeVar

from handlers.base import StreamRequestHandler
from protocols import StreamProtocol
from server_framework import _loops
from server_framework.backend import AsyncBackend
from server_framework.sockets import DEFAULT_BACKLOG, bind_inet, bind_unix, set_keepalive
from server_framework.watchdog import DEFAULT_WARN_BLOCKED

from ._base import AsyncBaseServer, Listener
from ._limits import DEFAULT_PREFIXES
from ._options import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_OVERLOAD,
    DEFAULT_PROXY_ALLOW,
    DEFAULT_PROXY_HEADER_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SSL_HANDSHAKE_TIMEOUT,
    DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    DEFAULT_WRITE_HIGH_WATER,
    DEFAULT_WRITE_TIMEOUT,
    StreamOptions,
)

__all__ = ["AsyncStreamServerBase", "AsyncTCPServer", "AsyncUnixStreamServer"]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class AsyncStreamServerBase(AsyncBaseServer[StreamOptions], Generic[RequestT, ResponseT]):
    """What :class:`AsyncTCPServer` and :class:`AsyncUnixStreamServer` share."""

    def __init__(
        self,
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        **options: Any,
    ) -> None:
        # ``options``: the keyword options of AsyncTCPServer; StreamOptions checks them.
        super().__init__(StreamOptions(protocol=protocol, handler=handler, **options))

    @classmethod
    def from_sockets(
        cls,
        sockets: Sequence[socket.socket],
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        **options: Any,
    ) -> AsyncStreamServerBase[RequestT, ResponseT]:
        """A server on sockets that are already bound and listening (inherited, activated...).

        The sockets are used as they are (never re-bound, never ``listen()``-ed again) and closed
        with the server; a Unix socket's file is never removed, since we did not create it.

        Args:
            sockets: Listening ``SOCK_STREAM`` sockets (TCP or Unix).
            protocol: How messages are framed and serialized.
            handler: The request handler.
            **options: The keyword options of :class:`AsyncTCPServer` (except ``reuse_port``).

        Raises:
            ValueError: no socket, or one that is not a stream socket.
        """
        server = _AdoptedStreamServer(protocol, handler, **options)
        server._adopt(sockets, socket.SOCK_STREAM)
        return server

    def _make_listener(self, backend: AsyncBackend) -> Listener[StreamOptions]:
        for sock in self._sockets:
            # On the listening socket: every accepted connection inherits it from the kernel,
            # without a system call of its own.
            set_keepalive(sock, self._options.keepalive)
        return _loops.stream_listener(backend)(self._options, self._sockets, backend)


class _AdoptedStreamServer(AsyncStreamServerBase[RequestT, ResponseT]):
    _bind = AsyncBaseServer._bind_adopted


class AsyncTCPServer(AsyncStreamServerBase[RequestT, ResponseT]):
    """A TCP server (TLS with ``ssl=``), on asyncio, uvloop or trio: whichever loop runs it.

    Args:
        host: Address to bind, or a list of them (every address each resolves to, on one
            port); ``None`` (or ``""``) binds every interface, IPv4 and IPv6.
        port: Port to bind; 0 picks a free one (the same for IPv4 and IPv6), see
            :meth:`get_addresses`.
        protocol: How messages are framed and serialized.
        handler: The request handler serving every connection.
        ssl: A server-side :class:`ssl.SSLContext` to speak TLS.
        backlog: Listen backlog.
        reuse_port: Set ``SO_REUSEPORT`` (several processes on one port).
        max_connections: Connections served at once; beyond it new ones are closed at once.
        idle_timeout: Close a connection that receives no byte at all for this many seconds
            while waiting for a request (counted from accept, then from each byte received);
            ``None`` (default) never does: quiet connections are normal for many protocols,
            and the other deadlines bound what one can hold.
        frame_timeout: Once the first byte of a request has arrived, the whole request must
            arrive within this many seconds, however slowly it trickles (default 30); None
            disables it.
        write_timeout: Close a connection whose replies make no progress for this many
            seconds (the peer reads nothing; default 60); a ``send_packet`` waiting then
            raises :class:`~server_framework.exceptions.BrokenResourceError`. None disables it.
        write_high_water: The replies to one read are written in batches of at most this many
            bytes (plus one reply, default 64 KiB); past it the connection's handler waits
            until the transport drains, and reading pauses meanwhile.
        shutdown_timeout: Grace period of :meth:`shutdown` for requests in progress.
        ssl_handshake_timeout: Seconds allowed for a TLS handshake.
        ssl_shutdown_timeout: Seconds allowed for the TLS close exchange.
        proxy_protocol: Expect a PROXY protocol header (HAProxy's spec) first on every
            connection: ``"v1"`` (text), ``"v2"`` (binary) or ``"auto"`` (either). The
            handler's ``client.peer_address`` is then the original client's. Connections from
            peers outside ``proxy_allow``, with a malformed header, or without one within
            ``proxy_header_timeout`` seconds are closed and logged. Not with ``ssl=`` (yet).
        proxy_allow: Addresses allowed to send the header: CIDRs, and ``"unix"`` for Unix
            peers (default: loopback and Unix, i.e. a load balancer on this host).
        proxy_header_timeout: Seconds allowed for the header to arrive (default 5).
        keepalive: TCP keepalive on every connection (default on): the kernel probes a
            connection that has been silent for a while (2 hours by default on Linux,
            ``net.ipv4.tcp_keepalive_time``) and closes it if the peer is gone (a crashed
            host, a dropped NAT entry), so a handler waiting on it ends; the idle deadline
            is ``idle_timeout``'s job. Set on the listening socket, which its connections
            inherit: no system call per connection. Nothing on Unix sockets.
        logger: Where the server logs (its start and stop, its connections, handler
            errors): a stdlib :class:`logging.Logger` (each line one message, the event and
            its fields, ``connection accepted conn_id=3 peer=127.0.0.1:40112``, filtered by
            that logger's level) or a structlog logger (``structlog.get_logger("myapp")``,
            called as the framework calls its own). Default: the framework's structlog
            logger ``server_framework.servers`` (see :mod:`server_framework.log`).
        log_connections: Log each connection accepted and closed (two debug lines, with the
            connection's ``conn_id`` and ``peer``; default True). False leaves them out
            whatever the logging level; what goes wrong is logged either way.
        warn_blocked: While serving, warn once per stall when the event loop runs no other
            task for longer than this many seconds (default 0.2), with the blocking code's
            stack and the handler method and peer it was serving (see
            :mod:`server_framework.watchdog`); 0 or None: off.
        max_connections_per_ip: Connections served at once per client address (or per
            network, see ``ip_prefixes``); beyond it a client's new connections are refused
            (after the handler's ``on_refused``, if it defines one), logged once per client
            when it starts and once when it stops. Behind a trusted PROXY protocol balancer,
            the original client's address counts. Unix peers are not limited. Default None:
            no limit per client (NAT and proxies put many users behind one address); the
            server-wide ``max_connections`` still applies.
        ip_prefixes: How ``max_connections_per_ip`` groups addresses: ``(ipv4, ipv6)`` prefix
            lengths (default ``(32, 64)``: each IPv4 address alone, each IPv6 /64 together,
            what one host usually owns).
        overload: What happens at ``max_connections``: ``"reject"`` (default) accepts each new
            connection and closes it at once, after the handler's ``on_refused`` if it
            defines one (to send a "busy" message); ``"pause"`` stops accepting, so the
            kernel's backlog queues newcomers until a tenth of the connections have ended.
            Either way one line is logged when the limit is reached and one when the server
            is below it again, and refusals are counted (``server.metrics``).

    Example::

        protocol = StreamProtocol(JSONSerializer())
        async with AsyncTCPServer("127.0.0.1", 0, protocol, EchoHandler()) as server:
            print(server.get_addresses())
            await server.serve_forever()
    """

    def __init__(
        self,
        host: str | Sequence[str] | None,
        port: int,
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = DEFAULT_BACKLOG,
        reuse_port: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = None,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
        proxy_protocol: Literal["v1", "v2", "auto"] | None = None,
        proxy_allow: Iterable[str] = DEFAULT_PROXY_ALLOW,
        proxy_header_timeout: float = DEFAULT_PROXY_HEADER_TIMEOUT,
        keepalive: bool = True,
        logger: Any = None,
        log_connections: bool = True,
        warn_blocked: float | None = DEFAULT_WARN_BLOCKED,
        max_connections_per_ip: int | None = None,
        ip_prefixes: tuple[int, int] = DEFAULT_PREFIXES,
        overload: Literal["reject", "pause"] = DEFAULT_OVERLOAD,
    ) -> None:
        super().__init__(
            protocol,
            handler,
            ssl=ssl,
            backlog=backlog,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            frame_timeout=frame_timeout,
            write_timeout=write_timeout,
            write_high_water=write_high_water,
            shutdown_timeout=shutdown_timeout,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            proxy_protocol=proxy_protocol,
            proxy_allow=proxy_allow,
            proxy_header_timeout=proxy_header_timeout,
            keepalive=keepalive,
            logger=logger,
            log_connections=log_connections,
            warn_blocked=warn_blocked,
            max_connections_per_ip=max_connections_per_ip,
            ip_prefixes=ip_prefixes,
            overload=overload,
        )
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self._host = host
        self._port = port
        self._reuse_port = reuse_port

    def _bind(self) -> None:
        self._sockets = bind_inet(
            self._host,
            self._port,
            socket.SOCK_STREAM,
            backlog=self._options.backlog,
            reuse_port=self._reuse_port,
        )


class AsyncUnixStreamServer(AsyncStreamServerBase[RequestT, ResponseT]):
    """A Unix stream socket server; the same options as :class:`AsyncTCPServer` but an address.

    Args:
        path: Filesystem path of the socket. A stale socket file (nobody listening) is
            replaced; a live one is an error. The file is removed when the server closes.
        protocol: How messages are framed and serialized.
        handler: The request handler.
        mode: Permission bits for the socket file (e.g. ``0o660``), or None for the umask's.
        **options: ``ssl``, ``backlog``, ``max_connections``, ``idle_timeout``,
            ``frame_timeout``, ``write_timeout``, ``write_high_water``, ``proxy_*``,
            ``shutdown_timeout``, ``ssl_handshake_timeout``, ``ssl_shutdown_timeout``,
            ``logger``, ``log_connections`` (``keepalive`` is accepted, and does nothing: Unix
            sockets have no keepalive).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        *,
        mode: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(protocol, handler, **options)
        self._path = os.fspath(path)
        self._mode = mode

    def _bind(self) -> None:
        sock, self._unix_file = bind_unix(
            self._path, socket.SOCK_STREAM, backlog=self._options.backlog, mode=self._mode
        )
        self._sockets = [sock]
