"""Blocking stream clients: :class:`TCPClient` (TLS with ``ssl=``) and :class:`UnixStreamClient`
(see ``_sync_base`` for the design: a non-blocking socket, ``poll()`` with per-call deadlines).

Connecting happens in the constructor, with the socket in blocking mode and ``connect_timeout``
as its timeout (for TCP, ``socket.create_connection`` tries every address of a host name); the
TLS handshake then runs non-blocking, waiting with ``poll()``.

Receiving: a client reads up to 64 KiB at a time and keeps whatever complete messages that
brought in its decoder: the next ``recv_packet`` returns one of them without a system call. A
framing error breaks the connection (``ClientBase._break``): the socket is shut down at once,
its descriptor closed by ``close()``.
"""

from __future__ import annotations

import os
import socket as _socket
import ssl as _ssl
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from protocols import FramingError, StreamDecoder, StreamProtocol
from server_framework.sockets import RECEIVE_SIZE

from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    check_protocol,
    check_timeout,
    connect_error,
    connect_timeout_error,
    connection_lost_error,
    describe,
    encode_all,
    peer_closed_error,
    receive_detail,
    receive_timeout_error,
)
from ._sync_base import DeadlinePassed, SyncClient, deadline_after, lock_timeout, wait_ready

__all__ = ["TCPClient", "UnixStreamClient"]

SendT = TypeVar("SendT")
RecvT = TypeVar("RecvT")


