"""Flow control of an ``asyncio.Protocol``: one helper for the servers' and the clients' streams.

Writing: ``transport.write`` sends at once when the socket has room and buffers the rest; the
transport calls the protocol's ``pause_writing`` when its buffer passes the high-water mark and
``resume_writing`` when it falls below the low-water mark. The protocol forwards both to its
`WriteFlow`; a sender awaits `WriteFlow.wait` only while paused, on one future shared by every
blocked sender (shielded, so that cancelling one sender does not cancel the others' wait).

Reading: the protocol pauses reading once more than `READ_HIGH_WATER` received bytes wait to be
handled (a peer that sends faster than we consume), and resumes once the consumer wants more.

Imported only by the asyncio/uvloop transports of ``servers`` and ``clients``.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Final

__all__ = ["BATCH_FULL", "READ_HIGH_WATER", "Flush", "WriteFlow"]

#: Pause reading while this many received bytes wait to be handled; resume once the backlog is
#: consumed. asyncio's default write high-water mark, so both directions hold alike.
READ_HIGH_WATER: Final = 64 * 1024


class Flush(enum.Enum):
    """What a stream connection's batch returns instead of stepping the handler when its
    transport is over its high-water mark: wait for the transport to drain, then go on."""

    BATCH_FULL = "batch full"


BATCH_FULL: Final = Flush.BATCH_FULL


class WriteFlow:
    """Whether a transport's writing is paused, and the senders waiting for it to resume.

    It holds no reference to its protocol (a callback would make the two a reference cycle,
    freed only by the garbage collector, for every connection).

    Args:
        loop: The loop of the transport.
    """

    __slots__ = ("_loop", "_waiter", "paused", "stopped")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        #: True between the transport's ``pause_writing`` and ``resume_writing``.
        self.paused = False
        #: True once writing is over (connection lost or closed): see `stop`.
        self.stopped = False

    def pause(self) -> None:
        """The transport's buffer passed its high-water mark: senders wait from now on."""
        self.paused = True

    def resume(self) -> None:
        """The transport's buffer fell below its low-water mark: wake the waiting senders."""
        self.paused = False
        self.wake()

    def stop(self) -> None:
        """Writing is over (the connection is lost or closed): waiting senders return, and
        their caller raises its own error."""
        self.stopped = True
        self.wake()

    def wake(self) -> None:
        """Wake every waiting sender."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Wait while writing is paused, until resumed or stopped (the caller checks which).

        Cancellation: only this caller's wait is cancelled; the shared future stays.
        """
        while self.paused and not self.stopped:
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = self._loop.create_future()
            await asyncio.shield(waiter)
