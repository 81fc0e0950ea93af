"""Baseline: asyncio streams (``start_server``, ``StreamReader``/``StreamWriter``), stock loop.

The idiomatic streams server: one coroutine per connection reading a frame at a time with
``readuntil``/``readexactly``, ``write`` then ``drain`` per reply.
"""

from __future__ import annotations

import asyncio
import contextlib

from benchmarks.messages import CRLF, PING, PONG, PREFIX_SIZE
from benchmarks.servers._common import parse_args, ready

PING_LINE = PING + CRLF
PONG_LINE = PONG + CRLF


async def serve_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``\\r\\n`` frames: ``PING`` gets ``+PONG``, anything else is echoed."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            line = await reader.readuntil(CRLF)
            writer.write(PONG_LINE if line == PING_LINE else line)
            await writer.drain()
    writer.close()


async def serve_prefixed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """4-byte big-endian length-prefixed frames, echoed."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            header = await reader.readexactly(PREFIX_SIZE)
            message = await reader.readexactly(int.from_bytes(header, "big"))
            writer.write(len(message).to_bytes(PREFIX_SIZE, "big") + message)
            await writer.drain()
    writer.close()


async def serve(host: str, port: int, workload: str) -> None:
    """Serve ``workload`` on ``host:port`` with the running loop, forever."""
    handler = serve_lines if workload == "line" else serve_prefixed
    # 1 MiB: the reader's buffer limit must exceed the largest frame (16 KiB).
    server = await asyncio.start_server(handler, host, port, backlog=4096, limit=1 << 20)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main(loop: str = "asyncio") -> None:
    """Command line of this module and of :mod:`benchmarks.servers.uvloop_streams`."""
    args = parse_args(__doc__ or "", ("line", "prefix"))
    loop_factory = None
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, args.workload))


if __name__ == "__main__":
    main()
