"""``serve --metrics HOST:PORT``: Prometheus metrics and health checks over HTTP.

The endpoint itself is :class:`server_framework.prometheus.MetricsEndpoint` (``GET /metrics``,
``/ready``, ``/live``), served by a daemon thread of the process that owns the port; it needs
``prometheus-client`` (``pip install 'server-framework[metrics]'``), checked at start: without
it, ``--metrics`` is a usage error (exit 2). Who serves it:

- **One process**: the serving process. ``/metrics`` exposes the snapshots of its servers
  (:class:`ServeState`, which :func:`~server_framework.cli.serve.serve` fills in); ``/ready``
  is 200 once every server the command line started serves, and 503 before and from the moment
  a stop (SIGTERM, SIGINT) begins to drain them.
- **``--workers N``**: the parent (the supervisor), which serves no client itself. Each worker
  has a channel to it, a Unix socket pair inherited like the ready pipe: a daemon thread of the
  worker (:class:`WorkerChannel`) answers each request with its snapshots and readiness,
  and sends a final snapshot once its servers have stopped. At every scrape the parent's
  :class:`MetricsHub` asks every live worker and waits for the answers at most
  :data:`SCRAPE_TIMEOUT` seconds; a worker that does not answer in time counts with the
  counters of its last answer (its gauges are left out), and is logged at a bounded rate (the
  1st, 2nd, 4th, 8th... late scrape). When a worker exits, its last (or final) counters are
  added to a *retired* total, so the exposed counters never go down across reloads (SIGHUP),
  resizes and restarts; the gauges of exited workers are not kept. ``/ready`` is 200 once the
  first generation of workers all serve, stays 200 during a reload (the old generation serves
  until the new one does), and is 503 from the moment a stop begins.
- **``--reload``**: the server process serves the endpoint itself, as one process does (it is
  down while the server restarts: ``--reload`` is for development).

The wire format of a channel: frames of a 4-byte big-endian length and a MessagePack body, a
:class:`MetricsRequest` from the parent, a :class:`MetricsReport` from the worker.
"""

from __future__ import annotations

import contextlib
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

from protocols import (
    LengthPrefixFramer,
    MsgPackSerializer,
    ProtocolError,
    StapledSerializer,
    StreamDecoder,
    StreamProtocol,
)
from server_framework.cli.exits import StartupError, os_error_reason
from server_framework.cli.values import format_inet
from server_framework.metrics import ServerMetrics, merge, process_metrics

if TYPE_CHECKING:
    from server_framework.prometheus import MetricsEndpoint

__all__ = [
    "MISSING_PROMETHEUS_CLIENT",
    "SCRAPE_TIMEOUT",
    "MetricsHub",
    "MetricsReport",
    "MetricsRequest",
    "ServeState",
    "WorkerChannel",
    "combine",
    "metrics_endpoint",
    "prometheus_installed",
]

logger: Final = structlog.get_logger(__name__)

#: The error line of ``--metrics`` without prometheus-client (exit 2).
MISSING_PROMETHEUS_CLIENT: Final = (
    "--metrics needs prometheus-client: pip install 'server-framework[metrics]'"
)
#: Seconds the parent of ``--workers`` waits for its workers' answers to one scrape.
SCRAPE_TIMEOUT: Final = 1.0
#: The routes of the endpoint, for the log line.
_PATHS: Final = ("/metrics", "/ready", "/live")
#: The largest frame a channel accepts (a report of many listeners is a few kilobytes).
_MAX_FRAME: Final = 16 << 20
#: Seconds a worker tries to send one report.
_SEND_TIMEOUT: Final = 5.0


def prometheus_installed() -> bool:
    """True if ``prometheus_client`` (and so :mod:`server_framework.prometheus`) imports."""
    try:
        import server_framework.prometheus  # noqa: F401, PLC0415  (optional: only --metrics)
    except ImportError:
        return False
    return True


# -- one process ----------------------------------------------------------------------------


