"""The servers on trio: stream connections, datagram peers, and their listeners.

Streams: one task per connection. The task reads with a plain non-blocking ``recv`` on the
stdlib socket and uses trio only to wait for readability (TLS goes through ``trio.SSLStream``);
it handles every complete frame of the read in one synchronous batch (see ``_driver``), then
sends the batch's replies with one non-blocking ``send`` (a helper task or trio's own send
only when the kernel does not take it all). trio checkpoints on every socket call, so paying
that once per read rather than once per frame is what makes pipelining cheap here. The one
checkpoint comes after the send and before the next non-blocking ``recv``: by then the peer
has usually answered, where a ``recv`` straight after the send would fail and park the task
(a failed ``recv`` and an ``epoll_ctl`` per request). Nothing is kept between reads: an idle
connection holds no receive buffer.

trio's checkpoints are the cost to watch (each one is a trip through the scheduler), so:
- sends are serialized by a flag, and only contending senders park (a ParkingLot created on
  first contention), instead of a Lock whose acquire checkpoints on every send;
- waiting for data needs no cancel scope of its own unless a timeout is set: to wake a parked
  connection (close requested, server stopping) the connection-wide scope is cancelled, which
  is right since either reason ends the connection.

The accept loop backs off for ``ACCEPT_RETRY_DELAY`` when accept() fails for lack of
descriptors or memory, and counts a connection against ``max_connections`` as soon as it is
accepted (before any TLS handshake or PROXY header).

Datagrams: one receiver task per socket. After each ``await recvfrom`` (one trip through the
scheduler) it drains up to ``READ_BATCH - 1`` more datagrams that are already waiting with
non-blocking reads, so a busy socket costs one checkpoint per batch, not per datagram. Each
datagram goes to its peer's client, whose own task runs the handler. Sending tries a
non-blocking ``sendto`` first; only when the socket buffer is full does the sender wait (under
a lock, since trio allows one task at a time to wait for writability).
"""

from __future__ import annotations

import errno
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from handlers.base import StreamClient
from protocols import ProxyHeaderParser, ProxyProtocolError
from server_framework.backend import AsyncBackend, Event
from server_framework.exceptions import BrokenResourceError, ClosedResourceError
from server_framework.sockets import (
    RECEIVE_SIZE,
    Address,
    PeerCredentials,
    SocketProxy,
    normalize_address,
    peer_credentials,
    set_abortive_close,
)

from ._admission import PER_IP, REFUSAL_ANSWER_TIMEOUT, REFUSED, Admission, Token
from ._base import Listener
from ._driver import (
    ACCEPT_RETRY_DELAY,
    FIRST_REQUEST_GRACE,
    READ_BATCH,
    RESOURCE_ERRNOS,
    ConnectionDriver,
    RateLimitedLog,
    begin_stop,
    bind_log_context,
    bump,
    errno_name,
    not_tls_hint,
    now,
    stop_all,
)
from ._options import DatagramOptions, StreamOptions
from ._peer import RECEIVE_LIMIT, DatagramEndpoint, DatagramPeer

__all__ = ["TrioDatagramListener", "TrioStreamListener"]


