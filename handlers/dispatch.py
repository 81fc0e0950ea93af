"""DispatchHandler: typed messages routed to methods by their class, with ``@on(MessageType)``.

Strategy. ``@on`` only marks a method with the classes it handles. When a subclass of
`DispatchHandler` is created, ``__init_subclass__`` walks its MRO from the base down and builds
one table, class -> function, for that handler class (a subclass's routes win over its bases').
Per request, `DispatchHandler.respond` looks ``type(message)`` up in that table: one dict
lookup. A message whose exact class is not in the table (a subclass of a routed class, or an
unrouted class) is resolved once by walking its MRO, and the answer is cached per handler class.
``respond`` returns the routed method's coroutine itself instead of awaiting it, so dispatching
adds no coroutine of its own; `DispatchHandler` is a `RequestResponseHandler`, so the server
calls it directly, without a generator.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Generic, TypeVar

from protocols import DeserializeError, ProtocolError

from .request_response import RequestResponseHandler

__all__ = ["DispatchHandler", "on"]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
_MethodT = TypeVar("_MethodT", bound=Callable[..., Awaitable[Any]])

#: The attribute ``@on`` sets on a method: the tuple of classes it handles.
_TARGETS_ATTR = "__dispatch_on__"

_Route = Callable[[Any, Any, Any], Coroutine[Any, Any, Any]]


def _flatten(target: Any) -> list[Any]:
    """``Ping | Echo`` and ``Union[Ping, Echo]`` stand for ``Ping, Echo``."""
    if typing.get_origin(target) in (types.UnionType, typing.Union):
        return [cls for arg in typing.get_args(target) for cls in _flatten(arg)]
    return [target]


def on(*message_types: Any) -> Callable[[_MethodT], _MethodT]:
    """Route messages of the given classes (and their subclasses) to the decorated method.

    Use it on ``async def`` methods of a `DispatchHandler` subclass. The method is called as
    ``await method(message, client)`` and returns the response, or ``None`` to send nothing.
    A union (``@on(Ping | Pong)``) is the same as listing its members (``@on(Ping, Pong)``).

    Args:
        *message_types: One or more classes (msgspec Structs, dataclasses, any class).

    Returns:
        A decorator that marks the method and returns it unchanged.

    Raises:
        TypeError: No class was given, a target is not a class (a string, an instance, a
            parametrized generic such as ``list[int]``), or the decorated method is not an
            ``async def`` function. Raised while the class body runs, so a bad route fails
            at import time, not at the first request.

    Example::

        class Service(DispatchHandler[Ping | Echo, Any]):
            @on(Ping)
            async def ping(self, message: Ping, client: Any) -> Pong:
                return Pong(message.id)
    """
    targets = [cls for target in message_types for cls in _flatten(target)]
    if not targets:
        raise TypeError("on() needs at least one message class, e.g. @on(Ping)")
    for target in targets:
        if not isinstance(target, type):
            raise TypeError(
                f"on() routes messages by their class; {target!r} is not a class "
                f"(got a {type(target).__name__}). Pass the message class itself, e.g. @on(Ping)"
            )

    def mark(method: _MethodT) -> _MethodT:
        is_async = inspect.iscoroutinefunction(method)  # (a variable: keep mypy from narrowing)
        if not is_async:
            raise TypeError(
                f"@on() decorates 'async def' methods; {method!r} is not a coroutine function"
            )
        setattr(method, _TARGETS_ATTR, (*getattr(method, _TARGETS_ATTR, ()), *targets))
        return method

    return mark


class DispatchHandler(RequestResponseHandler[RequestT, ResponseT], Generic[RequestT, ResponseT]):
    """Route each message to the method registered for its class with :func:`on`.

    Made for typed decoding: a serializer built with a msgspec tagged union
    (``JSONSerializer(type=Ping | Echo)``) turns every message into an instance of one of the
    union's classes, and that class picks the method. Works on stream and datagram servers.

    - A message of a subclass of a routed class goes to that class's method (the most derived
      routed class in the message's MRO wins).
    - A message whose class has no route gets the reply ``error_response("no handler for ...")``
      and the connection stays open: never a crash.
    - A message that does not decode (`~protocols.DeserializeError`: malformed, an unknown tag,
      a field of the wrong type) gets ``error_response(error.reason)``, the decoder's words,
      and the connection stays open. A framing error closes the connection.
    - An exception raised by a routed method closes that connection only, as with
      `RequestResponseHandler`.

    Routes are collected per class when the class is created: a subclass inherits its bases'
    routes and may add more; routing an already routed class in a subclass replaces the
    inherited route. Overriding a routed method by name (with or without ``@on``) keeps its
    route and calls the override.

    Raises:
        TypeError: (at class creation) two methods of one class route the same message class,
            or a route's method was overridden by something that is not an ``async def``.

    Example::

        class Ping(msgspec.Struct, tag=True):
            id: int

        class Echo(msgspec.Struct, tag=True):
            text: str

        class Service(DispatchHandler[Ping | Echo, Any]):
            @on(Ping)
            async def ping(self, message: Ping, client: Any) -> dict[str, int]:
                return {"pong": message.id}

            @on(Echo)
            async def echo(self, message: Echo, client: Any) -> dict[str, str]:
                return {"echo": message.text}

        protocol = StreamProtocol(JSONSerializer(type=Ping | Echo))
        server = AsyncTCPServer("127.0.0.1", 9000, protocol, Service())
    """

    #: This class's routes: message class -> method (a plain function of the class).
    _routes: ClassVar[dict[type, _Route]] = {}
    #: ``_routes`` plus the classes resolved through their MRO (None: no route).
    _route_cache: ClassVar[dict[type, _Route | None]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: dict[type, str] = {}
        for klass in reversed(cls.__mro__):
            own: dict[type, str] = {}
            for name, value in vars(klass).items():
                if not inspect.isfunction(value):
                    continue
                for target in getattr(value, _TARGETS_ATTR, ()):
                    if own.get(target, name) != name:
                        raise TypeError(
                            f"{klass.__qualname__}: messages of {target.__qualname__} are "
                            f"routed to both {own[target]}() and {name}(); keep one @on("
                            f"{target.__qualname__})"
                        )
                    own[target] = name
            names.update(own)
        routes: dict[type, _Route] = {}
        for target, name in names.items():
            method = getattr(cls, name)
            if not inspect.iscoroutinefunction(method):
                raise TypeError(
                    f"{cls.__qualname__}.{name} handles {target.__qualname__} messages "
                    f"(@on in a base class) but is not an 'async def' method any more"
                )
            routes[target] = method
        cls._routes = routes
        cls._route_cache = dict(routes)

    def respond(self, request: RequestT, client: Any) -> Coroutine[Any, Any, ResponseT | None]:
        """Call the method routed for ``type(request)``, or answer with an error reply.

        Returns the routed method's coroutine (the server awaits it), so that dispatching
        costs a dict lookup and no coroutine of its own. A message with no route is answered
        with ``error_response(...)``.
        """
        # Nothing here may raise: the server expects a coroutine, and errors from it.
        cls = type(request)
        try:
            route = self._route_cache[cls]
        except KeyError:
            route = self._resolve(cls)
        if route is None:
            return self._reply_unrouted(cls)
        coro: Coroutine[Any, Any, ResponseT | None] = route(self, request, client)
        return coro

    @classmethod
    def _resolve(cls, message_class: type) -> _Route | None:
        """The route of the nearest routed class in ``message_class``'s MRO; cached."""
        routes = cls._routes
        route = next((routes[k] for k in message_class.__mro__ if k in routes), None)
        # Bounded: one entry per message class ever decoded, a fixed set in a program.
        cls._route_cache[message_class] = route
        return route

    async def _reply_unrouted(self, message_class: type) -> Any:
        handled = ", ".join(sorted(target.__qualname__ for target in self._routes)) or "none"
        return self.error_response(
            f"no handler for {message_class.__qualname__} messages (this server handles: {handled})"
        )

    async def on_bad_message(self, error: ProtocolError, client: Any) -> ResponseT | None:
        """Answer a message that did not decode with ``error_response(error.reason)``.

        A `~protocols.DeserializeError` (malformed input, an unknown tag, a failed
        validation) is answered and the connection goes on; any other
        `~protocols.ProtocolError` (a broken framing) is re-raised, which closes the
        connection.

        Args:
            error: What the decoder reported.
            client: The client the message came from.

        Returns:
            The error reply.
        """
        if isinstance(error, DeserializeError):
            response: ResponseT | None = self.error_response(error.reason)
            return response
        raise error

    def error_response(self, message: str) -> Any:
        """Build the reply to a message that cannot be handled; override to fit your protocol.

        Called for a message that does not decode (with the decoder's reason) and for a
        message whose class has no route. Return ``None`` to send nothing.

        Args:
            message: What was wrong, in words, for the peer.

        Returns:
            The reply to send; by default ``{"error": message}``. With a typed serializer,
            return an object it can encode (e.g. an ``Error`` Struct of your protocol).
        """
        return {"error": message}
