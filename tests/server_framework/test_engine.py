"""The engine choice, and the compiled engine against its pure-Python specification.

The whole suite runs on each engine (``make test``, ``make test-pure``); here the compiled
decoders and encoder are compared with the pure-Python ones step by step, on the same inputs
(hypothesis): the same messages, the same errors with the same messages, the same buffered
counts. Those tests are skipped when the compiled engine is not built or not selected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import (
    BytesSerializer,
    DatagramProtocol,
    FixedSizeFramer,
    Framer,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    StreamDecoder,
    StreamProtocol,
    StringSerializer,
)
from server_framework import engine
from server_framework.servers._driver import DatagramInbox  # the pure twin

compiled_only = pytest.mark.skipif(
    engine.compiled is None, reason=f"the compiled engine does not run: {engine.REASON}"
)

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FRAMERS: dict[str, Framer] = {
    "line-lf": LineFramer(),
    "line-crlf": LineFramer(b"\r\n"),
    "line-END": LineFramer(b"<END>", max_frame_size=12),
    "prefix-1": LengthPrefixFramer(1),
    "prefix-2": LengthPrefixFramer(2, max_frame_size=20),
    "prefix-8": LengthPrefixFramer(8, max_frame_size=30),
    "fixed-1": FixedSizeFramer(1),
    "fixed-7": FixedSizeFramer(7),
}
SERIALIZERS = {"bytes": BytesSerializer(), "json": JSONSerializer(), "text": StringSerializer()}
STREAM_BYTES = st.lists(
    st.sampled_from([b"a", b"1", b"[", b"]", b"\r", b"\n", b"<END>", b"\x00", b"\x05", b"\xff"]),
    max_size=40,
).map(b"".join)


def test_engine_is_reported() -> None:
    forced = os.environ.get(engine.PURE_PYTHON_VARIABLE, "") not in ("", "0")
    assert ("pure Python" if engine.compiled is None else "compiled") == engine.ENGINE
    if forced:
        assert engine.compiled is None
        assert engine.PURE_PYTHON_VARIABLE in engine.REASON
    elif os.environ.get("SERVER_FRAMEWORK_STRICT_BUILD", "") not in ("", "0"):
        assert engine.ENGINE == "compiled", engine.REASON  # CI: the build must have worked


def test_version_names_the_engine() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server_framework", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"({engine.ENGINE} engine)" in result.stdout


def test_forcing_the_pure_engine() -> None:
    code = "from server_framework.engine import ENGINE, REASON; print(ENGINE, '|', REASON)"
    env = dict(os.environ, SERVER_FRAMEWORK_PURE_PYTHON="1")
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.stdout.strip() == "pure Python | SERVER_FRAMEWORK_PURE_PYTHON=1 forces it"


def test_a_missing_build_is_said_once_when_serving() -> None:
    """No compiled engine (as after an install without a C compiler): the pure engine runs,
    and the first server started says so in one log line; the second says nothing."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class NoBuild(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "server_framework._cengine":
                    raise ImportError("no C compiler at install")
                return None

        sys.meta_path.insert(0, NoBuild())
        import asyncio
        from handlers import EchoHandler
        from protocols import StreamProtocol, BytesSerializer
        from server_framework.engine import ENGINE
        from server_framework.servers import AsyncTCPServer

        async def main():
            for _ in range(2):
                protocol = StreamProtocol(BytesSerializer())
                async with AsyncTCPServer("127.0.0.1", 0, protocol, EchoHandler()):
                    pass
            print(ENGINE)

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != engine.PURE_PYTHON_VARIABLE}
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure Python"
    lines = [line for line in result.stderr.splitlines() if "pure-Python engine" in line]
    assert len(lines) == 1, result.stderr
    assert "not built" in lines[0]
    assert "no C compiler at install" in lines[0]


# -- the compiled decoders and encoder against the pure ones -----------------------------------


