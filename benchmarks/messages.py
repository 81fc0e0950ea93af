"""The bytes on the wire: the same request bytes for every server, and the replies expected.

Every server under test speaks three wire formats, chosen by ``--workload``:

- ``line``: frames end with ``\\r\\n``. A frame ``PING`` is answered ``+PONG`` (so that
  ``redis-benchmark -t ping_inline`` can drive it), any other frame is echoed.
- ``prefix``: frames start with a 4-byte big-endian payload length; every frame is echoed.
- ``udp``: every datagram is echoed (``dnsperf`` counts the echo of its query as an answer).

server_framework's servers speak a fourth, ``json``: ``\\r\\n``-terminated lines, each the JSON of
an :class:`Order` (a msgspec Struct), decoded into the Struct and answered with it (the same
bytes: msgspec writes compact JSON in field order). The ``json-1k`` workload sends
:func:`json_message` lines to it; ``bytes-1k`` sends the very same lines to the ``line`` format
(raw bytes, echoed), so the two differ only in the serializer.
"""

from __future__ import annotations

from functools import cache
from typing import Final, Literal

import msgspec

Framing = Literal["line", "prefix", "udp", "ping", "json"]

CRLF: Final = b"\r\n"
PING: Final = b"PING"
PONG: Final = b"+PONG"
#: Length header of the ``prefix`` framing (what ``LengthPrefixFramer()`` uses by default).
PREFIX_SIZE: Final = 4

_ALPHABET: Final = b"abcdefghijklmnopqrstuvwxyz0123456789"


def payload(size: int) -> bytes:
    """A payload of ``size`` printable bytes (never ``\\r``, ``\\n`` or ``PING``)."""
    reps = size // len(_ALPHABET) + 1
    return (_ALPHABET * reps)[:size]


class Item(msgspec.Struct):
    """One line of an :class:`Order`."""

    sku: str
    quantity: int
    price: float


class Order(msgspec.Struct):
    """The typed message of the ``json`` wire format (request and reply)."""

    id: int
    customer: str
    email: str
    priority: bool
    tags: list[str]
    items: list[Item]
    note: str


def _order(items: int, note: str) -> Order:
    lines = [Item(f"sku-{i:05d}", i + 1, 2.5 * (i + 1)) for i in range(items)]
    return Order(4242, "Ada Lovelace", "ada@example.org", True, ["bulk", "express"], lines, note)


@cache
def json_message(size: int) -> bytes:
    """The JSON of an :class:`Order` of exactly ``size`` bytes (as many items as fit, then the
    ``note`` pads), as ``msgspec.json.encode`` writes it; at least the size of an empty order."""
    items = 0
    while len(msgspec.json.encode(_order(items + 1, ""))) <= size:
        items += 1
    bare = len(msgspec.json.encode(_order(items, "")))
    encoded = msgspec.json.encode(_order(items, payload(max(0, size - bare)).decode()))
    if size >= bare:
        assert len(encoded) == size, (len(encoded), size)
    return encoded


def frame(data: bytes, framing: Framing) -> bytes:
    """``data`` framed for the wire (a datagram is its own frame)."""
    if framing in ("line", "ping", "json"):
        return data + CRLF
    if framing == "prefix":
        return len(data).to_bytes(PREFIX_SIZE, "big") + data
    return data


def request_and_reply(size: int, framing: Framing, depth: int = 1) -> tuple[bytes, bytes]:
    """The bytes a client sends for ``depth`` pipelined requests, and the exact bytes expected.

    ``framing="ping"`` sends ``PING`` lines and expects ``+PONG`` lines (``size`` is ignored);
    ``framing="json"`` sends :func:`json_message` lines of ``size`` bytes, echoed.
    """
    if framing == "ping":
        return frame(PING, "line") * depth, frame(PONG, "line") * depth
    if framing == "json":
        one = frame(json_message(size), "json")
        return one * depth, one * depth
    one = frame(payload(size), framing)
    return one * depth, one * depth
