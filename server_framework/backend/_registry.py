"""Choosing a backend: one instance per loop name, detection of the running loop, and `run`.

Strategy: backends are stateless, so one instance per name is created on first use and cached
for the life of the process (``current()`` then costs a detection and a dict lookup). The
module of a loop (``_asyncio`` or ``_trio``) is imported when that loop is first asked for,
so a trio program never imports uvloop and an asyncio program never imports trio.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple, Unpack, get_args

import sniffio

from server_framework._signals import run_interruptible, signals_are_ours
from server_framework.backend._abc import AsyncBackend, BackendName

__all__ = ["current", "default_backend_name", "get_backend", "run"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_BACKEND_NAMES: tuple[BackendName, ...] = get_args(BackendName)
_backends: dict[str, AsyncBackend] = {}
_backends_lock = threading.Lock()


def get_backend(name: BackendName) -> AsyncBackend:
    """Return the backend for a loop name (one shared instance per name).

    Args:
        name: ``"asyncio"``, ``"uvloop"`` or ``"trio"``.

    Returns:
        The `AsyncBackend` for that loop.

    Raises:
        ValueError: Unknown name.
        ImportError: The loop's library is not installed (uvloop on Windows, for example).
    """
    try:
        return _backends[name]
    except KeyError:
        pass
    if name not in _BACKEND_NAMES:
        raise ValueError(
            f"unknown backend name {name!r}: use one of {', '.join(map(repr, _BACKEND_NAMES))}"
        )
    with _backends_lock:
        backend = _backends.get(name)
        if backend is None:
            backend = _create_backend(name)
            _backends[name] = backend
        return backend


def _create_backend(name: BackendName) -> AsyncBackend:
    if name == "trio":
        from server_framework.backend._trio import TrioBackend  # noqa: PLC0415

        return TrioBackend()
    if name == "uvloop":
        import uvloop  # noqa: F401, PLC0415  (fail here, not in run(), if it is missing)
    from server_framework.backend._asyncio import AsyncIOBackend  # noqa: PLC0415

    return AsyncIOBackend(name)


def current() -> AsyncBackend:
    """Return the backend of the event loop running in this thread.

    Detection uses sniffio (which also covers trio and asyncio tasks); an asyncio or uvloop
    loop is also found from a plain callback (such as ``Protocol.data_received``), where
    sniffio sees no task. A uvloop loop gives the ``"uvloop"`` backend.

    Returns:
        The `AsyncBackend` for the running loop.

    Raises:
        RuntimeError: No supported event loop is running in this thread (for example, in a
            worker thread: pass the backend along, or use a `ThreadsPortal`).
    """
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = None
    if library == "trio":
        return get_backend("trio")
    # asyncio is imported if and only if an asyncio loop can be running.
    if library in ("asyncio", None) and "asyncio" in sys.modules:
        from server_framework.backend._asyncio import detect_backend_name  # noqa: PLC0415

        name = detect_backend_name()
        if name is not None:
            return get_backend(name)
    raise RuntimeError(
        f"no supported event loop is running in this thread (sniffio says {library!r}); "
        "call this from a task of an asyncio, uvloop or trio loop, e.g. inside "
        "server_framework.run(main)"
    )


@functools.cache
def default_backend_name() -> BackendName:
    """The loop `run` uses when none is named: ``"uvloop"`` where importable, else ``"asyncio"``.

    Returns:
        ``"uvloop"`` or ``"asyncio"`` (found once, without importing uvloop).
    """
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def run(
    main: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]],
    *args: *_Ts,
    backend: BackendName | None = None,
    handle_signals: bool = True,
) -> _T:
    """Run ``main(*args)`` to completion in a new event loop and return its result.

    asyncio runs in an ``asyncio.Runner``, uvloop in an ``asyncio.Runner`` with
    ``loop_factory=uvloop.new_event_loop``, trio with ``trio.run``. When it returns, the loop is
    closed and its worker threads (asyncio's default executor) are joined.

    Ctrl-C and SIGTERM, as the command line handles them: in the main thread, unless the
    program installed its own handlers or ignores the signal (as under ``nohup``), or
    ``handle_signals`` is False, the first SIGINT or
    SIGTERM stops every server serving in this run gracefully (no new connection; requests in
    progress get the server's ``shutdown_timeout`` to finish) and ``main`` goes on from its
    ``serve_forever``; with no server serving, ``main`` is cancelled. After a SIGINT, ``run``
    then raises ``SystemExit(130)``: the program ends with the code a shell expects of an
    interrupted program, without a ``KeyboardInterrupt`` traceback. A second Ctrl-C exits at
    once (130), even if a handler blocks the loop. After a SIGTERM, ``run`` returns ``main``'s
    result (``SystemExit(143)`` if ``main`` was cancelled).

    Args:
        main: The coroutine function to run.
        *args: Positional arguments for ``main``.
        backend: The loop to use; None means `default_backend_name()`.
        handle_signals: Handle SIGINT and SIGTERM as above (main thread only); False leaves
            Python's default behaviour (``KeyboardInterrupt``).

    Returns:
        What ``main`` returns.

    Raises:
        ValueError: Unknown backend name.
        RuntimeError: Called while an event loop is running in this thread.
        SystemExit: After Ctrl-C (130), or a SIGTERM that found no server to stop (143).
        Exception: Whatever ``main`` raises.
    """
    name = default_backend_name() if backend is None else backend
    get_backend(name)  # validates the name and imports the loop's library
    signums = signals_are_ours() if handle_signals else ()
    if signums:
        outcome = _run(name, _interruptible, (main, args, signums))
        result, exit_code = outcome
        if exit_code is not None:
            raise SystemExit(exit_code)
        return result  # type: ignore[no-any-return]
    return _run(name, main, args)


async def _interruptible(
    main: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...], signums: tuple[int, ...]
) -> tuple[Any, int | None]:
    return await run_interruptible(current(), main, args, signums)


def _run(
    name: BackendName,
    main: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]],
    args: tuple[*_Ts],
) -> _T:
    if name == "trio":
        from server_framework.backend import _trio  # noqa: PLC0415

        return _trio.run(main, args)
    from server_framework.backend import _asyncio  # noqa: PLC0415

    return _asyncio.run(main, args, use_uvloop=name == "uvloop")
