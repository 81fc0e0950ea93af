"""Tutorial: a typed JSON request/response service, validated by msgspec.

Clients send an order, ``{"item": "widget", "quantity": 12, "unit_price": 2.5}``, and get a
quote back, ``{"type": "Quote", "item": "widget", "total": 28.5, "discount": 0.05}``. A request
that does not validate gets ``{"type": "Error", "error": "invalid JSON message: Expected `int` >=
1 - at `$.quantity`"}`` and the connection stays open.

Run it with ``python docs/examples/tutorials/typed_service.py`` and try
``nc 127.0.0.1 9003``, or ``typed_client.py``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import msgspec

import server_framework as sf


class Order(msgspec.Struct, forbid_unknown_fields=True):
    """A request. msgspec checks every field (and the constraints) while it parses."""

    item: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    unit_price: Annotated[float, msgspec.Meta(gt=0)]


# Responses are tagged ("type": "Quote" or "Error") so a client can decode either one.
class Quote(msgspec.Struct, tag=True):
    item: str
    total: float
    discount: float


class Error(msgspec.Struct, tag=True):
    error: str


Reply = Quote | Error

# Built once, used for every message: every request is decoded straight into an Order.
PROTOCOL: sf.StreamProtocol[Reply, Order] = sf.StreamProtocol(sf.JSONSerializer(type=Order))


class QuoteService(sf.RequestResponseHandler[Order, Reply]):
    async def respond(self, request: Order, client: Any) -> Reply:
        # `request` is an Order, already validated: no isinstance or key checks here.
        discount = 0.05 if request.quantity >= 10 else 0.0
        total = round(request.quantity * request.unit_price * (1 - discount), 2)
        return Quote(request.item, total, discount)

    async def on_bad_message(self, error: sf.ProtocolError, client: Any) -> Reply | None:
        # A message that does not decode or validate: say why, in the client's terms
        # (msgspec's message names the field), and keep the connection.
        if isinstance(error, sf.DeserializeError):
            return Error(error.reason)
        raise error  # a framing error (a line over 1 MiB): the connection closes


def make_server(host: str, port: int) -> sf.AsyncTCPServer[Order, Reply]:
    return sf.AsyncTCPServer(host, port, PROTOCOL, QuoteService())


async def main() -> None:
    async with make_server("127.0.0.1", 9003) as server:
        print("serving on", server.get_addresses())
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main, backend="trio" if "--trio" in sys.argv else None)
