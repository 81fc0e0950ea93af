"""Zero-downtime restarts of ``serve --workers N``: SIGHUP reloads, SIGTTIN / SIGTTOU resize.

Real server processes on loopback. The load runs throughout a reload: the suite's own load
generator (``benchmarks.generators.loadgen`` in ``churn`` mode: new connections, each with
pipelined requests whose replies it checks byte for byte), run as back-to-back processes, and
a probe thread asking which process serves (a new connection per request). Neither may see a
refused connection or a missing or wrong reply. Every wait polls against a generous deadline
(the machine may be slow and shared), nothing asserts a duration, and every process is killed
by its pid if a test fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from benchmarks.generators.suite import command as loadgen_command

from cli_helpers import (
    HERE,
    ROOT,
    ServerProcess,
    clean_env,
    eventually,
    kill_quietly,
    process_running,
    serving,
)

pytestmark = pytest.mark.timeout(180)

LOCAL = "127.0.0.1:0"
#: The handler the load generator can drive (``--framing line``: CRLF lines, echoed).
LINE_PROBE = ["cli_helpers:LineProbeHandler", "--protocol", "bytes", "--framing", "crlf"]
#: Waits for a reload: it starts interpreters, on a machine that may be busy.
SLOW = 90.0
FAILED_RELOAD = "reload failed; the old workers keep serving"


# -- talking to the server ----------------------------------------------------------------------


def ask(address: tuple[str, int], request: bytes, timeout: float = 30.0) -> bytes:
    """One request on a new connection (CRLF lines); the reply, without its CRLF."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request + b"\r\n")
        return read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    """One CRLF-terminated line from ``sock``, without the CRLF.

    Raises:
        ConnectionError: the connection ended first.
    """
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed before the reply (got {data!r})")
        data += chunk
    return data[:-2]


def generation_pids(server: ServerProcess, generation: int) -> set[int]:
    """The pids of the workers of ``generation`` that reported ready."""
    return {record["worker_pid"] for record in server.find("worker ready", generation=generation)}


def live_workers(server: ServerProcess) -> set[int]:
    """The pids of the workers that reported ready and still run."""
    return {
        pid
        for pid in (r["worker_pid"] for r in server.find("worker ready"))
        if process_running(pid)
    }