class ServeState:
    """What :func:`~server_framework.cli.serve.serve` tells the metrics endpoint or channel.

    Written in the event loop's thread, read from the endpoint's or the channel's thread (each
    attribute is replaced whole, never mutated in place).

    Attributes:
        servers: The servers the command line created (none before).
        started: Every server was entered and started serving (``on_ready`` was called).
        stopping: A stop began: the servers drain, or have stopped.
    """

    def __init__(self) -> None:
        self.servers: tuple[Any, ...] = ()
        self.started = False
        self.stopping = False

    def snapshots(self) -> list[ServerMetrics]:
        """The command line's servers' snapshots once they all serve (and still once they have
        stopped), then those of any other server serving in this process (one the handler
        started itself). Before they serve, their listeners have no name yet: none is shown."""
        own = [server.metrics for server in self.servers] if self.started else []
        names = {snap.listener for snap in own}
        return own + [snap for snap in process_metrics() if snap.listener not in names]

    def readiness(self) -> tuple[bool, str]:
        """``(True, "ready")`` once every server serves and none drains, else
        ``(False, reason)``: ``starting``, ``draining``, ``not serving: LISTENER``."""
        if self.stopping:
            return False, "draining"
        if not self.started:
            return False, "starting"
        # Only with --metrics, which needs prometheus-client (checked at start).
        from server_framework.prometheus import readiness  # noqa: PLC0415

        return readiness([server.metrics for server in self.servers])


@contextlib.contextmanager
def metrics_endpoint(
    address: tuple[str, int],
    source: Callable[[], Sequence[ServerMetrics]],
    *,
    ready: Callable[[], tuple[bool, str]],
    workers: Callable[[], int] | None = None,
) -> Iterator[MetricsEndpoint]:
    """Serve :class:`~server_framework.prometheus.MetricsEndpoint` on ``address`` while inside
    (its default liveness check: no event loop blocked for 30 s).

    Args:
        address: The ``--metrics`` address (host ``""``: every interface).
        source: Returns the snapshots to expose.
        ready: The readiness check.
        workers: Returns the number of live workers (``--workers``), or None.

    Raises:
        StartupError: The address cannot be bound (exit 3).
    """
    from server_framework import prometheus  # noqa: PLC0415  (optional: only --metrics)

    try:
        endpoint = prometheus.MetricsEndpoint(*address, source, ready=ready, workers=workers)
    except OSError as exc:
        raise StartupError(
            f"--metrics {format_inet(address)}: cannot listen: {os_error_reason(exc)}"
        ) from exc
    with endpoint:
        logger.info("serving metrics", address=format_inet(endpoint.address), paths=_PATHS)
        yield endpoint


# -- the channel between a worker and its parent ----------------------------------------------


class MetricsRequest(msgspec.Struct, frozen=True, array_like=True):
    """The parent's question to a worker: its snapshots now, please.

    Attributes:
        id: Numbers the scrape, so that an answer that comes too late is told apart.
    """

    id: int


class MetricsReport(msgspec.Struct, frozen=True, array_like=True):
    """A worker's answer (or, ``final``, its last word once its servers have stopped).

    Attributes:
        id: The request answered (0 for the final report).
        snapshots: The snapshots of the worker's servers.
        ready: Every server of the worker serves (:meth:`ServeState.readiness`).
        final: The servers have stopped; these counters are their last.
    """

    id: int
    snapshots: list[ServerMetrics]
    ready: bool
    final: bool = False


#: A channel's frames: a 4-byte length and a MessagePack body. The parent sends requests and
#: receives reports; the worker the other way round.
_FRAMER: Final = LengthPrefixFramer(4, max_frame_size=_MAX_FRAME)
_PARENT: Final[StreamProtocol[MetricsRequest, MetricsReport]] = StreamProtocol(
    StapledSerializer(sending=MsgPackSerializer(), receiving=MsgPackSerializer(type=MetricsReport)),
    _FRAMER,
)
_WORKER: Final[StreamProtocol[MetricsReport, MetricsRequest]] = StreamProtocol(
    StapledSerializer(
        sending=MsgPackSerializer(), receiving=MsgPackSerializer(type=MetricsRequest)
    ),
    _FRAMER,
)


class WorkerChannel:
    """In a worker: answer the parent's metrics requests from a daemon thread.

    Use it as a context manager around serving: on the way out it sends the final report (the
    servers' counters after they stopped) and closes the channel.

    Args:
        fd: The worker's end of the channel (a Unix stream socket), inherited.
        state: What :func:`~server_framework.cli.serve.serve` reports.
    """

    def __init__(self, fd: int, state: ServeState) -> None:
        self._sock = socket.socket(fileno=fd)
        self._sock.settimeout(_SEND_TIMEOUT)  # a parent that reads nothing: give up sending
        self._state = state
        self._send_lock = threading.Lock()
        self._final: MetricsReport | None = None
        self._thread = threading.Thread(target=self._run, name="metrics-channel", daemon=True)

    def __enter__(self) -> WorkerChannel:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        final = MetricsReport(0, self._state.snapshots(), False, final=True)
        with self._send_lock:
            self._final = final
            with contextlib.suppress(OSError):
                self._sock.sendall(_WORKER.encode(final))
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # the thread's recv returns: it ends
        self._thread.join(SCRAPE_TIMEOUT)
        self._sock.close()

    def _run(self) -> None:
        decoder = _WORKER.decoder()
        try:
            while True:
                try:
                    chunk = self._sock.recv(65536)
                except TimeoutError:
                    continue  # no scrape for a while
                if not chunk:
                    return  # the parent is gone (watch_parent stops us), or we stop
                decoder.feed(chunk)
                for request in decoder:
                    self._answer(request)
        except (OSError, ProtocolError):
            pass  # the parent is gone, or talks nonsense

    def _answer(self, request: MetricsRequest) -> None:
        ready, _reason = self._state.readiness()
        report = MetricsReport(request.id, self._state.snapshots(), ready)
        with self._send_lock:
            if self._final is not None:  # stopped: the final counters are the answer
                report = msgspec.structs.replace(self._final, id=request.id)
            self._sock.sendall(_WORKER.encode(report))


