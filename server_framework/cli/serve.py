"""Serving in this process, until a signal stops it.

Every stream socket is served by one stream server and every datagram socket by one datagram
server, built with ``from_sockets`` and sharing the one handler object (a handler serving both
kinds therefore sees ``service_init`` once per server). The datagram peers' idle timeout and
the PROXY protocol options are passed only when set, so the servers' own defaults apply
otherwise (``max_connections`` and ``shutdown_timeout`` default to the servers' constants in
:class:`~server_framework.cli.settings.Settings`). The servers are entered (their
``service_init`` runs), served in one task group, and shut down together when
:mod:`~server_framework.cli.signals` sets the stop event. A
:class:`~server_framework.cli.metrics.ServeState` passed in learns the servers, when they all
serve and when they start draining (for ``--metrics``).
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Callable
from typing import Any, Final

import structlog

from server_framework._signals import watch_signals
from server_framework.backend import current
from server_framework.cli.app import App
from server_framework.cli.exits import EXIT_OK, EXIT_STARTUP, StartupError, report
from server_framework.cli.listeners import Listeners
from server_framework.cli.metrics import ServeState
from server_framework.cli.settings import Settings
from server_framework.cli.signals import stop_on_signal, stopped_early
from server_framework.servers import AsyncDatagramServerBase, AsyncStreamServerBase

__all__ = ["proxy_protocol_options", "serve"]

logger: Final = structlog.get_logger(__name__)


def proxy_protocol_options(settings: Settings) -> dict[str, Any]:
    """The stream servers' PROXY protocol options from the settings.

    Returns ``proxy_protocol=`` and ``proxy_allow=`` only when they are set, so the servers'
    own defaults (no PROXY header; loopback and Unix peers trusted) apply otherwise.
    """
    options: dict[str, Any] = {}
    if settings.proxy_protocol is not None:
        options["proxy_protocol"] = settings.proxy_protocol
    if settings.proxy_allow:
        options["proxy_allow"] = list(settings.proxy_allow)
    return options


def _servers(settings: Settings, app: App, listeners: Listeners) -> list[Any]:
    servers: list[Any] = []
    try:
        if listeners.stream:
            assert app.stream_protocol is not None
            servers.append(
                AsyncStreamServerBase.from_sockets(
                    listeners.stream,
                    app.stream_protocol,
                    app.handler,
                    ssl=app.ssl_context,
                    max_connections=settings.max_connections,
                    max_connections_per_ip=settings.max_connections_per_ip,
                    overload=settings.overload,
                    idle_timeout=settings.idle_timeout,
                    frame_timeout=settings.frame_timeout or None,
                    write_timeout=settings.write_timeout or None,
                    write_high_water=settings.write_high_water,
                    shutdown_timeout=settings.shutdown_timeout,
                    warn_blocked=settings.warn_blocked,
                    keepalive=settings.keepalive,
                    log_connections=settings.log_connections,
                    **proxy_protocol_options(settings),
                )
            )
        if listeners.datagram:
            assert app.datagram_protocol is not None
            idle: dict[str, Any] = {}
            if settings.idle_timeout is not None:
                idle["client_idle_timeout"] = settings.idle_timeout
            servers.append(
                AsyncDatagramServerBase.from_sockets(
                    listeners.datagram,
                    app.datagram_protocol,
                    app.handler,
                    max_clients=settings.max_connections,
                    max_datagram_rate_per_ip=settings.max_datagram_rate_per_ip,
                    shutdown_timeout=settings.shutdown_timeout,
                    warn_blocked=settings.warn_blocked,
                    **idle,
                )
            )
    except (TypeError, ValueError) as exc:
        raise StartupError(f"cannot create the server: {exc}") from exc
    return servers


async def serve(
    settings: Settings,
    app: App,
    listeners: Listeners,
    on_ready: Callable[[], None],
    sigint: bool,
    *,
    state: ServeState | None = None,
) -> int:
    """Serve ``listeners`` until SIGTERM (or SIGINT, if ``sigint``); return the exit code.

    Run it with :func:`server_framework.backend.run`. A failure to create or start the servers
    is logged (see :func:`~server_framework.cli.exits.report`) and its exit code (3)
    returned.

    Args:
        settings: The settings.
        app: The handler, protocols and TLS context.
        listeners: The sockets to serve (bound or inherited).
        on_ready: Called once every server serves.
        sigint: Handle SIGINT too (not in a worker, whose parent handles Ctrl-C).
        state: Told the servers once created, ``started`` once they serve, ``stopping`` as
            soon as the stop begins (for ``--metrics``).
    """
    backend = current()
    stop = backend.create_event()
    on_signal = stop_on_signal(
        stop, sigint=sigint, grace=settings.shutdown_timeout, log_format=settings.log_format
    )
    try:
        servers = _servers(settings, app, listeners)
    except StartupError as exc:
        report(exc, settings)
        return exc.exit_code
    if state is None:
        state = ServeState()
    state.servers = tuple(servers)
    signums = (signal.SIGINT, signal.SIGTERM) if sigint else (signal.SIGTERM,)
    async with watch_signals(backend, on_signal, signums), contextlib.AsyncExitStack() as stack:
        if stopped_early():
            on_signal(signal.SIGTERM)
        try:
            for server in servers:
                await stack.enter_async_context(server)
        except Exception as exc:
            error = StartupError(f"start-up failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            report(error, settings)
            return EXIT_STARTUP
        async with backend.create_task_group() as task_group:
            serving = []
            for server in servers:
                up = backend.create_event()
                serving.append(up)
                task_group.start_soon(functools.partial(server.serve_forever, is_up_event=up))
            for up in serving:  # every server named and accepting: now we are ready
                await up.wait()
            on_ready()
            state.started = True
            await stop.wait()
            state.stopping = True  # /ready says 503 before the listeners close
            for server in servers:
                task_group.start_soon(server.shutdown)
    logger.info("stopped")
    return EXIT_OK
