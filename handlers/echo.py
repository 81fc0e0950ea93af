"""Echo handlers: every request is sent back as it came (the demo server, tests, benchmarks)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from .base import DatagramClient, DatagramRequestHandler, StreamClient, StreamRequestHandler

__all__ = ["DatagramEchoHandler", "EchoHandler"]


class EchoHandler(StreamRequestHandler[Any, Any]):
    """Sends every request back to the connection it came from.

    One generator serves the whole connection (a loop around ``yield``), so no generator is
    created per request.
    """

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        send = client.send_packet
        while True:
            request = yield
            await send(request)


class DatagramEchoHandler(DatagramRequestHandler[Any, Any]):
    """Sends every datagram's message back to its sender (one generator per active peer)."""

    async def handle(self, client: DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        send = client.send_packet
        while True:
            request = yield
            await send(request)
