"""The application module whose handler ``greeter_tests.py`` tests.

It can be served from this directory with
``server-framework serve greeter:Greeter --tcp 127.0.0.1:9000 --udp 127.0.0.1:9000``.
"""

from __future__ import annotations

from typing import Any

from handlers import RequestResponseHandler


class Greeter(RequestResponseHandler[Any, Any]):
    """Answers ``{"name": "you"}`` with ``{"greeting": "hello, you"}``.

    A RequestResponseHandler is both a stream and a datagram handler, so one object serves
    the TCP and the UDP listeners alike.
    """

    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting

    async def respond(self, request: Any, client: Any) -> Any:
        if not isinstance(request, dict):
            return {"error": 'send an object, e.g. {"name": "you"}'}
        return {"greeting": f"{self.greeting}, {request.get('name', 'world')}"}
