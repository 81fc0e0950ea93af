"""Deterministic cancellation for tests: cancel a block at a point chosen by the test.

Our cancel scopes cancel at a deadline only, and a deadline races with threads; these helpers
cancel a task at an exact moment instead, the structured way: a sibling task in the same task
group raises, which cancels the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from server_framework.backend import AsyncBackend


class _Stop(Exception):
    """Raised by the sibling task to cancel the body."""


async def cancel_when(
    backend: AsyncBackend,
    ready: Callable[[], Awaitable[object]],
    body: Callable[[], Awaitable[object]],
) -> None:
    """Run ``body()`` and cancel it as soon as ``await ready()`` returns.

    Returns once the body has unwound; an error from the body propagates (in a group).
    """

    async def stop() -> None:
        await ready()
        raise _Stop

    async def run_body() -> None:
        await body()

    try:
        async with backend.create_task_group() as tg:
            tg.start_soon(run_body)
            tg.start_soon(stop)
    except* _Stop:
        pass
