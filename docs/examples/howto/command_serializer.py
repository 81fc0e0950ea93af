"""A serializer of your own: text commands (``SET color blue``) as typed ``Command`` objects.

A serializer turns one message into one payload (``serialize``) and back (``deserialize``);
framing is someone else's job. Every decoding failure must be a `sf.DeserializeError` (the
server then throws it into the handler, which may answer it), and every encoding failure a
`sf.SerializeError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import NamedTuple

from netstring_framer import NetstringFramer

import server_framework as sf


class Command(NamedTuple):
    verb: str
    args: tuple[str, ...]


class CommandSerializer(sf.Serializer[str, Command]):
    """Receives ``VERB arg arg...`` as a `Command`; sends replies as plain text (UTF-8)."""

    __slots__ = ()

    def serialize(self, obj: str) -> bytes:
        if not isinstance(obj, str):
            raise sf.SerializeError(f"replies are str, got {type(obj).__name__}")
        return obj.encode()

    def deserialize(self, data: bytes) -> Command:
        try:
            words = data.decode().split()
        except UnicodeDecodeError as exc:
            raise sf.DeserializeError(f"not UTF-8: {exc.reason}", data) from None
        if not words:
            raise sf.DeserializeError("empty command", data)
        return Command(words[0].upper(), tuple(words[1:]))


class KeyValueHandler(sf.StreamRequestHandler[Command, str]):
    """``SET key value`` / ``GET key``, over netstrings."""

    def __init__(self) -> None:
        self.store: dict[str, str] = {}

    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, Command]:
        try:
            command = yield
        except sf.DeserializeError as error:  # a bad command; the stream is still in sync
            await client.send_packet(f"ERR {error.reason}")
            return
        match command:
            case Command("SET", (key, value)):
                self.store[key] = value
                await client.send_packet("OK")
            case Command("GET", (key,)):
                await client.send_packet(self.store.get(key, "(nil)"))
            case _:
                await client.send_packet(f"ERR unknown command {command.verb}")


PROTOCOL: sf.StreamProtocol[str, Command] = sf.StreamProtocol(
    CommandSerializer(), NetstringFramer()
)

# The client's side: it sends command lines as text and receives text.
CLIENT_PROTOCOL: sf.StreamProtocol[str, str] = sf.StreamProtocol(
    sf.StringSerializer(), NetstringFramer()
)
