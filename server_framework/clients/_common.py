"""The functions and constants every client uses, blocking or async: defaults, argument
checks, name resolution, the datagram sockets' setup, and the wording of errors (a client's
state, and the rules read from it, are `ClientBase`'s, in ``_client_base``).

Strategy: the blocking clients (``_sync_*``) and the async ones (``_async_*``) move bytes
differently (``poll()`` on a non-blocking socket; a loop's transport), but decide alike; what
does not depend on how the bytes move is written once, here and in ``_client_base``: what a
client raises when it cannot be used, how a datagram error is reworded, how a datagram socket
is bound and connected, how a batch of packets is encoded.

Errors, by who ended the client's usefulness:

- we closed it (or its sending side, ``send_eof()``):
  :class:`~server_framework.exceptions.ClosedResourceError`, a ``ConnectionError`` subclass
  (``errno`` None), so that ``except ConnectionError`` catches a closed client as it catches
  EasyNetwork's ``ClientClosedError``. Code that catches ``OSError`` or ``ConnectionError``
  around a call that may raise it lets it through first (``except ClosedResourceError:
  raise``), so it is never reworded into another error;
- the server closed or broke the connection: the builtin :class:`ConnectionError` (exactly that
  class, the operating system's error, if any, as ``__cause__``), so that ``except
  ConnectionError`` also catches the OS's own ``ConnectionResetError`` or ``BrokenPipeError``;
- connecting failed: the OS's error class (``ConnectionRefusedError``, ``FileNotFoundError``,
  ``socket.gaierror``...) with a message naming the address, or :class:`TimeoutError`;
- the server sent a bad message: the :class:`~protocols.ProtocolError` itself.

When a receive times out or meets the end of the stream while the bytes received form no
message (or nothing came at all), its error says what was received and what it looks like
(:func:`receive_detail`, with :func:`protocols.diagnostics.likely_cause`): a client and a
server that disagree on framing, serializer or TLS otherwise show only a bare timeout.

Connecting to a TCP host name: its addresses are tried as RFC 8305 ("happy eyeballs") says,
the families interleaved (:func:`connect_candidates`), a new attempt starting every
``happy_eyeballs_delay`` seconds or as soon as the previous one fails, the first connection to
succeed winning. Each client kind runs the race its own way (``poll()`` on non-blocking sockets;
the backend's tasks); the order and the pairing with ``local_address`` are decided here.

Nothing here does I/O but :func:`resolve` (a DNS lookup), :func:`client_ssl_context` (with
``ssl=True``, it loads the system's CA certificates) and the datagram socket helpers (which
bind and connect without waiting).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import ssl as _ssl
import tempfile
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, NoReturn, TypeVar

from protocols import LengthPrefixFramer, LineFramer, StreamDecoder, StreamProtocol
from protocols.diagnostics import SNIFF_SIZE, likely_cause
from server_framework.exceptions import ClosedResourceError

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HAPPY_EYEBALLS_DELAY",
    "Candidate",
    "TLSInfo",
    "check_protocol",
    "check_stream_socket",
    "check_timeout",
    "client_ssl_context",
    "closed_error",
    "connect_candidates",
    "connect_error",
    "connect_timeout_error",
    "connection_lost_error",
    "describe",
    "encode_all",
    "eof_sent_error",
    "local_infos_numeric",
    "peer_closed_error",
    "raise_datagram_error",
    "receive_detail",
    "receive_timeout_error",
    "resolve",
    "resolve_local",
    "resolve_numeric",
    "send_timeout_error",
    "tls_eof_error",
    "tls_info",
    "udp_socket",
    "unix_datagram_socket",
    "unlink_quietly",
    "unusable_error",
]

T = TypeVar("T")

#: Seconds allowed to connect (name resolution, TCP handshake and TLS handshake together) when
#: the caller does not say: long enough for a slow network, short enough that a dead address
#: does not hang a program (the kernel's own SYN retries give up only after about two minutes).
DEFAULT_CONNECT_TIMEOUT: Final = 30.0
#: Seconds an async client's ``aclose`` lets a graceful close take (buffered data flushed, TLS
#: ``close_notify`` exchanged) before it aborts the connection: the servers' default TLS
#: shutdown timeout.
CLOSE_TIMEOUT: Final = 10.0
#: Seconds a TCP client waits for a connection attempt to one of a host name's addresses before
#: it starts the next one in parallel (RFC 8305's "Connection Attempt Delay": its recommended
#: value, and trio's default).
DEFAULT_HAPPY_EYEBALLS_DELAY: Final = 0.25
#: Attempts at binding a fresh random path for a Unix datagram client (a collision of 64 random
#: bits is only a stale file left by a crashed process, so a few tries are plenty).
_BIND_ATTEMPTS: Final = 8


# -- arguments and addresses -------------------------------------------------------------------


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


def check_protocol(protocol: object, kind: type) -> None:
    """Reject a protocol of the wrong kind (a ``DatagramProtocol`` given to a stream client...).

    Raises:
        TypeError: ``protocol`` is not a ``kind``.
    """
    if not isinstance(protocol, kind):
        raise TypeError(f"expected a {kind.__name__}, got {protocol!r}")


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


class Candidate(NamedTuple):
    """One connection attempt of a TCP client: where to, and what to bind first."""

    #: ``AF_INET`` or ``AF_INET6``.
    family: int
    #: The server's address, as the socket module takes it.
    sockaddr: Any
    #: The local address to bind before connecting (of the same family), or None.
    local: Any


def local_infos_numeric(local_address: tuple[str, int]) -> list[tuple[int, Any]] | None:
    """The addresses ``local_address`` stands for, if no DNS query is needed (None: a name).

    An empty host means every interface, of either family (the port as given).
    """
    host, port = local_address
    if host == "":
        return [(socket.AF_INET, ("", port)), (socket.AF_INET6, ("", port))]
    return resolve_numeric(host, port, socket.SOCK_STREAM)


def resolve_local(local_address: tuple[str, int]) -> list[tuple[int, Any]]:
    """The addresses ``local_address`` stands for (blocking: it may be a name).

    Raises:
        OSError: the name does not resolve (the message names ``local_address``).
    """
    infos = local_infos_numeric(local_address)
    if infos is not None:
        return infos
    host, port = local_address
    try:
        return _unique(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE))
    except OSError as exc:
        message = f"local_address {describe(local_address)}: {exc.strerror or exc}"
        raise type(exc)(exc.errno, message) from exc


def connect_candidates(
    address: tuple[str, int],
    infos: list[tuple[int, Any]],
    local_infos: list[tuple[int, Any]] | None,
) -> list[Candidate]:
    """The connection attempts for ``address``'s resolved ``infos``, in the order to try them.

    The families are interleaved as RFC 8305 says (the resolver's first address, then one of
    the other family, and so on), so that a family that does not work (IPv6 without a route)
    costs at most one attempt delay. With ``local_infos`` (``local_address`` resolved), each
    attempt binds the first local address of its family, and the server's addresses of a
    family that ``local_address`` does not have are left out.

    Raises:
        OSError: no address of the server is of a family that ``local_address`` has.
    """
    by_family: dict[int, list[Any]] = {}
    for family, sockaddr in infos:
        by_family.setdefault(family, []).append(sockaddr)
    queues = list(by_family.items())  # in the order of each family's first address
    ordered: list[tuple[int, Any]] = []
    while queues:
        for family, sockaddrs in queues:
            ordered.append((family, sockaddrs.pop(0)))
        queues = [(family, sockaddrs) for family, sockaddrs in queues if sockaddrs]
    if local_infos is None:
        return [Candidate(family, sockaddr, None) for family, sockaddr in ordered]
    local_by_family: dict[int, Any] = {}
    for family, sockaddr in local_infos:
        local_by_family.setdefault(family, sockaddr)
    candidates = [
        Candidate(family, sockaddr, local_by_family[family])
        for family, sockaddr in ordered
        if family in local_by_family
    ]
    if not candidates:
        raise OSError(
            errno.EAFNOSUPPORT,
            f"could not connect to {describe(address)}: none of its addresses is of the "
            "family (IPv4 or IPv6) of local_address",
        )
    return candidates


def client_ssl_context(ssl: _ssl.SSLContext | bool | None) -> _ssl.SSLContext | None:
    """The client-side TLS context that a client's ``ssl=`` argument stands for.

    ``True``: :func:`ssl.create_default_context` (the system's CAs, host name checked);
    ``False`` or ``None``: no TLS; a context: itself.

    Raises:
        TypeError: ``ssl`` is none of these.
    """
    if ssl is None or ssl is False:
        return None
    if ssl is True:
        return _ssl.create_default_context()
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    raise TypeError(f"ssl must be an ssl.SSLContext, True, False or None, got {ssl!r}")


def check_stream_socket(sock: object, families: tuple[int, ...], what: str) -> Any:
    """Check that ``sock`` is a connected stream socket of one of ``families`` (``from_socket``).

    Returns:
        Its peer's address.

    Raises:
        TypeError: ``sock`` is not a :class:`socket.socket`.
        ValueError: it is not a stream socket of those families, or not connected.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"expected a socket.socket, got {sock!r}")
    if sock.type != socket.SOCK_STREAM or sock.family not in families:
        raise ValueError(f"expected a connected {what} socket, got {sock!r}")
    try:
        return sock.getpeername()
    except OSError as exc:
        raise ValueError(f"expected a connected {what} socket: {exc.strerror or exc}") from exc


