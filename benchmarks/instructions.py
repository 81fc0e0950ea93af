"""``python -m benchmarks --instructions``: instructions per request, counted by callgrind.

Time on a shared machine with few cores (2 vCPUs, say) moves by 10-30 % from one run to the
next; the number of instructions a server executes to answer the same requests hardly moves at
all. So this mode runs each server under valgrind's callgrind (``valgrind --tool=callgrind
--callgrind-out-file=FILE python -m benchmarks.servers.X ...``), has the suite's own blocking
client (:mod:`benchmarks.generators.instructions`) send it N requests, stops it, and reads the
total of instructions from FILE; then the same with 2N requests in a fresh process. Start-up,
the first connection and shutdown are in both totals and cancel::

    instructions per request = (Ir total at 2N - Ir total at N) / N

and the ratio is that figure over the raw baseline's for the same workload in the same run
(``uvloop-protocol`` for TCP, ``uvloop-datagram`` for UDP; servers on trio also get a ratio to
``trio-sockets`` / ``trio-udp`` when those ran; ``json-1k`` is divided by ``bytes-1k`` on the
same server). Python's hash seed is fixed (``PYTHONHASHSEED=0``) so that dict layouts, and the
counts, repeat.

The arithmetic and the parsing are pure functions (:func:`parse_callgrind_total`,
:func:`per_request`, :func:`summarize`), tested without valgrind.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks.generators import instructions as client
from benchmarks.machine import describe as describe_machine
from benchmarks.messages import Framing
from benchmarks.report import _table
from benchmarks.runner import (
    BenchmarkError,
    Child,
    Children,
    engine_notes,
    machine,
    select_servers,
    server_info,
    start_server,
    wait_ready,
)
from benchmarks.servers import BASELINES, TRIO_BASELINES, ServerSpec
from benchmarks.servers._common import WARN_BLOCKED_ENV

VALGRIND: Final = "valgrind"
#: The one line printed when valgrind is missing.
MISSING_VALGRIND: Final = (
    "--instructions needs valgrind, which is not installed; on Debian or Ubuntu: "
    "apt-get install valgrind"
)
#: A server under valgrind starts ~50x slower than usual: seconds allowed until READY.
START_TIMEOUT: Final = 300.0
#: Seconds a stopped server gets after SIGINT, then after SIGTERM, before SIGKILL.
STOP_TIMEOUTS: Final = (60.0, 20.0)
#: Servers of a plain ``--instructions`` (``--servers`` not given): the baselines, the raw trio
#: servers and every server_framework server. (EasyNetwork and the other raw servers: ask.)
DEFAULT_SERVERS: Final = ("uvloop-protocol", "uvloop-datagram", "trio-sockets", "trio-udp", "sf-*")


@dataclass(frozen=True)
class InstructionWorkload:
    """One workload of ``--instructions``.

    Attributes:
        name: Its name (``--workloads``).
        mode: The servers' ``--workload`` (wire format).
        client: ``tcp``, ``churn`` (a connection per request) or ``udp``.
        framing: The messages (:func:`benchmarks.messages.request_and_reply`).
        size: Payload bytes (not for ``ping``).
        depth: Requests per write on a connection (16: pipelined).
        connections: Connections open at once (``tcp``).
        requests: N, the default number of requests of the first run (the second runs 2N).
        description: One line.
        reference: A workload whose figure for the same server divides this one's.
    """

    name: str
    mode: str
    client: str
    framing: Framing
    size: int
    depth: int
    connections: int
    requests: int
    description: str
    reference: str | None = None

    @property
    def transport(self) -> str:
        return "udp" if self.client == "udp" else "tcp"


#: Every workload of ``--instructions``, in table order. N is chosen so that the N and the 2N
#: runs of one server take well under a minute under valgrind (15-40 s on the project's
#: machine: Python's start-up alone is ~8 s of it), and that the requests outweigh what varies
#: from run to run in a start-up (up to ~1M instructions with the framework's default logging
#: thread, a few 10k otherwise) by a few hundred times.
WORKLOADS: Final[dict[str, InstructionWorkload]] = {
    w.name: w
    for w in (
        InstructionWorkload(
            "ping", "line", "tcp", "ping", 4, 1, 1, 8000,
            "PING/+PONG lines, 1 in flight on 1 connection",
        ),
        InstructionWorkload(
            "ping-p16", "line", "tcp", "ping", 4, 16, 1, 48000,
            "PING/+PONG lines, 16 pipelined (one write) on 1 connection",
        ),
        InstructionWorkload(
            "ping-churn", "line", "churn", "ping", 4, 1, 1, 1000,
            "connect, PING/+PONG, close: one connection per request",
        ),
        InstructionWorkload(
            "udp-64", "udp", "udp", "udp", 64, 1, 1, 8000,
            "UDP echo of 64 B datagrams, 1 in flight",
        ),
        InstructionWorkload(
            "bytes-1k", "line", "tcp", "json", 1024, 16, 1, 8000,
            "1 KiB JSON lines as raw bytes, echoed, 16 pipelined on 1 connection",
        ),
        InstructionWorkload(
            "json-1k", "json", "tcp", "json", 1024, 16, 1, 8000,
            "the same lines decoded into a msgspec Struct and answered with it (sf-* only); "
            "ratio to bytes-1k on the same server",
            reference="bytes-1k",
        ),
    )
}  # fmt: skip

#: What a plain ``--instructions`` runs.
DEFAULT_WORKLOADS: Final = ("ping", "ping-p16", "ping-churn", "udp-64")


# -- pure functions (tested without valgrind) ------------------------------------------------

_EVENTS = re.compile(r"^events:\s*(.+)$", re.MULTILINE)
_TOTAL = re.compile(r"^(summary|totals):\s*(.+)$", re.MULTILINE)


def parse_callgrind_total(text: str, event: str = "Ir") -> int:
    """The total of ``event`` in a callgrind output file.

    Read from its ``totals:`` line (written at the end), else its ``summary:`` line; the
    values are in the order of the ``events:`` line (``Ir`` alone by default). Several
    ``totals:`` lines (several parts in one file) are added up.
    """
    names = _EVENTS.search(text)
    events = names.group(1).split() if names else ["Ir"]
    if event not in events:
        raise ValueError(f"no {event!r} among the events {events} of the callgrind output")
    index = events.index(event)
    found: dict[str, list[int]] = {"summary": [], "totals": []}
    for match in _TOTAL.finditer(text):
        values = match.group(2).split()
        if len(values) <= index:
            raise ValueError(f"callgrind {match.group(1)} line has no {event}: {match.group(0)!r}")
        try:
            found[match.group(1)].append(int(values[index]))
        except ValueError:
            raise ValueError(f"not a count: {match.group(0)!r}") from None
    totals = found["totals"] or found["summary"]
    if not totals:
        raise ValueError("no 'totals:' or 'summary:' line in the callgrind output")
    return sum(totals)


def per_request(total_n: int, total_2n: int, n: int) -> float:
    """Instructions per request: ``(total at 2N - total at N) / N``."""
    if n <= 0:
        raise ValueError(f"N must be positive, got {n}")
    return (total_2n - total_n) / n


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def requests_for(workload: InstructionWorkload, override: int | None = None) -> int:
    """N for ``workload``: ``override`` (``--requests``) or its default, rounded up to whole
    pipelined batches so that the N and 2N runs send the same batches."""
    n = workload.requests if override is None else override
    if n <= 0:
        raise ValueError(f"--requests must be positive, got {n}")
    return -(-n // workload.depth) * workload.depth


def summarize(
    runs: Iterable[dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    servers: dict[str, dict[str, Any]],
    baselines: dict[str, str] = BASELINES,
    trio_baselines: dict[str, str] = TRIO_BASELINES,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{workload: {server: figures}}`` from the runs: instructions per request, its ratio to
    the baseline of the workload's transport (or to the reference workload on the same
    server), and for servers on trio the ratio to the raw trio server.

    ``workloads`` maps a name to at least ``transport`` and ``reference``; ``servers`` a name
    to at least ``loop``; a run has ``server``, ``workload``, ``ok`` and ``ir_per_request``.
    """
    value = {
        (r["workload"], r["server"]): r["ir_per_request"]
        for r in runs
        if r.get("ok") and r.get("ir_per_request") is not None
    }
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, info in workloads.items():
        per_server: dict[str, dict[str, Any]] = {}
        for server, about in servers.items():
            if (workload, server) not in value:
                continue
            mine = value[(workload, server)]
            reference_workload = info.get("reference")
            if reference_workload:
                reference, against = server, f"{reference_workload} (same server)"
                theirs = value.get((reference_workload, server))
            else:
                reference = against = baselines[info["transport"]]
                theirs = value.get((workload, reference))
            figures: dict[str, Any] = {
                "ir_per_request": mine,
                "ratio": ratio(mine, theirs),
                "reference": against,
            }
            trio = trio_baselines.get(info["transport"])
            if about.get("loop") == "trio" and not reference_workload and trio != server:
                figures["trio_ratio"] = ratio(mine, value.get((workload, trio)))
                figures["trio_reference"] = trio
            per_server[server] = figures
        if per_server:
            summary[workload] = per_server
    return summary


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per (server, workload): instructions/request, ratio, its reference, trio's."""
    rows = []
    for workload, per_server in results["summary"].items():
        for server, f in per_server.items():
            trio = ""
            if f.get("trio_ratio") is not None:
                trio = f"{_x(f['trio_ratio'])} {f['trio_reference']}"
            rows.append([
                server, workload, _count(f["ir_per_request"]), _x(f["ratio"]), f["reference"], trio,
            ])  # fmt: skip
    return rows


