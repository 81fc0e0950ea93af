"""JSON documents written back to back, with no delimiter: what JSON streaming peers send.

``JSONDocumentFramer`` follows the JSON syntax to find where each document ends, so it reads
``{"a":1}{"b":2}``, pretty-printed documents and JSON lines alike; it writes one document per
line, which line-framed peers read too.
"""

from __future__ import annotations

from typing import Any

import server_framework as sf
from protocols import JSONDocumentFramer  # not on sf: import it from protocols

#: Documents of at most 64 KiB; a longer one (or one that never ends) closes the connection.
PROTOCOL: sf.StreamProtocol[Any, Any] = sf.StreamProtocol(
    sf.JSONSerializer(), JSONDocumentFramer(max_frame_size=64 * 1024)
)


def demo() -> list[Any]:
    """Sans-IO: what a decoder makes of documents received in odd pieces."""
    decoder = PROTOCOL.decoder()
    for chunk in (b'{"id": 1}{"id"', b': 2}\n[3, "]"]  "four', b'" 5\n'):
        decoder.feed(chunk)
    return list(decoder)  # [{'id': 1}, {'id': 2}, [3, ']'], 'four', 5]


def make_server(port: int = 9000) -> sf.AsyncTCPServer[Any, Any]:
    """An echo server for documents: every document comes back, on a line of its own."""
    return sf.AsyncTCPServer("127.0.0.1", port, PROTOCOL, sf.EchoHandler())
