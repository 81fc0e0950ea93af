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
  A worker that exits before it is ready stops everything (except in a reload: see SIGHUP):
  the parent exits 3 (2 if the worker reported a usage error), rather than restarting a worker
  that can never start. A worker must be ready within ``--start-timeout`` seconds (60) of its
  start; one that is not (a hung import or ``service_init``) is killed (it serves nothing)
  and counts as having failed at start-up.
- A worker that dies after it was ready is restarted at once and the event logged; so is a
  replacement (or a worker SIGTTIN added) that fails at start-up while the generation serves.
  More than ``max(5, N)`` deaths within 10 seconds means something is wrong with every worker:
  the parent stops them all and exits 3.
- SIGTERM or SIGINT to the parent: it sends SIGTERM to every worker, each drains (stops
  accepting, finishes requests within ``--shutdown-timeout``, cancels the rest), and the parent
  exits 0 once all exited cleanly (1 otherwise). Workers ignore SIGINT, so Ctrl-C in a
  terminal (which signals the whole process group) is handled once, by the parent. A second
  SIGINT kills the workers and the parent exits 130. A worker still running
  ``--shutdown-timeout`` + 5 seconds after the stop is killed.
- A worker whose parent disappears (even by SIGKILL) notices (a pipe from the parent reaches
  end-of-file) and drains and exits like on SIGTERM: no orphan keeps serving.
- SIGHUP to the parent: a zero-downtime reload. It reads the config file again (the listeners,
  ``reuse_port`` and ``workers`` keep their values: the sockets stay as bound) and starts a new
  *generation* of workers, fresh interpreters that import TARGET afresh, on the same sockets
  (worker 1 first, then the others). Once every new worker serves, each old one gets SIGTERM and
  drains as on a stop (killed ``--shutdown-timeout`` + 5 seconds later); it is not restarted if
  it exits. Without ``--reuse-port`` all of them wait on one listening socket, whose kernel queue
  outlives any worker: a client connecting meanwhile is accepted by an old worker before it
  stops, or by a new one, never refused. If a new worker fails at start-up (TARGET no longer
  imports, the config file is invalid...) or is not ready within ``--start-timeout``, the
  reload is abandoned: the new workers are stopped, the old ones keep serving, an error is
  logged. A SIGHUP during a reload is queued: one more reload follows it (so that code
  deployed meanwhile is not missed). One line per phase:
  ``reload requested``, ``new generation ready``, ``old generation drained``.
- SIGTTIN adds a worker, SIGTTOU removes one (SIGTERM to the newest: it drains), never the last;
  restarts after a crash keep the new number. A worker that exits after the parent sent it
  SIGTERM is never restarted.
- ``--metrics HOST:PORT``: the parent serves the endpoint, summing its workers' metrics; each
  worker answers through a socket pair it inherits (see :mod:`server_framework.cli.metrics`).
  ``/ready`` is 200 once the first generation serves, through reloads, until a stop begins.

Caveats: without ``--reuse-port``, datagrams from one UDP peer may reach different workers, each
with its own per-peer handler state. With ``--reuse-port``, each worker has its own TCP queue: a
connection still queued on an old worker's socket when it closes is reset (unless the kernel
migrates it: Linux's ``net.ipv4.tcp_migrate_req``), so a reload is not free of refusals there.
A stream connection that an old worker accepted but whose request has not arrived when it
starts draining is closed (as on any stop).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
from server_framework.cli.metrics import MetricsHub
from server_framework.cli.settings import LISTENER_FIELDS, ConfigError, Settings
from server_framework.log import resolve_format