@contextlib.contextmanager
def reaped(pids: set[int]) -> Iterator[None]:
    """On the way out, wait for the worker processes ``pids`` to exit (a worker whose parent
    is gone drains and exits), and kill any still running after that by its pid."""
    try:
        yield
    finally:
        deadline = time.monotonic() + SLOW
        while any(process_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if process_running(pid):
                kill_quietly(pid)


# -- the load -----------------------------------------------------------------------------------


class Prober:
    """A thread asking ``pid`` on a new connection, again and again, until :meth:`stop`.

    ``pids`` lists who answered, in order; ``failures`` what went wrong (a refused connection,
    a reset, a missing or wrong reply).
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = ask(self.address, b"pid")
                self.pids.append(int(reply))
            except (OSError, ValueError) as exc:
                self.failures.append(repr(exc))
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()


class SuiteLoad:
    """The suite's load generator against ``port``, as back-to-back processes until :meth:`stop`.

    Each process runs ``churn`` loops for :attr:`ROUND` seconds: connect, send ``depth``
    pipelined requests, check every reply byte for byte, close; a failed connect, a lost
    connection or a wrong reply counts as an error. The next process is started and ready
    before the current one's window ends, and starts just before it, so the load never pauses.
    ``results`` holds each process's result; ``problems`` any process that did not report.
    """

    ROUND = 2.0
    OVERLAP = 0.2

    def __init__(self, port: int, *, connections: int = 2, depth: int = 4) -> None:
        self.command = [
            *loadgen_command(port, "churn", "line", 64, depth, connections, self.ROUND),
            "--max-seconds", "120",
        ]  # fmt: skip
        self.results: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="suite-load")
        self._started = threading.Event()
        self._thread.start()

    def wait_started(self) -> None:
        """Wait until the first process generates load."""
        assert self._started.wait(60), f"the load generator did not start: {self.problems}"

    def _spawn(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if json.loads(line or "{}").get("event") != "ready":
            raise RuntimeError(f"the generator did not start: {line!r}")
        return process

    @staticmethod
    def _start(process: subprocess.Popen[str]) -> float:
        """Start ``process``'s measured window now; return when it ends (``time.time()``)."""
        assert process.stdin is not None
        now = time.time()
        process.stdin.write(f"start {now!r}\n")
        process.stdin.flush()
        return now + SuiteLoad.ROUND

    def _finish(self, process: subprocess.Popen[str]) -> None:
        stdout: IO[str] | None = process.stdout
        assert stdout is not None
        line = stdout.readline()
        try:
            result = json.loads(line)
            assert result["event"] == "result"
        except (ValueError, KeyError, AssertionError):
            self.problems.append(f"no result from the generator: {line!r}")
        else:
            self.results.append(result)
        process.wait(30)

    def _run(self) -> None:
        try:
            current = self._spawn()
            ends = self._start(current)
            self._started.set()
            while not self._stop.is_set():
                following = self._spawn()
                time.sleep(max(0.0, ends - self.OVERLAP - time.time()))
                ends = self._start(following)
                self._finish(current)
                current = following
            self._finish(current)
        except Exception as exc:  # reported by stop()
            self.problems.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Let the process running finish its window; collect every result."""
        self._stop.set()
        self._thread.join(90)
        self.close()
        assert not self._thread.is_alive(), "the load generator did not finish"

    def close(self) -> None:
        """Kill (by pid) every generator process still running."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


@contextlib.contextmanager
def load(address: tuple[str, int]) -> Iterator[tuple[SuiteLoad, Prober]]:
    """Both loads, running until the block ends (stopped and cleaned up however it ends)."""
    suite = SuiteLoad(address[1])
    try:
        suite.wait_started()
        prober = Prober(address)
        try:
            yield suite, prober
        finally:
            prober.stop()
    finally:
        suite.stop()


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [None, "asyncio", "trio"], ids=["default", "asyncio", "trio"])
def test_sighup_replaces_every_worker_without_failing_a_request(
    backend: str | None, tmp_path: Path
) -> None:
    args = [*LINE_PROBE, "--tcp", LOCAL, "--workers", "2", "--shutdown-timeout", "60"]
    args += ["--backend", backend] if backend else []
    release = tmp_path / "release"
    with serving(*args, ready="all workers ready") as server:
        address = server.addresses()[0]
        old = generation_pids(server, 1)
        assert len(old) == 2
        try:
            with load(address) as (suite, prober), socket.create_connection(address, 30) as held:
                eventually(lambda: len(prober.pids) >= 20, timeout=SLOW)
                assert set(prober.pids) <= old

                # A request in progress on an old worker: it must finish during the drain.
                held.sendall(b"wait " + str(release).encode() + b"\r\n")
                holder = server.wait_for("request started", timeout=SLOW)["pid"]
                assert holder in old

                server.send_signal(signal.SIGHUP)
                server.wait_for("reload requested", generation=2)
                server.wait_for("new generation ready", generation=2, timeout=SLOW)
                new = generation_pids(server, 2)
                assert len(new) == 2
                assert not new & old

                # The old workers stop accepting; the one with a request keeps it.
                server.wait_for("stopping: finishing requests in progress", pid=holder)
                (idle,) = old - {holder}
                eventually(lambda: not process_running(idle), timeout=SLOW)
                assert process_running(holder)
                seen = len(prober.pids)
                eventually(
                    lambda: len(prober.pids) >= seen + 20 and set(prober.pids[-20:]) <= new,
                    timeout=SLOW,
                )

                release.touch()
                assert int(read_line(held)) == holder
                server.wait_for("old generation drained", generation=1, timeout=SLOW)
                assert not any(process_running(pid) for pid in old)
                eventually(lambda: len(prober.pids) >= seen + 40, timeout=SLOW)
        finally:
            release.touch()

        assert server.find("worker stopped", worker_pid=holder, how="exit code 0")
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert not server.find("worker died; restarting it")

    assert old <= set(prober.pids)
    assert new & set(prober.pids[seen:])
    assert not suite.problems
    assert len(suite.results) >= 2  # back to back, from before the SIGHUP to the end
    for result in suite.results:
        assert result["connect_failures"] == 0  # never refused
        assert result["unfinished"] == 0
        assert result["checked"] > 0  # served throughout: every round got its replies
    errors = sum(result["errors"] for result in suite.results)
    samples = [sample for result in suite.results for sample in result["error_samples"]]
    # A connection accepted just before its worker drains is still served: the servers give
    # a connection that has sent nothing yet FIRST_REQUEST_GRACE to send its request.
    assert errors == 0, samples
    assert prober.failures == []


APP = """\
import os
import time

from cli_helpers import LineProbeHandler

# While this file exists, importing waits (a reload that takes its time).
_HOLD = {hold!r}
_deadline = time.monotonic() + 60
while os.path.exists(_HOLD) and time.monotonic() < _deadline:
    time.sleep(0.05)


class App(LineProbeHandler):
    async def respond(self, request, client):
        if request == b"version":
            return {version!r}
        return await super().respond(request, client)
"""


def replace(path: Path, text: str) -> None:
    """Write ``path`` in one step (a new file, then a rename), as a deployment would."""
    scratch = path.with_name(path.name + ".new")
    scratch.write_text(text)
    os.replace(scratch, path)


