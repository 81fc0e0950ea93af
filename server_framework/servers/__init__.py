"""Asynchronous and standalone servers: TCP (and TLS), UDP, Unix stream, Unix datagram."""

from ._base import AsyncBaseServer
from ._datagram import AsyncDatagramServerBase, AsyncUDPServer, AsyncUnixDatagramServer
from ._standalone import (
    StandaloneServer,
    StandaloneTCPServer,
    StandaloneUDPServer,
    StandaloneUnixDatagramServer,
    StandaloneUnixStreamServer,
)
from ._stream import AsyncStreamServerBase, AsyncTCPServer, AsyncUnixStreamServer

__all__ = [
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
