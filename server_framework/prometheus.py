"""The servers' metrics in the Prometheus text format, and an HTTP endpoint for them.

It needs ``prometheus-client``, an optional dependency: ``pip install
'server-framework[metrics]'`` (importing this module without it raises an ``ImportError``
saying so). The command line's ``--metrics HOST:PORT`` uses it; a program that runs its servers
itself can too::

    from server_framework.metrics import process_metrics
    from server_framework.prometheus import MetricsEndpoint

    with MetricsEndpoint("127.0.0.1", 9100, process_metrics) as endpoint:
        ...  # serve; GET http://127.0.0.1:9100/metrics, /ready, /live

- :class:`MetricsCollector` turns :class:`~server_framework.metrics.ServerMetrics` snapshots
  into Prometheus metric families (``server_framework_*``, each labelled with its
  ``listener``), read afresh at every scrape. It is a ``prometheus_client`` collector: register
  it in a registry of your own (:func:`metrics_registry` makes one) or in the global one.
- :class:`MetricsEndpoint` serves ``GET /metrics`` (the text exposition format), ``GET /ready``
  and ``GET /live`` (200 or 503, with a one-line reason) from one daemon thread, one request
  at a time, each bounded by a deadline: a peer that sends nothing holds it ``timeout``
  seconds at most.
- :func:`readiness` and :func:`liveness` are the endpoint's default health checks.

The metrics (counters end in ``_total``; every family has the ``listener`` label):

========================================================  =========  ============================
Name                                                      Type       Extra label
========================================================  =========  ============================
``server_framework_up``                                   gauge
``server_framework_connections_accepted_total``           counter
``server_framework_connections_refused_total``            counter    ``reason``
``server_framework_connections_active``                   gauge
``server_framework_peers_active``                         gauge
``server_framework_requests_total``                       counter
``server_framework_request_duration_seconds``             histogram  ``le``
``server_framework_received_bytes_total``                 counter
``server_framework_sent_bytes_total``                     counter
``server_framework_handler_errors_total``                 counter    ``type``
``server_framework_deadlines_expired_total``              counter    ``kind``
``server_framework_accept_errors_total``                  counter    ``errno``
``server_framework_datagrams_received_total``             counter
``server_framework_datagrams_dropped_total``              counter    ``reason``
``server_framework_write_high_water_total``               counter
``server_framework_threads_busy``                         gauge
``server_framework_event_loop_lag_seconds``               gauge
``server_framework_workers``                              gauge      (no ``listener``)
========================================================  =========  ============================

``server_framework_event_loop_lag_seconds`` is left out for a listener whose lag is not
measured (``warn_blocked`` off). ``server_framework_workers`` (the live worker processes) is
there only when the collector is given a count of them (the command line's ``--workers``).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import math
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from server_framework.metrics import ServerMetrics, merge

#: What to install when ``prometheus-client`` is missing.
INSTALL_HINT: Final = "pip install 'server-framework[metrics]'"

try:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import CollectorRegistry
except ImportError as exc:  # an optional dependency
    raise ImportError(
        f"server_framework.prometheus needs prometheus-client: {INSTALL_HINT}",
        name="prometheus_client",
    ) from exc

__all__ = [
    "DEFAULT_MAX_STALL",
    "DEFAULT_REQUEST_TIMEOUT",
    "INSTALL_HINT",
    "PREFIX",
    "HealthCheck",
    "MetricsCollector",
    "MetricsEndpoint",
    "liveness",
    "metrics_registry",
    "readiness",
]

#: The prefix of every metric name.
PREFIX: Final = "server_framework_"
#: Seconds an event loop may be blocked before :func:`liveness` says the process is not live.
DEFAULT_MAX_STALL: Final = 30.0
#: Seconds :class:`MetricsEndpoint` gives one HTTP request, from its first byte awaited to its
#: reply's last byte sent.
DEFAULT_REQUEST_TIMEOUT: Final = 5.0

#: A health check: ``(healthy, reason)``, the reason a short line of text for the reply body.
HealthCheck = Callable[[], tuple[bool, str]]

_LISTENER: Final = "listener"


def _le(bound: float) -> str:
    """A bucket's upper bound as the ``le`` label writes it: ``0.005``, ``1.0``, ``+Inf``."""
    return "+Inf" if math.isinf(bound) else repr(bound)


