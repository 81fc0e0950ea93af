"""``protocols.diagnostics.likely_cause``: each mismatch it names, and what it leaves alone; the
decoders' errors that carry its hint (``FrameTooLargeError``), and ``StreamDecoder.peek``."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from protocols import (
    FrameTooLargeError,
    FramingError,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    MsgPackSerializer,
    StreamProtocol,
    build_v1,
    build_v2,
    diagnostics,
)
from protocols.diagnostics import SNIFF_SIZE, likely_cause

CLIENT_HELLO = bytes.fromhex("160301020001") + bytes(20)  # record header, then ClientHello
SERVER_HELLO = bytes.fromhex("160303007a02") + bytes(20)
TLS_ALERT = bytes.fromhex("15030300020246")  # fatal protocol_version
TLS_APPLICATION_DATA = bytes.fromhex("1703030020") + bytes(32)
JSON_LINES = b'{"id": 1, "name": "a"}\n{"id": 2}\n'


def identity(data: bytes) -> bytes:
    return data


def test_the_module_is_documented() -> None:
    assert diagnostics.__doc__
    assert likely_cause.__doc__
    assert diagnostics.__all__ == ["SNIFF_SIZE", "likely_cause"]


# -- what it recognises, whatever the framing ---------------------------------------------------


@pytest.mark.parametrize("framing", [None, "line", "length-prefix"])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(CLIENT_HELLO, "speaks TLS (these bytes are a TLS ClientHello)", id="hello"),
        pytest.param(SERVER_HELLO, "speaks TLS (these bytes are a TLS ServerHello)", id="server"),
        pytest.param(TLS_ALERT, "speaks TLS (these bytes are a TLS alert)", id="alert"),
        pytest.param(TLS_APPLICATION_DATA, "speaks TLS (these bytes are a TLS record)", id="data"),
        pytest.param(CLIENT_HELLO[:3], "speaks TLS (these bytes are a TLS handshake)", id="short"),
        pytest.param(b"GET / HTTP/1.1\r\n", "speaks HTTP (an HTTP GET request)", id="get"),
        pytest.param(b"POST /x HTTP/1.1\r\n", "speaks HTTP (an HTTP POST request)", id="post"),
        pytest.param(b"HEAD / HTTP/1.0\r\n", "speaks HTTP (an HTTP HEAD request)", id="head"),
        pytest.param(b"PUT /x HTTP/1.1\r\n", "speaks HTTP (an HTTP PUT request)", id="put"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM", "speaks HTTP (the HTTP/2 preface)", id="h2"),
        pytest.param(b"HTTP/1.1 400 Bad Request\r\n", "speaks HTTP (an HTTP response)", id="resp"),
        pytest.param(
            build_v1(("10.0.0.1", 1111), ("10.0.0.2", 2222)),
            "sends a PROXY protocol v1 header",
            id="proxy-v1",
        ),
        pytest.param(
            build_v2(("10.0.0.1", 1111), ("10.0.0.2", 2222)),
            "sends a PROXY protocol v2 header",
            id="proxy-v2",
        ),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", "speaks SSH", id="ssh"),
    ],
)
def test_foreign_protocols(data: bytes, expected: str, framing: Any) -> None:
    cause = likely_cause(data, framing=framing)
    assert cause is not None
    assert cause.startswith(f"the peer {expected}")


def test_the_peer_is_named_as_asked() -> None:
    cause = likely_cause(TLS_ALERT, peer="the server")
    assert cause == (
        "the server speaks TLS (these bytes are a TLS alert) and this end does not: use TLS on "
        "both sides or on neither"
    )
    assert str(likely_cause(CLIENT_HELLO, peer="the client")).startswith("the client speaks TLS")


def test_the_fix_follows_the_cause() -> None:
    assert "enable proxy_protocol on this server" in str(likely_cause(b"PROXY TCP4 "))
    assert "HTTP port" in str(likely_cause(b"GET / HTTP/1.1"))


# -- framing mismatches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "what"),
    [
        pytest.param(b'{"id": 1}\n', "text (JSON lines?)", id="object"),
        pytest.param(b"[1, 2]\n", "text (JSON lines?)", id="array"),
        pytest.param(b'"text"\n', "text (JSON lines?)", id="string"),
        pytest.param(b"hello world\r\n", "text (lines?)", id="words"),
        pytest.param(b"{}\n", "text (JSON lines?)", id="shorter-than-a-header"),
    ],
)
def test_text_on_a_length_prefix(data: bytes, what: str) -> None:
    cause = likely_cause(data, framing="length-prefix")
    assert cause is not None
    assert cause.startswith(f"the peer sends {what} to a length-prefixed endpoint")
    assert "the length header reads as text" in cause
    assert repr(data[:16]) in cause
    assert cause.endswith("use the same framing on both sides (a LineFramer there?)")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(LengthPrefixFramer().frame(b'{"id": 1}'), id="prefixed-json"),
        pytest.param(MsgPackSerializer().serialize({"id": 1}), id="msgpack"),
        pytest.param(b"abc\x00def", id="nul"),
        pytest.param(b"abc\x7fdef", id="del"),
    ],
)
def test_binary_on_a_line_framer(data: bytes) -> None:
    cause = likely_cause(data, framing="line")
    assert cause is not None
    assert cause.startswith(
        "the peer may be sending length-prefixed frames or other binary data to a line-framed "
        "endpoint"
    )
    assert cause.endswith("use the same framing on both sides")


def test_the_wrong_delimiter() -> None:
    cause = likely_cause(b"one\ntwo\nthree\n", framing="line", delimiter=b"\r\n")
    assert cause == (
        "the peer's lines seem to end with b'\\n' where this end expects b'\\r\\n': use the "
        "same delimiter on both sides"
    )
    assert likely_cause(b"one\r\ntwo\r\n", framing="line", delimiter=b"\r\n") is None


# -- what it leaves alone ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "framing"),
    [
        pytest.param(b"", None, id="empty"),
        pytest.param(b"", "line", id="empty-line"),
        pytest.param(JSON_LINES, "line", id="json-lines"),
        pytest.param(JSON_LINES, None, id="json-unframed"),
        pytest.param(b"x" * 1000, "line", id="long-text-line"),
        pytest.param("héllo wörld\n".encode(), "line", id="utf-8"),
        pytest.param(b"tab\tseparated\r\n", "line", id="tab-crlf"),
        pytest.param(b'{"id": 1}', None, id="json-datagram"),
        pytest.param(b"\x00\x20\x00\x00" + bytes(10), "length-prefix", id="large-binary-header"),
        pytest.param(b"\x7f\xff\xff\xff", "length-prefix", id="huge-binary-header"),
        pytest.param(b"\x16\x04\x01\x02", None, id="not-a-tls-version"),
        pytest.param(b"\x16\x03\x09\x02", None, id="unknown-tls-minor"),
        pytest.param(b"GETTING", None, id="get-without-space"),
        pytest.param(b"PROXYING", None, id="proxy-without-space"),
        pytest.param(b"\x00\x00\x00\x05hello", "length-prefix", id="a-good-frame"),
        pytest.param(b"\x00\x00\x00\x05hello", None, id="binary-without-framing"),
    ],
)
def test_nothing_to_say(data: bytes, framing: Any) -> None:
    assert likely_cause(data, framing=framing) is None


def test_only_the_first_bytes_are_looked_at() -> None:
    data = b"x" * SNIFF_SIZE + b"\x00"
    assert likely_cause(data, framing="line") is None
    assert likely_cause(b"x" * (SNIFF_SIZE - 1) + b"\x00", framing="line") is not None
    assert likely_cause(bytearray(CLIENT_HELLO)) == likely_cause(memoryview(CLIENT_HELLO))


# -- the decoders' errors ----------------------------------------------------------------------


def test_json_lines_on_a_length_prefix_decoder() -> None:
    decoder = StreamProtocol(JSONSerializer(), LengthPrefixFramer()).decoder()
    decoder.feed(JSON_LINES)
    with pytest.raises(FrameTooLargeError) as info:
        next(decoder)
    error = info.value
    assert error.hint is not None
    assert error.hint.startswith("the peer sends text (JSON lines?) to a length-prefixed endpoint")
    assert str(error) == (
        f"frame of {int.from_bytes(JSON_LINES[:4], 'big')} bytes is over "
        f"max_frame_size=1048576 (hint: {error.hint})"
    )
    assert "raise the framer's max_frame_size" not in str(error)
    # The decoder is broken, and says why, hint included.
    with pytest.raises(FramingError, match=r"unusable after an earlier error: .*JSON lines\?"):
        decoder.feed(b"more")


def test_a_tls_client_hello_on_a_length_prefix_decoder() -> None:
    decoder = LengthPrefixFramer().decoder(identity)
    decoder.feed(CLIENT_HELLO)
    with pytest.raises(FrameTooLargeError, match=r"\(hint: the peer speaks TLS \(these bytes"):
        next(decoder)


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "incomplete"])
def test_binary_on_a_line_decoder(complete: bool) -> None:
    decoder = LineFramer(max_frame_size=8).decoder(identity)
    frame = LengthPrefixFramer().frame(b"0123456789ab")  # the header holds no newline byte
    decoder.feed(frame + b"\n" if complete else frame)
    with pytest.raises(FrameTooLargeError) as info:
        next(decoder)
    assert info.value.complete is complete
    assert "(hint: the peer may be sending length-prefixed frames" in str(info.value)


def test_a_large_frame_without_a_cause_keeps_the_advice() -> None:
    decoder = LineFramer(max_frame_size=8).decoder(identity)
    decoder.feed(b"just a long line of text\n")
    with pytest.raises(FrameTooLargeError) as info:
        next(decoder)
    assert info.value.hint is None
    assert "raise the framer's max_frame_size if such frames are legitimate" in str(info.value)


def test_the_hint_survives_pickling() -> None:
    error = FrameTooLargeError(10, 4, complete=False, hint="because")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.size, copy.limit, copy.complete, copy.hint) == (10, 4, False, "because")
    assert (
        str(copy)
        == str(error)
        == ("incomplete frame already 10 bytes is over max_frame_size=4 (hint: because)")
    )


# -- peek ----------------------------------------------------------------------------------------


def test_peek_shows_the_unfinished_frame_without_consuming_it() -> None:
    decoder = LineFramer().decoder(identity)
    assert decoder.peek() == b""
    decoder.feed(b"one\ntw")
    assert next(decoder) == b"one"
    with pytest.raises(StopIteration):
        next(decoder)
    assert decoder.peek() == b"tw"
    decoder.feed(b"o and more" * 10)
    assert decoder.peek() == (b"tw" + b"o and more" * 10)[:SNIFF_SIZE]
    assert decoder.peek(3) == b"two"
    assert decoder.buffered == 102
    decoder.close()
    assert decoder.peek() == b""
