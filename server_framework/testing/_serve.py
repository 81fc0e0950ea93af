"""``serve_in_background``: a handler served on a free port for the length of a block.

One object, two ways in:

- ``with serve_in_background(...) as served:`` (a plain test): a ``Standalone*`` server runs
  in a thread of its own, on the loop named by ``backend``; ``served.client`` is a blocking
  client. Leaving the block closes the clients, shuts the server down, joins the thread.
- ``async with serve_in_background(...) as served:`` (an async test on asyncio, uvloop or
  trio): the server runs in a task of the running loop; ``served.client`` is an async client.
  Leaving the block closes the clients, shuts the server down and waits for its task.

Either way the block's own exception comes out unchanged (never wrapped in an exception
group), the temporary directory of a Unix socket is removed, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl as _ssl
import tempfile
import threading
from typing import Any, Generic, Literal, TypeAlias, TypeVar, get_args

from handlers import DatagramRequestHandler, StreamRequestHandler
from protocols import DatagramProtocol, StreamProtocol
from server_framework.backend import (
    AsyncBackend,
    BackendName,
    TaskGroup,
    current,
    default_backend_name,
)
from server_framework.clients import (
    AsyncTCPClient,
    AsyncUDPClient,
    AsyncUnixDatagramClient,
    AsyncUnixStreamClient,
    TCPClient,
    UDPClient,
    UnixDatagramClient,
    UnixStreamClient,
)
from server_framework.servers import (
    AsyncBaseServer,
    AsyncTCPServer,
    AsyncUDPServer,
    AsyncUnixDatagramServer,
    AsyncUnixStreamServer,
    StandaloneServer,
    StandaloneTCPServer,
    StandaloneUDPServer,
    StandaloneUnixDatagramServer,
    StandaloneUnixStreamServer,
)
from server_framework.sockets import Address

from ._clients import DEFAULT_TIMEOUT, AnyAsyncClient, AnyBlockingClient, AsyncClient, Client
from ._tls import tls_contexts
from .faults import open_socket

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "AsyncServed",
    "ServeFactory",
    "ServeInBackground",
    "Served",
    "Transport",
    "serve_in_background",
]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

#: The transports, named as the command line and the logs name them.
Transport: TypeAlias = Literal["tcp", "tls", "udp", "unix", "unix-datagram"]
_TRANSPORTS: tuple[str, ...] = get_args(Transport)
_STREAM_TRANSPORTS = ("tcp", "tls", "unix")

#: The servers' grace period for requests in progress at shutdown, unless ``shutdown_timeout=``
#: says otherwise: a test should not wait the production default (10 s) for a stuck handler.
SHUTDOWN_TIMEOUT = 1.0

#: How long the server thread may take to start, and to stop beyond the grace period.
_THREAD_TIMEOUT = 30.0

_Handler: TypeAlias = (
    StreamRequestHandler[RequestT, ResponseT] | DatagramRequestHandler[RequestT, ResponseT]
)
_Protocol: TypeAlias = StreamProtocol[ResponseT, RequestT] | DatagramProtocol[ResponseT, RequestT]
_ClientProtocol: TypeAlias = (
    StreamProtocol[RequestT, ResponseT] | DatagramProtocol[RequestT, ResponseT]
)


class _Plan(Generic[RequestT, ResponseT]):
    """What to serve, and how clients reach it: the part both ways in share."""

    def __init__(
        self,
        handler: _Handler[RequestT, ResponseT],
        protocol: _Protocol[RequestT, ResponseT],
        *,
        transport: Transport | None,
        host: str,
        ssl: _ssl.SSLContext | None,
        client_ssl: _ssl.SSLContext | None,
        client_protocol: _ClientProtocol[RequestT, ResponseT] | None,
        timeout: float,
        server_options: dict[str, Any],
    ) -> None:
        stream = isinstance(protocol, StreamProtocol)
        if not stream and not isinstance(protocol, DatagramProtocol):
            raise TypeError(
                f"protocol must be a StreamProtocol or a DatagramProtocol, got {protocol!r}"
            )
        if transport is None:
            transport = ("tls" if ssl is not None else "tcp") if stream else "udp"
        elif transport == "tcp" and ssl is not None:
            transport = "tls"
        if transport not in _TRANSPORTS:
            raise ValueError(
                f"unknown transport {transport!r}: use one of {', '.join(map(repr, _TRANSPORTS))}"
            )
        if stream != (transport in _STREAM_TRANSPORTS):
            kind = "StreamProtocol" if stream else "DatagramProtocol"
            fits = "'tcp', 'tls' or 'unix'" if stream else "'udp' or 'unix-datagram'"
            raise ValueError(f"a {kind} is served over {fits}, not {transport!r}")
        if transport != "tls" and (ssl is not None or client_ssl is not None):
            raise ValueError(f"ssl= and client_ssl= are for TLS, not {transport!r}")
        if transport == "tls":
            if ssl is None and client_ssl is None:
                ssl, client_ssl = tls_contexts()
            elif ssl is None or client_ssl is None:
                raise ValueError(
                    "pass both ssl= (the server's context) and client_ssl= (a client context "
                    "that trusts its certificate), or neither for a throwaway certificate"
                )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        server_options.setdefault("shutdown_timeout", SHUTDOWN_TIMEOUT)
        if transport == "tls":
            server_options["ssl"] = ssl
        self.handler = handler
        self.protocol = protocol
        self.transport: Transport = transport
        self.host = host
        self.client_ssl = client_ssl
        self.client_protocol: Any = protocol if client_protocol is None else client_protocol
        self.timeout = timeout
        self.server_options = server_options
        self.unix = transport in ("unix", "unix-datagram")

    def server_path(self, directory: str) -> str:
        return os.path.join(directory, "server.sock")

    def standalone(
        self, directory: str | None, backend: BackendName | None
    ) -> StandaloneServer[Any]:
        handler: Any = self.handler
        protocol: Any = self.protocol
        options = self.server_options
        if self.transport in ("tcp", "tls"):
            return StandaloneTCPServer(self.host, 0, protocol, handler, backend=backend, **options)
        if self.transport == "udp":
            return StandaloneUDPServer(self.host, 0, protocol, handler, backend=backend, **options)
        assert directory is not None
        path = self.server_path(directory)
        if self.transport == "unix":
            return StandaloneUnixStreamServer(path, protocol, handler, backend=backend, **options)
        return StandaloneUnixDatagramServer(path, protocol, handler, backend=backend, **options)

    def async_server(self, directory: str | None) -> AsyncBaseServer[Any]:
        handler: Any = self.handler
        protocol: Any = self.protocol
        options = self.server_options
        if self.transport in ("tcp", "tls"):
            return AsyncTCPServer(self.host, 0, protocol, handler, **options)
        if self.transport == "udp":
            return AsyncUDPServer(self.host, 0, protocol, handler, **options)
        assert directory is not None
        path = self.server_path(directory)
        if self.transport == "unix":
            return AsyncUnixStreamServer(path, protocol, handler, **options)
        return AsyncUnixDatagramServer(path, protocol, handler, **options)


def _reachable(address: Address) -> Address:
    """The address a client connects to: loopback for a server bound to every interface."""
    if isinstance(address, tuple) and address[0] in ("0.0.0.0", "::", ""):
        return ("::1" if address[0] == "::" else "127.0.0.1", address[1])
    return address


class _Clients:
    """Client bookkeeping shared by `Served` and `AsyncServed`: local paths for Unix datagram
    clients (inside the serving's temporary directory) and the sockets to close."""

    def __init__(self, plan: _Plan[Any, Any], address: Address, directory: str | None) -> None:
        self.plan = plan
        self.address = _reachable(address)
        self.directory = directory
        self.count = 0
        self.sockets: list[socket.socket] = []

    def local_path(self) -> str:
        assert self.directory is not None
        self.count += 1
        return os.path.join(self.directory, f"client-{self.count}.sock")

    def open_socket(self) -> socket.socket:
        plan, address = self.plan, self.address
        if plan.transport in _STREAM_TRANSPORTS:
            sock = open_socket(address, ssl=plan.client_ssl, timeout=plan.timeout)
        elif isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self.local_path())
                sock.settimeout(plan.timeout)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.socket(
                socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_DGRAM
            )
            try:
                sock.settimeout(plan.timeout)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
        self.sockets.append(sock)
        return sock

    def close_sockets(self) -> None:
        sockets, self.sockets = self.sockets, []
        for sock in sockets:
            sock.close()


