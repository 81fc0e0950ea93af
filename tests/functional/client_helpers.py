"""Servers, handlers and protocols shared by the client tests (sync and async)."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any

from handlers import DatagramClient, DatagramRequestHandler, StreamClient, StreamRequestHandler
from protocols import (
    DatagramProtocol,
    JSONSerializer,
    LengthPrefixFramer,
    MsgPackSerializer,
    StreamProtocol,
)
from server_framework.servers import (
    AsyncTCPServer,
    AsyncUDPServer,
    AsyncUnixDatagramServer,
    AsyncUnixStreamServer,
)

JSON_LINES = StreamProtocol(JSONSerializer())
MSGPACK_FRAMES = StreamProtocol(MsgPackSerializer(), LengthPrefixFramer())
JSON_DATAGRAMS = DatagramProtocol(JSONSerializer())
MSGPACK_DATAGRAMS = DatagramProtocol(MsgPackSerializer())
STREAM_PROTOCOLS = {"json": JSON_LINES, "msgpack": MSGPACK_FRAMES}
DATAGRAM_PROTOCOLS = {"json": JSON_DATAGRAMS, "msgpack": MSGPACK_DATAGRAMS}


def stream_server(
    kind: str, tmp_dir: str, handler: Any, protocol: Any = JSON_LINES, **options: Any
) -> Any:
    if kind == "tcp":
        return AsyncTCPServer("127.0.0.1", 0, protocol, handler, **options)
    return AsyncUnixStreamServer(os.path.join(tmp_dir, "server.sock"), protocol, handler, **options)


def datagram_server(kind: str, tmp_dir: str, handler: Any, protocol: Any = JSON_DATAGRAMS) -> Any:
    if kind == "udp":
        return AsyncUDPServer("127.0.0.1", 0, protocol, handler)
    return AsyncUnixDatagramServer(os.path.join(tmp_dir, "server.sock"), protocol, handler)


class Burst(StreamRequestHandler[Any, Any]):
    """Answers ``{"count": n, "close": bool}`` with the numbers 0..n-1, then closes if asked."""

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        if client.state.get("close"):
            return  # before the first yield: the server closes the connection
        request = yield
        for i in range(request["count"]):
            await client.send_packet(i)
        # Not `await client.aclose()`: on trio that path can lose the replies (see the report).
        client.state["close"] = request["close"]


class BadThenGood(StreamRequestHandler[str, str]):
    """Speaks text lines: answers each line with a line that is not JSON, then the line itself."""

    async def handle(self, client: StreamClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        await client.send_packet("{not json")
        await client.send_packet(request)


class DatagramBadThenGood(DatagramRequestHandler[str, str]):
    async def handle(self, client: DatagramClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        await client.send_packet("{not json")
        await client.send_packet(request)