__all__ = [
    "CRASH_WINDOW",
    "FIXED_FIELDS",
    "STOP_MARGIN",
    "Supervisor",
    "WorkerSpec",
    "describe_exit",
    "notify_ready",
    "reread_settings",
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
#: Settings that a reload (SIGHUP, or ``--reload``'s restart) keeps from the start: the sockets
#: are bound once, by the parent (the ``--metrics`` endpoint too); the number of workers changes
#: with SIGTTIN and SIGTTOU.
FIXED_FIELDS: Final = (
    *LISTENER_FIELDS,
    "reuse_port",
    "workers",
    "reload",
    "reload_dir",
    "metrics",
)

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
        metrics_fd: The worker's end of its metrics channel to the parent (``--metrics`` with
            ``--workers``; see :class:`~server_framework.cli.metrics.WorkerChannel`), or None.
    """

    index: int
    settings: Settings
    fds: tuple[int, ...]
    bind_inet: bool
    ready_fd: int
    parent_fd: int
    metrics_fd: int | None = None


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
    fds = (*spec.fds, spec.ready_fd, spec.parent_fd)
    if spec.metrics_fd is not None:
        fds += (spec.metrics_fd,)
    return subprocess.Popen(
        [sys.executable, *python_flags, "-c", _WORKER_CODE, msgspec.json.encode(spec).decode()],
        pass_fds=fds,
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


@dataclass(slots=True, eq=False)
class _Generation:
    """The workers started together, with the same settings: at start-up, then per reload."""

    number: int
    settings: Settings
    size: int = 0  # how many were started: set once its first worker is ready (0 before)
    retired: bool = False  # a newer generation replaced it: its workers drain


@dataclass(slots=True, eq=False)
class _Worker:
    index: int
    generation: _Generation
    process: subprocess.Popen[bytes]
    ready_fd: int | None  # read end of its ready pipe, until it reports or exits
    serial: int  # order of start: SIGTTOU removes the newest
    ready: bool = False
    started_at: float = field(default_factory=time.monotonic)
    kill_at: float | None = None  # set when it was sent SIGTERM: SIGKILL then
    killed: bool = False

    @property
    def stopping(self) -> bool:
        """We sent it SIGTERM: it drains, and is not restarted when it exits."""
        return self.kill_at is not None


def reread_settings(
    origin: Settings, reread: Callable[[], Settings], fixed: Sequence[str] = FIXED_FIELDS
) -> tuple[Settings, list[str]]:
    """The settings read again by ``reread``, with the ``fixed`` fields kept from ``origin``.

    Returns:
        The settings, and the names of the ``fixed`` fields whose new reading differs (for a
        warning: their change needs a new start).

    Raises:
        ConfigError: ``reread`` found an invalid setting.
    """
    settings = reread()
    changed = [name for name in fixed if getattr(settings, name) != getattr(origin, name)]
    kept = {name: getattr(origin, name) for name in fixed}
    return msgspec.structs.replace(settings, **kept), changed


class Supervisor:
    """The parent process of ``--workers N``: start, watch, restart, reload and stop the workers.

    It runs in the main thread, without an event loop: a ``selectors`` loop over the workers'
    ready pipes and a wake-up socket that signal handlers write to (``signal.set_wakeup_fd``).
    Exits of workers are noticed through SIGCHLD (with a one-second poll as a safety net).

    The workers belong to *generations*: the first one, then one per reload (SIGHUP). At most
    two are live and serving: the current one, and the one a reload is starting (pending);
    older ones only drain.

    Args:
        settings: The settings the workers get (ports resolved, log format resolved).
        fds: The listening sockets the parent bound or inherited; passed to every worker.
        bind_inet: Workers bind their own TCP/UDP sockets (``--reuse-port``).
        reread: Reads the settings again for a reload (the config file may have changed); may
            raise :class:`~server_framework.cli.settings.ConfigError`. None: a reload keeps
            ``settings`` (and still imports TARGET afresh).
        metrics: Gives every worker a metrics channel, and is told when workers exit and
            whether they are ready (``--metrics``); None: no metrics.
    """

    def __init__(
        self,
        settings: Settings,
        fds: Sequence[int],
        *,
        bind_inet: bool,
        reread: Callable[[], Settings] | None = None,
        metrics: MetricsHub | None = None,
    ) -> None:
        self._origin = settings
        self._metrics = metrics
        self._fds = tuple(fds)
        self._bind_inet = bind_inet
        self._reread = reread
        self._count = settings.workers  # the target: SIGTTIN and SIGTTOU change it
        self._workers: dict[int, _Worker] = {}  # by pid
        self._crashes: deque[float] = deque()
        self._selector = selectors.DefaultSelector()
        self._current: _Generation | None = None  # serving; None until the first is ready
        self._pending: _Generation | None = None  # starting (at start-up, or a reload)
        self._generations = 0
        self._serial = 0
        self._reload_queued = False
        self._stopping = False
        self._forced = False
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
        signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
        with signal_wakeup(signums) as wakeup:
            self._selector.register(wakeup, selectors.EVENT_READ)
            self._parent_r, self._parent_w = os.pipe()
            try:
                logger.info("starting workers", workers=self._count, pid=os.getpid())
                self._pending = self._new_generation(self._origin)
                self._spawn(self._pending, 1)
                while self._workers:
                    self._wait(wakeup)
                    self._reap()
                    self._check_deadlines()
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
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.kill_at is not None and not worker.killed:
                timeout = max(0.0, min(timeout, worker.kill_at - now))
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
        if self._stopping:
            if signum == signal.SIGINT and not self._forced:
                logger.warning("second SIGINT: killing the workers")
                self._forced = True
                self._exit_code = EXIT_FORCED
                for worker in self._workers.values():
                    worker.process.kill()
            else:
                logger.info("already stopping", signal=name)
        elif signum == signal.SIGHUP:
            self._reload()
        elif signum in (signal.SIGTTIN, signal.SIGTTOU):
            self._resize(1 if signum == signal.SIGTTIN else -1)
        else:
            logger.info("stopping workers", signal=name, grace=self._origin.shutdown_timeout)
            self._stop()

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
        generation = worker.generation
        logger.info(
            "worker ready",
            worker=worker.index,
            worker_pid=worker.process.pid,
            generation=generation.number,
        )
        if worker.stopping or generation is not self._pending:
            return  # told to stop while it started (it stops once it serves); or a restart
        if generation.size == 0:  # the first one: the application loads, start the others
            generation.size = self._count
            for index in range(2, generation.size + 1):
                self._spawn(generation, index)
        self._promote()

    def _reap(self) -> None:
        for pid, worker in list(self._workers.items()):
            returncode = worker.process.poll()
            if returncode is None:
                continue
            del self._workers[pid]
            self._close_ready_pipe(worker)
            if self._metrics is not None:
                self._metrics.remove(pid)
            self._on_exit(worker, returncode)

    def _on_exit(self, worker: _Worker, returncode: int) -> None:
        how = describe_exit(returncode)
        generation = worker.generation
        fields = self._fields(worker)
        # Killed by our SIGTERM before it could handle it (still starting): stopped as asked.
        clean = returncode in (0, -signal.SIGTERM)
        if self._stopping:
            logger.info("worker stopped", how=how, **fields)
            if not clean and self._exit_code == EXIT_OK:
                self._exit_code = EXIT_FAILURE
        elif worker.stopping:  # of an old generation, removed by SIGTTOU, or of a failed reload
            if clean:
                logger.info("worker stopped", how=how, **fields)
            else:
                logger.warning("worker did not stop cleanly", how=how, **fields)
            if generation.retired and not self._members(generation, stopping=True):
                logger.info("old generation drained", generation=generation.number)
        elif not worker.ready:
            self._failed_start(worker, how, EXIT_USAGE if returncode == EXIT_USAGE else None)
        else:
            self._restart(worker, how)

    def _failed_start(self, worker: _Worker, how: str, exit_code: int | None = None) -> None:
        """``worker`` exited, or was too slow, before it was ready."""
        generation = worker.generation
        fields = self._fields(worker)
        if generation is self._current:
            # The replacement of a worker that died (or one SIGTTIN added) while the others
            # serve: restarted, within the crash limit.
            self._restart(worker, how)
        elif generation is self._pending and self._current is not None:
            self._abandon_reload(how, **fields)
        else:
            logger.error("worker failed at start-up; stopping", how=how, **fields)
            self._exit_code = exit_code if exit_code is not None else EXIT_STARTUP
            self._stop()

    def _restart(self, worker: _Worker, how: str) -> None:
        """Start ``worker``'s replacement, unless workers keep dying (then stop)."""
        fields = self._fields(worker)
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes[0] < now - CRASH_WINDOW:
            self._crashes.popleft()
        if len(self._crashes) > max(5, self._count):
            logger.error(
                "workers keep dying; stopping",
                deaths=len(self._crashes),
                window=CRASH_WINDOW,
                how=how,
                **fields,
            )
            self._exit_code = EXIT_STARTUP
            self._stop()
            return
        if worker.ready:
            logger.warning("worker died; restarting it", how=how, **fields)
        else:
            logger.warning(
                "worker failed at start-up; the others serve: restarting it", how=how, **fields
            )
        self._spawn(worker.generation, worker.index)

    @staticmethod
    def _fields(worker: _Worker) -> dict[str, Any]:
        return {
            "worker": worker.index,
            "worker_pid": worker.process.pid,
            "generation": worker.generation.number,
        }

    def _check_deadlines(self) -> None:
        if self._forced:
            return
        now = time.monotonic()
        if not self._stopping:
            for worker in list(self._workers.values()):
                timeout = worker.generation.settings.start_timeout
                if worker.ready or worker.stopping or now - worker.started_at <= timeout:
                    continue
                # Hung at start-up (an import, a database that never answers): killed (it
                # serves nothing: nothing to drain), and handled as a worker that failed to
                # start.
                worker.kill_at = now
                worker.killed = True
                worker.process.kill()
                self._failed_start(worker, f"not ready within {timeout:g} s")
        late = [
            worker
            for worker in self._workers.values()
            if worker.kill_at is not None and not worker.killed and now >= worker.kill_at
        ]
        if not late:
            return
        if self._stopping:
            logger.error(
                "workers still running after the grace period; killing them",
                workers=[worker.process.pid for worker in late],
            )
            if self._exit_code == EXIT_OK:
                self._exit_code = EXIT_FAILURE
        for worker in late:
            if not self._stopping:
                logger.warning(
                    "worker still running after the grace period; killing it",
                    worker=worker.index,
                    worker_pid=worker.process.pid,
                    generation=worker.generation.number,
                )
            worker.killed = True
            worker.process.kill()

    # -- reloads and resizes ------------------------------------------------------------------

    def _reload(self) -> None:
        """SIGHUP: start a new generation (it replaces the current one once it all serves)."""
        if self._pending is not None:
            if self._reload_queued:
                logger.info("reload already queued", generation=self._pending.number)
            else:
                self._reload_queued = True
                logger.info("reload in progress; another one will follow it")
            return
        logger.info("reload requested", generation=self._generations + 1, workers=self._count)
        settings = self._origin
        if self._reread is not None:
            try:
                settings, changed = reread_settings(self._origin, self._reread)
            except ConfigError as exc:
                logger.error("reload failed; the old workers keep serving", reason=str(exc))
                return
            if changed:
                logger.warning(
                    "these settings apply only at start-up; keeping their values",
                    settings=changed,
                )
            settings = msgspec.structs.replace(
                settings, log_format=resolve_format(settings.log_format, sys.stderr)
            )
        self._pending = self._new_generation(settings)
        self._spawn(self._pending, 1)

    def _promote(self) -> None:
        """Once every worker of the pending generation serves, it becomes the current one."""
        pending = self._pending
        if pending is None or pending.size == 0:
            return
        members = self._members(pending)
        if len(members) < pending.size or not all(worker.ready for worker in members):
            return
        old, self._current, self._pending = self._current, pending, None
        if old is None:
            logger.info("all workers ready", workers=len(members))
            if self._metrics is not None and not self._stopping:
                self._metrics.set_ready(True, "ready")
        else:
            logger.info(
                "new generation ready",
                generation=pending.number,
                workers=len(members),
                draining=old.number,
            )
            old.retired = True
            for worker in self._members(old):
                self._terminate(worker)
            if not self._members(old, stopping=True):
                logger.info("old generation drained", generation=old.number)
        self._resize(0)  # SIGTTIN or SIGTTOU while it started
        self._next_reload()

    def _abandon_reload(self, how: str, **fields: Any) -> None:
        """A worker of the pending generation failed at start-up: stop that generation."""
        pending = self._pending
        assert pending is not None
        self._pending = None
        logger.error(
            "reload failed; the old workers keep serving",
            reason="a new worker failed at start-up",
            how=how,
            **fields,
        )
        for worker in self._members(pending):
            self._terminate(worker)
        self._next_reload()

    def _next_reload(self) -> None:
        if self._reload_queued and not self._stopping:
            self._reload_queued = False
            self._reload()

    def _resize(self, change: int) -> None:
        """SIGTTIN (+1), SIGTTOU (-1): change the number of workers; 0: apply the number.

        The current generation gets workers, or loses its newest (SIGTERM: it drains). While
        a generation starts, it is sized when its first worker is ready, and resized once it
        all serves.
        """
        if change < 0 and self._count <= 1:
            logger.warning("not removing the last worker", workers=self._count)
            return
        if change:
            self._count += change
            event = "adding a worker" if change > 0 else "removing a worker"
            logger.info(event, workers=self._count)
        current = self._current
        if current is None:
            return
        members = sorted(self._members(current), key=lambda worker: worker.serial)
        for worker in members[self._count :]:
            logger.info(
                "stopping a worker",
                worker=worker.index,
                worker_pid=worker.process.pid,
                generation=current.number,
            )
            self._terminate(worker)
        taken = {worker.index for worker in members[: self._count]}
        free = (index for index in itertools.count(1) if index not in taken)
        for _ in range(self._count - len(members)):
            self._spawn(current, next(free))

    # -- actions --------------------------------------------------------------------------------

    def _new_generation(self, settings: Settings) -> _Generation:
        self._generations += 1
        return _Generation(self._generations, settings)

    def _members(self, generation: _Generation, *, stopping: bool = False) -> list[_Worker]:
        """The live workers of ``generation``: those not told to stop (all with ``stopping``)."""
        return [
            worker
            for worker in self._workers.values()
            if worker.generation is generation and (stopping or not worker.stopping)
        ]

    def _spawn(self, generation: _Generation, index: int) -> None:
        ready_r, ready_w = os.pipe()
        channel = self._metrics.channel() if self._metrics is not None else None
        spec = WorkerSpec(
            index=index,
            settings=generation.settings,
            fds=self._fds,
            bind_inet=self._bind_inet,
            ready_fd=ready_w,
            parent_fd=self._parent_r,
            metrics_fd=channel[1].fileno() if channel is not None else None,
        )
        try:
            process = spawn_worker(spec)
        except BaseException:
            os.close(ready_r)
            if channel is not None:
                channel[0].close()
            raise
        finally:
            os.close(ready_w)
            if channel is not None:
                channel[1].close()
        if self._metrics is not None and channel is not None:
            self._metrics.add(process.pid, index, channel[0])
        self._serial += 1
        worker = _Worker(index, generation, process, ready_r, self._serial)
        self._workers[process.pid] = worker
        self._selector.register(ready_r, selectors.EVENT_READ, worker)
        logger.info(
            "worker started", worker=index, worker_pid=process.pid, generation=generation.number
        )

    def _terminate(self, worker: _Worker) -> None:
        """SIGTERM to ``worker`` (once): it drains; SIGKILL if it still runs after the grace."""
        if worker.stopping:
            return
        grace = worker.generation.settings.shutdown_timeout
        worker.kill_at = time.monotonic() + grace + STOP_MARGIN
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)

    def _stop(self) -> None:
        self._stopping = True
        if self._metrics is not None:
            self._metrics.set_ready(False, "draining")
        self._reload_queued = False
        for worker in self._workers.values():
            self._terminate(worker)

    def _close_ready_pipe(self, worker: _Worker) -> None:
        if worker.ready_fd is not None:
            self._selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None


def _note_signal(signum: int, frame: object) -> None:
    """Signal handler of the parent: nothing to do, ``set_wakeup_fd`` passes the signal on."""