def trace(decoder: StreamDecoder[Any], chunks: list[bytes], per_feed: int | None) -> list[Any]:
    """Everything observable while feeding ``chunks``: messages, errors, buffered, broken."""
    events: list[Any] = []
    for chunk in chunks:
        try:
            decoder.feed(chunk)
        except Exception as exc:
            events.append(("feed-error", type(exc).__name__, str(exc)))
        taken = 0
        while per_feed is None or taken < per_feed:
            try:
                message = next(decoder)
            except StopIteration:
                events.append("stop")
                break
            except Exception as exc:
                events.append(("error", type(exc).__name__, str(exc)))
                if decoder.broken:
                    break
                continue
            events.append(("message", message))
            taken += 1
        events.append(("state", decoder.buffered, decoder.broken, decoder.peek()))
    decoder.close()
    events.append(("closed", decoder.buffered, decoder.broken))
    try:
        decoder.feed(b"x")
    except Exception as exc:
        events.append(("feed-error", type(exc).__name__, str(exc)))
    return events


def cut(stream: bytes, data: st.DataObject) -> list[bytes]:
    points = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts"))
    pieces = []
    start = 0
    for point in [*points, len(stream)]:
        pieces.append(stream[start:point])
        start = point
    return pieces


@compiled_only
@pytest.mark.parametrize("serializer", list(SERIALIZERS.values()), ids=list(SERIALIZERS))
@pytest.mark.parametrize("framer", list(FRAMERS.values()), ids=list(FRAMERS))
@SETTINGS
@given(data=st.data())
def test_compiled_decoders_behave_as_the_pure_ones(
    framer: Framer, serializer: Any, data: st.DataObject
) -> None:
    assert engine.compiled is not None
    protocol = StreamProtocol(serializer, framer)
    stream = data.draw(STREAM_BYTES, label="stream")
    if data.draw(st.booleans(), label="bytearray chunks"):
        chunks: list[Any] = [bytearray(chunk) for chunk in cut(stream, data)]
    else:
        chunks = cut(stream, data)
    per_feed = data.draw(st.none() | st.integers(1, 2), label="per_feed")
    compiled_decoder = engine.compiled.make_decoder(protocol)
    assert type(compiled_decoder).__module__ == "server_framework._cengine"
    assert isinstance(compiled_decoder, StreamDecoder)
    assert trace(compiled_decoder, chunks, per_feed) == trace(protocol.decoder(), chunks, per_feed)


MISMATCHES = {
    "json-lines-on-prefix": (LengthPrefixFramer(), b'{"id": 1}\n{"id": 2}\n'),
    "tls-on-prefix": (LengthPrefixFramer(), bytes.fromhex("16030102000100") + bytes(40)),
    "http-on-line": (LineFramer(max_frame_size=8), b"GET /index.html HTTP/1.1\r\n"),
    "binary-on-line": (LineFramer(max_frame_size=8), LengthPrefixFramer().frame(b"x" * 20)),
    "binary-line-on-line": (LineFramer(max_frame_size=8), b"\x00\x00\x00\x14abcdefgh\n"),
    "lf-on-crlf": (LineFramer(b"\r\n", max_frame_size=8), b"one\ntwo\nthree\n"),
    "text-on-line": (LineFramer(max_frame_size=8), b"a long line of text\n"),
}


@compiled_only
@pytest.mark.parametrize(("framer", "stream"), list(MISMATCHES.values()), ids=list(MISMATCHES))
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_compiled_decoders_give_the_same_hints(framer: Framer, stream: bytes, split: bool) -> None:
    """A mismatched stream: the same FrameTooLargeError, hint and all, on both engines."""
    assert engine.compiled is not None
    protocol = StreamProtocol(BytesSerializer(), framer)
    chunks = [stream[i : i + 1] for i in range(len(stream))] if split else [stream]
    compiled = trace(engine.compiled.make_decoder(protocol), chunks, None)
    assert compiled == trace(protocol.decoder(), chunks, None)
    errors = [event for event in compiled if event[0] == "error"]
    assert errors
    assert errors[0][1] == "FrameTooLargeError"


