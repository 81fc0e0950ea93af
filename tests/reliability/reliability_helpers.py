"""Helpers of the reliability suite: a server in a subprocess, what it costs, hostile clients.

`ServerProcess` runs ``reliability_server.py`` (see its docstring for the spec) on one loop and
reads what the server alone costs from ``/proc``: resident memory (`rss`, and the peak since
`reset_peak`), open descriptors (`fds`) and CPU seconds (`cpu`). Its stderr is read by a thread
into timestamped lines (`lines`, `records` for JSON logs), or left unread on purpose
(``output="unread"``). `stop` sends SIGTERM and waits; `close` (always called by the fixture)
kills what still runs, reaps it and joins the reader, so no process or thread outlives a test.

Client helpers are blocking socket code with deadlines: every wait polls a condition until a
deadline (`wait_until`); nothing sleeps a fixed time for something it can wait for.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SERVER_PROGRAM = HERE / "reliability_server.py"

LOOPS = ("asyncio", "uvloop", "trio")
#: A server process must be ready within this long.
START_TIMEOUT = 20.0
#: Blocking client operations give up after this long (a hung test fails, fast).
CLIENT_TIMEOUT = 10.0
MIB = 1024 * 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def over_loops(argname: str = "loop", /, **xfails: str) -> pytest.MarkDecorator:
    """Parametrize ``argname`` over asyncio, uvloop and trio; strict xfail where a reason is given.

    ``over_loops(asyncio="what is wrong")`` marks the asyncio case only; ``all=...`` marks every
    loop that has no reason of its own. The reason reads "issue 12: <what is wrong>". In-process
    async tests parametrize ``backend_name`` (the loop fixture of tests/conftest.py) instead.
    """
    params = []
    for name in LOOPS:
        reason = xfails.get(name, xfails.get("all"))
        marks = [pytest.mark.xfail(reason=f"issue 12: {reason}", strict=True)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return pytest.mark.parametrize(argname, params)


def wait_until(
    check: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.02
) -> Any:
    """Poll ``check()`` until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(interval)


