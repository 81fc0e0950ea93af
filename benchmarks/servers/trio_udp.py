"""Baseline: a trio UDP socket echo (``recvfrom`` then ``sendto``, one task)."""

from __future__ import annotations

import socket

import trio

from benchmarks.servers._common import parse_args, ready


async def serve(host: str, port: int) -> None:
    """Echo datagrams forever."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((host, port))
    ready(sock.getsockname()[1])
    while True:
        data, address = await sock.recvfrom(65536)
        await sock.sendto(data, address)


def main() -> None:
    """Command line."""
    args = parse_args(__doc__ or "", ("udp",))
    trio.run(serve, args.host, args.port)


if __name__ == "__main__":
    main()
