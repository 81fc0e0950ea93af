"""One format each way: a server that takes MessagePack requests and answers in JSON.

``sending`` and ``receiving`` are from each end's point of view, so the client's pair is the
server's, swapped. One framer carries both directions: a length prefix carries anything.
"""

from __future__ import annotations

from typing import Any

import server_framework as sf
from protocols import StapledSerializer  # not on sf: import it from protocols

SERVER_SERIALIZER: StapledSerializer[Any, Any] = StapledSerializer(
    sending=sf.JSONSerializer(), receiving=sf.MsgPackSerializer()
)
SERVER_PROTOCOL: sf.StreamProtocol[Any, Any] = sf.StreamProtocol(
    SERVER_SERIALIZER, sf.LengthPrefixFramer()
)
CLIENT_PROTOCOL: sf.StreamProtocol[Any, Any] = sf.StreamProtocol(
    SERVER_SERIALIZER.swapped(), sf.LengthPrefixFramer()
)


def make_server(port: int = 9000) -> sf.AsyncTCPServer[Any, Any]:
    """An echo server: the request's content comes back, in the other format."""
    return sf.AsyncTCPServer("127.0.0.1", port, SERVER_PROTOCOL, sf.EchoHandler())


def ask(port: int, request: Any) -> Any:
    """Send one MessagePack request, return the JSON reply, decoded (a blocking client)."""
    with sf.TCPClient(("127.0.0.1", port), CLIENT_PROTOCOL) as client:
        client.send_packet(request)
        return client.recv_packet(timeout=10)
