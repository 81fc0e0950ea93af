"""The server program of the reliability suite, and the handlers it serves.

Run as ``python reliability_server.py SPEC_JSON``: it builds the servers SPEC describes, on the
loop it names, writes their bound ports (one line, space-separated) to SPEC's ``port_file`` and
prints the same line on stdout, serves until SIGTERM, then shuts the servers down (their grace
period applies) and exits 0. Progress marks ("ready", "stopping", "stopped", and whatever the
handlers note) are appended to the file named by ``$RELIABILITY_EVENTS``, so that a test can
follow the server without reading its stdout or stderr (some tests never read them).

SPEC (JSON)::

    {"backend": "asyncio" | "uvloop" | "trio",
     "logging": "json" | "json-debug" | "console" | "none",  # "none": configure nothing
     "rlimit_nofile": null | 64,             # set before anything is bound
     "port_file": "/tmp/.../ports",
     "servers": [{"transport": "tcp" | "unix" | "udp" | "unix-datagram",
                  "path": "...",             # Unix transports
                  "handler": "Echo",         # a class of this module
                  "handler_args": {...},
                  "protocol": "json-lines",  # a key of PROTOCOLS
                  "tls": null | {"cert": "...", "key": "..."},
                  "options": {...}}]}        # keyword options of the server class

The handlers are also TARGETs for ``python -m server_framework serve reliability_server:Echo``.
This module must not import pytest (it runs in the server processes).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import ssl
import sys
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog

from handlers import RecvParams, RequestResponseHandler, StreamClient, StreamRequestHandler
from protocols import (
    DatagramProtocol,
    JSONSerializer,
    LengthPrefixFramer,
    ProtocolError,
    StreamProtocol,
    StringSerializer,
    ZlibWrapper,
)
from server_framework import configure_logging, current_backend, run
from server_framework.servers import (
    AsyncTCPServer,
    AsyncUDPServer,
    AsyncUnixDatagramServer,
    AsyncUnixStreamServer,
)

logger = structlog.get_logger("reliability_server")

#: The reply of `KiloReply`: about 1 KiB once encoded.
KILO = "k" * 1000

PROTOCOLS: dict[str, Callable[[], Any]] = {
    "json-lines": lambda: StreamProtocol(JSONSerializer()),
    "json-length": lambda: StreamProtocol(JSONSerializer(), LengthPrefixFramer()),
    "zlib-json-length": lambda: StreamProtocol(ZlibWrapper(JSONSerializer()), LengthPrefixFramer()),
    "text-length": lambda: StreamProtocol(StringSerializer(), LengthPrefixFramer()),
    "json-datagram": lambda: DatagramProtocol(JSONSerializer()),
}


def note(event: str) -> None:
    """Append ``event`` (one line) to the events file, if there is one."""
    path = os.environ.get("RELIABILITY_EVENTS")
    if path:
        with open(path, "a") as events:
            events.write(event + "\n")


# -- handlers ------------------------------------------------------------------------------------


class Echo(RequestResponseHandler[Any, Any]):
    """Answers every request with itself (stream and datagram)."""

    async def respond(self, request: Any, client: Any) -> Any:
        return request


class KiloReply(RequestResponseHandler[Any, Any]):
    """Answers every request, whatever it is, with about 1 KiB."""

    async def respond(self, request: Any, client: Any) -> Any:
        return KILO


class Sleepy(RequestResponseHandler[Any, Any]):
    """``{"sleep": s}`` notes "request started", waits ``s`` seconds, then answers; others echo."""

    async def respond(self, request: Any, client: Any) -> Any:
        if isinstance(request, dict) and "sleep" in request:
            note("request started")
            await client.backend().sleep(request["sleep"])
        return request


class Flood(StreamRequestHandler[Any, Any]):
    """``{"count": n, "size": s}``: sends ``n`` replies of ``s`` characters with send_packet,
    back to back (one handler step); with ``"checkpoint": true``, a checkpoint after each.

    Notes ``flood sent <n>`` when done; a send that fails is noted (``send failed <type>:
    <message>``) and ends the request.
    """

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        payload = "f" * request["size"]
        backend = client.backend()
        try:
            for _ in range(request["count"]):
                await client.send_packet(payload)
                if request.get("checkpoint"):
                    await backend.checkpoint()
        except Exception as exc:
            note(f"send failed {type(exc).__name__}: {exc}")
            return
        note(f"flood sent {request['count']}")


class RequestTimeout(StreamRequestHandler[Any, Any]):
    """Asks for each request within ``timeout`` seconds (``RecvParams``); on expiry notes
    "request timeout", answers "timeout" and closes the connection. Requests are echoed."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[RecvParams, Any]:
        try:
            request = yield RecvParams(timeout=self.timeout)
        except TimeoutError:
            note("request timeout")
            await client.send_packet("timeout")
            await client.aclose()
            return
        await client.send_packet(request)


