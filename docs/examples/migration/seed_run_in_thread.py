"""EasyNetwork's how-to "Multithreading Integration In Servers", part 1, ported line by line.

Each class keeps the how-to's name and body; only the imports and the base classes' names
change (``AsyncStreamRequestHandler`` -> ``sf.StreamRequestHandler``, ``AsyncStreamClient`` ->
``sf.StreamClient``, ``easynetwork.lowlevel.futures.AsyncExecutor`` -> ``sf.AsyncExecutor``).
Requests and responses are JSON objects here, so that the tests can serve these handlers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any

import trio

import server_framework as sf

Request = dict[str, Any]
Response = dict[str, Any]

#: The how-to simulates one second of computing; the tests use a hundredth.
WORK_SECONDS = 0.01


class RunInSomeThreadRequestHandlerAsyncIO(sf.StreamRequestHandler[Request, Response]):
    async def handle(self, client: sf.StreamClient[Response]) -> AsyncGenerator[None, Request]:
        request: Request = yield

        response = await asyncio.to_thread(self._data_processing, request)

        await client.send_packet(response)

    def _data_processing(self, request: Request) -> Response:
        time.sleep(WORK_SECONDS)  # simulate long computing
        return {"processed": request}


class RunInSomeThreadRequestHandlerTrio(sf.StreamRequestHandler[Request, Response]):
    async def handle(self, client: sf.StreamClient[Response]) -> AsyncGenerator[None, Request]:
        request: Request = yield

        response = await trio.to_thread.run_sync(self._data_processing, request)

        await client.send_packet(response)

    def _data_processing(self, request: Request) -> Response:
        time.sleep(WORK_SECONDS)
        return {"processed": request}


class RunInSomeThreadRequestHandlerWithClientBackend(sf.StreamRequestHandler[Request, Response]):
    async def handle(self, client: sf.StreamClient[Response]) -> AsyncGenerator[None, Request]:
        request: Request = yield

        # Any loop: the backend of the connection's loop runs it in a bounded worker pool.
        response = await client.backend().run_in_thread(self._data_processing, request)

        await client.send_packet(response)

    def _data_processing(self, request: Request) -> Response:
        time.sleep(WORK_SECONDS)
        return {"processed": request}


class RunInSomeThreadRequestHandlerWithExecutor(sf.StreamRequestHandler[Request, Response]):
    async def service_init(
        self, exit_stack: AsyncExitStack, server: sf.AsyncTCPServer[Request, Response]
    ) -> None:
        # 4 worker threads for the demo
        self.executor = sf.AsyncExecutor(ThreadPoolExecutor(max_workers=4), server.backend())

        # Shut the executor down when the server stops
        await exit_stack.enter_async_context(self.executor)

    async def handle(self, client: sf.StreamClient[Response]) -> AsyncGenerator[None, Request]:
        request: Request = yield

        response = await self.executor.run(self._data_processing, request)

        await client.send_packet(response)

    def _data_processing(self, request: Request) -> Response:
        time.sleep(WORK_SECONDS)
        return {"processed": request}
