"""Start tasks in the event loop from a worker thread, and cancel those you no longer need.

``portal.run_coroutine_soon`` starts a task in the loop and returns a
`concurrent.futures.Future` at once; cancelling that future cancels the task.
``portal.run_sync_soon`` schedules a plain callable in the loop thread without waiting for it.

The example asks three replicas for the same key at once and keeps the first answer ("hedged
requests"); the slower queries are cancelled.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from typing import Any

import server_framework as sf

#: How long each replica takes to answer, in seconds.
REPLICAS = {"near": 0.01, "far": 5.0, "farther": 10.0}


class HedgingHandler(sf.StreamRequestHandler[str, Any]):
    backend: sf.AsyncBackend
    portal: sf.ThreadsPortal

    def __init__(self) -> None:
        # Touched only in the loop thread, so no lock is needed.
        self.wins: collections.Counter[str] = collections.Counter()
        self.cancelled: list[str] = []

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        self.backend = server.backend()
        self.portal = await exit_stack.enter_async_context(self.backend.create_threads_portal())

    async def query(self, replica: str, key: str) -> str:
        """Runs in the event loop, as a task started from the worker thread."""
        try:
            await self.backend.sleep(REPLICAS[replica])
        except self.backend.get_cancelled_exc_class():
            self.cancelled.append(replica)
            raise  # always let a cancellation through
        return f"{key}@{replica}"

    def record_win(self, replica: str) -> None:
        """Runs in the event loop thread."""
        self.wins[replica] += 1

    def hedged_lookup(self, key: str) -> dict[str, Any]:
        """Runs in a worker thread: ask every replica at once, keep the first answer."""
        futures = {
            self.portal.run_coroutine_soon(self.query, replica, key): replica
            for replica in REPLICAS
        }
        done, pending = concurrent.futures.wait(
            futures, timeout=30, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in pending:
            future.cancel()  # cancels that task in the loop
        first = next(iter(done))
        self.portal.run_sync_soon(self.record_win, futures[first])  # fire and forget
        return {"value": first.result(), "cancelled": len(pending)}

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, str]:
        key = yield
        reply = await self.backend.run_in_thread(self.hedged_lookup, key)
        await client.send_packet(reply)
