"""The bytes on the wire: the same request bytes for every server, and the replies expected.

Every server under test speaks three wire formats, chosen by ``--workload``:

- ``line``: frames end with ``\\r\\n``. A frame ``PING`` is answered ``+PONG`` (so that
  ``redis-benchmark -t ping_inline`` can drive it), any other frame is echoed.
- ``prefix``: frames start with a 4-byte big-endian payload length; every frame is echoed.
- ``udp``: every datagram is echoed (``dnsperf`` counts the echo of its query as an answer).
"""

from __future__ import annotations

from typing import Final, Literal

Framing = Literal["line", "prefix", "udp", "ping"]

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


def frame(data: bytes, framing: Framing) -> bytes:
    """``data`` framed for the wire (a datagram is its own frame)."""
    if framing in ("line", "ping"):
        return data + CRLF
    if framing == "prefix":
        return len(data).to_bytes(PREFIX_SIZE, "big") + data
    return data


def request_and_reply(size: int, framing: Framing, depth: int = 1) -> tuple[bytes, bytes]:
    """The bytes a client sends for ``depth`` pipelined requests, and the exact bytes expected.

    ``framing="ping"`` sends ``PING`` lines and expects ``+PONG`` lines (``size`` is ignored).
    """
    if framing == "ping":
        return frame(PING, "line") * depth, frame(PONG, "line") * depth
    one = frame(payload(size), framing)
    return one * depth, one * depth
