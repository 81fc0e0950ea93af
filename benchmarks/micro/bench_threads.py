"""Micro-benchmark: round-trip cost of our thread tools against the loops' raw calls.

For each loop (asyncio, uvloop, trio) it measures, in microseconds per call:

- loop -> thread: ``await backend.run_in_thread(f)`` against ``loop.run_in_executor(None, f)``
  and ``asyncio.to_thread(f)`` (asyncio, uvloop) or ``trio.to_thread.run_sync(f)`` (trio);
- thread -> loop, called from a worker thread: ``portal.run_sync(f)`` against
  ``loop.call_soon_threadsafe`` plus a future (asyncio, uvloop) or ``trio.from_thread.run_sync``
  (trio), and ``portal.run_coroutine(af)`` against
  ``asyncio.run_coroutine_threadsafe(af(), loop).result()`` or ``trio.from_thread.run``.

Calls are sequential (one in flight), so the figure is the latency of one round trip. Ours and
the raw call alternate round by round (who goes first rotates), and each figure is the median
over the rounds, so that a noisy neighbour hits both alike. The last column is ours / raw; the
target is <= 1.2.

Where the OS allows it, the process is pinned to one CPU while it measures (``--cpu``): with
the loop thread and the calling thread free to sit on the same or on different cores, a round
trip takes either about 20 us or about 50 us, and the figures jump between the two.

Run: ``python benchmarks/micro/bench_threads.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import trio

import server_framework
from server_framework.backend import BackendName, current

TARGET_RATIO = 1.2


@dataclass(frozen=True, slots=True)
class Row:
    loop: str
    operation: str
    ours_us: float
    raw_name: str
    raw_us: float

    @property
    def ratio(self) -> float:
        return self.ours_us / self.raw_us


def noop() -> None:
    pass


async def anoop() -> None:
    pass


class Timer:
    """Per-call timings by name; candidates run in a rotating order, one block per round."""

    def __init__(self, rounds: int, calls: int) -> None:
        self.rounds = rounds
        self.calls = calls
        self.samples: dict[str, list[float]] = {}

    def orders(self, names: list[str]) -> Iterator[list[str]]:
        # Rotate who goes first, so that warm-up or drift favours nobody.
        for r in range(self.rounds):
            k = r % len(names)
            yield names[k:] + names[:k]

    def add(self, name: str, start: float) -> None:
        per_call_us = (time.perf_counter() - start) / self.calls * 1e6
        self.samples.setdefault(name, []).append(per_call_us)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])


# ---------------------------------------------------------------------------- loop -> thread


async def bench_run_in_thread(loop_name: str, rounds: int, calls: int) -> list[Row]:
    backend = current()
    candidates: dict[str, Callable[[], Awaitable[object]]] = {
        "ours": lambda: backend.run_in_thread(noop)
    }
    if loop_name == "trio":
        candidates["trio.to_thread.run_sync"] = lambda: trio.to_thread.run_sync(noop)
    else:
        loop = asyncio.get_running_loop()
        candidates["loop.run_in_executor"] = lambda: loop.run_in_executor(None, noop)
        candidates["asyncio.to_thread"] = lambda: asyncio.to_thread(noop)
    timer = Timer(rounds, calls)
    for order in timer.orders(list(candidates)):
        for name in order:
            call = candidates[name]
            start = time.perf_counter()
            for _ in range(calls):
                await call()
            timer.add(name, start)
    return [
        Row(loop_name, "run_in_thread", timer.median("ours"), raw, timer.median(raw))
        for raw in candidates
        if raw != "ours"
    ]


# ---------------------------------------------------------------------------- thread -> loop


def _raw_callers(loop_name: str) -> dict[str, Callable[[], object]]:
    """The raw run_sync and run_coroutine equivalents, to be called from a worker thread."""
    if loop_name == "trio":
        token = trio.lowlevel.current_trio_token()
        return {
            "trio.from_thread.run_sync": lambda: trio.from_thread.run_sync(noop, trio_token=token),
            "trio.from_thread.run": lambda: trio.from_thread.run(anoop, trio_token=token),
        }

    loop = asyncio.get_running_loop()

    def call_soon_threadsafe_and_future() -> object:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def callback() -> None:
            try:
                future.set_result(noop())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(callback)
        return future.result()

    return {
        "call_soon_threadsafe+Future": call_soon_threadsafe_and_future,
        "run_coroutine_threadsafe": lambda: asyncio.run_coroutine_threadsafe(
            anoop(), loop
        ).result(),
    }


async def bench_portal(loop_name: str, rounds: int, calls: int) -> list[Row]:
    backend = current()
    timer = Timer(rounds, calls)
    async with backend.create_threads_portal() as portal:
        (raw_sync_name, raw_sync), (raw_coroutine_name, raw_coroutine) = _raw_callers(
            loop_name
        ).items()
        candidates: dict[str, Callable[[], object]] = {
            "portal.run_sync": lambda: portal.run_sync(noop),
            raw_sync_name: raw_sync,
            "portal.run_coroutine": lambda: portal.run_coroutine(anoop),
            raw_coroutine_name: raw_coroutine,
        }

        def measure() -> None:
            for order in timer.orders(list(candidates)):
                for name in order:
                    call = candidates[name]
                    start = time.perf_counter()
                    for _ in range(calls):
                        call()
                    timer.add(name, start)

        caller = threading.Thread(target=measure, name="bench-portal-caller")
        caller.start()
        await backend.run_in_thread(caller.join)
    return [
        Row(loop_name, ours, timer.median(ours), raw, timer.median(raw))
        for ours, raw in (
            ("portal.run_sync", raw_sync_name),
            ("portal.run_coroutine", raw_coroutine_name),
        )
    ]


async def bench_loop(loop_name: str, rounds: int, calls: int) -> list[Row]:
    # Warm up thread pools and caches before measuring.
    await bench_run_in_thread(loop_name, 1, min(calls, 100))
    rows = await bench_run_in_thread(loop_name, rounds, calls)
    rows += await bench_portal(loop_name, rounds, calls)
    return rows


# ---------------------------------------------------------------------------- main


def format_table(rows: list[Row]) -> str:
    header = ("loop", "operation", "ours us", "raw", "raw us", "ours/raw")
    lines = [
        (
            row.loop,
            row.operation,
            f"{row.ours_us:.1f}",
            row.raw_name,
            f"{row.raw_us:.1f}",
            f"{row.ratio:.2f}" + ("" if row.ratio <= TARGET_RATIO else " !"),
        )
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *lines]
    ]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def pick_cpu(choice: str, quick: bool) -> int | None:
    """The CPU to pin to, or None (not asked for, quick mode, or not supported here)."""
    if choice == "none" or not hasattr(os, "sched_setaffinity"):
        return None
    if choice == "auto":
        return None if quick else max(os.sched_getaffinity(0))
    return int(choice)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 (a missed target is reported, not fatal)."""
    parser = argparse.ArgumentParser(
        description="Round-trip cost of run_in_thread and ThreadsPortal against the raw loop calls."
    )
    parser.add_argument("--quick", action="store_true", help="a few calls only (smoke test)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per figure (median)")
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per round")
    parser.add_argument(
        "--loops",
        default="asyncio,uvloop,trio",
        help="comma-separated loops to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--cpu",
        default="auto",
        help="pin the process to this CPU while measuring: a number, 'auto' (the last allowed "
        "CPU; not with --quick) or 'none' (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    rounds, calls = (2, 20) if args.quick else (args.rounds, args.calls)
    loops: list[BackendName] = []
    for name in args.loops.split(","):
        if name not in ("asyncio", "uvloop", "trio"):
            parser.error(f"unknown loop {name!r}")
        loops.append(name)  # type: ignore[arg-type]

    cpu = pick_cpu(args.cpu, args.quick)
    allowed = os.sched_getaffinity(0) if cpu is not None else set()
    rows: list[Row] = []
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        for loop_name in loops:
            rows += server_framework.run(bench_loop, loop_name, rounds, calls, backend=loop_name)
    finally:
        if cpu is not None:
            os.sched_setaffinity(0, allowed)
    pinned = f"pinned to CPU {cpu}" if cpu is not None else "not pinned"
    print(
        f"{calls} sequential calls per round, median of {rounds} rounds, {pinned}; "
        f"target ours/raw <= {TARGET_RATIO} ('!' marks a miss)"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
