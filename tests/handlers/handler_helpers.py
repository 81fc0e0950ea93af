"""Helpers of the ready-made handler tests: build a TCP or UDP server, talk to it, load examples.

Built on ``server_helpers`` (tests/functional; ``conftest.py`` makes it importable): client
socket work is blocking code run in a worker thread, so it works the same on every loop.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from protocols import DatagramProtocol, JSONSerializer, Serializer, StreamProtocol
from server_framework.servers import AsyncTCPServer, AsyncUDPServer

from server_helpers import CLIENT_TIMEOUT, LineClient, connect

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def make_server(
    transport: str, handler: Any, serializer: Serializer[Any, Any] | None = None, **options: Any
) -> Any:
    """A TCP server (JSON lines) or a UDP server (one JSON message per datagram) on 127.0.0.1."""
    serializer = serializer if serializer is not None else JSONSerializer()
    if transport == "tcp":
        return AsyncTCPServer("127.0.0.1", 0, StreamProtocol(serializer), handler, **options)
    assert transport == "udp", transport
    return AsyncUDPServer("127.0.0.1", 0, DatagramProtocol(serializer), handler, **options)


class DatagramPeer:
    """A blocking UDP peer speaking one JSON message per datagram."""

    def __init__(self, address: Any) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(CLIENT_TIMEOUT)

    def send(self, *messages: Any) -> None:
        for message in messages:
            self.sock.sendto(json.dumps(message).encode(), self.address)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.address)

    def recv(self) -> Any:
        return json.loads(self.sock.recv(65536))

    def close(self) -> None:
        self.sock.close()


def open_client(transport: str, address: Any) -> Any:
    """A blocking client with ``send(*messages)``, ``send_raw``, ``recv()`` and ``close()``."""
    if transport == "tcp":
        return LineClient(connect(address))
    return DatagramPeer(address)


def exchange(transport: str, address: Any, messages: list[Any], replies: int) -> list[Any]:
    """Send ``messages`` (TCP: in one write, pipelined) and return ``replies`` replies."""
    with contextlib.closing(open_client(transport, address)) as client:
        client.send(*messages)
        return [client.recv() for _ in range(replies)]


def load_example(relative: str) -> ModuleType:
    """Import ``docs/examples/<relative>`` by path, as the docs show it."""
    path = EXAMPLES / relative
    name = "docs_example_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
