"""dnsperf: DNS queries over UDP, written in C. An echo of a query (same id) is an answer."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

NAME = "dnsperf"
#: Sockets and queries in flight: the settings the anchors were measured with.
CLIENTS = 10
OUTSTANDING = 100

_QUERY_FILE: Path | None = None


def path() -> str | None:
    """Where dnsperf is installed, or None."""
    return shutil.which(NAME)


def version() -> str | None:
    exe = path()
    if exe is None:
        return None
    out = subprocess.run([exe, "-h"], capture_output=True, text=True, check=False)
    found = re.search(r"Version ([0-9.]+)", out.stdout + out.stderr)
    return found.group(1) if found else None


def query_file() -> Path:
    """A data file of one query (``example.com A``, 29 bytes on the wire), made once."""
    global _QUERY_FILE
    if _QUERY_FILE is None or not _QUERY_FILE.exists():
        with tempfile.NamedTemporaryFile(
            "w", prefix="bench-dnsperf-", suffix=".txt", delete=False
        ) as f:
            f.write("example.com A\n")
        _QUERY_FILE = Path(f.name)
    return _QUERY_FILE


def command(port: int, duration: float) -> list[str]:
    """One run of ``duration`` seconds against ``127.0.0.1:port``."""
    return [
        path() or NAME, "-s", "127.0.0.1", "-p", str(port), "-d", str(query_file()),
        "-l", f"{duration:g}", "-c", str(CLIENTS), "-q", str(OUTSTANDING), "-t", "1",
    ]  # fmt: skip


def parse(output: str) -> dict[str, Any]:
    """Parse dnsperf's statistics: ``rate`` (answers/s), ``requests``, ``lost``, ``avg_us``.

    Raises:
        ValueError: no statistics (dnsperf failed).
    """

    def field(label: str) -> str:
        found = re.search(rf"{label}:\s+([0-9.]+)", output)
        if found is None:
            raise ValueError(f"no {label!r} in dnsperf's output: {output[-300:]!r}")
        return found.group(1)

    return {
        "rate": float(field("Queries per second")),
        "requests": int(field("Queries completed")),
        "lost": int(field("Queries lost")),
        "avg_us": float(field(r"Average Latency \(s\)")) * 1e6,
    }
