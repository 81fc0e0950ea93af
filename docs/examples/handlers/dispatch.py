"""A key-value store whose commands are typed messages, routed to methods with DispatchHandler.

Each command is a msgspec Struct, and the protocol is their tagged union: the ``"op"`` field
says which Struct a message is, msgspec validates the rest while it parses::

    {"op": "put", "key": "a", "value": "1"}  ->  {"ok": true, "value": null}  (previous value)
    {"op": "get", "key": "a"}                ->  {"ok": true, "value": "1"}
    {"op": "delete", "key": "a"}             ->  {"ok": true, "value": "1"}   (removed value)
    {"op": "rename", "key": "a"}             ->  {"ok": false, "error": "invalid JSON ..."}

Run it with ``python dispatch.py`` and try ``nc localhost 9000``.
"""

from __future__ import annotations

from typing import Any

import msgspec

import server_framework as sf


# The commands: tag_field="op" and tag="put" make {"op": "put", ...} decode as a Put.
class Put(msgspec.Struct, tag_field="op", tag="put"):
    key: str
    value: str


class Get(msgspec.Struct, tag_field="op", tag="get"):
    key: str


class Delete(msgspec.Struct, tag_field="op", tag="delete"):
    key: str


# The replies.
class Ok(msgspec.Struct):
    value: str | None
    ok: bool = True


class Failed(msgspec.Struct):
    error: str
    ok: bool = False


Command = Put | Get | Delete
# One decoder for the union, built once: a message is decoded straight into its command class.
SERIALIZER = sf.JSONSerializer(type=Command)


class KeyValueHandler(sf.DispatchHandler[Command, Ok | Failed]):
    def __init__(self) -> None:
        # One store for the whole server (one handler object serves every connection).
        self.store: dict[str, str] = {}

    @sf.on(Put)
    async def put(self, command: Put, client: Any) -> Ok:
        previous = self.store.get(command.key)
        self.store[command.key] = command.value
        return Ok(previous)

    @sf.on(Get)
    async def get(self, command: Get, client: Any) -> Ok | Failed:
        if command.key not in self.store:
            return Failed(f"no such key: {command.key!r}")
        return Ok(self.store[command.key])

    @sf.on(Delete)
    async def delete(self, command: Delete, client: Any) -> Ok | Failed:
        if command.key not in self.store:
            return Failed(f"no such key: {command.key!r}")
        return Ok(self.store.pop(command.key))

    def error_response(self, message: str) -> Failed:
        # Unknown "op", a missing or mistyped field, malformed JSON: a reply in our protocol's
        # own shape, and the connection stays open.
        return Failed(message)


async def main() -> None:
    protocol = sf.StreamProtocol(SERIALIZER)
    async with sf.AsyncTCPServer("localhost", 9000, protocol, KeyValueHandler()) as server:
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main)
