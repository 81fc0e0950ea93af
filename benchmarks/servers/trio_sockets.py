"""Baseline: trio's low-level sockets (``trio.socket``), one task per connection.

The plainest fast style: ``recv`` up to 64 KiB, split every complete frame of that read, build
the replies, send them with one ``send`` loop. Nothing is held per connection between reads
but the incomplete tail (a reused ``recv_into`` buffer would only add a copy here, and could not
be shared between tasks: trio checkpoints after each socket call).
"""

from __future__ import annotations

import socket

import trio

from benchmarks.messages import CRLF, PING, PONG, PREFIX_SIZE
from benchmarks.servers._common import parse_args, ready

PONG_LINE = PONG + CRLF
RECV_SIZE = 65536


def line_replies(data: bytes) -> tuple[bytes, bytes]:
    """The replies to the complete ``\\r\\n`` frames of ``data``, and the incomplete tail."""
    lines = data.split(CRLF)
    tail = lines.pop()
    return b"".join([PONG_LINE if line == PING else line + CRLF for line in lines]), tail


def prefix_replies(data: bytes) -> tuple[bytes, bytes]:
    """The replies (echoes) to the complete length-prefixed frames of ``data``, and the tail."""
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
    return b"".join(replies), data[pos:]


async def serve_connection(conn: trio.socket.SocketType, workload: str) -> None:
    """Answer every frame until the peer closes."""
    replies_of = line_replies if workload == "line" else prefix_replies
    with conn:
        pending = b""
        try:
            while True:
                data = await conn.recv(RECV_SIZE)
                if not data:
                    return
                replies, pending = replies_of(pending + data if pending else data)
                view = memoryview(replies)
                while view:
                    view = view[await conn.send(view) :]
        except OSError:
            return


async def serve(host: str, port: int, workload: str) -> None:
    """Accept and serve forever."""
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((host, port))
    listener.listen(4096)
    ready(listener.getsockname()[1])
    async with trio.open_nursery() as nursery:
        while True:
            conn, _ = await listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(serve_connection, conn, workload)


def main() -> None:
    """Command line."""
    args = parse_args(__doc__ or "", ("line", "prefix"))
    trio.run(serve, args.host, args.port, args.workload)


if __name__ == "__main__":
    main()
