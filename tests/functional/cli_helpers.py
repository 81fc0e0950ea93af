"""Helpers for the command-line tests: the CLI as a real subprocess, and handlers to serve.

`ServerProcess` runs ``python -m server_framework ...`` with its output read by two threads
(a pipe nobody reads fills up and blocks the server), parses the JSON log lines, and waits for
given events. It is a context manager: leaving it kills the process if it still runs and joins
the reader threads, so no test leaves a process or a thread behind.

The handlers and protocols below are TARGETs for the server processes: the tests put this
directory on their ``PYTHONPATH`` and serve e.g. ``cli_helpers:ProbeHandler``. This module
must stay cheap to import (no pytest).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any

import structlog

from handlers import RequestResponseHandler, StreamRequestHandler
from protocols import LineFramer, StreamProtocol, StringSerializer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Every wait for a server process gives up after this long (a hung test fails, fast enough).
TIMEOUT = 20.0

logger = structlog.get_logger("cli_helpers")


# -- what the server processes serve ----------------------------------------------------------


class ProbeHandler(RequestResponseHandler[Any, Any]):
    """Answers ``{"pid": <serving process>, "request": <the request>}`` (stream and datagram).

    ``{"sleep": s}`` waits ``s`` seconds first (a request in progress, logged as "request
    started"); ``{"block": s}`` blocks the whole event loop for ``s`` seconds (so that another
    worker process has to accept the next connection).
    """

    async def respond(self, request: Any, client: Any) -> Any:
        if isinstance(request, dict):
            if "sleep" in request:
                logger.info("request started", sleep=request["sleep"])
                await client.backend().sleep(request["sleep"])
            if "block" in request:
                time.sleep(request["block"])
        return {"pid": os.getpid(), "request": request}


def create_probe() -> ProbeHandler:
    """A handler factory, for ``cli_helpers:create_probe()``."""
    return ProbeHandler()


async def async_factory() -> ProbeHandler:
    """An asynchronous factory, which TARGET does not accept."""
    return ProbeHandler()


class LineProbeHandler(RequestResponseHandler[bytes, bytes]):
    """For ``--protocol bytes --framing crlf``, the wire format of the suite's load generator
    (``benchmarks.generators.loadgen``, ``--framing line``): echoes every line, but answers
    ``PING`` with ``+PONG``, ``pid`` with the serving process's pid, and ``wait PATH`` with the
    pid once the file ``PATH`` exists (a request in progress, logged as "request started",
    that the test ends when it chooses; it gives up after :data:`TIMEOUT` * 3 seconds).
    """

    async def respond(self, request: bytes, client: Any) -> bytes:
        if request == b"PING":
            return b"+PONG"
        if request == b"pid":
            return str(os.getpid()).encode()
        if request.startswith(b"wait "):
            path = request[5:].decode()
            logger.info("request started", path=path)
            deadline = time.monotonic() + TIMEOUT * 3
            while not os.path.exists(path) and time.monotonic() < deadline:
                await client.backend().sleep(0.02)
            return str(os.getpid()).encode()
        return request


class FailingHandler(StreamRequestHandler[Any, Any]):
    """Fails in ``service_init``, as a handler whose database is down would."""

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        raise RuntimeError("no database")

    async def handle(self, client: Any) -> Any:  # pragma: no cover - never serves
        yield


class FlakyStartHandler(ProbeHandler):
    """A ``ProbeHandler`` whose ``service_init`` fails while the file named by
    ``FLAKY_START_FILE`` holds a count above 0 (each failure takes one off): a database that
    is down for a while."""

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        path = os.environ.get("FLAKY_START_FILE", "")
        with contextlib.suppress(FileNotFoundError):
            with open(path) as file:
                left = int(file.read() or 0)
            if left > 0:
                with open(path, "w") as file:
                    file.write(str(left - 1))
                raise RuntimeError("no database yet")
        await super().service_init(exit_stack, server)


class HangingStartHandler(ProbeHandler):
    """A ``ProbeHandler`` whose ``service_init`` never returns while the file named by
    ``HANG_START_FILE`` says ``hang``: a database that never answers."""

    async def service_init(self, exit_stack: AsyncExitStack, server: Any) -> None:
        path = Path(os.environ.get("HANG_START_FILE", "/nonexistent"))
        if path.is_file() and path.read_text().strip() == "hang":
            await server.backend().sleep_forever()
        await super().service_init(exit_stack, server)


class NoYieldHandler(StreamRequestHandler[Any, Any]):
    """A first handler's classic mistake: ``handle`` with no ``yield`` (a coroutine)."""

    async def handle(self, client: Any) -> Any:  # type: ignore[override]  # pragma: no cover
        await client.send_packet("hello")