class Served(Generic[RequestT, ResponseT]):
    """What ``with serve_in_background(...) as served:`` gives: the running server, a client.

    Attributes:
        address: The server's address: ``(host, port)``, or the Unix socket's path.
        transport: ``"tcp"``, ``"tls"``, ``"udp"``, ``"unix"`` or ``"unix-datagram"``.
        backend_name: The loop the server runs on, in its thread.
        server: The `~server_framework.servers.StandaloneServer` (its ``.server`` is the
            asynchronous server, e.g. for ``dropped_datagrams``).
        client_ssl: The client-side TLS context of a ``"tls"`` serving (else None), for
            clients of your own.
    """

    def __init__(
        self,
        plan: _Plan[RequestT, ResponseT],
        server: StandaloneServer[Any],
        backend_name: BackendName,
        directory: str | None,
    ) -> None:
        self.address: Address = server.get_addresses()[0]
        self.transport: Transport = plan.transport
        self.backend_name: BackendName = backend_name
        self.server = server
        self.client_ssl = plan.client_ssl
        self._plan = plan
        self._clients = _Clients(plan, self.address, directory)
        self._opened: list[Client[RequestT, ResponseT]] = []
        self._client: Client[RequestT, ResponseT] | None = None

    @property
    def client(self) -> Client[RequestT, ResponseT]:
        """A connected blocking client, opened with the server (see `Client`)."""
        assert self._client is not None, "the serving is not entered"
        return self._client

    def connect(self, timeout: float | None = None) -> Client[RequestT, ResponseT]:
        """Open another blocking client; it is closed with the serving (or by you, earlier).

        Args:
            timeout: Its default timeout (default: the serving's ``timeout``).

        Raises:
            OSError: the connection failed.
        """
        plan = self._plan
        wrapped: AnyBlockingClient[RequestT, ResponseT] = _new_client(
            plan, self._clients, (TCPClient, UDPClient, UnixStreamClient, UnixDatagramClient)
        )
        client = Client(wrapped, plan.timeout if timeout is None else timeout)
        self._opened.append(client)
        return client

    def open_socket(self) -> socket.socket:
        """A plain blocking socket connected to the server (TLS done, for ``"tls"``), for
        bytes no client would send (see `server_framework.testing.faults`); closed with the
        serving. Its timeout is the serving's ``timeout``."""
        return self._clients.open_socket()

    def _close_clients(self) -> None:
        opened, self._opened = self._opened, []
        try:
            for client in reversed(opened):
                client.close()
        finally:
            self._clients.close_sockets()


