"""Orchestration: start the servers, run the workloads round by round, sample ``/proc``.

Every server runs in its own process on loopback and every generator in others; the runner only
starts them, tells the generators when to measure, samples the server's CPU time
(``/proc/PID/stat``) and memory (``/proc/PID/status``) around the measurement, and collects the
figures. Servers are interleaved within each round (A B C, A B C, ...) so that machine drift hits
all alike, and every figure is later divided by the baseline's figure *of the same round*.

No process outlives the runner: every child is started in its own session (a Ctrl-C reaches the
runner only), asks the kernel to kill it if the runner dies (``PR_SET_PDEATHSIG``), is stopped by
PID when its part is done, and all still running are stopped on any error or KeyboardInterrupt.
Servers and generators also bound their own lifetime (``--max-seconds``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from benchmarks.generators import dnsperf, redis_benchmark, suite
from benchmarks.machine import facts as machine_facts
from benchmarks.servers import (
    BASELINES,
    PURE_ENV,
    ServerSpec,
    missing_requirement,
    select_engines,
    server_table,
)
from benchmarks.servers._common import parse_ready
from benchmarks.workloads import WORKLOADS, Workload

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: A run whose generator used more than this share of a core is flagged "client-bound".
CLIENT_BOUND = 0.9
#: Seconds allowed for a server or generator process to start and say it is ready.
START_TIMEOUT = 30.0
#: A 1-minute load average above this when the run starts gets a note in the results.
BUSY_LOAD = 0.5
#: redis-benchmark's warm-up lasts at least this long, to report a rate.
REDIS_MIN_WARMUP = 0.4
#: The server's memory is read this long after the idle connections are open (or closed).
SETTLE = 0.3


@dataclass
class Settings:
    """What to run and for how long (the command-line options)."""

    servers: list[str]
    workloads: list[str]
    rounds: int = 3
    duration: float = 1.0
    warmup: float = 0.3
    connections: int = 50
    client_processes: int = 1
    idle_connections: int = 1000
    quick: bool = False
    #: ``compiled``, ``pure`` or ``both``: server_framework's engine (see ``server_table``).
    engine: str = "compiled"
    notes: list[str] = field(default_factory=list)


class BenchmarkError(Exception):
    """A measurement failed (the message says which and why); the run goes on without it."""


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (all its threads), from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB, from ``VmRSS`` in ``/proc/PID/status``."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise BenchmarkError(f"no VmRSS for process {pid}")


# -- child processes -----------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """A started process, with a non-blocking reader of its stdout lines."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.stderr = stderr
        self._buffer = b""
        self._eof = False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line, or None at end of file; BenchmarkError after ``timeout``."""
        deadline = time.monotonic() + timeout
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buffer:
            if self._eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise BenchmarkError(f"{self.name}: no answer within {timeout:g} s{self.tail()}")
            chunk = os.read(fd, 65536)
            self._eof = not chunk
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def read_all(self, timeout: float) -> bytes:
        """Everything up to end of file (the process is done writing), within ``timeout``."""
        lines = []
        while (line := self.read_line(timeout)) is not None:
            lines.append(line + "\n")
        rest, self._buffer = self._buffer, b""
        return "".join(lines).encode() + rest

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait for the generator's JSON event ``name`` and return it."""
        line = self.read_line(timeout)
        if line is None:
            raise BenchmarkError(f"{self.name} exited before {name!r}{self.tail()}")
        try:
            message: dict[str, Any] = json.loads(line)
        except ValueError:
            raise BenchmarkError(f"{self.name} said {line!r}, expected {name!r}") from None
        if message.get("event") != name:
            raise BenchmarkError(f"{self.name} said {message.get('event')!r}, expected {name!r}")
        return message

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def tail(self) -> str:
        """The end of its stderr, for error messages."""
        with contextlib.suppress(OSError, ValueError):
            self.stderr.seek(0)
            text = self.stderr.read().decode(errors="replace").strip()
            if text:
                return ": " + text[-600:].replace("\n", " | ")
        return ""