class MetricsCollector:
    """A ``prometheus_client`` collector of server metrics: snapshots read at every scrape.

    Snapshots of one listener are added up (:func:`~server_framework.metrics.merge`) before
    they are exposed, so ``source`` may return several per listener (one per process).

    Args:
        source: Returns the snapshots to expose (:func:`~server_framework.metrics.process_metrics`,
            or the snapshots of several processes). Called once per scrape, in the scraping
            thread.
        workers: Returns the number of live worker processes, exposed as
            ``server_framework_workers``; None leaves that metric out (one process).
    """

    def __init__(
        self,
        source: Callable[[], Sequence[ServerMetrics]],
        *,
        workers: Callable[[], int] | None = None,
    ) -> None:
        self._source = source
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        """The metric families of the snapshots ``source`` returns now (see the module)."""
        snapshots = merge(self._source())
        yield from _families(snapshots)
        if self._workers is not None:
            yield GaugeMetricFamily(
                PREFIX + "workers",
                "Worker processes alive now (the command line's --workers).",
                value=self._workers(),
            )


#: The label values exposed at 0 before they happen, per kind of listener.
_REFUSAL_REASONS: Final = ("max_connections", "max_connections_per_ip")
_STREAM_DEADLINES: Final = ("frame_timeout", "idle_timeout", "request_timeout", "write_timeout")
_DATAGRAM_DEADLINES: Final = ("client_idle_timeout", "request_timeout")
_DROP_REASONS: Final = ("client_queue_size", "datagram_rate_per_ip", "max_clients", "too_large")


def _is_datagram(snap: ServerMetrics) -> bool:
    return snap.transport in ("udp", "unix-datagram")


def _families(snapshots: Sequence[ServerMetrics]) -> Iterator[Metric]:
    """Every family but ``workers``, in the order of the module's table."""
    labels = [_LISTENER]

    def gauge(name: str, documentation: str, value: Callable[[ServerMetrics], float]) -> Metric:
        family = GaugeMetricFamily(PREFIX + name, documentation, labels=labels)
        for snap in snapshots:
            family.add_metric([snap.listener], value(snap))
        return family

    def counter(name: str, documentation: str, value: Callable[[ServerMetrics], int]) -> Metric:
        family = CounterMetricFamily(PREFIX + name, documentation, labels=labels)
        for snap in snapshots:
            family.add_metric([snap.listener], value(snap))
        return family

    def by_label(
        name: str,
        documentation: str,
        label: str,
        counts: Callable[[ServerMetrics], Mapping[str, int]],
        known: Callable[[ServerMetrics], Sequence[str]] = lambda snap: (),
    ) -> Metric:
        family = CounterMetricFamily(PREFIX + name, documentation, labels=[_LISTENER, label])
        for snap in snapshots:
            # The label values a listener of its kind can have are exposed from the start, at
            # 0: a rate() over the first refusal then sees it (a series that appears with 1
            # shows no increase).
            values = dict.fromkeys(known(snap), 0)
            values.update(counts(snap))
            for key, value in sorted(values.items()):
                family.add_metric([snap.listener, key], value)
        return family

    yield gauge(
        "up",
        "1 while the listener serves (accepts connections or reads datagrams), else 0.",
        lambda snap: 1 if snap.serving else 0,
    )
    yield counter(
        "connections_accepted",
        "Connections accepted: every socket accept() returned, before any TLS handshake, the "
        "refused ones included.",
        lambda snap: snap.connections_accepted,
    )
    yield by_label(
        "connections_refused",
        "Connections closed without being served, by reason (max_connections, "
        "max_connections_per_ip, proxy_protocol, tls_handshake).",
        "reason",
        lambda snap: snap.connections_refused,
        lambda snap: () if _is_datagram(snap) else _REFUSAL_REASONS,
    )
    yield gauge("connections_active", "Connections open now.", lambda snap: snap.connections_active)
    yield gauge(
        "peers_active",
        "Datagram peers served now (until idle for client_idle_timeout).",
        lambda snap: snap.peers_active,
    )
    yield counter("requests", "Requests handled.", lambda snap: snap.requests)
    histogram = HistogramMetricFamily(
        PREFIX + "request_duration_seconds",
        "Request latency in seconds: from the read that completed the request to the handler "
        "being done with it.",
        labels=labels,
    )
    for snap in snapshots:
        buckets = [(_le(bound), float(count)) for bound, count in snap.latency.cumulative()]
        histogram.add_metric([snap.listener], buckets, snap.latency.sum)
    yield histogram
    yield counter(
        "received_bytes",
        "Bytes received from peers and handed to the decoder (after TLS; PROXY headers left out).",
        lambda snap: snap.bytes_received,
    )
    yield counter(
        "sent_bytes", "Bytes handed to the transport for peers.", lambda snap: snap.bytes_sent
    )
    yield by_label(
        "handler_errors",
        "Exceptions that escaped the request handler, by exception type.",
        "type",
        lambda snap: snap.handler_errors,
    )
    yield by_label(
        "deadlines_expired",
        "Connections or requests ended by a deadline, by option (idle_timeout, "
        "frame_timeout, request_timeout, write_timeout, shutdown_timeout...).",
        "kind",
        lambda snap: snap.deadlines_expired,
        lambda snap: _DATAGRAM_DEADLINES if _is_datagram(snap) else _STREAM_DEADLINES,
    )
    yield by_label(
        "accept_errors",
        "accept() failures, by errno name (EMFILE...).",
        "errno",
        lambda snap: snap.accept_errors,
    )
    yield counter("datagrams_received", "Datagrams read.", lambda snap: snap.datagrams_received)
    yield by_label(
        "datagrams_dropped",
        "Datagrams dropped, by reason (max_clients, client_queue_size, too_large, "
        "datagram_rate_per_ip).",
        "reason",
        lambda snap: snap.datagrams_dropped,
        lambda snap: _DROP_REASONS if _is_datagram(snap) else (),
    )
    yield counter(
        "write_high_water",
        "Times a connection's replies reached the write high-water mark and its handler "
        "waited for the peer to read.",
        lambda snap: snap.write_high_water_hits,
    )
    yield gauge(
        "threads_busy",
        "Worker-pool threads running a request now (ThreadedHandler).",
        lambda snap: snap.threads_busy,
    )
    lag = GaugeMetricFamily(
        PREFIX + "event_loop_lag_seconds",
        "How late the event loop's heartbeat ran: the last lag measured, or the current "
        "stall while the loop is blocked.",
        labels=labels,
    )
    for snap in snapshots:
        if not math.isnan(snap.loop_lag):
            lag.add_metric([snap.listener], snap.loop_lag)
    yield lag


