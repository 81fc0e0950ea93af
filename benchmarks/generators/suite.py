"""Merging the results of the suite's generator processes (:mod:`.loadgen`)."""

from __future__ import annotations

import sys
from typing import Any


def command(port: int, mode: str, framing: str, size: int, depth: int, connections: int,
            duration: float) -> list[str]:  # fmt: skip
    """The command line of one generator process."""
    return [
        sys.executable, "-m", "benchmarks.generators.loadgen", "--port", str(port),
        "--mode", mode, "--framing", framing, "--size", str(size), "--depth", str(depth),
        "--connections", str(connections), "--duration", f"{duration:g}",
    ]  # fmt: skip


def split(total: int, parts: int) -> list[int]:
    """``total`` connections shared by ``parts`` processes (none gets zero)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def percentile(results: list[dict[str, Any]], fraction: float) -> float | None:
    """A latency percentile over all processes, from each one's evenly spaced quantiles."""
    points: list[tuple[float, float]] = []
    for result in results:
        quantiles = result.get("latency_quantiles_us") or []
        if quantiles:
            weight = result["latency_samples"] / len(quantiles)
            points.extend((value, weight) for value in quantiles)
    if not points:
        return None
    points.sort()
    total = sum(weight for _, weight in points)
    seen = 0.0
    for value, weight in points:
        seen += weight
        if seen >= fraction * total:
            return value
    return points[-1][0]


def merge(results: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """One figure from every process's result."""
    requests = sum(r["requests"] for r in results)
    return {
        "requests": requests,
        "rate": requests / duration,
        "p50_us": percentile(results, 0.50),
        "p99_us": percentile(results, 0.99),
        "checked": sum(r["checked"] for r in results),
        "check_errors": sum(r["errors"] for r in results),
        "error_samples": [s for r in results for s in r["error_samples"]][:3],
        "lost": sum(r.get("lost", 0) for r in results),
        "client_cpu": sum(r["cpu_seconds"] for r in results) / duration,
    }