class AsyncServed(Generic[RequestT, ResponseT]):
    """What ``async with serve_in_background(...) as served:`` gives.

    Attributes:
        address: The server's address: ``(host, port)``, or the Unix socket's path.
        transport: ``"tcp"``, ``"tls"``, ``"udp"``, ``"unix"`` or ``"unix-datagram"``.
        backend: The running loop's `~server_framework.backend.AsyncBackend`, the server's:
            ``await served.backend.run_in_thread(blocking_fn)`` runs blocking test code
            (a `~server_framework.testing.faults` helper) without stopping the server.
        server: The asynchronous server (entered, serving in a task).
        client_ssl: The client-side TLS context of a ``"tls"`` serving (else None).
    """

    def __init__(
        self,
        plan: _Plan[RequestT, ResponseT],
        server: AsyncBaseServer[Any],
        backend: AsyncBackend,
        directory: str | None,
    ) -> None:
        self.address: Address = server.get_addresses()[0]
        self.transport: Transport = plan.transport
        self.backend = backend
        self.server = server
        self.client_ssl = plan.client_ssl
        self._plan = plan
        self._clients = _Clients(plan, self.address, directory)
        self._opened: list[AsyncClient[RequestT, ResponseT]] = []
        self._client: AsyncClient[RequestT, ResponseT] | None = None

    @property
    def backend_name(self) -> BackendName:
        """The running loop's name: ``"asyncio"``, ``"uvloop"`` or ``"trio"``."""
        return self.backend.name

    @property
    def client(self) -> AsyncClient[RequestT, ResponseT]:
        """A connected async client, opened with the server (see `AsyncClient`)."""
        assert self._client is not None, "the serving is not entered"
        return self._client

    async def connect(self, timeout: float | None = None) -> AsyncClient[RequestT, ResponseT]:
        """Open another async client; it is closed with the serving (or by you, earlier).

        Args:
            timeout: Its default timeout (default: the serving's ``timeout``).

        Raises:
            OSError: the connection failed.
        """
        plan = self._plan
        kinds = (AsyncTCPClient, AsyncUDPClient, AsyncUnixStreamClient, AsyncUnixDatagramClient)
        wrapped: AnyAsyncClient[RequestT, ResponseT] = _new_client(plan, self._clients, kinds)
        await wrapped.connect()
        client = AsyncClient(wrapped, plan.timeout if timeout is None else timeout)
        self._opened.append(client)
        return client

    def open_socket(self) -> socket.socket:
        """A plain *blocking* socket connected to the server (as `Served.open_socket`).

        Use it from a worker thread (``served.backend.run_in_thread``): blocking calls in the
        test's task would stop the loop that runs the server.
        """
        return self._clients.open_socket()

    async def _close_clients(self) -> None:
        opened, self._opened = self._opened, []
        try:
            async with contextlib.AsyncExitStack() as stack:
                for client in opened:
                    stack.push_async_callback(client.aclose)
        finally:
            self._clients.close_sockets()


