"""EasyNetwork (a peer framework), written by us against its public API, doing the same job.

Its documented style: an ``AsyncTCPNetworkServer``/``AsyncUDPNetworkServer`` with a
``StreamProtocol``/``DatagramProtocol`` around a serializer, and a request handler whose
``handle`` is an async generator (here one generator loops for the whole connection, which is
cheaper than EasyNetwork restarting one per request). Serializers of raw bytes: a
``\\r\\n``-separated one on ``AutoSeparatedPacketSerializer`` (EasyNetwork's base for line
protocols), a 4-byte length-prefixed one with ``GeneratorStreamReader``, and an identity one for
datagrams. On uvloop the server runs EasyNetwork's asyncio backend in a uvloop loop. Connection
logging is off and standard logging is at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Generator

from easynetwork.protocol import DatagramProtocol, StreamProtocol
from easynetwork.serializers.abc import (
    AbstractIncrementalPacketSerializer,
    AbstractPacketSerializer,
)
from easynetwork.serializers.base_stream import AutoSeparatedPacketSerializer
from easynetwork.serializers.tools import GeneratorStreamReader
from easynetwork.servers import AsyncTCPNetworkServer, AsyncUDPNetworkServer
from easynetwork.servers.handlers import (
    AsyncDatagramClient,
    AsyncDatagramRequestHandler,
    AsyncStreamClient,
    AsyncStreamRequestHandler,
)

from benchmarks.messages import CRLF, PING, PONG, PREFIX_SIZE
from benchmarks.servers._common import parse_args, ready


class LineBytesSerializer(AutoSeparatedPacketSerializer[bytes, bytes]):
    """Raw bytes, one message per ``\\r\\n``-terminated line."""

    def __init__(self) -> None:
        super().__init__(separator=CRLF)

    def serialize(self, packet: bytes) -> bytes:
        return packet

    def deserialize(self, data: bytes) -> bytes:
        return data


class PrefixBytesSerializer(AbstractIncrementalPacketSerializer[bytes, bytes]):
    """Raw bytes behind a 4-byte big-endian length."""

    def incremental_serialize(self, packet: bytes) -> Generator[bytes]:
        yield len(packet).to_bytes(PREFIX_SIZE, "big") + packet

    def incremental_deserialize(self) -> Generator[None, bytes, tuple[bytes, bytes]]:
        reader = GeneratorStreamReader()
        header = yield from reader.read_exactly(PREFIX_SIZE)
        message = yield from reader.read_exactly(int.from_bytes(header, "big"))
        return message, reader.read_all()


class DatagramBytesSerializer(AbstractPacketSerializer[bytes, bytes]):
    """A datagram is its own message."""

    def serialize(self, packet: bytes) -> bytes:
        return packet

    def deserialize(self, data: bytes) -> bytes:
        return data


class EchoHandler(AsyncStreamRequestHandler[bytes, bytes]):
    """``+PONG`` to ``PING``, any other message echoed."""

    async def handle(self, client: AsyncStreamClient[bytes]) -> AsyncGenerator[None, bytes]:
        send = client.send_packet
        while True:
            request = yield
            await send(PONG if request == PING else request)


class DatagramEchoHandler(AsyncDatagramRequestHandler[bytes, bytes]):
    """Every datagram goes back to its sender."""

    async def handle(self, client: AsyncDatagramClient[bytes]) -> AsyncGenerator[None, bytes]:
        send = client.send_packet
        while True:
            request = yield
            await send(request)


async def serve(host: str, port: int, workload: str, backend: str) -> None:
    """Serve ``workload`` on EasyNetwork's ``backend`` ("asyncio" or "trio") until killed."""
    server: AsyncTCPNetworkServer[bytes, bytes] | AsyncUDPNetworkServer[bytes, bytes]
    if workload == "udp":
        server = AsyncUDPNetworkServer(
            host,
            port,
            DatagramProtocol(DatagramBytesSerializer()),
            DatagramEchoHandler(),
            backend=backend,  # type: ignore[arg-type]
        )
    else:
        serializer = LineBytesSerializer() if workload == "line" else PrefixBytesSerializer()
        server = AsyncTCPNetworkServer(
            host,
            port,
            StreamProtocol(serializer),
            EchoHandler(),
            backend=backend,  # type: ignore[arg-type]
            backlog=4096,
            log_client_connection=False,
        )
    async with server:
        await server.server_activate()
        ready(server.get_addresses()[0].port)
        await server.serve_forever()


def main() -> None:
    """Command line."""
    args = parse_args(__doc__ or "", ("line", "prefix", "udp"), loop=("uvloop", "asyncio", "trio"))
    logging.basicConfig(level=logging.WARNING)
    if args.loop == "trio":
        import trio  # noqa: PLC0415

        trio.run(serve, args.host, args.port, args.workload, "trio")
        return
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, args.workload, "asyncio"))


if __name__ == "__main__":
    main()
