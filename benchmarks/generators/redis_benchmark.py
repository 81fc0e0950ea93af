"""redis-benchmark ``-t ping_inline``: ``PING\\r\\n`` in, ``+PONG\\r\\n`` out, written in C.

redis-benchmark runs a fixed number of requests (``-n``), not for a fixed time; the runner first
warms the server up with a run that it stops after the warm-up time, reads the rate that run
reached from its progress output, and sizes the measured run to last about ``--duration``.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from typing import Any

NAME = "redis-benchmark"
#: The fewest and the most requests of a measured run (a bound on its time either way).
MIN_REQUESTS = 5_000
MAX_REQUESTS = 50_000_000

_OVERALL = re.compile(rb"rps=[0-9.]+ \(overall: ([0-9.]+)\)")


def path() -> str | None:
    """Where redis-benchmark is installed, or None."""
    return shutil.which(NAME)


def version() -> str | None:
    exe = path()
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip() or None


def command(port: int, connections: int, depth: int, requests: int) -> list[str]:
    """The command line of one run against ``127.0.0.1:port``."""
    exe = path() or NAME
    return [
        exe, "-h", "127.0.0.1", "-p", str(port), "-c", str(connections), "-P", str(depth),
        "-n", str(requests), "-t", "ping_inline", "--csv",
    ]  # fmt: skip


def warmup_command(port: int, connections: int, depth: int) -> list[str]:
    """A run without ``--csv`` (so that it prints its progress) and too long to finish."""
    return [*command(port, connections, depth, MAX_REQUESTS)[:-1]]


def progress_rate(output: bytes) -> float | None:
    """The last overall rate in redis-benchmark's progress output, or None."""
    rates = _OVERALL.findall(output)
    for rate in reversed(rates):
        if float(rate) > 0:
            return float(rate)
    return None


def requests_for(rate: float | None, duration: float) -> int:
    """How many requests make a run of about ``duration`` seconds at ``rate``."""
    if rate is None:
        rate = 50_000.0
    return int(min(MAX_REQUESTS, max(MIN_REQUESTS, rate * duration)))


def parse(output: str) -> dict[str, Any]:
    """Parse ``--csv`` output: ``rate`` (requests/s) and ``p50_us``/``p99_us``.

    Raises:
        ValueError: no ``PING_INLINE`` row (redis-benchmark failed).
    """
    for row in csv.reader(line for line in output.splitlines() if line.startswith('"')):
        if row and row[0] == "PING_INLINE":
            return {
                "rate": float(row[1]),
                "p50_us": float(row[4]) * 1000,
                "p99_us": float(row[6]) * 1000,
            }
    raise ValueError(f"no PING_INLINE result in redis-benchmark's output: {output[-300:]!r}")
