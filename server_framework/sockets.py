"""Sockets, the same way for servers, clients and the command line, on every event loop.

The types a handler or client sees: `Address` (what ``peer_address`` and ``local_address``
return), `SocketProxy` (a connection's socket, for options only) and `PeerCredentials` (who is
at the other end of a Unix stream connection). Then the plumbing: `normalize_address`, reading
the peer's credentials, an abortive close, and binding listening sockets before the
loop-specific part starts.

Binding happens before the loop-specific part starts, with plain :mod:`socket` calls:

- ``host=None`` binds every interface: ``::`` (with ``IPV6_V6ONLY``) and ``0.0.0.0``, on one
  port, even with ``port=0`` (the IPv6 socket picks the port, the IPv4 one reuses it).
- ``SO_REUSEADDR`` on every TCP listener (restarts do not wait for TIME_WAIT), ``SO_REUSEPORT``
  on request.
- If one bind fails, every socket bound so far is closed before the error propagates.
- A Unix socket path is unlinked only if it is a stale socket file (a connect probe is refused);
  a path held by a live server is an ``EADDRINUSE`` error, and anything else at the path is
  left alone. On close we unlink only the file we created (same inode).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Final, NamedTuple, TypeAlias

from server_framework.exceptions import BindError

__all__ = [
    "DEFAULT_BACKLOG",
    "MAX_DATAGRAM_SIZE",
    "RECEIVE_SIZE",
    "Address",
    "PeerCredentials",
    "SocketProxy",
    "UnixSocketFile",
    "bind_inet",
    "bind_unix",
    "check_adopted",
    "inet_text",
    "is_abstract",
    "normalize_address",
    "peer_credentials",
    "set_abortive_close",
    "set_keepalive",
    "unix_text",
]

#: Listen backlog: the kernel caps it at net.core.somaxconn anyway (4096 on current kernels).
DEFAULT_BACKLOG: Final = 4096
#: Bytes asked of each stream receive call, by servers and clients alike: one read takes up to
#: 64 KiB of pipelined frames, all handled before the socket is read again.
RECEIVE_SIZE: Final = 65536
#: Largest datagram received: the largest UDP payload is 65,507 bytes; a Unix datagram may be
#: larger: servers drop and count it (they read one byte more to notice), never truncate it.
MAX_DATAGRAM_SIZE: Final = 65536

#: A peer or local address: ``(host, port)`` for TCP/UDP (IPv6 flow info and scope dropped),
#: a path (``str``) for Unix sockets (``""`` for an unnamed Unix peer).
Address: TypeAlias = tuple[str, int] | str


class SocketProxy:
    """A view of a connection's socket, for options and addresses, whatever the event loop.

    Reading and writing data through it is deliberately impossible: the server owns the
    socket's I/O. Use it for ``setsockopt`` (e.g. ``TCP_NODELAY``, ``SO_KEEPALIVE``),
    ``getsockopt``, ``getsockname``/``getpeername`` and ``fileno``.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    @property
    def family(self) -> socket.AddressFamily:
        """The address family (``AF_INET``, ``AF_INET6``, ``AF_UNIX``)."""
        return socket.AddressFamily(self._sock.family)

    @property
    def type(self) -> socket.SocketKind:
        """The socket type (``SOCK_STREAM`` or ``SOCK_DGRAM``)."""
        return socket.SocketKind(self._sock.type)

    def fileno(self) -> int:
        """The file descriptor (-1 once closed)."""
        fd: int = self._sock.fileno()
        return fd

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> int | bytes:
        """Return a socket option's value, as :meth:`socket.socket.getsockopt`."""
        value: int | bytes = (
            self._sock.getsockopt(level, option)
            if buflen is None
            else self._sock.getsockopt(level, option, buflen)
        )
        return value

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        """Set a socket option, as :meth:`socket.socket.setsockopt`."""
        self._sock.setsockopt(level, option, value)

    def getsockname(self) -> Any:
        """The socket's own address, as the OS reports it."""
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        """The peer's address, as the OS reports it (stream sockets only)."""
        return self._sock.getpeername()

    def __repr__(self) -> str:
        return f"<SocketProxy fd={self.fileno()}>"


