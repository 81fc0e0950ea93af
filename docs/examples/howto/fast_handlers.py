"""Handlers written for speed: the shapes the servers run fastest, and why.

All three answer each line with the same line. From the least overhead per request:
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import server_framework as sf


class FastEcho(sf.RequestResponseHandler[bytes, bytes]):
    """1. ``respond``: the server calls it directly for each request; no generator at all."""

    async def respond(self, request: bytes, client: Any) -> bytes:
        return request


class LoopEcho(sf.StreamRequestHandler[bytes, bytes]):
    """2. One generator for the whole connection: a loop around ``yield``."""

    async def handle(self, client: sf.StreamClient[bytes]) -> AsyncGenerator[None, bytes]:
        send = client.send_packet  # looked up once, not per request
        while True:
            request = yield
            await send(request)


class PerRequestEcho(sf.StreamRequestHandler[bytes, bytes]):
    """3. A new generator per request: the simplest to write, a little more work per request."""

    async def handle(self, client: sf.StreamClient[bytes]) -> AsyncGenerator[None, bytes]:
        request = yield
        await client.send_packet(request)


#: Raw lines: no decoding at all. A typed msgspec serializer is the next cheapest.
PROTOCOL = sf.StreamProtocol(sf.BytesSerializer(), sf.LineFramer(b"\r\n"))


async def main() -> None:
    async with sf.AsyncTCPServer("127.0.0.1", 9000, PROTOCOL, FastEcho()) as server:
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main, backend="uvloop")  # the default where uvloop is installed
