"""The README's examples run as written: their handlers are served to real clients."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from protocols import JSONSerializer, StreamProtocol
from server_framework.servers import AsyncTCPServer

from server_helpers import LineClient, connect, in_thread, serving

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def readme() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    return namespace


async def test_greeter(backend_name: str, readme: dict[str, Any]) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, StreamProtocol(JSONSerializer()), readme["Greeter"]())

    def talk(address: Any) -> list[Any]:
        client = LineClient(connect(address))
        try:
            client.send({"name": "you"}, {})
            return [client.recv(), client.recv()]
        finally:
            client.close()

    async with serving(server):
        assert await in_thread(talk, server.get_addresses()[0]) == [
            {"hello": "you"},
            {"hello": "world"},
        ]


async def test_chat(backend_name: str, readme: dict[str, Any]) -> None:
    server = AsyncTCPServer("127.0.0.1", 0, StreamProtocol(JSONSerializer()), readme["Chat"]())

    def talk(address: Any) -> list[Any]:
        client = LineClient(connect(address))
        try:
            client.send_raw(b'{"a": 1}\nnot json\n')
            return [client.recv(), client.recv()]
        finally:
            client.close()

    async with serving(server):
        first, second = await in_thread(talk, server.get_addresses()[0])
    assert first == {"echo": {"a": 1}}
    assert "malformed JSON" in second["error"]


def test_main_is_runnable(readme: dict[str, Any]) -> None:
    assert callable(readme["main"])


def test_the_testing_kit_example_passes(readme: dict[str, Any]) -> None:
    readme["test_greeter"]()  # the README's own test: a server in a thread, a blocking client
