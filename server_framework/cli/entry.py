"""The entry points: :func:`main` (``server-framework``) and :func:`run_worker` (a worker).

:func:`main` parses the settings (exit 2 on a bad one, ``--print-config`` prints them), sets
up logging, takes the inherited sockets (``--fd``, systemd's ``LISTEN_FDS``), and then either
binds and hands over to the :class:`~server_framework.cli.workers.Supervisor` (``--workers N``,
N > 1), or binds and hands over to the :class:`~server_framework.cli.reload.Reloader`
(``--reload``), or loads the application, binds and serves in this process
(:func:`server_framework.cli.serve.serve`). :func:`run_worker` is the same second half in a
worker process, from the :class:`~server_framework.cli.workers.WorkerSpec` its parent sent.
Both run it through one guard: a start-up failure is one logged line and its exit code
(:mod:`~server_framework.cli.exits`), any other failure a logged traceback and exit 1, and the
listeners are closed however it ends.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import structlog

from server_framework import engine
from server_framework.backend import current, run
from server_framework.cli.app import load_app
from server_framework.cli.config import build_parser, load_settings, render_toml
from server_framework.cli.exits import (
    EXIT_FAILURE,
    EXIT_FORCED,
    EXIT_OK,
    EXIT_USAGE,
    StartupError,
    report,
)
from server_framework.cli.listeners import Listeners, adopt, bind, resolve_ports, systemd_fds
from server_framework.cli.metrics import (
    MISSING_PROMETHEUS_CLIENT,
    MetricsHub,
    ServeState,
    WorkerChannel,
    metrics_endpoint,
    prometheus_installed,
)
from server_framework.cli.reload import (
    MISSING_WATCHFILES,
    Reloader,
    target_directories,
    watchfiles_installed,
)
from server_framework.cli.serve import serve
from server_framework.cli.settings import ConfigError, Settings
from server_framework.cli.signals import catch_early_sigterm, stopped_early
from server_framework.cli.values import format_inet
from server_framework.cli.workers import Supervisor, WorkerSpec, notify_ready, watch_parent
from server_framework.log import configure_logging, resolve_format

__all__ = ["main", "run_worker"]

logger: Final = structlog.get_logger(__name__)

_PROG: Final = "server-framework"


def _version() -> str:
    try:
        version = importlib.metadata.version("server-framework")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a tree
        version = "unknown"
    return f"{version} ({engine.ENGINE} engine)"


def _print_error(message: str) -> None:
    print(f"{_PROG}: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (see ``--help``).

    Args:
        argv: The arguments, without the program name (default: ``sys.argv[1:]``).
    """
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:  # Ctrl-C before (or after) the event loop watches signals
        _print_error("interrupted")
        return EXIT_FORCED
    except BaseExceptionGroup as group:  # the same, raised through a trio nursery
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        _print_error("interrupted")
        return EXIT_FORCED


def _main(argv: list[str]) -> int:
    catch_early_sigterm()
    parser = build_parser(_version())
    try:
        namespace = parser.parse_args(argv)
        activated = systemd_fds()
        loaded = load_settings(namespace, os.environ, activated_fds=len(activated))
    except ConfigError as exc:
        _print_error(str(exc))
        return EXIT_USAGE
    if getattr(namespace, "print_config", False):
        for warning in loaded.warnings:  # also in the output, as comments
            print(f"{_PROG}: warning: {warning}", file=sys.stderr, flush=True)
        sys.stdout.write(render_toml(loaded))
        return EXIT_OK
    settings = loaded.settings
    if settings.target is None:
        _print_error(
            "TARGET is missing: give MODULE:ATTR (e.g. server_framework.demo:EchoHandler), "
            f"set SERVER_FRAMEWORK_TARGET, or target in the config file (see '{_PROG} serve "
            "--help')"
        )
        return EXIT_USAGE
    if settings.reload and not watchfiles_installed():
        _print_error(MISSING_WATCHFILES)
        return EXIT_USAGE
    if settings.metrics is not None and not prometheus_installed():
        _print_error(MISSING_PROMETHEUS_CLIENT)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    for warning in loaded.warnings:
        logger.warning(warning)
    environ = dict(os.environ)  # as read now (without systemd's variables)

    def reread() -> Settings:
        """The settings read again, for a ``--reload`` restart or a reload of the workers
        (SIGHUP): the config file may have changed."""
        return load_settings(namespace, environ, activated_fds=len(activated)).settings

    reloading = _Reloading(loaded.config_file, reread)
    return _guarded(
        settings, "server failed", functools.partial(_start, settings, activated, reloading)
    )


class _Reloading(NamedTuple):
    """What ``--reload`` needs beyond the settings: the config file, and how to read it again."""

    config_file: str | None
    reread: Callable[[], Settings]


def _start(
    settings: Settings, activated: list[int], reloading: _Reloading, listeners: Listeners
) -> int:
    """Serve in this process, supervise the workers, or reload; what :func:`main` guards."""
    adopt(listeners, [(fd, f"--fd {fd}") for fd in settings.fd])
    adopt(listeners, [(fd, f"LISTEN_FDS fd {fd}") for fd in activated])
    if activated:
        logger.info("using sockets from systemd socket activation", fds=activated)
    if settings.workers > 1:
        return _supervise(settings, listeners, reloading.reread)
    if settings.reload:
        return _reload(settings, listeners, reloading)
    app = load_app(settings, listeners.kinds(settings))
    bind(listeners, settings)
    logger.info("listening", listeners=listeners.names)
    state = ServeState()
    with _serve_metrics(settings, state):
        return run(
            functools.partial(serve, state=state),
            settings,
            app,
            listeners,
            _log_ready,
            True,
            backend=settings.backend,
            handle_signals=False,
        )


