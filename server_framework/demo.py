"""The demo that ``make serve`` runs: an echo handler for stream and datagram listeners alike.

``handlers.EchoHandler`` is a stream handler and ``handlers.DatagramEchoHandler`` a datagram
one; the demo serves TCP and UDP on one port, so its handler is a
:class:`~handlers.RequestResponseHandler` (which is both), answering every request with itself::

    python -m server_framework serve server_framework.demo:EchoHandler \\
        --tcp 127.0.0.1:9000 --udp 127.0.0.1:9000 --protocol json

    echo '{"hello": 1}' | nc -q1 127.0.0.1 9000        # TCP: {"hello":1}
    echo '{"hello": 1}' | nc -u -w1 127.0.0.1 9000     # UDP: {"hello":1}
"""

from __future__ import annotations

from typing import Any

from handlers import RequestResponseHandler

__all__ = ["EchoHandler"]


class EchoHandler(RequestResponseHandler[Any, Any]):
    """Sends every request back as it came, on any transport and with any protocol."""

    async def respond(self, request: Any, client: Any) -> Any:
        """Return ``request``: the echo."""
        return request
