"""server_framework: a fast TCP/UDP server framework on asyncio, uvloop or trio.

The names most programs need are here::

    import server_framework

    async def main() -> None:
        backend = server_framework.current_backend()
        await backend.run_in_thread(blocking_setup)

    server_framework.run(main)               # uvloop where installed, else asyncio
    server_framework.run(main, backend="trio")

The event-loop layer lives in `server_framework.backend`, the thread tools in
`server_framework.threads`, the errors in `server_framework.exceptions`, and the clients (also
re-exported here) in `server_framework.clients`.
"""

from server_framework.backend import AsyncBackend, ThreadsPortal, get_backend, run
from server_framework.backend import current as current_backend
from server_framework.clients import (
    AsyncTCPClient,
    AsyncUDPClient,
    AsyncUnixDatagramClient,
    AsyncUnixStreamClient,
    TCPClient,
    UDPClient,
    UnixDatagramClient,
    UnixStreamClient,
)
from server_framework.exceptions import (
    BindError,
    BrokenResourceError,
    BusyResourceError,
    ClosedResourceError,
)
from server_framework.log import configure_logging
from server_framework.threads import AsyncExecutor

__all__ = [
    "AsyncBackend",
    "AsyncExecutor",
    "AsyncTCPClient",
    "AsyncUDPClient",
    "AsyncUnixDatagramClient",
    "AsyncUnixStreamClient",
    "BindError",
    "BrokenResourceError",
    "BusyResourceError",
    "ClosedResourceError",
    "TCPClient",
    "ThreadsPortal",
    "UDPClient",
    "UnixDatagramClient",
    "UnixStreamClient",
    "configure_logging",
    "current_backend",
    "get_backend",
    "run",
]