def _serve_metrics(settings: Settings, state: ServeState) -> contextlib.AbstractContextManager[Any]:
    """The ``--metrics`` endpoint of a process that serves (nothing without ``--metrics``)."""
    if settings.metrics is None:
        return contextlib.nullcontext()
    return metrics_endpoint(settings.metrics, state.snapshots, ready=state.readiness)


def _log_ready() -> None:
    logger.info("ready", pid=os.getpid(), backend=current().name)


def run_worker(spec_json: str) -> int:
    """The entry point of a worker process (see :mod:`server_framework.cli.workers`).

    Args:
        spec_json: The :class:`~server_framework.cli.workers.WorkerSpec`, as JSON.

    Returns:
        The worker's exit code.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, for everyone
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # likewise SIGHUP (a reload, for the parent)
    catch_early_sigterm()
    spec = msgspec.json.decode(spec_json, type=WorkerSpec)
    settings = spec.settings
    extra: dict[str, Any] = {"worker": spec.index} if spec.index else {}  # 0: --reload's
    configure_logging(settings.log_level, settings.log_format, extra={**extra, "pid": os.getpid()})
    watch_parent(spec.parent_fd)
    return _guarded(settings, "worker failed", functools.partial(_start_worker, spec))


def _start_worker(spec: WorkerSpec, listeners: Listeners) -> int:
    """Serve what the parent passed (and bind, with ``--reuse-port``); what a worker guards.

    With ``--metrics``, a worker of ``--workers`` answers its parent's metrics requests (the
    channel of ``spec.metrics_fd``) from the start, and the one server process of ``--reload``
    serves the endpoint itself.
    """
    settings = spec.settings
    state = ServeState()
    with contextlib.ExitStack() as stack:
        if spec.metrics_fd is not None:  # answer the parent from the start
            stack.enter_context(WorkerChannel(spec.metrics_fd, state))
        adopt(listeners, [(fd, f"fd {fd}") for fd in spec.fds], inherited=False)
        if spec.bind_inet:
            bind(listeners, settings, unix=False)
        app = load_app(settings, listeners.kinds(settings))
        if spec.metrics_fd is None:  # --reload's server process: no parent collects
            stack.enter_context(_serve_metrics(settings, state))

        def ready() -> None:
            notify_ready(spec.ready_fd)
            logger.info("ready", backend=settings.backend)

        return run(
            functools.partial(serve, state=state),
            settings,
            app,
            listeners,
            ready,
            False,
            backend=settings.backend,
            handle_signals=False,
        )


def _guarded(settings: Settings, failure: str, start: Callable[[Listeners], int]) -> int:
    """Run ``start`` on fresh listeners; turn its failure into a logged line and an exit code.

    A :class:`~server_framework.cli.exits.StartupError` is one line (its exit code, 2 or 3),
    anything else a traceback logged as ``failure`` (exit 1). The listeners are closed, and
    the Unix socket files we created removed, however it ends.
    """
    _make_cwd_importable()
    listeners = Listeners()
    try:
        return start(listeners)
    except StartupError as exc:
        report(exc, settings)
        return exc.exit_code
    except Exception:
        logger.exception(failure)
        return EXIT_FAILURE
    finally:
        listeners.close()


def _make_cwd_importable() -> None:
    """Let TARGET name modules of the current directory (``python -m`` does; a script not)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _supervise(settings: Settings, listeners: Listeners, reread: Callable[[], Settings]) -> int:
    """Bind (or, with ``--reuse-port``, check the addresses), then run the workers (``reread``
    reads the settings again, for a reload on SIGHUP)."""
    worker_settings = msgspec.structs.replace(
        settings, log_format=resolve_format(settings.log_format, sys.stderr)
    )
    if settings.reuse_port:
        worker_settings = resolve_ports(worker_settings)
        bind(listeners, settings, inet=False)
        names = [f"tcp {format_inet(a)}" for a in worker_settings.tcp]
        names += [f"udp {format_inet(a)}" for a in worker_settings.udp]
        logger.info("listening", listeners=names + listeners.names, reuse_port=True)
    else:
        bind(listeners, settings)
        logger.info("listening", listeners=listeners.names)
    hub = MetricsHub() if settings.metrics is not None else None
    supervisor = Supervisor(
        worker_settings, listeners.fds(), bind_inet=settings.reuse_port, reread=reread, metrics=hub
    )
    if stopped_early():  # SIGTERM while we were binding
        return EXIT_OK
    if hub is None or settings.metrics is None:
        return supervisor.run()
    try:
        with metrics_endpoint(
            settings.metrics, hub.collect, ready=hub.readiness, workers=hub.workers
        ):
            return supervisor.run()
    finally:
        hub.close()


def _reload(settings: Settings, listeners: Listeners, reloading: _Reloading) -> int:
    """Bind, then run the server in a child process restarted on changes (``--reload``)."""
    logger.warning("--reload is for development only: the server restarts when its source changes")
    bind(listeners, settings)
    logger.info("listening", listeners=listeners.names)
    assert settings.target is not None
    paths = list(settings.reload_dir) or target_directories(settings.target)
    reloader = Reloader(
        settings,
        listeners.fds(),
        paths=paths,
        config_file=reloading.config_file,
        reread=reloading.reread,
    )
    if stopped_early():  # SIGTERM while we were binding
        return EXIT_OK
    return reloader.run()
