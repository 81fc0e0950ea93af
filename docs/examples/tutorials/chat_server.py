"""Tutorial: a line-based chat server; every line a client sends goes to all the others.

Run it with ``python docs/examples/tutorials/chat_server.py``, then connect two or three
terminals with ``nc 127.0.0.1 9002`` (or ``chat_client.py``), type a name, then chat;
``/quit`` leaves.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator

import server_framework as sf


class ChatHandler(sf.StreamRequestHandler[str, str]):
    def __init__(self) -> None:
        # One handler object serves every connection, so what is on `self` is shared by all
        # of them: here, who is in the room. It is only touched from the event loop, so it
        # needs no lock.
        self.members: dict[sf.StreamClient[str], str] = {}  # connected client -> name

    async def on_connection(self, client: sf.StreamClient[str]) -> None:
        await client.send_packet("welcome! what is your name?")

    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, str]:
        # A new generator runs for every line.
        line = (yield).rstrip("\r")  # telnet ends lines with CRLF, nc with LF
        if line == "/quit":
            await client.send_packet("bye!")
            await client.aclose()  # then the server calls on_disconnection
            return
        name = self.members.get(client)
        if name is None:  # the first line is the client's name
            await self.join(client, line.strip())
        else:
            await self.broadcast(f"{name}: {line}", sender=client)

    async def join(self, client: sf.StreamClient[str], name: str) -> None:
        if not name or name in self.members.values():
            await client.send_packet("that name is empty or taken; another one?")
            return
        self.members[client] = name
        await client.send_packet(f"hello {name}! {len(self.members) - 1} other(s) here")
        await self.broadcast(f"* {name} joined", sender=client)

    async def on_disconnection(self, client: sf.StreamClient[str]) -> None:
        name = self.members.pop(client, None)
        if name is not None:
            await self.broadcast(f"* {name} left", sender=client)

    async def broadcast(self, line: str, sender: sf.StreamClient[str]) -> None:
        for member in list(self.members):  # a copy: members may leave while we send
            if member is sender or member.is_closing():
                continue
            try:
                await member.send_packet(line)
            except (sf.ClosedResourceError, sf.BrokenResourceError):
                pass  # it is leaving: its on_disconnection removes it


def make_server(host: str, port: int) -> sf.AsyncTCPServer[str, str]:
    # Text lines: StringSerializer (UTF-8) and the default LineFramer (b"\n").
    return sf.AsyncTCPServer(host, port, sf.StreamProtocol(sf.StringSerializer()), ChatHandler())


async def main() -> None:
    async with make_server("127.0.0.1", 9002) as server:
        print("chat server on", server.get_addresses())
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main, backend="trio" if "--trio" in sys.argv else None)
