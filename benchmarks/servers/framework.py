"""server_framework under test, through its public API only.

``--handler echo``: ``EchoHandler`` (stream) and ``DatagramEchoHandler`` (UDP); on the ``line``
workload, the same one-generator loop as ``EchoHandler`` that also answers ``PING`` with
``+PONG`` (redis-benchmark's inline ping). ``--handler rr``: a minimal
``RequestResponseHandler`` (``respond`` returns the reply). For both, logging is filtered at
WARNING, as a production server would run.

``--handler user``: the handler a new user writes from the docs (``handlers``' module docstring,
the quickstart, the UDP tutorial): a ``StreamRequestHandler`` / ``DatagramRequestHandler`` whose
``handle`` takes one request (``request = yield``), answers it and returns, so the framework
starts a new generator for the next request; and logging left as the framework sets it up by
default (nothing configured).

``--workload json`` (besides ``line``, ``prefix``, ``udp``): ``\\r\\n``-terminated JSON lines
decoded by ``JSONSerializer(type=Order)`` into :class:`benchmarks.messages.Order` and answered
with the same Struct.

The ``READY`` line also says which engine the framework runs (``server_framework.ENGINE``, or
``server_framework.engine.ENGINE``: ``"compiled"`` or ``"pure Python"``;
``SERVER_FRAMEWORK_PURE_PYTHON=1`` forces the latter).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from typing import Any

import structlog

import server_framework
from benchmarks.messages import CRLF, PING, PONG, Order
from benchmarks.servers._common import WARN_BLOCKED_ENV, parse_args, ready
from handlers import (
    DatagramClient,
    DatagramEchoHandler,
    DatagramRequestHandler,
    EchoHandler,
    RequestResponseHandler,
    StreamClient,
    StreamRequestHandler,
)
from protocols import (
    BytesSerializer,
    DatagramProtocol,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    StreamProtocol,
)
from server_framework.backend import run
from server_framework.servers import AsyncTCPServer, AsyncUDPServer


def _engine() -> str:
    """Which engine the framework chose at import: ``server_framework.ENGINE``, else
    ``server_framework.engine.ENGINE``; a framework without either has only the pure-Python one.
    """
    engine = getattr(server_framework, "ENGINE", None)
    if engine is None:
        try:
            from server_framework.engine import ENGINE as engine  # noqa: PLC0415
        except ImportError:
            engine = "pure Python"
    return str(engine)


#: Which engine runs: ``"compiled"`` or ``"pure Python"``.
ENGINE: str = _engine()


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


class UserHandler(StreamRequestHandler[Any, Any]):
    """As the docs write it: one request, one answer, return (``PING`` gets ``+PONG``)."""

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        if request == PING:
            await client.send_packet(PONG)
        else:
            await client.send_packet(request)


class UserDatagramHandler(DatagramRequestHandler[Any, Any]):
    """As the UDP tutorial writes it: one datagram, its echo, return."""

    async def handle(self, client: DatagramClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        await client.send_packet(request)


def make_handler(handler_name: str, workload: str) -> Any:
    """The handler object of ``--handler`` for ``--workload``."""
    if handler_name == "rr":
        return PingEchoResponder()
    if handler_name == "user":
        return UserDatagramHandler() if workload == "udp" else UserHandler()
    if workload == "udp":
        return DatagramEchoHandler()
    return PingEchoHandler() if workload == "line" else EchoHandler()


def make_protocol(workload: str) -> Any:
    """The protocol of ``--workload``."""
    if workload == "udp":
        return DatagramProtocol(BytesSerializer())
    if workload == "json":
        return StreamProtocol(JSONSerializer(type=Order), LineFramer(CRLF))
    framer = LineFramer(CRLF) if workload == "line" else LengthPrefixFramer(4)
    return StreamProtocol(BytesSerializer(), framer)


async def serve(host: str, port: int, workload: str, handler_name: str) -> None:
    """Serve ``workload`` with the chosen handler until killed."""
    handler = make_handler(handler_name, workload)
    protocol = make_protocol(workload)
    server: AsyncTCPServer[Any, Any] | AsyncUDPServer[Any, Any]
    # The blocked-loop watchdog is on, as for every user, unless the harness turns it off:
    # --instructions does, since its heartbeat runs on time, not per request (under callgrind
    # a server runs ~50x slower, so its share of a request's instructions would depend on the
    # machine's load).
    options: dict[str, Any] = {}
    watchdog = os.environ.get(WARN_BLOCKED_ENV)
    if watchdog is not None:
        options["warn_blocked"] = float(watchdog)
    if workload == "udp":
        server = AsyncUDPServer(host, port, protocol, handler, **options)
    else:
        server = AsyncTCPServer(host, port, protocol, handler, **options)
    async with server:
        host_port = server.get_addresses()[0]
        assert isinstance(host_port, tuple)
        ready(host_port[1], engine=ENGINE)
        await server.serve_forever()


def main() -> None:
    """Command line."""
    args = parse_args(
        __doc__ or "",
        ("line", "prefix", "udp", "json"),
        loop=("uvloop", "asyncio", "trio"),
        handler=("echo", "rr", "user"),
    )
    if args.handler != "user":  # the user's server keeps the framework's logging defaults
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            cache_logger_on_first_use=True,
        )
    run(serve, args.host, args.port, args.workload, args.handler, backend=args.loop)


if __name__ == "__main__":
    main()
