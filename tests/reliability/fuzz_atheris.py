"""An atheris (libFuzzer) target for the peer-facing parsers: the PROXY protocol header parser
and the stream decoders (JSON lines; length-prefixed, zlib-wrapped JSON).

Run it for as long as you like (atheris is not a dependency: ``pip install atheris``)::

    python tests/reliability/fuzz_atheris.py -max_total_time=600

Each input is split into chunks at offsets taken from its first bytes, then fed to a fresh
parser and to fresh decoders. Allowed outcomes: a header or messages, "need more",
ProxyProtocolError / ProtocolError. Anything else is a crash the fuzzer reports. The test suite
runs it briefly (tests/reliability/test_rel_proxy_fuzz.py) where atheris is installed.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from protocols import (
        JSONSerializer,
        LengthPrefixFramer,
        ProtocolError,
        StreamProtocol,
        ZlibWrapper,
    )
    from protocols.proxy import ProxyHeaderParser, ProxyProtocolError

PROTOCOLS = (
    StreamProtocol(JSONSerializer()),
    StreamProtocol(ZlibWrapper(JSONSerializer()), LengthPrefixFramer()),
)
VERSIONS = ("auto", "v1", "v2")


def chunks_of(data: bytes) -> tuple[str, list[bytes]]:
    """The versions to accept and the chunks, both chosen by the input's first two bytes."""
    if len(data) < 2:
        return "auto", [data]
    versions = VERSIONS[data[0] % 3]
    step = data[1] % 17 + 1
    body = data[2:]
    return versions, [body[i : i + step] for i in range(0, len(body), step)] or [b""]


def test_one_input(data: bytes) -> None:
    versions, chunks = chunks_of(data)
    parser = ProxyHeaderParser(versions)  # type: ignore[arg-type]
    try:
        for chunk in chunks:
            if parser.feed(chunk) is not None:
                parser.remaining()
                break
    except ProxyProtocolError:
        pass
    for protocol in PROTOCOLS:
        decoder = protocol.decoder()
        for chunk in chunks:
            if decoder.broken:
                break
            decoder.feed(chunk)
            while True:
                try:
                    next(decoder)
                except StopIteration:
                    break
                except ProtocolError:
                    if decoder.broken:  # a framing error: the stream is over
                        break


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
