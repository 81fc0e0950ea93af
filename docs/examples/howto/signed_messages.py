"""Messages signed with a shared key: base64(payload + HMAC-SHA256(key, payload)).

Only holders of the key can produce a message the other end accepts; an altered, truncated or
forged message is a DeserializeError, and the handler never sees it. The payload is not
encrypted: use TLS for secrecy.
"""

from __future__ import annotations

import os
from typing import Any

import server_framework as sf


def load_key() -> bytes:
    """The shared key, from the environment (made once with ``Base64Wrapper.generate_key()``:
    ``python -c "import protocols; print(protocols.Base64Wrapper.generate_key().hex())"``)."""
    return bytes.fromhex(os.environ["APP_SIGNING_KEY"])


def signed_protocol(key: bytes) -> sf.StreamProtocol[Any, Any]:
    """MessagePack, signed, in base64 lines: both ends build the same protocol."""
    return sf.StreamProtocol(sf.Base64Wrapper(sf.MsgPackSerializer(), checksum=key))


def make_server(port: int = 9000) -> sf.AsyncTCPServer[Any, Any]:
    """An echo server that answers signed messages only (a bad one closes the connection)."""
    return sf.AsyncTCPServer("127.0.0.1", port, signed_protocol(load_key()), sf.EchoHandler())