@compiled_only
def test_other_framers_keep_their_own_decoder() -> None:
    assert engine.compiled is not None

    class MyLineFramer(LineFramer):
        pass

    protocol = StreamProtocol(BytesSerializer(), MyLineFramer())
    assert type(engine.compiled.make_decoder(protocol)).__module__ == "protocols.framing"


@compiled_only
@pytest.mark.parametrize("serializer", [BytesSerializer(), JSONSerializer()], ids=["bytes", "json"])
@pytest.mark.parametrize("framer", list(FRAMERS.values()), ids=list(FRAMERS))
@SETTINGS
@given(messages=st.lists(STREAM_BYTES | st.integers() | st.none(), max_size=5))
def test_compiled_encoder_behaves_as_the_pure_one(
    framer: Framer, serializer: Any, messages: list[Any]
) -> None:
    assert engine.compiled is not None
    protocol = StreamProtocol(serializer, framer)
    compiled_out = bytearray(b"head")
    pure_out = bytearray(b"head")
    for message in messages:
        outcomes = []
        for encode, out in (
            (lambda m, o: engine.compiled.encode_into(protocol, m, o), compiled_out),  # type: ignore[union-attr]
            (protocol.encode_into, pure_out),
        ):
            try:
                encode(message, out)
            except Exception as exc:
                outcomes.append((type(exc).__name__, str(exc)))
            else:
                outcomes.append(None)
        assert outcomes[0] == outcomes[1]
        assert compiled_out == pure_out


@compiled_only
@pytest.mark.parametrize("header_size", [1, 2, 4, 8])
@pytest.mark.parametrize("size", [0, 1, 255, 256, 300, 65535, 65536])
def test_compiled_length_prefix_encoder_writes_and_refuses_as_the_pure_one(
    header_size: int, size: int
) -> None:
    """Every header size, at the sizes where a header byte carries over or no longer fits."""
    assert engine.compiled is not None
    protocol: StreamProtocol[Any, Any] = StreamProtocol(
        BytesSerializer(), LengthPrefixFramer(header_size)
    )
    compiled = engine.compiled
    outcomes: list[Any] = []
    encoders: list[Any] = [lambda m, o: compiled.encode_into(protocol, m, o), protocol.encode_into]
    for encode in encoders:
        out = bytearray(b"head")
        payloads: list[Any] = [bytes(size), bytearray(b"x" * size)]
        for payload in payloads:
            try:
                encode(payload, out)
            except Exception as exc:
                outcomes.append((type(exc).__name__, str(exc), bytes(out)))
            else:
                outcomes.append(bytes(out))
    half = len(outcomes) // 2
    assert outcomes[:half] == outcomes[half:]


@compiled_only
@pytest.mark.parametrize("serializer", [BytesSerializer(), JSONSerializer()], ids=["bytes", "json"])
@SETTINGS
@given(steps=st.lists(st.one_of(STREAM_BYTES, st.sampled_from(["take", "take_all"])), max_size=12))
def test_compiled_inbox_behaves_as_the_pure_one(serializer: Any, steps: list[Any]) -> None:
    assert engine.compiled is not None
    protocol = DatagramProtocol(serializer)
    inboxes = [engine.compiled.make_inbox(protocol, 3), DatagramInbox(protocol.decode, 3)]
    for step in steps:
        outcomes = []
        for inbox in inboxes:
            try:
                if step == "take":
                    outcome: Any = next(inbox, "empty")
                elif step == "take_all":
                    outcome = inbox.take_all()
                else:
                    outcome = inbox.feed(step)
            except Exception as exc:
                outcome = (type(exc).__name__, str(exc))
            outcomes.append((outcome, inbox.buffered, inbox.broken))
        assert outcomes[0] == outcomes[1]
