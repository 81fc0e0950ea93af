"""RequestResponseHandler over real TCP and UDP sockets, on asyncio, uvloop and trio."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
import pytest
import structlog

from handlers import RequestResponseHandler
from protocols import DeserializeError, JSONSerializer, ProtocolError

from handler_helpers import exchange, load_example, make_server, open_client
from server_helpers import LineClient, in_thread, serving


@pytest.fixture(params=["tcp", "udp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Echo(RequestResponseHandler[Any, Any]):
    """Echoes; ``"silent"`` gets no reply, ``"crash"`` raises; odd ints block first if asked."""

    def __init__(self, block_on_odd: bool = False) -> None:
        self.block_on_odd = block_on_odd

    async def respond(self, request: Any, client: Any) -> Any:
        if request == "silent":
            return None
        if request == "crash":
            raise RuntimeError("respond() crashed on purpose")
        if self.block_on_odd and isinstance(request, int) and request % 2:
            await client.backend().sleep(0.01)
        return {"echo": request}


async def test_responses_and_none(backend_name: str, transport: str) -> None:
    """Each request gets its response; None sends nothing and the next reply comes in order."""
    messages = [1, "silent", {"a": [1, 2]}, "silent", "silent", "last"]
    async with serving(make_server(transport, Echo())) as server:
        replies = await in_thread(exchange, transport, server.get_addresses()[0], messages, 3)
    assert replies == [{"echo": 1}, {"echo": {"a": [1, 2]}}, {"echo": "last"}]


async def test_blocking_respond_keeps_order(backend_name: str, transport: str) -> None:
    """50 requests in one write (TCP) or back to back (UDP); half of them block in respond().

    Replies answered without blocking are batched; a blocking one must not overtake them nor
    be overtaken.
    """
    messages = list(range(50))
    async with serving(make_server(transport, Echo(block_on_odd=True))) as server:
        replies = await in_thread(exchange, transport, server.get_addresses()[0], messages, 50)
    assert replies == [{"echo": i} for i in messages]


class Order(msgspec.Struct):
    item: str
    quantity: int


class Receipt(msgspec.Struct):
    item: str
    total: int


class Error(msgspec.Struct):
    error: str


class Shop(RequestResponseHandler[Order, Receipt | Error]):
    """Typed requests; validation errors answered with a typed error, and the client stays."""

    async def respond(self, request: Order, client: Any) -> Receipt | Error:
        if request.quantity <= 0:
            return Error(f"quantity must be positive, got {request.quantity}")
        return Receipt(request.item, request.quantity * 3)

    async def on_bad_message(self, error: ProtocolError, client: Any) -> Receipt | Error:
        if isinstance(error, DeserializeError):
            return Error(error.reason)
        raise error


async def test_on_bad_message_typed_reply(backend_name: str, transport: str) -> None:
    def talk(address: Any) -> list[Any]:
        with contextlib.closing(open_client(transport, address)) as client:
            client.send({"item": "tea", "quantity": 2})
            client.send({"item": "tea", "quantity": "two"})
            client.send({"item": "tea"})
            client.send_raw(b"{not json\n")
            client.send({"item": "cake", "quantity": 0})
            client.send({"item": "cake", "quantity": 1})
            return [client.recv() for _ in range(6)]

    server = make_server(transport, Shop(), JSONSerializer(type=Order))
    async with serving(server):
        replies = await in_thread(talk, server.get_addresses()[0])
    assert replies[0] == {"item": "tea", "total": 6}
    assert "Expected `int`, got `str` - at `$.quantity`" in replies[1]["error"]
    assert "missing required field `quantity`" in replies[2]["error"]
    assert "malformed JSON" in replies[3]["error"]
    assert replies[4] == {"error": "quantity must be positive, got 0"}
    assert replies[5] == {"item": "cake", "total": 3}


async def test_default_on_bad_message_closes_connection(backend_name: str) -> None:
    """Without an on_bad_message override, a message that does not decode ends the connection."""

    def talk(address: Any) -> tuple[Any, bool]:
        with contextlib.closing(open_client("tcp", address)) as client:
            client.send_raw(b"[1]\n{broken\n[2]\n")
            return client.recv(), client.recv_eof()

    with structlog.testing.capture_logs() as logs:
        async with serving(make_server("tcp", Echo())) as server:
            assert await in_thread(talk, server.get_addresses()[0]) == ({"echo": [1]}, True)
    assert any("bad message" in entry["event"] for entry in logs)


async def test_exception_in_respond_closes_only_that_client(
    backend_name: str, transport: str
) -> None:
    def talk(address: Any) -> None:
        with (
            contextlib.closing(open_client(transport, address)) as bystander,
            contextlib.closing(open_client(transport, address)) as victim,
        ):
            bystander.send("before")
            assert bystander.recv() == {"echo": "before"}
            victim.send("crash")
            if transport == "tcp":
                assert victim.recv_eof()
            else:  # the peer's client ends; its next datagram gets a fresh one
                victim.send("again")
                assert victim.recv() == {"echo": "again"}
            bystander.send("after")
            assert bystander.recv() == {"echo": "after"}
        assert exchange(transport, address, ["new"], 1) == [{"echo": "new"}]

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with serving(make_server(transport, Echo())) as server:
            await in_thread(talk, server.get_addresses()[0])
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1
    assert "handler failed" in errors[0]["event"]
    assert "conn_id" in errors[0]


class Tagged(Echo):
    """Overrides ``handle``: the server must drive this generator instead of ``respond``."""

    async def handle(self, client: Any) -> AsyncGenerator[None, Any]:
        request = yield
        response = await self.respond(request, client)
        await client.send_packet({"via": "handle", "response": response})


async def test_overridden_handle_is_used(backend_name: str, transport: str) -> None:
    async with serving(make_server(transport, Tagged())) as server:
        replies = await in_thread(exchange, transport, server.get_addresses()[0], [1, 2], 2)
    assert replies == [
        {"via": "handle", "response": {"echo": 1}},
        {"via": "handle", "response": {"echo": 2}},
    ]


async def test_fast_path_skips_handle(
    backend_name: str, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an override of ``handle``, the server calls ``respond`` directly."""

    def no_generator(self: Any, client: Any) -> Any:
        raise AssertionError("the server drove handle() instead of calling respond()")

    monkeypatch.setattr(RequestResponseHandler, "handle", no_generator)
    async with serving(make_server(transport, Echo(block_on_odd=True))) as server:
        replies = await in_thread(exchange, transport, server.get_addresses()[0], [1, 2], 2)
    assert replies == [{"echo": 1}, {"echo": 2}]