class ServeInBackground(Generic[RequestT, ResponseT]):
    """A handler served for the length of a ``with`` or ``async with`` block.

    Made by `serve_in_background` (see there); it can be entered once.
    """

    def __init__(self, plan: _Plan[RequestT, ResponseT], backend: BackendName | None) -> None:
        self._plan = plan
        self._backend = backend
        self._entered = False
        self._exited = False
        self._directory: str | None = None
        # the `with` form
        self._served: Served[RequestT, ResponseT] | None = None
        self._standalone: StandaloneServer[Any] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        # the `async with` form
        self._aserved: AsyncServed[RequestT, ResponseT] | None = None
        self._task_group: TaskGroup | None = None

    @property
    def is_open(self) -> bool:
        """True once entered and until exited (for fixtures that clean up after a test)."""
        return self._entered and not self._exited

    @property
    def is_async(self) -> bool:
        """True if it was entered with ``async with``."""
        return self._aserved is not None or self._task_group is not None

    def _enter(self) -> None:
        if self._entered:
            raise RuntimeError("a serve_in_background(...) can be entered only once: make another")
        self._entered = True
        if self._plan.unix:
            self._directory = tempfile.mkdtemp(prefix="sf-test-")

    def _remove_directory(self) -> None:
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    # -- with --------------------------------------------------------------------------------

    def __enter__(self) -> Served[RequestT, ResponseT]:
        self._enter()
        plan = self._plan
        try:
            standalone = self._standalone = plan.standalone(self._directory, self._backend)
        except BaseException:
            self._exited = True
            self._remove_directory()
            raise
        backend_name = self._backend or default_backend_name()
        served = self._served = Served(plan, standalone, backend_name, self._directory)
        thread = self._thread = threading.Thread(
            target=self._serve, name=f"sf-testing {plan.transport} server", daemon=True
        )
        try:
            thread.start()
            if not standalone.wait_started(_THREAD_TIMEOUT):
                raise TimeoutError(f"the server did not start within {_THREAD_TIMEOUT} s")
            if not standalone.get_addresses():  # start-up failed: it closed its sockets
                thread.join(_THREAD_TIMEOUT)
                if self._error is not None:
                    raise self._error
                raise RuntimeError("the server stopped as it started")
            served._client = served.connect()
        except BaseException as exc:
            self._close_sync(exc)
            raise
        return served

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._close_sync(exc)

    def _serve(self) -> None:
        assert self._standalone is not None
        try:
            self._standalone.serve_forever()
        except BaseException as exc:  # reported by the `with` block's exit
            self._error = exc

    def _close_sync(self, exc: BaseException | None) -> None:
        if self._exited:
            return
        self._exited = True
        standalone, thread, served = self._standalone, self._thread, self._served
        assert standalone is not None
        assert thread is not None
        assert served is not None
        grace = float(self._plan.server_options["shutdown_timeout"])
        try:
            try:
                served._close_clients()
            finally:
                if thread.is_alive() or thread.ident is None:
                    standalone.shutdown(grace + _THREAD_TIMEOUT)
                if thread.ident is not None:
                    thread.join(_THREAD_TIMEOUT)
                standalone.server_close()
        finally:
            self._remove_directory()
        if thread.is_alive():
            raise RuntimeError(f"the server thread did not stop within {_THREAD_TIMEOUT} s")
        error, self._error = self._error, None
        if error is not None:
            if exc is None:
                raise error
            exc.add_note(f"(and the server failed: {error!r})")

    # -- async with --------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncServed[RequestT, ResponseT]:
        backend = current()
        if self._backend is not None and self._backend != backend.name:
            raise ValueError(
                f"backend={self._backend!r}, but the running loop is {backend.name!r}: "
                "'async with' serves in the running loop (backend= is for 'with')"
            )
        self._enter()
        plan = self._plan
        try:
            server = plan.async_server(self._directory)
            await server.__aenter__()
        except BaseException:
            self._exited = True
            self._remove_directory()
            raise
        try:
            served = self._aserved = AsyncServed(plan, server, backend, self._directory)
            task_group = self._task_group = backend.create_task_group()
            await task_group.__aenter__()
        except BaseException:
            self._exited = True
            try:
                await server.__aexit__(None, None, None)
            finally:
                self._remove_directory()
            raise
        try:
            task_group.start_soon(server.serve_forever, name="sf-testing server")
            served._client = await served.connect()
        except BaseException as exc:
            await self._close_async(exc)
            raise
        return served

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        await self._close_async(exc)

    async def _close_async(self, exc: BaseException | None) -> None:
        if self._exited:
            return
        self._exited = True
        served, task_group = self._aserved, self._task_group
        assert served is not None
        assert task_group is not None
        server, backend = served.server, served.backend
        # Only a cancellation goes through the task group (it may be the group's own, from a
        # crashed server task). Anything else the block raised, pytest.skip() included, is
        # the block's: it comes out as it is once the server has stopped, never in a group.
        cancelled = backend.get_cancelled_exc_class()
        passed = exc if isinstance(exc, cancelled) else None
        try:
            try:
                await served._close_clients()
            finally:
                await backend.cancel_shielded(server.shutdown)
        finally:
            try:
                await task_group.__aexit__(None if passed is None else type(passed), passed, None)
            finally:
                try:
                    await server.__aexit__(None, None, None)
                finally:
                    self._remove_directory()


