"""Client transports for trio (imported only when trio runs the client).

Streams: the trio socket itself for plain TCP and Unix connections, ``trio.SSLStream`` over it
for TLS. Every socket call is a checkpoint (a trip through trio's scheduler), so a receive asks
for up to 64 KiB and the client decodes every frame of it before the next one: pipelined
responses cost one checkpoint per read, not per message.

Sends are serialized by a flag, and only contending senders park (on a ``ParkingLot`` created
on first contention), as the servers do, rather than a ``trio.Lock`` whose acquire would add a
checkpoint to every send. A send cancelled after part of its frame went out would leave the
server with half a message, so the connection is then closed and reported unusable.

Closing wakes the other tasks: ``trio_socket.close()`` makes their pending socket calls raise
``trio.ClosedResourceError`` (reported as our ``ClosedResourceError``). TLS says goodbye
(``close_notify``) only when no other task is in the middle of a call on the stream.
"""

from __future__ import annotations

import contextlib
import socket
import ssl as _ssl
from typing import Any, Final, NoReturn

import trio

from protocols import StreamDecoder
from server_framework.sockets import MAX_DATAGRAM_SIZE, RECEIVE_SIZE

from ._common import (
    CLOSE_TIMEOUT,
    closed_error,
    connection_lost_error,
    eof_sent_error,
    peer_closed_error,
    unusable_error,
)
from ._transport import ClientTLS, Connector, DatagramTransport, StreamTransport

__all__ = ["CONNECTOR", "TrioConnector", "TrioDatagramTransport", "TrioStreamTransport"]


class _SendGate:
    """Lets one sender at a time through, in the order they came; the others park (no
    checkpoint when uncontended).

    ``busy`` is taken directly when it is False; otherwise `wait` parks until a `release`
    hands the gate over (``busy`` stays True): a woken sender owns it at once, so nobody can
    slip in between (``send_eof`` relies on it: the sends parked before it go first).
    """

    __slots__ = ("_lot", "busy")

    def __init__(self) -> None:
        self.busy = False
        self._lot: trio.lowlevel.ParkingLot | None = None

    async def wait(self) -> None:
        """Wait until the gate is handed to us (call it only when ``busy``).

        Cancellation: nothing is owned then.
        """
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()

    def release(self) -> None:
        """Hand the gate to the next parked sender, or open it."""
        lot = self._lot
        if lot is not None and lot:
            lot.unpark()
        else:
            self.busy = False


class TrioStreamTransport(StreamTransport):
    """One stream connection on trio: its socket, and its TLS stream if any."""

    __slots__ = (
        "_broken",
        "_closed",
        "_decoder",
        "_eof",
        "_eof_sent",
        "_gate",
        "_receive_some",
        "_receiving",
        "_sock",
        "_tls",
    )

    def __init__(
        self,
        sock: trio.socket.SocketType,
        decoder: StreamDecoder[Any],
        tls: trio.SSLStream[trio.SocketStream] | None,
    ) -> None:
        # For the connection's whole life.
        self._sock = sock
        self._tls = tls
        self._decoder = decoder
        self._receive_some: Any = sock.recv if tls is None else tls.receive_some
        self._gate = _SendGate()
        # State.
        self._receiving = False
        self._eof = False
        self._eof_sent = False
        self._broken: str | None = None
        self._closed = False

    async def receive(self) -> bool:
        self._check_usable()
        if self._eof:
            return False
        self._receiving = True
        try:
            data = await self._receive_some(RECEIVE_SIZE)
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError) as exc:
            raise self._error(exc) from exc
        finally:
            self._receiving = False
        if not data:
            self._eof = True
            return False
        self._decoder.feed(data)
        return True

    async def send_all(self, data: bytes | bytearray) -> None:
        self._check_usable()
        gate = self._gate
        if gate.busy:
            await gate.wait()
            try:
                self._check_usable()
                if self._eof_sent:
                    raise eof_sent_error()
            except BaseException:
                gate.release()
                raise
        else:
            gate.busy = True
        try:
            if self._tls is None:
                await self._sock_send_all(data)
            else:
                await self._tls_send_all(self._tls, data)
        finally:
            gate.release()

    async def _sock_send_all(self, data: bytes | bytearray) -> None:
        sock = self._sock
        with memoryview(data) as view:
            total = len(view)
            sent = 0
            try:
                while sent < total:
                    sent += await sock.send(view[sent:])
            except trio.Cancelled:
                # trio cancels a socket call only before it moves any byte: a partial frame
                # can only come from a later call of this loop.
                if sent:
                    self._abort_broken(
                        f"a send was cancelled after {sent} of the {total} bytes of a message "
                        "were written"
                    )
                raise
            except (trio.ClosedResourceError, OSError) as exc:
                raise self._error(exc) from exc

    async def _tls_send_all(
        self, tls: trio.SSLStream[trio.SocketStream], data: bytes | bytearray
    ) -> None:
        try:
            await tls.send_all(data)
        except trio.Cancelled:
            # trio leaves an SSLStream whose send_all was cancelled in an unknown state.
            self._abort_broken("a TLS send was cancelled")
            raise
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError) as exc:
            raise self._error(exc) from exc

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        gate = self._gate
        if gate.busy:  # the sends in progress (and those parked before us) go first
            await gate.wait()
        else:
            gate.busy = True
        try:
            if self._closed or self._broken is not None or self._eof_sent:
                return
            self._eof_sent = True  # the senders parked after us will not write
            # ENOTCONN once the server reset the connection: nothing left to half-close.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
        finally:
            gate.release()  # to the next parked sender, which is refused

    def abort(self) -> None:
        self._closed = True
        self._sock.close()

    async def aclose(self) -> None:
        already = self._closed
        self._closed = True
        tls = self._tls
        try:
            if (
                tls is not None
                and not already
                and self._broken is None
                and not self._receiving
                and not self._gate.busy
            ):
                with trio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        await tls.aclose()  # sends close_notify, then closes the socket
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the server is gone already
        finally:
            self._sock.close()
        await trio.lowlevel.checkpoint()

    def extra(self) -> tuple[Any, Any, Any]:
        sock = self._sock
        return (sock, sock.getpeername(), sock.getsockname())

    def ssl_object(self) -> Any:
        return self._tls

    def _check_usable(self) -> None:
        if self._closed or self._broken is not None:
            raise unusable_error(self._closed, self._broken)

    def _abort_broken(self, reason: str) -> None:
        self._broken = f"the connection is unusable: {reason}"
        self.abort()
        self._closed = False  # not closed by the application: report the reason instead

    def _error(self, exc: BaseException) -> Exception:
        """What to raise for an error of a socket or TLS call."""
        if self._broken is not None:
            return ConnectionError(self._broken)
        if self._closed or isinstance(exc, trio.ClosedResourceError):
            return closed_error()
        if isinstance(exc, trio.BrokenResourceError):
            cause = exc.__cause__
            if isinstance(cause, _ssl.SSLEOFError | _ssl.SSLZeroReturnError):
                return peer_closed_error()  # the server closed without a TLS goodbye
            return connection_lost_error(cause or exc)
        return connection_lost_error(exc)


