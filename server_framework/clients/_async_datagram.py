"""Async datagram clients: :class:`AsyncUDPClient` and :class:`AsyncUnixDatagramClient` (see
``_async_base`` for the design). One datagram is one message: no decoder, no framing.

Connecting makes a connected, non-blocking datagram socket (with the blocking clients'
helpers of ``_common``: it never waits, but for a host name's resolution in a worker thread),
then hands it to the loop's connector.
"""

from __future__ import annotations

import os
import socket as _socket
from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from protocols import DatagramProtocol
from server_framework.backend import AsyncBackend
from server_framework.exceptions import ClosedResourceError

from ._async_base import AsyncClientBase
from ._common import (
    check_protocol,
    check_timeout,
    connect_error,
    raise_datagram_error,
    receive_timeout_error,
    resolve,
    resolve_numeric,
    udp_socket,
    unix_datagram_socket,
    unlink_quietly,
)
from ._transport import Connector, DatagramTransport

__all__ = ["AsyncUDPClient", "AsyncUnixDatagramClient"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")


class _AsyncDatagramClient(AsyncClientBase, Generic[SendT, RecvT]):
    """What :class:`AsyncUDPClient` and :class:`AsyncUnixDatagramClient` share."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: DatagramProtocol[SendT, RecvT]) -> None:
        check_protocol(protocol, DatagramProtocol)
        # Connecting a datagram socket never waits (only a host name's resolution may).
        super().__init__(None)
        self._protocol = protocol
        self._transport: DatagramTransport | None = None

    async def send_packet(self, packet: SendT) -> None:
        """Serialize ``packet`` and send it to the server as one datagram.

        Raises:
            SerializeError: ``packet`` cannot be serialized (nothing was sent).
            ConnectionRefusedError: the server was found unreachable (by an earlier
                datagram: nothing listens there); the client is still usable.
            OSError: the datagram is too large (``EMSGSIZE``), or another socket error.
            ClosedResourceError: the client is closed (before or during the call).
            RuntimeError: the client is not connected yet.

        Cancellation: the datagram was then either sent whole or not at all.
        """
        transport = self._transport
        if transport is None:
            raise self._unusable()
        data = self._protocol.encode(packet)
        try:
            await transport.send(data)
        except ClosedResourceError:
            raise
        except OSError as exc:
            raise_datagram_error(exc, self._peer)

    async def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the message in the next datagram from the server.

        Args:
            timeout: Seconds to wait for it (``None``: no limit).

        Raises:
            TimeoutError: nothing arrived within ``timeout``; the client is still usable.
            DeserializeError: the datagram is not a valid message; the client is still usable.
            ConnectionRefusedError: the server is unreachable (nothing listens there); the
                client is still usable.
            BusyResourceError: another task is receiving on this client.
            ClosedResourceError: the client is closed (before or during the call).
            RuntimeError: the client is not connected yet.
            ValueError: ``timeout`` is negative.

        Cancellation: no datagram is lost.
        """
        if self._receiving:
            raise self._busy()
        transport = self._transport
        if transport is None:
            raise self._unusable()
        self._receiving = True
        try:
            if timeout is None:
                data = await transport.receive()
            else:
                check_timeout(timeout)
                scope = self._timeout_scope(timeout)
                try:
                    with scope:
                        data = await transport.receive()
                except TimeoutError:
                    if scope.cancelled_caught:
                        raise receive_timeout_error(timeout, "datagram") from None
                    raise
        except ClosedResourceError:
            raise
        except OSError as exc:
            raise_datagram_error(exc, self._peer)
        finally:
            self._receiving = False
        return self._protocol.decode(data)

    def iter_received_packets(self, timeout: float | None = None) -> AsyncIterator[RecvT]:
        """Iterate (``async for``) over the server's messages until ``timeout`` seconds pass
        without one.

        Args:
            timeout: The longest wait for each datagram (``None``, the default: for ever, until
                an error).

        Raises:
            DeserializeError, ConnectionRefusedError, BusyResourceError, ClosedResourceError:
                as :meth:`recv_packet`; the iteration is then over, the client still usable.
            ValueError: ``timeout`` is negative.

        Cancellation: no datagram is lost.
        """
        check_timeout(timeout)
        return self._iterate(self.recv_packet, timeout)

    async def _open(self, connector: Connector, backend: AsyncBackend) -> None:
        sock = await self._make_socket(backend)
        try:
            self._connected(sock, sock.getpeername(), sock.getsockname())
            self._transport = connector.open_datagram(sock)
        except BaseException:
            sock.close()
            raise

    async def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    @abstractmethod
    async def _make_socket(self, backend: AsyncBackend) -> _socket.socket:
        """Return a bound, connected, non-blocking datagram socket."""


class AsyncUDPClient(_AsyncDatagramClient[SendT, RecvT]):
    """An async UDP client for asyncio, uvloop and trio.

    ``async with`` (or ``await client.connect()``) resolves the address and connects the
    socket to it, so only the server's datagrams are received and the kernel reports an
    unreachable server (``ConnectionRefusedError`` on a later call).

    Args:
        address: The server's ``(host, port)``; the first address a host name resolves to is
            used.
        protocol: The datagram protocol seen from the client's side: it encodes requests
            (``SendT``) and decodes responses (``RecvT``).
        local_address: ``(host, port)`` to bind the client's socket to (default: any
            interface, a port chosen by the kernel).

    Example::

        async with AsyncUDPClient(("127.0.0.1", 9000), DatagramProtocol(JSONSerializer())) as c:
            await c.send_packet({"ping": 1})
            print(await c.recv_packet(timeout=1.0))
    """

    __slots__ = ("_address", "_local_address")

    def __init__(
        self,
        address: tuple[str, int],
        protocol: DatagramProtocol[SendT, RecvT],
        *,
        local_address: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(protocol)
        host, port = address
        self._address = (host, port)
        self._local_address = local_address

    def _target(self) -> Any:
        return self._address

    async def _make_socket(self, backend: AsyncBackend) -> _socket.socket:
        host, port = self._address
        infos = resolve_numeric(host, port, _socket.SOCK_DGRAM)
        if infos is None:
            try:
                infos = await backend.run_in_thread(
                    resolve, host, port, _socket.SOCK_DGRAM, abandon_on_cancel=True
                )
            except OSError as exc:
                raise connect_error(exc, self._address) from exc
        return udp_socket(self._address, infos[0], self._local_address)

    def __repr__(self) -> str:
        return f"<AsyncUDPClient server={self._address!r} closed={self._closed}>"


class AsyncUnixDatagramClient(_AsyncDatagramClient[SendT, RecvT]):
    """An async Unix datagram socket client for asyncio, uvloop and trio.

    A Unix datagram server can only answer a peer bound to a path: on ``connect`` the client
    binds one, ``local_path`` or a fresh file in the temporary directory, and removes it on
    :meth:`aclose`. Its socket is connected to the server's, so only the server's datagrams
    are received.

    Args:
        path: The server's socket path.
        protocol: The datagram protocol seen from the client's side (see
            :class:`AsyncUDPClient`).
        local_path: The path to bind (it must not exist); default: a new temporary path.
    """

    __slots__ = ("_bound", "_local_path", "_path")

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: DatagramProtocol[SendT, RecvT],
        *,
        local_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(protocol)
        self._path = os.fspath(path)
        self._local_path = None if local_path is None else os.fspath(local_path)
        self._bound: str | None = None

    def _target(self) -> Any:
        return self._path

    async def _make_socket(self, backend: AsyncBackend) -> _socket.socket:
        sock, self._bound = unix_datagram_socket(self._path, self._local_path)
        return sock

    def _open_failed(self) -> None:
        self._unlink()

    async def _close_transport(self) -> None:
        try:
            await super()._close_transport()
        finally:
            self._unlink()

    def _unlink(self) -> None:
        bound, self._bound = self._bound, None
        if bound is not None:
            unlink_quietly(bound)

    def __repr__(self) -> str:
        return f"<AsyncUnixDatagramClient server={self._path!r} closed={self._closed}>"