def serve_in_background(
    handler: _Handler[RequestT, ResponseT],
    protocol: _Protocol[RequestT, ResponseT],
    *,
    transport: Transport | None = None,
    backend: BackendName | None = None,
    host: str = "127.0.0.1",
    ssl: _ssl.SSLContext | None = None,
    client_ssl: _ssl.SSLContext | None = None,
    client_protocol: _ClientProtocol[RequestT, ResponseT] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **server_options: Any,
) -> ServeInBackground[RequestT, ResponseT]:
    """Serve ``handler`` on a free port (or a temporary Unix socket) for the length of a block.

    In a plain function, ``with`` runs the server in a thread (a ``Standalone*`` server, on
    the loop ``backend`` names) and gives a `Served` with a blocking `Client`::

        with serve_in_background(Greeter(), StreamProtocol(JSONSerializer())) as served:
            assert served.client.request({"name": "a"}) == {"greeting": "hello, a"}

    In an async test, ``async with`` serves in the running loop (asyncio, uvloop or trio) and
    gives an `AsyncServed` with an `AsyncClient`::

        async with serve_in_background(Greeter(), protocol, transport="unix") as served:
            assert await served.client.request({"name": "a"}) == {"greeting": "hello, a"}

    On exit, even when the block raises: the clients and sockets opened through ``served``
    are closed, the server shuts down (its grace period is ``shutdown_timeout``, 1 s here
    unless given), its thread is joined (or its task awaited), and a Unix socket's temporary
    directory is removed. The block's exception comes out unchanged; with ``with``, an
    exception that stopped the server's thread is raised at exit (or noted on the block's).

    Args:
        handler: The request handler to serve.
        protocol: The server's protocol; the clients use it too, seen from the other side
            (see ``client_protocol``).
        transport: ``"tcp"``, ``"tls"``, ``"udp"``, ``"unix"`` or ``"unix-datagram"``.
            Default: ``"tcp"`` for a `~protocols.StreamProtocol` (``"tls"`` with ``ssl``),
            ``"udp"`` for a `~protocols.DatagramProtocol`.
        backend: The loop of the ``with`` form's server thread: ``"asyncio"``, ``"uvloop"``
            or ``"trio"`` (default: uvloop where installed, else asyncio). The ``async with``
            form serves in the running loop; a different ``backend`` there is an error.
        host: The address to bind for TCP, TLS and UDP; the port is always a free one.
        ssl: The server's TLS context. With ``transport="tls"`` and neither ``ssl`` nor
            ``client_ssl``, a throwaway certificate is made (see `tls_contexts`; needs
            trustme).
        client_ssl: The clients' TLS context (trusting the server's certificate).
        client_protocol: The clients' protocol, when the server's cannot decode its own
            responses (typed protocols, whose request and response types differ).
        timeout: Seconds the clients wait at most, by default, to connect and for each
            message (see `Client`).
        **server_options: The server's keyword options (``max_connections``,
            ``frame_timeout``, ``write_timeout``, ``shutdown_timeout``, ``client_idle_timeout``
            ...).

    Returns:
        A `ServeInBackground`, to enter with ``with`` or ``async with``, once.

    Raises:
        TypeError: ``protocol`` is neither a stream nor a datagram protocol.
        ValueError: the transport does not fit the protocol, or ``ssl``/``client_ssl`` do not
            fit the transport.
    """
    plan = _Plan(
        handler,
        protocol,
        transport=transport,
        host=host,
        ssl=ssl,
        client_ssl=client_ssl,
        client_protocol=client_protocol,
        timeout=timeout,
        server_options=dict(server_options),
    )
    return ServeInBackground(plan, backend)


