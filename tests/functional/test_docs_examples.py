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
from server_framework.testing import serve_in_background

from server_helpers import CLIENT_TIMEOUT

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


async def exchange(handler: Any, messages: list[Any]) -> list[Any]:
    """Serve ``handler`` in this loop, send ``messages`` in one write, return the replies."""
    async with serve_in_background(handler, JSON_LINES, timeout=CLIENT_TIMEOUT) as served:
        await served.client.send_packets(messages)
        return [await served.client.recv_packet() for _ in messages]


@pytest.mark.parametrize("example", ["threads/run_in_thread.py", "threads/custom_executor.py"])
async def test_digest_examples(backend_name: str, example: str) -> None:
    handler = load(example).DigestHandler()
    assert await exchange(handler, ["a", "b"]) == [digest("a"), digest("b")]


async def test_asyncio_to_thread_example(backend_name: str) -> None:
    if backend_name == "trio":
        pytest.skip("asyncio.to_thread needs an asyncio loop (see trio_to_thread.py)")
    handler = load("threads/asyncio_to_thread.py").DigestHandler()
    assert await exchange(handler, ["x"]) == [digest("x")]


async def test_trio_to_thread_example(backend_name: str) -> None:
    if backend_name != "trio":
        pytest.skip("trio.to_thread needs trio (see asyncio_to_thread.py)")
    handler = load("threads/trio_to_thread.py").DigestHandler()
    assert await exchange(handler, ["x"]) == [digest("x")]


async def test_portal_example(backend_name: str) -> None:
    handler: Any = load("threads/portal.py").PortalHandler()
    assert await exchange(handler, [[1, 2, 3], [4]]) == [[1, 4, 9], [16]]
