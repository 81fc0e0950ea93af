"""Tutorial: a UDP echo server; every datagram is one JSON document.

Run it with ``python docs/examples/tutorials/udp_echo_server.py``, then try
``echo '{"ping": 1}' | nc -u -w1 127.0.0.1 9001`` or ``udp_echo_client.py``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from typing import Any

import server_framework
from handlers import DatagramClient, DatagramRequestHandler
from protocols import DatagramProtocol, JSONSerializer
from server_framework.servers import AsyncUDPServer


class UDPEcho(DatagramRequestHandler[Any, Any]):
    """Answers every datagram with its content and how many this peer has sent so far."""

    async def handle(self, client: DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        # The server keeps a client, with its `state` dict, per peer address while it is active.
        count = client.state["count"] = client.state.get("count", 0) + 1
        await client.send_packet({"echo": request, "count": count})


def make_server(host: str, port: int) -> AsyncUDPServer[Any, Any]:
    # No framing: one datagram is one message.
    return AsyncUDPServer(host, port, DatagramProtocol(JSONSerializer()), UDPEcho())


async def main() -> None:
    async with make_server("127.0.0.1", 9001) as server:
        print("serving on", server.get_addresses())
        await server.serve_forever()


if __name__ == "__main__":
    server_framework.run(main, backend="trio" if "--trio" in sys.argv else None)