def _counters_only(snap: ServerMetrics) -> ServerMetrics:
    """``snap`` without its gauges (nor its state): what is kept of a worker's past."""
    return msgspec.structs.replace(
        snap,
        serving=False,
        draining=False,
        connections_active=0,
        peers_active=0,
        threads_busy=0,
        loop_lag=math.nan,
    )


def combine(
    counters: Sequence[ServerMetrics], fresh: Sequence[ServerMetrics]
) -> list[ServerMetrics]:
    """One snapshot per listener: the sum of ``counters`` (snapshots whose gauges are ignored)
    and ``fresh`` (answers of this scrape, whose counters must also be in ``counters``), with
    the gauges and state of ``fresh`` only.

    A listener serves if any of its fresh parts serves (during a reload, the old generation
    drains while the new one serves), and drains if any part drains.
    """
    by_listener: dict[str, list[ServerMetrics]] = {}
    for snap in fresh:
        by_listener.setdefault(snap.listener, []).append(snap)
    gauges = {snap.listener: snap for snap in merge(fresh)}
    combined = []
    for total in merge(counters):
        parts = by_listener.get(total.listener, [])
        now = gauges.get(total.listener)
        combined.append(
            msgspec.structs.replace(
                total,
                serving=any(part.serving for part in parts),
                draining=any(part.draining for part in parts),
                connections_active=now.connections_active if now else 0,
                peers_active=now.peers_active if now else 0,
                threads_busy=now.threads_busy if now else 0,
                loop_lag=now.loop_lag if now else math.nan,
            )
        )
    return combined


@dataclass(eq=False)
class _Peer:
    """The parent's view of one worker's channel."""

    pid: int
    index: int
    sock: socket.socket
    decoder: StreamDecoder[MetricsReport] = field(default_factory=_PARENT.decoder)
    last: list[ServerMetrics] = field(default_factory=list)
    last_id: int = -1
    final: bool = False
    closed: bool = False  # end-of-file, or a broken frame: nothing more to read