class TLSInfo(NamedTuple):
    """What a TLS client learned from its handshake (read once, when it connects)."""

    #: The server's certificate, as :meth:`ssl.SSLSocket.getpeercert` returns it.
    peer_certificate: dict[str, Any]
    #: ``(name, protocol version, secret bits)``, as :meth:`ssl.SSLSocket.cipher` returns it.
    cipher: tuple[str, str, int]
    #: The protocol version, such as ``"TLSv1.3"``.
    version: str


def tls_info(ssl_object: Any) -> TLSInfo:
    """The `TLSInfo` of a connection whose handshake is done (``ssl_object``: an
    ``ssl.SSLSocket``, an ``ssl.SSLObject`` or a ``trio.SSLStream``)."""
    return TLSInfo(ssl_object.getpeercert() or {}, ssl_object.cipher(), ssl_object.version() or "")


def encode_all(protocol: StreamProtocol[T, Any], packets: Iterable[T]) -> bytearray:
    """Serialize and frame every packet into one buffer (``send_packets``: one write for all).

    Raises:
        SerializeError: a packet cannot be serialized.
    """
    buffer = bytearray()
    encode_into = protocol.encode_into
    for packet in packets:
        encode_into(packet, buffer)
    return buffer


# -- errors ------------------------------------------------------------------------------------


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


