"""Micro-benchmarks of the wire layer: encode and decode throughput of framer + serializer pairs.

Run with ``make bench-micro`` (or ``.venv/bin/python -m pytest benchmarks/micro --benchmark-only``).
Pairs: (line, JSON), (line, text), (length prefix, MessagePack), (length prefix, JSON) and
(fixed size, struct); messages whose payload is 64 B, 1 KiB and 64 KiB.

What one benchmark round measures, so the ops/s column can be read:

- ``test_encode``: one ``protocol.encode(message)`` call. ops/s = messages/s.
- ``test_encode_into``: a batch of N messages appended with ``encode_into`` to one fresh
  ``bytearray`` (how a server batches replies). ops/s = batches/s.
- ``test_decode``: a fresh decoder fed one buffer holding N pre-encoded messages, then iterated
  to the end (one large read from the socket). ops/s = batches/s.

N is 1000 messages for 64 B and 1 KiB, 32 for 64 KiB. For batched benchmarks, the
per-message time (median / N) and the throughput in MB/s are in each result's ``extra_info``
(shown with ``--benchmark-json``); messages/s is ops/s times N.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocols import (
    FixedSizeFramer,
    JSONSerializer,
    LengthPrefixFramer,
    LineFramer,
    MsgPackSerializer,
    StreamProtocol,
    StringSerializer,
    StructSerializer,
)

pytestmark = pytest.mark.benchmark(max_time=0.5, min_rounds=5)

SIZES = {"64B": 64, "1KiB": 1024, "64KiB": 64 * 1024}
BATCH = {64: 1000, 1024: 1000, 64 * 1024: 32}


def padded_mapping(serialize: Callable[[Any], bytes], size: int) -> dict[str, Any]:
    """A small record whose serialized payload is exactly ``size`` bytes."""
    message: dict[str, Any] = {"id": 12345, "method": "echo", "data": ""}
    message["data"] = "x" * (size - len(serialize(message)))
    if len(serialize(message)) != size:  # a length prefix inside the format grew: adjust once
        message["data"] = message["data"][: size - len(serialize(message))]
    assert len(serialize(message)) == size
    return message


def line_json(size: int) -> tuple[StreamProtocol[Any, Any], Any]:
    serializer = JSONSerializer()
    return StreamProtocol(serializer, LineFramer()), padded_mapping(serializer.serialize, size)


def line_string(size: int) -> tuple[StreamProtocol[Any, Any], Any]:
    return StreamProtocol(StringSerializer(), LineFramer()), "x" * size


def prefix_msgpack(size: int) -> tuple[StreamProtocol[Any, Any], Any]:
    serializer = MsgPackSerializer()
    return StreamProtocol(serializer, LengthPrefixFramer()), padded_mapping(
        serializer.serialize, size
    )


def prefix_json(size: int) -> tuple[StreamProtocol[Any, Any], Any]:
    serializer = JSONSerializer()
    return StreamProtocol(serializer, LengthPrefixFramer()), padded_mapping(
        serializer.serialize, size
    )


def fixed_struct(size: int) -> tuple[StreamProtocol[Any, Any], Any]:
    """A record of a 4-byte id, an 8-byte timestamp and bytes filling the rest."""
    serializer = StructSerializer(f"Iq{size - 12}s")
    assert serializer.size == size
    return StreamProtocol(serializer, FixedSizeFramer(size)), (7, 1_700_000_000, b"x" * (size - 12))


PAIRS: dict[str, Callable[[int], tuple[StreamProtocol[Any, Any], Any]]] = {
    "line-json": line_json,
    "line-string": line_string,
    "prefix-msgpack": prefix_msgpack,
    "prefix-json": prefix_json,
    "fixed-struct": fixed_struct,
}


@pytest.fixture(params=list(PAIRS), ids=list(PAIRS))
def pair(request: pytest.FixtureRequest) -> Callable[[int], tuple[StreamProtocol[Any, Any], Any]]:
    return PAIRS[request.param]


@pytest.fixture(params=list(SIZES.values()), ids=list(SIZES))
def size(request: pytest.FixtureRequest) -> int:
    result: int = request.param
    return result


def record_batch(benchmark: Any, messages: int, batch_bytes: int) -> None:
    """Put per-message time and throughput next to the batch timings."""
    benchmark.extra_info["messages_per_round"] = messages
    benchmark.extra_info["bytes_per_round"] = batch_bytes
    if benchmark.stats is not None:  # None when benchmarks are disabled
        median = benchmark.stats.stats.median
        benchmark.extra_info["median_per_message_us"] = median / messages * 1e6
        benchmark.extra_info["MB_per_s"] = batch_bytes / median / 1e6


@pytest.mark.benchmark(group="encode")
def test_encode(benchmark: Any, pair: Any, size: int) -> None:
    protocol, message = pair(size)
    frame = benchmark(protocol.encode, message)
    assert len(frame) >= size


@pytest.mark.benchmark(group="encode_into")
def test_encode_into(benchmark: Any, pair: Any, size: int) -> None:
    protocol, message = pair(size)
    count = BATCH[size]
    encode_into = protocol.encode_into
    messages = [message] * count

    def encode_batch() -> bytearray:
        buffer = bytearray()
        for item in messages:
            encode_into(item, buffer)
        return buffer

    buffer = benchmark(encode_batch)
    assert len(buffer) == count * len(protocol.encode(message))
    record_batch(benchmark, count, len(buffer))


@pytest.mark.benchmark(group="decode")
def test_decode(benchmark: Any, pair: Any, size: int) -> None:
    protocol, message = pair(size)
    count = BATCH[size]
    stream = protocol.encode(message) * count
    new_decoder = protocol.decoder

    def decode_batch() -> int:
        decoder = new_decoder()
        decoder.feed(stream)
        decoded = 0
        for _ in decoder:
            decoded += 1
        return decoded

    assert benchmark(decode_batch) == count
    record_batch(benchmark, count, len(stream))