def render(results: dict[str, Any], markdown: bool = False) -> str:
    """The table of an ``--instructions`` run, as terminal text or Markdown."""
    s = results["settings"]
    lines = []
    if markdown:
        lines += [f"# Instructions per request, {results['started']}", ""]
    lines.append(
        "Instructions per request, counted by valgrind's callgrind: (Ir total of a server that "
        "served 2N requests - Ir total of one that served N) / N; ratio to the raw baseline of "
        f"the same workload in this run. Engine: {s['engine']}. Machine: "
        f"{describe_machine(results['machine'])}."
    )
    lines += [f"- note: {n}" for n in results["notes"]]
    lines.append("")
    headers = ["server", "workload", "instructions/request", "ratio", "to", "trio ratio"]
    lines += _table(headers, table_rows(results), markdown)
    lines.append("")
    failed = [r for r in results["runs"] if not r.get("ok")]
    lines.append("Checks: " + ("every reply right." if not failed else "SOME RUNS FAILED"))
    lines += [f"- {r['server']} {r['workload']}: {r.get('error')}" for r in failed]
    return "\n".join(lines) + "\n"


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The change of instructions per request from ``old`` to ``new`` (two ``--instructions``
    results), for every (workload, server) both counted."""
    rows = []
    for workload, per_server in new["summary"].items():
        for server, f in per_server.items():
            before = old["summary"].get(workload, {}).get(server)
            if not before:
                continue
            a, b = before["ir_per_request"], f["ir_per_request"]
            change = "-" if not a or b is None else f"{(b / a - 1) * 100:+.1f}%"
            rows.append([
                workload, server, _count(a), _count(b), change, _x(before["ratio"]), _x(f["ratio"]),
            ])  # fmt: skip
    headers = ["workload", "server", "old Ir/req", "new Ir/req", "change", "old ratio",
               "new ratio"]  # fmt: skip
    title = f"Change from {old['started']} to {new['started']} (instructions per request):"
    return "\n".join([title, *_table(headers, rows, markdown=False)]) + "\n"


# -- running -----------------------------------------------------------------------------------


def valgrind_path() -> str | None:
    return shutil.which(VALGRIND)


def valgrind_version() -> str | None:
    exe = valgrind_path()
    if exe is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return out.stdout.strip() or None
    return None


def interrupt(children: Children, child: Child, timeouts: tuple[float, float] = STOP_TIMEOUTS
              ) -> tuple[str, str]:  # fmt: skip
    """Stop ``child`` by its PID: SIGINT, then SIGTERM after ``timeouts[0]`` seconds, then
    SIGKILL after ``timeouts[1]``; reap it and close its pipes. Returns the signal that ended it
    (callgrind writes its file on SIGINT and SIGTERM, not on SIGKILL) and the end of its
    stderr."""
    used = "exited"
    for signum, timeout in ((signal.SIGINT, timeouts[0]), (signal.SIGTERM, timeouts[1])):
        if child.popen.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            child.popen.send_signal(signum)
        used = signum.name
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout)
    if child.popen.poll() is None:
        used = "SIGKILL"
        child.popen.kill()
        child.popen.wait()
    tail = child.tail()
    children.stop(child, timeout=0)
    return used, tail


def valgrind_command(out_file: Path) -> list[str]:
    return [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={out_file}"]


def count_run(children: Children, spec: ServerSpec, workload: InstructionWorkload, n: int,
              directory: Path) -> tuple[int, client.Result, dict[str, str]]:  # fmt: skip
    """Start ``spec`` under callgrind, send it ``n`` requests, stop it: its Ir total, what the
    client saw, and what its READY line said (``engine``). The callgrind file is deleted."""
    out_file = directory / f"callgrind.{spec.base}.{workload.name}.{n}.out"
    # The watchdog's heartbeat runs on time, not per request: off, so that the counts repeat.
    environment = {"PYTHONHASHSEED": "0", WARN_BLOCKED_ENV: "0"}
    server = start_server(children, spec, workload.mode, valgrind_command(out_file), environment)
    try:
        wait_ready(server, START_TIMEOUT)
        result = client.drive(
            "127.0.0.1", server.port, workload.client, workload.framing, workload.size, n,
            connections=workload.connections, depth=workload.depth,
        )  # fmt: skip
        if not result.ok:
            raise BenchmarkError(
                f"{result.replies} of {n} replies right: " + "; ".join(result.error_samples)
            )
        how, tail = interrupt(children, server.child)
        if how == "SIGKILL":
            raise BenchmarkError(f"{spec.name} ignored SIGINT and SIGTERM; killed{tail}")
        try:
            text = out_file.read_text(errors="replace")
        except FileNotFoundError:
            raise BenchmarkError(f"callgrind wrote no {out_file.name}{tail}") from None
        return parse_callgrind_total(text), result, server.info
    finally:
        if server.child.alive() or server.child in children.children:
            interrupt(children, server.child, (5.0, 5.0))
        for leftover in directory.glob(out_file.name + "*"):  # the file, and any part files
            leftover.unlink(missing_ok=True)


def measure(children: Children, spec: ServerSpec, workload: InstructionWorkload, n: int,
            directory: Path) -> dict[str, Any]:  # fmt: skip
    """The record of one (server, workload): the N run, the 2N run, instructions per request."""
    record: dict[str, Any] = {"server": spec.name, "workload": workload.name, "n": n}
    started = time.monotonic()
    try:
        total_n, first, info = count_run(children, spec, workload, n, directory)
        if "engine" in info:
            record["engine"] = info["engine"]
        total_2n, second, _ = count_run(children, spec, workload, 2 * n, directory)
        record.update(
            ir_n=total_n, ir_2n=total_2n, ir_per_request=per_request(total_n, total_2n, n),
            replies=first.replies + second.replies, ok=True,
        )  # fmt: skip
    except (BenchmarkError, ValueError, OSError) as exc:
        record.update(ok=False, error=str(exc), ir_per_request=None)
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


def select(names: list[str], workloads: list[InstructionWorkload], engine: str,
           notes: list[str]) -> list[ServerSpec]:  # fmt: skip
    """The servers to run (names of ``SERVERS``; ``both`` brings the ``[pure]`` twins), in
    table order, with the baselines the ratios need (as the timed runs choose them)."""
    return select_servers(names, workloads, notes, engine)


def with_references(names: list[str], notes: list[str]) -> list[InstructionWorkload]:
    wanted = set(names)
    for name in names:
        reference = WORKLOADS[name].reference
        if reference is not None and reference not in wanted:
            wanted.add(reference)
            notes.append(f"added {reference}: the ratio of {name} needs it")
    return [w for w in WORKLOADS.values() if w.name in wanted]


def run(servers: list[str], workload_names: list[str], engine: str = "compiled",
        requests: int | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Count every selected (server, workload); the results (``summary`` included)."""
    if valgrind_path() is None:
        raise SystemExit(MISSING_VALGRIND)
    notes: list[str] = []
    workloads = with_references(workload_names, notes)
    specs = select(servers, workloads, engine, notes)
    cells = [(w, s) for w in workloads for s in specs if w.mode in s.modes]
    started_at = time.time()
    runs = []
    engines: dict[str, str] = {}
    with Children() as children, tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        for index, (workload, spec) in enumerate(cells):
            n = requests_for(workload, requests)
            if progress is not None:
                progress(f"[{index + 1}/{len(cells)}] {workload.name:<10} {spec.name}: N={n}, 2N")
            record = measure(children, spec, workload, n, Path(tmp))
            runs.append(record)
            if "engine" in record:
                engines[spec.name] = record["engine"]
            if progress is not None and not record["ok"]:
                progress(f"    failed: {record['error']}")
    notes.extend(engine_notes(engine, specs, engines))
    servers_info = server_info(specs, engines)
    workloads_info = {w.name: {**asdict(w), "transport": w.transport} for w in workloads}
    for w in workloads:
        workloads_info[w.name]["requests"] = requests_for(w, requests)
    return {
        "suite": "server_framework benchmarks",
        "mode": "instructions",
        "format": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
        "elapsed_s": round(time.time() - started_at, 1),
        "machine": {**machine(), "valgrind": valgrind_version()},
        "settings": {
            "servers": servers,
            "workloads": workload_names,
            "engine": engine,
            "requests": requests,
        },
        "notes": notes,
        "baselines": dict(BASELINES),
        "trio_baselines": dict(TRIO_BASELINES),
        "servers": servers_info,
        "workloads": workloads_info,
        "runs": runs,
        "summary": summarize(runs, workloads_info, servers_info),
        "checks_passed": all(r["ok"] for r in runs),
    }


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: python -m benchmarks --instructions")
