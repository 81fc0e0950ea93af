"""Blocked-loop detection (`server_framework.watchdog`), on every loop, with real threads.

A blocking call here waits until the watchdog has reported it (or 10 s), rather than for a
fixed time: the test then does not depend on how fast a loaded machine schedules the sampler.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
import structlog

import server_framework as sf
from server_framework.backend import BackendName, current
from server_framework.watchdog import describe_frames, watch_loop


def block_until(event: threading.Event, timeout: float = 10.0) -> None:
    """Block this thread (and so its event loop) until ``event`` is set."""
    deadline = time.monotonic() + timeout
    while not event.is_set() and time.monotonic() < deadline:
        time.sleep(0.005)


class Warnings:
    """Captured log records; ``seen`` is set at the first "event loop blocked"."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.seen = threading.Event()

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        self.records.append({**event_dict, "log_level": method})
        if event_dict.get("event") == "event loop blocked":
            self.seen.set()
        raise structlog.DropEvent

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record.get("event") == name]


def capturing(warnings: Warnings) -> Any:
    return structlog.testing.capture_logs(processors=[warnings])


class Slow:
    """Stands for a request handler: its ``handle`` blocks the loop."""

    def __init__(self, until: threading.Event) -> None:
        self.until = until

    async def handle(self, client: Any) -> None:
        block_until(self.until)


class Peer:
    peer_address = ("127.0.0.1", 4242)


async def test_a_stall_gives_one_warning_with_the_handler(backend_name: BackendName) -> None:
    warnings = Warnings()
    with capturing(warnings):
        async with watch_loop(current(), 0.1):
            await Slow(warnings.seen).handle(Peer())
            # Let the heartbeat run again so that the end of the stall is seen.
            deadline = time.monotonic() + 10
            while not warnings.events("event loop unblocked") and time.monotonic() < deadline:
                await current().sleep(0.02)
    (blocked,) = warnings.events("event loop blocked")
    assert blocked["log_level"] == "warning"
    assert blocked["backend"] == backend_name
    assert blocked["handler"] == "Slow.handle"
    assert blocked["peer"] == "('127.0.0.1', 4242)"
    assert "block_until" in blocked["stack"]
    assert blocked["blocked_for"] >= 0.1
    (unblocked,) = warnings.events("event loop unblocked")
    assert unblocked["blocked_for"] >= 0.1


async def test_two_stalls_give_two_warnings(backend_name: BackendName) -> None:
    warnings = Warnings()
    with capturing(warnings):
        async with watch_loop(current(), 0.1):
            for round_ in (1, 2):
                block_until(warnings.seen)
                deadline = time.monotonic() + 10
                while (
                    len(warnings.events("event loop unblocked")) < round_
                    and time.monotonic() < deadline
                ):
                    await current().sleep(0.02)
                warnings.seen.clear()
    assert len(warnings.events("event loop blocked")) == 2


async def test_off_with_zero_or_none(backend_name: BackendName) -> None:
    for threshold in (0, None):
        async with watch_loop(current(), threshold):
            assert not [t for t in threading.enumerate() if t.name.endswith("watchdog")]


async def test_the_sampler_thread_ends_with_the_last_watched_loop(
    backend_name: BackendName,
) -> None:
    def watchdogs() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "server_framework watchdog"]

    async with watch_loop(current(), 5.0):
        async with watch_loop(current(), 5.0):  # a second server on the same loop
            assert len(watchdogs()) == 1
        assert len(watchdogs()) == 1
    assert watchdogs() == []


def test_describe_frames_without_a_handler() -> None:
    found = describe_frames(None)
    assert found == {"handler": None, "peer": None, "stack": None}
    import sys  # noqa: PLC0415

    here = describe_frames(sys._getframe())
    assert here["handler"] is None
    assert "test_describe_frames_without_a_handler" in here["stack"]


# -- through a real server: a handler that calls time.sleep ------------------------------------


async def test_a_server_names_the_handler_that_blocks_its_loop(
    backend_name: BackendName,
) -> None:
    warnings = Warnings()

    class Sleepy(sf.StreamRequestHandler[Any, Any]):
        async def handle(self, client: sf.StreamClient[Any]) -> Any:
            request = yield
            block_until(warnings.seen)  # what time.sleep(0.5) does, for as long as needed
            await client.send_packet(request)

    protocol = sf.StreamProtocol(sf.JSONSerializer())
    server = sf.AsyncTCPServer("127.0.0.1", 0, protocol, Sleepy(), warn_blocked=0.1)
    backend = current()
    with capturing(warnings):
        async with server, backend.create_task_group() as tg:
            tg.start_soon(server.serve_forever)
            try:
                while not server.is_serving():
                    await backend.sleep(0.005)

                def exchange() -> bytes:
                    address = server.get_addresses()[0]
                    with socket.create_connection(address, timeout=10) as sock:
                        sock.sendall(b'"x"\n')
                        return sock.recv(100)

                assert await backend.run_in_thread(exchange) == b'"x"\n'
                deadline = time.monotonic() + 10
                while not warnings.events("event loop unblocked") and time.monotonic() < deadline:
                    await backend.sleep(0.02)
            finally:
                await server.shutdown()
    (blocked,) = warnings.events("event loop blocked")
    assert blocked["handler"].endswith("Sleepy.handle")
    assert blocked["peer"] is not None
    assert "127.0.0.1" in blocked["peer"]


@pytest.mark.parametrize("bad", [-1, True])
def test_warn_blocked_is_checked(bad: Any) -> None:
    protocol = sf.StreamProtocol(sf.JSONSerializer())
    with pytest.raises(ValueError, match="warn_blocked"):
        sf.AsyncTCPServer("127.0.0.1", 0, protocol, sf.EchoHandler(), warn_blocked=bad)