async def test_example(backend_name: str, transport: str) -> None:
    example = load_example("handlers/request_response.py")
    server = make_server(transport, example.StatsHandler(), example.SERIALIZER)
    messages: list[Any] = [{"values": [1, 2, 3, 6]}, {"values": []}, {"values": "x"}, {}]
    async with serving(server):
        replies = await in_thread(exchange, transport, server.get_addresses()[0], messages, 4)
    assert replies[0] == {"count": 4, "mean": 3.0, "min": 1.0, "max": 6.0}
    assert replies[1] == {"error": "values must not be empty"}
    assert "Expected `array`, got `str` - at `$.values`" in replies[2]["error"]
    assert "missing required field `values`" in replies[3]["error"]


class BigThenSleep(RequestResponseHandler[Any, Any]):
    """A big reply, answered at once; then a request whose respond() sleeps."""

    def __init__(self) -> None:
        self.slept = threading.Event()  # set once the sleep is over, or the connection ended

    async def respond(self, request: Any, client: Any) -> Any:
        if request == "big":
            return "x" * BIG_REPLY
        await client.backend().sleep(0.05)
        self.slept.set()
        return "slept"

    async def on_disconnection(self, client: Any) -> None:
        self.slept.set()


#: Larger than what the kernel buffers between a server and a client with a small SO_RCVBUF.
BIG_REPLY = 16 * 1024 * 1024
WAIT = 10.0


async def test_blocking_respond_while_a_big_reply_is_being_sent(
    backend_name: str, request: pytest.FixtureRequest
) -> None:
    """A respond() that sleeps while the server still sends an earlier reply of the batch.

    The first reply is too big for the socket buffers and the peer reads only once the second
    request's sleep is over, so the server is still sending when that sleep's deadline comes.
    (The write high-water mark is raised above the big reply, so that both requests are one
    batch; with the default, the second waits until the first reply drained.)
    """
    handler = BigThenSleep()

    def talk(address: Any) -> tuple[int, Any]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(WAIT)
        sock.connect(address)
        with contextlib.closing(LineClient(sock)) as client:
            client.send("big", "sleep")
            assert handler.slept.wait(WAIT)  # only now start reading
            big = client.recv()
            return len(big), client.recv()

    server = make_server("tcp", handler, write_high_water=2 * BIG_REPLY)
    async with serving(server):
        replies = await in_thread(talk, server.get_addresses()[0])
    assert replies == (BIG_REPLY, "slept")
