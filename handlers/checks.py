"""Checks, when a server is built, that a handler's methods are of the kind the server calls.

A ``handle`` without ``yield`` (a coroutine, not an async generator), a hook written as a plain
``def`` where the server awaits it (``on_connection`` may be either a coroutine or an async
generator: one that receives requests before ``handle``), or a method taking the wrong
arguments would otherwise let the server start, then fail every connection with internal
tracebacks while the client sees a close. :func:`check_handler` raises one :class:`TypeError`
instead, naming the class, the method and the fix; servers call it when they are built (and
so the command line at start-up, exit code 3).

Only what the handler's own classes define is checked: what it inherits from this package is
right as it is (``DispatchHandler.respond`` is a plain ``def`` that returns a coroutine, for
instance). A method that is not a plain Python function (a callable object, a
``functools.partial``...) is taken as it is: whether it returns the right kind of object is
not known before it is called.
"""

from __future__ import annotations

import inspect
from typing import Any, Final, Literal

from handlers.request_response import RequestResponseHandler
from handlers.threaded import ThreadedHandler

__all__ = ["check_handler"]

_Kind = Literal["async generator", "coroutine", "plain", "coroutine or async generator"]

#: The hooks the servers call, with their parameters (after ``self``) and how they are written
#: (``on_connection`` either way: an async generator receives requests before ``handle``).
_STREAM: Final[dict[str, tuple[tuple[str, ...], _Kind]]] = {
    "handle": (("client",), "async generator"),
    "on_connection": (("client",), "coroutine or async generator"),
    "on_disconnection": (("client",), "coroutine"),
    "on_refused": (("client", "reason"), "coroutine"),
    "service_init": (("exit_stack", "server"), "coroutine"),
}
_DATAGRAM: Final[dict[str, tuple[tuple[str, ...], _Kind]]] = {
    "handle": (("client",), "async generator"),
    "service_init": (("exit_stack", "server"), "coroutine"),
}
#: ``RequestResponseHandler``'s own hooks (plain ``def`` in a ``ThreadedHandler``: they run in
#: worker threads).
_RESPONDER: Final[dict[str, tuple[str, ...]]] = {
    "respond": ("request", "client"),
    "on_bad_message": ("error", "client"),
}


def check_handler(handler: Any, transport: Literal["stream", "datagram"]) -> None:
    """Check ``handler``'s methods for a server of that kind of transport (servers call it
    when they are built; call it in a test to check a handler without a server).

    Example::

        check_handler(EchoHandler(), "stream")      # returns None: nothing wrong

    Raises:
        TypeError: a method of the handler's class is not of the kind the server calls (not
            ``async``, not an async generator where one is required, or not taking the
            arguments the server passes); the message names the class, the method and the fix.
    """
    hooks = dict(_STREAM if transport == "stream" else _DATAGRAM)
    if isinstance(handler, RequestResponseHandler):
        for name, params in _RESPONDER.items():
            hooks[name] = (params, "coroutine")
    elif isinstance(handler, ThreadedHandler):
        for name, params in _RESPONDER.items():
            hooks[name] = (params, "plain")
    for name, (params, kind) in hooks.items():
        owner, function = _own_definition(type(handler), name)
        if function is not None:
            _check_method(owner, name, function, params, kind)


def _own_definition(cls: type, name: str) -> tuple[str, Any]:
    """The class that defines ``name`` first in ``cls``'s MRO and its function, or ``("",
    None)`` if that class is this package's own."""
    for klass in cls.__mro__:
        if name in vars(klass):
            if klass.__module__.split(".")[0] == "handlers":
                return "", None
            function = vars(klass)[name]
            if isinstance(function, staticmethod | classmethod):
                return "", None  # not called with the handler as self: left alone
            return klass.__qualname__, function
    return "", None


def _kind_of(function: Any) -> str | None:
    """How ``function`` is written, or None if it is not a plain Python function."""
    function = inspect.unwrap(function)
    if inspect.isasyncgenfunction(function):
        return "async generator"
    if inspect.iscoroutinefunction(function):
        return "coroutine"
    if inspect.isgeneratorfunction(function):
        return "generator"
    if inspect.isfunction(function):
        return "plain"
    return None


def _check_method(owner: str, name: str, function: Any, params: tuple[str, ...], kind: str) -> None:
    where = f"{owner}.{name}"
    signature = ", ".join(("self", *params))
    actual = _kind_of(function)
    if actual is None:
        return
    if actual != kind and not (
        kind == "coroutine or async generator" and actual in ("coroutine", "async generator")
    ):
        raise TypeError(f"{where} {_fix(name, signature, kind, actual)}")
    try:
        defined = inspect.signature(function)
    except ValueError:  # pragma: no cover - a signature inspect cannot read
        return
    try:
        defined.bind(None, *params)
    except TypeError:
        names = ", ".join(_parameter_text(p) for p in defined.parameters.values())
        raise TypeError(
            f"{where} must take ({signature}): the server calls it with "
            f"{len(params)} argument{'s' if len(params) > 1 else ''}; it takes ({names})"
        ) from None


def _parameter_text(parameter: inspect.Parameter) -> str:
    if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
        return "*" + parameter.name
    if parameter.kind is inspect.Parameter.VAR_KEYWORD:
        return "**" + parameter.name
    return parameter.name


def _fix(name: str, signature: str, kind: str, actual: str) -> str:
    """The rest of the message: what is wrong, and how to write it."""
    written = {
        "plain": "a plain def",
        "coroutine": "async def without yield",
        "generator": "a def with yield",
        "async generator": "async def with yield",
    }[actual]
    if kind == "async generator":
        return (
            f"must be an async generator: write async def {name}({signature}) and receive each "
            f"request with request = yield (it is {written})"
        )
    if kind == "coroutine":
        return (
            f"must be a coroutine function: write async def {name}({signature}) without yield "
            f"(it is {written})"
        )
    if kind == "coroutine or async generator":
        return (
            f"must be a coroutine function: write async def {name}({signature}), with "
            f"request = yield only to receive requests before handle() (it is {written})"
        )
    return (
        f"runs in a worker thread, so it must be a plain function: write def {name}({signature}) "
        f"(it is {written}); for async code subclass RequestResponseHandler instead"
    )