class Reached(RequestResponseHandler[Any, Any]):
    """Echo that notes "on_connection" for every connection that reaches the handler."""

    async def on_connection(self, client: Any) -> None:
        note("on_connection")

    async def respond(self, request: Any, client: Any) -> Any:
        return request


class LogsCommand(RequestResponseHandler[Any, Any]):
    """Logs every request (peer-controlled text) at WARNING, and answers "logged"."""

    async def respond(self, request: Any, client: Any) -> Any:
        logger.warning("unknown command", command=request)
        return "logged"

    async def on_bad_message(self, error: ProtocolError, client: Any) -> Any:
        raise error


class PeerCounter(RequestResponseHandler[Any, Any]):
    """A datagram handler that counts its live per-peer generators.

    ``"stats"`` answers ``{"live": ..., "max_live": ..., "dropped": ...}``; anything else is
    echoed. One generator runs per peer client, so ``max_live`` is the peer table's high mark.
    """

    def __init__(self) -> None:
        self.live = 0
        self.max_live = 0
        self.server: Any = None

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        self.server = server

    async def handle(self, client: Any) -> AsyncGenerator[None, Any]:
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        try:
            while True:
                try:
                    request = yield
                except ProtocolError:
                    continue
                if request == "stats":
                    await client.send_packet(
                        {
                            "live": self.live,
                            "max_live": self.max_live,
                            "dropped": self.server.dropped_datagrams,
                        }
                    )
                else:
                    await client.send_packet(request)
        finally:
            self.live -= 1

    async def respond(self, request: Any, client: Any) -> Any:  # pragma: no cover - unused
        return request


HANDLERS: dict[str, Callable[..., Any]] = {
    cls.__name__: cls
    for cls in (Echo, KiloReply, Sleepy, Flood, RequestTimeout, Reached, LogsCommand, PeerCounter)
}


# -- the program ---------------------------------------------------------------------------------


def build_server(spec: dict[str, Any]) -> Any:
    handler = HANDLERS[spec["handler"]](**spec.get("handler_args", {}))
    protocol = PROTOCOLS[spec.get("protocol", "json-lines")]()
    options = dict(spec.get("options", {}))
    tls = spec.get("tls")
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls["cert"], tls["key"])
        options["ssl"] = context
    transport = spec.get("transport", "tcp")
    if transport == "tcp":
        return AsyncTCPServer("127.0.0.1", 0, protocol, handler, **options)
    if transport == "unix":
        return AsyncUnixStreamServer(spec["path"], protocol, handler, **options)
    if transport == "udp":
        return AsyncUDPServer("127.0.0.1", 0, protocol, handler, **options)
    if transport == "unix-datagram":
        return AsyncUnixDatagramServer(spec["path"], protocol, handler, **options)
    raise ValueError(f"unknown transport {transport!r}")


async def watch_sigterm(backend_name: str, stop: Any, watching: Any) -> None:
    """Set ``stop`` when SIGTERM arrives (delivered inside the loop); ``watching`` once ready."""
    if backend_name == "trio":
        import trio  # noqa: PLC0415 - only the trio server needs it

        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            watching.set()
            async for _ in signals:
                stop.set()
                return
    else:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        watching.set()


async def serve(spec: dict[str, Any]) -> None:
    backend = current_backend()
    stop = backend.create_event()
    watching = backend.create_event()
    servers = [build_server(server_spec) for server_spec in spec["servers"]]
    async with AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        async with backend.create_task_group() as group:
            group.start_soon(watch_sigterm, backend.name, stop, watching)
            await watching.wait()
            ports = []
            for server in servers:
                address = server.get_addresses()[0]
                ports.append(str(address[1]) if isinstance(address, tuple) else "0")
            line = " ".join(ports)
            port_file = spec["port_file"]
            with open(port_file + ".tmp", "w") as out:
                out.write(line + "\n")
            os.replace(port_file + ".tmp", port_file)
            print(line, flush=True)
            for server in servers:
                group.start_soon(server.serve_forever)
            note("ready")
            await stop.wait()
            note("stopping")
            for server in servers:
                group.start_soon(server.shutdown)
    note("stopped")


def main() -> None:
    spec = json.loads(sys.argv[1])
    limit = spec.get("rlimit_nofile")
    if limit is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    # SIGTERM before the loop watches it: stop as soon as serving starts (never killed mid-way).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    mode = spec.get("logging", "json")
    if mode != "none":
        level = "debug" if mode == "json-debug" else "info"
        configure_logging(level, "console" if mode == "console" else "json", stream=sys.stderr)
    started = time.monotonic()
    run(lambda: serve(spec), backend=spec["backend"])
    note(f"exited after {time.monotonic() - started:.3f}")


if __name__ == "__main__":
    main()
