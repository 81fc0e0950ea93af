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
    DatagramClient,
    DatagramRequestHandler,
    RecvParams,
    StreamClient,
    StreamRequestHandler,
)
from .checks import check_handler
from .dispatch import DispatchHandler, on
from .echo import DatagramEchoHandler, EchoHandler
from .request_response import RequestResponseHandler
from .threaded import ThreadedHandler

__all__ = [
    "DatagramClient",
    "DatagramEchoHandler",
    "DatagramRequestHandler",
    "DispatchHandler",
    "EchoHandler",
    "RecvParams",
    "RequestResponseHandler",
    "StreamClient",
    "StreamRequestHandler",
    "ThreadedHandler",
    "check_handler",
    "on",
]
