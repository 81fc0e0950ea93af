"""Tutorial: the same client, async, on asyncio, uvloop or trio.

Run the server first, then ``python docs/examples/tutorials/json_echo_async_client.py``.
"""

from __future__ import annotations

import sys
from typing import Any

import server_framework as sf


async def main(address: tuple[str, int] = ("127.0.0.1", 9000)) -> list[Any]:
    protocol = sf.StreamProtocol(sf.JSONSerializer())
    async with sf.AsyncTCPClient(address, protocol, connect_timeout=5) as client:
        print(await client.recv_packet(timeout=5))  # the welcome message
        requests = [{"hello": "world"}, [1, 2, 3], "just a string"]
        for request in requests:  # pipelined: send them all, then read the replies
            await client.send_packet(request)
        replies = [await client.recv_packet(timeout=5) for _ in requests]
    for reply in replies:
        print(reply)
    return replies


if __name__ == "__main__":
    sf.run(main, backend="trio" if "--trio" in sys.argv else None)
