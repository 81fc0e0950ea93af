"""Run blocking work in a worker thread with asyncio's own API (asyncio and uvloop only)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator

import server_framework as sf


def blocking_digest(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


class DigestHandler(sf.StreamRequestHandler[str, str]):
    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        digest = await asyncio.to_thread(blocking_digest, request)
        await client.send_packet(digest)
