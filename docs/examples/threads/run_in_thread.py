"""Run blocking work in a worker thread, with the backend API (the same code on every loop)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator

import server_framework as sf


def blocking_digest(data: str) -> str:
    """Stands for any blocking call: a file read, a C library, a synchronous database driver."""
    return hashlib.sha256(data.encode()).hexdigest()


class DigestHandler(sf.StreamRequestHandler[str, str]):
    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        digest = await client.backend().run_in_thread(blocking_digest, request)
        await client.send_packet(digest)
