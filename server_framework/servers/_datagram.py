"""Datagram servers: UDP and Unix datagram sockets.

A datagram server has no connections; it keeps a *client* per peer address while that peer is
active. The client has its own task and handler generator, exactly like a stream connection,
and a bounded inbox of datagrams waiting for the handler. The client ends (its generator is
closed and its ``state`` dropped) after ``client_idle_timeout`` seconds without a datagram.

Bounds, so that a flood cannot exhaust memory: at most ``max_clients`` peers at once (datagrams
from new peers beyond it are dropped), at most ``client_queue_size`` datagrams waiting per peer
(excess dropped). Drops are counted (:attr:`AsyncDatagramServerBase.dropped_datagrams`) and
logged at a bounded rate.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from handlers.base import DatagramRequestHandler
from protocols import DatagramProtocol
from server_framework import _loops
from server_framework.backend import AsyncBackend
from server_framework.sockets import bind_inet, bind_unix
from server_framework.watchdog import DEFAULT_WARN_BLOCKED

from ._base import AsyncBaseServer, Listener
from ._limits import DEFAULT_PREFIXES
from ._options import (
    DEFAULT_CLIENT_IDLE_TIMEOUT,
    DEFAULT_CLIENT_QUEUE_SIZE,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DatagramOptions,
)

__all__ = ["AsyncDatagramServerBase", "AsyncUDPServer", "AsyncUnixDatagramServer"]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class AsyncDatagramServerBase(AsyncBaseServer[DatagramOptions], Generic[RequestT, ResponseT]):
    """What :class:`AsyncUDPServer` and :class:`AsyncUnixDatagramServer` share."""

    def __init__(
        self,
        protocol: DatagramProtocol[ResponseT, RequestT],
        handler: DatagramRequestHandler[RequestT, ResponseT],
        **options: Any,
    ) -> None:
        # ``options``: the keyword options of AsyncUDPServer; DatagramOptions checks them.
        super().__init__(DatagramOptions(protocol=protocol, handler=handler, **options))

    @property
    def dropped_datagrams(self) -> int:
        """Datagrams dropped so far because a limit was reached (see the module docs; by
        reason in ``metrics.datagrams_dropped``)."""
        return sum(self._options.counters.dropped.values())

    @classmethod
    def from_sockets(
        cls,
        sockets: Sequence[socket.socket],
        protocol: DatagramProtocol[ResponseT, RequestT],
        handler: DatagramRequestHandler[RequestT, ResponseT],
        **options: Any,
    ) -> AsyncDatagramServerBase[RequestT, ResponseT]:
        """A server on datagram sockets that are already bound (inherited, activated...).

        The sockets are used as they are and closed with the server; a Unix socket's file is
        never removed, since we did not create it.

        Args:
            sockets: Bound ``SOCK_DGRAM`` sockets (UDP or Unix).
            protocol: How datagrams are serialized.
            handler: The datagram request handler.
            **options: The keyword options of :class:`AsyncUDPServer` (except ``reuse_port``).

        Raises:
            ValueError: no socket, or one that is not a datagram socket.
        """
        server = _AdoptedDatagramServer(protocol, handler, **options)
        server._adopt(sockets, socket.SOCK_DGRAM)
        return server

    def _make_listener(self, backend: AsyncBackend) -> Listener[DatagramOptions]:
        return _loops.datagram_listener(backend)(self._options, self._sockets, backend)


class _AdoptedDatagramServer(AsyncDatagramServerBase[RequestT, ResponseT]):
    _bind = AsyncBaseServer._bind_adopted


class AsyncUDPServer(AsyncDatagramServerBase[RequestT, ResponseT]):
    """A UDP server, on asyncio, uvloop or trio: whichever loop runs it.

    Args:
        host: Address to bind, or a list of them; ``None`` binds every interface, IPv4 and
            IPv6; all on one port.
        port: Port to bind; 0 picks a free one.
        protocol: How datagrams are serialized.
        handler: The datagram request handler.
        reuse_port: Set ``SO_REUSEPORT``.
        max_clients: Peers served at once.
        client_queue_size: Datagrams waiting per peer.
        client_idle_timeout: Seconds of silence before a peer's client is dropped.
        shutdown_timeout: Grace period of :meth:`shutdown`.
        logger: Where the server logs: a stdlib :class:`logging.Logger` or a structlog
            logger, as for :class:`~server_framework.servers.AsyncTCPServer`.
        warn_blocked: Warn when the event loop is blocked longer than this many seconds, as
            for :class:`~server_framework.servers.AsyncTCPServer`.
        max_datagram_rate_per_ip: Datagrams per second accepted from one client address (or
            network, see ``ip_prefixes``), as a token bucket; the excess is dropped before any
            decoding, counted (``datagrams_dropped["datagram_rate_per_ip"]``), and logged once
            when a client starts being limited and once when it stops. Unix peers are not
            limited. Default None: no limit per client.
        datagram_burst: The bucket's size: datagrams a quiet client may send at once (default:
            one second's worth, at least 1).
        ip_prefixes: How the rate groups addresses: ``(ipv4, ipv6)`` prefix lengths (default
            ``(32, 64)``).
    """

    def __init__(
        self,
        host: str | Sequence[str] | None,
        port: int,
        protocol: DatagramProtocol[ResponseT, RequestT],
        handler: DatagramRequestHandler[RequestT, ResponseT],
        *,
        reuse_port: bool = False,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        client_queue_size: int = DEFAULT_CLIENT_QUEUE_SIZE,
        client_idle_timeout: float = DEFAULT_CLIENT_IDLE_TIMEOUT,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        logger: Any = None,
        warn_blocked: float | None = DEFAULT_WARN_BLOCKED,
        max_datagram_rate_per_ip: float | None = None,
        datagram_burst: float | None = None,
        ip_prefixes: tuple[int, int] = DEFAULT_PREFIXES,
    ) -> None:
        super().__init__(
            protocol,
            handler,
            max_clients=max_clients,
            client_queue_size=client_queue_size,
            client_idle_timeout=client_idle_timeout,
            shutdown_timeout=shutdown_timeout,
            logger=logger,
            warn_blocked=warn_blocked,
            max_datagram_rate_per_ip=max_datagram_rate_per_ip,
            datagram_burst=datagram_burst,
            ip_prefixes=ip_prefixes,
        )
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self._host = host
        self._port = port
        self._reuse_port = reuse_port

    def _bind(self) -> None:
        self._sockets = bind_inet(
            self._host, self._port, socket.SOCK_DGRAM, reuse_port=self._reuse_port
        )


class AsyncUnixDatagramServer(AsyncDatagramServerBase[RequestT, ResponseT]):
    """A Unix datagram socket server.

    Peers must bind their own socket to a path to receive replies (an unbound peer has no
    address to answer to; its datagrams are handled, and replies to it fail).

    Args:
        path: Filesystem path of the socket (a stale file is replaced, a live one is an error).
        protocol: How datagrams are serialized.
        handler: The datagram request handler.
        mode: Permission bits for the socket file, or None.
        **options: ``max_clients``, ``client_queue_size``, ``client_idle_timeout``,
            ``shutdown_timeout``, ``logger``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: DatagramProtocol[ResponseT, RequestT],
        handler: DatagramRequestHandler[RequestT, ResponseT],
        *,
        mode: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(protocol, handler, **options)
        self._path = os.fspath(path)
        self._mode = mode

    def _bind(self) -> None:
        sock, self._unix_file = bind_unix(self._path, socket.SOCK_DGRAM, mode=self._mode)
        self._sockets = [sock]
