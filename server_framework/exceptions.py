"""The errors of server_framework, named by what happened.

Three resource errors say *who* ended a resource's usefulness, so that a caller can decide
what to do without parsing messages:

- `ClosedResourceError`: this side closed it (a programming or shutdown-order issue);
- `BrokenResourceError`: the peer or the operating system broke it (a network fact; log it and
  move on);
- `BusyResourceError`: two tasks tried to use it at the same time (a concurrency bug).

`ClosedResourceError` and `BrokenResourceError` are :class:`ConnectionError` subclasses (so
:class:`OSError`, with ``errno`` None): code written ``except ConnectionError:`` around a
client or a connection also catches a resource that is no longer usable, whoever ended it, as
EasyNetwork's ``ClientClosedError`` (a ``ConnectionError``) is caught. Catch the narrower class
first when the two cases need different answers.

Errors of the wire format live in ``protocols`` (``ProtocolError`` and its subclasses).
"""

from __future__ import annotations

__all__ = ["BindError", "BrokenResourceError", "BusyResourceError", "ClosedResourceError"]


class ClosedResourceError(ConnectionError):
    """The resource was closed by this side, and is used afterwards.

    Raised, for example, when a task sends on a connection that the server (or the handler
    itself) has already closed, or when a client is used after ``close()``. It points at
    shutdown ordering or at a missing check of ``is_closing()`` / ``is_closed()``, never at
    the peer. A :class:`ConnectionError` (``errno`` None): ``except ConnectionError`` catches
    it.
    """


class BrokenResourceError(ConnectionError):
    """The peer or the operating system broke the resource.

    Raised, for example, when the peer reset the connection, or when a write fails with
    ``EPIPE``. The underlying ``OSError`` (when there is one) is kept as ``__cause__``. Nothing
    is wrong with the program: the usual answer is to log it and let the connection go. A
    :class:`ConnectionError` (``errno`` None): ``except ConnectionError`` catches it.
    """


class BusyResourceError(Exception):
    """Two tasks tried to use the same resource at the same time.

    Raised, for example, when two tasks wait to receive on the same connection at once. This
    is a concurrency bug in the caller: serialize the access (a lock) or use one task.
    """


class BindError(OSError):
    """A server's socket could not be bound; the message names the transport and the address.

    ``str(error)`` is one line, the same that the command line prints, e.g.
    ``tcp 127.0.0.1:9000: cannot bind: Address already in use``. It is an :class:`OSError`
    with the ``errno`` of the failure (e.g. ``errno.EADDRINUSE``), which stays its
    ``__cause__``; ``transport`` and ``address`` say which socket it was.
    """

    def __init__(self, transport: str, address: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        #: ``"tcp"``, ``"udp"``, ``"unix"`` or ``"unix-datagram"``.
        self.transport = transport
        #: ``HOST:PORT`` (``*:PORT`` for every interface, ``[::1]:PORT``) or the socket path.
        self.address = address

    def __str__(self) -> str:
        return f"{self.transport} {self.address}: cannot bind: {self.strerror}"
