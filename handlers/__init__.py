"""The request-handler API of server_framework, and ready-made handlers.

Subclass :class:`StreamRequestHandler` (TCP, TLS, Unix stream) or
:class:`DatagramRequestHandler` (UDP, Unix datagram) and write ``handle`` as an async
generator::

    class Echo(StreamRequestHandler[Any, Any]):
        async def handle(self, client):
            request = yield
            await client.send_packet(request)
"""

from .base import (
    Address,
    DatagramClient,
    DatagramRequestHandler,
    RecvParams,
    SocketProxy,
    StreamClient,
    StreamRequestHandler,
)
from .echo import DatagramEchoHandler, EchoHandler

__all__ = [
    "Address",
    "DatagramClient",
    "DatagramEchoHandler",
    "DatagramRequestHandler",
    "EchoHandler",
    "RecvParams",
    "SocketProxy",
    "StreamClient",
    "StreamRequestHandler",
]