def child_env(**extra: str) -> dict[str, str]:
    """This environment without SERVER_FRAMEWORK_*, with this directory and the root first on
    the import path."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SERVER_FRAMEWORK_")
    }
    inherited = os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), *([inherited] if inherited else [])])
    env.update(extra)
    return env


class ServerProcess:
    """One server program in a subprocess (see the module docstring).

    Args:
        command: The command line.
        workdir: A private directory (events file, port file).
        output: ``"read"``: stderr read into `lines` by a thread (stdout too, into
            `stdout_lines`); ``"unread"``: both are pipes that nobody reads.
        env: Extra environment variables.
    """

    def __init__(
        self,
        command: list[str],
        workdir: Path,
        *,
        output: Literal["read", "unread"] = "read",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.events_path = workdir / "events"
        self.port_path = workdir / "ports"
        self.lines: list[tuple[float, str]] = []  # (monotonic time read, stderr line)
        self.stdout_lines: list[str] = []
        self._lock = threading.Lock()
        self._terminated = False
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(RELIABILITY_EVENTS=str(self.events_path), **(env or {})),
            cwd=ROOT,
        )
        self._readers: list[threading.Thread] = []
        if output == "read":
            assert self.process.stdout is not None
            assert self.process.stderr is not None
            self._readers = [
                threading.Thread(target=self._read, args=(self.process.stderr, True)),
                threading.Thread(target=self._read, args=(self.process.stdout, False)),
            ]
            for reader in self._readers:
                reader.start()

    # -- output -----------------------------------------------------------------------------

    def _read(self, pipe: IO[bytes], is_stderr: bool) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                if is_stderr:
                    self.lines.append((time.monotonic(), line))
                else:
                    self.stdout_lines.append(line)

    def stderr_text(self) -> list[str]:
        """The stderr lines read so far."""
        with self._lock:
            return [line for _, line in self.lines]

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records among the stderr lines read so far."""
        found = []
        for line in self.stderr_text():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def events(self) -> list[str]:
        """The marks noted by the program and its handlers so far."""
        try:
            return self.events_path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def wait_event(self, prefix: str, timeout: float = CLIENT_TIMEOUT, count: int = 1) -> str:
        """Wait until ``count`` noted marks start with ``prefix``; return the last of them."""

        def found() -> str | None:
            matches = [event for event in self.events() if event.startswith(prefix)]
            if len(matches) >= count:
                return matches[count - 1]
            if self.process.poll() is not None:
                raise AssertionError(f"exited before {prefix!r}:\n{self.output()}")
            return None

        result: str = wait_until(found, timeout, f"server event {prefix!r}")
        return result

    def output(self) -> str:
        """What the process wrote so far (for failure messages)."""
        return "\n".join(["--- stderr", *self.stderr_text()[-40:], "--- events", *self.events()])

    # -- /proc ------------------------------------------------------------------------------

    def _status(self, key: str) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(f"no {key} in /proc/{self.process.pid}/status")

    def rss(self) -> int:
        """Resident memory now, in bytes."""
        return self._status("VmRSS")

    def peak(self) -> int:
        """Peak resident memory since start or the last `reset_peak`, in bytes."""
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        """Reset the kernel's peak RSS mark (VmHWM) to the current RSS."""
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as clear:
            clear.write("5")

    def fds(self) -> int:
        """Open descriptors of the server process."""
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def cpu(self) -> float:
        """CPU seconds (user + system) used by the server process so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 15.0, busy: float = 0.03) -> None:
        """Wait until the server used less than ``busy`` CPU seconds during ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            before = self.cpu()
            time.sleep(quiet)
            if self.cpu() - before < busy:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the server stayed busy for {timeout} s")

    def settled_fds(self, quiet: float = 0.2, timeout: float = 5.0) -> int:
        """The descriptor count, once it has not changed for ``quiet`` seconds (connections
        closed a moment ago are gone from it)."""
        deadline = time.monotonic() + timeout
        count, since = self.fds(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.fds()
            if now != count:
                count, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return count
        raise AssertionError(f"the server's descriptor count kept changing for {timeout} s")

    def wait_fds(self, expected: int, timeout: float = 5.0, what: str = "descriptors") -> None:
        """Wait until the server holds at most ``expected`` descriptors."""
        wait_until(
            lambda: self.fds() <= expected,
            timeout,
            f"{what}: server descriptors back to {expected} (now {self.fds()})",
        )

    # -- life -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    def ports(self) -> list[int]:
        """The bound ports (0 for Unix sockets), once the server is ready."""
        self.wait_event("ready", START_TIMEOUT)
        return [int(port) for port in self.port_path.read_text().split()]

    def address(self, index: int = 0) -> tuple[str, int]:
        return ("127.0.0.1", self.ports()[index])

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM, once (a second one could arrive after the loop stopped handling it)."""
        if not self._terminated and self.process.poll() is None:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (unless sent already), then wait for the exit (kill after ``timeout``);
        return the exit code."""
        self.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(CLIENT_TIMEOUT)
            raise AssertionError(
                f"still running {timeout} s after SIGTERM:\n{self.output()}"
            ) from None

    def close(self) -> None:
        """Kill the process if it still runs, reap it, join the readers, close the pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(CLIENT_TIMEOUT)
        for reader in self._readers:
            reader.join(CLIENT_TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class Servers:
    """Starts server processes for a test and closes every one of them afterwards."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._started: list[ServerProcess] = []

    def start(
        self,
        loop: str,
        *servers: dict[str, Any],
        logging: str = "json",
        rlimit_nofile: int | None = None,
        output: Literal["read", "unread"] = "read",
        wait: bool = True,
    ) -> ServerProcess:
        """Start the program with ``servers`` (specs, see reliability_server) on ``loop``."""
        workdir = self._workdir / f"server{len(self._started)}"
        workdir.mkdir()
        spec = {
            "backend": loop,
            "logging": logging,
            "rlimit_nofile": rlimit_nofile,
            "port_file": str(workdir / "ports"),
            "servers": list(servers),
        }
        command = [sys.executable, str(SERVER_PROGRAM), json.dumps(spec)]
        process = ServerProcess(command, workdir, output=output)
        self._started.append(process)
        if wait:
            process.ports()
        return process

    def command(self, command: list[str], *, env: dict[str, str] | None = None) -> ServerProcess:
        """Run another command (e.g. the CLI) as a managed process."""
        workdir = self._workdir / f"server{len(self._started)}"
        workdir.mkdir()
        process = ServerProcess(command, workdir, env=env)
        self._started.append(process)
        return process

    def close(self) -> None:
        for process in self._started:
            process.close()


def cli_command(*args: str) -> list[str]:
    """``python -m server_framework serve ARGS --log-format json``."""
    return [sys.executable, "-m", "server_framework", "serve", *args, "--log-format", "json"]


def cli_address(process: ServerProcess) -> tuple[str, int]:
    """The TCP address a CLI server listens on, from its JSON "listening" log record."""

    def listening() -> dict[str, Any] | None:
        found = next((r for r in process.records() if r.get("event") == "listening"), None)
        if found is None and not process.alive():
            code = process.process.returncode
            raise AssertionError(f"the CLI exited ({code}):\n{process.output()}")
        return found

    record: dict[str, Any] = wait_until(listening, START_TIMEOUT, "the CLI's 'listening' record")
    for listener in record["listeners"]:
        kind, _, rest = listener.partition(" ")
        if kind == "tcp":
            host, _, port = rest.split(" (")[0].rpartition(":")
            return host.strip("[]"), int(port)
    raise AssertionError(f"no TCP listener in {record}")


def server_spec(handler: str = "Echo", **fields: Any) -> dict[str, Any]:
    """One server's spec: ``server_spec("KiloReply", options={...}, protocol=...)``."""
    return {"transport": "tcp", "handler": handler, **fields}


# -- clients -------------------------------------------------------------------------------------


def connect(address: Any, timeout: float = CLIENT_TIMEOUT) -> socket.socket:
    """A blocking client socket connected to ``address`` (``(host, port)`` or a Unix path)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        return sock
    return socket.create_connection(address, timeout=timeout)


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def recv_line(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """The next line (without its newline) from ``sock``, or None at EOF or reset."""
    while b"\n" not in buffer:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buffer += chunk
    index = buffer.index(b"\n")
    result = bytes(buffer[:index])
    del buffer[: index + 1]
    return result


def exchange(address: Any, message: Any, timeout: float = CLIENT_TIMEOUT) -> Any:
    """Connect, send one JSON line, return the decoded reply line (AssertionError on EOF)."""
    with contextlib.closing(connect(address, timeout)) as sock:
        sock.sendall(line(message))
        reply = recv_line(sock, bytearray())
    assert reply is not None, f"no reply to {message!r}: the server closed the connection"
    return json.loads(reply)


def closed_by_peer(sock: socket.socket) -> bool:
    """True if the server closed (or reset) ``sock``; reads and drops whatever is pending."""
    while True:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            chunk = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not chunk:
            return True


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Wait until the server closes ``sock`` (reading what comes); return how long it took."""
    start = time.monotonic()
    wait_until(lambda: closed_by_peer(sock), timeout, "connection closed by the server", 0.01)
    return time.monotonic() - start


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def many(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """Close every socket of ``sockets`` (which the block may extend) on exit."""
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def non_blocking_send(sock: socket.socket, data: bytes, duration: float) -> int:
    """Send as much of ``data`` as the peer takes within ``duration`` s; return bytes sent
    (stops early if the peer closes or resets the connection)."""
    sent = 0
    deadline = time.monotonic() + duration
    view = memoryview(data)
    while sent < len(data) and time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], 0.05)
        if not writable:
            continue
        try:
            sent += sock.send(view[sent:], socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    return sent
