"""The request-handler API: what users subclass, and the client objects their code receives.

A handler is one object per server. For every connection (stream) or peer address (datagram)
the server calls :meth:`~StreamRequestHandler.handle`, an async generator that receives requests
with ``request = yield`` and answers with ``await client.send_packet(response)``. When the
generator returns, the server starts a new one for the next request, so the simplest handler is
three lines::

    class Echo(StreamRequestHandler[Any, Any]):
        async def handle(self, client):
            request = yield
            await client.send_packet(request)

``yield RecvParams(timeout=5.0)`` instead of a bare ``yield`` asks for the next request within
5 seconds; otherwise :class:`TimeoutError` is thrown into the generator at that ``yield``.
A message that cannot be decoded is thrown in the same way, as a
:class:`~protocols.ProtocolError`, so the handler can answer it and go on.

A stream handler's ``on_connection`` may be an async generator too, for an exchange that
comes before ``handle`` (a login, a version check): its ``yield`` receives requests exactly as
``handle``'s does, and ``handle`` starts once it returns::

    async def on_connection(self, client):
        credentials = yield RecvParams(timeout=10.0)
        if not check(credentials):
            await client.send_packet({"error": "denied"})
            await client.aclose()
            return
        client.state["user"] = credentials["user"]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from server_framework.sockets import Address, PeerCredentials, SocketProxy

if TYPE_CHECKING:
    from server_framework.backend import AsyncBackend

__all__ = [
    "DatagramClient",
    "DatagramRequestHandler",
    "RecvParams",
    "StreamClient",
    "StreamRequestHandler",
]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True, slots=True)
class RecvParams:
    """What a handler yields instead of ``None`` to tune how its next request is received.

    Attributes:
        timeout: Seconds to wait for the next request; ``None`` waits forever. On expiry,
            :class:`TimeoutError` is thrown into the handler's generator at the ``yield``. If
            the handler catches it, it may ``yield`` again (with a new timeout, or none).
    """

    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {self.timeout}")


class StreamClient(ABC, Generic[ResponseT]):
    """One connected peer of a stream server (TCP, TLS, Unix stream), as a handler sees it.

    What the connection is (its addresses, socket, TLS session, the peer process of a Unix
    connection) is read through properties, each worked out when it is read: a handler that
    does not ask costs nothing.

    Attributes:
        state: A dict for the handler's per-connection data; it lives as long as the connection.
    """

    __slots__ = ()
    state: dict[str, Any]

    @abstractmethod
    async def send_packet(self, packet: ResponseT) -> None:
        """Serialize, frame and send ``packet``.

        Returns once the bytes are handed to the transport; waits only when the peer reads
        slower than we write (the transport's buffer is over its high-water mark). Calls from
        several tasks never interleave frames; frames go out in call order.

        Raises:
            ClosedResourceError: the connection was closed by us.
            BrokenResourceError: the peer or the OS broke the connection.
            SerializeError: ``packet`` cannot be serialized.

        Cancellation: a cancelled call has either sent its whole frame or nothing of it.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection; pending outgoing data is flushed first. Idempotent."""

    @abstractmethod
    def abort(self) -> None:
        """Close the connection at once, abortively: what is not sent yet is dropped and a TCP
        peer sees a reset (``ECONNRESET``), not an orderly end of stream; no ``TIME_WAIT`` is
        left on our side. For a peer that misbehaves, or that must not wait for anything
        more. Through TLS, no close_notify is sent. A Unix socket has no reset: its peer
        sees an end of stream. Returns at once; idempotent. What the handler sends afterwards
        is dropped (``send_packet`` may raise
        :class:`~server_framework.exceptions.ClosedResourceError`)."""

    @abstractmethod
    def is_closing(self) -> bool:
        """True once the connection is closed or closing (by either side)."""

    @abstractmethod
    def backend(self) -> AsyncBackend:
        """The server's :class:`~server_framework.backend.AsyncBackend` (threads, portals...)."""

    @property
    @abstractmethod
    def peer_address(self) -> Address:
        """The peer's address (the original client's, when the PROXY protocol is enabled)."""

    @property
    @abstractmethod
    def local_address(self) -> Address:
        """Our end's address."""

    @property
    @abstractmethod
    def socket(self) -> SocketProxy:
        """The connection's socket, for options (see :class:`SocketProxy`)."""

    @property
    @abstractmethod
    def tls_peer_certificate(self) -> dict[str, Any] | None:
        """The certificate the TLS peer presented, as :meth:`ssl.SSLSocket.getpeercert`
        returns it (``subject``, ``issuer``, ``notAfter``...); None on a connection without
        TLS, or when the peer sent none (a server asks for one only when its context's
        ``verify_mode`` is ``CERT_OPTIONAL`` or ``CERT_REQUIRED``)."""

    @property
    @abstractmethod
    def tls_peer_certificate_der(self) -> bytes | None:
        """The same certificate in binary (DER) form, ``getpeercert(binary_form=True)``
        (e.g. for ``cryptography.x509.load_der_x509_certificate``); None as above."""

    @property
    @abstractmethod
    def tls_cipher(self) -> tuple[str, str, int] | None:
        """The TLS session's cipher: ``(name, protocol version, secret bits)``, as
        :meth:`ssl.SSLSocket.cipher`; None on a connection without TLS."""

    @property
    @abstractmethod
    def tls_version(self) -> str | None:
        """The TLS protocol version (``"TLSv1.3"``...); None on a connection without TLS."""

    @property
    @abstractmethod
    def peer_credentials(self) -> PeerCredentials | None:
        """The peer process of a Unix stream connection: ``(pid, uid, gid)`` as the kernel
        recorded them when it connected (``SO_PEERCRED``, Linux). None on TCP, on other
        systems, and once the connection's socket is closed. Behind the PROXY protocol it is
        the proxy's."""


class DatagramClient(ABC, Generic[ResponseT]):
    """One peer address of a datagram server (UDP, Unix datagram), as a handler sees it.

    Datagram clients compare equal and hash alike when they are the same peer address on the
    same server, so they can key a dict. ``state`` lives while a handler generator for that
    address is alive.
    """

    __slots__ = ()
    state: dict[str, Any]

    @abstractmethod
    async def send_packet(self, packet: ResponseT) -> None:
        """Serialize ``packet`` and send it as one datagram to this peer.

        Raises:
            ClosedResourceError: the server is closed.
            SerializeError: ``packet`` cannot be serialized.
        """

    @abstractmethod
    def is_closing(self) -> bool:
        """True once the server's socket is closing."""

    @abstractmethod
    def backend(self) -> AsyncBackend:
        """The server's :class:`~server_framework.backend.AsyncBackend`."""

    @property
    @abstractmethod
    def peer_address(self) -> Address:
        """The peer's address."""

    @property
    @abstractmethod
    def local_address(self) -> Address:
        """The server socket's address."""

    @property
    @abstractmethod
    def socket(self) -> SocketProxy:
        """The server's socket (shared by all datagram clients), for options."""


class StreamRequestHandler(ABC, Generic[RequestT, ResponseT]):
    """Base class of stream (TCP, TLS, Unix stream) request handlers.

    Override :meth:`handle`; the other hooks are optional. One handler object serves every
    connection, so per-connection data belongs in ``client.state`` (or local variables of
    ``handle``), not on ``self``.

    The server checks the handler's own methods when it is built: ``handle`` must be an async
    generator (``async def`` with ``request = yield``), the hooks ``async def`` (and
    ``on_connection`` may ``yield``, see there), each taking the arguments shown here. A
    mistake (a ``handle`` without ``yield``, a plain ``def on_connection``...) is a
    :class:`TypeError` naming the class, the method and the fix, before anything is bound; on
    the command line, one line and exit code 3.
    """

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        """Called once when the server starts, before it accepts anything.

        Enter long-lived resources (thread pools, portals, database pools) on ``exit_stack``:
        they are closed when the server stops, after every connection has ended.
        ``server`` is the server object (``server.backend()`` gives the backend).
        """

    def on_connection(
        self, client: StreamClient[ResponseT]
    ) -> Coroutine[Any, Any, None] | AsyncGenerator[RecvParams | None, RequestT]:
        """Called when a client connects, before the first request. Raising closes it.

        Written either as a coroutine (``async def on_connection(self, client): ...``, the
        connection's set-up), or as an async generator, for requests that come before
        ``handle`` (a login, a version check)::

            async def on_connection(self, client):
                credentials = yield                   # or: yield RecvParams(timeout=10.0)
                client.state["user"] = await authenticate(credentials)

        Each ``yield`` receives the next request, as in :meth:`handle`, with the same rules
        (``RecvParams``, a bad message or a timeout thrown in at the ``yield``, an uncaught
        exception closing the connection); returning ends that phase, and ``handle`` receives
        the next request. A generator that closes the connection (``await client.aclose()``)
        and returns ends it there. (On a :class:`RequestResponseHandler`, requests go to
        ``respond`` once it returns.)
        """
        return _nothing()

    @abstractmethod
    def handle(
        self, client: StreamClient[ResponseT]
    ) -> AsyncGenerator[RecvParams | None, RequestT]:
        """Receive requests with ``request = yield`` and answer with ``client.send_packet``.

        Written as ``async def handle(self, client): ... request = yield ...``. When it
        returns, a new generator starts for the next request; if it returns before its first
        ``yield``, the connection is closed. ``yield RecvParams(timeout=5)`` (or ``yield 5``,
        EasyNetwork's shorthand) waits at most 5 seconds for the next request. Exceptions
        thrown in at a ``yield``:
        :class:`TimeoutError` (after ``yield RecvParams(timeout=...)``) and
        :class:`~protocols.ProtocolError` (a bad message). An uncaught exception closes this
        connection only, and is logged with the connection's context.
        """

    async def on_disconnection(self, client: StreamClient[ResponseT]) -> None:
        """Called once after the connection ended, whoever closed it."""

    async def on_refused(self, client: StreamClient[ResponseT], reason: str) -> None:
        """Called instead of serving a connection the server refuses, to tell the client why.

        ``reason`` is ``"max_connections"`` (the server is full, with ``overload="reject"``)
        or ``"max_connections_per_ip"`` (this client has too many connections open). Send a
        message with ``await client.send_packet(...)``; the connection is closed when this
        returns, or after 1 second. Nothing else of the handler runs for it. The base class
        does nothing (the connection is closed at once), and servers do not even call it.
        At most 64 refused connections are answered at once; beyond that, they are closed
        at once.

        Example::

            async def on_refused(self, client, reason):
                await client.send_packet({"error": "busy", "retry_after": 1})
        """


async def _nothing() -> None:
    """The base class's ``on_connection``: nothing to do (servers do not even call it)."""


class DatagramRequestHandler(ABC, Generic[RequestT, ResponseT]):
    """Base class of datagram (UDP, Unix datagram) request handlers.

    The same contract as :class:`StreamRequestHandler`, per peer address: a generator runs
    per address, receiving that address's datagrams in order.
    """

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        """Called once when the server starts; see :meth:`StreamRequestHandler.service_init`."""

    @abstractmethod
    def handle(
        self, client: DatagramClient[ResponseT]
    ) -> AsyncGenerator[RecvParams | None, RequestT]:
        """Receive a peer's datagrams with ``request = yield``; answer with ``send_packet``."""
