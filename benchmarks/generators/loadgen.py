"""The suite's own load generator: one process of it; the runner starts ``--client-processes``.

A closed loop on uvloop with pre-built request buffers. Every reply is compared with the exact
bytes expected (an echo of the request, or ``+PONG`` to ``PING``); a wrong reply counts as an
error, and any error fails the run. Modes:

- ``tcp``: each connection sends ``--depth`` framed requests in one write and waits for all
  their replies before sending again (``--depth 1``: request/response; 16: pipelined).
- ``udp``: each of ``--connections`` connected UDP sockets keeps one datagram in flight (an
  8-byte sequence number leads the payload; an answer lost for 100 ms is counted and re-sent).
- ``churn``: ``--connections`` loops of connect, one request, reply, close.
- ``idle``: opens ``--connections`` connections, one exchange each, then holds them.

Talk with the runner, one JSON object per line on stdout, commands on stdin:
``{"event": "ready"}``, then stdin ``start T`` (T a ``time.time()``): warm up until T, measure for
``--duration`` seconds, then ``{"event": "result", ...}``. In ``idle`` mode: ``{"event": "warm"}``
(after opening and closing a few connections), stdin ``go``, ``{"event": "ready"}`` once every
connection is held, stdin ``close``, then the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import uvloop

from benchmarks.messages import Framing, request_and_reply

perf_counter = time.perf_counter

#: Quantile points reported per worker; the runner merges them into p50/p99.
QUANTILES = 200
#: A UDP request unanswered for this long is counted lost and replaced.
UDP_LOSS_TIMEOUT = 0.1
#: After the window closes, connections get this long to finish their last exchange.
DRAIN_GRACE = 5.0
#: Connections opened at once in ``idle`` mode (more overflows a small accept backlog).
IDLE_OPEN_BATCH = 50


def emit(event: str, **fields: Any) -> None:
    """Send one JSON line to the runner."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Stats:
    """What one worker measured; the measurement window is ``[start, end)`` (perf_counter)."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.requests = 0
        self.checked = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.lost = 0
        self.late = 0
        self.latencies: list[float] = []
        self.cpu_start = 0.0
        self.cpu_seconds = 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(what)

    def completed(self, count: int, sent: float, now: float) -> bool:
        """Count ``count`` checked replies; return True while the run goes on."""
        self.checked += count
        if self.start <= now < self.end:
            self.requests += count
            self.latencies.append(now - sent)
        return now < self.end

    def result(self, **extra: Any) -> dict[str, Any]:
        lat = sorted(self.latencies)
        points: list[float] = []
        if lat:
            last = len(lat) - 1
            points = [round(lat[i * last // (QUANTILES - 1)] * 1e6, 1) for i in range(QUANTILES)]
        return {
            "requests": self.requests,
            "checked": self.checked,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "lost": self.lost,
            "late": self.late,
            "latency_samples": len(lat),
            "latency_quantiles_us": points,
            "cpu_seconds": self.cpu_seconds,
            **extra,
        }


def mismatch(got: bytes, expected: bytes) -> str:
    return f"expected {expected[:40]!r}... ({len(expected)} B), got {got[:40]!r}... ({len(got)} B)"


class StreamConn(asyncio.Protocol):
    """One TCP connection of the closed loop (or of ``churn``/``idle``: see ``once``)."""

    def __init__(
        self, stats: Stats, request: bytes, reply: bytes, depth: int, on_done: Callable[[], None]
    ) -> None:
        self.stats = stats
        self.request = request
        self.reply = reply
        self.reply_len = len(reply)
        self.depth = depth
        self.on_done = on_done
        self.once = False
        self.opened_at: float | None = None  # churn: latency counts from before the connect
        self.finished = False
        self.chunks: list[bytes] = []
        self.got = 0
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        assert self.transport is not None
        self.chunks = []
        self.got = 0
        self.sent = perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.got += len(data)
        if self.got < self.reply_len:
            return
        now = perf_counter()
        got = data if len(self.chunks) == 1 else b"".join(self.chunks)
        if got != self.reply:
            self.stats.error(mismatch(got, self.reply))
            self.finish()
            return
        sent = self.sent if self.opened_at is None else self.opened_at
        if self.stats.completed(self.depth, sent, now) and not self.once:
            self.send()
        else:
            self.finish()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.on_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.stats.error(f"connection lost before its reply: {exc!r}")
            self.finish()


class DatagramConn(asyncio.DatagramProtocol):
    """One connected UDP socket with one datagram in flight."""

    def __init__(self, stats: Stats, payload: bytes, on_done: Callable[[], None]) -> None:
        self.stats = stats
        self.filler = payload[8:]
        self.on_done = on_done
        self.seq = 0
        self.request = b""
        self.sent = 0.0
        self.finished = False
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        assert self.transport is not None
        self.seq += 1
        self.request = self.seq.to_bytes(8, "big") + self.filler
        self.sent = perf_counter()
        self.transport.sendto(self.request)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.finished:
            return
        if data != self.request:
            if data[:8] == self.request[:8]:
                self.stats.error(mismatch(data, self.request))
                self.finished = True
                self.on_done()
            else:
                self.stats.late += 1  # the answer to a request already given up
            return
        if self.stats.completed(1, self.sent, perf_counter()):
            self.send()
        else:
            self.finished = True
            self.on_done()

    def error_received(self, exc: Exception) -> None:
        pass  # ECONNREFUSED on loopback when the server is gone: the loss timer re-sends


class Worker:
    """One generator process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.stats = Stats()
        framing: Framing = "udp" if args.mode == "udp" else args.framing
        self.request, self.reply = request_and_reply(args.size, framing, args.depth)
        self.pending = 0
        self.all_done = self.loop.create_future()

    def one_done(self) -> None:
        self.pending -= 1
        if self.pending <= 0 and not self.all_done.done():
            self.all_done.set_result(None)

    async def command(self) -> str:
        line: str = await self.loop.run_in_executor(None, sys.stdin.readline)
        return line.strip()

    def set_window(self, start_at: float) -> None:
        start = perf_counter() + (start_at - time.time())
        self.stats.start = start
        self.stats.end = start + self.args.duration

        def snap_start() -> None:
            self.stats.cpu_start = time.process_time()

        def snap_end() -> None:
            self.stats.cpu_seconds = time.process_time() - self.stats.cpu_start

        self.loop.call_later(max(0.0, start - perf_counter()), snap_start)
        self.loop.call_later(max(0.0, self.stats.end - perf_counter()), snap_end)

    async def wait_done(self, conns: list[StreamConn] | None = None) -> int:
        """Wait for every connection to finish; return how many never did (each an error)."""
        timeout = self.stats.end - perf_counter() + DRAIN_GRACE
        try:
            await asyncio.wait_for(asyncio.shield(self.all_done), max(timeout, DRAIN_GRACE))
        except TimeoutError:
            for conn in conns or []:
                if not conn.finished:
                    got = b"".join(conn.chunks)
                    self.stats.error("no complete reply in time: " + mismatch(got, conn.reply))
            if not conns:
                self.stats.error(f"{self.pending} socket(s) still waiting for a reply")
            return self.pending
        return 0

    async def open_stream(self, **kwargs: Any) -> StreamConn:
        _, conn = await self.loop.create_connection(
            lambda: StreamConn(
                self.stats, self.request, self.reply, self.args.depth, self.one_done
            ),
            self.args.host,
            self.args.port,
        )
        for key, value in kwargs.items():
            setattr(conn, key, value)
        return conn

    async def run_tcp(self) -> dict[str, Any]:
        conns = [await self.open_stream() for _ in range(self.args.connections)]
        self.pending = len(conns)
        emit("ready")
        self.set_window(float((await self.command()).split()[1]))
        for conn in conns:
            conn.send()
        unfinished = await self.wait_done(conns)
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
        return self.stats.result(unfinished=unfinished)

    async def run_udp(self) -> dict[str, Any]:
        conns: list[DatagramConn] = []
        payload = self.request
        for _ in range(self.args.connections):
            _, conn = await self.loop.create_datagram_endpoint(
                lambda: DatagramConn(self.stats, payload, self.one_done),
                remote_addr=(self.args.host, self.args.port),
            )
            conns.append(conn)
        self.pending = len(conns)
        emit("ready")
        self.set_window(float((await self.command()).split()[1]))
        for conn in conns:
            conn.send()

        def resend_lost() -> None:
            now = perf_counter()
            for conn in conns:
                if not conn.finished and now - conn.sent > UDP_LOSS_TIMEOUT:
                    if now >= self.stats.end:
                        conn.finished = True
                        self.one_done()
                    else:
                        self.stats.lost += 1
                        conn.send()
            if not self.all_done.done():
                self.loop.call_later(UDP_LOSS_TIMEOUT / 4, resend_lost)

        resend_lost()
        unfinished = await self.wait_done()
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
        return self.stats.result(unfinished=unfinished)

    async def run_churn(self) -> dict[str, Any]:
        stats = self.stats
        failures = 0

        async def churner() -> None:
            nonlocal failures
            while True:
                done: asyncio.Future[None] = self.loop.create_future()
                opened_at = perf_counter()
                try:
                    conn = await self.open_stream(
                        once=True, opened_at=opened_at, on_done=partial(done.set_result, None)
                    )
                except OSError as exc:
                    failures += 1
                    stats.error(f"connect failed: {exc!r}")
                    return
                conn.send()
                await done
                assert conn.transport is not None
                conn.transport.close()
                if stats.errors or perf_counter() >= stats.end:
                    return

        emit("ready")
        self.set_window(float((await self.command()).split()[1]))
        tasks = [self.loop.create_task(churner()) for _ in range(self.args.connections)]
        _done, pending = await asyncio.wait(tasks, timeout=stats.end - perf_counter() + DRAIN_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            stats.error(f"{len(pending)} churn loop(s) stalled")
        return stats.result(unfinished=len(pending), connect_failures=failures)

    async def run_idle(self) -> dict[str, Any]:
        async def exchange(conns: list[StreamConn]) -> None:
            futures = []
            for conn in conns:
                future = self.loop.create_future()
                conn.on_done = lambda f=future: f.done() or f.set_result(None)  # type: ignore[misc]
                futures.append(future)
                conn.send()
            await asyncio.wait_for(asyncio.gather(*futures), 10)

        async def open_many(count: int) -> list[StreamConn]:
            conns: list[StreamConn] = []
            while len(conns) < count:
                batch = min(IDLE_OPEN_BATCH, count - len(conns))
                opened = await asyncio.gather(*(self.open_stream(once=True) for _ in range(batch)))
                await exchange(list(opened))
                conns.extend(opened)
            return conns

        for conn in await open_many(min(20, self.args.connections)):
            assert conn.transport is not None
            conn.transport.close()
        await asyncio.sleep(0.1)
        emit("warm")
        await self.command()
        conns = await open_many(self.args.connections)
        emit("ready", held=len(conns))
        await self.command()
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
        return self.stats.result(held=len(conns))


async def amain(args: argparse.Namespace) -> None:
    worker = Worker(args)
    runs = {
        "tcp": worker.run_tcp,
        "udp": worker.run_udp,
        "churn": worker.run_churn,
        "idle": worker.run_idle,
    }
    try:
        result = await runs[args.mode]()
    except OSError as exc:
        worker.stats.error(f"{exc!r}")
        result = worker.stats.result()
    emit("result", **result)


def main() -> None:
    parser = argparse.ArgumentParser(description="One process of the suite's load generator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("tcp", "udp", "churn", "idle"), default="tcp")
    parser.add_argument(
        "--framing", choices=("line", "prefix", "ping", "udp", "json"), default="line"
    )
    parser.add_argument("--size", type=int, default=64, help="message payload size in bytes")
    parser.add_argument("--depth", type=int, default=1, help="requests in flight per connection")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=int, default=600, help="exit after this long")
    args = parser.parse_args()
    if args.mode == "udp" and args.size < 8:
        parser.error("UDP requests carry an 8-byte sequence number: --size must be >= 8")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.alarm(args.max_seconds)
    socket.setdefaulttimeout(None)
    uvloop.run(amain(args))


if __name__ == "__main__":
    main()
