"""Tutorial: a client of typed_service.py that sends Orders and receives typed replies.

Run the server first, then ``python docs/examples/tutorials/typed_client.py``.
"""

from __future__ import annotations

from typing import Any

from typed_service import Order, Reply  # the server's message types, shared

import server_framework as sf

# The server's protocol seen from the other side: it encodes requests and decodes replies.
# (Encoding is not validated: the dict below shows what an invalid request gets.)
CLIENT_PROTOCOL: sf.StreamProtocol[Order | dict[str, Any], Reply] = sf.StreamProtocol(
    sf.JSONSerializer(type=Reply)
)


def main(address: tuple[str, int] = ("127.0.0.1", 9003)) -> list[Reply]:
    requests: list[Order | dict[str, Any]] = [
        Order("widget", 12, 2.5),
        {"item": "gadget", "quantity": 0, "unit_price": 10.0},  # quantity must be >= 1
        {"item": "gizmo", "quantity": 1},  # unit_price is missing
    ]
    with sf.TCPClient(address, CLIENT_PROTOCOL, connect_timeout=5) as client:
        for request in requests:
            client.send_packet(request)
        replies = [client.recv_packet(timeout=5) for _ in requests]
    for reply in replies:
        print(reply)  # Quote(item='widget', total=28.5, discount=0.05), then two Errors
    return replies


if __name__ == "__main__":
    main()
