"""Worker processes: ``serve --workers N`` runs N processes on the same listeners.

One Python process serves on one core; this is how a server uses a machine's cores.

How it works:

- The parent binds every listener first (so a bind error is a start-up failure, exit 3, before
  any worker exists) and reads systemd's ``LISTEN_FDS`` before starting any process. It never
  accepts a connection itself.
- Workers are fresh interpreters (``subprocess``, never ``fork()``: no event loop, thread or
  lock is copied half-way; uvloop is created in the worker). They inherit the listening sockets
  (``pass_fds``) and serve them with ``from_sockets()``. The kernel hands each new connection
  (or datagram) to one of the workers waiting on the socket.
- With ``--reuse-port``, each worker binds its own TCP and UDP sockets with ``SO_REUSEPORT``
  instead, and the kernel spreads clients over them by address hash: a UDP peer always reaches
  the same worker, so per-peer state stays in one place. (The parent still binds once, briefly,
  to check the addresses and to turn port 0 into a real port.) Unix sockets and inherited
  descriptors are always shared.
- Start-up: worker 1 starts first; once it reports ready (it is serving), the others start.
  A worker that exits before it is ready stops everything: the parent exits 3 (2 if the worker
  reported a usage error), rather than restarting a worker that can never start.
- A worker that dies after it was ready is restarted at once and the event logged. More than
  ``max(5, N)`` deaths within 10 seconds means something is wrong with every worker: the
  parent stops them all and exits 3.
- SIGTERM or SIGINT to the parent: it sends SIGTERM to every worker, each drains (stops
  accepting, finishes requests within ``--shutdown-timeout``, cancels the rest), and the parent
  exits 0 once all exited cleanly (1 otherwise). Workers ignore SIGINT, so Ctrl-C in a
  terminal (which signals the whole process group) is handled once, by the parent. A second
  SIGINT kills the workers and the parent exits 130. A worker still running
  ``--shutdown-timeout`` + 5 seconds after the stop is killed.
- A worker whose parent disappears (even by SIGKILL) notices (a pipe from the parent reaches
  end-of-file) and drains and exits like on SIGTERM: no orphan keeps serving.

Caveat: without ``--reuse-port``, datagrams from one UDP peer may reach different workers, each
with its own per-peer handler state.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import structlog

from server_framework.cli.exits import (
    EXIT_FAILURE,
    EXIT_FORCED,
    EXIT_OK,
    EXIT_STARTUP,
    EXIT_USAGE,
)
from server_framework.cli.settings import Settings

__all__ = [
    "CRASH_WINDOW",
    "STOP_MARGIN",
    "Supervisor",
    "WorkerSpec",
    "describe_exit",
    "notify_ready",
    "signal_wakeup",
    "spawn_worker",
    "watch_parent",
]

logger: Final = structlog.get_logger(__name__)

#: Worker deaths are counted over this many seconds; more than ``max(5, workers)`` of them
#: stops the server (a crash loop, not an accident).
CRASH_WINDOW: Final = 10.0
#: Seconds a worker gets beyond ``--shutdown-timeout`` to exit after SIGTERM before SIGKILL
#: (its own drain deadline plus closing the handler's resources).
STOP_MARGIN: Final = 5.0

#: What a worker process runs. A string, not an import: the entry module imports this one.
_WORKER_CODE: Final = (
    "import sys; from server_framework.cli.entry import run_worker; "
    "sys.exit(run_worker(sys.argv[1]))"
)


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the parent tells a worker (JSON, as the worker's command-line argument).

    Attributes:
        index: The worker's slot, 1..N (a restarted worker takes its predecessor's slot); 0
            for the one server process of ``--reload`` (see :mod:`server_framework.cli.reload`).
        settings: The resolved settings (ports already chosen, log format resolved).
        fds: Inherited listening sockets to serve.
        bind_inet: Bind the TCP/UDP listeners of ``settings`` in the worker (``--reuse-port``).
        ready_fd: Write end of a pipe: the worker writes one byte once it serves.
        parent_fd: Read end of a pipe the parent holds open: end-of-file means it is gone.
    """

    index: int
    settings: Settings
    fds: tuple[int, ...]
    bind_inet: bool
    ready_fd: int
    parent_fd: int


def notify_ready(fd: int) -> None:
    """In a worker: tell the parent we serve (write a byte to ``ready_fd``, close it)."""
    try:
        os.write(fd, b"R")
    except OSError:  # the parent is gone; watch_parent deals with it
        pass
    finally:
        os.close(fd)


