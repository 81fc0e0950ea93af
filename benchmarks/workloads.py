"""The workloads: what is sent, how much at once, and which generator sends it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Workload:
    """One workload.

    Attributes:
        name: Its name in tables and on the command line.
        kind: ``tcp`` (throughput), ``udp`` (throughput), ``churn`` (connections/s) or ``idle``
            (memory per idle connection).
        mode: The ``--workload`` its servers run: ``line``, ``prefix``, ``udp`` or ``json``
            (server_framework only).
        generator: ``redis-benchmark``, ``dnsperf`` or ``suite`` (the C generators fall back to
            the suite's own when they are not installed).
        framing: What the suite's generator sends: ``line``, ``prefix``, ``ping``, ``udp`` or
            ``json`` (:func:`benchmarks.messages.json_message` lines).
        size: Message payload size in bytes (framing excluded).
        depth: Requests in flight per connection (16: pipelined).
        description: One line for the tables.
        reference: Another workload whose figures, *for the same server* in the same round,
            divide this one's (instead of the baseline server's); the runner adds it.
    """

    name: str
    kind: str
    mode: str
    generator: str
    framing: str
    size: int
    depth: int
    description: str
    reference: str | None = None

    @property
    def transport(self) -> str:
        """``udp`` or ``tcp``: which baseline the ratios use."""
        return "udp" if self.kind == "udp" else "tcp"

    @property
    def unit(self) -> str:
        return {"churn": "conn/s", "idle": "KiB/conn"}.get(self.kind, "req/s")


def _stream(framing: str, size: int, depth: int) -> Workload:
    label = {64: "64", 1024: "1k", 16384: "16k"}[size]
    name = f"{framing}-{label}" + (f"-p{depth}" if depth > 1 else "")
    what = "line-framed" if framing == "line" else "length-prefixed"
    flight = "request/response" if depth == 1 else f"pipelined, {depth} in flight"
    return Workload(
        name, "tcp", framing, "suite", framing, size, depth,
        f"TCP {what} echo, {size} B, {flight}",
    )  # fmt: skip


#: Every workload, in table order.
WORKLOADS: Final[dict[str, Workload]] = {
    w.name: w
    for w in (
        Workload(
            "redis-ping", "tcp", "line", "redis-benchmark", "ping", 4, 1,
            "TCP inline PING/+PONG, request/response (redis-benchmark -t ping_inline)",
        ),
        Workload(
            "redis-ping-p16", "tcp", "line", "redis-benchmark", "ping", 4, 16,
            "TCP inline PING/+PONG, pipelined, 16 in flight (redis-benchmark -P 16)",
        ),
        *(_stream(f, s, d) for f in ("line", "prefix") for d in (1, 16) for s in (64, 1024, 16384)),
        Workload(
            "bytes-1k", "tcp", "line", "suite", "json", 1024, 16,
            "TCP 1 KiB JSON lines as raw bytes (BytesSerializer), echoed, pipelined, 16 in flight",
        ),
        Workload(
            "json-1k", "tcp", "json", "suite", "json", 1024, 16,
            "the same lines decoded into a msgspec Struct (JSONSerializer(type=...)) and "
            "answered with it, pipelined, 16 in flight",
            reference="bytes-1k",
        ),
        Workload(
            "udp-dnsperf", "udp", "udp", "dnsperf", "udp", 29, 1,
            "UDP echo of 29 B DNS queries, 100 in flight (dnsperf)",
        ),
        Workload("udp-64", "udp", "udp", "suite", "udp", 64, 1, "UDP echo, 64 B, 1 in flight"),
        Workload("udp-1k", "udp", "udp", "suite", "udp", 1024, 1, "UDP echo, 1 KiB, 1 in flight"),
        Workload(
            "idle", "idle", "line", "suite", "line", 64, 1,
            "server RSS per idle TCP connection (after one 64 B exchange each)",
        ),
        Workload(
            "churn", "churn", "line", "suite", "line", 64, 1,
            "TCP connect, one 64 B request/response, close",
        ),
    )
}  # fmt: skip

#: What a plain ``python -m benchmarks`` runs: the target figures, and one workload of each
#: framing checked reply by reply by the suite's generator.
DEFAULT_WORKLOADS: Final = (
    "redis-ping",
    "redis-ping-p16",
    "line-64",
    "prefix-1k-p16",
    "udp-dnsperf",
    "udp-1k",
    "idle",
    "churn",
)