#: What to check when the server's bytes (or its silence) suggest the two sides disagree.
_CHECK_BOTH_SIDES: Final = (
    "check that both sides use the same framing and serializer, and TLS on both or on neither; "
    "the server's log may say why"
)


def receive_detail(
    protocol: StreamProtocol[Any, Any], decoder: StreamDecoder[Any], heard: bool
) -> str:
    """What the error of a stream receive that timed out, or met the end of the stream, adds
    after its message: the bytes received that form no message, what they look like and what to
    check; or, if the server sent nothing at all (``heard`` False), that it did not. "" when
    neither applies. For the error path only (it looks at the bytes).
    """
    pending = decoder.buffered
    if pending:
        head = decoder.peek(SNIFF_SIZE)
        framer = protocol.framer
        if isinstance(framer, LineFramer):
            hint = likely_cause(head, framing="line", delimiter=framer.delimiter, peer="the server")
        elif isinstance(framer, LengthPrefixFramer):
            hint = likely_cause(head, framing="length-prefix", peer="the server")
        else:
            hint = likely_cause(head, peer="the server")
        more = "..." if pending > len(head) else ""
        advice = _CHECK_BOTH_SIDES if hint is None else f"hint: {hint}"
        return f"{pending} bytes received that form no complete message: {head!r}{more}; {advice}"
    if not heard:
        return f"it sent nothing on this connection; if it should have, {_CHECK_BOTH_SIDES}"
    return ""


def receive_timeout_error(
    timeout: float | None, what: str = "message", detail: str = ""
) -> TimeoutError:
    """The error of a receive call that waited ``timeout`` seconds for nothing (``detail``:
    what was received meanwhile, see :func:`receive_detail`)."""
    message = f"no {what} received from the server within {timeout} s"
    return TimeoutError(f"{message} ({detail})" if detail else message)


def send_timeout_error(timeout: float | None, broken: str | None = None) -> TimeoutError:
    """The error of a send that gave up after ``timeout`` seconds: nothing was sent and the
    client is still usable, or (``broken``: why) it is not."""
    if broken is None:
        return TimeoutError(
            f"could not send within {timeout} s (the server does not read, or other sends "
            "went first): nothing was sent, the client is still usable"
        )
    return TimeoutError(f"could not send within {timeout} s: {broken}")


def eof_sent_error() -> ClosedResourceError:
    """The error of a send after ``send_eof()``: this program closed the sending side."""
    return ClosedResourceError("cannot send after send_eof(): the client's sending side is closed")


def tls_eof_error() -> NotImplementedError:
    """The error of ``send_eof()`` on a TLS client."""
    return NotImplementedError(
        "send_eof() is not supported over TLS: TLS has no half-close that servers honour "
        "(asyncio and trio end the whole session on a close_notify), and a TCP half-close "
        "without one looks like a truncation attack; close the client instead, or end the "
        "request with a message of the protocol"
    )