class Children:
    """Every process the runner started; ``stop_all`` (also on exit) stops what still runs."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        stdin: bool = False,
        env: Mapping[str, str | None] | None = None,
    ) -> Child:
        """Start ``argv``; ``env`` changes the runner's environment for it (None: unset)."""
        stderr = tempfile.TemporaryFile(prefix="bench-")  # noqa: SIM115  (closed by stop())
        environ = None
        if env:
            environ = dict(os.environ)
            for key, value in env.items():
                if value is None:
                    environ.pop(key, None)
                else:
                    environ[key] = value
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=environ,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509  (the runner starts no threads)
        )
        child = Child(name, popen, stderr)
        self.children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 3.0) -> None:
        """Stop ``child`` by its PID: SIGTERM, then SIGKILL if it lingers; reap it."""
        if child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
            try:
                child.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait()
        for stream in (child.popen.stdin, child.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        child.stderr.close()
        if child in self.children:
            self.children.remove(child)

    def wait(self, child: Child, timeout: float) -> tuple[int, float]:
        """Wait for ``child`` to exit; return its exit code and its CPU seconds (rusage)."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                child.popen.returncode = os.waitstatus_to_exitcode(status)
                return child.popen.returncode, usage.ru_utime + usage.ru_stime
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{child.name} did not finish within {timeout:g} s")
            time.sleep(0.005)

    def stop_all(self) -> None:
        for child in list(self.children):
            self.stop(child, timeout=1.0)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def sleep_until(when: float) -> None:
    """Sleep until ``time.time()`` reaches ``when``."""
    left = when - time.time()
    if left > 0:
        time.sleep(left)


# -- one measurement -----------------------------------------------------------------------


@dataclass
class Server:
    """A running server under test."""

    spec: ServerSpec
    mode: str
    child: Child
    port: int = 0
    #: What its ``READY`` line said besides the port (``engine`` for server_framework).
    info: dict[str, str] = field(default_factory=dict)


def start_server(
    children: Children,
    spec: ServerSpec,
    mode: str,
    prefix: list[str] | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Server:
    """Start ``spec`` serving ``mode`` on a free port, with its engine's environment.

    ``prefix`` goes before the Python command (e.g. valgrind's), ``env`` adds to the
    environment; wait for READY with :func:`wait_ready`.
    """
    argv = [*(prefix or []), sys.executable, *spec.command(), "--port", "0", "--workload", mode]
    child = children.spawn(f"server {spec.name} ({mode})", argv, env={**spec.env(), **(env or {})})
    return Server(spec, mode, child)


def wait_ready(server: Server, timeout: float = START_TIMEOUT) -> Server:
    """Wait for ``server``'s READY line; set its port and info."""
    ready = parse_ready(server.child.read_line(timeout))
    if ready is None:
        raise BenchmarkError(f"{server.child.name} did not start{server.child.tail()}")
    server.port, server.info = ready
    return server


class Runner:
    """Runs :class:`Settings` and returns the results (see :func:`run`)."""

    def __init__(self, settings: Settings, children: Children) -> None:
        self.s = settings
        self.children = children
        self.server_pids: list[int] = []
        self.last_rate: dict[tuple[str, str], float] = {}
        #: The engine each server_framework server reported on its READY line.
        self.engines: dict[str, str] = {}

    # servers

    def start_servers(self, wanted: list[tuple[ServerSpec, str]]) -> list[Server]:
        """Start servers in parallel and wait until each says READY."""
        started = []
        for spec, mode in wanted:
            server = start_server(self.children, spec, mode)
            self.server_pids.append(server.child.pid)
            started.append(server)
        for server in started:
            wait_ready(server)
            if "engine" in server.info:
                self.engines[server.spec.name] = server.info["engine"]
        return started

    def check_alive(self, server: Server) -> None:
        if not server.child.alive():
            code = server.child.popen.returncode
            raise BenchmarkError(f"{server.child.name} exited (code {code}){server.child.tail()}")

    # generators

    def measure(self, server: Server, workload: Workload) -> dict[str, Any]:
        """One measurement of ``workload`` against ``server``; the figures, or BenchmarkError."""
        self.check_alive(server)
        if workload.generator == "redis-benchmark" and redis_benchmark.path():
            figures = self.measure_redis(server, workload)
        elif workload.generator == "dnsperf" and dnsperf.path():
            figures = self.measure_dnsperf(server)
        else:
            figures = self.measure_suite(server, workload)
        self.check_alive(server)
        return figures

    def _with_cpu(self, figures: dict[str, Any], server_cpu: float) -> dict[str, Any]:
        figures["server_cpu_s"] = round(server_cpu, 4)
        requests = figures["requests"]
        figures["cpu_us"] = server_cpu / requests * 1e6 if requests else None
        figures["client_bound"] = figures["client_cpu"] > CLIENT_BOUND
        return figures

    def measure_redis(self, server: Server, workload: Workload) -> dict[str, Any]:
        conns, depth = self.s.connections, workload.depth
        warm = self.children.spawn(
            "redis-benchmark warm-up", redis_benchmark.warmup_command(server.port, conns, depth)
        )
        # The measured run is sized by the rate of this cell's last run, or else by the rate in
        # the warm-up's progress output (printed every 250 ms: the warm-up lasts long enough).
        known = self.last_rate.get((server.spec.name, workload.name))
        warmup = self.s.warmup if known else max(self.s.warmup, REDIS_MIN_WARMUP)
        deadline = time.monotonic() + warmup
        output = b""
        assert warm.popen.stdout is not None
        fd = warm.popen.stdout.fileno()
        while (left := deadline - time.monotonic()) > 0:
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                output += chunk
        self.children.stop(warm)
        requests = redis_benchmark.requests_for(
            known or redis_benchmark.progress_rate(output), self.s.duration
        )
        cpu0 = cpu_seconds(server.child.pid)
        started = time.monotonic()
        run = self.children.spawn(
            "redis-benchmark", redis_benchmark.command(server.port, conns, depth, requests)
        )
        try:
            text = run.read_all(timeout=max(60.0, 20 * self.s.duration)).decode(errors="replace")
            code, client_cpu = self.children.wait(run, timeout=10)
            elapsed = time.monotonic() - started
            server_cpu = cpu_seconds(server.child.pid) - cpu0
            if code != 0:
                raise BenchmarkError(f"redis-benchmark exited with {code}{run.tail()}")
            parsed = redis_benchmark.parse(text)
        finally:
            self.children.stop(run)
        self.last_rate[(server.spec.name, workload.name)] = parsed["rate"]
        figures = {
            "generator": "redis-benchmark",
            "requests": requests,
            "rate": parsed["rate"],
            "p50_us": parsed["p50_us"],
            "p99_us": parsed["p99_us"],
            "client_cpu": client_cpu / elapsed,
        }
        return self._with_cpu(figures, server_cpu)

    def measure_dnsperf(self, server: Server) -> dict[str, Any]:
        warm = self.children.spawn("dnsperf warm-up", dnsperf.command(server.port, self.s.warmup))
        try:
            warm.read_all(timeout=self.s.warmup + 30)
            self.children.wait(warm, timeout=10)
        finally:
            self.children.stop(warm)
        cpu0 = cpu_seconds(server.child.pid)
        started = time.monotonic()
        run = self.children.spawn("dnsperf", dnsperf.command(server.port, self.s.duration))
        try:
            text = run.read_all(timeout=self.s.duration + 30).decode(errors="replace")
            code, client_cpu = self.children.wait(run, timeout=10)
            elapsed = time.monotonic() - started
            server_cpu = cpu_seconds(server.child.pid) - cpu0
            if code != 0:
                raise BenchmarkError(f"dnsperf exited with {code}{run.tail()}")
            parsed = dnsperf.parse(text)
        finally:
            self.children.stop(run)
        figures = {
            "generator": "dnsperf",
            "requests": parsed["requests"],
            "rate": parsed["rate"],
            "p50_us": None,
            "p99_us": None,
            "avg_us": parsed["avg_us"],
            "lost": parsed["lost"],
            "client_cpu": client_cpu / elapsed,
        }
        return self._with_cpu(figures, server_cpu)

    def measure_suite(self, server: Server, workload: Workload) -> dict[str, Any]:
        mode = {"tcp": "tcp", "udp": "udp", "churn": "churn"}[workload.kind]
        size = max(workload.size, 8) if mode == "udp" else workload.size
        workers = []
        try:
            for i, count in enumerate(suite.split(self.s.connections, self.s.client_processes)):
                argv = suite.command(
                    server.port, mode, workload.framing, size, workload.depth, count,
                    self.s.duration,
                )  # fmt: skip
                workers.append(self.children.spawn(f"generator {i}", argv, stdin=True))
            for worker in workers:
                worker.event("ready", START_TIMEOUT)
            start_at = time.time() + self.s.warmup
            for worker in workers:
                worker.send(f"start {start_at!r}")
            sleep_until(start_at)
            cpu0 = cpu_seconds(server.child.pid)
            sleep_until(start_at + self.s.duration)
            server_cpu = cpu_seconds(server.child.pid) - cpu0
            results = [worker.event("result", 30.0) for worker in workers]
            for worker in workers:
                self.children.wait(worker, timeout=10)
        finally:
            for worker in workers:
                self.children.stop(worker)
        figures = {"generator": "suite", **suite.merge(results, self.s.duration)}
        if workload.generator != "suite":
            figures["note"] = f"{workload.generator} not installed: the suite's generator stood in"
        return self._with_cpu(figures, server_cpu)

    def measure_idle(self, spec: ServerSpec, workload: Workload) -> dict[str, Any]:
        """Memory per idle connection, on a server started for this measurement alone."""
        (server,) = self.start_servers([(spec, workload.mode)])
        worker = None
        try:
            argv = suite.command(
                server.port, "idle", workload.framing, workload.size, 1,
                self.s.idle_connections, self.s.duration,
            )  # fmt: skip
            worker = self.children.spawn("idle generator", argv, stdin=True)
            worker.event("warm", START_TIMEOUT)
            time.sleep(SETTLE)
            before = rss_kib(server.child.pid)
            worker.send("go")
            held = worker.event("ready", 120.0)["held"]
            time.sleep(SETTLE)
            after = rss_kib(server.child.pid)
            self.check_alive(server)
            worker.send("close")
            result = worker.event("result", 30.0)
        finally:
            if worker is not None:
                self.children.stop(worker)
            self.children.stop(server.child)
        return {
            "generator": "suite",
            "value": (after - before) / held,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "connections": held,
            "checked": result["checked"],
            "check_errors": result["errors"],
            "error_samples": result["error_samples"],
        }


# -- the whole run -------------------------------------------------------------------------


class HasTransport(Protocol):
    """A workload of either mode: what the choice of baselines needs of it."""

    @property
    def transport(self) -> str: ...


def select_servers(
    names: list[str], workloads: Sequence[HasTransport], notes: list[str], engine: str = "compiled"
) -> list[ServerSpec]:
    """The servers to run, in table order, plus the baselines the ratios need.

    ``names`` are names of ``SERVERS``; with ``engine="both"`` each ``sf-*`` one brings its
    ``[pure]`` twin.
    """
    table = server_table(engine)
    wanted = select_engines(names, engine)
    for transport in sorted({w.transport for w in workloads}):
        baseline = table[BASELINES[transport]]
        if baseline not in wanted:
            wanted.append(baseline)
            notes.append(f"added {baseline.name}: the {transport.upper()} ratios need it")
    chosen = []
    for spec in (s for s in table.values() if s in wanted):
        missing = missing_requirement(spec)
        if missing is not None:
            notes.append(
                f"skipped {spec.name}: {missing} is not installed (pip install -e '.[bench]')"
            )
        else:
            chosen.append(spec)
    return chosen


def with_references(names: list[str], notes: list[str]) -> list[Workload]:
    """The workloads ``names``, in table order, plus those whose figures their ratios need."""
    wanted = set(names)
    for name in names:
        reference = WORKLOADS[name].reference
        if reference is not None and reference not in wanted:
            wanted.add(reference)
            notes.append(f"added {reference}: the ratios of {name} need it")
    return [w for w in WORKLOADS.values() if w.name in wanted]


def engine_notes(engine: str, servers: list[ServerSpec], reported: dict[str, str]) -> list[str]:
    """What ``--engine`` did, and any server_framework server whose engine was not the one asked."""
    ours = [s for s in servers if s.engine is not None]
    if not ours:
        return []
    how = {
        "compiled": f"{PURE_ENV} unset",
        "pure": f"{PURE_ENV}=1",
        "both": f"each twice: NAME unset, NAME[pure] with {PURE_ENV}=1",
    }[engine]
    notes = [f"server_framework engine: {engine} ({how})"]
    expected = {"compiled": "compiled", "pure": "pure Python"}
    differ = [
        s.name for s in ours if s.name in reported and reported[s.name] != expected[s.engine or ""]
    ]
    if differ:
        ran = sorted({reported[name] for name in differ})
        notes.append(
            f"{len(differ)} of {len(ours)} server_framework server(s) ran another engine than "
            f"asked ({', '.join(map(repr, ran))}; is the compiled engine built?): "
            + ", ".join(differ)
        )
    return notes


def plan(servers: list[ServerSpec], workloads: list[Workload]) -> list[tuple[Workload, ServerSpec]]:
    """One round: every workload, and in it every server that speaks its wire format."""
    return [(w, s) for w in workloads for s in servers if w.mode in s.modes]


def tool_notes() -> list[str]:
    notes = []
    if redis_benchmark.path() is None:
        notes.append(
            "redis-benchmark is not installed (Debian package redis-tools): the redis-ping "
            "workloads run on the suite's own generator, sending the same PING lines"
        )
    if dnsperf.path() is None:
        notes.append(
            "dnsperf is not installed (Debian package dnsperf): udp-dnsperf runs on the suite's "
            "own generator with 29 B datagrams"
        )
    return notes


def machine() -> dict[str, Any]:
    """The machine's facts, read from it now (:func:`benchmarks.machine.facts`), and the
    versions of the C load generators."""
    return {
        **machine_facts(),
        "redis-benchmark": redis_benchmark.version(),
        "dnsperf": dnsperf.version(),
    }


def server_info(servers: list[ServerSpec], engines: dict[str, str]) -> dict[str, Any]:
    """``results["servers"]``: each server's family, loop, wire formats and engine.

    ``engine`` is what a server_framework server reported (``"compiled"`` or ``"pure
    Python"``; None for the others, or if it never started), ``engine_requested`` what
    ``--engine`` asked of it.
    """
    return {
        s.name: {
            "family": s.family, "loop": s.loop, "modes": list(s.modes), "base": s.base,
            "engine_requested": s.engine, "engine": engines.get(s.name),
        }
        for s in servers
    }  # fmt: skip


def run(settings: Settings, progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run everything ``settings`` selects and return the results (see ``report``).

    ``progress`` is called before each measurement with ``round``, ``rounds``, ``workload``,
    ``server``, ``index``, ``total`` and ``eta`` (seconds left, estimated).
    """
    notes = settings.notes
    workloads = with_references(settings.workloads, notes)
    servers = select_servers(settings.servers, workloads, notes, settings.engine)
    table = {s.name: s for s in servers}
    notes.extend(tool_notes())
    cells = plan(servers, workloads)
    started_at = time.time()
    load_before = os.getloadavg()[0]
    if load_before > BUSY_LOAD:
        notes.append(
            f"the machine was busy when the run started (load average {load_before:.1f} on "
            f"{os.cpu_count()} CPUs): expect noisier figures; the ratios suffer least"
        )
    runs: list[dict[str, Any]] = []
    with Children() as children:
        runner = Runner(settings, children)
        long_lived = sorted(
            {(s.name, w.mode) for w, s in cells if w.kind != "idle"},
            key=lambda item: list(table).index(item[0]),
        )
        running = {
            (srv.spec.name, srv.mode): srv
            for srv in runner.start_servers([(table[n], m) for n, m in long_lived])
        }
        total = len(cells) * settings.rounds
        index = 0
        cell_started = time.monotonic()
        for round_no in range(1, settings.rounds + 1):
            for workload, spec in cells:
                elapsed = time.monotonic() - cell_started
                per_cell = elapsed / index if index else settings.warmup + settings.duration + 0.5
                progress({
                    "round": round_no, "rounds": settings.rounds, "workload": workload.name,
                    "server": spec.name, "index": index, "total": total,
                    "eta": per_cell * (total - index),
                })  # fmt: skip
                record: dict[str, Any] = {
                    "round": round_no, "workload": workload.name, "server": spec.name,
                }  # fmt: skip
                try:
                    if workload.kind == "idle":
                        figures = runner.measure_idle(spec, workload)
                    else:
                        figures = runner.measure(running[(spec.name, workload.mode)], workload)
                    if workload.kind != "idle":
                        figures["value"] = figures["rate"]
                    record.update(figures)
                    record["ok"] = not figures.get("check_errors")
                    if not record["ok"]:
                        record["error"] = "wrong replies: " + "; ".join(figures["error_samples"])
                except (BenchmarkError, ValueError, OSError) as exc:
                    record.update(ok=False, error=str(exc))
                runs.append(record)
                index += 1
        progress({"index": total, "total": total, "eta": 0.0, "done": True})
        server_pids = list(runner.server_pids)
        engines = dict(runner.engines)
    notes.extend(engine_notes(settings.engine, servers, engines))
    return {
        "suite": "server_framework benchmarks",
        "format": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
        "elapsed_s": round(time.time() - started_at, 1),
        "machine": {**machine(), "load_before": load_before, "load_after": os.getloadavg()[0]},
        "settings": {k: v for k, v in asdict(settings).items() if k != "notes"},
        "notes": notes,
        "baselines": dict(BASELINES),
        "servers": server_info(servers, engines),
        "workloads": {
            w.name: {**asdict(w), "unit": w.unit, "transport": w.transport} for w in workloads
        },
        "runs": runs,
        "server_pids": server_pids,
    }
