"""Start tasks from a worker thread and cancel them, with trio's API (trio only).

trio has no "start a task and give me a future" call: the thread starts tasks in a nursery
(``trio.from_thread.run_sync(nursery.start_soon, ...)``), wraps each in a `trio.CancelScope`
to be able to cancel it (``trio.from_thread.run_sync(scope.cancel)``), and collects results
through a queue. The nursery makes sure no task outlives the request.
"""

from __future__ import annotations

import collections
import queue
from collections.abc import AsyncGenerator
from typing import Any

import trio

import server_framework as sf

#: How long each replica takes to answer, in seconds.
REPLICAS = {"near": 0.01, "far": 5.0, "farther": 10.0}


class HedgingHandler(sf.StreamRequestHandler[str, Any]):
    def __init__(self) -> None:
        # Touched only in the trio thread, so no lock is needed.
        self.wins: collections.Counter[str] = collections.Counter()
        self.cancelled: list[str] = []

    async def query(self, replica: str, key: str) -> str:
        """Runs in the event loop, as a task started from the worker thread."""
        try:
            await trio.sleep(REPLICAS[replica])
        except trio.Cancelled:
            self.cancelled.append(replica)
            raise
        return f"{key}@{replica}"

    def record_win(self, replica: str) -> None:
        """Runs in the trio thread."""
        self.wins[replica] += 1

    def hedged_lookup(self, nursery: trio.Nursery, key: str) -> dict[str, Any]:
        """Runs in a worker thread: ask every replica at once, keep the first answer."""
        answers: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

        async def ask(replica: str, scope: trio.CancelScope) -> None:
            with scope:
                answers.put((replica, await self.query(replica, key)))

        scopes = {replica: trio.CancelScope() for replica in REPLICAS}
        for replica, scope in scopes.items():
            trio.from_thread.run_sync(nursery.start_soon, ask, replica, scope)
        winner, value = answers.get(timeout=30)
        for replica, scope in scopes.items():
            if replica != winner:
                trio.from_thread.run_sync(scope.cancel)  # cancels that task
        trio.from_thread.run_sync(self.record_win, winner)
        return {"value": value, "cancelled": len(scopes) - 1}

    async def handle(self, client: sf.StreamClient[Any]) -> AsyncGenerator[None, str]:
        key = yield
        async with trio.open_nursery() as nursery:
            reply = await trio.to_thread.run_sync(self.hedged_lookup, nursery, key)
        await client.send_packet(reply)
