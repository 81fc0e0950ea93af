"""Flow control of an ``asyncio.Protocol``, one helper for the servers' and the clients' streams.

Writing: ``transport.write`` sends at once when the socket has room and buffers the rest; the
transport calls ``pause_writing`` when its buffer passes the high-water mark and
``resume_writing`` when it falls below the low-water mark. A sender awaits only while paused,
on one future shared by every blocked sender (shielded, so that cancelling one sender does not
cancel the others' wait).

Reading: ``pause_reading`` once more than `READ_HIGH_WATER` received bytes wait to be handled
(a peer that sends faster than we consume), ``resume_reading`` once the consumer wants more.

Imported only by the asyncio/uvloop transports of ``servers`` and ``clients``.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["READ_HIGH_WATER", "FlowControl"]

#: Pause reading while this many received bytes wait to be handled; resume once the backlog is
#: consumed. asyncio's default write high-water mark, so both directions hold alike.
READ_HIGH_WATER: Final = 64 * 1024


class FlowControl(asyncio.Protocol):
    """Write pausing and read pausing: the flow-control half of an ``asyncio.Protocol``.

    The class using it declares the slots ``_loop``, ``_transport``, ``_write_paused``,
    ``_drain_waiter`` and ``_reading_paused`` (mixins cannot add slots to a slotted class),
    sets them to the loop, None, False, None and False, and defines `_write_stopped`.
    """

    __slots__ = ()

    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport | None
    _write_paused: bool
    _drain_waiter: asyncio.Future[None] | None
    _reading_paused: bool

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark: senders wait from now on."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer fell below its low-water mark: wake the waiting senders."""
        self._write_paused = False
        self._wake_drain()

    def _write_stopped(self) -> bool:
        """True once writing is over (connection lost or closed): waiting senders give up."""
        raise NotImplementedError

    def _wake_drain(self) -> None:
        """Wake every sender waiting in `_wait_drained` (on resume, loss or close)."""
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_drained(self) -> None:
        """Wait while writing is paused, until resumed or stopped (the caller checks which).

        Cancellation: only this caller's wait is cancelled; the shared future stays.
        """
        while self._write_paused and not self._write_stopped():
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await asyncio.shield(waiter)

    def _pause_reading_over(self, buffered: int) -> None:
        """Pause reading if more than `READ_HIGH_WATER` bytes wait to be handled."""
        if buffered > READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        """Resume reading if it was paused (the consumer wants more)."""
        if self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
