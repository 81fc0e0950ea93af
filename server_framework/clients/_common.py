"""What every client shares: defaults, addresses, name resolution, and the wording of errors.

Errors, by who ended the client's usefulness (the same for blocking and async clients):

- we closed it: :class:`~server_framework.exceptions.ClosedResourceError`;
- the server closed or broke the connection: the builtin :class:`ConnectionError` (exactly that
  class, the operating system's error, if any, as ``__cause__``), so that ``except
  ConnectionError`` also catches the OS's own ``ConnectionResetError`` or ``BrokenPipeError``
  and nothing else;
- connecting failed: the OS's error class (``ConnectionRefusedError``, ``FileNotFoundError``,
  ``socket.gaierror``...) with a message naming the address, or :class:`TimeoutError`;
- the server sent a bad message: the :class:`~protocols.ProtocolError` itself.

Nothing here does I/O but :func:`resolve` (a DNS lookup) and the Unix socket file helpers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import tempfile
from typing import Any, Final

from server_framework.exceptions import ClosedResourceError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "MAX_DATAGRAM_SIZE",
    "RECEIVE_SIZE",
    "bind_unix_datagram",
    "check_timeout",
    "closed_error",
    "connect_error",
    "connect_timeout_error",
    "connection_lost_error",
    "datagram_error",
    "describe",
    "peer_closed_error",
    "receive_timeout_error",
    "resolve",
    "resolve_numeric",
    "unlink_quietly",
]

#: Seconds allowed to connect (name resolution, TCP handshake and TLS handshake together) when
#: the caller does not say: long enough for a slow network, short enough that a dead address
#: does not hang a program (the kernel's own SYN retries give up only after about two minutes).
DEFAULT_CONNECT_TIMEOUT: Final = 30.0
#: Bytes asked of each receive call: one read takes up to 64 KiB of pipelined responses, which
#: are all decoded before the socket is read again (the servers use the same size).
RECEIVE_SIZE: Final = 65536
#: Largest datagram received: the largest UDP payload is 65507 bytes; a larger Unix datagram
#: is truncated by the kernel (and then fails to decode). The servers use the same bound.
MAX_DATAGRAM_SIZE: Final = 65536
#: Attempts at binding a fresh random path for a Unix datagram client (a collision of 64 random
#: bits is only a stale file left by a crashed process, so a few tries are plenty).
_BIND_ATTEMPTS: Final = 8


def describe(address: Any) -> str:
    """A short text for an address in messages: ``127.0.0.1:8000``, ``[::1]:8000``, a path."""
    if isinstance(address, tuple):
        host, port = str(address[0]), address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"Unix socket {os.fsdecode(address)!r}"


def check_timeout(timeout: float | None, name: str = "timeout") -> None:
    """Reject a negative or NaN timeout (``None`` means no timeout, ``0`` means do not wait).

    Raises:
        ValueError: ``timeout`` is negative or NaN.
    """
    if timeout is not None and not timeout >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0 or None, got {timeout!r}")


def resolve_numeric(host: str, port: int, kind: socket.SocketKind) -> list[tuple[int, Any]] | None:
    """The addresses for a numeric ``host`` (no DNS query), or None if it is a name."""
    try:
        infos = socket.getaddrinfo(host, port, 0, kind, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    return _unique(infos)


def resolve(host: str, port: int, kind: socket.SocketKind) -> list[tuple[int, Any]]:
    """``(family, sockaddr)`` pairs for ``host``/``port``, in the resolver's order (blocking).

    Raises:
        socket.gaierror: the name does not resolve.
    """
    return _unique(socket.getaddrinfo(host, port, 0, kind))


def _unique(infos: list[Any]) -> list[tuple[int, Any]]:
    found: list[tuple[int, Any]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if (family, sockaddr) not in found:
            found.append((family, sockaddr))
    return found


def connect_error(exc: OSError, address: Any) -> OSError:
    """A new error of ``exc``'s class whose message says which address could not be reached.

    ``ssl.SSLError`` (certificate problems...) is not for this function: it is clear already
    and callers let it through unchanged.
    """
    where = describe(address)
    if exc.errno is None:
        return type(exc)(f"could not connect to {where}: {exc}")
    # The OS's wording, not the loop's ("Connect call failed ('127.0.0.1', 1)" on asyncio).
    if exc.errno > 0 and not isinstance(exc, socket.gaierror):
        reason = os.strerror(exc.errno)
    else:
        reason = exc.strerror or str(exc)
    if exc.errno == errno.ECONNREFUSED:
        reason += " (is the server running, on this address?)"
    elif exc.errno == errno.ENOENT:
        reason += " (no socket file at that path: is the server running?)"
    return type(exc)(exc.errno, f"could not connect to {where}: {reason}")


def connect_timeout_error(address: Any, timeout: float | None) -> TimeoutError:
    """The error of a connection attempt that took longer than ``connect_timeout``."""
    return TimeoutError(
        f"could not connect to {describe(address)} within connect_timeout={timeout} s"
    )


def receive_timeout_error(timeout: float | None, what: str = "message") -> TimeoutError:
    """The error of a receive call that waited ``timeout`` seconds for nothing."""
    return TimeoutError(f"no {what} received from the server within {timeout} s")


def closed_error() -> ClosedResourceError:
    """The error of a call on a client that this program closed."""
    return ClosedResourceError("the client is closed: create a new client to reconnect")


def peer_closed_error(pending: int = 0) -> ConnectionError:
    """The error of a call after the server closed the connection (``pending``: bytes of an
    unfinished message received before the end)."""
    if pending:
        return ConnectionError(
            f"the server closed the connection in the middle of a message ({pending} bytes "
            "of it received)"
        )
    return ConnectionError("the server closed the connection")


def connection_lost_error(cause: BaseException | str) -> ConnectionError:
    """The error of a call after the connection broke (reset, broken pipe, TLS failure...)."""
    return ConnectionError(f"the connection to the server was lost: {cause}")


def datagram_error(exc: OSError, address: Any) -> OSError | None:
    """A datagram socket's error reworded to name the server, or None to raise ``exc`` as is.

    On a connected datagram socket the kernel reports the server's ICMP "port unreachable"
    (UDP) or its vanished socket (Unix) as ``ConnectionRefusedError`` on a later call; the
    client stays usable (the server may come back).
    """
    if isinstance(exc, ConnectionError) and exc.errno is not None:
        return type(exc)(
            exc.errno,
            f"the server at {describe(address)} is not reachable: {exc.strerror} (is it running?)",
        )
    return None


def bind_unix_datagram(sock: socket.socket, local_path: str | None) -> str:
    """Bind a Unix datagram socket to ``local_path``, or to a fresh path in the temp directory.

    A Unix datagram server can answer only a peer that has an address, hence the binding.

    Returns:
        The path bound (the caller removes it when it closes the socket).

    Raises:
        OSError: the bind failed (for example, ``local_path`` exists).
    """
    if local_path is not None:
        sock.bind(local_path)
        return local_path
    directory = tempfile.gettempdir()
    for attempt in range(_BIND_ATTEMPTS):
        path = os.path.join(directory, f"sf-client-{os.getpid()}-{secrets.token_hex(8)}.sock")
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == _BIND_ATTEMPTS - 1:
                raise
            continue
        return path
    raise AssertionError("unreachable")  # pragma: no cover


def unlink_quietly(path: str) -> None:
    """Remove the socket file a client bound, if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
