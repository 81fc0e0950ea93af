"""EasyNetwork parity, the protocol rows: JSON documents written back to back
(``JSONDocumentFramer``), base64 with a signed checksum (``Base64Wrapper(checksum=key)``) and
one format to send, another to receive (``StapledSerializer``), served for real.

Real loopback sockets on asyncio, uvloop and trio, an echo handler, and a raw socket client
that writes the bytes in odd pieces (so that documents, base64 lines and length headers are
cut everywhere). The servers use the how-to's examples (docs/examples/howto/). None of these
protocols is one the compiled engine recognises: both engines run them through the generic
path (the protocol's own decoder and ``encode_into``), which the last tests check; run the file
with and without ``SERVER_FRAMEWORK_PURE_PYTHON=1`` to cover both.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import socket
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

import server_framework as sf
from protocols import (
    Base64Wrapper,
    DatagramProtocol,
    JSONDocumentFramer,
    JSONSerializer,
    MsgPackSerializer,
    StapledSerializer,
    StreamDecoder,
    StreamProtocol,
)
from server_framework import engine
from server_framework.backend import BackendName

from server_helpers import CLIENT_TIMEOUT, in_thread, serving

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "howto"

#: Chunk sizes the raw client cycles through: prime, so the cuts drift over the frames.
ODD_SIZES = (1, 2, 3, 5, 7, 11, 13, 1, 1, 17)

#: A signing key for the tests (the example reads it from APP_SIGNING_KEY, in hex).
KEY = bytes(range(100, 132))


def load(name: str) -> ModuleType:
    """Import docs/examples/howto/<name>.py under a name of its own."""
    module_name = f"docs_howto_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


json_documents = load("json_documents")
signed_messages = load("signed_messages")
stapled_serializer = load("stapled_serializer")


# --- the raw client -----------------------------------------------------------------------------


def send_in_odd_pieces(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` in ODD_SIZES pieces, pausing after each so that they arrive apart."""
    offset = index = 0
    while offset < len(data):
        size = ODD_SIZES[index % len(ODD_SIZES)]
        sock.sendall(data[offset : offset + size])
        offset += size
        index += 1
        time.sleep(0.001)


def raw_exchange(
    address: Any, data: bytes, decoder: StreamDecoder[Any], count: int
) -> tuple[list[Any], bytes]:
    """Connect, send ``data`` in odd pieces, read until ``decoder`` has ``count`` replies;
    return them and the raw bytes received."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_in_odd_pieces(sock, data)
        replies: list[Any] = []
        received = bytearray()
        while len(replies) < count:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed after {len(replies)} replies: {bytes(received)!r}")
            received += chunk
            decoder.feed(chunk)
            replies.extend(decoder)
        return replies, bytes(received)


def closed_after(address: Any, data: bytes) -> bytes:
    """Connect, send ``data`` in odd pieces and return what the server sent before closing."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            send_in_odd_pieces(sock, data)
        received = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return bytes(received)


def tcp_address(server: sf.AsyncTCPServer[Any, Any]) -> Any:
    return server.get_addresses()[0]


# --- JSON documents written back to back ----------------------------------------------------------

#: What JSON streaming peers write: documents back to back, any whitespace, pretty-printed,
#: brackets and escaped quotes inside strings, top-level strings, numbers and literals.
DOCUMENT_VALUES: list[Any] = [
    {"id": 1},
    {"id": 2},
    [3, "]", '\\"{'],
    "four",
    5,
    {"nested": {"a": [1, {"b": "}"}], "c": None}},
    {"pretty": [1, 2], "é": "✓"},
    True,
    None,
    -2.5,
    [],
]
DOCUMENT_STREAM = (
    b' {"id": 1}{"id":2}\n[3, "]", "\\\\\\"{"]  "four" 5\n'
    + b'{"nested":{"a":[1,{"b":"}"}],"c":null}}'
    + json.dumps({"pretty": [1, 2], "é": "✓"}, indent=2, ensure_ascii=False).encode()
    + b"true\r\nnull\t-2.5 []"
)


