"""The command line: ``python -m server_framework serve TARGET [options]``, or ``server-framework``.

What ``serve`` does, in order (``--help`` lists the options):

1. Parse the command line, the environment and the TOML file into one frozen
   :class:`~server_framework.cli.settings.Settings`. A bad option or value is one line on
   stderr and exit code 2. ``--print-config`` prints the result as TOML and exits 0.
2. Configure logging (:func:`server_framework.log.configure_logging`): console on a terminal,
   JSON otherwise.
3. Take the inherited sockets: ``--fd N`` and systemd's ``LISTEN_FDS`` (only when
   ``LISTEN_PID`` is our pid; the variables are then removed from the environment, as
   ``sd_listen_fds`` does, so that no child takes them for its own). Inherited sockets are
   never re-bound nor ``listen()``-ed, and their Unix socket files are never removed.
4. With ``--workers N`` (N > 1): bind, then hand over to
   :class:`server_framework.cli.workers.Supervisor`.
5. With ``--reload`` (development): bind, then hand over to
   :class:`server_framework.cli.reload.Reloader`, which serves in a child process restarted
   when the source changes.
6. Otherwise: load the application (TARGET, the protocols, TLS), bind the listeners, and serve
   them in this process: every stream socket in one stream server and every datagram socket in
   one datagram server (``from_sockets``), sharing the one handler object. (A handler serving
   both kinds therefore sees ``service_init`` once per server.)

Failures at start-up (TARGET does not import, a bind fails, a certificate does not load...)
are one line logged at ERROR and exit code 3; the traceback is shown with
``--log-level debug`` only. A TARGET that does not fit the listeners (a stream-only handler
with ``--udp``) is a usage error, exit 2.

Signals: SIGTERM or SIGINT stops accepting, lets requests in progress finish within
``--shutdown-timeout``, cancels the rest (the servers log how many), and exits 0. The event
loop's own signal API is used (``loop.add_signal_handler`` on asyncio/uvloop,
``trio.open_signal_receiver`` on trio). After the first signal, SIGINT gets a plain
``signal.signal`` handler, so a second Ctrl-C exits at once (130) even if a handler has blocked
the event loop.

The modules, one job each (this package re-exports :func:`main` only):

- :mod:`~server_framework.cli.entry`: :func:`main` and the worker process's entry,
  ``run_worker``; steps 1 to 6 above, each failure turned into an exit code.
- :mod:`~server_framework.cli.settings`: :class:`~server_framework.cli.settings.Settings`,
  whose defaults are the servers' own ``DEFAULT_*`` constants.
- :mod:`~server_framework.cli.values`: parsing one value (``HOST:PORT``, sizes, durations...).
- :mod:`~server_framework.cli.options`: the table of options, each a flag, an environment
  variable and a TOML key.
- :mod:`~server_framework.cli.config`: the ``argparse`` parser, merging the command line, the
  environment and the TOML file, and ``--print-config``.
- :mod:`~server_framework.cli.exits`: the exit codes and the start-up failure that carries one.
- :mod:`~server_framework.cli.listeners`: binding, ``--fd`` and systemd's descriptors.
- :mod:`~server_framework.cli.app`: loading TARGET (``MODULE:ATTR``), the protocols and TLS.
- :mod:`~server_framework.cli.serve`: serving in this process until a signal stops it.
- :mod:`~server_framework.cli.signals`: SIGTERM and SIGINT, through the event loop.
- :mod:`~server_framework.cli.workers`: ``--workers N``, the supervisor of worker processes.
- :mod:`~server_framework.cli.reload`: ``--reload``, restarting the server on source changes
  (development only).
- :mod:`~server_framework.cli.metrics`: ``--metrics HOST:PORT``, the Prometheus endpoint and
  health checks, summed over ``--workers`` through a channel to each worker.
"""

from server_framework.cli.entry import main

__all__ = ["main"]
