"""The async clients against our own servers, over real sockets, on asyncio, uvloop and trio.

Server and client run in the test's loop; the blocking clients are tested in
``test_clients.py``.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

import pytest

from handlers import (
    DatagramEchoHandler,
    EchoHandler,
)
from protocols import (
    DatagramProtocol,
    DeserializeError,
    FrameTooLargeError,
    JSONSerializer,
    LineFramer,
    StreamProtocol,
    StringSerializer,
)
from server_framework.backend import current
from server_framework.clients import (
    AsyncTCPClient,
    AsyncUDPClient,
    AsyncUnixDatagramClient,
    AsyncUnixStreamClient,
)
from server_framework.exceptions import BusyResourceError, ClosedResourceError
from server_framework.servers import (
    AsyncTCPServer,
    AsyncUnixStreamServer,
)

from client_helpers import (
    DATAGRAM_PROTOCOLS,
    JSON_DATAGRAMS,
    JSON_LINES,
    MSGPACK_FRAMES,
    STREAM_PROTOCOLS,
    BadThenGood,
    Burst,
    DatagramBadThenGood,
    datagram_server,
    stream_server,
)
from server_helpers import CLIENT_TIMEOUT, serving

# -- fixtures and helpers ----------------------------------------------------------------------


def stream_client(address: Any, protocol: Any = JSON_LINES, **options: Any) -> Any:
    if isinstance(address, str):
        return AsyncUnixStreamClient(address, protocol, **options)
    return AsyncTCPClient(address, protocol, **options)


def datagram_client(address: Any, protocol: Any = JSON_DATAGRAMS, **options: Any) -> Any:
    if isinstance(address, str):
        return AsyncUnixDatagramClient(address, protocol, **options)
    return AsyncUDPClient(address, protocol, **options)


async def wait_receiving(client: Any) -> None:
    """Let the loop run until ``client`` has a task blocked in a receive (no sleeping)."""
    backend = current()
    while not client._receiving:
        await backend.checkpoint()


# -- echo over every transport ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_stream_echo_pipelined(
    backend_name: str, kind: str, codec: str, tmp_dir: str
) -> None:
    protocol = STREAM_PROTOCOLS[codec]
    messages = [{"seq": i, "data": "x" * (i % 10 * 100)} for i in range(200)]
    async with serving(stream_server(kind, tmp_dir, EchoHandler(), protocol)) as server:
        address = server.get_addresses()[0]
        async with stream_client(address, protocol) as client:
            for message in messages[:100]:
                await client.send_packet(message)
            await client.send_packets(messages[100:])  # one write for the batch
            await client.send_packets([])
            assert [await client.recv_packet(CLIENT_TIMEOUT) for _ in messages] == messages
            assert client.peer_address == address
            assert client.socket.type == socket.SOCK_STREAM
            if kind == "tcp":
                assert client.local_address[0] == "127.0.0.1"
                assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            else:
                assert client.local_address == ""


@pytest.mark.parametrize("kind", ["udp", "unix"])
@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_datagram_echo(backend_name: str, kind: str, codec: str, tmp_dir: str) -> None:
    protocol = DATAGRAM_PROTOCOLS[codec]
    handler = DatagramEchoHandler()
    async with serving(datagram_server(kind, tmp_dir, handler, protocol)) as server:
        address = server.get_addresses()[0]
        async with datagram_client(address, protocol) as client:
            for i in range(20):
                await client.send_packet({"seq": i})
                assert await client.recv_packet(CLIENT_TIMEOUT) == {"seq": i}
            assert client.peer_address == address
            assert client.socket.type == socket.SOCK_DGRAM
            local = client.local_address
            if kind == "unix":
                assert isinstance(local, str)
                assert os.path.exists(local)
        if kind == "unix":
            assert not os.path.exists(local)


async def test_unix_datagram_local_path(backend_name: str, tmp_dir: str) -> None:
    chosen = os.path.join(tmp_dir, "chosen.sock")
    async with serving(datagram_server("unix", tmp_dir, DatagramEchoHandler())) as server:
        client = AsyncUnixDatagramClient(
            server.get_addresses()[0], JSON_DATAGRAMS, local_path=chosen
        )
        async with client:
            assert client.local_address == chosen
            await client.send_packet("hi")
            assert await client.recv_packet(CLIENT_TIMEOUT) == "hi"
            assert [p async for p in client.iter_received_packets(timeout=0.01)] == []
    assert not os.path.exists(chosen)


async def test_tls_echo(backend_name: str, tls_contexts: Any) -> None:
    server_context, client_context = tls_contexts
    server = AsyncTCPServer("127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=server_context)
    async with serving(server):
        address = server.get_addresses()[0]
        async with AsyncTCPClient(address, JSON_LINES, ssl=client_context) as client:
            for i in range(50):
                await client.send_packet({"secret": i, "pad": "p" * 3000})
            assert [
                (await client.recv_packet(CLIENT_TIMEOUT))["secret"] for _ in range(50)
            ] == list(range(50))
        with pytest.raises(ssl.SSLCertVerificationError):
            async with AsyncTCPClient(address, JSON_LINES, ssl=ssl.create_default_context()):
                pass


# -- receiving: timeouts, iteration, the end of the connection -----------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_recv_timeout_then_usable(backend_name: str, kind: str, tmp_dir: str) -> None:
    async with (
        serving(stream_server(kind, tmp_dir, EchoHandler())) as server,
        stream_client(server.get_addresses()[0]) as client,
    ):
        with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
            await client.recv_packet(timeout=0.05)
        with pytest.raises(TimeoutError):
            await client.recv_packet(timeout=0)
        await client.send_packet("after")
        assert await client.recv_packet(CLIENT_TIMEOUT) == "after"
        with pytest.raises(ValueError, match="timeout"):
            await client.recv_packet(timeout=-1)


@pytest.mark.parametrize("kind", ["udp", "unix"])
async def test_datagram_recv_timeout_then_usable(
    backend_name: str, kind: str, tmp_dir: str
) -> None:
    async with (
        serving(datagram_server(kind, tmp_dir, DatagramEchoHandler())) as server,
        datagram_client(server.get_addresses()[0]) as client,
    ):
        with pytest.raises(TimeoutError, match="no datagram received"):
            await client.recv_packet(timeout=0.05)
        await client.send_packet("after")
        assert await client.recv_packet(CLIENT_TIMEOUT) == "after"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_iter_received_packets(backend_name: str, kind: str, tmp_dir: str) -> None:
    async with (
        serving(stream_server(kind, tmp_dir, Burst())) as server,
        stream_client(server.get_addresses()[0]) as client,
    ):
        await client.send_packet({"count": 30, "close": False})
        first = await client.recv_packet(CLIENT_TIMEOUT)
        # The other 29 came in the same write: the iteration ends on the timeout after them.
        rest = [p async for p in client.iter_received_packets(timeout=0.1)]
        assert [first, *rest] == list(range(30))
        await client.send_packet({"count": 20, "close": True})
        assert [p async for p in client.iter_received_packets()] == list(range(20))  # by EOF
        with pytest.raises(ConnectionError, match="the server closed the connection"):
            await client.recv_packet()
        with pytest.raises(ConnectionError, match="the server closed the connection"):
            await client.send_packet({"count": 1, "close": False})


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_bad_message_then_good_one(backend_name: str, kind: str, tmp_dir: str) -> None:
    text_lines = StreamProtocol(StringSerializer())
    async with (
        serving(stream_server(kind, tmp_dir, BadThenGood(), text_lines)) as server,
        stream_client(server.get_addresses()[0]) as client,  # JSON client, text server
    ):
        await client.send_packet({"a": 1})
        with pytest.raises(DeserializeError, match="malformed JSON"):
            await client.recv_packet(CLIENT_TIMEOUT)
        assert await client.recv_packet(CLIENT_TIMEOUT) == {"a": 1}
        await client.send_packet([2])
        with pytest.raises(DeserializeError):
            async for _ in client.iter_received_packets(timeout=CLIENT_TIMEOUT):
                pass  # pragma: no cover - the first message is the bad one
        assert await client.recv_packet(CLIENT_TIMEOUT) == [2]  # usable after the iteration


@pytest.mark.parametrize("kind", ["udp", "unix"])
async def test_bad_datagram_then_good_one(backend_name: str, kind: str, tmp_dir: str) -> None:
    text = DatagramProtocol(StringSerializer())
    async with (
        serving(datagram_server(kind, tmp_dir, DatagramBadThenGood(), text)) as server,
        datagram_client(server.get_addresses()[0]) as client,
    ):
        await client.send_packet({"a": 1})
        with pytest.raises(DeserializeError, match="malformed JSON"):
            await client.recv_packet(CLIENT_TIMEOUT)
        assert await client.recv_packet(CLIENT_TIMEOUT) == {"a": 1}


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_frame_too_large_makes_client_unusable(
    backend_name: str, kind: str, tmp_dir: str
) -> None:
    small = StreamProtocol(JSONSerializer(), LineFramer(max_frame_size=100))
    async with serving(stream_server(kind, tmp_dir, EchoHandler())) as server:
        client = stream_client(server.get_addresses()[0], small)
        async with client:
            await client.send_packet("ok")
            assert await client.recv_packet(CLIENT_TIMEOUT) == "ok"
            await client.send_packet("x" * 500)  # the echo is over the client's limit
            with pytest.raises(FrameTooLargeError):
                await client.recv_packet(CLIENT_TIMEOUT)
            with pytest.raises(ConnectionError, match=r"unusable.*FrameTooLargeError"):
                await client.recv_packet(CLIENT_TIMEOUT)
            with pytest.raises(ConnectionError, match="unusable"):
                await client.send_packet("again")
        with pytest.raises(ClosedResourceError):
            await client.recv_packet()


# -- connecting -------------------------------------------------------------------------------


async def test_connect_errors(backend_name: str, tmp_dir: str, tls_contexts: Any) -> None:
    with socket.socket() as listener:  # bound, not listening: connections are refused
        listener.bind(("127.0.0.1", 0))
        address = listener.getsockname()
        with pytest.raises(ConnectionRefusedError, match=rf"127\.0\.0\.1:{address[1]}.*running"):
            async with AsyncTCPClient(address, JSON_LINES):
                pass
    missing = os.path.join(tmp_dir, "missing.sock")
    with pytest.raises(FileNotFoundError, match=r"missing\.sock"):
        async with AsyncUnixStreamClient(missing, JSON_LINES):
            pass
    with pytest.raises(FileNotFoundError, match=r"missing\.sock"):
        async with AsyncUnixDatagramClient(missing, JSON_DATAGRAMS):
            pass
    assert os.listdir(tmp_dir) == []  # the client's own socket file was removed
    _, client_context = tls_contexts
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        client = AsyncTCPClient(
            silent.getsockname(), JSON_LINES, ssl=client_context, connect_timeout=0.1
        )
        with pytest.raises(TimeoutError, match=r"within connect_timeout=0\.1"):
            await client.connect()


async def test_udp_server_unreachable(backend_name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        address = placeholder.getsockname()
    async with AsyncUDPClient(address, JSON_DATAGRAMS) as client:
        await client.send_packet("anyone?")
        with pytest.raises(ConnectionRefusedError, match="not reachable"):
            await client.recv_packet(CLIENT_TIMEOUT)
        await client.send_packet("still usable")


async def test_lifecycle_errors(backend_name: str) -> None:
    client = AsyncTCPClient(("127.0.0.1", 1), JSON_LINES)
    with pytest.raises(RuntimeError, match="not connected"):
        await client.send_packet("x")
    with pytest.raises(RuntimeError, match="not connected"):
        client.peer_address  # noqa: B018
    with pytest.raises(TypeError, match="StreamProtocol"):
        AsyncTCPClient(("127.0.0.1", 1), JSON_DATAGRAMS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DatagramProtocol"):
        AsyncUDPClient(("127.0.0.1", 1), JSON_LINES)  # type: ignore[arg-type]
    async with serving(stream_server("tcp", "", EchoHandler())) as server:
        client = AsyncTCPClient(server.get_addresses()[0], JSON_LINES)
        async with client:
            with pytest.raises(RuntimeError, match="only once"):
                await client.connect()
        await client.aclose()
        assert client.is_closed()
        with pytest.raises(ClosedResourceError, match="closed"):
            await client.send_packet("x")
        with pytest.raises(ClosedResourceError):
            await client.recv_packet()
        with pytest.raises(ClosedResourceError):
            async for _ in client.iter_received_packets():
                pass  # pragma: no cover


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_reconnect_after_server_restart(backend_name: str, kind: str, tmp_dir: str) -> None:
    async with serving(stream_server(kind, tmp_dir, EchoHandler())) as first:
        address = first.get_addresses()[0]
        old = stream_client(address)
        await old.connect()
        await old.send_packet("one")
        assert await old.recv_packet(CLIENT_TIMEOUT) == "one"
    with pytest.raises(ConnectionError, match="the server closed the connection"):
        await old.recv_packet(CLIENT_TIMEOUT)
    with pytest.raises(ConnectionError):
        await old.send_packet("lost")
    await old.aclose()
    if kind == "tcp":
        second = AsyncTCPServer(address[0], address[1], JSON_LINES, EchoHandler())
    else:
        second = AsyncUnixStreamServer(address, JSON_LINES, EchoHandler())
    async with serving(second), stream_client(address) as new:
        await new.send_packet("two")
        assert await new.recv_packet(CLIENT_TIMEOUT) == "two"


# -- tasks and closing ------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_tasks_send_while_one_receives(
    backend_name: str, tls: bool, tls_contexts: Any
) -> None:
    server_context, client_context = tls_contexts
    senders, per_sender = 4, 100
    payload = "p" * 20000  # larger than what one write takes: partial writes would interleave
    server = AsyncTCPServer(
        "127.0.0.1", 0, JSON_LINES, EchoHandler(), ssl=server_context if tls else None
    )
    async with serving(server):
        address = server.get_addresses()[0]
        async with AsyncTCPClient(address, JSON_LINES, ssl=client_context if tls else None) as c:

            async def send(sender: int) -> None:
                for seq in range(per_sender):
                    await c.send_packet({"sender": sender, "seq": seq, "payload": payload})

            async def receive() -> None:
                next_seq = dict.fromkeys(range(senders), 0)
                for _ in range(senders * per_sender):
                    message = await c.recv_packet(CLIENT_TIMEOUT)
                    assert message["payload"] == payload
                    assert message["seq"] == next_seq[message["sender"]]
                    next_seq[message["sender"]] += 1

            async with current().create_task_group() as tg:
                tg.start_soon(receive)
                for sender in range(senders):
                    tg.start_soon(send, sender)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
async def test_second_receiver_is_busy_and_aclose_wakes_the_first(
    backend_name: str, kind: str, tmp_dir: str
) -> None:
    outcome: list[BaseException] = []
    if kind == "tcp":
        server = stream_server("tcp", tmp_dir, EchoHandler())
    else:
        server = datagram_server("udp", tmp_dir, DatagramEchoHandler())
    async with serving(server):
        address = server.get_addresses()[0]
        client = stream_client(address) if kind == "tcp" else datagram_client(address)
        await client.connect()

        async def receive() -> None:
            try:
                await client.recv_packet()
            except ClosedResourceError as exc:
                outcome.append(exc)

        async with current().create_task_group() as tg:
            tg.start_soon(receive)
            await wait_receiving(client)
            with pytest.raises(BusyResourceError, match="another task"):
                await client.recv_packet(timeout=0)
            await client.aclose()
        await client.aclose()
    assert len(outcome) == 1


async def test_cancelled_receive_loses_nothing(backend_name: str) -> None:
    async with (
        serving(stream_server("tcp", "", Burst())) as server,
        stream_client(server.get_addresses()[0]) as client,
    ):
        backend = current()
        with backend.move_on_after(0.05):
            await client.recv_packet()  # cancelled: nothing to receive yet
        await client.send_packet({"count": 3, "close": False})
        assert [await client.recv_packet(CLIENT_TIMEOUT) for _ in range(3)] == [0, 1, 2]


def deaf_listener() -> socket.socket:
    """A TCP listener that never accepts nor reads: a sender fills small buffers, then waits."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by connections
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    return listener


async def test_cancelled_send(backend_name: str) -> None:
    backend = current()
    with deaf_listener() as listener:
        client = AsyncTCPClient(listener.getsockname(), MSGPACK_FRAMES)
        await client.connect()
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with backend.move_on_after(0.1) as scope:
            await client.send_packet(b"x" * 4_000_000)  # cannot all go out: nobody reads
        assert scope.cancelled_caught
        if backend_name == "trio":
            # Part of the frame was written: the stream can no longer be trusted.
            with pytest.raises(ConnectionError, match="unusable: a send was cancelled"):
                await client.send_packet(b"next")
        else:
            # asyncio queued the whole frame at once: the next frame simply follows it.
            with backend.move_on_after(0.1):
                await client.send_packet(b"next")
        with backend.move_on_after(0.1) as scope:
            await client.aclose()  # cannot flush: cancelled, it closes abruptly
        assert client.is_closed()
        with pytest.raises(ClosedResourceError):
            await client.send_packet(b"after")
