"""The backend interface: what the runtime may ask of an event loop, and nothing more.

Strategy. Servers, clients and handlers talk to one `AsyncBackend` object; one module per loop
implements it (``_asyncio.py`` for asyncio and uvloop, ``_trio.py`` for trio) and is imported
only when that loop is chosen, so nothing above this layer imports asyncio or trio.

The primitives it hands out (events, locks, conditions, cancel scopes, task groups, task
handles) are declared in ``_primitives``, the threads portal in ``_portal``; neither imports
this module.
"""

from __future__ import annotations

import concurrent.futures
import math
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack

from server_framework.backend._portal import ThreadsPortal
from server_framework.backend._primitives import CancelScope, Condition, Event, Lock, TaskGroup

__all__ = ["AsyncBackend", "BackendName"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

BackendName = Literal["asyncio", "uvloop", "trio"]
"""The name of an event loop: ``"asyncio"``, ``"uvloop"`` (asyncio's API on libuv) or ``"trio"``."""

#: One entry of `AsyncBackend.getaddrinfo` (internal alias, for the loop modules' annotations).
AddrInfo = tuple[
    socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int] | tuple[str, int, int, int]
]


class AsyncBackend(ABC):
    """One event loop's primitives, behind one interface (asyncio, uvloop or trio).

    Get the backend of the running loop with `server_framework.backend.current`, or one by name
    with `server_framework.backend.get_backend`; there is one instance per name. Every method
    but `name`, `create_*`, `get_cancelled_exc_class`, `open_cancel_scope`, `timeout_at` and
    `move_on_at` must be called from a task running in that loop.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def name(self) -> BackendName:
        """The loop's name: ``"asyncio"``, ``"uvloop"`` or ``"trio"``."""

    @abstractmethod
    async def sleep(self, delay: float) -> None:
        """Sleep for ``delay`` seconds (0 just lets other tasks run).

        Cancellation:
            A cancellation point.
        """

    @abstractmethod
    async def sleep_forever(self) -> None:
        """Sleep until cancelled.

        Cancellation:
            The only way out.
        """

    @abstractmethod
    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the `current_time` clock reaches ``deadline``.

        When this returns, ``current_time() >= deadline``. A deadline already past just lets
        other tasks run; ``math.inf`` sleeps until cancelled.

        Cancellation:
            A cancellation point.
        """

    @abstractmethod
    def current_time(self) -> float:
        """The loop's monotonic clock, in seconds; deadlines are expressed on it."""

    @abstractmethod
    async def checkpoint(self) -> None:
        """Let other tasks run, and raise if this task has been cancelled.

        Cancellation:
            A cancellation point.
        """

    @abstractmethod
    def create_event(self) -> Event:
        """Create an `Event` for this loop."""

    @abstractmethod
    def create_lock(self) -> Lock:
        """Create a `Lock` for this loop."""

    @abstractmethod
    def create_fair_lock(self) -> Lock:
        """Create a `Lock` that is handed over in strict first-come, first-served order.

        On release, the lock goes to the task that has waited longest, even if the releasing
        task asks for it again at once (it queues behind the waiters). Use it where the order
        of critical sections matters, for example writes to one stream from several tasks.
        On every supported loop, `create_lock` returns such a lock too (``asyncio.Lock`` and
        ``trio.Lock`` hand over to the first waiter); this method states the requirement, and
        its lock works with `create_condition`.
        """

    @abstractmethod
    def create_condition(self, lock: Lock | None = None) -> Condition:
        """Create a `Condition` for this loop.

        Args:
            lock: The lock the condition uses, from this backend's `create_lock` or
                `create_fair_lock`; by default, a new one.

        Raises:
            TypeError: ``lock`` is not one of this loop's locks (another library's lock, or an
                asyncio lock already bound to another event loop).
        """

    @abstractmethod
    def create_task_group(self) -> TaskGroup:
        """Create a `TaskGroup`; enter it with ``async with``."""

    @abstractmethod
    def open_cancel_scope(self, *, deadline: float = math.inf) -> CancelScope:
        """A `CancelScope` to cancel a block on request (`CancelScope.cancel`) or at a deadline.

        Like `move_on_at`: the scope swallows its own cancellation and execution goes on after
        the block; it never raises `TimeoutError`.

        Args:
            deadline: An absolute deadline on the `current_time` clock; ``math.inf`` (the
                default) for none. It can be changed later through `CancelScope.deadline`.
        """

    @abstractmethod
    def timeout(self, delay: float) -> CancelScope:
        """A scope that raises `TimeoutError` if its block runs longer than ``delay`` seconds.

        Args:
            delay: Seconds from now; ``math.inf`` for no deadline.

        Raises:
            TimeoutError: (on exit) the block was cancelled at the deadline. An error raised by
                the block itself, `TimeoutError` included, propagates unchanged. A call to the
                scope's `~CancelScope.cancel` before the deadline is not a timeout: the scope
                swallows that cancellation instead.
        """

    @abstractmethod
    def timeout_at(self, deadline: float) -> CancelScope:
        """Like `timeout`, with an absolute deadline on the `current_time` clock."""

    @abstractmethod
    def move_on_after(self, delay: float) -> CancelScope:
        """A scope that cancels its block after ``delay`` seconds and carries on after it.

        Check ``scope.cancelled_caught`` to know whether the deadline expired.

        Args:
            delay: Seconds from now; ``math.inf`` for no deadline.
        """

    @abstractmethod
    def move_on_at(self, deadline: float) -> CancelScope:
        """Like `move_on_after`, with an absolute deadline on the `current_time` clock."""

    @abstractmethod
    async def cancel_shielded(
        self, coro_fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, _T]], *args: *_Ts
    ) -> _T:
        """Run ``await coro_fn(*args)`` protected from outside cancellation (e.g. cleanup).

        Args:
            coro_fn: A coroutine function.
            *args: Positional arguments for ``coro_fn``.

        Returns:
            What the coroutine returns.

        Raises:
            Exception: Whatever the coroutine raises (it wins over a pending cancellation).

        Cancellation:
            The coroutine runs to the end even if the calling task is cancelled meanwhile;
            the cancellation is then delivered when it has finished (its result is
            discarded). On asyncio the coroutine runs in a separate task, in a copy of the
            caller's `contextvars` context (changes it makes to context variables are not
            seen by the caller); on trio it runs in the calling task.
        """

    @abstractmethod
    def get_cancelled_exc_class(self) -> type[BaseException]:
        """The loop's cancellation exception (``asyncio.CancelledError`` or ``trio.Cancelled``).

        Catch it only to clean up, and always re-raise it.
        """

    @abstractmethod
    async def run_in_thread(
        self, fn: Callable[..., _T], /, *args: Any, abandon_on_cancel: bool = False, **kwargs: Any
    ) -> _T:
        """Run ``fn(*args, **kwargs)`` in a worker thread and return its result.

        The worker pool is bounded (see the backend's class documentation), so blocking calls
        cannot exhaust the process's threads; calls beyond the bound wait for a free worker.
        The caller's `contextvars` context is copied into the thread, so a structlog binding
        made in a handler shows up in the worker's log lines (changes made by ``fn`` do not
        flow back).

        Args:
            fn: A blocking callable.
            *args: Positional arguments for ``fn``.
            abandon_on_cancel: What cancellation does once ``fn`` is running (see below).
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            What ``fn`` returns.

        Raises:
            Exception: Whatever ``fn`` raises.

        Cancellation:
            If the call is still waiting for a worker, it is withdrawn and the cancellation is
            raised at once. Once ``fn`` runs, by default the task waits for it to return and
            then raises the cancellation (the result is discarded): a cancelled task never
            leaves work behind. With ``abandon_on_cancel=True`` the task stops waiting at once;
            ``fn`` finishes in the background and its outcome is discarded.
        """

    @abstractmethod
    async def getaddrinfo(  # noqa: PLR0917  (socket.getaddrinfo's signature)
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[
        tuple[
            socket.AddressFamily,
            socket.SocketKind,
            int,
            str,
            tuple[str, int] | tuple[str, int, int, int],
        ]
    ]:
        """Resolve ``host`` and ``port`` without blocking the loop, like `socket.getaddrinfo`.

        Each loop's own resolver is used: ``loop.getaddrinfo`` on asyncio (the default
        executor's threads) and uvloop (libuv's thread pool), ``trio.socket.getaddrinfo`` on
        trio (which answers numeric addresses without a thread and honours
        ``trio.socket.set_custom_hostname_resolver``).

        Args:
            host: A host name or a numeric address; None for the local host (with
                ``AI_PASSIVE``, the wildcard address).
            port: A port number or a service name; None for no port.
            family: ``socket.AF_INET``, ``socket.AF_INET6``... (0: any).
            type: ``socket.SOCK_STREAM``, ``socket.SOCK_DGRAM``... (0: any).
            proto: A protocol number (0: any).
            flags: ``socket.AI_*`` flags.

        Returns:
            ``(family, type, proto, canonname, sockaddr)`` tuples, as `socket.getaddrinfo`.

        Raises:
            socket.gaierror: The name could not be resolved.

        Cancellation:
            A cancellation point; a lookup running in a thread is abandoned (it finishes in the
            background, its result discarded).
        """

    @abstractmethod
    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int = 0
    ) -> tuple[str, str]:
        """Look up the host and service names of ``sockaddr``, like `socket.getnameinfo`.

        Uses the loop's own resolver, as `getaddrinfo` does.

        Args:
            sockaddr: An ``(address, port)`` or ``(address, port, flowinfo, scope_id)`` tuple.
            flags: ``socket.NI_*`` flags.

        Returns:
            ``(host, service)``.

        Raises:
            socket.gaierror: The address could not be looked up.

        Cancellation:
            A cancellation point; a lookup running in a thread is abandoned.
        """

    @abstractmethod
    def create_threads_portal(self) -> ThreadsPortal:
        """Create a `ThreadsPortal` for this loop; enter it with ``async with`` in the loop."""

    @abstractmethod
    async def _wait_future(
        self, future: concurrent.futures.Future[_T], abandon_on_cancel: bool
    ) -> _T:
        """Wait for a call submitted to an executor (for `AsyncExecutor`); return its result.

        Internal to server_framework: same semantics as `run_in_thread` once submitted. On
        cancellation, ``future.cancel()`` tells atomically whether the call never runs (it was
        still queued) or is running (then it is waited for, unless abandoned).

        Raises:
            concurrent.futures.CancelledError: The executor cancelled the call (for example,
                ``shutdown(cancel_futures=True)``) before it started.
        """
