"""Clients for server_framework's servers (or any server speaking the same protocol).

Blocking clients, for scripts, tests and threads (one client may be shared by threads):
:class:`TCPClient` (TLS with ``ssl=``), :class:`UnixStreamClient`, :class:`UDPClient`,
:class:`UnixDatagramClient`. They connect in their constructor::

    with TCPClient(("localhost", 9000), StreamProtocol(JSONSerializer())) as client:
        client.send_packet({"hello": "world"})
        reply = client.recv_packet(timeout=5)

Async clients, on asyncio, uvloop or trio (whichever runs them): :class:`AsyncTCPClient`,
:class:`AsyncUnixStreamClient`, :class:`AsyncUDPClient`, :class:`AsyncUnixDatagramClient`.
They connect on ``async with`` (or ``await client.connect()``)::

    async with AsyncTCPClient(("localhost", 9000), protocol) as client:
        await client.send_packet({"hello": "world"})
        reply = await client.recv_packet(timeout=5)

Options and extras of the stream clients (blocking and async alike):

- ``ssl=True`` (TCP): TLS with :func:`ssl.create_default_context`, the server's certificate
  checked against ``server_hostname`` (default: the host connected to); or ``ssl=`` a context.
  ``tls_peer_certificate`` (and ``tls_peer_certificate_der``), ``tls_cipher`` and
  ``tls_version`` say what the handshake agreed.
- A TCP host name's addresses are raced as RFC 8305 says ("happy eyeballs":
  ``happy_eyeballs_delay``, 0.25 s by default; ``None`` for one at a time);
  ``local_address=(host, port)`` binds the socket before connecting.
- ``from_socket(sock, protocol)`` makes a client over a socket connected elsewhere (the async
  ones take it over on the loop that runs ``connect()``).
- ``send_eof()`` half-closes the connection (not over TLS: ``NotImplementedError``); receiving
  goes on until the server closes.
- The blocking clients' ``send_packet(packet, timeout=...)`` gives up with
  :class:`TimeoutError`: the client is still usable if nothing was written, else the connection
  is shut down (the error says which).
- The async clients' ``backend()`` is the backend of the loop they run in.

A client's protocol is the server's seen from the other side: it encodes requests and decodes
responses (``StreamProtocol[Request, Response]`` where the server has
``StreamProtocol[Response, Request]``).

Errors: a timeout is :class:`TimeoutError`; a connection the server closed or broke is
:class:`ConnectionError`; a client this program closed raises
:class:`~server_framework.exceptions.ClosedResourceError` (a ``ConnectionError`` too, so
``except ConnectionError`` catches every end of a connection: catch ``ClosedResourceError``
first to tell them apart); a bad message from the server raises
its :class:`~protocols.ProtocolError` (after a ``DeserializeError`` the client is still usable,
after a ``FramingError`` it is not). When the server's bytes form no message (or it sent
nothing), a stream client's timeout or end-of-stream error says what came and what it looks
like (TLS, length-prefixed frames, text...: ``protocols.diagnostics.likely_cause``).
"""

from ._async_datagram import AsyncUDPClient, AsyncUnixDatagramClient
from ._async_stream import AsyncTCPClient, AsyncUnixStreamClient
from ._common import DEFAULT_CONNECT_TIMEOUT
from ._sync_datagram import UDPClient, UnixDatagramClient
from ._sync_stream import TCPClient, UnixStreamClient

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "AsyncTCPClient",
    "AsyncUDPClient",
    "AsyncUnixDatagramClient",
    "AsyncUnixStreamClient",
    "TCPClient",
    "UDPClient",
    "UnixDatagramClient",
    "UnixStreamClient",
]
