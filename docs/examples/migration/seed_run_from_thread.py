"""EasyNetwork's how-to "Multithreading Integration In Servers", part 2, ported line by line.

From a worker thread back into the event loop with a ``ThreadsPortal``. The names kept from
EasyNetwork keep their signatures: ``AsyncExecutor(executor, backend)``, ``executor.backend()``,
``executor.wrapped``, ``backend.create_threads_portal()``, ``portal.run_coroutine``,
``portal.run_sync``, ``portal.run_coroutine_soon``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AsyncExitStack
from typing import Any

import server_framework as sf
from server_framework.backend import Event

Request = dict[str, Any]
Response = dict[str, Any]

#: The how-to waits one second; the tests a hundredth.
WAIT_SECONDS = 0.01


class BaseRunFromSomeThreadRequestHandler(sf.StreamRequestHandler[Request, Response]):
    async def service_init(
        self, exit_stack: AsyncExitStack, server: sf.AsyncTCPServer[Request, Response]
    ) -> None:
        # 4 worker threads for the demo
        self.executor = sf.AsyncExecutor(ThreadPoolExecutor(max_workers=4), server.backend())
        await exit_stack.enter_async_context(self.executor)

        # A portal, to run code in the event loop from other threads
        self.portal = server.backend().create_threads_portal()
        await exit_stack.enter_async_context(self.portal)


class RunCoroutineFromSomeThreadRequestHandler(BaseRunFromSomeThreadRequestHandler):
    async def handle(self, client: sf.StreamClient[Response]) -> AsyncGenerator[None, Request]:
        request: Request = yield

        response = await self.executor.run(self._data_processing, request)

        await client.send_packet(response)

    def _data_processing(self, request: Request) -> Response:
        # Back in the event loop for a while (the worker thread waits for it)
        backend = self.executor.backend()
        self.portal.run_coroutine(backend.sleep, WAIT_SECONDS)

        return {"slept_in_loop": request}


class RunSyncFromSomeThreadRequestHandler(BaseRunFromSomeThreadRequestHandler):
    async def handle(self, client: sf.StreamClient[Response]) -> AsyncGenerator[None, Request]:
        request: Request = yield

        event = client.backend().create_event()

        self.executor.wrapped.submit(self._blocking_wait, event)
        await event.wait()

        await client.send_packet({"event_set_from_thread": request})

    def _blocking_wait(self, event: Event) -> None:
        time.sleep(WAIT_SECONDS)

        # Set the flag in the loop's thread: events are not thread-safe
        self.portal.run_sync(event.set)


class SpawnTaskFromSomeThreadRequestHandler(BaseRunFromSomeThreadRequestHandler):
    async def handle(self, client: sf.StreamClient[Response]) -> AsyncGenerator[None, Request]:
        request: Request = yield

        results = await self.executor.run(self._blocking_wait)

        await client.send_packet({"request": request, "tasks": sorted(results)})

    def _blocking_wait(self) -> list[str]:
        sleep = self.executor.backend().sleep

        async def long_running_task(index: int) -> str:
            await sleep(WAIT_SECONDS)
            await sleep(index * WAIT_SECONDS)
            return f"Task {index} return value"

        # Spawn several tasks in the loop, and collect them as they finish
        futures = [self.portal.run_coroutine_soon(long_running_task, i) for i in range(1, 5)]
        return [future.result() for future in as_completed(futures)]
