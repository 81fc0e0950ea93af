"""The machine a run ran on, read from the machine at run time, and the line that states it.

:func:`facts` goes into every results file (``results["machine"]``); :func:`describe` turns a
results file's facts into the one line that the Markdown report, the chart and the README quote,
so that no figure about the machine is ever written down by hand.
"""

from __future__ import annotations

import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: Packages whose versions are recorded (None when not installed).
PACKAGES = ("server_framework", "uvloop", "trio", "msgspec", "structlog", "easynetwork")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's model name (``/proc/cpuinfo``; else ``platform.processor()``), or None."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    for key in ("model name", "Model", "cpu model", "Processor"):
        found = re.search(rf"^{key}\s*:\s*(.+?)\s*$", text, re.MULTILINE)
        if found:
            return found.group(1)
    return platform.processor() or None


def memory_total_kib(meminfo: str | None = None) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` in KiB, or None."""
    text = _read("/proc/meminfo") if meminfo is None else meminfo
    found = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def cpu_affinity() -> int | None:
    """How many CPUs this process may run on (``os.sched_getaffinity``), or None."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def facts() -> dict[str, Any]:
    """What the machine says about itself now: CPUs, memory, kernel, Python and packages.

    ``cpus`` is ``os.cpu_count()`` (the key older results have too), ``cpu_affinity`` the CPUs
    this process may use, ``memory_kib`` ``MemTotal``.
    """
    return {
        "cpus": os.cpu_count(),
        "cpu_affinity": cpu_affinity(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "memory_kib": memory_total_kib(),
        "system": platform.system(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": {name: package_version(name) for name in PACKAGES},
    }


def _tool(value: str | None, name: str) -> str | None:
    if not value:
        return None
    return value if value.lower().startswith(name) else f"{name} {value}"


def describe(machine: dict[str, Any]) -> str:
    """The one line about the machine, from a results file's ``machine`` facts.

    Works on older results too (they recorded ``cpus``, ``platform``, ``python``, ``packages``
    and the generators' versions only): what was not recorded is left out, never guessed.
    """
    cpus = machine.get("cpus")
    cpu = f"{cpus} CPUs" if cpus is not None else "CPUs not recorded"
    details = []
    if machine.get("cpu_model"):
        details.append(machine["cpu_model"])
    affinity = machine.get("cpu_affinity")
    if affinity is not None and affinity != cpus:
        details.append(f"{affinity} usable")
    if details:
        cpu += f" ({', '.join(details)})"
    parts = [cpu]
    if machine.get("memory_kib"):
        parts.append(f"{machine['memory_kib'] / 1024**2:.1f} GiB RAM")
    if machine.get("kernel"):
        parts.append(f"{machine.get('system') or 'kernel'} {machine['kernel']}")
    elif machine.get("platform"):
        parts.append(machine["platform"])
    if machine.get("python"):
        implementation = machine.get("python_implementation") or "Python"
        parts.append(f"{'Python' if implementation == 'CPython' else implementation} "
                     f"{machine['python']}")  # fmt: skip
    packages = machine.get("packages") or {}
    parts += [f"{name} {v}" for name, v in packages.items() if v and name != "server_framework"]
    for key in ("redis-benchmark", "dnsperf", "valgrind"):
        shown = _tool(machine.get(key), key)
        if shown:
            parts.append(shown)
    line = ", ".join(parts)
    if machine.get("load_before") is not None:
        line += f"; load average {machine['load_before']:.1f} at the start"
    return line
