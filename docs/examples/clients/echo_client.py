"""A blocking client for an echo server speaking JSON lines (``EchoHandler`` on a TCP server).

Run a server first, for example (in a thread or another process)::

    protocol = sf.StreamProtocol(sf.JSONSerializer())
    with sf.StandaloneTCPServer("127.0.0.1", 9000, protocol, sf.EchoHandler()) as server:
        server.serve_forever()

then ``python docs/examples/clients/echo_client.py 127.0.0.1 9000``.
"""

from __future__ import annotations

import sys
from typing import Any

import server_framework as sf


def main(address: tuple[str, int]) -> list[Any]:
    """Send three requests at once, print and return the three answers."""
    protocol = sf.StreamProtocol(sf.JSONSerializer())  # the server's protocol, from the other side
    with sf.TCPClient(address, protocol, connect_timeout=5.0) as client:
        for n in range(3):
            client.send_packet({"n": n})  # pipelined: no need to wait for each answer
        replies = [client.recv_packet(timeout=5.0) for _ in range(3)]
    for reply in replies:
        print(reply)
    return replies


if __name__ == "__main__":
    host, port = sys.argv[1:3] if len(sys.argv) > 2 else ("127.0.0.1", "9000")
    main((host, int(port)))
