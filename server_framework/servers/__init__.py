"""Asynchronous and standalone servers: TCP (and TLS), UDP, Unix stream, Unix datagram."""

from ._base import AsyncBaseServer
from ._datagram import AsyncDatagramServerBase, AsyncUDPServer, AsyncUnixDatagramServer
from ._options import (
    DEFAULT_CLIENT_IDLE_TIMEOUT,
    DEFAULT_CLIENT_QUEUE_SIZE,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_OVERLOAD,
    DEFAULT_PROXY_ALLOW,
    DEFAULT_PROXY_HEADER_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SSL_HANDSHAKE_TIMEOUT,
    DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    DEFAULT_WRITE_HIGH_WATER,
    DEFAULT_WRITE_TIMEOUT,
)
from ._standalone import (
    StandaloneServer,
    StandaloneTCPServer,
    StandaloneUDPServer,
    StandaloneUnixDatagramServer,
    StandaloneUnixStreamServer,
)
from ._stream import AsyncStreamServerBase, AsyncTCPServer, AsyncUnixStreamServer

__all__ = [
    "DEFAULT_CLIENT_IDLE_TIMEOUT",
    "DEFAULT_CLIENT_QUEUE_SIZE",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_OVERLOAD",
    "DEFAULT_PROXY_ALLOW",
    "DEFAULT_PROXY_HEADER_TIMEOUT",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_SSL_HANDSHAKE_TIMEOUT",
    "DEFAULT_SSL_SHUTDOWN_TIMEOUT",
    "DEFAULT_WRITE_HIGH_WATER",
    "DEFAULT_WRITE_TIMEOUT",
    "AsyncBaseServer",
    "AsyncDatagramServerBase",
    "AsyncStreamServerBase",
    "AsyncTCPServer",
    "AsyncUDPServer",
    "AsyncUnixDatagramServer",
    "AsyncUnixStreamServer",
    "StandaloneServer",
    "StandaloneTCPServer",
    "StandaloneUDPServer",
    "StandaloneUnixDatagramServer",
    "StandaloneUnixStreamServer",
]
