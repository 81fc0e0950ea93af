"""A UDP server with per-peer state: a rate limit of a few requests per second per address."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import server_framework as sf


class RateLimitedEcho(sf.DatagramRequestHandler[Any, Any]):
    #: Requests allowed per peer per second.
    per_second = 3

    async def handle(self, client: sf.DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        # client.state lives as long as the server keeps this peer (client_idle_timeout).
        now = client.backend().current_time()
        window = client.state.setdefault("window", [now, 0])  # [window start, count]
        if now - window[0] >= 1.0:
            window[:] = [now, 0]
        window[1] += 1
        if window[1] > self.per_second:
            await client.send_packet({"error": "slow down"})
            return
        await client.send_packet({"echo": request})


def make_server(host: str | None, port: int) -> sf.AsyncUDPServer[Any, Any]:
    return sf.AsyncUDPServer(
        host,
        port,
        sf.DatagramProtocol(sf.JSONSerializer()),
        RateLimitedEcho(),
        max_clients=10_000,  # peers served at once; datagrams of more peers are dropped
        client_queue_size=64,  # datagrams waiting per peer; the excess is dropped
        client_idle_timeout=30,  # a peer silent this long is forgotten (and its state)
    )


async def main() -> None:
    async with make_server("127.0.0.1", 9001) as server:
        print("serving on", server.get_addresses())
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main)
