"""Baseline: a hand-written ``asyncio.Protocol`` on the stock asyncio loop.

The plainest fast style: ``data_received`` splits the complete frames out of what arrived, builds
each reply, and writes all the replies of one read with one ``transport.write``. The incomplete
tail waits in a ``bytes`` attribute for the next read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from benchmarks.messages import CRLF, PING, PONG, PREFIX_SIZE
from benchmarks.servers._common import parse_args, ready

PONG_LINE = PONG + CRLF


class LineProtocol(asyncio.Protocol):
    """``\\r\\n`` frames: ``PING`` gets ``+PONG``, anything else is echoed."""

    __slots__ = ("pending", "transport")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        lines = data.split(CRLF)
        self.pending = lines.pop()
        if lines:
            self.transport.write(
                b"".join([PONG_LINE if line == PING else line + CRLF for line in lines])
            )


class PrefixProtocol(asyncio.Protocol):
    """4-byte big-endian length-prefixed frames, echoed."""

    __slots__ = ("pending", "transport")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        replies = []
        pos = 0
        end = len(data)
        while end - pos >= PREFIX_SIZE:
            start = pos + PREFIX_SIZE
            stop = start + int.from_bytes(data[pos:start], "big")
            if stop > end:
                break
            message = data[start:stop]
            replies.append(len(message).to_bytes(PREFIX_SIZE, "big"))
            replies.append(message)
            pos = stop
        self.pending = data[pos:]
        if replies:
            self.transport.write(b"".join(replies))


async def serve(host: str, port: int, workload: str) -> None:
    """Serve ``workload`` on ``host:port`` with the running loop, forever."""
    factory: Callable[[], asyncio.Protocol] = LineProtocol if workload == "line" else PrefixProtocol
    server = await asyncio.get_running_loop().create_server(factory, host, port, backlog=4096)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main(loop: str = "asyncio") -> None:
    """Command line of this module and of :mod:`benchmarks.servers.uvloop_protocol`."""
    args = parse_args(__doc__ or "", ("line", "prefix"))
    loop_factory = None
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, args.workload))


if __name__ == "__main__":
    main()
