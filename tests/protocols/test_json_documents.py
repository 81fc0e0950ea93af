"""Tests of JSONDocumentFramer: JSON documents written back to back, cut by following the JSON
syntax (brackets, strings, escapes, numbers and literals), with the limits and errors of every
framer. The behaviour every framer shares is tested in test_framing.py; here, what is
particular to JSON, and property tests against the line framer on random JSON values."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import (
    DeserializeError,
    FrameTooLargeError,
    FramingError,
    JSONDocumentFramer,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    SerializeError,
    StreamDecoder,
    StreamProtocol,
    framing,
)

from protocol_helpers import decode_all, identity, one_byte_at_a_time, split_at

DOCUMENTS = StreamProtocol(JSONSerializer(), JSONDocumentFramer())
LINES = StreamProtocol(JSONSerializer(), LineFramer())


def decode_until_error(
    decoder: StreamDecoder[Any], chunks: list[bytes], check: Any = None
) -> tuple[list[Any], FramingError]:
    """Feed ``chunks`` and drain after each (calling ``check()`` then) until a FramingError."""
    received: list[Any] = []
    for chunk in chunks:
        try:
            decoder.feed(chunk)
            received.extend(decoder)
        except FramingError as exc:
            return received, exc
        if check is not None:
            check()
    raise AssertionError(f"no FramingError; decoded {received!r}")


def decode(data: bytes, protocol: StreamProtocol[Any, Any] = DOCUMENTS) -> list[Any]:
    """Decode ``data`` whole, byte by byte and in 3-byte chunks; all three must agree."""
    whole = decode_all(protocol.decoder(), [data])
    assert decode_all(protocol.decoder(), one_byte_at_a_time(data)) == whole
    assert decode_all(protocol.decoder(), split_at(data, range(0, len(data), 3))) == whole
    return whole


# --- what a document is -------------------------------------------------------------------------


class TestCutting:
    def test_documents_back_to_back(self) -> None:
        assert decode(b'{"a":1}{"b":2}[3][]{}') == [{"a": 1}, {"b": 2}, [3], [], {}]

    def test_whitespace_between_and_inside_documents(self) -> None:
        pretty = json.dumps({"a": [1, {"b": None}], "c": "d"}, indent=2).encode()
        stream = b" \t\r\n" + pretty + b"\n\n" + pretty + b"\r\n [ 1 ,\n 2 ]  "
        assert decode(stream) == [json.loads(pretty), json.loads(pretty), [1, 2]]

    def test_whitespace_alone_is_consumed(self) -> None:
        decoder = DOCUMENTS.decoder()
        decoder.feed(b" \r\n\t" * 1000)
        assert list(decoder) == []
        assert decoder.buffered == 0
        assert decoder._buf == b""

    @pytest.mark.parametrize(
        ("stream", "expected"),
        [
            pytest.param(b'{"s": "}"}', [{"s": "}"}], id="closing-bracket-in-string"),
            pytest.param(b'["[[[", "{"]', [["[[[", "{"]], id="opening-brackets-in-string"),
            pytest.param(b'{"s": "a \\"quoted\\" }"}', [{"s": 'a "quoted" }'}], id="escaped-quote"),
            pytest.param(b'["\\\\"]', [["\\"]], id="escaped-backslash-before-quote"),
            pytest.param(b'["\\\\\\"]"]', [['\\"]']], id="backslash-then-escaped-quote"),
            pytest.param(b'{"\\u007d": "\\/"}', [{"}": "/"}], id="unicode-escape"),
            pytest.param('["é✓🎉"]'.encode(), [["é✓🎉"]], id="utf-8"),
        ],
    )
    def test_strings_hide_brackets_and_quotes(self, stream: bytes, expected: list[Any]) -> None:
        assert decode(stream) == expected
        assert decode(stream * 3) == expected * 3

    def test_top_level_strings_end_by_themselves(self) -> None:
        assert decode(b'"a""b\\"c" "d"{"e":"f"}') == ["a", 'b"c', "d", {"e": "f"}]

    def test_numbers_and_literals_end_at_a_byte_that_cannot_continue_them(self) -> None:
        stream = b'1 -2.5e3\ttrue\rfalse\nnull 7{"a":1}8[9]10"s"'
        assert decode(stream + b"\n") == [
            1,
            -2500.0,
            True,
            False,
            None,
            7,
            {"a": 1},
            8,
            [9],
            10,
            "s",
        ]

    def test_a_number_at_the_end_waits_for_the_next_byte(self) -> None:
        decoder = DOCUMENTS.decoder()
        decoder.feed(b"[1] 12")
        assert list(decoder) == [[1]]
        assert decoder.buffered == 2
        decoder.feed(b"3")
        assert list(decoder) == []
        decoder.feed(b"\n")
        assert list(decoder) == [123]
        assert decoder.buffered == 0

    def test_a_frame_excludes_the_surrounding_whitespace(self) -> None:
        decoder = JSONDocumentFramer().decoder(identity)
        decoder.feed(b'  {"a": [1, 2]}\n\n  "x" \t 42\n')
        assert list(decoder) == [b'{"a": [1, 2]}', b'"x"', b"42"]

    def test_messages_can_be_taken_one_at_a_time(self) -> None:
        decoder = DOCUMENTS.decoder()
        decoder.feed(b'{"a":1}[2]"3" 4 ')
        assert next(decoder) == {"a": 1}
        decoder.feed(b'{"b"')
        assert next(decoder) == [2]
        assert next(decoder) == "3"
        decoder.feed(b":5}")
        assert list(decoder) == [4, {"b": 5}]

    def test_reads_what_a_line_framer_writes_and_the_other_way_round(self) -> None:
        messages: list[Any] = [{"a": [1, "]"]}, "x", 3, None, [], {"b": {"c": True}}]
        as_lines = b"".join(LINES.encode(message) for message in messages)
        as_documents = b"".join(DOCUMENTS.encode(message) for message in messages)
        assert as_documents == as_lines
        assert decode(as_lines) == messages
        assert decode(as_documents, LINES) == messages


# --- encoding -----------------------------------------------------------------------------------


class TestEncoding:
    def test_every_document_is_followed_by_a_newline(self) -> None:
        framer = JSONDocumentFramer()
        assert framer.frame(b'{"a":1}') == b'{"a":1}\n'
        assert framer.frame(b"12") == b"12\n"
        assert DOCUMENTS.encode([1, "two"]) == b'[1,"two"]\n'

    def test_encode_into_batches_documents(self) -> None:
        buffer = bytearray()
        for message in ({"a": 1}, 2, "three"):
            DOCUMENTS.encode_into(message, buffer)
        assert buffer == b'{"a":1}\n2\n"three"\n'

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            pytest.param(b"", "empty", id="empty"),
            pytest.param(b" {}", "does not start with a JSON value", id="leading-space"),
            pytest.param(b"{}\n", "bytes after", id="trailing-newline"),
            pytest.param(b"{}{}", "bytes after", id="two-documents"),
            pytest.param(b"1 2", "bytes after", id="two-numbers"),
            pytest.param(b'{"a": 1', "unfinished", id="unclosed-object"),
            pytest.param(b'"abc', "unfinished", id="unterminated-string"),
            pytest.param(b'"abc\\"', "unfinished", id="escaped-closing-quote"),
            pytest.param(b"[1}", "unbalanced", id="mismatched-bracket"),
            pytest.param(b"}", "does not start", id="closing-bracket"),
            pytest.param(b"hello", "does not start", id="bare-word"),
            pytest.param(b"\x00", "does not start", id="binary"),
        ],
    )
    def test_a_payload_that_would_be_misframed_is_refused(
        self, payload: bytes, reason: str
    ) -> None:
        framer = JSONDocumentFramer()
        with pytest.raises(SerializeError, match=reason):
            framer.frame(payload)
        buffer = bytearray(b"[0]\n")
        token = framer.begin_frame(buffer)
        buffer += payload
        with pytest.raises(SerializeError, match=reason):
            framer.end_frame(buffer, token)
        del buffer[token:]  # what StreamProtocol.encode_into does
        assert buffer == b"[0]\n"

    def test_a_serializer_that_writes_something_else_is_refused(self) -> None:
        protocol = StreamProtocol(JSONSerializer(), JSONDocumentFramer())
        buffer = bytearray(b"kept")
        with pytest.raises(SerializeError):
            protocol.encode_into(object(), buffer)
        assert buffer == b"kept"

    def test_encoding_is_not_limited_by_max_frame_size(self) -> None:
        assert JSONDocumentFramer(max_frame_size=2).frame(b"[1,2,3]") == b"[1,2,3]\n"

    def test_repr_and_defaults(self) -> None:
        framer = JSONDocumentFramer()
        assert framer.max_frame_size == 1024 * 1024
        assert (
            repr(JSONDocumentFramer(max_frame_size=10)) == "JSONDocumentFramer(max_frame_size=10)"
        )

    def test_is_not_a_stock_framer(self) -> None:
        """The compiled engine recognises LineFramer, LengthPrefixFramer and FixedSizeFramer
        by exact type, and some code paths by isinstance: this framer must be none of them."""
        assert not isinstance(JSONDocumentFramer(), LineFramer | LengthPrefixFramer)


# --- errors and limits --------------------------------------------------------------------------


class TestErrors:
    @pytest.mark.parametrize(
        "bad",
        [b'{"a":}', b"[1,]", b"tru ", b"nul\n", b"01 ", b'{"a" 1}', b"[1 2]", b'"\x01"', b'"\xff"'],
    )
    def test_a_malformed_document_is_a_deserialize_error_and_the_stream_stays_in_sync(
        self, bad: bytes
    ) -> None:
        decoder = DOCUMENTS.decoder()
        decoder.feed(b"[1]" + bad + b' {"ok": true}\n')
        assert next(decoder) == [1]
        with pytest.raises(DeserializeError):
            next(decoder)
        assert list(decoder) == [{"ok": True}]
        assert not decoder.broken

    @pytest.mark.parametrize(
        ("bad", "words"),
        [
            pytest.param(b"}", "b'}' cannot start a JSON value", id="closing-bracket"),
            pytest.param(b",", "b',' cannot start a JSON value", id="comma"),
            pytest.param(b"hello", "b'h' cannot start a JSON value", id="word"),
            pytest.param(b"\x00\x00\x00\x05[1,2]", "cannot start a JSON value", id="length-prefix"),
            pytest.param(b'{"a": [1}', "'}' at offset 8 of a document, where ']'", id="mismatch"),
            pytest.param(b"[1, 2}", "'}' at offset 5 of a document, where ']'", id="mismatch-2"),
        ],
    )
    def test_bytes_that_cannot_be_framed_break_the_decoder(self, bad: bytes, words: str) -> None:
        for chunks in ([b"[0] " + bad], one_byte_at_a_time(b"[0] " + bad)):
            decoder = DOCUMENTS.decoder()
            received, error = decode_until_error(decoder, chunks)
            assert type(error) is FramingError
            assert received == [[0]]
            assert words in str(error)
            assert "out of sync" in str(error)
            assert decoder.broken
            assert decoder.buffered == 0
            with pytest.raises(FramingError, match="unusable after an earlier error"):
                decoder.feed(b"[1]")
            with pytest.raises(FramingError, match="unusable after an earlier error"):
                next(decoder)

    @pytest.mark.parametrize(
        ("greeting", "hint"),
        [
            pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "speaks HTTP", id="http"),
            pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "speaks TLS", id="tls"),
            pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY protocol", id="proxy"),
        ],
    )
    def test_a_foreign_protocol_is_named(self, greeting: bytes, hint: str) -> None:
        decoder = DOCUMENTS.decoder()
        decoder.feed(greeting)
        with pytest.raises(FramingError, match=hint):
            next(decoder)

    def test_a_document_of_exactly_max_frame_size_is_accepted(self) -> None:
        protocol = StreamProtocol(JSONSerializer(), JSONDocumentFramer(max_frame_size=7))
        assert decode(b' [1,2,3]  "abcde" 1234567\n', protocol) == [[1, 2, 3], "abcde", 1234567]

    @pytest.mark.parametrize(
        "document", [b"[1,2,34]", b'"abcdef"', b"12345678 ", b'{"a":12}'], ids=repr
    )
    def test_a_complete_document_over_the_limit(self, document: bytes) -> None:
        decoder = JSONDocumentFramer(max_frame_size=7).decoder(identity)
        decoder.feed(b"[1] " + document)
        assert next(decoder) == b"[1]"
        with pytest.raises(FrameTooLargeError) as caught:
            next(decoder)
        assert caught.value.size == len(document.strip())
        assert caught.value.complete
        assert decoder.broken

    @pytest.mark.parametrize(
        "endless",
        [b"[" * 64, b'["' + b"x" * 64, b"1" * 64, b'{"a": [' + b"1," * 64, b'"' + b'\\"' * 30],
        ids=["brackets", "string", "number", "array", "escaped-quotes"],
    )
    def test_a_document_that_never_ends_is_refused_once_over_the_limit(
        self, endless: bytes
    ) -> None:
        """Memory stays bounded: the decoder never holds more than max_frame_size of a
        document, whether it arrives whole or byte by byte."""
        for chunks in ([endless], one_byte_at_a_time(endless)):
            decoder = JSONDocumentFramer(max_frame_size=16).decoder(identity)

            def bounded(decoder: StreamDecoder[Any] = decoder) -> None:
                assert decoder.buffered <= 16

            received, error = decode_until_error(decoder, chunks, bounded)
            assert received == []
            assert isinstance(error, FrameTooLargeError)
            assert not error.complete
            assert error.size == (len(endless) if len(chunks) == 1 else 17)
            assert decoder.buffered == 0
            assert decoder.broken

    def test_whitespace_does_not_count_towards_the_limit(self) -> None:
        protocol = StreamProtocol(JSONSerializer(), JSONDocumentFramer(max_frame_size=4))
        assert decode(b" " * 100 + b"[1]" + b"\n" * 100 + b"[2]", protocol) == [[1], [2]]

    def test_close_resets_a_decoder_in_the_middle_of_a_document(self) -> None:
        decoder = DOCUMENTS.decoder()
        decoder.feed(b'{"a": ["b')
        assert list(decoder) == []
        decoder.close()
        assert decoder.buffered == 0
        with pytest.raises(FramingError, match="closed"):
            next(decoder)


# --- linear scanning ------------------------------------------------------------------------------


class CountingPattern:
    """Wraps a compiled pattern; adds up how much data each ``match`` call could look at."""

    def __init__(self, pattern: Any, counter: list[int]) -> None:
        self._pattern = pattern
        self._counter = counter

    def match(self, data: Any, pos: int = 0) -> Any:
        self._counter[0] += len(data) - pos
        return self._pattern.match(data, pos)


@pytest.mark.parametrize(
    ("document", "value"),
    [
        pytest.param(b"[" + b"1," * 20_000 + b"1]", [1] * 20_001, id="array"),
        pytest.param(b'["' + b"x" * 40_000 + b'"]', ["x" * 40_000], id="string-in-array"),
        pytest.param(b'"' + b'\\"' * 20_000 + b'"', '"' * 20_000, id="escapes"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, None, id="nesting"),
        pytest.param(b"1" * 40_000 + b" ", None, id="number"),
    ],
)
def test_a_document_fed_byte_by_byte_is_scanned_once(
    monkeypatch: pytest.MonkeyPatch, document: bytes, value: Any
) -> None:
    """Counting proof: every scan resumes where the previous one stopped (give or take a
    byte), so the data the patterns may look at adds up to a few times the document's size,
    not to its square (40 000 bytes fed one at a time, rescanned from the start each time,
    would be 800 million)."""
    counter = [0]
    for name in ("_JSON_SKIP", "_JSON_STRING_BODY", "_JSON_SCALAR", "_JSON_WHITESPACE"):
        monkeypatch.setattr(framing, name, CountingPattern(getattr(framing, name), counter))
    decoder = JSONDocumentFramer().decoder(identity)
    frames = decode_all(decoder, one_byte_at_a_time(document))
    assert frames == [document.strip()]
    assert counter[0] <= 4 * len(document)
    if value is not None:
        assert msgspec.json.decode(frames[0]) == value


# --- property tests: random JSON values, random cuts ----------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Text rich in what the scanner has to get right: quotes, backslashes, brackets, whitespace.
TRICKY_TEXT = st.text(
    st.sampled_from([*'"\\{}[]:, \n\tab', "é", "\x00", "\u2028", "🎉"]), max_size=12
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4)
    ),
    max_leaves=10,
)
WHITESPACE = st.text(st.sampled_from(" \t\r\n"), max_size=3).map(str.encode)
SCALAR_BYTES = frozenset(b"-+.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def cut(data: st.DataObject, stream: bytes) -> list[bytes]:
    how = data.draw(st.sampled_from(["whole", "byte-by-byte", "random"]), label="delivery")
    if how == "whole":
        return [stream]
    if how == "byte-by-byte":
        return one_byte_at_a_time(stream)
    return split_at(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))


def drain(decoder: StreamDecoder[Any], chunks: list[bytes]) -> list[Any]:
    return decode_all(decoder, chunks)


@PROPERTY_SETTINGS
@given(values=st.lists(JSON_VALUES, max_size=8), data=st.data())
def test_random_documents_decode_as_json_lines_do(values: list[Any], data: st.DataObject) -> None:
    """The framer's output is JSON lines, and both framers read it back, in any chunking."""
    encoded = b"".join(DOCUMENTS.encode(value) for value in values)
    assert encoded == b"".join(LINES.encode(value) for value in values)
    chunks = cut(data, encoded)
    assert drain(DOCUMENTS.decoder(), chunks) == drain(LINES.decoder(), chunks) == values