def closed_error() -> ClosedResourceError:
    """The error of a call on a client that this program closed."""
    return ClosedResourceError("the client is closed: create a new client to reconnect")


def unusable_error(closed: bool, broken: str | None) -> Exception:
    """The error of a call on a client (or a connection) that is ``closed`` by this program or
    ``broken`` (the reason); for a caller that found one of the two true."""
    if closed:
        return closed_error()
    return ConnectionError(broken)


def peer_closed_error(pending: int = 0, detail: str = "") -> ConnectionError:
    """The error of a call after the server closed the connection (``pending``: bytes of an
    unfinished message received before the end; ``detail``: see :func:`receive_detail`)."""
    if pending:
        what = detail or f"{pending} bytes of it received"
        return ConnectionError(
            f"the server closed the connection in the middle of a message ({what})"
        )
    if detail:
        return ConnectionError(f"the server closed the connection ({detail})")
    return ConnectionError("the server closed the connection")


def connection_lost_error(cause: BaseException | str, detail: str = "") -> ConnectionError:
    """The error of a call after the connection broke (reset, broken pipe, TLS failure...);
    ``detail``: see :func:`receive_detail`."""
    message = f"the connection to the server was lost: {cause}"
    return ConnectionError(f"{message} ({detail})" if detail else message)


def raise_datagram_error(exc: OSError, address: Any, *, closed: bool = False) -> NoReturn:
    """Raise the error of a datagram socket's failed call (``exc``), reworded to name the server.

    On a connected datagram socket the kernel reports the server's ICMP "port unreachable"
    (UDP) or its vanished socket (Unix) as ``ConnectionRefusedError`` on a later call; the
    client stays usable (the server may come back). ``closed``: this program closed the client
    meanwhile (then ``ClosedResourceError``). Other errors are raised as they are.
    """
    if closed:
        raise closed_error() from exc
    if isinstance(exc, ConnectionError) and exc.errno is not None:
        raise type(exc)(
            exc.errno,
            f"the server at {describe(address)} is not reachable: {exc.strerror} (is it running?)",
        ) from exc
    raise exc


# -- datagram sockets --------------------------------------------------------------------------


def udp_socket(
    address: tuple[str, int], resolved: tuple[int, Any], local_address: tuple[str, int] | None
) -> socket.socket:
    """A non-blocking UDP socket, bound to ``local_address`` (if given) and connected to
    ``resolved`` (``(family, sockaddr)``, one of the addresses ``address`` resolved to).

    Connected, only the server's datagrams are received, and the kernel reports an unreachable
    server. Connecting a datagram socket only records the peer: it never waits.

    Raises:
        OSError: the socket cannot be made, bound or connected (connecting: with ``address`` in
            the message).
    """
    family, sockaddr = resolved
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise connect_error(exc, address) from exc
    try:
        if local_address is not None:
            sock.bind(local_address)
        _connect_datagram(sock, sockaddr, address)
    except BaseException:
        sock.close()
        raise
    return sock


def unix_datagram_socket(path: str, local_path: str | None) -> tuple[socket.socket, str]:
    """A non-blocking Unix datagram socket, bound and connected to the server's ``path``.

    A Unix datagram server can answer only a peer that has an address, hence the binding: to
    ``local_path``, or to a fresh path in the temporary directory.

    Returns:
        The socket and the path it is bound to (the caller removes it when it closes the
        socket; on failure nothing is left behind).

    Raises:
        OSError: the server's path is not a socket in use (``FileNotFoundError``,
            ``ConnectionRefusedError``, with the path in the message), or the bind failed (for
            example, ``local_path`` exists).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bound: str | None = None
    try:
        bound = _bind_unix_datagram(sock, local_path)
        _connect_datagram(sock, path, path)
    except BaseException:
        sock.close()
        if bound is not None:
            unlink_quietly(bound)
        raise
    return sock, bound


def _bind_unix_datagram(sock: socket.socket, local_path: str | None) -> str:
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


def _connect_datagram(sock: socket.socket, sockaddr: Any, address: Any) -> None:
    try:
        sock.connect(sockaddr)
    except OSError as exc:
        raise connect_error(exc, address) from exc
    sock.setblocking(False)


def unlink_quietly(path: str) -> None:
    """Remove the socket file a client bound, if it is still there (an abstract name has
    none)."""
    if path.startswith("\0"):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
