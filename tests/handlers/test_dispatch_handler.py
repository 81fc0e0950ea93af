"""DispatchHandler and @on: routing typed messages, over real TCP and UDP sockets, every loop."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Union

import msgspec
import pytest
import structlog

from handlers import DispatchHandler, RequestResponseHandler, on
from protocols import JSONSerializer

from handler_helpers import exchange, load_example, make_server, open_client
from server_helpers import in_thread, serving


@pytest.fixture(params=["tcp", "udp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Ping(msgspec.Struct, tag=True):
    id: int


class Echo(msgspec.Struct, tag=True):
    text: str


class Shout(Echo, tag=True):
    """A subclass of a routed class: routed like its base."""


class Quiet(msgspec.Struct, tag=True):
    pass


class Crash(msgspec.Struct, tag=True):
    pass


class Unrouted(msgspec.Struct, tag=True):
    x: int


Message = Ping | Echo | Shout | Quiet | Crash | Unrouted
SERIALIZER = JSONSerializer(type=Message)


class Service(DispatchHandler[Message, Any]):
    @on(Ping)
    async def ping(self, message: Ping, client: Any) -> Any:
        return {"pong": message.id}

    @on(Echo)
    async def echo(self, message: Echo, client: Any) -> Any:
        if isinstance(message, Shout):
            return {"echo": message.text.upper()}
        await client.backend().sleep(0)  # a routed method may block
        return {"echo": message.text}

    @on(Quiet)
    async def quiet(self, message: Quiet, client: Any) -> None:
        return None

    @on(Crash)
    async def crash(self, message: Crash, client: Any) -> Any:
        raise RuntimeError("crashed on purpose")


def tagged(message: msgspec.Struct) -> Any:
    return msgspec.to_builtins(message)


async def test_routing(backend_name: str, transport: str) -> None:
    messages = [
        tagged(Ping(1)),
        tagged(Echo("hi")),
        tagged(Quiet()),
        tagged(Shout("hey")),
        tagged(Ping(2)),
    ]
    async with serving(make_server(transport, Service(), SERIALIZER)) as server:
        replies = await in_thread(exchange, transport, server.get_addresses()[0], messages, 4)
    assert replies == [{"pong": 1}, {"echo": "hi"}, {"echo": "HEY"}, {"pong": 2}]


async def test_errors_are_replies(backend_name: str, transport: str) -> None:
    """Unknown tag, unrouted class, bad field, malformed JSON: error replies, client kept."""

    def talk(address: Any) -> list[Any]:
        with contextlib.closing(open_client(transport, address)) as client:
            client.send({"type": "Launch", "id": 1})
            client.send(tagged(Unrouted(1)))
            client.send({"type": "Ping", "id": "one"})
            client.send_raw(b"{oops\n")
            client.send([1, 2])
            client.send(tagged(Ping(7)))
            return [client.recv() for _ in range(6)]

    with structlog.testing.capture_logs() as logs:
        async with serving(make_server(transport, Service(), SERIALIZER)) as server:
            replies = await in_thread(talk, server.get_addresses()[0])
    assert replies[0] == {"error": "invalid JSON message: Invalid value 'Launch' - at `$.type`"}
    assert replies[1] == {
        "error": "no handler for Unrouted messages (this server handles: Crash, Echo, Ping, Quiet)"
    }
    assert replies[2] == {"error": "invalid JSON message: Expected `int`, got `str` - at `$.id`"}
    assert "malformed JSON" in replies[3]["error"]
    assert "Expected `object`, got `array`" in replies[4]["error"]
    assert replies[5] == {"pong": 7}
    assert not [entry for entry in logs if entry["log_level"] in ("warning", "error")]


async def test_exception_in_route_closes_only_that_client(backend_name: str) -> None:
    def talk(address: Any) -> None:
        with (
            contextlib.closing(open_client("tcp", address)) as bystander,
            contextlib.closing(open_client("tcp", address)) as victim,
        ):
            victim.send(tagged(Crash()))
            assert victim.recv_eof()
            bystander.send(tagged(Ping(1)))
            assert bystander.recv() == {"pong": 1}

    with structlog.testing.capture_logs() as logs:
        async with serving(make_server("tcp", Service(), SERIALIZER)) as server:
            await in_thread(talk, server.get_addresses()[0])
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "request handler failed; closing the connection"
    ]


class BrokenErrors(Service):
    def error_response(self, message: str) -> Any:
        raise ValueError("error_response() failed on purpose")


async def test_failing_error_response_closes_only_that_client(backend_name: str) -> None:
    """Even a bug in error_response() is an ordinary handler error, never a server crash."""

    def talk(address: Any) -> None:
        with (
            contextlib.closing(open_client("tcp", address)) as bystander,
            contextlib.closing(open_client("tcp", address)) as victim,
        ):
            victim.send(tagged(Unrouted(1)))
            assert victim.recv_eof()
            bystander.send(tagged(Ping(2)))
            assert bystander.recv() == {"pong": 2}

    with structlog.testing.capture_logs() as logs:
        async with serving(make_server("tcp", BrokenErrors(), SERIALIZER)) as server:
            await in_thread(talk, server.get_addresses()[0])
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in errors] == [
        "request handler failed; closing the connection"
    ]
    assert "error_response() failed" in str(errors[0]["exc_info"])


class Error(msgspec.Struct):
    error: str


class Extended(Service):
    """Inherits the routes, adds one, overrides one by name, and replies with typed errors."""

    @on(Unrouted)
    async def unrouted(self, message: Unrouted, client: Any) -> Any:
        return {"now routed": message.x}

    async def ping(self, message: Ping, client: Any) -> Any:  # keeps the @on(Ping) route
        return {"pong": message.id, "by": "Extended"}

    def error_response(self, message: str) -> Any:
        return Error(message)


class OtherEcho(Extended):
    """Routes a class already routed by a base to another method: the new route wins."""

    @on(Echo)
    async def echo_again(self, message: Echo, client: Any) -> Any:
        return {"echo again": message.text}


async def test_subclass_routes(backend_name: str, transport: str) -> None:
    messages = [
        tagged(Unrouted(3)),
        tagged(Ping(4)),
        tagged(Shout("x")),
        {"type": "Nope"},
    ]
    async with serving(make_server(transport, Extended(), SERIALIZER)) as server:
        replies = await in_thread(exchange, transport, server.get_addresses()[0], messages, 4)
    assert replies == [
        {"now routed": 3},
        {"pong": 4, "by": "Extended"},
        {"echo": "X"},
        {"error": "invalid JSON message: Invalid value 'Nope' - at `$.type`"},
    ]
    async with serving(make_server(transport, OtherEcho(), SERIALIZER)) as server:
        replies = await in_thread(
            exchange, transport, server.get_addresses()[0], [tagged(Shout("y"))], 1
        )
    assert replies == [{"echo again": "y"}]
    # The base class's table is unchanged.
    assert Service._routes[Echo] is Service.echo


async def test_untyped_messages(backend_name: str) -> None:
    """Without a typed serializer, builtin types can be routed too (dict here)."""

    class Dicts(DispatchHandler[Any, Any]):
        @on(dict)
        async def mapping(self, message: dict[str, Any], client: Any) -> Any:
            return {"keys": sorted(message)}

    async with serving(make_server("tcp", Dicts())) as server:
        replies = await in_thread(
            exchange, "tcp", server.get_addresses()[0], [{"b": 1, "a": 2}, [1], True], 3
        )
    assert replies == [
        {"keys": ["a", "b"]},
        {"error": "no handler for list messages (this server handles: dict)"},
        {"error": "no handler for bool messages (this server handles: dict)"},
    ]


async def test_respond_without_a_server(backend_name: str) -> None:
    """``respond`` is awaitable directly (e.g. by a subclass wrapping it, or a unit test)."""

    class Timed(Service):
        async def respond(self, request: Any, client: Any) -> Any:
            return {"wrapped": await super().respond(request, client)}

    handler = Timed()
    assert await handler.respond(Ping(5), None) == {"wrapped": {"pong": 5}}
    assert await handler.respond(Shout("a"), None) == {"wrapped": {"echo": "A"}}
    assert await Service().respond(Unrouted(1), None) == {
        "error": "no handler for Unrouted messages (this server handles: Crash, Echo, Ping, Quiet)"
    }
    assert await DispatchHandler[Any, Any]().respond(1, None) == {
        "error": "no handler for int messages (this server handles: none)"
    }
    assert isinstance(handler, RequestResponseHandler)


def test_union_targets() -> None:
    class Both(DispatchHandler[Any, Any]):
        @on(Ping | Echo)
        async def either(self, message: Any, client: Any) -> Any:
            return message

        @on(Union[Quiet, Crash])  # noqa: UP007
        async def other(self, message: Any, client: Any) -> Any:
            return message

    assert set(Both._routes) == {Ping, Echo, Quiet, Crash}


@pytest.mark.parametrize(
    "target",
    ["Ping", Ping(1), list[int], 42, None],
    ids=["string", "instance", "generic-alias", "int", "none"],
)
def test_non_class_target_fails_at_class_creation(target: Any) -> None:
    with pytest.raises(TypeError, match="is not a class"):

        class Bad(DispatchHandler[Any, Any]):
            @on(target)
            async def handle_it(self, message: Any, client: Any) -> Any:
                return message


def test_bad_routes_fail_at_class_creation() -> None:
    with pytest.raises(TypeError, match="at least one message class"):
        on()
    with pytest.raises(TypeError, match="'async def'"):

        class Sync(DispatchHandler[Any, Any]):
            @on(Ping)
            def ping(self, message: Any, client: Any) -> Any:
                return message

    with pytest.raises(TypeError, match=r"Ping are routed to both first\(\) and second\(\)"):

        class Twice(DispatchHandler[Any, Any]):
            @on(Ping)
            async def first(self, message: Any, client: Any) -> Any:
                return message

            @on(Echo, Ping)
            async def second(self, message: Any, client: Any) -> Any:
                return message

    with pytest.raises(TypeError, match=r"Overridden\.ping handles Ping messages"):

        class Overridden(Service):
            def ping(self, message: Any, client: Any) -> Any:
                return message


async def test_example(backend_name: str, transport: str) -> None:
    example = load_example("handlers/dispatch.py")
    server = make_server(transport, example.KeyValueHandler(), example.SERIALIZER)

    def talk(address: Any) -> list[Any]:
        with contextlib.closing(open_client(transport, address)) as client:
            client.send(
                {"op": "put", "key": "a", "value": "1"},
                {"op": "get", "key": "a"},
                {"op": "delete", "key": "a"},
                {"op": "get", "key": "a"},
                {"op": "rename", "key": "a"},
                {"op": "put", "key": "a"},
            )
            return [client.recv() for _ in range(6)]

    async with serving(server):
        replies = await in_thread(talk, server.get_addresses()[0])
    assert replies == [
        {"ok": True, "value": None},
        {"ok": True, "value": "1"},
        {"ok": True, "value": "1"},
        {"ok": False, "error": "no such key: 'a'"},
        {"ok": False, "error": "invalid JSON message: Invalid value 'rename' - at `$.op`"},
        {"ok": False, "error": "invalid JSON message: Object missing required field `value`"},
    ]


def test_typed_serializer_accepts_a_union_under_mypy(monkeypatch: pytest.MonkeyPatch) -> None:
    """``JSONSerializer(type=Ping | Echo)``, the way to feed a DispatchHandler, type-checks."""
    mypy_api = pytest.importorskip("mypy.api")
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("MYPYPATH", str(root))
    program = (
        "import msgspec\n"
        "from protocols import JSONSerializer, MsgPackSerializer\n"
        "class Ping(msgspec.Struct, tag=True):\n    id: int\n"
        "class Echo(msgspec.Struct, tag=True):\n    text: str\n"
        "json_serializer = JSONSerializer(type=Ping | Echo)\n"
        "msgpack_serializer = MsgPackSerializer(type=Ping | Echo)\n"
    )
    stdout, stderr, status = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--follow-imports=silent",
            "-c",
            program,
        ]
    )
    assert status == 0, stdout + stderr
