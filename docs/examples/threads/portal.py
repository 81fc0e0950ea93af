"""Call back into the event loop from worker threads with a ThreadsPortal.

From a worker thread, the portal can run a coroutine in the loop and wait for its result
(``run_coroutine``), run a plain callable in the loop thread (``run_sync``, e.g. to set an
event), or start tasks in the loop without waiting (``run_coroutine_soon``), collecting their
results with ``concurrent.futures.as_completed``; cancelling such a future cancels its task.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from typing import Any

import server_framework as sf


class PortalHandler(sf.StreamRequestHandler[Any, Any]):
    backend: sf.AsyncBackend
    portal: sf.ThreadsPortal

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        self.backend = server.backend()
        self.portal = await exit_stack.enter_async_context(self.backend.create_threads_portal())

    async def square_later(self, value: int) -> int:
        await self.backend.sleep(0.01)
        return value * value

    def blocking_work(self, values: list[int], done: Any) -> list[int]:
        """Runs in a worker thread."""
        portal = self.portal
        portal.run_coroutine(self.backend.sleep, 0.01)  # a coroutine in the loop; blocks until done
        futures = [
            portal.run_coroutine_soon(self.square_later, v) for v in values
        ]  # tasks in the loop
        results = sorted(f.result() for f in concurrent.futures.as_completed(futures))
        portal.run_sync(done.set)  # a plain callable in the loop thread
        return results

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        values = yield
        done = self.backend.create_event()
        squares = await self.backend.run_in_thread(self.blocking_work, values, done)
        await done.wait()
        await client.send_packet(squares)
