"""A handler served from the command line: a tiny key-value store, on TCP and UDP alike.

Run it from this directory (the current directory is importable)::

    server-framework serve app:KeyValueStore --tcp 127.0.0.1:9000 --udp 127.0.0.1:9000
    server-framework serve --config server.toml            # the same, from a file

    echo '{"set": "greeting", "value": "hi"}' | nc -q1 127.0.0.1 9000    # {"ok":true}
    echo '{"get": "greeting"}' | nc -u -w1 127.0.0.1 9000                # {"value":"hi"}

The data lives in the process: with ``--workers N`` every worker has its own store (a real
service keeps shared state in a database, opened in ``service_init``).
"""

from __future__ import annotations

from typing import Any

from handlers import RequestResponseHandler
from protocols import ProtocolError


class KeyValueStore(RequestResponseHandler[Any, dict[str, Any]]):
    """``{"set": key, "value": v}`` stores, ``{"get": key}`` reads, anything else is an error.

    A :class:`~handlers.RequestResponseHandler` is both a stream and a datagram handler, so the
    one object serves ``--tcp`` and ``--udp`` listeners together.
    """

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    async def respond(self, request: Any, client: Any) -> dict[str, Any]:
        """Answer one request."""
        if isinstance(request, dict) and isinstance(request.get("set"), str):
            self._data[request["set"]] = request.get("value")
            return {"ok": True}
        if isinstance(request, dict) and isinstance(request.get("get"), str):
            return {"value": self._data.get(request["get"])}
        return {"error": 'expected {"set": KEY, "value": VALUE} or {"get": KEY}'}

    async def on_bad_message(self, error: ProtocolError, client: Any) -> dict[str, Any]:
        """Answer a message that is not JSON with an error, and keep the connection."""
        return {"error": str(error)}


def create_store() -> KeyValueStore:
    """A factory, for ``server-framework serve 'app:create_store()'``."""
    return KeyValueStore()
