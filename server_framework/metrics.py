"""What a server counts while it serves, as a snapshot: :class:`ServerMetrics`.

Every server counts, always (no option to turn on): connections accepted, refused by reason
and active; requests handled and their latency; bytes in and out; handler errors by exception
type; deadline expiries by kind; accept errors by errno; datagrams received and dropped by
reason; write high-water hits; busy worker-pool threads; event-loop lag. The counters are plain
integers of the compiled engine's C structs (or of the pure engine's slotted objects), updated
in the loop's thread: no lock, no allocation per request.

``server.metrics`` returns a :class:`ServerMetrics` snapshot, readable from any thread (the
values of one snapshot are read one after the other, not at one instant).
:func:`process_metrics` returns the snapshots of every server serving in this process, and
:func:`merge` adds up snapshots of the same listener (the ``--workers`` processes of the command
line share their sockets, so their listeners have one name). The command line's ``--metrics
HOST:PORT`` serves them in the Prometheus text format (:mod:`server_framework.prometheus`).

Request latency is measured from when the server starts handling the read that completed the
request (pipelined requests of one read share that start, so a request's latency includes the
requests before it) to when the handler is done with it: ``respond()`` returned (its reply
queued), or ``handle()`` asked for the next request (``yield``), returned or raised.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import msgspec

__all__ = [
    "LATENCY_BUCKETS",
    "LatencyHistogram",
    "ServerMetrics",
    "merge",
    "process_metrics",
]

#: Upper bounds (seconds) of the request latency histogram's buckets; a last bucket counts
#: what is above the largest. From 50 µs (a request handled without blocking) to 10 s.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class LatencyHistogram(msgspec.Struct, frozen=True, kw_only=True):
    """Request latencies, in buckets.

    Attributes:
        bounds: The buckets' upper bounds, in seconds (:data:`LATENCY_BUCKETS`).
        counts: Requests per bucket, not cumulative: ``counts[i]`` took at most ``bounds[i]``
            and more than ``bounds[i - 1]``; the last one (``len(bounds) + 1`` counts in all)
            took more than ``bounds[-1]``.
        sum: Their total, in seconds.
        count: How many (the sum of ``counts``).
    """

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    sum: float = 0.0
    count: int = 0

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, requests at most that long)`` pairs, the last bound ``inf``: the
        Prometheus histogram's ``le`` buckets."""
        total = 0
        pairs = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


class ServerMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One server's counters at one moment (``server.metrics``).

    Counters only grow while the server lives; the gauges (``connections_active``,
    ``threads_busy``, ``loop_lag``) say how things are now. A datagram server has no
    connections: its ``connections_*`` are 0 and its peers count in ``datagrams_*``.

    Attributes:
        listener: The server's name in logs and metrics: its transport and first address,
            e.g. ``"tcp://127.0.0.1:9000"``, ``"unix:///run/app.sock"``.
        transport: ``"tcp"``, ``"tls"``, ``"udp"``, ``"unix"`` or ``"unix-datagram"``.
        serving: Its listening sockets are up and it accepts (or reads datagrams).
        draining: It is shutting down (its listening sockets are closed).
        connections_accepted: Connections accepted: every socket ``accept()`` returned,
            counted before any TLS handshake, the refused ones included.
        connections_refused: Connections closed without being served, by reason:
            ``"max_connections"``, ``"max_connections_per_ip"``, ``"proxy_protocol"`` (an
            untrusted peer or a bad PROXY header), ``"tls_handshake"``.
        connections_active: Connections open now.
        peers_active: Datagram peers served now (each has a handler of its own until it is
            idle for ``client_idle_timeout``).
        requests: Requests handled (see the module's documentation; the histogram's count).
        bytes_received: Bytes received from peers and handed to the decoder (after TLS, PROXY
            headers left out; a datagram server counts every datagram read).
        bytes_sent: Bytes handed to the transport for peers.
        handler_errors: Exceptions that escaped the handler, by type name (``"ValueError"``,
            or ``"module.Name"`` for a class outside ``builtins``).
        deadlines_expired: Connections or requests ended by a deadline, by option name:
            ``"idle_timeout"``, ``"frame_timeout"``, ``"request_timeout"`` (a handler's
            ``RecvParams.timeout``), ``"write_timeout"``, ``"ssl_handshake_timeout"``,
            ``"proxy_header_timeout"``, ``"client_idle_timeout"``, ``"shutdown_timeout"``
            (cancelled at the end of the grace period).
        accept_errors: ``accept()`` failures by errno name (``"EMFILE"``...).
        datagrams_received: Datagrams read.
        datagrams_dropped: Datagrams dropped, by reason: ``"max_clients"``,
            ``"client_queue_size"`` (the peer's queue was full), ``"too_large"``,
            ``"datagram_rate_per_ip"``.
        write_high_water_hits: Times a connection's replies reached ``write_high_water`` (or
            the transport's own mark) and its handler had to wait for the peer to read.
        threads_busy: Threads of the handler's worker pool running a request now
            (:class:`~handlers.ThreadedHandler`; 0 for other handlers).
        loop_lag: How late the event loop's heartbeat ran, in seconds: the last lag measured,
            or the current stall if the loop is blocked now (NaN when ``warn_blocked`` is off).
        latency: The request latency histogram.
    """

    listener: str
    transport: str
    serving: bool = False
    draining: bool = False
    connections_accepted: int = 0
    connections_refused: dict[str, int] = msgspec.field(default_factory=dict)
    connections_active: int = 0
    peers_active: int = 0
    requests: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    handler_errors: dict[str, int] = msgspec.field(default_factory=dict)
    deadlines_expired: dict[str, int] = msgspec.field(default_factory=dict)
    accept_errors: dict[str, int] = msgspec.field(default_factory=dict)
    datagrams_received: int = 0
    datagrams_dropped: dict[str, int] = msgspec.field(default_factory=dict)
    write_high_water_hits: int = 0
    threads_busy: int = 0
    loop_lag: float = float("nan")
    latency: LatencyHistogram = msgspec.field(default_factory=LatencyHistogram)


class _HasMetrics(Protocol):
    @property
    def metrics(self) -> ServerMetrics: ...


_registry_lock: Final = threading.Lock()
_registry: Final[dict[int, _HasMetrics]] = {}


def register(server: _HasMetrics) -> None:
    """Count ``server`` in :func:`process_metrics` (servers do it while they serve)."""
    with _registry_lock:
        _registry[id(server)] = server


def unregister(server: _HasMetrics) -> None:
    """Stop counting ``server`` in :func:`process_metrics`."""
    with _registry_lock:
        _registry.pop(id(server), None)


def process_metrics() -> list[ServerMetrics]:
    """The snapshots of every server serving in this process (any loop, any thread)."""
    with _registry_lock:
        servers = list(_registry.values())
    return [server.metrics for server in servers]


def _add_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + value


def _nanmax(a: float, b: float) -> float:
    if math.isnan(a):  # not measured
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def merge(snapshots: Iterable[ServerMetrics]) -> list[ServerMetrics]:
    """Add up the snapshots of the same listener (several processes serving one socket).

    Counters and the gauges ``connections_active`` and ``threads_busy`` are summed;
    ``loop_lag`` is the largest; the merged listener is ``serving`` if every part is, and
    ``draining`` if any is. The result keeps the order in which listeners first appear.
    """
    merged: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        into = merged.get(snap.listener)
        if into is None:
            merged[snap.listener] = {
                field: getattr(snap, field) for field in ServerMetrics.__struct_fields__
            }
            for field in _DICT_FIELDS:
                merged[snap.listener][field] = dict(getattr(snap, field))
            continue
        for field in _SUM_FIELDS:
            into[field] += getattr(snap, field)
        for field in _DICT_FIELDS:
            _add_counts(into[field], getattr(snap, field))
        into["serving"] = into["serving"] and snap.serving
        into["draining"] = into["draining"] or snap.draining
        into["loop_lag"] = _nanmax(into["loop_lag"], snap.loop_lag)
        latency: LatencyHistogram = into["latency"]
        other = snap.latency
        if latency.bounds == other.bounds:
            into["latency"] = LatencyHistogram(
                bounds=latency.bounds,
                counts=tuple(a + b for a, b in zip(latency.counts, other.counts, strict=True)),
                sum=latency.sum + other.sum,
                count=latency.count + other.count,
            )
    return [ServerMetrics(**fields) for fields in merged.values()]


_SUM_FIELDS: Final = (
    "connections_accepted",
    "connections_active",
    "peers_active",
    "requests",
    "bytes_received",
    "bytes_sent",
    "datagrams_received",
    "write_high_water_hits",
    "threads_busy",
)
_DICT_FIELDS: Final = (
    "connections_refused",
    "handler_errors",
    "deadlines_expired",
    "accept_errors",
    "datagrams_dropped",
)