class TrioStreamConnection(ConnectionDriver, StreamClient[Any]):
    """One connection on trio: the connection task's state and the handler's client."""

    __slots__ = (
        "_aborted",
        "_eof",
        "_ip_token",
        "_listener",
        "_parked",
        "_peer",
        "_raw",
        "_receive",
        "_scope",
        "_send_all",
        "_send_lot",
        "_sending",
        "_sock",
        "_started",
        "_tls",
        "_write_timeout",
    )

    def __init__(self, listener: TrioStreamListener, raw: socket.socket, peer: Any) -> None:
        options = listener.options
        self._init_stream(options)
        self._listener = listener
        self._write_timeout = options.write_timeout
        self._raw = raw  # the stdlib socket: plain non-blocking I/O first, trio only to wait
        self._sock = trio.socket.from_stdlib_socket(raw)
        self._peer = normalize_address(peer)  # as accept() reported it: stable after a reset
        self._tls: trio.SSLStream[trio.SocketStream] | None = None
        self._receive: Callable[[int], Awaitable[bytes | bytearray]] = self._raw_receive
        self._send_all: Callable[[bytes | bytearray], Awaitable[None]] = self._sock_send_all
        self._scope: trio.CancelScope | None = None
        self._ip_token: Token = None  # counted against max_connections_per_ip (_admission)
        self._started = False  # the handler's on_connection ran (so on_disconnection will)
        self._parked = False
        self._sending = False
        self._send_lot: trio.lowlevel.ParkingLot | None = None
        self._eof = False
        self._aborted = False  # abort(): the socket is closed, nothing more to send or wait

    # -- StreamClient -------------------------------------------------------------------

    async def send_packet(self, packet: Any) -> None:
        out = self._out
        if out is not None:
            self._protocol.encode_into(packet, out)
            if len(out) >= self._high_water:
                await self._batch_full()
            return
        if self._lost or self._close_requested:
            raise self._closed_error()
        data = self._protocol.encode(packet)
        self._counters.bytes_out += len(data)
        await self._send(data)

    async def _batch_full(self) -> None:
        # A handler sent a lot in one step: block, so that the batch goes out now (a helper
        # task sends it), and wait until it is sent.
        self._counters.high_water += 1
        await trio.lowlevel.checkpoint()
        await self._sent()

    async def aclose(self) -> None:
        self._request_close()
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        if not self._aborted:
            self._aborted = True
            set_abortive_close(self._raw)
            # Closing the trio socket wakes whoever waits on it (ClosedResourceError).
            self._sock.close()
        self._lost = True
        self._request_close()

    def is_closing(self) -> bool:
        return self._lost or self._close_requested

    def backend(self) -> AsyncBackend:
        return self._listener.backend

    @property
    def peer_address(self) -> Address:
        return self._peer

    @property
    def local_address(self) -> Address:
        return normalize_address(self._sock.getsockname())

    @property
    def socket(self) -> SocketProxy:
        return SocketProxy(self._sock)

    # trio.SSLStream forwards getpeercert, cipher and version to its ssl.SSLObject.
    @property
    def tls_peer_certificate(self) -> dict[str, Any] | None:
        return None if self._tls is None else self._tls.getpeercert()

    @property
    def tls_peer_certificate_der(self) -> bytes | None:
        return None if self._tls is None else self._tls.getpeercert(binary_form=True)

    @property
    def tls_cipher(self) -> tuple[str, str, int] | None:
        return None if self._tls is None else self._tls.cipher()

    @property
    def tls_version(self) -> str | None:
        return None if self._tls is None else self._tls.version()

    @property
    def peer_credentials(self) -> PeerCredentials | None:
        return peer_credentials(self._raw)

    def __repr__(self) -> str:
        return f"<TrioStreamConnection id={self.id} closing={self.is_closing()}>"

    # -- the connection task ------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; never raises except on cancellation."""
        listener = self._listener
        try:
            with trio.CancelScope() as self._scope:
                if listener.options.proxy_trusted is not None:
                    accepted_from = self._peer
                    if not await self._read_proxy_header():
                        return
                    admission = listener.admission
                    if self._peer is not accepted_from:
                        # The original client, from the trusted proxy's header, is limited.
                        token = admission.acquire_address(self._peer)
                        if token is REFUSED:
                            if admission.refuse(PER_IP):
                                try:
                                    await self._answer(PER_IP)
                                finally:
                                    admission.answered()
                            return
                        self._ip_token = token
                bind_log_context(conn_id=self.id, peer=self._peer_for_log())
                ssl = listener.options.ssl
                if ssl is not None and not await self._handshake(ssl):
                    return
                if listener.options.log_connections:
                    listener.log.debug("connection accepted")
                self._started = True
                await self._connected()
                await self._serve()
        except Exception as exc:
            self._log.error("connection failed", exc_info=exc)
        finally:
            with trio.CancelScope(shield=True):
                await self._cleanup()
            listener.release(self)

    async def _serve(self) -> None:
        # The per-read loop. Its common case runs inline, without a coroutine per call: the
        # batch goes out with one non-blocking send, then (after one checkpoint) a
        # non-blocking recv takes what has arrived meanwhile; only when nothing is there does
        # the task park in _wait_data.
        raw = self._raw
        while True:
            out = self._out = bytearray()
            try:
                blocked = self._process()
            finally:
                self._out = None
            if out:
                self._counters.bytes_out += len(out)
            if blocked is not None:
                if out:
                    # Nothing may be awaited between a step's suspension and its resumption:
                    # the suspended coroutine's cancel scopes are on this task's stack. So the
                    # replies already produced go out from a helper task, ahead of any later
                    # send (the send slot is taken now, synchronously).
                    self._send_in_background(out)
                await self._finish_blocked(blocked)
                continue
            if out:
                if self._tls is None and not self._sending:
                    try:
                        sent = raw.send(out)
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        self._lost = True  # the peer is gone: the next wait notices it
                        sent = len(out)
                    if sent < len(out):
                        await self._send_batch(out[sent:])
                else:
                    await self._send_batch(out)
            if self._should_stop():
                return
            if self._tls is None and not self._eof:
                # One trip through the scheduler per read, before it: a busy connection lets
                # the others run, and the peer gets the time to answer the replies just sent
                # (a recv straight after the send would mostly find nothing, then wait: two
                # more system calls per request).
                await trio.lowlevel.checkpoint()
                try:
                    data = raw.recv(RECEIVE_SIZE)
                except BlockingIOError:
                    pass
                except ConnectionError:
                    self._lost = self._eof = True
                    continue
                else:
                    self._received_data(data)
                    continue
            woke = await self._wait_data()
            if woke is not None and await self._expired(woke):
                return

    def _received_data(self, data: bytes | bytearray) -> None:
        """``data`` was read: feed it to the decoder, or note EOF (empty)."""
        if not data:
            # Handle the frames already received (a half-closed peer still reads our
            # replies), start nothing new; a partial frame at EOF is dropped.
            self._eof = self._stopping = True
            return
        self._decoder.feed(data if type(data) is bytes else bytes(data))
        self._fed(len(data))
        self._counters.bytes_in += len(data)

    async def _read_proxy_header(self) -> bool:
        """Read the PROXY protocol header; False (after logging why) if we must close."""
        listener = self._listener
        options = listener.options
        trusted = options.proxy_trusted
        assert trusted is not None
        if not trusted.is_trusted(self._sock.getpeername() if self._peer == "" else self._peer):
            listener.refuse_proxy(reason="untrusted peer", peer=str(self._peer))
            return False
        parser = ProxyHeaderParser(options.proxy_protocol or "auto")
        header = None
        with trio.move_on_after(options.proxy_header_timeout):
            try:
                while header is None:
                    data = await self._sock.recv(RECEIVE_SIZE)
                    if not data:
                        return False
                    header = parser.feed(data)
            except ProxyProtocolError as exc:
                listener.refuse_proxy(reason="invalid header", error=str(exc))
                return False
            except OSError:
                return False
        if header is None:
            bump(self._counters.expired, "proxy_header_timeout")
            listener.refuse_proxy(reason="no header in time")
            return False
        if not header.is_local and header.source is not None:
            self._peer = normalize_address(header.source)
        rest = parser.remaining()
        if rest:
            self._decoder.feed(rest)
        return True

    async def _handshake(self, context: _ssl.SSLContext) -> bool:
        stream = self._tls = trio.SSLStream(
            trio.SocketStream(self._sock), context, server_side=True
        )
        self._receive = stream.receive_some
        self._send_all = self._tls_send_all
        with trio.move_on_after(self._listener.options.ssl_handshake_timeout) as scope:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                bump(self._counters.refused, "tls_handshake")
                hint = not_tls_hint(exc)
                if hint is not None:
                    self._listener.refuse_plaintext(hint=hint)  # peer: in the log context
                else:
                    self._log.debug("TLS handshake failed", error=str(exc.__cause__ or exc))
                return False
        if scope.cancelled_caught:
            bump(self._counters.refused, "tls_handshake")
            bump(self._counters.expired, "ssl_handshake_timeout")
            self._log.debug("TLS handshake timed out")
            return False
        return True

    async def _wait_data(self) -> object:
        """Wait for data, then receive it (or notice EOF or a lost peer); ``None``, or the
        marker of a deadline that expired first. On a plain socket, called once a
        non-blocking recv found nothing."""
        if self._eof or self._should_stop():
            return None
        deadline = self._deadline() if self._may_expire() else None
        self._parked = True
        try:
            if deadline is None:
                data = await self._receive(RECEIVE_SIZE)
            else:
                with trio.move_on_after(deadline[0] - now()) as scope:
                    data = await self._receive(RECEIVE_SIZE)
                if scope.cancelled_caught:
                    return deadline[1]
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            self._lost = self._eof = True
            return None
        finally:
            self._parked = False
        self._received_data(data)
        return None

    def _wake(self) -> None:
        # Only a parked connection is woken: elsewhere the flags are checked before waiting.
        if self._parked and self._scope is not None:
            self._scope.cancel()

    def _send_in_background(self, data: bytearray) -> None:
        nursery = self._listener.nursery
        assert nursery is not None
        assert not self._sending  # batches are produced only by this task, between its sends
        self._sending = True
        nursery.start_soon(self._background_send, data)

    async def _background_send(self, data: bytearray) -> None:
        try:
            await self._send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._lost = True
        finally:
            self._sending = False
            if self._send_lot is not None:
                self._send_lot.unpark()

    async def _send_batch(self, data: bytearray) -> None:
        try:
            await self._send(data)
        except (BrokenResourceError, ClosedResourceError):
            pass  # the peer is gone: the next wait notices it

    async def _no_send_in_progress(self) -> None:
        """Wait until no send is in progress (parked only while another send runs)."""
        while self._sending:
            lot = self._send_lot
            if lot is None:
                lot = self._send_lot = trio.lowlevel.ParkingLot()
            await lot.park()

    async def _sent(self) -> None:
        """Wait until no send is in progress (the peer took it, or is gone)."""
        await self._no_send_in_progress()
        if self._lost:
            raise self._closed_error()

    async def _send(self, data: bytes | bytearray) -> None:
        await self._no_send_in_progress()
        self._sending = True
        try:
            await self._send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._lost = True
            raise self._closed_error() from exc
        finally:
            self._sending = False
            if self._send_lot is not None:
                self._send_lot.unpark()

    async def _raw_receive(self, size: int) -> bytes:
        """Wait until the socket is readable, then ``recv``: the wait is the one trip through
        trio's scheduler (a trio socket's ``recv`` that has to wait yields twice: the wait,
        then a checkpoint). ``_serve`` has already tried a non-blocking ``recv``."""
        raw = self._raw
        while True:
            await trio.lowlevel.wait_readable(raw)
            try:
                return raw.recv(size)
            except BlockingIOError:
                continue

    async def _sock_send_all(self, data: bytes | bytearray) -> None:
        # Try the plain non-blocking send first: a trio socket's send() yields to the scheduler
        # even when the kernel takes everything at once, which is one extra trip per read. The
        # connection task still yields once per read, in recv().
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        total = len(data)
        if sent == total:
            return
        sock = self._sock
        timeout = self._write_timeout
        with memoryview(data) as view:
            while sent < total:
                if timeout is None:
                    sent += await sock.send(view[sent:])
                    continue
                # The write deadline: each send must make progress within write_timeout.
                with trio.move_on_after(timeout):
                    sent += await sock.send(view[sent:])
                    continue
                raise self._write_timed_out()

    async def _tls_send_all(self, data: bytes | bytearray) -> None:
        # Through TLS, progress is not visible per chunk: the whole batch gets write_timeout.
        assert self._tls is not None
        if self._write_timeout is None:
            await self._tls.send_all(data)
            return
        with trio.move_on_after(self._write_timeout):
            await self._tls.send_all(data)
            return
        raise self._write_timed_out()

    def _write_timed_out(self) -> TimeoutError:
        bump(self._counters.expired, "write_timeout")
        self._broken_reason = (
            f"the peer read nothing for {self._write_timeout} seconds (write_timeout)"
        )
        self._log.debug("closing connection: write_timeout expired")
        return TimeoutError(self._broken_reason)  # an OSError: the senders' "peer gone"

    async def answer_refusal(self, reason: str) -> None:
        """The task of a connection refused at accept whose handler answers it (after the TLS
        handshake, if any), then closes it."""
        admission = self._listener.admission
        try:
            bind_log_context(conn_id=self.id, peer=self._peer_for_log())
            ssl = self._listener.options.ssl
            with trio.move_on_after(REFUSAL_ANSWER_TIMEOUT):
                if ssl is None or await self._handshake(ssl):
                    await self._answer(reason)
        finally:
            admission.answered()
            with trio.CancelScope(shield=True):
                await self._cleanup()

    async def _answer(self, reason: str) -> None:
        """The handler's ``on_refused`` (within ``REFUSAL_ANSWER_TIMEOUT``)."""
        with trio.move_on_after(REFUSAL_ANSWER_TIMEOUT) as scope:
            try:
                await self._listener.options.handler.on_refused(self, reason)
            except Exception as exc:
                self._log.error("on_refused() failed", exc_info=exc)
        if scope.cancelled_caught:
            self._log.debug("on_refused() did not finish in time", timeout=REFUSAL_ANSWER_TIMEOUT)
        self._close_requested = True

    async def _cleanup(self) -> None:
        self._log_unframed()
        if self._started:
            await self._end_handler()
        if not self._aborted:
            # Replies still being sent by a helper task go out before the socket closes.
            close_timeout = self._listener.options.ssl_shutdown_timeout
            with trio.move_on_after(close_timeout):
                await self._no_send_in_progress()
            if self._tls is not None and not self._aborted:
                with trio.move_on_after(close_timeout):
                    await self._tls.aclose()
        self._sock.close()
        self._decoder.close()  # an unfinished frame (up to max_frame_size) is let go now
        if self._listener.options.log_connections:
            self._listener.log.debug("connection closed")


