"""``serve --reload``: restart the server when its source changes. For development only.

How it works:

- The parent (the *reloader*) binds every listener once, as the parent of ``--workers`` does,
  and keeps them: the port stays held across restarts, so a client connecting while the
  server restarts waits in the listen queue instead of being refused. The reloader never
  imports TARGET; its one server process does, fresh at every start.
- The server process is a worker process of :mod:`server_framework.cli.workers` (the same
  entry, :func:`~server_framework.cli.entry.run_worker`, the same inherited sockets), with
  ``-B``: it writes no ``.pyc``, so an edit made within the second of the previous one is
  never hidden by a cached byte-code file.
- A thread watches the directories with ``watchfiles`` (an optional dependency: ``pip install
  'server-framework[reload]'``): by default the directory of TARGET's top-level package, or
  of its module if it is not in a package (``--reload-dir DIR``, repeatable, replaces it).
  Only ``*.py`` files count (``watchfiles.PythonFilter``: not ``__pycache__``, ``.git``,
  ``.venv``, editors' temporary files...), and the ``--config`` file if there is one.
- On a change: one log line names the changed files; the server process gets SIGTERM (it
  drains as on any SIGTERM, and is killed if it still runs ``--shutdown-timeout`` + 5 seconds
  later); once it has exited, a new one starts, with the settings read again if there is a
  config file (the listeners, ``reuse_port``, ``workers`` and ``reload*`` keep their values
  from the start: a change there needs a new ``--reload`` run, and is warned about).
- A server process that fails at start-up (a syntax error, exit 3) or dies is logged, and the
  reloader waits for the next change rather than exiting.
- SIGTERM or SIGINT to the reloader: the server process drains and exits, the reloader exits
  0 (1 if the server process did not stop cleanly). The server process ignores SIGINT, so
  Ctrl-C in a terminal is handled once, by the reloader; a second SIGINT kills the server
  process (exit 130). If the reloader is killed, the server process notices and drains.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from server_framework.cli.exits import EXIT_FAILURE, EXIT_FORCED, EXIT_OK, EXIT_STARTUP
from server_framework.cli.settings import ConfigError, Settings
from server_framework.cli.workers import (
    STOP_MARGIN,
    WorkerSpec,
    describe_exit,
    reread_settings,
    signal_wakeup,
    spawn_worker,
)
from server_framework.log import resolve_format

__all__ = [
    "MISSING_WATCHFILES",
    "Reloader",
    "target_directories",
    "watchfiles_installed",
]

logger: Final = structlog.get_logger(__name__)

#: The error line of ``--reload`` without watchfiles (exit 2).
MISSING_WATCHFILES: Final = "--reload needs watchfiles: pip install 'server-framework[reload]'"

#: How long the watcher thread waits in watchfiles before it reports that it watches.
_HEARTBEAT_MS: Final = 200


def watchfiles_installed() -> bool:
    """True if ``watchfiles`` imports."""
    try:
        import watchfiles  # noqa: F401, PLC0415  (optional: only --reload needs it)
    except ImportError:
        return False
    return True


def target_directories(target: str) -> list[str]:
    """The directories ``--reload`` watches by default for TARGET ``MODULE:ATTR``.

    The directory of the top-level package of ``MODULE`` (its directories, for a namespace
    package), or the directory holding ``MODULE``'s file if it is a plain module; the current
    directory if the module cannot be found (so that creating it is noticed). Nothing of
    TARGET is imported (``importlib.util.find_spec`` of the top-level name only).
    """
    top = target.partition(":")[0].partition(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        if spec.submodule_search_locations:
            return [os.path.abspath(path) for path in spec.submodule_search_locations]
        if spec.origin and os.path.isfile(spec.origin):
            return [os.path.dirname(os.path.abspath(spec.origin))]
    return [os.getcwd()]


def _display(path: str) -> str:
    """A path for a log line: relative to the current directory when it is inside it."""
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(os.getcwd()))
    return path


class _Watcher:
    """A thread running ``watchfiles.watch`` and reporting to the reloader's selector loop.

    Reports (in :attr:`events`, each followed by a byte on the wake-up socket):
    ``("watching", None)`` once the directories are watched, ``("changes", paths)`` for each
    batch of changes, ``("failed", message)`` if watching fails.
    """

    def __init__(self, paths: Sequence[str], config_file: str | None) -> None:
        self.paths = list(paths)
        self.config_file = config_file
        if config_file is not None:
            folder = os.path.dirname(config_file)
            if not any(Path(folder).is_relative_to(path) for path in self.paths):
                self.paths.append(folder)
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.wakeup, self._wakeup_w = socket.socketpair()
        self.wakeup.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reload-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.wakeup.close()
        self._wakeup_w.close()

    def _report(self, kind: str, data: Any) -> None:
        self.events.put((kind, data))
        with contextlib.suppress(OSError):
            self._wakeup_w.send(b"!")

    def _run(self) -> None:
        import watchfiles  # noqa: PLC0415  (optional: only --reload needs it)

        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we log the changes ourselves
        python_files = watchfiles.PythonFilter()

        def wanted(change: watchfiles.Change, path: str) -> bool:
            if self.config_file is not None and os.path.abspath(path) == self.config_file:
                return True
            return python_files(change, path)

        watching = False
        try:
            for changes in watchfiles.watch(
                *self.paths,
                watch_filter=wanted,
                stop_event=self._stop,
                rust_timeout=_HEARTBEAT_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                if not watching:
                    watching = True
                    self._report("watching", None)
                if changes:
                    self._report("changes", sorted({path for _change, path in changes}))
        except Exception as exc:  # inotify limits, a directory gone...
            self._report("failed", f"{type(exc).__name__}: {exc}")


@dataclass(slots=True)
class _Child:
    process: subprocess.Popen[bytes]
    ready_fd: int | None  # read end of its ready pipe, until it reports or exits
    ready: bool = False
    terminated: bool = False


class Reloader:
    """The parent process of ``--reload``: run one server process, restart it on changes.

    It runs in the main thread without an event loop, like the
    :class:`~server_framework.cli.workers.Supervisor`: a ``selectors`` loop over the signal
    wake-up socket, the watcher thread's wake-up socket and the server process's ready pipe.

    Args:
        settings: The resolved settings (``reload`` on); the server process gets them with
            ``reload`` off and the log format resolved.
        fds: The listening sockets the reloader bound or inherited; passed to every server
            process.
        paths: The directories to watch (absolute).
        config_file: The TOML config file, watched too; None if there is none.
        reread: Reads the settings again (from the config file) before a restart; may raise
            :class:`~server_framework.cli.settings.ConfigError`.
    """

    def __init__(
        self,
        settings: Settings,
        fds: Sequence[int],
        *,
        paths: Sequence[str],
        config_file: str | None = None,
        reread: Callable[[], Settings] | None = None,
    ) -> None:
        self._origin = settings
        self._fds = tuple(fds)
        self._config_file = os.path.abspath(config_file) if config_file else None
        self._reread = reread
        self._watcher = _Watcher([os.path.abspath(path) for path in paths], self._config_file)
        self._selector = selectors.DefaultSelector()
        self._child: _Child | None = None
        self._started = 0
        self._restart = False
        self._stopping = False
        self._forced = False
        self._deadline: float | None = None
        self._exit_code = EXIT_OK
        self._parent_r = -1
        self._parent_w = -1

    def run(self) -> int:
        """Serve, restarting on changes, until SIGTERM or SIGINT; return the exit code.

        Returns:
            0 after a clean stop, 1 if the server process did not stop cleanly, 3 if the
            directories cannot be watched, 130 after a forced stop.
        """
        with signal_wakeup((signal.SIGINT, signal.SIGTERM)) as wakeup:
            self._selector.register(wakeup, selectors.EVENT_READ, "signal")
            self._selector.register(self._watcher.wakeup, selectors.EVENT_READ, "watcher")
            self._parent_r, self._parent_w = os.pipe()
            try:
                self._watcher.start()
                self._start_child()
                while not (self._stopping and self._child is None):
                    self._wait(wakeup)
                    self._reap()
                    self._check_deadline()
                return self._exit_code
            finally:
                if self._child is not None:  # only after an unexpected error
                    self._child.process.kill()
                    self._child.process.wait()
                self._watcher.close()
                self._selector.close()
                os.close(self._parent_r)
                os.close(self._parent_w)

    # -- the loop -----------------------------------------------------------------------------

    def _wait(self, wakeup: socket.socket) -> None:
        timeout = 1.0
        if self._deadline is not None:
            timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
        for key, _events in self._selector.select(timeout):
            if key.data == "signal":
                with contextlib.suppress(BlockingIOError):
                    for signum in wakeup.recv(64):
                        self._on_signal(signum)
            elif key.data == "watcher":
                with contextlib.suppress(BlockingIOError):
                    self._watcher.wakeup.recv(4096)
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._on_watcher(*self._watcher.events.get_nowait())
            else:
                self._on_ready_pipe(key.data)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # _reap() runs after every wake-up
        name = signal.Signals(signum).name
        if not self._stopping:
            logger.info("stopping", signal=name, grace=self._origin.shutdown_timeout)
            self._stopping = True
            self._restart = False
            self._terminate()
        elif signum == signal.SIGINT and not self._forced:
            logger.warning("second SIGINT: killing the server process")
            self._forced = True
            self._exit_code = EXIT_FORCED
            if self._child is not None:
                self._child.process.kill()
        else:
            logger.info("already stopping", signal=name)

    def _on_watcher(self, kind: str, data: Any) -> None:
        if kind == "watching":
            files = ["*.py"] + ([_display(self._config_file)] if self._config_file else [])
            logger.info("watching for changes", dirs=self._watcher.paths, files=files)
        elif kind == "failed":
            logger.error(f"cannot watch for changes: {data}; stopping")
            if not self._stopping:
                self._exit_code = EXIT_STARTUP
                self._stopping = True
                self._restart = False
                self._terminate()
        elif not self._stopping:
            logger.info("changes detected; restarting", files=[_display(path) for path in data])
            if self._child is None:
                self._start_child()
            else:
                self._restart = True
                self._terminate()

    def _on_ready_pipe(self, child: _Child) -> None:
        assert child.ready_fd is not None
        try:
            data = os.read(child.ready_fd, 16)
        except OSError:
            data = b""
        self._close_ready_pipe(child)
        if data:
            child.ready = True

    def _reap(self) -> None:
        child = self._child
        if child is None:
            return
        returncode = child.process.poll()
        if returncode is None:
            return
        self._child = None
        self._deadline = None
        self._close_ready_pipe(child)
        how = describe_exit(returncode)
        fields = {"server_pid": child.process.pid, "how": how}
        clean = returncode in (0, -signal.SIGTERM)  # SIGTERM before it could handle it
        if self._stopping:
            logger.info("server process stopped", **fields)
            if not clean and self._exit_code == EXIT_OK:
                self._exit_code = EXIT_FAILURE
        elif self._restart:
            if not clean:
                logger.warning("server process did not stop cleanly", **fields)
            self._restart = False
            self._start_child()
        elif not child.ready:
            logger.error("server process failed at start-up; waiting for a change", **fields)
        else:
            logger.error("server process exited; waiting for a change", **fields)

    def _check_deadline(self) -> None:
        if self._deadline is None or time.monotonic() < self._deadline or self._child is None:
            return
        logger.error(
            "server process still running after the grace period; killing it",
            server_pid=self._child.process.pid,
        )
        self._deadline = None
        if self._stopping and self._exit_code == EXIT_OK:
            self._exit_code = EXIT_FAILURE
        self._child.process.kill()

    # -- actions --------------------------------------------------------------------------------

    def _child_settings(self) -> Settings | None:
        """The settings of the next server process; None if they are invalid (logged)."""
        settings = self._origin
        if self._reread is not None and self._started > 0:
            try:
                settings, changed = reread_settings(self._origin, self._reread)
            except ConfigError as exc:
                logger.error(f"{exc}; waiting for a change")
                return None
            if changed:
                logger.warning(
                    "these settings apply only when --reload starts; keeping their first values",
                    settings=changed,
                )
        return msgspec.structs.replace(
            settings,
            reload=False,
            reload_dir=(),
            log_format=resolve_format(settings.log_format, sys.stderr),
        )

    def _start_child(self) -> None:
        settings = self._child_settings()
        if settings is None:
            return
        ready_r, ready_w = os.pipe()
        spec = WorkerSpec(
            index=0,
            settings=settings,
            fds=self._fds,
            bind_inet=False,
            ready_fd=ready_w,
            parent_fd=self._parent_r,
        )
        try:
            process = spawn_worker(spec, python_flags=("-B",))
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        self._started += 1
        self._child = _Child(process, ready_r)
        self._selector.register(ready_r, selectors.EVENT_READ, self._child)
        logger.info("server process started", server_pid=process.pid)

    def _terminate(self) -> None:
        """SIGTERM to the server process (once), and the deadline to kill it."""
        child = self._child
        if child is None or child.terminated:
            return
        child.terminated = True
        self._deadline = time.monotonic() + self._origin.shutdown_timeout + STOP_MARGIN
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)

    def _close_ready_pipe(self, child: _Child) -> None:
        if child.ready_fd is not None:
            self._selector.unregister(child.ready_fd)
            os.close(child.ready_fd)
            child.ready_fd = None
