"""Client transports for asyncio and uvloop (imported only when one of them runs the client).

Streams: an ``asyncio.Protocol`` per connection, the pattern of uvicorn: ``data_received``
feeds the client's decoder directly and wakes the task waiting in ``receive``, if any.
``send_all`` is one ``transport.write``, which sends at once when the socket has room; a sender
waits only after ``pause_writing`` (the transport's buffer is over its high-water mark). Reading
pauses while more than ``READ_HIGH_WATER`` bytes wait undecoded with nobody receiving (a client
that sends without reading the answers), and resumes as soon as a receiver asks for more. Both
halves of flow control are the servers' too: ``server_framework._asyncio_flow``.

Datagrams: the non-blocking socket itself, as the servers do: ``recv``/``send`` at once, and
``add_reader``/``add_writer`` only when they would block (asyncio's own datagram transport
would buffer sends without bound, and needs a protocol object for one socket we already have).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Final, cast

from protocols import StreamDecoder
from server_framework._asyncio_flow import READ_HIGH_WATER, WriteFlow
from server_framework.sockets import MAX_DATAGRAM_SIZE

from ._common import CLOSE_TIMEOUT, closed_error, connection_lost_error, peer_closed_error
from ._transport import ClientTLS, Connector, DatagramTransport, StreamTransport

__all__ = ["CONNECTOR", "AsyncIOConnector", "AsyncIODatagramTransport", "AsyncIOStreamTransport"]


class AsyncIOStreamTransport(StreamTransport, asyncio.Protocol):
    """One stream connection: the asyncio protocol, driven by the loop's callbacks."""

    __slots__ = (
        "_closed",
        "_decoder",
        "_eof",
        "_error",
        "_flow",
        "_loop",
        "_lost",
        "_lost_waiter",
        "_reading_paused",
        "_transport",
        "_waiter",
    )

    def __init__(self, decoder: StreamDecoder[Any], loop: asyncio.AbstractEventLoop) -> None:
        # For the connection's whole life.
        self._decoder = decoder
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._lost_waiter: asyncio.Future[None] = loop.create_future()
        # One task at most waits for data (_waiter); several may wait for the write buffer to
        # drain (_flow).
        self._waiter: asyncio.Future[bool] | None = None
        self._flow = WriteFlow(loop)
        self._reading_paused = False
        # How it ends: the server's EOF, an error, or our close (set once each).
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._closed = False

    # -- asyncio.Protocol callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder.broken:  # the client is aborting the connection
            return
        decoder.feed(data)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(True)
        elif not self._reading_paused and decoder.buffered > READ_HIGH_WATER:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake_receiver()
        # Let the transport close: the server is gone, later sends raise ConnectionError.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is None:
            self._eof = True
        elif not self._closed:
            self._error = exc
        self._wake_receiver()
        self._flow.stop()
        if not self._lost_waiter.done():
            self._lost_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    # -- StreamTransport ----------------------------------------------------------------

    async def receive(self) -> bool:
        if self._closed:
            raise closed_error()
        if self._error is not None:
            raise connection_lost_error(self._error)
        if self._eof:
            return False
        if self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        waiter = self._waiter = self._loop.create_future()
        try:
            if await waiter:
                return True
        finally:
            self._waiter = None
        if self._closed:
            raise closed_error()
        if self._error is not None:
            raise connection_lost_error(self._error)
        return False

    async def send_all(self, data: bytes | bytearray) -> None:
        transport = self._transport
        assert transport is not None
        if self._closed or self._lost or transport.is_closing():
            raise self._send_error()
        transport.write(data)
        if self._flow.paused:
            await self._flow.wait()
            if self._write_stopped():
                raise self._send_error()

    async def send_eof(self) -> None:
        transport = self._transport
        assert transport is not None
        if not (self._closed or self._lost or transport.is_closing()):
            # After the bytes the transport still buffers; then our FIN.
            transport.write_eof()

    def abort(self) -> None:
        self._closed = True
        self._wake_receiver()
        self._flow.stop()
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        self._closed = True
        self._wake_receiver()
        self._flow.stop()
        transport = self._transport
        if transport is None or self._lost_waiter.done():
            return
        transport.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._lost_waiter)
        except TimeoutError:
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise

    def extra(self) -> tuple[Any, Any, Any]:
        transport = self._transport
        assert transport is not None
        return (
            transport.get_extra_info("socket"),
            transport.get_extra_info("peername"),
            transport.get_extra_info("sockname"),
        )

    def ssl_object(self) -> Any:
        assert self._transport is not None
        return self._transport.get_extra_info("ssl_object")

    # -- internals ----------------------------------------------------------------------

    def _wake_receiver(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(False)

    def _write_stopped(self) -> bool:
        return self._lost or self._closed

    def _send_error(self) -> Exception:
        if self._closed:
            return closed_error()
        if self._error is not None:
            return connection_lost_error(self._error)
        return peer_closed_error()


class AsyncIODatagramTransport(DatagramTransport):
    """One connected datagram socket, driven with ``add_reader``/``add_writer`` when needed."""

    __slots__ = ("_closed", "_fd", "_loop", "_read_waiter", "_sock", "_write_waiter")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._closed = False

    async def receive(self) -> bytes:
        sock = self._sock
        loop = self._loop
        while True:
            if self._closed:
                raise closed_error()
            try:
                return sock.recv(MAX_DATAGRAM_SIZE)
            except (BlockingIOError, InterruptedError):
                pass
            waiter = self._read_waiter = loop.create_future()
            loop.add_reader(self._fd, _set_done, waiter)
            try:
                await waiter
            finally:
                self._read_waiter = None
                if not self._closed:  # aclose() already removed it
                    loop.remove_reader(self._fd)

    async def send(self, data: bytes) -> None:
        sock = self._sock
        while True:
            if self._closed:
                raise closed_error()
            if self._write_waiter is None:  # else queue behind the blocked senders
                try:
                    sock.send(data)
                    return
                except (BlockingIOError, InterruptedError):
                    pass
            waiter = self._write_waiter
            if waiter is None:
                waiter = self._write_waiter = self._loop.create_future()
                self._loop.add_writer(self._fd, self._writable)
            # Shielded: the waiter is shared by every blocked sender.
            await asyncio.shield(waiter)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        for waiter in (self._read_waiter, self._write_waiter):
            if waiter is not None:
                _set_done(waiter)
        self._write_waiter = None
        self._sock.close()

    def _writable(self) -> None:
        self._loop.remove_writer(self._fd)
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None:
            _set_done(waiter)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AsyncIOConnector(Connector):
    """Opens client transports on the running asyncio or uvloop loop."""

    __slots__ = ()

    async def connect_tcp(self, family: int, sockaddr: Any, local: Any) -> Any:
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local is not None:
                sock.bind(local)
            await loop.sock_connect(sock, sockaddr)  # a numeric address: no resolution
        except BaseException:
            sock.close()
            raise
        return sock

    async def open_stream(
        self, sock: Any, decoder: StreamDecoder[Any], tls: ClientTLS | None
    ) -> StreamTransport:
        loop = asyncio.get_running_loop()
        try:
            sock.setblocking(False)
            if sock.family == socket.AF_UNIX:
                # uvloop wants its Unix transport for a Unix socket.
                _transport, protocol = await loop.create_unix_connection(
                    lambda: AsyncIOStreamTransport(decoder, loop), sock=sock
                )
                return protocol
            tls_args: dict[str, Any] = {}
            if tls is not None:
                tls_args = {
                    "ssl": tls.context,
                    "server_hostname": tls.server_hostname,
                    "ssl_shutdown_timeout": CLOSE_TIMEOUT,
                }
            _transport, protocol = await loop.create_connection(
                lambda: AsyncIOStreamTransport(decoder, loop), sock=sock, **tls_args
            )
        except BaseException:
            sock.close()  # (again, if the loop did: harmless)
            raise
        return protocol

    async def open_unix(self, path: str, decoder: StreamDecoder[Any]) -> StreamTransport:
        loop = asyncio.get_running_loop()
        if path.startswith("\0"):
            # An abstract name: uvloop's create_unix_connection(path) refuses it (EINVAL);
            # connecting the socket first works on both loops.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, path)
                _transport, protocol = await loop.create_unix_connection(
                    lambda: AsyncIOStreamTransport(decoder, loop), sock=sock
                )
            except BaseException:
                sock.close()
                raise
            return protocol
        _transport, protocol = await loop.create_unix_connection(
            lambda: AsyncIOStreamTransport(decoder, loop), path
        )
        return protocol

    def open_datagram(self, sock: socket.socket) -> DatagramTransport:
        return AsyncIODatagramTransport(sock)


CONNECTOR: Final = AsyncIOConnector()