class TrioStreamListener(Listener[StreamOptions]):
    """Runs one stream server's accept loops and connection tasks on trio."""

    def __init__(
        self, options: StreamOptions, sockets: list[socket.socket], backend: AsyncBackend
    ) -> None:
        super().__init__(options, sockets, backend)
        self.connections: set[TrioStreamConnection] = set()
        log = self.log
        self.counters = counters = options.counters
        self.admission = Admission(options, log)
        self._room: trio.Event | None = None  # set when a paused accept loop may go on
        self.refuse_proxy = RateLimitedLog(
            "closing connection: PROXY protocol check failed",
            log=log,
            table=counters.refused,
            key="proxy_protocol",
        )
        self.refuse_plaintext = RateLimitedLog(
            "closing connection: the TLS handshake failed", log=log
        )
        self._accept_failures = RateLimitedLog("accept() failed, retrying", "error", log)
        self._draining = False
        self._drained = trio.Event()  # set when the last connection ends during a drain
        self.nursery: trio.Nursery | None = None  # where connection tasks (and helpers) run

    def active(self) -> tuple[int, int]:
        return (len(self.connections), 0)

    def release(self, conn: TrioStreamConnection) -> None:
        """Forget a connection that ended."""
        self.connections.discard(conn)
        token = conn._ip_token
        if token is not None:
            conn._ip_token = None
            self.admission.release_address(token)
        if self.admission.released(len(self.connections)) and self._room is not None:
            self._room.set()
            self._room = None
        if self._draining and not self.connections:
            self._drained.set()

    async def serve(self, stop: Event) -> None:
        self.stop = stop
        grace = self.options.shutdown_timeout
        async with trio.open_nursery() as connections:
            self.nursery = connections
            try:
                async with trio.open_nursery() as acceptors:
                    for sock in self.sockets:
                        acceptors.start_soon(self._accept_loop, sock, connections)
                    await stop.wait()
                    acceptors.cancel_scope.cancel()
            except trio.Cancelled:
                grace = 0.0
                raise
            finally:
                # Close the listening sockets first: new clients are refused at once, not
                # queued until the drain ends (nothing waits on them any more).
                for sock in self.sockets:
                    sock.close()
                with trio.CancelScope(shield=True):
                    await self._drain(grace, connections)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def _drain(self, grace: float, nursery: trio.Nursery) -> None:
        self._draining = True
        fresh = begin_stop(self.connections)
        if self.connections:
            with trio.move_on_after(grace):
                if fresh:
                    with trio.move_on_after(min(FIRST_REQUEST_GRACE, grace)):
                        await self._drained.wait()
                    stop_all(fresh)
                await self._drained.wait()
        if self.connections:
            bump(self.counters.expired, "shutdown_timeout", len(self.connections))
            self.log.warning(
                "cancelling connections still busy after the grace period",
                count=len(self.connections),
            )
        nursery.cancel_scope.cancel()

    async def _accept_loop(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        admission = self.admission
        by_address = self.options.proxy_trusted is None
        while True:
            if admission.pause and admission.over_limit(len(self.connections)):
                # overload="pause": accept nothing until connections end (the kernel queues).
                if self._room is None:
                    self._room = trio.Event()
                await self._room.wait()
                continue
            try:
                conn_sock, peer = sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the peer gave up while queued
                if exc.errno not in RESOURCE_ERRNOS:
                    raise
                bump(self.counters.accept_errors, errno_name(exc))
                self._accept_failures(error=str(exc))
                await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            reason, token = admission.check(len(self.connections), by_address and peer)
            if reason is not None and not admission.refuse(reason):
                conn_sock.close()  # counted; the handler does not answer it
                continue
            conn_sock.setblocking(False)
            if conn_sock.family != socket.AF_UNIX:
                conn_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = TrioStreamConnection(self, conn_sock, peer)
            if reason is not None:
                nursery.start_soon(conn.answer_refusal, reason)
            else:
                conn._ip_token = token
                self.connections.add(conn)
                nursery.start_soon(conn.run)
            del conn  # this frame waits in accept() next: hold no finished connection alive
            await trio.lowlevel.checkpoint()  # a connection flood must not starve the others


class TrioDatagramClient(DatagramPeer, ConnectionDriver):
    """One peer address of a datagram server on trio."""

    __slots__ = ("_address", "_endpoint", "_event")

    def __init__(self, endpoint: TrioDatagramEndpoint, address: Any) -> None:
        self._init_peer(endpoint.options)
        self._endpoint = endpoint
        self._address = address
        self._event: trio.Event | None = None

    async def run(self) -> None:
        """The client's task: handle its datagrams until it idles out or the server stops."""
        try:
            bind_log_context(conn_id=self.id, peer=self._peer_for_log())
            while True:
                blocked = self._process()
                if blocked is not None:
                    await self._finish_blocked(blocked)
                    continue
                if self._should_stop():
                    break
                woke = await self._wait_data()
                if woke is not None and await self._expired(woke):
                    break
        except Exception as exc:
            self._log.error(self._words.failed, exc_info=exc)
        finally:
            with trio.CancelScope(shield=True):
                await self._close_generator()
            self._endpoint.forget(self)

    async def _wait_data(self) -> object:
        if self._decoder.buffered or self._should_stop():
            return None
        deadline = self._deadline()
        event = self._event = trio.Event()
        try:
            if deadline is None:
                await event.wait()
                return None
            with trio.move_on_after(deadline[0] - now()) as scope:
                await event.wait()
        finally:
            self._event = None
        return deadline[1] if scope.cancelled_caught else None

    def _wake(self) -> None:
        event = self._event
        if event is not None:
            event.set()


class TrioDatagramEndpoint(DatagramEndpoint[TrioDatagramClient]):
    """One bound datagram socket on trio: the receiver loop, peers, and sending."""

    def __init__(self, listener: TrioDatagramListener, sock: socket.socket) -> None:
        super().__init__(listener, sock)
        self.trio_listener = listener
        self.raw = sock
        self.trio_sock = trio.socket.from_stdlib_socket(sock)
        self.nursery: trio.Nursery | None = None  # where client tasks run, once serving
        self._send_lock = trio.Lock()

    async def receive_loop(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        recvfrom = self.trio_sock.recvfrom
        raw_recvfrom = self.raw.recvfrom
        while True:
            try:
                data, address = await recvfrom(RECEIVE_LIMIT)
            except OSError as exc:
                self.options.log.debug("recvfrom() failed", error=str(exc))
                continue
            self._dispatch(data, address)
            for _ in range(READ_BATCH - 1):
                try:
                    data, address = raw_recvfrom(RECEIVE_LIMIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self.options.log.debug("recvfrom() failed", error=str(exc))
                    continue
                self._dispatch(data, address)

    def _new_client(self, address: Any) -> TrioDatagramClient:
        return TrioDatagramClient(self, address)

    def _start(self, client: TrioDatagramClient) -> None:
        assert self.nursery is not None  # datagrams are received only once serving
        self.nursery.start_soon(client.run)

    def _notify(self, client: TrioDatagramClient) -> None:
        client._wake()

    def forget(self, client: TrioDatagramClient) -> None:
        super().forget(client)
        self.trio_listener.client_ended()

    async def send(self, data: bytes, address: Any) -> None:
        if self.closed:
            raise ClosedResourceError("the server's socket is closed")
        self.options.counters.bytes_out += len(data)
        try:
            self.raw.sendto(data, address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        async with self._send_lock:
            await self.trio_sock.sendto(data, address)


class TrioDatagramListener(Listener[DatagramOptions]):
    """Runs a datagram server's receiver loops and peers on trio."""

    def __init__(
        self, options: DatagramOptions, sockets: list[socket.socket], backend: AsyncBackend
    ) -> None:
        super().__init__(options, sockets, backend)
        self.endpoints = [TrioDatagramEndpoint(self, sock) for sock in sockets]
        self._draining = False
        self._drained = trio.Event()

    def _client_count(self) -> int:
        return sum(len(endpoint.clients) for endpoint in self.endpoints)

    def active(self) -> tuple[int, int]:
        return (0, self._client_count())

    def client_ended(self) -> None:
        if self._draining and not self._client_count():
            self._drained.set()

    async def serve(self, stop: Event) -> None:
        self.stop = stop
        grace = self.options.shutdown_timeout
        async with trio.open_nursery() as clients:
            try:
                async with trio.open_nursery() as receivers:
                    for endpoint in self.endpoints:
                        receivers.start_soon(endpoint.receive_loop, clients)
                    await stop.wait()
                    receivers.cancel_scope.cancel()
            except trio.Cancelled:
                grace = 0.0
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await self._drain(grace, clients)

    async def _drain(self, grace: float, nursery: trio.Nursery) -> None:
        self._draining = True
        for endpoint in self.endpoints:
            for client in list(endpoint.clients.values()):
                client._begin_stop()
        if self._client_count():
            with trio.move_on_after(grace):
                await self._drained.wait()
        if self._client_count():
            bump(self.options.counters.expired, "shutdown_timeout", self._client_count())
            self.log.warning(
                "cancelling peers still busy after the grace period", count=self._client_count()
            )
        nursery.cancel_scope.cancel()
        for endpoint in self.endpoints:
            endpoint.closed = True

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            endpoint.closed = True
        await trio.lowlevel.checkpoint()
