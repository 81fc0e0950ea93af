"""The "Coming from EasyNetwork" guide's examples: the seed how-to's handlers, ported, served.

Each handler is served over a real TCP socket by the testing kit, on every loop it supports,
and answers a request as the how-to says it does.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_docs_examples import load

import server_framework as sf
from server_framework.backend import BackendName
from server_framework.testing import serve_in_background

JSON_LINES: sf.StreamProtocol[Any, Any] = sf.StreamProtocol(sf.JSONSerializer())

IN_THREAD = load("migration/seed_run_in_thread.py")
FROM_THREAD = load("migration/seed_run_from_thread.py")

ANY_LOOP = [
    "RunInSomeThreadRequestHandlerWithClientBackend",
    "RunInSomeThreadRequestHandlerWithExecutor",
]


async def exchange(handler: Any, request: Any) -> Any:
    async with serve_in_background(handler, JSON_LINES) as served:
        return await served.client.request(request)


@pytest.mark.parametrize("name", ANY_LOOP)
async def test_run_in_thread_handlers(backend_name: BackendName, name: str) -> None:
    handler = getattr(IN_THREAD, name)()
    assert await exchange(handler, {"n": 1}) == {"processed": {"n": 1}}


async def test_the_asyncio_to_thread_handler(backend_name: BackendName) -> None:
    if backend_name == "trio":
        pytest.skip("asyncio.to_thread needs asyncio or uvloop")
    handler = IN_THREAD.RunInSomeThreadRequestHandlerAsyncIO()
    assert await exchange(handler, {"n": 2}) == {"processed": {"n": 2}}


async def test_the_trio_to_thread_handler(backend_name: BackendName) -> None:
    if backend_name != "trio":
        pytest.skip("trio.to_thread needs trio")
    handler = IN_THREAD.RunInSomeThreadRequestHandlerTrio()
    assert await exchange(handler, {"n": 3}) == {"processed": {"n": 3}}


async def test_run_coroutine_from_a_thread(backend_name: BackendName) -> None:
    handler = FROM_THREAD.RunCoroutineFromSomeThreadRequestHandler()
    assert await exchange(handler, {"n": 4}) == {"slept_in_loop": {"n": 4}}


async def test_run_sync_from_a_thread(backend_name: BackendName) -> None:
    handler = FROM_THREAD.RunSyncFromSomeThreadRequestHandler()
    assert await exchange(handler, {"n": 5}) == {"event_set_from_thread": {"n": 5}}


async def test_spawn_tasks_from_a_thread(backend_name: BackendName) -> None:
    handler = FROM_THREAD.SpawnTaskFromSomeThreadRequestHandler()
    assert await exchange(handler, {"n": 6}) == {
        "request": {"n": 6},
        "tasks": [f"Task {index} return value" for index in range(1, 5)],
    }
