"""server_framework under test, through its public API only.

``--handler echo``: ``EchoHandler`` (stream) and ``DatagramEchoHandler`` (UDP); on the ``line``
workload, the same one-generator loop as ``EchoHandler`` that also answers ``PING`` with
``+PONG`` (redis-benchmark's inline ping). ``--handler rr``: a minimal
``RequestResponseHandler`` (``respond`` returns the reply). Logging is filtered at WARNING, as a
production server would run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import structlog

from benchmarks.messages import CRLF, PING, PONG
from benchmarks.servers._common import parse_args, ready
from handlers import (
    DatagramEchoHandler,
    EchoHandler,
    RequestResponseHandler,
    StreamClient,
)
from protocols import (
    BytesSerializer,
    DatagramProtocol,
    LengthPrefixFramer,
    LineFramer,
    StreamProtocol,
)
from server_framework.backend import run
from server_framework.servers import AsyncTCPServer, AsyncUDPServer


class PingEchoHandler(EchoHandler):
    """``EchoHandler``'s loop, answering ``PING`` with ``+PONG``."""

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        send = client.send_packet
        while True:
            request = yield
            await send(PONG if request == PING else request)


class PingEchoResponder(RequestResponseHandler[bytes, bytes]):
    """The minimal request/response handler: ``+PONG`` to ``PING``, any other message echoed."""

    async def respond(self, request: bytes, client: Any) -> bytes:
        return PONG if request == PING else request


async def serve(host: str, port: int, workload: str, handler_name: str) -> None:
    """Serve ``workload`` with the chosen handler until killed."""
    server: AsyncTCPServer[Any, Any] | AsyncUDPServer[Any, Any]
    if workload == "udp":
        handler: Any = PingEchoResponder() if handler_name == "rr" else DatagramEchoHandler()
        server = AsyncUDPServer(host, port, DatagramProtocol(BytesSerializer()), handler)
    else:
        framer = LineFramer(CRLF) if workload == "line" else LengthPrefixFramer(4)
        if handler_name == "rr":
            handler = PingEchoResponder()
        else:
            handler = PingEchoHandler() if workload == "line" else EchoHandler()
        server = AsyncTCPServer(host, port, StreamProtocol(BytesSerializer(), framer), handler)
    async with server:
        host_port = server.get_addresses()[0]
        assert isinstance(host_port, tuple)
        ready(host_port[1])
        await server.serve_forever()


def main() -> None:
    """Command line."""
    args = parse_args(
        __doc__ or "",
        ("line", "prefix", "udp"),
        loop=("uvloop", "asyncio", "trio"),
        handler=("echo", "rr"),
    )
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    run(serve, args.host, args.port, args.workload, args.handler, backend=args.loop)


if __name__ == "__main__":
    main()
