"""Tutorial: a blocking client for json_echo_server.py.

Run the server first, then ``python docs/examples/tutorials/json_echo_client.py``.
"""

from __future__ import annotations

from typing import Any

import server_framework as sf


def main(address: tuple[str, int] = ("127.0.0.1", 9000)) -> list[Any]:
    protocol = sf.StreamProtocol(sf.JSONSerializer())  # the same protocol as the server's
    with sf.TCPClient(address, protocol, connect_timeout=5) as client:
        print(client.recv_packet(timeout=5))  # the welcome message
        replies = []
        for request in [{"hello": "world"}, [1, 2, 3], "just a string"]:
            client.send_packet(request)
            replies.append(client.recv_packet(timeout=5))
    for reply in replies:
        print(reply)
    return replies


if __name__ == "__main__":
    main()