def metrics_registry(
    source: Callable[[], Sequence[ServerMetrics]], *, workers: Callable[[], int] | None = None
) -> CollectorRegistry:
    """A new ``CollectorRegistry`` (not the global one) holding one :class:`MetricsCollector`.

    ``prometheus_client.generate_latest(registry)`` then renders the text format. The
    arguments are :class:`MetricsCollector`'s.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(source, workers=workers))
    return registry


def readiness(snapshots: Sequence[ServerMetrics]) -> tuple[bool, str]:
    """Ready when there is at least one server and every one serves, none draining.

    Returns:
        ``(True, "ready")``, or ``(False, reason)``: ``no server``, ``draining: LISTENER``,
        ``not serving: LISTENER``.
    """
    if not snapshots:
        return False, "no server"
    for snap in snapshots:
        if snap.draining:
            return False, f"draining: {snap.listener}"
        if not snap.serving:
            return False, f"not serving: {snap.listener}"
    return True, "ready"


def liveness(
    snapshots: Sequence[ServerMetrics], max_stall: float = DEFAULT_MAX_STALL
) -> tuple[bool, str]:
    """Live unless a server's event loop has been blocked for more than ``max_stall`` seconds.

    A snapshot's ``loop_lag`` is the current stall while its loop is blocked; NaN (not
    measured, ``warn_blocked`` off) counts as fine.

    Returns:
        ``(True, "live")``, or ``(False, "event loop blocked for 31.2 s: LISTENER")``.
    """
    for snap in snapshots:
        if snap.loop_lag > max_stall:  # False for NaN
            return False, f"event loop blocked for {snap.loop_lag:.1f} s: {snap.listener}"
    return True, "live"


class _DeadlineReader(io.RawIOBase):
    """A socket's input that raises ``TimeoutError`` once ``deadline`` (monotonic) passes."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _SocketWriter(io.BufferedIOBase):
    """A socket's output whose ``write`` sends it all (``sendall``), as ``http.server`` expects."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return len(data)


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request: ``/metrics``, ``/ready``, ``/live``, or 404."""

    server: _HTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: the next peer is not kept waiting
    server_version = "server_framework"

    def setup(self) -> None:
        self.connection = self.request
        deadline = time.monotonic() + self.server.endpoint.timeout
        self._deadline = deadline
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))
        self.wfile = _SocketWriter(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.close()
        with contextlib.suppress(OSError):
            self.rfile.close()

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                body = generate_latest(endpoint.registry)
                self._reply(200, body, CONTENT_TYPE_LATEST)
                return
            if path in ("/ready", "/live"):
                check = endpoint.ready if path == "/ready" else endpoint.live
                healthy, reason = check()
                self._reply(200 if healthy else 503, f"{reason}\n".encode(), _TEXT)
                return
        except Exception as exc:  # a failing source: say so, keep serving
            self._reply(500, f"error: {type(exc).__name__}: {exc}\n".encode(), _TEXT)
            return
        self._reply(404, b"not found: try /metrics, /ready or /live\n", _TEXT)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.connection.settimeout(max(0.001, self._deadline - time.monotonic()))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def version_string(self) -> str:
        """The ``Server`` header: ``server_framework``, no Python version."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request (nor per timed-out or malformed one)."""


_TEXT: Final = "text/plain; charset=utf-8"


class _HTTPServer(http.server.HTTPServer):
    """One thread, one request at a time (never a thread per peer)."""

    def __init__(self, address: tuple[str, int], family: int, endpoint: MetricsEndpoint) -> None:
        self.address_family = family
        self.endpoint = endpoint
        super().__init__(address, _Handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6 and address[0] == "::":
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def server_bind(self) -> None:
        # Not HTTPServer's: it asks the resolver for the host's name (socket.getfqdn), which
        # can take seconds without DNS and is of no use here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a peer that resets or times out is its own problem."""


def _bind_family(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """The address family and address to bind ``host``: ``""`` means every interface
    (IPv6 and IPv4 on one socket where the machine has IPv6)."""
    if not host:
        if socket.has_ipv6:
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM):
                    return socket.AF_INET6, ("::", port)
            except OSError:
                pass
        return socket.AF_INET, ("0.0.0.0", port)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


class MetricsEndpoint:
    """An HTTP endpoint for Prometheus and health checks, served by one daemon thread.

    Routes (``GET``; a query string is ignored):

    - ``/metrics``: the text exposition format of :attr:`registry`
      (``prometheus_client.CONTENT_TYPE_LATEST``).
    - ``/ready``: 200 ``ready`` when ``ready()`` says so, else 503 with its reason (for a load
      balancer or Kubernetes' readiness probe: send no traffic while starting or draining).
    - ``/live``: 200 ``live`` when ``live()`` says so, else 503 with its reason (for a
      liveness probe: restart a process whose event loop is stuck).
    - anything else: 404; a method other than GET: 501.

    Requests are served one at a time, each on its own connection (HTTP/1.0), and each within
    ``timeout`` seconds from when it is accepted, reply included: a slow or silent peer holds
    the endpoint that long at most. Nothing is logged per request.

    It is bound when created (port 0 picks a free port: see :attr:`address`) and serves once
    started: ``with MetricsEndpoint(...) as endpoint:`` or :meth:`start` and :meth:`stop`.

    Args:
        host: The address to listen on: ``"127.0.0.1"``, ``"::1"``, a host name, or ``""`` for
            every interface.
        port: The TCP port; 0 for any free one.
        source: Returns the snapshots to expose (see :class:`MetricsCollector`).
        ready: The readiness check; default :func:`readiness` of ``source()``.
        live: The liveness check; default :func:`liveness` of ``source()``.
        workers: Returns the number of live worker processes (see :class:`MetricsCollector`).
        timeout: Seconds one request may take (:data:`DEFAULT_REQUEST_TIMEOUT`).

    Raises:
        OSError: The address cannot be bound (in use, not local...).
    """

    def __init__(
        self,
        host: str,
        port: int,
        source: Callable[[], Sequence[ServerMetrics]],
        *,
        ready: HealthCheck | None = None,
        live: HealthCheck | None = None,
        workers: Callable[[], int] | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.ready: HealthCheck = ready or (lambda: readiness(source()))
        self.live: HealthCheck = live or (lambda: liveness(source()))
        self.timeout = timeout
        #: The registry ``/metrics`` renders: a private one, with one :class:`MetricsCollector`.
        self.registry = metrics_registry(source, workers=workers)
        family, address = _bind_family(host, port)
        self._server = _HTTPServer(address, family, self)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``: the real port when it was created with port 0."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in a daemon thread (once)."""
        if self._thread is not None:
            raise RuntimeError("the metrics endpoint is already started")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="metrics-endpoint",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (a request in progress is
        finished first, within its ``timeout``). Idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> MetricsEndpoint:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
