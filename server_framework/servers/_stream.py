"""Stream servers: TCP (optionally TLS) and Unix stream sockets."""

from __future__ import annotations

import os
import socket
import ssl as _ssl
from collections.abc import Iterable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

from handlers.base import StreamRequestHandler
from protocols import StreamProtocol, TrustedProxies
from server_framework.backend import AsyncBackend
from server_framework.sockets import DEFAULT_BACKLOG, bind_inet, bind_unix, check_adopted

from ._base import DEFAULT_SHUTDOWN_TIMEOUT, AsyncBaseServer, _Listener

__all__ = ["AsyncStreamServerBase", "AsyncTCPServer", "AsyncUnixStreamServer"]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

#: Default connection limit. Each idle connection costs a few KiB of memory plus a file
#: descriptor; raise it (and ``ulimit -n``) for large fan-in.
DEFAULT_MAX_CONNECTIONS: Final = 10_000
#: TLS handshake deadline: a client that connects and never completes its handshake is closed
#: after this many seconds (asyncio's own default is 60 s; 10 s is plenty on any network).
DEFAULT_SSL_HANDSHAKE_TIMEOUT: Final = 10.0
#: TLS close_notify exchange deadline on close.
DEFAULT_SSL_SHUTDOWN_TIMEOUT: Final = 10.0
#: Who may send a PROXY protocol header unless told otherwise: a load balancer on this host.
DEFAULT_PROXY_ALLOW: Final = ("127.0.0.0/8", "::1/128", "unix")
#: Deadline for the PROXY header after accept (the spec suggests at least 3 s).
DEFAULT_PROXY_HEADER_TIMEOUT: Final = 5.0


def _check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None:
        if not allow_none:
            raise ValueError(f"{name} must be given")
        return
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be a positive number, got {value!r}")


class AsyncStreamServerBase(AsyncBaseServer, Generic[RequestT, ResponseT]):
    """What :class:`AsyncTCPServer` and :class:`AsyncUnixStreamServer` share."""

    def __init__(
        self,
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = DEFAULT_BACKLOG,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
        proxy_protocol: Literal["v1", "v2", "auto"] | None = None,
        proxy_allow: Iterable[str] = DEFAULT_PROXY_ALLOW,
        proxy_header_timeout: float = DEFAULT_PROXY_HEADER_TIMEOUT,
    ) -> None:
        if not isinstance(protocol, StreamProtocol):
            raise TypeError(f"expected a StreamProtocol, got {protocol!r}")
        if not isinstance(handler, StreamRequestHandler):
            raise TypeError(f"expected a StreamRequestHandler instance, got {handler!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        _check_positive("idle_timeout", idle_timeout)
        _check_positive("ssl_handshake_timeout", ssl_handshake_timeout, allow_none=False)
        _check_positive("ssl_shutdown_timeout", ssl_shutdown_timeout, allow_none=False)
        _check_positive("proxy_header_timeout", proxy_header_timeout, allow_none=False)
        if proxy_protocol not in (None, "v1", "v2", "auto"):
            raise ValueError(
                f"proxy_protocol must be 'v1', 'v2', 'auto' or None, got {proxy_protocol!r}"
            )
        if proxy_protocol is not None and ssl is not None:
            raise ValueError(
                "the PROXY protocol with ssl= is not supported yet: terminate TLS at the load "
                "balancer, or run TLS without the PROXY protocol"
            )
        super().__init__(handler, shutdown_timeout=shutdown_timeout)
        self._protocol = protocol
        self._handler: StreamRequestHandler[RequestT, ResponseT] = handler
        self._ssl = ssl
        self._backlog = backlog
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._proxy_protocol = proxy_protocol
        # One place decides who may send a PROXY header: checked on every accepted connection.
        self._proxy_trusted = TrustedProxies(proxy_allow) if proxy_protocol is not None else None
        self._proxy_header_timeout = proxy_header_timeout

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
        return _AdoptedStreamServer(list(sockets), protocol, handler, **options)

    def _make_listener(self, backend: AsyncBackend) -> _Listener:
        if backend.name == "trio":
            from ._trio_stream import TrioStreamListener  # noqa: PLC0415  (trio only when used)

            return TrioStreamListener(self, self._sockets, backend, self._ssl)
        from ._asyncio_stream import AsyncIOStreamListener  # noqa: PLC0415

        return AsyncIOStreamListener(self, self._sockets, backend, self._ssl)


class _AdoptedStreamServer(AsyncStreamServerBase[RequestT, ResponseT]):
    def __init__(
        self,
        sockets: list[socket.socket],
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        **options: Any,
    ) -> None:
        super().__init__(protocol, handler, **options)
        check_adopted(sockets, socket.SOCK_STREAM)
        self._adopted = sockets

    def _bind(self) -> None:
        for sock in self._adopted:
            sock.setblocking(False)
        self._sockets = list(self._adopted)


class AsyncTCPServer(AsyncStreamServerBase[RequestT, ResponseT]):
    """A TCP server (TLS with ``ssl=``), on asyncio, uvloop or trio: whichever loop runs it.

    Args:
        host: Address to bind; ``None`` (or ``""``) binds every interface, IPv4 and IPv6.
        port: Port to bind; 0 picks a free one (the same for IPv4 and IPv6), see
            :meth:`get_addresses`.
        protocol: How messages are framed and serialized.
        handler: The request handler serving every connection.
        ssl: A server-side :class:`ssl.SSLContext` to speak TLS.
        backlog: Listen backlog.
        reuse_port: Set ``SO_REUSEPORT`` (several processes on one port).
        max_connections: Connections served at once; beyond it new ones are closed at once.
        idle_timeout: Close a connection that waits this long for a request (counted from
            accept, then from each request); ``None`` (default) never does.
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

    Example::

        protocol = StreamProtocol(JSONSerializer())
        async with AsyncTCPServer("127.0.0.1", 0, protocol, EchoHandler()) as server:
            print(server.get_addresses())
            await server.serve_forever()
    """

    def __init__(
        self,
        host: str | None,
        port: int,
        protocol: StreamProtocol[ResponseT, RequestT],
        handler: StreamRequestHandler[RequestT, ResponseT],
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = DEFAULT_BACKLOG,
        reuse_port: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
        proxy_protocol: Literal["v1", "v2", "auto"] | None = None,
        proxy_allow: Iterable[str] = DEFAULT_PROXY_ALLOW,
        proxy_header_timeout: float = DEFAULT_PROXY_HEADER_TIMEOUT,
    ) -> None:
        super().__init__(
            protocol,
            handler,
            ssl=ssl,
            backlog=backlog,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            shutdown_timeout=shutdown_timeout,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            proxy_protocol=proxy_protocol,
            proxy_allow=proxy_allow,
            proxy_header_timeout=proxy_header_timeout,
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
            backlog=self._backlog,
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
        **options: ``ssl``, ``backlog``, ``max_connections``, ``idle_timeout``, ``proxy_*``,
            ``shutdown_timeout``, ``ssl_handshake_timeout``, ``ssl_shutdown_timeout``.
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
            self._path, socket.SOCK_STREAM, backlog=self._backlog, mode=self._mode
        )
        self._sockets = [sock]
