"""Logging in production: JSON lines on stderr, with context bound once per connection.

``server-framework serve --log-format json`` does the configure_logging() call for you; a
program that runs its servers itself calls it once, first thing.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from typing import Any

import structlog

import server_framework as sf

logger = structlog.get_logger("orders")


class OrderHandler(sf.StreamRequestHandler[Any, Any]):
    async def on_connection(self, client: sf.StreamClient[Any]) -> None:
        # The server has bound conn_id and peer already; add what your application knows.
        # Bound in the connection's context, it is on every line logged for this connection,
        # including the server's own lines and those of worker threads it starts.
        structlog.contextvars.bind_contextvars(tenant="acme")

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        order = yield
        logger.info("order received", items=len(order["items"]))
        await client.send_packet({"accepted": True})


async def main() -> None:
    # JSON, one object per line, for log collectors; "console" for people; the default picks
    # by whether stderr is a terminal. Debug lines cost nothing when the level is "info".
    sf.configure_logging("info", "json", extra={"service": "orders"})
    protocol = sf.StreamProtocol(sf.JSONSerializer())
    async with sf.AsyncTCPServer("127.0.0.1", 0, protocol, OrderHandler()) as server:
        backend = sf.current_backend()
        async with backend.create_task_group() as tasks:
            tasks.start_soon(server.serve_forever)
            address = server.get_addresses()[0]
            await backend.run_in_thread(place_order, address)
            await server.shutdown()


def place_order(address: Any) -> None:
    with sf.TCPClient(address, sf.StreamProtocol(sf.JSONSerializer())) as client:
        client.send_packet({"items": ["apple", "pear"]})
        client.recv_packet(timeout=5)


if __name__ == "__main__":
    sf.run(main, backend="trio" if "--trio" in sys.argv else None)
