"""The client of ``--instructions``: a small blocking client that sends an exact number of requests.

It opens ``connections`` connections, sends ``requests`` requests over them (``depth`` per
write on each connection: 1 is request/response, 16 pipelined), reads every reply, compares it
byte for byte with what is expected, and stops. ``churn`` opens one connection per request
(connect, send, read the reply, close); ``udp`` sends one datagram at a time on one connected
socket and waits for its echo. Nothing is timed: the figure of ``--instructions`` is the count
of instructions the *server* executed (valgrind's callgrind), so this client only needs to make
the server do exactly the same work twice over, deterministically.

Used in process by :mod:`benchmarks.instructions`; also runnable on its own against a server
started by hand (prints the result as one JSON line)::

    python -m benchmarks.generators.instructions --port 9000 --mode tcp --framing ping -n 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
from dataclasses import asdict, dataclass, field

from benchmarks.messages import Framing, request_and_reply

#: Seconds a socket operation may block: servers under valgrind run ~50x slower than usual.
TIMEOUT = 60.0


@dataclass
class Result:
    """What one run of the client did.

    Attributes:
        requests: Requests sent.
        replies: Replies received and right (byte for byte).
        errors: Wrong replies, early closes, time-outs (the run stops at the first).
        error_samples: The first few errors, in words.
    """

    requests: int = 0
    replies: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(what)

    @property
    def ok(self) -> bool:
        return not self.errors and self.replies == self.requests


def _shares(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total)) if total else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer if the peer closes first."""
    chunks = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _check(got: bytes, one: bytes, count: int, result: Result, where: str) -> bool:
    """Count the right replies among ``count`` expected in ``got``; False on the first wrong."""
    expected = one * count
    if got == expected:
        result.replies += count
        return True
    right = 0
    while right < count and got[right * len(one) : (right + 1) * len(one)] == one:
        right += 1
    result.replies += right
    if len(got) < len(expected) and got == expected[: len(got)]:
        result.error(f"{where}: the server closed after {len(got)} of {len(expected)} bytes")
    else:
        bad = got[right * len(one) : (right + 1) * len(one)]
        result.error(f"{where}: expected {one[:40]!r} ({len(one)} B), got {bad[:40]!r}")
    return False


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run_tcp(host: str, port: int, request: bytes, reply: bytes, requests: int, *,
            connections: int = 1, depth: int = 1, timeout: float = TIMEOUT) -> Result:  # fmt: skip
    """``requests`` requests over ``connections`` connections, ``depth`` in flight on each.

    Every connection sends ``depth`` requests in one write and reads all their replies before
    it writes again; connections take turns (all write, then all read).
    """
    result = Result()
    socks = [_connect(host, port, timeout) for _ in range(connections)]
    try:
        left = _shares(requests, len(socks))
        while any(left):
            batch = [min(depth, n) for n in left]
            for sock, count in zip(socks, batch, strict=True):
                if count:
                    sock.sendall(request * count)
                    result.requests += count
            for i, (sock, count) in enumerate(zip(socks, batch, strict=True)):
                if count:
                    got = _read_exactly(sock, len(reply) * count)
                    if not _check(got, reply, count, result, f"connection {i}"):
                        return result
                    left[i] -= count
    except OSError as exc:
        result.error(f"{exc!r}")
    finally:
        for sock in socks:
            sock.close()
    return result


def run_churn(host: str, port: int, request: bytes, reply: bytes, requests: int, *,
              timeout: float = TIMEOUT) -> Result:  # fmt: skip
    """``requests`` times: connect, one request, its reply, close (and wait for the server's
    close, so that the server has finished with a connection before the next one opens)."""
    result = Result()
    for i in range(requests):
        try:
            with _connect(host, port, timeout) as sock:
                sock.sendall(request)
                result.requests += 1
                got = _read_exactly(sock, len(reply))
                if not _check(got, reply, 1, result, f"connection {i}"):
                    return result
                sock.shutdown(socket.SHUT_WR)
                with contextlib.suppress(ConnectionResetError):
                    sock.recv(1)  # the server's end of file (or a reset): it closed its end
        except OSError as exc:
            result.error(f"connection {i}: {exc!r}")
            return result
    return result


def run_udp(host: str, port: int, request: bytes, requests: int, *,
            timeout: float = TIMEOUT) -> Result:  # fmt: skip
    """``requests`` datagrams, one at a time, each echo awaited (no re-sending: a lost datagram
    is an error, since a re-sent one would change the server's count)."""
    result = Result()
    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            for _ in range(requests):
                sock.send(request)
                result.requests += 1
                got = sock.recv(65536)
                if not _check(got, request, 1, result, "datagram"):
                    return result
        except OSError as exc:
            result.error(f"{exc!r}")
    return result


def drive(host: str, port: int, mode: str, framing: Framing, size: int, requests: int, *,
          connections: int = 1, depth: int = 1, timeout: float = TIMEOUT) -> Result:  # fmt: skip
    """Run ``mode`` (``tcp``, ``churn`` or ``udp``) with the messages of ``framing`` and ``size``
    (:func:`benchmarks.messages.request_and_reply`)."""
    if mode == "udp":
        request, _ = request_and_reply(size, "udp")
        return run_udp(host, port, request, requests, timeout=timeout)
    request, reply = request_and_reply(size, framing)
    if mode == "churn":
        return run_churn(host, port, request, reply, requests, timeout=timeout)
    if mode != "tcp":
        raise ValueError(f"mode must be tcp, churn or udp, got {mode!r}")
    return run_tcp(
        host, port, request, reply, requests, connections=connections, depth=depth,
        timeout=timeout,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("tcp", "churn", "udp"), default="tcp")
    parser.add_argument("--framing", choices=("line", "prefix", "ping", "json"), default="ping")
    parser.add_argument("--size", type=int, default=64, help="payload bytes (not for ping)")
    parser.add_argument("-n", "--requests", type=int, default=100)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--depth", type=int, default=1, help="requests per write")
    parser.add_argument("--timeout", type=float, default=TIMEOUT)
    args = parser.parse_args()
    result = drive(
        args.host, args.port, args.mode, args.framing, args.size, args.requests,
        connections=args.connections, depth=args.depth, timeout=args.timeout,
    )  # fmt: skip
    print(json.dumps(asdict(result)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
