"""RequestResponseHandler: one request in, at most one response out, no generator to write."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncGenerator
from typing import Any, Generic, TypeVar

from protocols import ProtocolError

from .base import DatagramClient, DatagramRequestHandler, StreamClient, StreamRequestHandler

__all__ = ["RequestResponseHandler"]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

AnyClient = StreamClient[Any] | DatagramClient[Any]


class RequestResponseHandler(
    StreamRequestHandler[RequestT, ResponseT],
    DatagramRequestHandler[RequestT, ResponseT],
    Generic[RequestT, ResponseT],
):
    """Write ``respond``; the server sends what it returns. Works on stream and datagram servers.

    The servers recognise this class and call :meth:`respond` directly for each request, with
    no handler generator in between: the least per-request overhead the framework offers. (If
    you override :meth:`handle`, your generator is used instead, like any other handler.)

    Example::

        class Upper(RequestResponseHandler[str, str]):
            async def respond(self, request: str, client: Any) -> str:
                return request.upper()
    """

    @abstractmethod
    async def respond(self, request: RequestT, client: Any) -> ResponseT | None:
        """Return the response to ``request``, or ``None`` to send nothing.

        Raising closes this connection (stream) or ends this peer's client (datagram), after
        logging the error with the connection's context; other clients are unaffected.
        """

    async def on_bad_message(self, error: ProtocolError, client: Any) -> ResponseT | None:
        """Called with a message that could not be decoded; return a response, or ``None``.

        The default re-raises ``error``, which closes the connection. Override it to answer
        with an error message instead and keep the connection (the stream stays in sync after
        a :class:`~protocols.DeserializeError`; after a framing error it is closed anyway).
        """
        raise error

    async def handle(self, client: Any) -> AsyncGenerator[None, RequestT]:
        """The generator equivalent of what the servers do natively for this class."""
        send = client.send_packet
        while True:
            try:
                request = yield
            except ProtocolError as error:
                response = await self.on_bad_message(error, client)
            else:
                response = await self.respond(request, client)
            if response is not None:
                await send(response)