def test_a_failed_reload_keeps_the_old_workers_and_a_later_one_applies(tmp_path: Path) -> None:
    app = tmp_path / "restart_app.py"
    config = tmp_path / "server.toml"
    hold = tmp_path / "hold"
    replace(app, APP.format(hold=str(hold), version=b"1"))
    replace(config, "shutdown_timeout = 5\n")
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(HERE), str(ROOT)]),
        PYTHONDONTWRITEBYTECODE="1",  # each import reads the source as it is now
    )
    args = ["restart_app:App", "--protocol", "bytes", "--framing", "crlf", "--tcp", LOCAL]
    args += ["--workers", "2", "--config", str(config)]
    with serving(*args, env=env, ready="all workers ready") as server:
        address = server.addresses()[0]
        old = generation_pids(server, 1)
        assert ask(address, b"version") == b"1"

        # An invalid config file: no worker is started.
        replace(config, "shutdown_timeout = 'soon'\n")
        server.send_signal(signal.SIGHUP)
        failed = server.wait_for(FAILED_RELOAD, timeout=SLOW)
        assert "shutdown_timeout" in failed["reason"]
        assert not server.find("worker started", generation=2)
        replace(config, "shutdown_timeout = 5\n")

        # A broken deployment: the new workers cannot import the application.
        replace(app, "class App(:\n")
        server.send_signal(signal.SIGHUP)
        failed = server.wait_for(FAILED_RELOAD, count=2, timeout=SLOW)
        assert failed["reason"] == "a new worker failed at start-up"
        assert failed["how"] == "exit code 3"
        assert len(server.find("worker started", generation=2)) == 1  # the others never started
        assert not server.find("new generation ready")
        assert live_workers(server) == old
        for _ in range(5):
            assert ask(address, b"version") == b"1"

        # Fixed, with a new setting: held while it starts, so that a second SIGHUP comes
        # during the reload (queued: a reload follows it).
        hold.touch()
        replace(app, APP.format(hold=str(hold), version=b"2 (fixed)"))
        replace(config, "shutdown_timeout = 7\n")
        server.send_signal(signal.SIGHUP)
        server.wait_for("reload requested", generation=3)
        server.send_signal(signal.SIGHUP)
        server.wait_for("reload in progress; another one will follow it")
        assert ask(address, b"version") == b"1"
        hold.unlink()
        server.wait_for("new generation ready", generation=3, timeout=SLOW)
        server.wait_for("reload requested", generation=4)
        server.wait_for("new generation ready", generation=4, timeout=SLOW)
        server.wait_for("old generation drained", generation=1, timeout=SLOW)
        server.wait_for("old generation drained", generation=3, timeout=SLOW)
        latest = generation_pids(server, 4)
        eventually(lambda: live_workers(server) == latest, timeout=SLOW)
        for _ in range(5):
            assert ask(address, b"version") == b"2 (fixed)"

        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    for pid in latest:  # the config file was read again: the new workers drain for 7 s
        assert server.find("stopping: finishing requests in progress", pid=pid, grace=7.0)


def test_sigttin_adds_a_worker_and_sigttou_removes_one() -> None:
    pids: set[int] = set()
    with (
        reaped(pids),
        serving(*LINE_PROBE, "--tcp", LOCAL, "--workers", "2", ready="all workers ready") as server,
    ):
        address = server.addresses()[0]
        first = live_workers(server)
        pids |= first
        assert len(first) == 2

        server.send_signal(signal.SIGTTIN)
        server.wait_for("adding a worker", workers=3)
        added = server.wait_for("worker ready", count=3, timeout=SLOW)
        assert added["worker"] == 3
        eventually(lambda: len(live_workers(server)) == 3, timeout=SLOW)
        pids |= live_workers(server)

        # A crash is made good up to the new number.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        server.wait_for("worker died; restarting it", worker_pid=victim)
        eventually(lambda: len(live_workers(server)) == 3, timeout=SLOW)
        pids |= live_workers(server)

        # SIGTTOU stops the newest worker (gracefully), which is not restarted.
        newest = server.find("worker started")[-1]["worker_pid"]
        server.send_signal(signal.SIGTTOU)
        server.wait_for("removing a worker", workers=2)
        server.wait_for("worker stopped", worker_pid=newest, how="exit code 0", timeout=SLOW)
        eventually(lambda: len(live_workers(server)) == 2, timeout=SLOW)
        assert newest not in live_workers(server)

        server.send_signal(signal.SIGTTOU)
        server.wait_for("removing a worker", workers=1)
        eventually(lambda: len(live_workers(server)) == 1, timeout=SLOW)
        server.send_signal(signal.SIGTTOU)
        server.wait_for("not removing the last worker", workers=1)
        (last,) = live_workers(server)
        assert int(ask(address, b"pid")) == last
        assert len(server.find("worker started")) == 4  # nothing restarted a removed one

        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