class PeerCredentials(NamedTuple):
    """The process at the other end of a Unix stream connection, as the kernel saw it when
    the peer connected (``SO_PEERCRED``): it does not change afterwards, even if that process
    changes its user or passes the socket on."""

    pid: int
    """The peer's process id."""
    uid: int
    """Its effective user id."""
    gid: int
    """Its effective group id."""


#: ``struct ucred`` (Linux): pid, uid, gid.
_UCRED: Final = struct.Struct("iII")


def peer_credentials(sock: Any) -> PeerCredentials | None:
    """The credentials of ``sock``'s peer (a connected Unix stream socket, or anything with its
    ``family`` and ``getsockopt``), or None: not a Unix socket, not Linux (``SO_PEERCRED``),
    or the socket is already closed."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or not sys.platform.startswith("linux"):
        return None
    if sock.family != getattr(socket, "AF_UNIX", None):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
    except OSError:  # closed meanwhile
        return None
    return PeerCredentials(*_UCRED.unpack(raw))


#: ``struct linger`` turned on with a zero timeout: ``close()`` discards unsent data and sends
#: a reset (RST) instead of the orderly FIN.
_ABORTIVE_LINGER: Final = struct.pack("ii", 1, 0)


def set_abortive_close(sock: Any) -> None:
    """Make the next ``close()`` of ``sock`` abortive (``SO_LINGER`` on, timeout 0): a TCP peer
    then sees a reset (``ECONNRESET``) and no ``TIME_WAIT`` is left behind. Nothing for Unix
    sockets, which have no reset (their peer sees an end of stream), nor for a closed socket."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORTIVE_LINGER)


