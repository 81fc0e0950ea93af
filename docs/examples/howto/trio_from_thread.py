"""Call back into the event loop from a worker thread with trio's API (trio only).

A thread started by ``trio.to_thread.run_sync`` may call ``trio.from_thread.run`` (a coroutine
function, waited for) and ``trio.from_thread.run_sync`` (a plain callable, in the trio thread).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import trio

import server_framework as sf


class FromThreadHandler(sf.StreamRequestHandler[Any, Any]):
    async def square_later(self, value: int) -> int:
        await trio.sleep(0.01)
        return value * value

    def blocking_work(self, values: list[int], done: trio.Event) -> list[int]:
        """Runs in a worker thread started by trio.to_thread.run_sync."""
        results = [trio.from_thread.run(self.square_later, value) for value in values]
        trio.from_thread.run_sync(done.set)  # trio.Event is not thread-safe: set it there
        return results

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, Any]:
        values = yield
        done = trio.Event()
        squares = await trio.to_thread.run_sync(self.blocking_work, values, done)
        await done.wait()
        await client.send_packet(squares)
