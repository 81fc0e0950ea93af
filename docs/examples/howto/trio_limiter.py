"""Bound your own blocking work with trio's API: a ``CapacityLimiter`` (trio only).

trio has no executor objects: its worker threads are shared and cached, and a limiter says
how many of them one kind of work may use at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from typing import Any

import trio

import server_framework as sf


def blocking_digest(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


class DigestHandler(sf.StreamRequestHandler[str, str]):
    limiter: trio.CapacityLimiter

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        # At most 4 digests at once, whatever trio's default limit (40 threads) allows.
        self.limiter = trio.CapacityLimiter(4)

    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        digest = await trio.to_thread.run_sync(blocking_digest, request, limiter=self.limiter)
        await client.send_packet(digest)