def set_keepalive(sock: socket.socket, enabled: bool) -> None:
    """Turn TCP keepalive on or off on ``sock`` (nothing for a Unix socket). On a listening
    socket it applies to every connection it accepts from then on: the kernel copies it to each
    accepted socket, so setting it there costs no system call per connection."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(enabled))


def normalize_address(address: Any) -> Address:
    """``(host, port)`` for IP addresses (dropping IPv6 flow info and scope), else the path.

    ``""`` for an unnamed Unix socket (or ``None``).
    """
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    if isinstance(address, bytes):
        return os.fsdecode(address)
    return "" if address is None else str(address)


@contextlib.contextmanager
def _closing_on_error(sockets: list[socket.socket]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for sock in sockets:
            sock.close()
        raise


def _addrinfos(host: str | None, port: int, kind: socket.SocketKind) -> list[tuple[int, Any]]:
    if host is None or host == "":
        infos: list[tuple[int, Any]] = []
        if socket.has_ipv6:
            infos.append((socket.AF_INET6, ("::", port, 0, 0)))
        infos.append((socket.AF_INET, ("0.0.0.0", port)))
        return infos
    found = socket.getaddrinfo(host, port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)
    unique: list[tuple[int, Any]] = []
    for family, _type, _proto, _name, sockaddr in found:
        if (family, sockaddr) not in unique:
            unique.append((family, sockaddr))
    return unique


def inet_text(host: str | None, port: int) -> str:
    """``HOST:PORT`` as the command line writes it: ``*:PORT`` for every interface (no host),
    ``[::1]:PORT`` for an IPv6 address."""
    if not host:
        return f"*:{port}"
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def bind_inet(
    host: str | Sequence[str] | None,
    port: int,
    kind: socket.SocketKind,
    *,
    backlog: int = DEFAULT_BACKLOG,
    reuse_port: bool = False,
) -> list[socket.socket]:
    """Create, bind (and for TCP, listen on) sockets for ``host``/``port``; all on one port.

    Args:
        host: A host name or address; a sequence of them (every address each resolves to,
            once); None or ``""`` for every interface (``::`` and ``0.0.0.0``).
        port: The port; 0 picks a free one, the same for every socket.
        kind: ``SOCK_STREAM`` or ``SOCK_DGRAM``.
        backlog: Listen backlog (streams).
        reuse_port: Set ``SO_REUSEPORT``.

    Raises:
        BindError: a bind (or resolving ``host``) failed; every socket created so far is
            closed. Its message names the transport and the address.
        ValueError: an empty sequence of hosts.
    """
    hosts: list[str | None]
    if host is None or isinstance(host, str):
        hosts = [host]
    else:
        hosts = list(host)
        if not hosts:
            raise ValueError("host: an empty sequence of hosts (None binds every interface)")
    try:
        return _bind_inet(hosts, port, kind, backlog=backlog, reuse_port=reuse_port)
    except OSError as exc:
        transport = "tcp" if kind == socket.SOCK_STREAM else "udp"
        where = ",".join(inet_text(one, port) for one in hosts)
        raise BindError(transport, where, exc) from exc


def _bind_inet(
    hosts: list[str | None],
    port: int,
    kind: socket.SocketKind,
    *,
    backlog: int,
    reuse_port: bool,
) -> list[socket.socket]:
    infos: list[tuple[int, Any]] = []
    for host in hosts:
        infos += [info for info in _addrinfos(host, port, kind) if info not in infos]
    if port == 0:
        # Bind IPv6 first when both families are wanted, so that the port it picks is the one
        # the IPv4 socket asks for.
        infos.sort(key=lambda info: info[0] != socket.AF_INET6)
    sockets: list[socket.socket] = []
    with _closing_on_error(sockets):
        chosen_port = port
        for family, resolved in infos:
            sock = socket.socket(family, kind)
            sockets.append(sock)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sockaddr = (
                resolved if chosen_port == port else (resolved[0], chosen_port, *resolved[2:])
            )
            sock.bind(sockaddr)
            chosen_port = sock.getsockname()[1]
            if kind == socket.SOCK_STREAM:
                sock.listen(backlog)
            sock.setblocking(False)
    return sockets


class UnixSocketFile:
    """A Unix socket path we bound; :meth:`unlink` removes it only if it is still ours."""

    __slots__ = ("_inode", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        if is_abstract(path):  # no file: nothing to remove
            self._inode = (-1, -1)
            return
        st = os.stat(path)
        self._inode = (st.st_dev, st.st_ino)

    def unlink(self) -> None:
        """Remove the socket file if it is still the one we created."""
        if is_abstract(self.path):
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _remove_stale_socket(path: str, kind: socket.SocketKind) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: a stale file left by a crashed process
        return
    except OSError:
        return  # cannot tell (e.g. permissions): let bind report the problem
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by a running server")


def bind_unix(
    path: str,
    kind: socket.SocketKind,
    *,
    backlog: int = DEFAULT_BACKLOG,
    mode: int | None = None,
) -> tuple[socket.socket, UnixSocketFile]:
    """Bind (and for streams, listen on) a Unix socket at ``path``.

    Args:
        path: Filesystem path of the socket.
        kind: ``SOCK_STREAM`` or ``SOCK_DGRAM``.
        backlog: Listen backlog (streams).
        mode: Permission bits to give the socket file (e.g. ``0o660``), or None.

    Raises:
        BindError: the path is used by a live server, is not a socket, or bind failed; the
            message names the transport and the path.
    """
    try:
        return _bind_unix(path, kind, backlog=backlog, mode=mode)
    except OSError as exc:
        transport = "unix" if kind == socket.SOCK_STREAM else "unix-datagram"
        raise BindError(transport, path, exc) from exc


def is_abstract(path: str) -> bool:
    """True for a Linux abstract socket name (``"\\0name"``): no file, gone with its socket."""
    return path.startswith("\0")


def unix_text(path: str) -> str:
    """A Unix socket address as logs write it: an abstract name as ``@name``."""
    return "@" + path[1:] if is_abstract(path) else path


def _bind_unix(
    path: str, kind: socket.SocketKind, *, backlog: int, mode: int | None
) -> tuple[socket.socket, UnixSocketFile]:
    abstract = is_abstract(path)
    if abstract and mode is not None:
        raise ValueError("mode: an abstract socket name has no file to give permissions to")
    if not abstract:
        _remove_stale_socket(path, kind)
    sock = socket.socket(socket.AF_UNIX, kind)
    with _closing_on_error([sock]):
        sock.bind(path)
        file = UnixSocketFile(path)
        if mode is not None:
            os.chmod(path, mode)
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    return sock, file


def check_adopted(sockets: list[socket.socket], kind: socket.SocketKind) -> None:
    """Check that sockets handed to a server are of the right kind.

    Raises:
        ValueError: no socket, or a socket of another type.
    """
    if not sockets:
        raise ValueError("at least one socket is needed")
    for sock in sockets:
        if sock.type != kind:
            raise ValueError(f"expected {kind.name} sockets, got {sock!r}")