class MetricsHub:
    """In the parent of ``--workers``: the workers' channels, and their sum (thread-safe).

    The supervisor's thread opens a channel per worker (:meth:`channel`, :meth:`add`), tells
    when one exits (:meth:`remove`) and whether the workers are ready (:meth:`set_ready`);
    the endpoint's thread scrapes (:meth:`collect`, :meth:`readiness`, :meth:`workers`). The
    supervisor never waits for a scrape: a worker that exits during one is retired by the
    scrape when it ends.

    Args:
        timeout: Seconds a scrape waits for the workers' answers.
    """

    def __init__(self, *, timeout: float = SCRAPE_TIMEOUT) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()  # the fields below; held briefly, never across I/O
        self._collecting = threading.Lock()  # one scrape at a time; its peers stay open
        self._peers: dict[int, _Peer] = {}
        self._exited: list[_Peer] = []
        self._retired: list[ServerMetrics] = []
        self._ready = (False, "starting")
        self._requests = 0
        self._late = 0

    # -- the supervisor's side --------------------------------------------------------------

    @staticmethod
    def channel() -> tuple[socket.socket, socket.socket]:
        """A new channel: ``(parent's end, worker's end)``; pass the worker's end's descriptor
        to the worker (``WorkerSpec.metrics_fd``), then close it here."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent.setblocking(False)
        return parent, child

    def add(self, pid: int, index: int, sock: socket.socket) -> None:
        """Count worker ``pid`` (slot ``index``), whose channel's parent end is ``sock``."""
        with self._lock:
            self._peers[pid] = _Peer(pid, index, sock)

    def remove(self, pid: int) -> None:
        """Worker ``pid`` exited: add its last counters to the retired total, close its
        channel (at once, or when the scrape in progress ends)."""
        with self._lock:
            peer = self._peers.pop(pid, None)
            if peer is None:
                return
            if not self._collecting.acquire(blocking=False):
                self._exited.append(peer)
                return
        try:
            self._retire(peer)
        finally:
            self._collecting.release()

    def set_ready(self, ready: bool, reason: str) -> None:
        """What :meth:`readiness` answers from now on."""
        self._ready = (ready, reason)

    def close(self) -> None:
        """Close every channel."""
        with self._collecting, self._lock:
            for peer in (*self._peers.values(), *self._exited):
                peer.sock.close()
            self._peers.clear()
            self._exited.clear()

    # -- the endpoint's side ------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``, as the supervisor last set it."""
        return self._ready

    def workers(self) -> int:
        """The workers alive now (started and not yet exited)."""
        with self._lock:
            return len(self._peers)

    def collect(self) -> list[ServerMetrics]:
        """Ask every worker for its snapshots; return the sum, one snapshot per listener.

        Counters: the retired total, plus each live worker's latest answer (this scrape's, or
        its last one if it did not answer in time). Gauges and state: this scrape's answers.
        """
        with self._collecting:
            with self._lock:
                peers = [peer for peer in self._peers.values() if not peer.closed]
                self._requests += 1
                request = self._requests
            answered = self._ask(peers, request)
            with self._lock:
                for peer in self._exited:
                    self._retire(peer)
                self._exited.clear()
                counters = list(self._retired)
                fresh: list[ServerMetrics] = []
                for peer in self._peers.values():
                    counters += [_counters_only(snap) for snap in peer.last]
                    if peer.final or peer.pid in answered:
                        fresh += peer.last
            return combine(counters, fresh)

    def _ask(self, peers: list[_Peer], request: int) -> set[int]:
        """Send ``request`` to ``peers``; read answers until all came or the timeout passed.

        Returns:
            The pids of the workers whose answer to ``request`` (or final report) came.
        """
        answered: set[int] = set()
        waiting: dict[socket.socket, _Peer] = {}
        frame = _PARENT.encode(MetricsRequest(request))
        for peer in peers:
            if peer.final:
                answered.add(peer.pid)
                continue
            try:
                sent = peer.sock.send(frame)  # a few bytes, to a peer that reads its requests
            except OSError:  # full (a stuck worker), or gone
                continue
            if sent < len(frame):  # the stream is out of step: give up on this channel
                peer.closed = True
                continue
            waiting[peer.sock] = peer
        deadline = time.monotonic() + self._timeout
        with selectors.DefaultSelector() as selector:
            for sock in waiting:
                selector.register(sock, selectors.EVENT_READ)
            while waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _events in selector.select(remaining):
                    peer = waiting[key.fileobj]  # type: ignore[index]
                    self._read(peer)
                    if peer.final or peer.last_id == request:
                        answered.add(peer.pid)
                    if peer.pid in answered or peer.closed:
                        selector.unregister(peer.sock)
                        del waiting[peer.sock]
        if waiting:
            self._late += 1
            if self._late & (self._late - 1) == 0:  # the 1st, 2nd, 4th, 8th... time
                logger.warning(
                    "workers did not answer the metrics scrape in time; using their last counters",
                    worker_pids=sorted(peer.pid for peer in waiting.values()),
                    timeout=self._timeout,
                    late_scrapes=self._late,
                )
        return answered

    def _read(self, peer: _Peer) -> None:
        """Read what ``peer`` sent (without blocking) and take in its reports."""
        try:
            while True:
                chunk = peer.sock.recv(65536)
                if not chunk:
                    peer.closed = True
                    break
                peer.decoder.feed(chunk)
                if peer.decoder.buffered > _MAX_FRAME:
                    break  # take in what is there first
        except BlockingIOError:
            pass
        except OSError:
            peer.closed = True
        try:
            for report in peer.decoder:
                if peer.final:
                    continue
                if report.final:
                    peer.final = True
                    peer.last = report.snapshots
                elif report.id > peer.last_id:
                    peer.last_id = report.id
                    peer.last = report.snapshots
        except ProtocolError as exc:
            logger.warning("bad metrics report from a worker", worker_pid=peer.pid, error=str(exc))
            peer.closed = True
            peer.decoder.close()

    def _retire(self, peer: _Peer) -> None:
        """Fold an exited worker's counters into the retired total; close its channel."""
        self._read(peer)  # its final report, written before it exited, is in the buffer
        peer.sock.close()
        if peer.last:
            self._retired = merge([*self._retired, *map(_counters_only, peer.last)])
