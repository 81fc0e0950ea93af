"""Start tasks from a worker thread and cancel them, with asyncio's API (asyncio, uvloop).

``asyncio.run_coroutine_threadsafe`` starts a task and returns a `concurrent.futures.Future`;
cancelling it cancels the task. ``loop.call_soon_threadsafe`` schedules a plain callable.
Unlike a ThreadsPortal, nothing tracks these tasks: one still running when the server stops
is not waited for, and calling into a closed loop raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import AsyncGenerator
from typing import Any

import server_framework as sf

#: How long each replica takes to answer, in seconds.
REPLICAS = {"near": 0.01, "far": 5.0, "farther": 10.0}


class HedgingHandler(sf.StreamRequestHandler[str, Any]):
    def __init__(self) -> None:
        # Touched only in the loop thread, so no lock is needed.
        self.wins: collections.Counter[str] = collections.Counter()
        self.cancelled: list[str] = []

    async def query(self, replica: str, key: str) -> str:
        """Runs in the event loop, as a task started from the worker thread."""
        try:
            await asyncio.sleep(REPLICAS[replica])
        except asyncio.CancelledError:
            self.cancelled.append(replica)
            raise
        return f"{key}@{replica}"

    def record_win(self, replica: str) -> None:
        """Runs in the event loop thread."""
        self.wins[replica] += 1

    def hedged_lookup(self, loop: asyncio.AbstractEventLoop, key: str) -> dict[str, Any]:
        """Runs in a worker thread: ask every replica at once, keep the first answer."""
        futures = {
            asyncio.run_coroutine_threadsafe(self.query(replica, key), loop): replica
            for replica in REPLICAS
        }
        done, pending = concurrent.futures.wait(
            futures, timeout=30, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in pending:
            future.cancel()  # cancels that task in the loop
        first = next(iter(done))
        loop.call_soon_threadsafe(self.record_win, futures[first])
        return {"value": first.result(), "cancelled": len(pending)}

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, str]:
        key = yield
        loop = asyncio.get_running_loop()
        reply = await asyncio.to_thread(self.hedged_lookup, loop, key)
        await client.send_packet(reply)
