"""A handler's methods are checked when its server is built: each classic mistake is one
TypeError naming the class, the method and the fix, before anything is bound."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from handlers import (
    DatagramRequestHandler,
    DispatchHandler,
    EchoHandler,
    RequestResponseHandler,
    StreamRequestHandler,
    ThreadedHandler,
    check_handler,
)
from protocols import BytesSerializer, DatagramProtocol, JSONSerializer, LineFramer, StreamProtocol
from server_framework.servers import (
    AsyncTCPServer,
    AsyncUDPServer,
    StandaloneTCPServer,
)

LINES = StreamProtocol(JSONSerializer(), LineFramer())
DATAGRAMS = DatagramProtocol(BytesSerializer())


class NoYield(StreamRequestHandler[Any, Any]):
    async def handle(self, client: Any) -> Any:  # type: ignore[override]
        await client.send_packet("hello")


class NotAsync(StreamRequestHandler[Any, Any]):
    def handle(self, client: Any) -> Any:
        yield


class PlainDef(StreamRequestHandler[Any, Any]):
    def handle(self, client: Any) -> Any:
        return None


class NoClient(StreamRequestHandler[Any, Any]):
    async def handle(self) -> AsyncGenerator[None, Any]:  # type: ignore[override]
        yield


class PlainOnConnection(EchoHandler):
    def on_connection(self, client: Any) -> None:  # type: ignore[override]
        pass


class SyncGeneratorOnConnection(EchoHandler):
    def on_connection(self, client: Any) -> Any:
        yield


class LoginWithoutClient(EchoHandler):
    async def on_connection(self) -> AsyncGenerator[None, Any]:  # type: ignore[override]
        yield


class GeneratorOnDisconnection(EchoHandler):
    async def on_disconnection(self, client: Any) -> Any:  # type: ignore[override]
        yield


class PlainOnRefused(EchoHandler):
    def on_refused(self, client: Any, reason: str) -> None:  # type: ignore[override]
        pass


class OnRefusedWithoutReason(EchoHandler):
    async def on_refused(self, client: Any) -> None:  # type: ignore[override]
        pass


class PlainServiceInit(EchoHandler):
    def service_init(self, exit_stack: AsyncExitStack) -> None:  # type: ignore[override]
        pass


class AsyncServiceInitOneArgument(EchoHandler):
    async def service_init(self, exit_stack: AsyncExitStack) -> None:  # type: ignore[override]
        pass


class PlainRespond(RequestResponseHandler[Any, Any]):
    def respond(self, request: Any, client: Any) -> Any:  # type: ignore[override]
        return request


class GeneratorRespond(RequestResponseHandler[Any, Any]):
    async def respond(self, request: Any, client: Any) -> Any:  # type: ignore[override]
        yield request


class RespondWithoutClient(RequestResponseHandler[Any, Any]):
    async def respond(self, request: Any) -> Any:  # type: ignore[override]
        return request


class AsyncThreaded(ThreadedHandler[Any, Any]):
    async def respond(self, request: Any, client: Any) -> Any:  # type: ignore[override]
        return request


class DatagramNoYield(DatagramRequestHandler[Any, Any]):
    async def handle(self, client: Any) -> Any:  # type: ignore[override]
        await client.send_packet(b"hello")


MISTAKES = [
    (NoYield, "NoYield.handle must be an async generator: write async def handle(self, client)"),
    (NotAsync, "NotAsync.handle must be an async generator"),
    (PlainDef, "PlainDef.handle must be an async generator"),
    (NoClient, "NoClient.handle must take (self, client)"),
    (PlainOnConnection, "PlainOnConnection.on_connection must be a coroutine function"),
    (
        SyncGeneratorOnConnection,
        "SyncGeneratorOnConnection.on_connection must be a coroutine function: write async def "
        "on_connection(self, client), with request = yield only to receive requests before "
        "handle() (it is a def with yield)",
    ),
    (LoginWithoutClient, "LoginWithoutClient.on_connection must take (self, client)"),
    (GeneratorOnDisconnection, "GeneratorOnDisconnection.on_disconnection must be a coroutine"),
    (PlainOnRefused, "PlainOnRefused.on_refused must be a coroutine function"),
    (OnRefusedWithoutReason, "OnRefusedWithoutReason.on_refused must take (self, client, reason)"),
    (PlainServiceInit, "PlainServiceInit.service_init must be a coroutine function"),
    (AsyncServiceInitOneArgument, "must take (self, exit_stack, server)"),
    (PlainRespond, "PlainRespond.respond must be a coroutine function: write async def respond"),
    (GeneratorRespond, "GeneratorRespond.respond must be a coroutine function"),
    (RespondWithoutClient, "respond must take (self, request, client): the server calls it with 2"),
    (AsyncThreaded, "AsyncThreaded.respond runs in a worker thread"),
]


@pytest.mark.parametrize(
    ("handler_class", "message"), MISTAKES, ids=lambda x: getattr(x, "__name__", "")
)
def test_each_mistake_is_one_type_error_when_the_server_is_built(
    handler_class: type, message: str
) -> None:
    with pytest.raises(TypeError) as caught:
        AsyncTCPServer("127.0.0.1", 0, LINES, handler_class())
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    # The standalone (blocking) servers are built on the same options.
    with pytest.raises(TypeError, match=re.escape(message)):
        StandaloneTCPServer("127.0.0.1", 0, LINES, handler_class())


def test_the_fix_is_in_the_message() -> None:
    with pytest.raises(TypeError) as caught:
        AsyncTCPServer("127.0.0.1", 0, LINES, NoYield())
    assert "request = yield" in str(caught.value)
    assert "(it is async def without yield)" in str(caught.value)


def test_datagram_handlers_are_checked_too() -> None:
    with pytest.raises(TypeError, match=re.escape("DatagramNoYield.handle must be an async")):
        AsyncUDPServer("127.0.0.1", 0, DATAGRAMS, DatagramNoYield())


class Good(StreamRequestHandler[Any, Any]):
    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        pass

    async def on_connection(self, client: Any) -> None:
        pass

    async def handle(self, client: Any) -> AsyncGenerator[None, Any]:
        request = yield
        await client.send_packet(request)

    async def on_disconnection(self, client: Any) -> None:
        pass


class Login(EchoHandler):
    """``on_connection`` as an async generator: requests before ``handle``."""

    async def on_connection(self, client: Any) -> AsyncGenerator[None, Any]:
        client.state["user"] = yield


class Upper(RequestResponseHandler[str, str]):
    async def respond(self, request: str, client: Any) -> str:
        return request.upper()


class Lookup(ThreadedHandler[str, str]):
    def respond(self, request: str, client: Any) -> str:
        return request


def _decorated(function: Any) -> Any:
    @functools.wraps(function)
    async def wrapper(*args: Any) -> Any:
        return await function(*args)

    return wrapper


class Decorated(RequestResponseHandler[str, str]):
    @_decorated
    async def respond(self, request: str, client: Any) -> str:
        return request


class CallableRespond(RequestResponseHandler[str, str]):
    """A callable object as ``respond``: not knowable before it is called, so let through."""

    respond = functools.partial(lambda self, request, client: None)  # type: ignore[assignment]


class Defaults(RequestResponseHandler[str, str]):
    async def respond(self, request: str, client: Any = None, *extra: Any) -> str:
        return request


@pytest.mark.parametrize(
    "handler",
    [
        Good(),
        Login(),
        Upper(),
        Lookup(),
        Decorated(),
        CallableRespond(),
        Defaults(),
        EchoHandler(),
        DispatchHandler(),
    ],
    ids=lambda h: type(h).__name__,
)
def test_right_handlers_and_the_ready_made_ones_pass(handler: Any) -> None:
    AsyncTCPServer("127.0.0.1", 0, LINES, handler)


def test_check_handler_without_a_server() -> None:
    """The docstring's example, and a mistake found the same way."""
    assert check_handler(EchoHandler(), "stream") is None
    with pytest.raises(TypeError, match=re.escape("DatagramNoYield.handle must be an async")):
        check_handler(DatagramNoYield(), "datagram")
