"""Baseline: a hand-written ``asyncio.DatagramProtocol`` echo on the stock asyncio loop.

(The stock loop's UDP transport reads one datagram per loop iteration, which is what limits it.)
"""

from __future__ import annotations

import asyncio

from benchmarks.servers._common import parse_args, ready


class EchoProtocol(asyncio.DatagramProtocol):
    """Every datagram goes back to its sender."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def serve(host: str, port: int) -> None:
    """Echo datagrams on ``host:port`` with the running loop, forever."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(EchoProtocol, local_addr=(host, port))
    ready(transport.get_extra_info("sockname")[1])
    await asyncio.Event().wait()


def main(loop: str = "asyncio") -> None:
    """Command line of this module and of :mod:`benchmarks.servers.uvloop_datagram`."""
    args = parse_args(__doc__ or "", ("udp",))
    loop_factory = None
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
