"""The soak: mixed hostile traffic for a while, then memory and descriptors back at baseline.

RELIABILITY_SOAK_SECONDS (default 10) of connects, requests, resets mid-frame, resets with
replies pending, half-closes and plain closes from 4 client threads per loop. The three loops'
servers are soaked at the same time (one module fixture; each loop's test then checks its own
server), so the default run costs 10 seconds, not 30. ``make soak`` runs it for minutes.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reliability_helpers import (
    LOOPS,
    ServerProcess,
    Servers,
    connect,
    exchange,
    line,
    over_loops,
    recv_line,
    server_spec,
)

#: Duration of the soak, in seconds (the same for every loop, soaked at the same time).
SOAK_SECONDS = float(os.environ.get("RELIABILITY_SOAK_SECONDS", "10"))
CLIENTS = 4
TEST_NAME = "test_soak_of_mixed_traffic_leaves_memory_and_descriptors_at_baseline"


def _soak_client(address: tuple[str, int], until: float, seed: int, errors: list[str]) -> None:
    """Mixed traffic until ``until``: requests, resets mid-frame, half-closes, plain closes."""
    chooser = random.Random(seed)
    while time.monotonic() < until:
        action = chooser.choice(["requests", "reset", "reset-reply", "half-close", "close"])
        try:
            sock = connect(address, timeout=5.0)
        except OSError as exc:
            errors.append(f"connect: {exc!r}")
            continue
        try:
            if action == "requests":
                buffer = bytearray()
                count = chooser.randint(1, 20)
                sock.sendall(b"".join(line({"n": n}) for n in range(count)))
                for n in range(count):
                    assert json.loads(recv_line(sock, buffer) or b"null") == {"n": n}
            elif action in ("reset", "reset-reply"):
                sock.sendall(line("x") * 10 + (b'{"part' if action == "reset" else b""))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif action == "half-close":
                sock.sendall(line("bye"))
                sock.shutdown(socket.SHUT_WR)
                buffer = bytearray()
                assert recv_line(sock, buffer) == b'"bye"'
                assert recv_line(sock, buffer) is None
        except (AssertionError, OSError) as exc:
            errors.append(f"{action}: {exc!r}")
        finally:
            sock.close()


@dataclass
class Soaked:
    """What one loop's soak measured."""

    errors: list[str] = field(default_factory=list)  # client-side failures
    failure: str | None = None  # the soak itself failed (traceback)
    baseline_fds: int = 0
    final_fds: int = 0
    baseline_rss: int = 0
    final_rss: int = 0
    served_after: object = None
    exit_code: int | None = None
    error_records: list[dict[str, object]] = field(default_factory=list)


def _traffic(address: tuple[str, int], duration: float, seed: int, errors: list[str]) -> None:
    until = time.monotonic() + duration
    clients = [
        threading.Thread(target=_soak_client, args=(address, until, seed + n, errors))
        for n in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(duration + 30.0)


def _soak(server: ServerProcess, result: Soaked) -> None:
    try:
        address = server.address()
        warm_up = min(2.0, SOAK_SECONDS / 5)
        _traffic(address, warm_up, 0, result.errors)
        server.wait_quiet()
        result.baseline_fds, result.baseline_rss = server.fds(), server.rss()
        _traffic(address, SOAK_SECONDS - warm_up, 100, result.errors)
        server.wait_quiet()
        deadline = time.monotonic() + 5.0
        while server.fds() > result.baseline_fds and time.monotonic() < deadline:
            time.sleep(0.05)
        result.final_fds, result.final_rss = server.fds(), server.rss()
        result.served_after = exchange(address, "after the soak")
        result.exit_code = server.stop()
        result.error_records = [
            record for record in server.records() if record.get("level") in ("error", "critical")
        ]
    except BaseException:
        result.failure = traceback.format_exc()


@pytest.fixture(scope="module")
def soaked(request: pytest.FixtureRequest) -> Iterator[dict[str, Soaked]]:
    """Soak the selected loops' servers at the same time; their results by loop name."""
    selected = {
        item.callspec.params["loop"]
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.name.startswith(TEST_NAME + "[")
    } or set(LOOPS)
    with tempfile.TemporaryDirectory(prefix="sf-rel-soak-") as directory:
        servers = Servers(Path(directory))
        try:
            results = {loop: Soaked() for loop in LOOPS if loop in selected}
            processes = {
                loop: servers.start(loop, server_spec("Echo", options={"idle_timeout": 30.0}))
                for loop in results
            }
            threads = [
                threading.Thread(target=_soak, args=(processes[loop], results[loop]))
                for loop in results
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(SOAK_SECONDS + 60.0)
            yield results
        finally:
            servers.close()


@pytest.mark.soak
@pytest.mark.timeout(2 * SOAK_SECONDS + 90)
@over_loops()
def test_soak_of_mixed_traffic_leaves_memory_and_descriptors_at_baseline(
    soaked: dict[str, Soaked], loop: str
) -> None:
    """After the soak: no client saw an error, descriptors are back to their count after the
    warm-up, RSS is within a few percent of it, the server still answers, logged no error and
    exits 0 on SIGTERM."""
    result = soaked[loop]
    assert result.failure is None, result.failure
    assert not result.errors, result.errors[:10]
    assert result.final_fds <= result.baseline_fds, (result.final_fds, result.baseline_fds)
    assert result.final_rss < result.baseline_rss * 1.05 + 1024 * 1024, (
        f"RSS {result.final_rss / 2**20:.1f} MiB after the soak, "
        f"{result.baseline_rss / 2**20:.1f} MiB after the warm-up"
    )
    assert result.served_after == "after the soak"
    assert result.exit_code == 0
    assert not result.error_records, result.error_records
