"""The one place that picks, for the loop running a server or a client, the code written for it.

asyncio and uvloop share one implementation (uvloop implements asyncio's loop API); trio has
its own. Each part is imported the first time a loop asks for it, so a trio program never
imports asyncio's transports and an asyncio program never imports trio. Only this module
compares a backend's name; everything above asks it.

The threads portal is the backend's own (``backend.create_threads_portal()``), since the
backend itself is picked by name in ``server_framework.backend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server_framework.backend import AsyncBackend
    from server_framework.clients._transport import Connector
    from server_framework.servers._base import Listener
    from server_framework.servers._options import DatagramOptions, StreamOptions

__all__ = ["connector", "datagram_listener", "is_trio", "stream_listener"]


def is_trio(backend: AsyncBackend) -> bool:
    """True if ``backend`` runs trio, False for asyncio and uvloop."""
    return backend.name == "trio"


def stream_listener(backend: AsyncBackend) -> type[Listener[StreamOptions]]:
    """The stream server listener class (TCP, TLS, Unix stream) for ``backend``'s loop."""
    if is_trio(backend):
        from server_framework.servers._trio import TrioStreamListener  # noqa: PLC0415

        return TrioStreamListener
    from server_framework.servers._asyncio import AsyncIOStreamListener  # noqa: PLC0415

    return AsyncIOStreamListener


def datagram_listener(backend: AsyncBackend) -> type[Listener[DatagramOptions]]:
    """The datagram server listener class (UDP, Unix datagram) for ``backend``'s loop."""
    if is_trio(backend):
        from server_framework.servers._trio import TrioDatagramListener  # noqa: PLC0415

        return TrioDatagramListener
    from server_framework.servers._asyncio_datagram import AsyncIODatagramListener  # noqa: PLC0415

    return AsyncIODatagramListener


def connector(backend: AsyncBackend) -> Connector:
    """The clients' connector (opens stream and datagram transports) for ``backend``'s loop."""
    if is_trio(backend):
        from server_framework.clients._trio import CONNECTOR  # noqa: PLC0415

        return CONNECTOR
    from server_framework.clients._asyncio import CONNECTOR as ASYNCIO_CONNECTOR  # noqa: PLC0415

    return ASYNCIO_CONNECTOR