@PROPERTY_SETTINGS
@given(values=st.lists(JSON_VALUES, max_size=8), data=st.data())
def test_random_documents_back_to_back_in_any_chunking(
    values: list[Any], data: st.DataObject
) -> None:
    """Documents written with no delimiter, or any whitespace, between them (a number or a
    literal is followed by whitespace when the next byte could continue it), pretty-printed
    or not, decode to the same values as the JSON lines of those values."""
    payloads = []
    for value in values:
        if data.draw(st.booleans(), label="pretty"):
            payloads.append(json.dumps(value, indent=data.draw(st.integers(0, 2))).encode())
        else:
            payloads.append(msgspec.json.encode(value))
    stream = bytearray(data.draw(WHITESPACE, label="leading"))
    for index, payload in enumerate(payloads):
        stream += payload
        separator = data.draw(WHITESPACE, label="separator")
        following = payloads[index + 1][:1] if index + 1 < len(payloads) else b""
        if (
            payload[-1] in SCALAR_BYTES
            and not separator
            and (not following or following[0] in SCALAR_BYTES)
        ):
            separator = b"\n"
        stream += separator
    lines = b"".join(LINES.encode(value) for value in values)
    expected = drain(LINES.decoder(), [lines])
    decoder = DOCUMENTS.decoder()
    assert drain(decoder, cut(data, bytes(stream))) == expected == values
    assert decoder.buffered == 0
    assert decoder._buf == b""


@PROPERTY_SETTINGS
@given(
    payload=st.one_of(
        JSON_VALUES.map(msgspec.json.encode),
        st.lists(
            st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b"1", b"a", b" ", b"\n", b"t"]),
            max_size=12,
        ).map(b"".join),
    ),
    data=st.data(),
)
def test_frame_refuses_or_frames_exactly(payload: bytes, data: st.DataObject) -> None:
    """Whatever the payload, frame() either refuses it or returns a frame that decodes to that
    payload, followed by anything."""
    framer = JSONDocumentFramer()
    try:
        frame = framer.frame(payload)
    except SerializeError:
        return
    after = data.draw(st.sampled_from([b"", b"[1]", b" 2\n", b'"x"', b"}"]), label="after")
    decoder = framer.decoder(identity)
    for chunk in cut(data, frame + after):
        decoder.feed(chunk)
        try:
            first = next(decoder)
        except StopIteration:
            continue
        assert first == payload
        return
    pytest.fail(f"{payload!r} was framed but not decoded")
