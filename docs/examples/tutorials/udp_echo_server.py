"""Tutorial: a UDP echo server; every datagram is one JSON document.

Run it with ``python docs/examples/tutorials/udp_echo_server.py``, then try
``echo '{"ping": 1}' | nc -u -w1 127.0.0.1 9001`` or ``udp_echo_client.py``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from typing import Any

import server_framework as sf


class UDPEcho(sf.DatagramRequestHandler[Any, Any]):
    """Answers every datagram with its content and how many this peer has sent so far."""

    async def handle(self, client: sf.DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        # The server keeps a client, with its `state` dict, per peer address while it is active.
        count = client.state["count"] = client.state.get("count", 0) + 1
        await client.send_packet({"echo": request, "count": count})


def make_server(host: str, port: int) -> sf.AsyncUDPServer[Any, Any]:
    # No framing: one datagram is one message.
    return sf.AsyncUDPServer(host, port, sf.DatagramProtocol(sf.JSONSerializer()), UDPEcho())


async def main() -> None:
    async with make_server("127.0.0.1", 9001) as server:
        print("serving on", server.get_addresses())
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main, backend="trio" if "--trio" in sys.argv else None)