class TrioDatagramTransport(DatagramTransport):
    """One connected datagram socket on trio."""

    __slots__ = ("_closed", "_gate", "_sock")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._gate = _SendGate()
        self._closed = False

    async def receive(self) -> bytes:
        if self._closed:
            raise closed_error()
        try:
            return await self._sock.recv(MAX_DATAGRAM_SIZE)
        except (trio.ClosedResourceError, OSError) as exc:
            self._reraise(exc)

    async def send(self, data: bytes) -> None:
        self._check_open()
        gate = self._gate
        if gate.busy:
            await gate.wait()
            try:
                self._check_open()  # closed while we waited for the gate?
            except BaseException:
                gate.release()
                raise
        else:
            gate.busy = True
        try:
            await self._sock.send(data)
        except (trio.ClosedResourceError, OSError) as exc:
            self._reraise(exc)
        finally:
            gate.release()

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error()

    def _reraise(self, exc: trio.ClosedResourceError | OSError) -> NoReturn:
        """Raise the error of a failed socket call: ours if we closed the socket, else its."""
        if isinstance(exc, trio.ClosedResourceError):
            raise closed_error() from None
        if self._closed:
            raise closed_error() from exc
        raise exc

    async def aclose(self) -> None:
        self._closed = True
        self._sock.close()
        await trio.lowlevel.checkpoint()


class TrioConnector(Connector):
    """Opens client transports in the running trio loop."""

    __slots__ = ()

    async def connect_tcp(self, family: int, sockaddr: Any, local: Any) -> Any:
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local is not None:
                await sock.bind(local)
            await sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    async def open_stream(
        self, sock: Any, decoder: StreamDecoder[Any], tls: ClientTLS | None
    ) -> StreamTransport:
        if isinstance(sock, socket.socket):  # given to from_socket
            try:
                sock = trio.socket.from_stdlib_socket(sock)
            except BaseException:
                sock.close()
                raise
        try:
            stream = None
            if tls is not None:
                stream = trio.SSLStream(
                    trio.SocketStream(sock), tls.context, server_hostname=tls.server_hostname
                )
                await _handshake(stream)
        except BaseException:
            sock.close()
            raise
        return TrioStreamTransport(sock, decoder, stream)

    async def open_unix(self, path: str, decoder: StreamDecoder[Any]) -> StreamTransport:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return TrioStreamTransport(sock, decoder, None)

    def open_datagram(self, sock: socket.socket) -> DatagramTransport:
        return TrioDatagramTransport(trio.socket.from_stdlib_socket(sock))


async def _handshake(tls: trio.SSLStream[trio.SocketStream]) -> None:
    """The TLS handshake, failing with the ``ssl`` module's error as on asyncio."""
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, _ssl.SSLError) and not isinstance(
            cause, _ssl.SSLEOFError | _ssl.SSLZeroReturnError
        ):
            raise cause from None  # a certificate or protocol problem: say which
        raise ConnectionResetError(
            f"the server closed the connection during the TLS handshake ({cause or exc})"
        ) from exc


CONNECTOR: Final = TrioConnector()
