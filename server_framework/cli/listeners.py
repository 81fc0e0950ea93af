"""The sockets to serve: bound from the settings, inherited with ``--fd``, or from systemd.

:class:`Listeners` holds them by kind (stream, datagram) with a printable name each, and the
Unix socket files we created. :func:`bind` binds the configured addresses and paths with
:func:`server_framework.sockets.bind_inet` and :func:`~server_framework.sockets.bind_unix`.
:func:`systemd_fds` reads systemd's ``LISTEN_FDS`` (only when ``LISTEN_PID`` is our pid; the
variables are then removed from the environment, as ``sd_listen_fds`` does, so that no child
takes them for its own), and :func:`adopt` wraps inherited descriptors after checking they
can be served: they are never re-bound nor ``listen()``-ed, and their Unix socket files are
never removed. :func:`resolve_ports` checks the addresses ``--reuse-port`` workers will bind.
Every failure is a one-line :class:`~server_framework.cli.exits.StartupError`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import msgspec

from server_framework.cli.exits import EXIT_USAGE, StartupError, os_error_reason
from server_framework.cli.settings import ConfigError, Settings
from server_framework.cli.values import format_inet
from server_framework.exceptions import BindError
from server_framework.sockets import UnixSocketFile, bind_inet, bind_unix

__all__ = ["Listeners", "adopt", "bind", "resolve_ports", "systemd_fds"]


@dataclass
class Listeners:
    """The sockets to serve, by kind, and the Unix socket files we created (to remove)."""

    stream: list[socket.socket] = field(default_factory=list)
    datagram: list[socket.socket] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    files: list[UnixSocketFile] = field(default_factory=list)

    def add(self, sock: socket.socket, origin: str = "") -> None:
        """Add a bound socket (``origin`` says where an inherited one came from)."""
        (self.stream if sock.type == socket.SOCK_STREAM else self.datagram).append(sock)
        self.names.append(_describe(sock) + (f" ({origin})" if origin else ""))

    def fds(self) -> list[int]:
        """The file descriptors of every socket."""
        return [sock.fileno() for sock in (*self.stream, *self.datagram)]

    def kinds(self, settings: Settings) -> tuple[bool, bool]:
        """``(stream, datagram)``: which kinds of listener there are or will be."""
        stream = bool(self.stream or settings.tcp or settings.unix)
        datagram = bool(self.datagram or settings.udp or settings.unix_datagram)
        return stream, datagram

    def close(self) -> None:
        """Close every socket and remove the Unix socket files we created (still ours)."""
        for sock in (*self.stream, *self.datagram):
            sock.close()
        for file in self.files:
            file.unlink()
        self.stream.clear()
        self.datagram.clear()
        self.files.clear()


def _describe(sock: socket.socket) -> str:
    kind = "tcp" if sock.type == socket.SOCK_STREAM else "udp"
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        kind = "unix" if sock.type == socket.SOCK_STREAM else "unix-datagram"
        return f"{kind} {os.fsdecode(address) if address else '(unnamed)'}"
    return f"{kind} {format_inet((address[0], address[1]))}"


def systemd_fds() -> list[int]:
    """The sockets systemd passed us (``LISTEN_FDS``), removing its variables from the env.

    Raises:
        ConfigError: ``LISTEN_FDS`` is not a number.
    """
    pid = os.environ.get("LISTEN_PID", "")
    count = os.environ.get("LISTEN_FDS", "")
    if not pid or not count or pid.strip() != str(os.getpid()):
        return []  # none, or meant for another process (e.g. our parent)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not count.strip().isdigit():
        raise ConfigError(f"LISTEN_FDS: expected a number of sockets, got {count!r}")
    first = 3  # SD_LISTEN_FDS_START
    return list(range(first, first + int(count)))


def adopt(listeners: Listeners, fds: list[tuple[int, str]], *, inherited: bool = True) -> None:
    """Wrap inherited descriptors in sockets, after checking they can be served.

    Args:
        listeners: Where the sockets go.
        fds: ``(descriptor, origin)`` pairs; the origin (``--fd 3``) names it in errors.
        inherited: Name the origin in the listener's description too (not in a worker, whose
            descriptors are the parent's own sockets).

    Raises:
        StartupError: a descriptor given twice (exit 2), not a socket, not a TCP, UDP or Unix
            socket, or a stream socket that does not listen (exit 3).
    """
    seen = set(listeners.fds())
    for fd, origin in fds:
        if fd in seen:
            raise StartupError(f"{origin}: the same descriptor is given twice", EXIT_USAGE)
        seen.add(fd)
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise StartupError(f"{origin}: not a usable socket: {os_error_reason(exc)}") from exc
        sock.set_inheritable(False)
        if sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
            socket.AF_UNIX,
        ) or sock.type not in (
            socket.SOCK_STREAM,
            socket.SOCK_DGRAM,
        ):
            sock.detach()
            raise StartupError(f"{origin}: not a TCP, UDP or Unix socket ({sock!r})")
        if sock.type == socket.SOCK_STREAM and not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            sock.detach()
            raise StartupError(f"{origin}: a stream socket that is not listening")
        listeners.add(sock, origin if inherited else "")


def bind(listeners: Listeners, settings: Settings, *, inet: bool = True, unix: bool = True) -> None:
    """Bind the configured listeners into ``listeners``.

    Raises:
        StartupError: a bind failed (what was bound so far stays in ``listeners``, to close).
    """
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM)
    # The message of a failed bind is BindError's: the same for scripts and the command line.
    if inet:
        for kind, addresses in zip(kinds, (settings.tcp, settings.udp), strict=True):
            for host, port in addresses:
                try:
                    socks = bind_inet(host or None, port, kind, reuse_port=settings.reuse_port)
                except BindError as exc:
                    raise StartupError(str(exc)) from exc
                for sock in socks:
                    listeners.add(sock)
    if unix:
        paths = (settings.unix, settings.unix_datagram)
        for kind, unix_paths in zip(kinds, paths, strict=True):
            for path in unix_paths:
                try:
                    sock, file = bind_unix(path, kind)
                except BindError as exc:
                    raise StartupError(str(exc)) from exc
                listeners.files.append(file)
                listeners.add(sock)


def resolve_ports(settings: Settings) -> Settings:
    """For ``--reuse-port`` workers: check the TCP/UDP addresses bind, and fix port 0.

    The parent binds each address once with ``SO_REUSEPORT`` and closes it at once, so that a
    bad address fails before any worker starts, and every worker binds the same port.
    """
    probe = Listeners()
    resolved: dict[str, list[tuple[str, int]]] = {"tcp": [], "udp": []}
    try:
        for name in ("tcp", "udp"):
            for host, port in getattr(settings, name):
                one = msgspec.structs.replace(settings, tcp=(), udp=())
                one = msgspec.structs.replace(one, **{name: ((host, port),)})
                bind(probe, one, unix=False)
                sock = (probe.stream if name == "tcp" else probe.datagram)[-1]
                resolved[name].append((host, sock.getsockname()[1]))
    finally:
        probe.close()
    return msgspec.structs.replace(settings, tcp=tuple(resolved["tcp"]), udp=tuple(resolved["udp"]))
