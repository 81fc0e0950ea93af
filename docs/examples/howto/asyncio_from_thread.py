"""Call back into the event loop from a worker thread with asyncio's API (asyncio, uvloop).

The same job as the ThreadsPortal example: from a worker thread, run a coroutine in the loop
and wait for its result (``asyncio.run_coroutine_threadsafe(...).result()``), and run a plain
callable in the loop thread (``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import server_framework as sf


class FromThreadHandler(sf.StreamRequestHandler[Any, Any]):
    async def square_later(self, value: int) -> int:
        await asyncio.sleep(0.01)
        return value * value

    def blocking_work(
        self, loop: asyncio.AbstractEventLoop, values: list[int], done: asyncio.Event
    ) -> list[int]:
        """Runs in a worker thread."""
        results = []
        for value in values:
            future = asyncio.run_coroutine_threadsafe(self.square_later(value), loop)
            results.append(future.result())  # blocks this thread, not the loop
        loop.call_soon_threadsafe(done.set)  # asyncio.Event is not thread-safe: set it there
        return results

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        values = yield
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        squares = await asyncio.to_thread(self.blocking_work, loop, values, done)
        await done.wait()
        await client.send_packet(squares)