class _SyncStreamClient(SyncClient, Generic[SendT, RecvT]):
    """What :class:`TCPClient` and :class:`UnixStreamClient` share. ``_eof`` and ``_broken``
    are set once, by the receiving thread; the senders only read them."""

    __slots__ = ("_decoder", "_heard", "_protocol")

    def __init__(
        self, sock: _socket.socket, protocol: StreamProtocol[SendT, RecvT], *, tls: bool
    ) -> None:
        super().__init__(sock, tls=tls)
        self._protocol = protocol
        self._decoder: StreamDecoder[RecvT] = protocol.decoder()
        self._heard = False  # the server sent something (else errors say it sent nothing)

    def send_packet(self, packet: SendT) -> None:
        """Serialize, frame and send ``packet``; return once the kernel has all of it.

        Threads may send at the same time: frames are sent whole, one after the other. A send
        waits as long as the server does not read (there is no send timeout); ``close()`` from
        another thread ends the wait.

        Raises:
            SerializeError: ``packet`` cannot be serialized (nothing was sent).
            ConnectionError: the server closed or broke the connection, or an earlier framing
                error made the connection unusable.
            ClosedResourceError: the client is closed.
        """
        self._send_locked(self._protocol.encode(packet))

    def _send_locked(self, data: bytes | bytearray) -> None:
        with self._send_lock:
            self._check_usable()
            if self._eof:
                raise peer_closed_error()
            try:
                self._send_all(data)
            except OSError as exc:
                raise self._io_error(exc) from exc

    def send_packets(self, packets: Iterable[SendT]) -> None:
        """Serialize and frame every packet into one buffer, and send it in one go.

        For pipelined requests: one system call for the batch instead of one per packet; the
        batch is never interleaved with other threads' frames.

        Args:
            packets: The packets, sent in this order.

        Raises:
            SerializeError: a packet cannot be serialized (nothing was sent).
            ConnectionError, ClosedResourceError: as :meth:`send_packet`.
        """
        self._send_locked(encode_all(self._protocol, packets))

    def recv_packet(self, timeout: float | None = None) -> RecvT:
        """Return the next message from the server.

        A message already received (several arrive in one read when the server answers
        pipelined requests) is returned without a system call.

        Args:
            timeout: Seconds to wait for it (``None``: no limit; ``0``: only what the kernel
                has already received). Waiting for another thread's receive counts.

        Raises:
            TimeoutError: nothing arrived within ``timeout``; the client is still usable, and
                a partly received message is kept for the next call. The message says what
                was received that forms no message (and what it looks like), or that nothing
                was.
            DeserializeError: the next message is invalid; it was consumed and the client is
                still usable (the next call returns the message after it).
            FramingError: the stream cannot be split into messages any more (for example,
                :class:`~protocols.FrameTooLargeError`). The connection is shut down and every
                later call raises ``ConnectionError``.
            ConnectionError: the server closed the connection (after every message it sent
                was returned) or broke it.
            ClosedResourceError: the client is closed (before or during the call).
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        deadline = deadline_after(timeout)
        if not self._recv_lock.acquire(timeout=lock_timeout(deadline)):
            raise receive_timeout_error(timeout)
        decoder = self._decoder
        try:
            while True:
                self._check_usable()
                for packet in decoder:  # a message received already
                    return packet
                if self._eof:
                    raise peer_closed_error(decoder.buffered, self._receive_detail())
                try:
                    data = self._recv_some(RECEIVE_SIZE, deadline)
                except DeadlinePassed:
                    raise receive_timeout_error(timeout, detail=self._receive_detail()) from None
                except OSError as exc:
                    if not self._heard and not (self._closed or self._broken is not None):
                        raise connection_lost_error(exc, self._receive_detail()) from exc
                    raise self._io_error(exc) from exc
                if data:
                    self._heard = True
                    decoder.feed(data)
                else:
                    self._eof = True
        except FramingError as exc:
            self._break(exc)
            raise
        finally:
            self._recv_lock.release()

    def _receive_detail(self) -> str:
        return receive_detail(self._protocol, self._decoder, self._heard)

    def iter_received_packets(self, timeout: float | None = None) -> Iterator[RecvT]:
        """Iterate over the messages from the server, until it closes the connection or until
        ``timeout`` seconds pass without a message.

        Args:
            timeout: The longest wait for each message (``None``, the default: until the server
                closes the connection; ``0``: only the messages already received).

        Raises:
            DeserializeError, FramingError, ConnectionError, ClosedResourceError: as
                :meth:`recv_packet` (``ConnectionError`` only for a broken connection: a
                closed one ends the iteration). After a ``DeserializeError`` the iteration is
                over, but the client is usable: iterate again for the following messages.
            ValueError: ``timeout`` is negative.
        """
        check_timeout(timeout)
        return self._iterate(self.recv_packet, timeout)


class TCPClient(_SyncStreamClient[SendT, RecvT]):
    """A blocking TCP client (TLS with ``ssl=``), safe to share between threads.

    The connection is made in the constructor; use the client as a context manager (or call
    :meth:`close`). ``TCP_NODELAY`` is set: small requests are not held back.

    Args:
        address: The server's ``(host, port)``; a host name is resolved, and its addresses
            are tried in turn.
        protocol: The protocol seen from the client's side: it encodes requests (``SendT``)
            and decodes responses (``RecvT``).
        ssl: A client-side :class:`ssl.SSLContext` to speak TLS (for example
            ``ssl.create_default_context()``).
        server_hostname: The name checked against the server's certificate (default: the
            host of ``address``). Only with ``ssl``.
        connect_timeout: Seconds allowed for the TCP connection, then as much again at most
            for the TLS handshake; ``None`` for no limit.

    Raises:
        TimeoutError: the connection or the TLS handshake took longer than ``connect_timeout``.
        OSError: the connection failed (``ConnectionRefusedError``, ``socket.gaierror``...,
            with the address in the message).
        ssl.SSLError: the TLS handshake failed (for example, an untrusted certificate).
        ValueError: ``connect_timeout`` is negative, or ``server_hostname`` without ``ssl``.

    Example::

        protocol = StreamProtocol(JSONSerializer())
        with TCPClient(("localhost", 9000), protocol) as client:
            client.send_packet({"hello": "world"})
            print(client.recv_packet(timeout=5))
    """

    __slots__ = ()

    def __init__(
        self,
        address: tuple[str, int],
        protocol: StreamProtocol[SendT, RecvT],
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        check_protocol(protocol, StreamProtocol)
        check_timeout(connect_timeout, "connect_timeout")
        if server_hostname is not None and ssl is None:
            raise ValueError("server_hostname is only meaningful with ssl")
        host, port = address
        try:
            sock = _socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError:
            raise connect_timeout_error(address, connect_timeout) from None
        except OSError as exc:
            raise connect_error(exc, address) from exc
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if ssl is not None:
                sock = ssl.wrap_socket(
                    sock,
                    server_hostname=host if server_hostname is None else server_hostname,
                    do_handshake_on_connect=False,
                )
                _handshake(sock, address, connect_timeout)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, protocol, tls=ssl is not None)

    def __repr__(self) -> str:
        return f"<TCPClient peer={self._peer!r} closed={self._closed}>"


def _handshake(sock: _ssl.SSLSocket, address: Any, timeout: float | None) -> None:
    deadline = deadline_after(timeout)
    while True:
        try:
            sock.do_handshake()
            return
        except _ssl.SSLWantReadError:
            ready = wait_ready(sock, False, deadline)
        except _ssl.SSLWantWriteError:
            ready = wait_ready(sock, True, deadline)
        except _ssl.SSLError:
            raise
        except OSError as exc:  # the server reset or closed the connection
            raise connect_error(exc, address) from exc
        if not ready:
            raise TimeoutError(
                f"the TLS handshake with {describe(address)} did not complete within "
                f"connect_timeout={timeout} s (does the server speak TLS? one that does not "
                "waits for the rest of a message that never comes)"
            )


class UnixStreamClient(_SyncStreamClient[SendT, RecvT]):
    """A blocking Unix stream socket client, safe to share between threads.

    The same API as :class:`TCPClient`; the connection is made in the constructor.

    Args:
        path: The server's socket path.
        protocol: The protocol seen from the client's side (see :class:`TCPClient`).
        connect_timeout: Seconds allowed to connect; ``None`` for no limit.

    Raises:
        TimeoutError: the connection took longer than ``connect_timeout``.
        OSError: the connection failed (``FileNotFoundError``, ``ConnectionRefusedError``...,
            with the path in the message).
        ValueError: ``connect_timeout`` is negative.
    """

    __slots__ = ()

    def __init__(
        self,
        path: str | os.PathLike[str],
        protocol: StreamProtocol[SendT, RecvT],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        check_protocol(protocol, StreamProtocol)
        check_timeout(connect_timeout, "connect_timeout")
        path = os.fspath(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            try:
                sock.connect(path)
            except TimeoutError:
                raise connect_timeout_error(path, connect_timeout) from None
            except OSError as exc:
                raise connect_error(exc, path) from exc
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, protocol, tls=False)

    def __repr__(self) -> str:
        return f"<UnixStreamClient peer={self._peer!r} closed={self._closed}>"
