"""Use a thread pool of your own with asyncio's API: ``loop.run_in_executor`` (asyncio, uvloop)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any

import server_framework as sf


def blocking_digest(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


class DigestHandler(sf.StreamRequestHandler[str, str]):
    pool: ThreadPoolExecutor

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="digest")
        # shutdown() blocks until running calls end: run it in a thread, not in the loop.
        exit_stack.push_async_callback(asyncio.to_thread, self.pool.shutdown)

    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        loop = asyncio.get_running_loop()
        digest = await loop.run_in_executor(self.pool, blocking_digest, request)
        await client.send_packet(digest)