async def test_json_documents_echo(backend_name: BackendName) -> None:
    async with serving(json_documents.make_server(port=0)) as server:
        replies, raw = await in_thread(
            raw_exchange,
            tcp_address(server),
            DOCUMENT_STREAM,
            json_documents.PROTOCOL.decoder(),
            len(DOCUMENT_VALUES),
        )
    assert replies == DOCUMENT_VALUES
    # The replies are written one per line: JSON lines, which a line-framed peer reads too.
    lines = raw.split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == DOCUMENT_VALUES


class FeedCountingFramer(JSONDocumentFramer):
    """JSONDocumentFramer whose decoders record the size of every read the server feeds."""

    __slots__ = ("feeds",)

    def __init__(self) -> None:
        super().__init__()
        self.feeds: list[int] = []

    def decoder(self, deserialize: Any) -> StreamDecoder[Any]:
        decoder = super().decoder(deserialize)
        feed = decoder.feed
        feeds = self.feeds

        class Counting(StreamDecoder[Any]):
            def feed(self, data: Any) -> None:
                feeds.append(len(data))
                feed(data)

            def __next__(self) -> Any:
                return next(decoder)

        return Counting(deserialize, self.max_frame_size)


async def test_the_server_reads_the_documents_in_odd_pieces(backend_name: BackendName) -> None:
    """The raw client's pieces reach the server apart: documents are cut everywhere."""
    framer = FeedCountingFramer()
    protocol = StreamProtocol(JSONSerializer(), framer)
    server = sf.AsyncTCPServer("127.0.0.1", 0, protocol, sf.EchoHandler())
    async with serving(server):
        replies, _ = await in_thread(
            raw_exchange,
            tcp_address(server),
            DOCUMENT_STREAM,
            json_documents.PROTOCOL.decoder(),  # not the counting one: the server's alone
            len(DOCUMENT_VALUES),
        )
    assert replies == DOCUMENT_VALUES
    assert sum(framer.feeds) == len(DOCUMENT_STREAM)
    # About 25 pieces; a busy machine may let a few arrive together.
    assert len(framer.feeds) >= 5, framer.feeds


@pytest.mark.parametrize(
    ("bad", "replies_before"),
    [
        pytest.param(b'[1] } {"never": "read"}', b"[1]\n", id="stray-closing-bracket"),
        pytest.param(b'[1] {"a": [2}', b"[1]\n", id="mismatched-bracket"),
        pytest.param(b'[1] {"a": }', b"[1]\n", id="malformed-document"),
        pytest.param(b"[1] GET / HTTP/1.1\r\n\r\n", b"[1]\n", id="http-request"),
    ],
)
async def test_json_documents_bad_stream_closes_the_connection(
    backend_name: BackendName, bad: bytes, replies_before: bytes
) -> None:
    async with serving(json_documents.make_server(port=0)) as server:
        received = await in_thread(closed_after, tcp_address(server), bad)
    assert received == replies_before


async def test_json_documents_never_ending_document_is_refused(backend_name: BackendName) -> None:
    """The example's limit is 64 KiB: a document that never ends closes the connection once
    it is past that, and the server held no more than that of it."""
    async with serving(json_documents.make_server(port=0)) as server:
        data = b'[1] ["' + b"x" * (64 * 1024 + 10)
        with socket.create_connection(tcp_address(server), timeout=CLIENT_TIMEOUT) as sock:

            def run() -> bytes:
                received = bytearray()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(data)
                with contextlib.suppress(ConnectionResetError):
                    while chunk := sock.recv(65536):
                        received += chunk
                return bytes(received)

            assert await in_thread(run) == b"[1]\n"


# --- base64 with a signed checksum ---------------------------------------------------------------

SIGNED_MESSAGES: list[Any] = [{"op": "put", "blob": b"\x00\n\xff" * 20}, [1, "two"], "three", None]


