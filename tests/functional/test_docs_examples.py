"""Every example under docs/examples/ is served to real clients here, on every loop it supports."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from protocols import JSONSerializer, StreamProtocol
from server_framework.servers import AsyncTCPServer

from server_helpers import in_thread, line_exchange, serving

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
JSON_LINES = StreamProtocol(JSONSerializer())


def load(relative: str) -> ModuleType:
    path = EXAMPLES / relative
    name = "docs_example_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("example", ["threads/run_in_thread.py", "threads/custom_executor.py"])
async def test_digest_examples(backend_name: str, example: str) -> None:
    handler = load(example).DigestHandler()
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        assert await in_thread(line_exchange, server.get_addresses()[0], ["a", "b"]) == [
            digest("a"),
            digest("b"),
        ]


async def test_asyncio_to_thread_example(backend_name: str) -> None:
    if backend_name == "trio":
        pytest.skip("asyncio.to_thread needs an asyncio loop (see trio_to_thread.py)")
    handler = load("threads/asyncio_to_thread.py").DigestHandler()
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        assert await in_thread(line_exchange, server.get_addresses()[0], ["x"]) == [digest("x")]


async def test_trio_to_thread_example(backend_name: str) -> None:
    if backend_name != "trio":
        pytest.skip("trio.to_thread needs trio (see asyncio_to_thread.py)")
    handler = load("threads/trio_to_thread.py").DigestHandler()
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        assert await in_thread(line_exchange, server.get_addresses()[0], ["x"]) == [digest("x")]


async def test_portal_example(backend_name: str) -> None:
    handler: Any = load("threads/portal.py").PortalHandler()
    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler)) as server:
        replies = await in_thread(line_exchange, server.get_addresses()[0], [[1, 2, 3], [4]])
    assert replies == [[1, 4, 9], [16]]
