"""Tutorial: a TCP echo server speaking JSON, one document per line.

Run it with ``python docs/examples/tutorials/json_echo_server.py`` (``--trio`` for trio), then
talk to it with ``echo '{"hello": 1}' | nc -q1 127.0.0.1 9000`` or with
``json_echo_client.py``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from typing import Any

import server_framework as sf


class JSONEcho(sf.StreamRequestHandler[Any, Any]):
    """Sends every JSON document back to the client that sent it."""

    async def on_connection(self, client: sf.StreamClient[Any]) -> None:
        # Say hello first: the client knows at once that it reached the right server.
        await client.send_packet({"welcome": "send me JSON, one document per line"})

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        # One generator serves the whole connection: each `yield` waits for the next request.
        while True:
            request = yield
            await client.send_packet({"echo": request})


def make_server(host: str, port: int) -> sf.AsyncTCPServer[Any, Any]:
    # One JSON document per line: JSONSerializer, and StreamProtocol's default LineFramer.
    protocol = sf.StreamProtocol(sf.JSONSerializer())
    return sf.AsyncTCPServer(host, port, protocol, JSONEcho())


async def main() -> None:
    async with make_server("127.0.0.1", 9000) as server:
        print("serving on", server.get_addresses())
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main, backend="trio" if "--trio" in sys.argv else None)