async def test_signed_messages_echo(
    backend_name: BackendName, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_SIGNING_KEY", KEY.hex())
    assert signed_messages.load_key() == KEY
    client = signed_messages.signed_protocol(KEY)
    data = b"".join(client.encode(message) for message in SIGNED_MESSAGES)
    async with serving(signed_messages.make_server(port=0)) as server:
        replies, raw = await in_thread(
            raw_exchange, tcp_address(server), data, client.decoder(), len(SIGNED_MESSAGES)
        )
    assert replies == SIGNED_MESSAGES
    assert raw == data  # the same messages, signed with the same key


@pytest.mark.parametrize("forgery", ["other-key", "altered", "truncated", "unsigned"])
async def test_signed_messages_forgery_closes_the_connection(
    backend_name: BackendName, monkeypatch: pytest.MonkeyPatch, forgery: str
) -> None:
    monkeypatch.setenv("APP_SIGNING_KEY", KEY.hex())
    good = signed_messages.signed_protocol(KEY).encode("ok")
    payload = msgspec.msgpack.encode({"op": "drop everything"})
    if forgery == "other-key":
        bad = signed_messages.signed_protocol(bytes(32)).encode({"op": "drop everything"})
    elif forgery == "altered":
        decoded = bytearray(base64.b64decode(good.rstrip(b"\n")))
        decoded[0] ^= 1
        bad = base64.b64encode(decoded) + b"\n"
    elif forgery == "truncated":
        bad = good[:-9] + b"\n"
    else:
        bad = base64.b64encode(payload) + b"\n"
    async with serving(signed_messages.make_server(port=0)) as server:
        received = await in_thread(closed_after, tcp_address(server), good + bad + good)
    assert received == good  # the first message's echo; the forged one ends the connection


# --- one format to send, another to receive -------------------------------------------------------

STAPLED_MESSAGES: list[Any] = [{"op": "add", "args": [1, 2]}, ["x", None, 1.5], "ping", 7]


async def test_stapled_msgpack_requests_json_replies(backend_name: BackendName) -> None:
    client = stapled_serializer.CLIENT_PROTOCOL
    data = b"".join(client.encode(message) for message in STAPLED_MESSAGES)
    assert data[4:5] == b"\x82"  # MessagePack (a 2-entry map), not JSON
    async with serving(stapled_serializer.make_server(port=0)) as server:
        replies, raw = await in_thread(
            raw_exchange, tcp_address(server), data, client.decoder(), len(STAPLED_MESSAGES)
        )
        port = tcp_address(server)[1]
        assert await in_thread(stapled_serializer.ask, port, {"q": [1]}) == {"q": [1]}
    assert replies == STAPLED_MESSAGES
    assert raw[4:27] == b'{"op":"add","args":[1,2'  # the replies are JSON


async def test_stapled_request_in_the_wrong_format_closes_the_connection(
    backend_name: BackendName,
) -> None:
    client = stapled_serializer.CLIENT_PROTOCOL
    wrong = StreamProtocol(JSONSerializer(), sf.LengthPrefixFramer()).encode({"not": "msgpack"})
    async with serving(stapled_serializer.make_server(port=0)) as server:
        received = await in_thread(
            closed_after, tcp_address(server), client.encode(1) + wrong + client.encode(2)
        )
    assert received == b"\x00\x00\x00\x011"


# --- datagrams ------------------------------------------------------------------------------------

DATAGRAM_PROTOCOLS: dict[str, tuple[DatagramProtocol[Any, Any], DatagramProtocol[Any, Any]]] = {
    # (the server's protocol, the client's)
    "stapled": (
        DatagramProtocol(stapled_serializer.SERVER_SERIALIZER),
        DatagramProtocol(stapled_serializer.SERVER_SERIALIZER.swapped()),
    ),
    "signed": (
        DatagramProtocol(Base64Wrapper(MsgPackSerializer(), checksum=KEY)),
        DatagramProtocol(Base64Wrapper(MsgPackSerializer(), checksum=KEY)),
    ),
}


def udp_exchange(
    address: Any, client: DatagramProtocol[Any, Any], datagrams: list[bytes], count: int
) -> list[Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        for datagram in datagrams:
            sock.sendto(datagram, address)
        return [client.decode(sock.recv(65536)) for _ in range(count)]


@pytest.mark.parametrize("name", list(DATAGRAM_PROTOCOLS))
async def test_datagrams(backend_name: BackendName, name: str) -> None:
    """Each datagram is one message; a bad one is dropped (with its peer's handler) and the
    next good one is answered."""
    server_protocol, client = DATAGRAM_PROTOCOLS[name]
    messages: list[Any] = [{"a": [1, 2]}, "b"]
    server = sf.AsyncUDPServer("127.0.0.1", 0, server_protocol, sf.DatagramEchoHandler())
    async with serving(server):
        address = server.get_addresses()[0]
        replies = await in_thread(
            udp_exchange, address, client, [client.encode(m) for m in messages], 2
        )
    assert sorted(map(json.dumps, replies)) == sorted(map(json.dumps, messages))


# --- both engines: the generic path -------------------------------------------------------------

#: name: (a server's protocol, the protocol of its peer, a message the peer sends).
PROTOCOLS: dict[str, tuple[StreamProtocol[Any, Any], StreamProtocol[Any, Any], Any]] = {
    "json-documents": (json_documents.PROTOCOL, json_documents.PROTOCOL, ["x", {"y": "]"}]),
    "json-documents-bytes": (
        StreamProtocol(sf.BytesSerializer(), JSONDocumentFramer()),
        StreamProtocol(sf.BytesSerializer(), JSONDocumentFramer()),
        b'["x"]',
    ),
    "signed": (
        StreamProtocol(Base64Wrapper(MsgPackSerializer(), checksum=KEY)),
        StreamProtocol(Base64Wrapper(MsgPackSerializer(), checksum=KEY)),
        {"x": b"\n"},
    ),
    "stapled": (
        stapled_serializer.SERVER_PROTOCOL,
        stapled_serializer.CLIENT_PROTOCOL,
        {"x": [1, None]},
    ),
    # Sends bytes as they are, like BytesSerializer, but receives text: not BytesSerializer.
    "stapled-bytes-text": (
        StreamProtocol(
            StapledSerializer(sending=sf.BytesSerializer(), receiving=sf.StringSerializer()),
            sf.LineFramer(),
        ),
        StreamProtocol(sf.StringSerializer(), sf.LineFramer()),
        "text",
    ),
}


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_server_decoders_decode_these_protocols(name: str) -> None:
    """Whichever engine runs, a server connection's decoder decodes what the peer sends: with
    a JSONDocumentFramer it is the one ``protocol.decoder()`` makes (the compiled decoders are
    for the stock framers exactly); on a stock framer, the compiled one deserializes with the
    protocol's serializer (only exactly BytesSerializer is passed over)."""
    from server_framework.servers import _driver  # noqa: PLC0415

    protocol, peer, message = PROTOCOLS[name]
    decoder = _driver.make_decoder(protocol)
    if isinstance(protocol.framer, JSONDocumentFramer):
        assert type(decoder) is type(protocol.decoder())
    wire = peer.encode(message)
    for byte in range(len(wire)):
        decoder.feed(wire[byte : byte + 1])
    decoder.feed(wire)
    assert list(decoder) == [message, message]


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_the_compiled_encoder_asks_these_protocols(name: str) -> None:
    if engine.compiled is None:
        pytest.skip(f"the compiled engine does not run: {engine.REASON}")
    protocol, _, message = PROTOCOLS[name]
    if name == "stapled-bytes-text":
        message = b"raw"
    expected = bytearray(b"before")
    protocol.encode_into(message, expected)
    out = bytearray(b"before")
    engine.compiled.encode_into(protocol, message, out)
    assert out == expected
    if name == "json-documents-bytes":
        out = bytearray(b"before")
        with pytest.raises(sf.SerializeError):
            engine.compiled.encode_into(protocol, b"not json", out)
        assert out == b"before"


def test_datagram_inboxes_decode_through_the_protocol() -> None:
    """The compiled engine hands datagrams over undecoded only for exactly
    ``DatagramProtocol(BytesSerializer())``: a stapled pair that receives with a
    BytesSerializer is decoded through the protocol, like any other, on both engines."""
    from server_framework.servers import _driver  # noqa: PLC0415

    protocol = DatagramProtocol(
        StapledSerializer(sending=JSONSerializer(), receiving=sf.BytesSerializer())
    )
    inbox = _driver.make_inbox(protocol, 4)
    assert inbox.feed(b"raw")
    assert list(inbox) == [b"raw"]
    converted = DatagramProtocol(
        StapledSerializer(sending=sf.BytesSerializer(), receiving=JSONSerializer())
    )
    inbox = _driver.make_inbox(converted, 4)
    assert inbox.feed(b'{"a": 1}')
    assert list(inbox) == [{"a": 1}]
