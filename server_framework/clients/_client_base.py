"""`ClientBase`: what every client is, blocking or async, and the rules that follow from it.

The state: the socket and the addresses once connected, and how the client ended (closed by
this program, the server's end of stream, broken by a framing error or a send cut short). The
rules read from it are the same for the blocking clients (``_sync_base.SyncClient``) and the
async ones (``_async_base.AsyncClientBase``), so they are written here once: the
``peer_address``, ``local_address`` and ``socket`` accessors, what a call on an unusable client
raises, what a framing error does to a stream, and when ``iter_received_packets`` ends quietly;
and, for the TCP clients, the TLS properties (`TLSClientMixin`). How the bytes move (``poll()``
on a non-blocking socket; a loop's transport) is the subclasses' business.
"""

from __future__ import annotations

from typing import Any

from protocols import FramingError
from server_framework.exceptions import ClosedResourceError
from server_framework.sockets import Address, SocketProxy, normalize_address

from ._common import TLSInfo, unusable_error

__all__ = ["ClientBase", "TLSClientMixin"]


class ClientBase:
    """What every client is, blocking or async: its socket and addresses once connected, how
    it ended (closed by us, the server's end of stream, broken by a framing error or a send cut
    short mid-frame), and the
    rules that follow from that state.

    A blocking client is connected by its constructor; an async one by ``connect()``, so only
    an async client can be found not connected. Datagram clients never reach an end of stream
    nor break: for them ``_eof`` stays False and ``_broken`` None.
    """

    __slots__ = ("_broken", "_closed", "_eof", "_local", "_peer", "_socket")

    def __init__(self) -> None:
        # Set once connected (the addresses are read only once ``_socket`` is set).
        self._socket: Any = None
        self._peer: Address = ""
        self._local: Address = ""
        # Each changes once: closed by us; the server ended the stream; why the stream is
        # unusable (a framing error, a send cut short mid-frame).
        self._closed = False
        self._eof = False
        self._broken: str | None = None

    def is_closed(self) -> bool:
        """True once this program closed the client."""
        return self._closed

    @property
    def peer_address(self) -> Address:
        """The server's address: ``(host, port)``, or the socket path for Unix sockets.

        Raises:
            RuntimeError: the (async) client was never connected.
        """
        self._check_connected()
        return self._peer

    @property
    def local_address(self) -> Address:
        """This end's address: ``(host, port)``, or a path (``""`` if unnamed) for Unix sockets.

        Raises:
            RuntimeError: the (async) client was never connected.
        """
        self._check_connected()
        return self._local

    @property
    def socket(self) -> SocketProxy:
        """The client's socket, for options such as ``SO_KEEPALIVE`` (see ``SocketProxy``).

        Raises:
            RuntimeError: the (async) client was never connected.
        """
        self._check_connected()
        return SocketProxy(self._socket)

    def _connected(self, sock: Any, peer: Any, local: Any) -> None:
        self._socket = sock
        self._peer = normalize_address(peer)
        self._local = normalize_address(local)

    def _check_connected(self) -> None:
        if self._socket is None:
            raise self._not_connected()

    def _not_connected(self) -> RuntimeError:
        return RuntimeError(
            "the client is not connected: use 'async with client:' or 'await client.connect()'"
        )

    def _unusable(self) -> Exception:
        """What a call on a client without a usable connection raises: closed by us, broken,
        or (an async client) not connected yet."""
        if self._closed or self._broken is not None:
            return unusable_error(self._closed, self._broken)
        return self._not_connected()

    def _break(self, exc: FramingError) -> None:
        """The server's stream cannot be split into messages any more: make it unusable."""
        self._broken = (
            "the connection is unusable: the server sent bytes that cannot be split into "
            f"messages ({type(exc).__name__}: {exc})"
        )
        self._shut_down()

    def _shut_down(self) -> None:
        """Stop the connection at once after ``_break`` (the stream clients say how)."""

    def _ends_iteration(self, exc: Exception) -> bool:
        """Whether ``exc``, raised by ``recv_packet``, ends ``iter_received_packets`` quietly.

        A timeout ends it, and so does the end of the stream the server closed (the messages
        are all received); a broken connection, a client this program closed (a
        ``ClosedResourceError``, though a ``ConnectionError`` too) or a datagram error is
        raised.
        """
        if isinstance(exc, TimeoutError):
            return True
        return self._eof and self._broken is None and not isinstance(exc, ClosedResourceError)


class TLSClientMixin(ClientBase):
    """The TLS properties of the TCP clients, blocking and async: what the handshake said,
    recorded once when the client connects (``_tls_info``: None without TLS), so they can be
    read at any time after, even once the client is closed."""

    __slots__ = ()

    _tls_info: TLSInfo | None

    @property
    def tls_peer_certificate(self) -> dict[str, Any] | None:
        """The server's certificate, as :meth:`ssl.SSLSocket.getpeercert` returns it (a dict
        with ``subject``, ``issuer``, ``subjectAltName``, ``notAfter``...); ``{}`` when the
        context does not verify certificates (``CERT_NONE``); None without TLS.

        Raises:
            RuntimeError: the (async) client was never connected.
        """
        self._check_connected()
        return None if self._tls_info is None else self._tls_info.peer_certificate

    @property
    def tls_cipher(self) -> tuple[str, str, int] | None:
        """The cipher in use: ``(name, protocol version, secret bits)``, as
        :meth:`ssl.SSLSocket.cipher` returns it; None without TLS.

        Raises:
            RuntimeError: the (async) client was never connected.
        """
        self._check_connected()
        return None if self._tls_info is None else self._tls_info.cipher

    @property
    def tls_version(self) -> str | None:
        """The TLS version negotiated, such as ``"TLSv1.3"``; None without TLS.

        Raises:
            RuntimeError: the (async) client was never connected.
        """
        self._check_connected()
        return None if self._tls_info is None else self._tls_info.version