def watch_parent(fd: int) -> None:
    """In a worker: send ourselves SIGTERM (a graceful drain) when the parent process is gone.

    A daemon thread blocks reading ``fd``, the read end of a pipe whose write end only the
    parent holds; the read returns end-of-file when the parent exits, however it exits.
    """

    def watch() -> None:
        try:
            while os.read(fd, 64):
                pass
        except OSError:
            pass
        logger.warning("the parent process is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def describe_exit(returncode: int) -> str:
    """How a child process ended, for a log line: ``exit code 3``, ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def spawn_worker(spec: WorkerSpec, *, python_flags: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start a worker process: a fresh interpreter running ``run_worker(spec)``
    (:mod:`server_framework.cli.entry`), inheriting the sockets and pipes ``spec`` names.

    Args:
        spec: What the worker serves; its ``ready_fd`` is the write end of the ready pipe (the
            caller closes its own copy once the worker is started).
        python_flags: Options of the worker's interpreter (``-B`` for ``--reload``).
    """
    return subprocess.Popen(
        [sys.executable, *python_flags, "-c", _WORKER_CODE, msgspec.json.encode(spec).decode()],
        pass_fds=(*spec.fds, spec.ready_fd, spec.parent_fd),
    )


@contextlib.contextmanager
def signal_wakeup(signums: Sequence[int]) -> Iterator[socket.socket]:
    """While inside, ``signums`` (and SIGCHLD) wake up a ``selectors`` loop: yield the socket
    to watch, from which each signal arrives as one byte (``signal.set_wakeup_fd``).

    The previous handlers and wake-up descriptor are restored on the way out.
    """
    wakeup_r, wakeup_w = socket.socketpair()
    wakeup_r.setblocking(False)
    wakeup_w.setblocking(False)
    handled = (*signums, signal.SIGCHLD)
    previous = {signum: signal.signal(signum, _note_signal) for signum in handled}
    previous_wakeup = signal.set_wakeup_fd(wakeup_w.fileno(), warn_on_full_buffer=False)
    try:
        yield wakeup_r
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        wakeup_r.close()
        wakeup_w.close()


@dataclass(slots=True)
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready_fd: int | None  # read end of its ready pipe, until it reports or exits
    ready: bool = False


class Supervisor:
    """The parent process of ``--workers N``: start, watch, restart and stop the workers.

    It runs in the main thread, without an event loop: a ``selectors`` loop over the workers'
    ready pipes and a wake-up socket that signal handlers write to (``signal.set_wakeup_fd``).
    Exits of workers are noticed through SIGCHLD (with a one-second poll as a safety net).

    Args:
        settings: The settings the workers get (ports resolved, log format resolved).
        fds: The listening sockets the parent bound or inherited; passed to every worker.
        bind_inet: Workers bind their own TCP/UDP sockets (``--reuse-port``).
    """

    def __init__(self, settings: Settings, fds: Sequence[int], *, bind_inet: bool) -> None:
        self._settings = settings
        self._fds = tuple(fds)
        self._bind_inet = bind_inet
        self._count = settings.workers
        self._crash_limit = max(5, self._count)
        self._workers: dict[int, _Worker] = {}  # by pid
        self._crashes: deque[float] = deque()
        self._selector = selectors.DefaultSelector()
        self._all_started = False
        self._stopping = False
        self._forced = False
        self._deadline: float | None = None
        self._exit_code = EXIT_OK
        self._parent_r = -1
        self._parent_w = -1

    def run(self) -> int:
        """Start the workers and supervise them until they have all exited.

        Returns:
            The exit code for the parent: 0 after a clean stop, 1 if a worker did not stop
            cleanly, 2 or 3 if a worker failed at start-up or workers crashed in a loop, 130
            after a forced stop.
        """
        with signal_wakeup((signal.SIGINT, signal.SIGTERM)) as wakeup:
            self._selector.register(wakeup, selectors.EVENT_READ)
            self._parent_r, self._parent_w = os.pipe()
            try:
                logger.info("starting workers", workers=self._count, pid=os.getpid())
                self._spawn(1)
                while self._workers:
                    self._wait(wakeup)
                    self._reap()
                    self._check_deadline()
                return self._exit_code
            finally:
                for worker in self._workers.values():  # only after an unexpected error
                    worker.process.kill()
                    worker.process.wait()
                self._selector.close()
                os.close(self._parent_r)
                os.close(self._parent_w)

    # -- the loop -----------------------------------------------------------------------------

    def _wait(self, wakeup: socket.socket) -> None:
        timeout = 1.0
        if self._deadline is not None:
            timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
        for key, _events in self._selector.select(timeout):
            if key.fileobj is wakeup:
                with contextlib.suppress(BlockingIOError):
                    for signum in wakeup.recv(64):
                        self._on_signal(signum)
            else:
                self._on_ready_pipe(key.data)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # _reap() runs after every wake-up
        name = signal.Signals(signum).name
        if not self._stopping:
            logger.info("stopping workers", signal=name, grace=self._settings.shutdown_timeout)
            self._stop()
        elif signum == signal.SIGINT and not self._forced:
            logger.warning("second SIGINT: killing the workers")
            self._forced = True
            self._exit_code = EXIT_FORCED
            for worker in self._workers.values():
                worker.process.kill()
        else:
            logger.info("already stopping", signal=name)

    def _on_ready_pipe(self, worker: _Worker) -> None:
        assert worker.ready_fd is not None
        try:
            data = os.read(worker.ready_fd, 16)
        except OSError:
            data = b""
        self._close_ready_pipe(worker)
        if not data:
            return  # it exits before it was ready: _reap() handles it
        worker.ready = True
        logger.info("worker ready", worker=worker.index, worker_pid=worker.process.pid)
        if self._stopping:
            worker.process.send_signal(signal.SIGTERM)  # started while we began to stop
        elif not self._all_started:
            if worker.index == 1:
                for index in range(2, self._count + 1):
                    self._spawn(index)
            if len(self._workers) == self._count and all(w.ready for w in self._workers.values()):
                self._all_started = True
                logger.info("all workers ready", workers=self._count)

    def _reap(self) -> None:
        for pid, worker in list(self._workers.items()):
            returncode = worker.process.poll()
            if returncode is None:
                continue
            del self._workers[pid]
            self._close_ready_pipe(worker)
            self._on_exit(worker, returncode)

    def _on_exit(self, worker: _Worker, returncode: int) -> None:
        how = describe_exit(returncode)
        fields: dict[str, Any] = {"worker": worker.index, "worker_pid": worker.process.pid}
        if self._stopping:
            logger.info("worker stopped", how=how, **fields)
            # Killed by our SIGTERM before it could handle it (still starting): stopped as asked.
            clean = returncode in (0, -signal.SIGTERM)
            if not clean and self._exit_code == EXIT_OK:
                self._exit_code = EXIT_FAILURE
        elif not worker.ready:
            logger.error("worker failed at start-up; stopping", how=how, **fields)
            self._exit_code = EXIT_USAGE if returncode == EXIT_USAGE else EXIT_STARTUP
            self._stop()
        else:
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes[0] < now - CRASH_WINDOW:
                self._crashes.popleft()
            if len(self._crashes) > self._crash_limit:
                logger.error(
                    "workers keep dying; stopping",
                    deaths=len(self._crashes),
                    window=CRASH_WINDOW,
                    how=how,
                    **fields,
                )
                self._exit_code = EXIT_STARTUP
                self._stop()
            else:
                logger.warning("worker died; restarting it", how=how, **fields)
                self._spawn(worker.index)

    def _check_deadline(self) -> None:
        if self._deadline is None or time.monotonic() < self._deadline or self._forced:
            return
        logger.error(
            "workers still running after the grace period; killing them",
            workers=[worker.process.pid for worker in self._workers.values()],
        )
        self._forced = True
        if self._exit_code == EXIT_OK:
            self._exit_code = EXIT_FAILURE
        for worker in self._workers.values():
            worker.process.kill()

    # -- actions --------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        ready_r, ready_w = os.pipe()
        spec = WorkerSpec(
            index=index,
            settings=self._settings,
            fds=self._fds,
            bind_inet=self._bind_inet,
            ready_fd=ready_w,
            parent_fd=self._parent_r,
        )
        try:
            process = spawn_worker(spec)
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        worker = _Worker(index, process, ready_r)
        self._workers[process.pid] = worker
        self._selector.register(ready_r, selectors.EVENT_READ, worker)
        logger.info("worker started", worker=index, worker_pid=process.pid)

    def _stop(self) -> None:
        self._stopping = True
        self._deadline = time.monotonic() + self._settings.shutdown_timeout + STOP_MARGIN
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)

    def _close_ready_pipe(self, worker: _Worker) -> None:
        if worker.ready_fd is not None:
            self._selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None


def _note_signal(signum: int, frame: object) -> None:
    """Signal handler of the parent: nothing to do, ``set_wakeup_fd`` passes the signal on."""
