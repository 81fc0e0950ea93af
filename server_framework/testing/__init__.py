"""The testing kit: serve a handler for the length of a test, talk to it over real sockets.

::

    from server_framework.testing import serve_in_background

    def test_greeter() -> None:
        with serve_in_background(Greeter(), StreamProtocol(JSONSerializer())) as served:
            assert served.client.request({"name": "a"}) == {"greeting": "hello, a"}

- `serve_in_background` serves on a free port (or a temporary Unix socket), with ``with``
  (a server thread, a blocking client) or ``async with`` (a task of the running asyncio,
  uvloop or trio loop, an async client), over TCP, TLS, UDP, Unix stream or Unix datagram.
- `server_framework.testing.faults`: peers that misbehave (bytes trickled, a connection reset
  mid-frame, a client that stops reading, garbage), to check that a server survives them.
- The pytest plugin (`server_framework.testing.pytest_plugin`, loaded by pytest once the
  package is installed): the ``sf_serve`` fixture, and ``@pytest.mark.server_framework`` to run
  ``async def`` tests on every loop.

Import it explicitly: ``import server_framework`` does not load it.
"""

from . import faults
from ._clients import DEFAULT_TIMEOUT, AsyncClient, Client
from ._serve import (
    SHUTDOWN_TIMEOUT,
    AsyncServed,
    Served,
    ServeFactory,
    ServeInBackground,
    Transport,
    serve_in_background,
)
from ._tls import tls_contexts

__all__ = [
    "DEFAULT_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "AsyncClient",
    "AsyncServed",
    "Client",
    "ServeFactory",
    "ServeInBackground",
    "Served",
    "Transport",
    "faults",
    "serve_in_background",
    "tls_contexts",
]
