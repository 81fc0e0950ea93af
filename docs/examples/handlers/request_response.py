"""A request/response service: one typed request in, one typed response out, no generator.

Clients send a batch of measurements, ``{"values": [1.5, 2.0, 4.25]}``, and get a summary back,
``{"count": 3, "mean": 2.58..., "min": 1.5, "max": 4.25}``. Requests are decoded and validated
by msgspec straight into ``Sample``; a request that does not validate is answered with an
``Error`` and the connection stays open.

Run it with ``python request_response.py`` and try ``nc localhost 9000``.
"""

from __future__ import annotations

from typing import Any

import msgspec

import server_framework as sf


class Sample(msgspec.Struct):
    values: list[float]


class Summary(msgspec.Struct):
    count: int
    mean: float
    min: float
    max: float


class Error(msgspec.Struct):
    error: str


# Decode every message as a Sample: msgspec validates while it parses.
SERIALIZER = sf.JSONSerializer(type=Sample)


class StatsHandler(sf.RequestResponseHandler[Sample, Summary | Error]):
    async def respond(self, request: Sample, client: Any) -> Summary | Error:
        # No blocking here: the server calls respond() inline, for every request it has
        # received, and writes the replies together. (For blocking code, see ThreadedHandler.)
        values = request.values
        if not values:
            return Error("values must not be empty")
        return Summary(len(values), sum(values) / len(values), min(values), max(values))

    async def on_bad_message(self, error: sf.ProtocolError, client: Any) -> Summary | Error:
        # The default closes the connection. A message that does not decode leaves a line
        # stream in sync, so we answer it and go on; other errors (framing) still close.
        if isinstance(error, sf.DeserializeError):
            return Error(error.reason)
        raise error


async def main() -> None:
    server = sf.AsyncTCPServer("localhost", 9000, sf.StreamProtocol(SERIALIZER), StatsHandler())
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main)
