"""Use a thread pool of your own, sized for your blocking work, with AsyncExecutor."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any

import server_framework as sf


def blocking_digest(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


class DigestHandler(sf.StreamRequestHandler[str, str]):
    executor: sf.AsyncExecutor[ThreadPoolExecutor]

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        # The pool lives as long as the server; it is shut down when the server stops.
        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="digest")
        self.executor = await exit_stack.enter_async_context(
            sf.AsyncExecutor(pool, server.backend())
        )

    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        digest = await self.executor.run(blocking_digest, request)
        await client.send_packet(digest)
