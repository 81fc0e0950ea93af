"""server_framework: a fast TCP/UDP server framework on asyncio, uvloop or trio.

One import gives a program everything it needs to serve, and to talk to a server::

    from typing import Any

    import server_framework as sf

    class Echo(sf.StreamRequestHandler[Any, Any]):
        async def handle(self, client: sf.StreamClient[Any]):
            request = yield
            await client.send_packet(request)

    async def main() -> None:
        protocol = sf.StreamProtocol(sf.JSONSerializer())
        async with sf.AsyncTCPServer("127.0.0.1", 9000, protocol, Echo()) as server:
            await server.serve_forever()

    sf.run(main)                  # uvloop where installed, else asyncio; Ctrl-C drains, exits 130
    sf.run(main, backend="trio")  # the very same code on trio

The face re-exports, from their homes: the servers (:mod:`server_framework.servers`), the
handler bases and ready-made handlers (:mod:`handlers`), the protocols, serializers, wrappers,
framers and their errors (:mod:`protocols`), the clients (:mod:`server_framework.clients`),
the event-loop layer (:mod:`server_framework.backend`), :class:`AsyncExecutor` and the errors
(:mod:`server_framework.exceptions`). The servers, handlers and protocols are imported on first
use (``handlers`` and ``protocols`` themselves import parts of this package). The testing kit is
a submodule to import explicitly: ``server_framework.testing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server_framework._shadow import check_siblings

check_siblings()  # a user's handlers.py or protocols/ first on sys.path: one clear line

from server_framework.backend import (  # noqa: E402
    AsyncBackend,
    ThreadsPortal,
    get_backend,
    run,
)
from server_framework.backend import current as current_backend  # noqa: E402
from server_framework.clients import (  # noqa: E402
    AsyncTCPClient,
    AsyncUDPClient,
    AsyncUnixDatagramClient,
    AsyncUnixStreamClient,
    TCPClient,
    UDPClient,
    UnixDatagramClient,
    UnixStreamClient,
)
from server_framework.exceptions import (  # noqa: E402
    BindError,
    BrokenResourceError,
    BusyResourceError,
    ClosedResourceError,
)
from server_framework.log import configure_logging  # noqa: E402
from server_framework.threads import AsyncExecutor  # noqa: E402

#: The names imported on first use, and the module each comes from.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "AsyncTCPServer",
            "AsyncUDPServer",
            "AsyncUnixDatagramServer",
            "AsyncUnixStreamServer",
            "AsyncStreamServerBase",
            "AsyncDatagramServerBase",
            "StandaloneTCPServer",
            "StandaloneUDPServer",
            "StandaloneUnixDatagramServer",
            "StandaloneUnixStreamServer",
        ),
        "server_framework.servers",
    ),
    **dict.fromkeys(
        (
            "DatagramClient",
            "DatagramEchoHandler",
            "DatagramRequestHandler",
            "DispatchHandler",
            "EchoHandler",
            "RecvParams",
            "RequestResponseHandler",
            "StreamClient",
            "StreamRequestHandler",
            "ThreadedHandler",
            "check_handler",
            "on",
        ),
        "handlers",
    ),
    **dict.fromkeys(
        (
            "BZ2Wrapper",
            "Base64Wrapper",
            "BytesSerializer",
            "CBORSerializer",
            "Converter",
            "DatagramProtocol",
            "DeserializeError",
            "FixedSizeFramer",
            "FrameTooLargeError",
            "Framer",
            "FramingError",
            "JSONDocumentFramer",
            "JSONSerializer",
            "LZMAWrapper",
            "LengthPrefixFramer",
            "LineFramer",
            "MsgPackSerializer",
            "NamedTupleSerializer",
            "PickleSerializer",
            "ProtocolError",
            "SerializeError",
            "Serializer",
            "StapledSerializer",
            "StreamProtocol",
            "StringSerializer",
            "StructSerializer",
            "ZlibWrapper",
        ),
        "protocols",
    ),
}

if TYPE_CHECKING:  # what the names below are, for type checkers and IDEs
    from handlers import (
        DatagramClient,
        DatagramEchoHandler,
        DatagramRequestHandler,
        DispatchHandler,
        EchoHandler,
        RecvParams,
        RequestResponseHandler,
        StreamClient,
        StreamRequestHandler,
        ThreadedHandler,
        check_handler,
        on,
    )
    from protocols import (
        Base64Wrapper,
        BytesSerializer,
        BZ2Wrapper,
        CBORSerializer,
        Converter,
        DatagramProtocol,
        DeserializeError,
        FixedSizeFramer,
        Framer,
        FrameTooLargeError,
        FramingError,
        JSONDocumentFramer,
        JSONSerializer,
        LengthPrefixFramer,
        LineFramer,
        LZMAWrapper,
        MsgPackSerializer,
        NamedTupleSerializer,
        PickleSerializer,
        ProtocolError,
        SerializeError,
        Serializer,
        StapledSerializer,
        StreamProtocol,
        StringSerializer,
        StructSerializer,
        ZlibWrapper,
    )
    from server_framework.servers import (
        AsyncDatagramServerBase,
        AsyncStreamServerBase,
        AsyncTCPServer,
        AsyncUDPServer,
        AsyncUnixDatagramServer,
        AsyncUnixStreamServer,
        StandaloneTCPServer,
        StandaloneUDPServer,
        StandaloneUnixDatagramServer,
        StandaloneUnixStreamServer,
    )
else:

    def __getattr__(name: str) -> Any:
        """Import a lazily re-exported name on first use, then keep it in this module."""
        home = _LAZY.get(name)
        if home is None:
            raise AttributeError(f"module 'server_framework' has no attribute {name!r}")
        import importlib  # noqa: PLC0415

        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AsyncBackend",
    "AsyncDatagramServerBase",
    "AsyncExecutor",
    "AsyncStreamServerBase",
    "AsyncTCPClient",
    "AsyncTCPServer",
    "AsyncUDPClient",
    "AsyncUDPServer",
    "AsyncUnixDatagramClient",
    "AsyncUnixDatagramServer",
    "AsyncUnixStreamClient",
    "AsyncUnixStreamServer",
    "BZ2Wrapper",
    "Base64Wrapper",
    "BindError",
    "BrokenResourceError",
    "BusyResourceError",
    "BytesSerializer",
    "CBORSerializer",
    "ClosedResourceError",
    "Converter",
    "DatagramClient",
    "DatagramEchoHandler",
    "DatagramProtocol",
    "DatagramRequestHandler",
    "DeserializeError",
    "DispatchHandler",
    "EchoHandler",
    "FixedSizeFramer",
    "FrameTooLargeError",
    "Framer",
    "FramingError",
    "JSONDocumentFramer",
    "JSONSerializer",
    "LZMAWrapper",
    "LengthPrefixFramer",
    "LineFramer",
    "MsgPackSerializer",
    "NamedTupleSerializer",
    "PickleSerializer",
    "ProtocolError",
    "RecvParams",
    "RequestResponseHandler",
    "SerializeError",
    "Serializer",
    "StandaloneTCPServer",
    "StandaloneUDPServer",
    "StandaloneUnixDatagramServer",
    "StandaloneUnixStreamServer",
    "StapledSerializer",
    "StreamClient",
    "StreamProtocol",
    "StreamRequestHandler",
    "StringSerializer",
    "StructSerializer",
    "TCPClient",
    "ThreadedHandler",
    "ThreadsPortal",
    "UDPClient",
    "UnixDatagramClient",
    "UnixStreamClient",
    "ZlibWrapper",
    "check_handler",
    "configure_logging",
    "current_backend",
    "get_backend",
    "on",
    "run",
]
