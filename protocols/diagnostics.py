"""Diagnostics: what a peer's bytes look like when they cannot be framed or decoded.

When the two ends of a connection disagree (one speaks TLS and the other does not; one frames
lines and the other length prefixes; an HTTP client, or a load balancer's PROXY header, on a
port that expects neither), the only symptom is bytes that make no sense: a length header
announcing two gigabytes, a line that never ends, a message that does not deserialize.
:func:`likely_cause` looks at the first bytes and names the likely cause, and the fix.

The framers put its answer in their errors ("... (hint: ...)" instead of "raise
max_frame_size"), the servers in their log lines, the clients in their errors. Sans-IO, and
called only when an error is being built: a few comparisons on at most 64 bytes, never on the
path of a good message.

Example::

    from protocols.diagnostics import likely_cause

    likely_cause(b'{"id": 1}\\n', framing="length-prefix")
    # 'the peer sends text (JSON lines?) to a length-prefixed endpoint: ...'
    likely_cause(b'{"id": 1}\\n', framing="line")          # None: nothing wrong with it
    likely_cause(b"\\x16\\x03\\x01\\x02\\x00\\x01\\x00", peer="the client")
    # 'the client speaks TLS (these bytes are a TLS ClientHello) and this end does not: ...'
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["SNIFF_SIZE", "likely_cause"]

#: How many leading bytes :func:`likely_cause` looks at (the excerpt errors quote is as long).
SNIFF_SIZE: Final = 64

#: The framings :func:`likely_cause` knows the mismatches of.
Framing = Literal["line", "length-prefix"]

# TLS record content types: change_cipher_spec, alert, handshake, application_data. A record
# header is the type, then the version (major 3, minor 0 to 4), then a 2-byte length.
_TLS_RECORDS: Final = {
    0x14: "a TLS record",
    0x15: "a TLS alert",
    0x16: "a TLS handshake",
    0x17: "a TLS record",
}
_TLS_HANDSHAKES: Final = {1: "a TLS ClientHello", 2: "a TLS ServerHello"}
_HTTP_METHODS: Final = (
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * HTTP/2",  # the HTTP/2 connection preface
)
_PROXY_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
# Bytes that never occur in text (JSON, lines of words): NUL and the other C0 controls but
# tab, line feed, vertical tab, form feed and carriage return; DEL.
_BINARY: Final = frozenset(range(0x09)) | frozenset(range(0x0E, 0x20)) | {0x7F}
_TEXT_START: Final = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_SAME_FRAMING: Final = "use the same framing on both sides"


def likely_cause(
    data: bytes | bytearray | memoryview,
    *,
    framing: Framing | None = None,
    delimiter: bytes = b"\n",
    peer: str = "the peer",
) -> str | None:
    """Name the likely cause of bytes that could not be framed or decoded, or return None.

    Recognised whatever the framing: a TLS record (a ClientHello sent to a plaintext server, an
    alert or ServerHello received by a plaintext client), an HTTP request or response, a PROXY
    protocol header (v1 or v2), an SSH banner. With ``framing="length-prefix"``: a length
    header that is text (a JSON document, a line of words). With ``framing="line"``: binary
    data (control bytes: length-prefixed frames, a binary serializer), or lines that end with
    a newline where ``delimiter`` is something else. Ordinary text on a line framer, or a
    binary length header that is merely large, gives None: nothing points elsewhere.

    Args:
        data: The first bytes of the frame (or of the stream) in question; only the first
            :data:`SNIFF_SIZE` are looked at.
        framing: How this end frames the stream: ``"line"``, ``"length-prefix"``, or None
            (datagrams, a fixed size, or unknown: only the foreign protocols are recognised).
        delimiter: This end's line delimiter (with ``framing="line"``).
        peer: What to call the other end in the answer: ``"the client"``, ``"the server"``.

    Returns:
        One sentence: the cause, then after a colon what to do; or None.

    Example::

        likely_cause(b"GET / HTTP/1.1\\r\\n", peer="the client")
        # 'the client speaks HTTP (an HTTP GET request) and this end does not: ...'
    """
    head = bytes(data[:SNIFF_SIZE])
    if not head:
        return None
    cause = _foreign_protocol(head, peer)
    if cause is not None:
        return cause
    if framing == "length-prefix":
        return _text_on_length_prefix(head, peer)
    if framing == "line":
        return _binary_on_lines(head, peer, delimiter)
    return None


def _foreign_protocol(head: bytes, peer: str) -> str | None:
    record = _TLS_RECORDS.get(head[0])
    version_ok = len(head) >= 2 and head[1] == 0x03 and (len(head) < 3 or head[2] <= 4)
    if record is not None and version_ok:
        if head[0] == 0x16 and len(head) >= 6:
            record = _TLS_HANDSHAKES.get(head[5], record)
        return (
            f"{peer} speaks TLS (these bytes are {record}) and this end does not: use TLS on "
            "both sides or on neither"
        )
    if head.startswith((b"HTTP/1.", b"HTTP/2")):
        return (
            f"{peer} speaks HTTP (an HTTP response) and this end does not: check the address and "
            "port it connects to"
        )
    for method in _HTTP_METHODS:
        if head.startswith(method):
            name = method.split(b" ")[0].decode()
            what = "the HTTP/2 preface" if name == "PRI" else f"an HTTP {name} request"
            return (
                f"{peer} speaks HTTP ({what}) and this end does not: check the address and port "
                "it connects to (an HTTP health check needs an HTTP port)"
            )
    if head.startswith((b"PROXY ", _PROXY_V2_SIGNATURE)):
        version = "v1" if head[0] == ord("P") else "v2"
        return (
            f"{peer} sends a PROXY protocol {version} header (a load balancer's?) and this end "
            "does not expect one: enable proxy_protocol on this server, or turn the header off "
            "at the load balancer"
        )
    if head.startswith(b"SSH-"):
        return f"{peer} speaks SSH and this end does not: check the address and port"
    return None


def _text_on_length_prefix(head: bytes, peer: str) -> str | None:
    # A big-endian length header of a frame under a few MiB starts with a zero byte; one that
    # reads as text (at least its first 4 bytes, or all of a shorter stream) is not a header.
    start = head[:4]
    if not all(byte in _TEXT_START for byte in start):
        return None
    json = start[0] in b'{["'
    what = "text (JSON lines?)" if json else "text (lines?)"
    return (
        f"{peer} sends {what} to a length-prefixed endpoint: the length header reads as text "
        f"({head[:16]!r}); {_SAME_FRAMING} (a LineFramer there?)"
    )


def _binary_on_lines(head: bytes, peer: str, delimiter: bytes) -> str | None:
    if any(byte in _BINARY for byte in head):
        return (
            f"{peer} may be sending length-prefixed frames or other binary data to a "
            f"line-framed endpoint (control bytes: {head[:16]!r}); "
            f"{_SAME_FRAMING}"
        )
    if delimiter != b"\n" and b"\n" in head and delimiter not in head:
        return (
            f"{peer}'s lines seem to end with b'\\n' where this end expects {delimiter!r}: use "
            "the same delimiter on both sides"
        )
    return None
