"""A server that protects itself: connections per client, and a "busy" answer when full."""

from __future__ import annotations

from typing import Any

import server_framework as sf


class Quotes(sf.RequestResponseHandler[Any, Any]):
    async def respond(self, request: Any, client: sf.StreamClient[Any]) -> Any:
        return {"quote": "Simple is better than complex.", "for": request}

    async def on_refused(self, client: sf.StreamClient[Any], reason: str) -> None:
        # Called instead of serving a refused connection; it is closed when this returns.
        await client.send_packet({"error": "busy", "reason": reason, "retry_after": 1.0})


def make_server(host: str | None, port: int, *, max_connections: int = 10_000) -> Any:
    return sf.AsyncTCPServer(
        host,
        port,
        sf.StreamProtocol(sf.JSONSerializer()),
        Quotes(),
        max_connections=max_connections,
        max_connections_per_ip=100,  # one address may not take the whole server
        overload="reject",  # at max_connections: accept, answer "busy", close
    )


async def main() -> None:
    async with make_server(None, 9000) as server:
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main)
