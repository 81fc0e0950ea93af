"""Run blocking work in a worker thread with trio's own API (trio only)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator

import trio

import server_framework as sf


def blocking_digest(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


class DigestHandler(sf.StreamRequestHandler[str, str]):
    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[None, str]:
        request = yield
        digest = await trio.to_thread.run_sync(blocking_digest, request)
        await client.send_packet(digest)
