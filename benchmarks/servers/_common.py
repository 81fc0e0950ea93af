"""What every server module shares: its command line, its ready line, its bounded lifetime."""

from __future__ import annotations

import argparse
import ipaddress
import json
import resource
import signal
import sys

#: The environment variable that sets the framework servers' ``warn_blocked`` (unset: the
#: framework's default, as every user gets it; ``--instructions`` sets 0).
WARN_BLOCKED_ENV = "SF_BENCH_WARN_BLOCKED"


def parse_args(
    description: str, modes: tuple[str, ...], **extra: tuple[str, ...]
) -> argparse.Namespace:
    """Parse ``--host --port --workload --max-seconds`` (and ``--NAME`` choices from ``extra``).

    Also raises the open-file limit (1,000 idle connections need more than 1,024 descriptors
    with some limits) and arms an alarm that ends the process after ``--max-seconds``, so that
    a server forgotten by a crashed runner does not live on.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--workload", choices=modes, default=modes[0], help="wire format")
    parser.add_argument("--max-seconds", type=int, default=3600, help="exit after this long")
    for name, choices in extra.items():
        parser.add_argument(f"--{name}", choices=choices, default=choices[0])
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("benchmark servers bind loopback addresses only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.alarm(args.max_seconds)  # SIGALRM's default action ends the process
    return args


def ready(port: int, **info: str) -> None:
    """Tell the runner that the server accepts, and on which port: ``READY <port>``.

    ``info`` (e.g. ``engine="pure Python"``) follows on the same line as one JSON object:
    ``READY 40123 {"engine": "pure Python"}`` (see :func:`parse_ready`).
    """
    extra = f" {json.dumps(info)}" if info else ""
    sys.stdout.write(f"READY {port}{extra}\n")
    sys.stdout.flush()


def parse_ready(line: str | None) -> tuple[int, dict[str, str]] | None:
    """The port and the extra information of a ``READY`` line, or None if it is not one."""
    if line is None or not line.startswith("READY "):
        return None
    parts = line.split(maxsplit=2)
    try:
        port = int(parts[1])
        info = json.loads(parts[2]) if len(parts) > 2 else {}
    except ValueError:
        return None
    return port, info if isinstance(info, dict) else {}
