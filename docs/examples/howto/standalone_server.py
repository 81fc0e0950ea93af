"""A standalone server: the async server run by a synchronous program, in a thread of its own.

For programs that are not async (a GUI, a test suite, a worker in a larger synchronous
system): ``serve_forever()`` runs its own event loop and blocks; ``shutdown()`` stops it from
any thread.
"""

from __future__ import annotations

import threading
from typing import Any

import server_framework as sf
from server_framework.backend import BackendName

JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())


class Inventory(sf.ThreadedHandler[Any, Any]):
    """Plain, blocking code: ThreadedHandler runs respond() in a pool of threads."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.lock = threading.Lock()  # respond() runs in several threads at once
        self.stock: dict[str, int] = {}

    def respond(self, request: Any, client: Any) -> Any:
        with self.lock:
            item = request["item"]
            self.stock[item] = self.stock.get(item, 0) + request.get("add", 0)
            return {"item": item, "stock": self.stock[item]}


def start(
    port: int = 0, backend: BackendName | None = None
) -> tuple[sf.StandaloneTCPServer[Any, Any], threading.Thread]:
    """Start serving in a background thread; return once the server accepts connections."""
    server = sf.StandaloneTCPServer("127.0.0.1", port, JSON_LINES, Inventory(), backend=backend)
    thread = threading.Thread(target=server.serve_forever, name="inventory-server")
    thread.start()
    server.wait_started()
    return server, thread


def main() -> None:
    server, thread = start()
    address = server.get_addresses()[0]  # known from construction, even with port 0
    assert isinstance(address, tuple)  # (host, port); a Unix server's would be a path
    try:
        with sf.TCPClient(address, JSON_LINES) as client:
            client.send_packet({"item": "apple", "add": 3})
            print(client.recv_packet(timeout=5))  # {'item': 'apple', 'stock': 3}
    finally:
        server.shutdown()  # from another thread: returns once the server has stopped
        thread.join()
        server.server_close()


if __name__ == "__main__":
    main()
