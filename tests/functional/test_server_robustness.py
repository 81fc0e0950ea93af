"""Robustness of the servers under concurrency, resets, floods and descriptor exhaustion.

Each test pins one of the failures seen in comparable servers (see PITFALLS in the design notes).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncGenerator
from typing import Any

import pytest
import structlog

from handlers import (
    DatagramEchoHandler,
    EchoHandler,
    RequestResponseHandler,
    StreamClient,
    StreamRequestHandler,
)
from protocols import (
    DatagramProtocol,
    JSONSerializer,
    LengthPrefixFramer,
    MsgPackSerializer,
    StreamProtocol,
)
from server_framework.backend import current
from server_framework.servers import AsyncTCPServer, AsyncUDPServer

from server_helpers import CLIENT_TIMEOUT, LineClient, connect, in_thread, line_exchange, serving

JSON_LINES = StreamProtocol(JSONSerializer())


class Burst(StreamRequestHandler[Any, Any]):
    """On each request, several tasks send large frames on the same connection at once."""

    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        backend = client.backend()

        async def sender(index: int) -> None:
            for part in range(request["parts"]):
                await client.send_packet(
                    {"task": index, "part": part, "blob": "x" * request["size"]}
                )
                await backend.checkpoint()

        async with backend.create_task_group() as group:
            for index in range(request["tasks"]):
                group.start_soon(sender, index)
        await client.send_packet("done")


async def test_concurrent_send_packet_never_interleaves(backend_name: str) -> None:
    """Frames above the transport's high-water mark, sent by 4 tasks at once, arrive whole."""
    protocol = StreamProtocol(
        MsgPackSerializer(), LengthPrefixFramer(max_frame_size=4 * 1024 * 1024)
    )

    def exchange(address: Any) -> dict[int, list[int]]:
        with contextlib.closing(connect(address)) as sock:
            sock.sendall(protocol.encode({"tasks": 4, "parts": 8, "size": 100_000}))
            decoder = protocol.decoder()
            seen: dict[int, list[int]] = {}
            while True:
                chunk = sock.recv(1 << 20)
                assert chunk
                decoder.feed(chunk)
                for message in decoder:
                    if message == "done":
                        return seen
                    assert message["blob"] == "x" * 100_000
                    seen.setdefault(message["task"], []).append(message["part"])

    async with serving(AsyncTCPServer("127.0.0.1", 0, protocol, Burst())) as server:
        seen = await in_thread(exchange, server.get_addresses()[0])
    assert seen == {task: list(range(8)) for task in range(4)}  # each task's frames in its order


class WhoAmI(RequestResponseHandler[Any, Any]):
    """Answers with the connection id seen in the log context, in the loop and in a thread."""

    async def respond(self, request: Any, client: Any) -> Any:
        in_loop = structlog.contextvars.get_contextvars()["conn_id"]
        if request == "block":
            await client.backend().sleep(0.005)
        in_thread = await client.backend().run_in_thread(
            lambda: structlog.contextvars.get_contextvars()["conn_id"]
        )
        return {"id": client.id, "loop": in_loop, "thread": in_thread}


async def test_log_context_is_per_connection_also_in_threads(backend_name: str) -> None:
    def talk(address: Any) -> list[Any]:
        clients = [LineClient(connect(address)) for _ in range(5)]
        try:
            replies = []
            for _round in range(4):
                for client in clients:
                    client.send(random.choice(["block", "fast"]))
                replies.extend(client.recv() for client in clients)
            return replies
        finally:
            for client in clients:
                client.close()

    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, WhoAmI())) as server:
        replies = await in_thread(talk, server.get_addresses()[0])
    assert len({reply["id"] for reply in replies}) == 5
    for reply in replies:
        assert reply["id"] == reply["loop"] == reply["thread"]


class Tagged(RequestResponseHandler[Any, Any]):
    async def respond(self, request: Any, client: Any) -> Any:
        if request["seq"] % 7 == 0:
            await client.backend().sleep(0.001)
        return {"conn": request["conn"], "seq": request["seq"], "id": client.id}


async def test_replies_never_cross_connections(backend_name: str) -> None:
    """20 connections x 50 pipelined requests, some handled on the blocking path."""

    def one(address: Any, conn: int, results: list[Any]) -> None:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send(*({"conn": conn, "seq": seq} for seq in range(50)))
            results.append([client.recv() for _ in range(50)])

    def stress(address: Any) -> list[Any]:
        results: list[Any] = []
        threads = [
            threading.Thread(target=one, args=(address, conn, results)) for conn in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT)
        return results

    async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Tagged())) as server:
        results = await in_thread(stress, server.get_addresses()[0])
    assert len(results) == 20
    for replies in results:
        conn = replies[0]["conn"]
        assert [reply["seq"] for reply in replies] == list(range(50))
        assert {reply["conn"] for reply in replies} == {conn}
        assert len({reply["id"] for reply in replies}) == 1


class CountingEcho(EchoHandler):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.disconnections = 0
        self.all_gone: Any = None

    async def on_disconnection(self, client: StreamClient[Any]) -> None:
        self.disconnections += 1
        if self.disconnections == self.expected:
            self.all_gone.set()


def _connection_objects() -> int:
    gc.collect()
    names = {"AsyncIOStreamConnection", "TrioStreamConnection"}
    return sum(1 for obj in gc.get_objects() if type(obj).__name__ in names)


