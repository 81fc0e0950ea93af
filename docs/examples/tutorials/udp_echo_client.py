"""Tutorial: a UDP client that retries, since a datagram (or its answer) may be lost.

Run the server first, then ``python docs/examples/tutorials/udp_echo_client.py``.
"""

from __future__ import annotations

from typing import Any

import server_framework as sf


def ask(
    client: sf.UDPClient[Any, Any], request: Any, *, attempts: int = 3, timeout: float = 1
) -> Any:
    """Send ``request`` until an answer comes, at most ``attempts`` times."""
    for _ in range(attempts):
        client.send_packet(request)
        try:
            return client.recv_packet(timeout=timeout)
        except TimeoutError:
            continue  # lost on the way there or back: send it again
    raise TimeoutError(f"no answer after {attempts} attempts")


def main(address: tuple[str, int] = ("127.0.0.1", 9001)) -> list[Any]:
    with sf.UDPClient(address, sf.DatagramProtocol(sf.JSONSerializer())) as client:
        replies = [ask(client, {"ping": n}) for n in range(3)]
    for reply in replies:
        print(reply)
    return replies


if __name__ == "__main__":
    main()
