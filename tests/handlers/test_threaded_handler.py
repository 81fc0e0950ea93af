"""ThreadedHandler over real TCP and UDP sockets, on asyncio, uvloop and trio."""

from __future__ import annotations

import contextlib
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import structlog

from handlers import StreamClient, ThreadedHandler
from protocols import DeserializeError, ProtocolError
from server_framework.backend import current

from handler_helpers import exchange, load_example, make_server, open_client
from server_helpers import LineClient, connect, in_thread, serving

#: How long a test's thread may wait for something another thread does before failing.
WAIT = 10.0


@pytest.fixture(params=["tcp", "udp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pool_threads(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix + "_")]


class Sleepy(ThreadedHandler[Any, Any]):
    """Sleeps in the thread, a different time per request; ``"crash"`` raises."""

    def respond(self, request: Any, client: Any) -> Any:
        if request == "crash":
            raise RuntimeError("respond() crashed on purpose")
        if request == "silent":
            return None
        time.sleep((request * 7 % 5) * 0.002)
        return {"seq": request, "thread": threading.current_thread().name}


async def test_results_in_order_per_connection(backend_name: str, transport: str) -> None:
    """20 pipelined requests, slower and faster ones mixed: replies come in request order."""
    handler = Sleepy(max_workers=4, thread_name_prefix="sleepy")
    async with serving(make_server(transport, handler)) as server:
        messages: list[Any] = [*range(10), "silent", *range(10, 20)]
        replies = await in_thread(exchange, transport, server.get_addresses()[0], messages, 20)
    assert [reply["seq"] for reply in replies] == list(range(20))
    assert all(reply["thread"].startswith("sleepy_") for reply in replies)


class Counting(ThreadedHandler[Any, Any]):
    """Records how many calls run at once; the first ``max_workers`` calls meet at a barrier."""

    max_workers = 3

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.calls = self.active = self.most_active = 0
        # If the pool ran fewer than max_workers calls at once, this would time out.
        self.barrier = threading.Barrier(3, timeout=WAIT)

    def respond(self, request: Any, client: Any) -> Any:
        with self.lock:
            first = self.calls < 3
            self.calls += 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if first:
                self.barrier.wait()
            time.sleep(0.002)
        finally:
            with self.lock:
                self.active -= 1
        return request


async def test_concurrency_across_connections_bounded(backend_name: str, transport: str) -> None:
    handler = Counting()

    def talk(address: Any) -> None:
        clients = [open_client(transport, address) for _ in range(8)]
        try:
            for index, client in enumerate(clients):
                client.send(*(f"{index}-{n}" for n in range(4)))
            for index, client in enumerate(clients):
                assert [client.recv() for _ in range(4)] == [f"{index}-{n}" for n in range(4)]
        finally:
            for client in clients:
                client.close()

    async with serving(make_server(transport, handler)) as server:
        await in_thread(talk, server.get_addresses()[0])
    assert handler.calls == 32
    assert handler.most_active == 3  # > 1: parallel; <= max_workers: bounded
    assert handler.active == 0


class Progress(ThreadedHandler[Any, Any]):
    """Sends a progress message from the thread, through the portal, before the reply."""

    def respond(self, request: Any, client: Any) -> Any:
        self.portal.run_coroutine(client.send_packet, {"progress": request})
        return {"done": request}


async def test_portal_send_packet_from_thread(backend_name: str, transport: str) -> None:
    async with serving(make_server(transport, Progress())) as server:
        replies = await in_thread(exchange, transport, server.get_addresses()[0], [1, 2, 3], 6)
    assert replies == [
        {"progress": 1},
        {"done": 1},
        {"progress": 2},
        {"done": 2},
        {"progress": 3},
        {"done": 3},
    ]


class ContextReader(ThreadedHandler[Any, Any]):
    """Binds a log context in ``on_connection``; the thread reports what it sees."""

    async def on_connection(self, client: StreamClient[Any]) -> None:
        structlog.contextvars.bind_contextvars(user="alice")

    def respond(self, request: Any, client: Any) -> Any:
        seen = structlog.contextvars.get_contextvars()
        # Changes made in the thread stay there: the next request does not see them.
        structlog.contextvars.bind_contextvars(user="mallory", leaked=True)
        structlog.get_logger("test").info("in the thread")
        return {"user": seen.get("user"), "conn_id": "conn_id" in seen, "leaked": "leaked" in seen}


async def test_contextvars_follow_into_thread(backend_name: str) -> None:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with serving(make_server("tcp", ContextReader())) as server:
            replies = await in_thread(exchange, "tcp", server.get_addresses()[0], [1, 2], 2)
    assert replies == [{"user": "alice", "conn_id": True, "leaked": False}] * 2
    lines = [entry for entry in logs if entry["event"] == "in the thread"]
    assert len(lines) == 2
    assert all("conn_id" in entry for entry in lines)


async def test_exception_closes_only_that_client(backend_name: str, transport: str) -> None:
    def talk(address: Any) -> None:
        with (
            contextlib.closing(open_client(transport, address)) as bystander,
            contextlib.closing(open_client(transport, address)) as victim,
        ):
            bystander.send(1)
            assert bystander.recv()["seq"] == 1
            victim.send("crash")
            if transport == "tcp":
                assert victim.recv_eof()
            else:  # the peer's client ends; its next datagram gets a fresh one
                victim.send(3)
                assert victim.recv()["seq"] == 3
            bystander.send(2)
            assert bystander.recv()["seq"] == 2

    with structlog.testing.capture_logs() as logs:
        async with serving(make_server(transport, Sleepy())) as server:
            await in_thread(talk, server.get_addresses()[0])
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1
    assert "handler failed" in errors[0]["event"]


class Validating(Sleepy):
    """Answers undecodable messages from a pool thread."""

    def on_bad_message(self, error: ProtocolError, client: Any) -> Any:
        assert isinstance(error, DeserializeError)
        return {"error": error.reason, "thread": threading.current_thread().name}


async def test_on_bad_message(backend_name: str, transport: str) -> None:
    def talk(address: Any) -> list[Any]:
        with contextlib.closing(open_client(transport, address)) as client:
            client.send(1)
            client.send_raw(b"{broken\n")
            client.send(2)
            return [client.recv() for _ in range(3)]

    handler = Validating(thread_name_prefix="validating")
    async with serving(make_server(transport, handler)) as server:
        replies = await in_thread(talk, server.get_addresses()[0])
    assert [reply.get("seq") for reply in replies] == [1, None, 2]
    assert "malformed JSON" in replies[1]["error"]
    assert replies[1]["thread"].startswith("validating_")


async def test_default_on_bad_message_closes(backend_name: str) -> None:
    def talk(address: Any) -> tuple[Any, bool]:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send_raw(b"1\n{broken\n2\n")
            return client.recv()["seq"], client.recv_eof()

    async with serving(make_server("tcp", Sleepy())) as server:
        assert await in_thread(talk, server.get_addresses()[0]) == (1, True)


class ShutdownDuringCall(ThreadedHandler[Any, Any]):
    """Asks the server to shut down, then, from the same call, uses the portal and replies."""

    server: Any

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        await super().service_init(exit_stack, server)
        self.server = server

    def respond(self, request: Any, client: Any) -> Any:
        portal = self.portal
        portal.run_coroutine_soon(self.server.shutdown)
        while portal.run_sync(self.server.is_serving):
            pass  # each round trip lets the loop run, until the shutdown has begun
        portal.run_coroutine(client.send_packet, "still open")
        return "finished"


async def test_shutdown_waits_for_running_call(backend_name: str) -> None:
    handler = ShutdownDuringCall(thread_name_prefix="shutdown-test")

    def talk(address: Any) -> tuple[Any, Any, bool]:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send("go")
            return client.recv(), client.recv(), client.recv_eof()

    async with serving(make_server("tcp", handler)) as server:
        assert await in_thread(talk, server.get_addresses()[0]) == (
            "still open",
            "finished",
            True,
        )
        assert not server.is_serving()
    assert pool_threads("shutdown-test") == []


async def test_pool_and_portal_live_with_the_server(backend_name: str) -> None:
    handler = Sleepy(max_workers=2, thread_name_prefix="lifetime")
    with pytest.raises(RuntimeError, match="service_init"):
        handler.portal  # noqa: B018
    server = make_server("tcp", handler)
    async with serving(server):
        assert handler.portal is not None
        assert handler.executor.wrapped._max_workers == 2
        await in_thread(exchange, "tcp", server.get_addresses()[0], [1, 2, 3], 3)
        assert pool_threads("lifetime")
        with pytest.raises(RuntimeError, match="already serves"):
            await handler.service_init(AsyncExitStack(), server)
    assert pool_threads("lifetime") == []
    with pytest.raises(RuntimeError, match="service_init"):
        handler.executor  # noqa: B018
    # The same handler can serve again once the first server has stopped.
    async with serving(make_server("udp", handler)) as server:
        assert await in_thread(exchange, "udp", server.get_addresses()[0], [4], 1) == [
            {"seq": 4, "thread": "lifetime_0"}
        ]
    assert pool_threads("lifetime") == []


def test_options() -> None:
    class Defaults(Sleepy):
        pass

    class Sized(Sleepy):
        max_workers = 7

    assert Defaults().max_workers is None
    assert Defaults().thread_name_prefix is None
    assert Sized().max_workers == 7
    assert Sized(max_workers=2).max_workers == 2
    assert Sized().max_workers == 7  # an instance option does not change the class
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="max_workers must be an int >= 1"):
            Sleepy(max_workers=bad)  # type: ignore[arg-type]


async def test_default_pool_size_and_names(backend_name: str) -> None:
    class Named(Sleepy):
        pass

    handler = Named()
    async with serving(make_server("tcp", handler)) as server:
        assert 5 <= handler.executor.wrapped._max_workers <= 32
        replies = await in_thread(exchange, "tcp", server.get_addresses()[0], [1], 1)
    assert replies[0]["thread"].startswith("Named_")
    assert current().name == backend_name


async def test_example(backend_name: str, tmp_path: Path) -> None:
    example = load_example("handlers/threaded.py")
    database = str(tmp_path / "catalog.db")
    example.create_demo_catalog(database)
    server = make_server("tcp", example.CatalogHandler(database))
    messages = [{"search": "tea"}, {"search": "nothing like this"}, {"search": "CAKE"}]

    def talk(address: Any) -> list[Any]:
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send(*messages)
            replies: list[Any] = []
            while len([r for r in replies if "found" in r]) < len(messages):
                replies.append(client.recv())
            return replies

    async with serving(server):
        replies = await in_thread(talk, server.get_addresses()[0])
    assert replies == [
        {"item": {"name": "Green tea", "price": 4.5}},
        {"item": {"name": "Black tea", "price": 3.9}},
        {"found": 2},
        {"found": 0},
        {"item": {"name": "Carrot cake", "price": 5.0}},
        {"found": 1},
    ]