async def test_resets_leave_nothing_behind(backend_name: str) -> None:
    """After 100 connections reset mid-frame, no connection object, task or timer remains."""
    handler = CountingEcho(expected=100)
    handler.all_gone = current().create_event()

    def resets(address: Any) -> None:
        for index in range(100):
            sock = connect(address)
            sock.sendall(b'{"partial": ' if index % 2 else b"[1]\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, handler, idle_timeout=30)
    async with serving(server):
        baseline = _connection_objects()
        await in_thread(resets, server.get_addresses()[0])
        await handler.all_gone.wait()
        listener: Any = server._listener
        for _ in range(100):  # the last tasks finish right after their on_disconnection
            if not listener.connections:
                break
            await current().checkpoint()
        assert not listener.connections
        assert not getattr(listener, "tasks", set())
        assert _connection_objects() == baseline
        assert await in_thread(line_exchange, server.get_addresses()[0], ["alive"]) == ["alive"]


async def test_udp_flood_does_not_starve_tcp(backend_name: str) -> None:
    """While a UDP socket is flooded, TCP clients on the same loop are still served promptly."""
    udp = AsyncUDPServer("127.0.0.1", 0, DatagramProtocol(JSONSerializer()), DatagramEchoHandler())
    tcp = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler())
    stop_flood = threading.Event()

    def flood(address: Any) -> None:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
            sock.setblocking(False)
            payload = json.dumps({"flood": "x" * 100}).encode()
            while not stop_flood.is_set():
                for _ in range(1000):
                    with contextlib.suppress(BlockingIOError):
                        sock.sendto(payload, address)

    async with serving(udp), serving(tcp):
        flooder = threading.Thread(target=flood, args=(udp.get_addresses()[0],))
        flooder.start()
        try:
            backend = current()
            for index in range(20):
                start = backend.current_time()
                assert await in_thread(line_exchange, tcp.get_addresses()[0], [index]) == [index]
                assert backend.current_time() - start < 2.0  # liveness bound, not a benchmark
        finally:
            stop_flood.set()
            flooder.join(CLIENT_TIMEOUT)


EMFILE_SERVER = textwrap.dedent(
    """
    import logging, resource, sys
    import structlog
    from handlers import EchoHandler
    from protocols import JSONSerializer, StreamProtocol
    from server_framework.backend import run
    from server_framework.servers import AsyncTCPServer

    async def main() -> None:
        protocol = StreamProtocol(JSONSerializer())
        async with AsyncTCPServer("127.0.0.1", 0, protocol, EchoHandler()) as server:
            print(server.get_addresses()[0][1], flush=True)
            resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
            await server.serve_forever()

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    run(main, backend=sys.argv[1])
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_accept_survives_descriptor_exhaustion(backend: str) -> None:
    """Out of descriptors, accept() backs off instead of spinning or crashing, then resumes."""
    process = subprocess.Popen(
        [sys.executable, "-c", EMFILE_SERVER, backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    output: list[str] = []
    drain = threading.Thread(target=lambda: output.extend(process.stdout))  # type: ignore[arg-type]
    drain.start()
    try:
        address = ("127.0.0.1", port)
        # Open connections (each proven accepted by an echo) until one is not accepted: the
        # server is out of descriptors and its accept() is failing.
        held: list[LineClient] = []
        exhausted = False
        while not exhausted and len(held) < 60:
            client = LineClient(socket.create_connection(address, timeout=CLIENT_TIMEOUT))
            held.append(client)
            client.send(len(held))
            client.sock.settimeout(1.0)
            try:
                exhausted = client.recv_line() is None
            except (TimeoutError, ConnectionResetError):  # libuv resets instead
                exhausted = True
        assert exhausted
        for client in held:
            client.close()
        # Once descriptors are free again, the server serves new clients. (uvloop's libuv
        # resets connections that arrive while it is out of descriptors, so a client may have
        # to retry while the server is still closing the held connections.)
        for attempt in range(20):
            try:
                assert line_exchange(address, ["after"]) == ["after"]
                break
            except ConnectionResetError:
                assert backend == "uvloop", "only libuv resets connections under EMFILE"
                threading.Event().wait(0.05 * attempt)
        else:
            pytest.fail("the server never served again")
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=CLIENT_TIMEOUT)
        drain.join(CLIENT_TIMEOUT)
        process.stdout.close()
    logged = "".join(output)
    if backend != "uvloop":  # libuv handles EMFILE itself, silently
        assert "Too many open files" in logged  # reported (at a bounded rate), not fatal


def test_process_cleanup_helper_sanity() -> None:
    assert os.getpid() > 0


class PerRequest(StreamRequestHandler[Any, Any]):
    async def handle(self, client: StreamClient[Any]) -> AsyncGenerator[None, Any]:
        request = yield
        await client.send_packet(request)


async def test_handler_generators_skip_the_loops_firstiter_hook(backend_name: str) -> None:
    """The loop's async-generator registry never sees the driver's per-request generators."""
    hooks = sys.get_asyncgen_hooks()
    registered: list[Any] = []

    def counting(agen: Any) -> None:
        registered.append(agen)
        if hooks.firstiter is not None:
            hooks.firstiter(agen)

    sys.set_asyncgen_hooks(counting, hooks.finalizer)
    try:
        async with serving(AsyncTCPServer("127.0.0.1", 0, JSON_LINES, PerRequest())) as server:
            messages = list(range(50))
            assert await in_thread(line_exchange, server.get_addresses()[0], messages) == messages
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert not [agen for agen in registered if agen.ag_code is PerRequest.handle.__code__]
