"""Blocking datagram clients: :class:`UDPClient` and :class:`UnixDatagramClient` (see
``_sync_base`` for the design: a non-blocking socket, ``poll()`` with per-call deadlines). One
datagram is one message: no decoder, no framing.

The constructor makes a connected, non-blocking datagram socket with the helpers of ``_common``
that the async clients use too (a UDP host name is resolved here, blocking). Sending waits only
while the socket's buffer is full; receiving waits with ``poll()`` until the call's deadline.
"""

from __future__ import annotations

import os
import socket as _socket
from collections.abc import Iterator
from typing import Generic, TypeVar

from protocols import DatagramProtocol
from server_framework.exceptions import ClosedResourceError
from server_framework.sockets import MAX_DATAGRAM_SIZE

from ._common import (
    check_protocol,
    check_timeout,
    closed_error,
    connect_error,
    raise_datagram_error,
    receive_timeout_error,
    resolve,
    send_timeout_error,
    udp_socket,
    unix_datagram_socket,
    unlink_quietly,
)
from ._sync_base import (
    WANT_READ,
    DeadlinePassed,
    SyncClient,
    deadline_after,
    lock_timeout,
    wait_ready,
)

__all__ = ["UDPClient", "UnixDatagramClient"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")


class _SyncDatagramClient(SyncClient, Generic[SendT, RecvT]):
    """What :class:`UDPClient` and :class:`UnixDatagramClient` share."""

    __slots__ = ("_protocol",)

    def __init__(self, sock: _socket.socket, protocol: DatagramProtocol[SendT, RecvT]) -> None:
        super().__init__(sock, tls=False)
        self._protocol = protocol

    def send_packet(self, packet: SendT, *, timeout: float | None = None) -> None:
        """Serialize ``packet`` and send it to the server as one datagram.

        Args:
            packet: The message.
            timeout: Seconds allowed to send it, waiting for other threads' sends included
                (a datagram send waits only while the socket's buffer is full); ``None``, the
                default: no limit.

        Raises:
            TimeoutError: ``timeout`` passed: the datagram was not sent; the client is still
                usable.
            SerializeError: ``packet`` cannot be serialized (nothing was sent).
            ConnectionRefusedError: the server was found unreachable (by an earlier
                datagram: nothing listens there); the client is still usable.
            OSError: the datagram is too large (``EMSGSIZE``), or another socket error.
            ClosedResourceError: the client is closed.
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        data = self._protocol.encode(packet)
        sock = self._socket
        deadline = deadline_after(timeout)
        if not self._send_lock.acquire(timeout=lock_timeout(deadline)):
            raise send_timeout_error(timeout)
        try:
            while True:
                if self._closed:
                    raise closed_error()
                try:
                    sock.send(data)
                    return
                except WANT_READ:
                    pass
                except OSError as exc:
                    raise_datagram_error(exc, self._peer, closed=self._closed)
                if not wait_ready(sock, True, deadline):
                    raise send_timeout_error(timeout)
        finally:
            self._send_lock.release()

    def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the message in the next datagram from the server.

        Args:
            timeout: Seconds to wait for it (``None``: no limit; ``0``: only a datagram the
                kernel has already received). Waiting for another thread's receive counts.

        Raises:
            TimeoutError: nothing arrived within ``timeout``; the client is still usable.
            DeserializeError: the datagram is not a valid message; the client is still usable.
            ConnectionRefusedError: the server is unreachable (nothing listens there); the
                client is still usable.
            ClosedResourceError: the client is closed (before or during the call).
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        deadline = deadline_after(timeout)
        if not self._recv_lock.acquire(timeout=lock_timeout(deadline)):
            raise receive_timeout_error(timeout, "datagram")
        try:
            data = self._recv_some(MAX_DATAGRAM_SIZE, deadline)
        except DeadlinePassed:
            raise receive_timeout_error(timeout, "datagram") from None
        except ClosedResourceError:
            raise
        except OSError as exc:
            raise_datagram_error(exc, self._peer, closed=self._closed)
        finally:
            self._recv_lock.release()
        return self._protocol.decode(data)

    def iter_received_packets(self, timeout: float | None = None) -> Iterator[RecvT]:
        """Iterate over the messages from the server until ``timeout`` seconds pass without one.

        Args:
            timeout: The longest wait for each datagram (``None``, the default: for ever, until
                an error; ``0``: only the datagrams already received).

        Raises:
            DeserializeError, ConnectionRefusedError, ClosedResourceError: as
                :meth:`recv_packet`; the iteration is then over, the client still usable.
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        return self._iterate(self.recv_packet, timeout)


class UDPClient(_SyncDatagramClient[SendT, RecvT]):
    """A blocking UDP client, safe to share between threads.

    The socket is connected to the server's address, so only the server's datagrams are
    received, and the kernel reports an unreachable server (``ConnectionRefusedError`` on a
    later call). There is no connection to wait for: the constructor only resolves the address.

    Args:
        address: The server's ``(host, port)``; the first address a host name resolves to
            is used.
        protocol: The datagram protocol seen from the client's side: it encodes requests
            (``SendT``) and decodes responses (``RecvT``).
        local_address: ``(host, port)`` to bind the client's socket to (default: any
            interface, a port chosen by the kernel).

    Raises:
        OSError: the address does not resolve, or the socket cannot be bound or connected.

    Example::

        with UDPClient(("127.0.0.1", 9000), DatagramProtocol(JSONSerializer())) as client:
            client.send_packet({"ping": 1})
            print(client.recv_packet(timeout=1.0))
    """

    __slots__ = ()

    def __init__(
        self,
        address: tuple[str, int],
        protocol: DatagramProtocol[SendT, RecvT],
        *,
        local_address: tuple[str, int] | None = None,
    ) -> None:
        check_protocol(protocol, DatagramProtocol)
        host, port = address
        try:
            resolved = resolve(host, port, _socket.SOCK_DGRAM)[0]
        except OSError as exc:
            raise connect_error(exc, address) from exc
        super().__init__(udp_socket((host, port), resolved, local_address), protocol)

    def __repr__(self) -> str:
        return f"<UDPClient peer={self._peer!r} closed={self._closed}>"


class UnixDatagramClient(_SyncDatagramClient[SendT, RecvT]):
    """A blocking Unix datagram socket client, safe to share between threads.

    A Unix datagram server can only answer a peer bound to a path: the client binds one,
    ``local_path`` or a fresh file in the temporary directory, and removes it on :meth:`close`.
    Its socket is connected to the server's, so only the server's datagrams are received.

    Args:
        path: The server's socket path.
        protocol: The datagram protocol seen from the client's side (see :class:`UDPClient`).
        local_path: The path to bind (it must not exist); default: a new temporary path.

    Raises:
        OSError: the server's path is not a socket in use (``FileNotFoundError``,
            ``ConnectionRefusedError``), or ``local_path`` cannot be bound.
    """

    __slots__ = ("_path",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: DatagramProtocol[SendT, RecvT],
        *,
        local_path: str | os.PathLike[str] | None = None,
    ) -> None:
        check_protocol(protocol, DatagramProtocol)
        sock, self._path = unix_datagram_socket(
            os.fspath(path), None if local_path is None else os.fspath(local_path)
        )
        super().__init__(sock, protocol)

    def _after_close(self) -> None:
        unlink_quietly(self._path)

    def __repr__(self) -> str:
        return f"<UnixDatagramClient peer={self._peer!r} closed={self._closed}>"