NOT_A_HANDLER = 42

#: A ready-made stream protocol, for ``--protocol cli_helpers:CRLF_TEXT``.
CRLF_TEXT = StreamProtocol(StringSerializer(), LineFramer(b"\r\n"))


# -- the server process -----------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without SERVER_FRAMEWORK_* and LISTEN_*, with this directory importable."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SERVER_FRAMEWORK_", "LISTEN_"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    """The command line of ``python -m server_framework ARGS``."""
    return [sys.executable, "-m", "server_framework", *args]


class ServerProcess:
    """A CLI subprocess whose stdout and stderr are read continuously by threads.

    Args:
        command: The command (see :func:`cli`).
        env: Its environment (default: :func:`clean_env`).
        pass_fds: Descriptors it inherits.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        cwd: Path | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env() if env is None else env,
            pass_fds=tuple(pass_fds),
            cwd=ROOT if cwd is None else cwd,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def _read(self, pipe: IO[bytes], lines: list[str]) -> None:
        with pipe:
            for raw in pipe:
                with self._changed:
                    lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    # -- logs ---------------------------------------------------------------------------------

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (other lines are skipped)."""
        with self._changed:
            lines = list(self.stderr)
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The log records of ``event`` that carry ``fields``."""
        return [
            record
            for record in self.logs()
            if record.get("event") == event
            and all(record.get(key) == value for key, value in fields.items())
        ]

    def wait_for(
        self, event: str, *, count: int = 1, timeout: float = TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        """Wait until ``event`` was logged ``count`` times; return the last such record.

        Raises:
            AssertionError: the process exited first, or the timeout passed (with its output).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.find(event, **fields)
                if len(found) >= count:
                    return found[count - 1]
                if self.process.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"exited ({self.process.returncode}) before {event!r}:\n{self.output()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {event!r} within {timeout} s:\n{self.output()}")
                self._changed.wait(min(remaining, 0.1))

    def output(self) -> str:
        """Everything written so far, for failure messages."""
        with self._changed:
            return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.stderr])

    def addresses(self, kind: str = "tcp") -> list[Any]:
        """The addresses of the ``kind`` listeners, from the "listening" log record."""
        listeners = self.wait_for("listening")["listeners"]
        found: list[Any] = []
        for listener in listeners:
            name, _, rest = listener.partition(" ")
            if name != kind:
                continue
            address = rest.split(" (")[0]
            if kind in ("unix", "unix-datagram"):
                found.append(address)
            else:
                host, _, port = address.rpartition(":")
                found.append((host.strip("[]"), int(port)))
        return found

    # -- life ---------------------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        self.process.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to exit and its output to be read; return its exit code."""
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.output()}") from None
        for reader in self._readers:
            reader.join(timeout)
        return returncode

    def close(self) -> None:
        """Kill the process if it still runs (by pid), and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        for reader in self._readers:
            reader.join(TIMEOUT)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> ServerProcess:
    """Run the CLI to completion (for commands that exit by themselves)."""
    with ServerProcess(cli(*args), env=env) as process:
        process.wait(timeout)
    return process


@contextlib.contextmanager
def serving(
    *args: str,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    ready: str = "ready",
) -> Iterator[ServerProcess]:
    """``python -m server_framework serve ARGS --log-format json``, started and ready."""
    with ServerProcess(
        cli("serve", *args, "--log-format", "json"), env=env, pass_fds=pass_fds
    ) as server:
        server.wait_for(ready)
        yield server


def kill_quietly(pid: int) -> None:
    """SIGKILL ``pid`` if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def process_running(pid: int) -> bool:
    """True if ``pid`` runs: exists and is not a zombie (an exited process not yet reaped).

    Uses ``/proc`` where there is one, else only whether the pid exists.
    """
    if not os.path.exists("/proc/self/stat"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def udp_exchange(address: tuple[str, int], payload: bytes, timeout: float = 10.0) -> bytes:
    """Send one datagram to ``address``; return the reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, address)
        return sock.recv(65536)


def eventually(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
