"""Quickstart: an echo server in a dozen lines. Run it, then talk to it with nc."""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from typing import Any

import server_framework as sf


class Echo(sf.StreamRequestHandler[Any, Any]):
    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield  # wait for the next request (one JSON document)
        await client.send_packet(request)  # answer it


async def main(port: int = 9000) -> None:
    protocol = sf.StreamProtocol(sf.JSONSerializer())  # one JSON document per line
    async with sf.AsyncTCPServer("127.0.0.1", port, protocol, Echo()) as server:
        print("serving on", server.get_addresses())
        await server.serve_forever()


if __name__ == "__main__":
    # uvloop where installed, else asyncio; `python quickstart.py trio` runs it on trio.
    sf.run(main, backend="trio" if "trio" in sys.argv else None)