class ServeFactory:
    """The ``sf_serve`` fixture: `serve_in_background` that cleans up after the test.

    Call it as `serve_in_background`; the test enters what it returns. Whatever the test left
    entered is closed when the test ends: ``with`` servings at fixture teardown, ``async
    with`` ones before the plugin's event loop ends (a test run by pytest-trio must exit its
    own ``async with`` blocks). Without ``backend=``, ``with`` servings run on the test's
    ``sf_backend_name`` if it has one.
    """

    def __init__(self, backend: BackendName | None = None) -> None:
        self._backend = backend
        self._servings: list[ServeInBackground[Any, Any]] = []

    def __call__(
        self,
        handler: _Handler[RequestT, ResponseT],
        protocol: _Protocol[RequestT, ResponseT],
        **options: Any,
    ) -> ServeInBackground[RequestT, ResponseT]:
        """Return ``serve_in_background(handler, protocol, **options)``, remembered for
        cleanup (``backend=`` defaults to the test's loop, if it has one)."""
        if "backend" not in options and self._backend is not None:
            options["backend"] = self._backend
        serving = serve_in_background(handler, protocol, **options)
        self._servings.append(serving)
        return serving

    def _left_open(self, is_async: bool) -> list[ServeInBackground[Any, Any]]:
        return [s for s in reversed(self._servings) if s.is_open and s.is_async == is_async]

    async def aclose(self) -> None:
        """Exit the ``async with`` servings left open (in the test's loop)."""
        async with contextlib.AsyncExitStack() as stack:
            for serving in self._left_open(True):
                stack.push_async_callback(serving.__aexit__, None, None, None)

    def close(self) -> None:
        """Exit the ``with`` servings left open.

        Raises:
            RuntimeError: an ``async with`` serving is still open (it cannot be closed outside
                its event loop).
        """
        with contextlib.ExitStack() as stack:
            for serving in self._left_open(False):
                stack.callback(serving.__exit__, None, None, None)
        if self._left_open(True):
            raise RuntimeError(
                "an 'async with sf_serve(...)' block was left open by the test: exit it"
            )


def _new_client(plan: Any, clients: Any, kinds: tuple[Any, Any, Any, Any]) -> Any:
    """A client of the serving's transport, from ``kinds``: its TCP, UDP, Unix stream and Unix
    datagram client classes (the blocking ones or the async ones, which take the same
    arguments)."""
    tcp, udp, unix_stream, unix_datagram = kinds
    address, protocol = clients.address, plan.client_protocol
    if isinstance(address, tuple):
        if plan.transport == "udp":
            return udp(address, protocol)
        return tcp(address, protocol, ssl=plan.client_ssl, connect_timeout=plan.timeout)
    if plan.transport == "unix":
        return unix_stream(address, protocol, connect_timeout=plan.timeout)
    return unix_datagram(address, protocol, local_path=clients.local_path())
