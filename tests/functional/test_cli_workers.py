"""``serve --workers N``: worker processes on shared (or SO_REUSEPORT) listeners, supervised."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any

import pytest

from cli_helpers import ServerProcess, clean_env, kill_quietly, run_cli, serving, udp_exchange
from server_helpers import LineClient, connect, line_exchange

pytestmark = pytest.mark.timeout(60)

PROBE = "cli_helpers:ProbeHandler"
LOCAL = "127.0.0.1:0"


def worker_pids(server: ServerProcess) -> set[int]:
    """The pids of the workers that reported ready and have not exited since."""
    ready = {record["worker_pid"] for record in server.find("worker ready")}
    gone = {record["worker_pid"] for record in server.find("worker died; restarting it")}
    return ready - gone


def serving_pids(address: Any, attempts: int = 5) -> set[int]:
    """The pids of two different workers answering on ``address``.

    Which worker accepts a connection is the kernel's choice, so one worker is kept busy (its
    event loop blocked for a second): meanwhile, only another worker can accept.
    """
    seen: set[int] = set()
    for _ in range(attempts):
        with contextlib.closing(LineClient(connect(address))) as busy:
            busy.send({"block": 1.0})
            time.sleep(0.3)
            other = line_exchange(address, ["who"])[0]["pid"]
            seen |= {busy.recv()["pid"], other}
        if len(seen) >= 2:
            break
    return seen


def test_two_workers_serve_and_a_killed_one_is_replaced() -> None:
    args = ["--tcp", LOCAL, "--udp", LOCAL, "--workers", "2"]
    with serving(PROBE, *args, ready="all workers ready") as server:
        workers = worker_pids(server)
        assert len(workers) == 2
        assert server.pid not in workers
        address = server.addresses()[0]
        assert serving_pids(address) == workers
        reply = json.loads(udp_exchange(server.addresses("udp")[0], b'"dgram"'))
        assert reply["pid"] in workers

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        died = server.wait_for("worker died; restarting it")
        assert (died["worker_pid"], died["how"]) == (victim, "killed by SIGKILL")
        replacement = server.wait_for("worker ready", count=3)
        assert replacement["worker"] == died["worker"]  # it takes its predecessor's slot
        survivors = worker_pids(server)
        assert len(survivors) == 2
        assert victim not in survivors
        assert serving_pids(address) == survivors

        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert len(server.find("worker stopped", how="exit code 0")) == 2


def test_reuse_port_workers_drain_on_sigterm() -> None:
    args = ["--tcp", LOCAL, "--workers", "2", "--reuse-port", "--backend", "trio"]
    with serving(PROBE, *args, ready="all workers ready") as server:
        address = server.addresses()[0]
        assert address[1] != 0  # the parent chose the port every worker binds
        assert serving_pids(address) == worker_pids(server)
        with contextlib.closing(LineClient(connect(address))) as client:
            client.send({"sleep": 0.5})
            server.wait_for("request started")
            server.send_signal(signal.SIGTERM)
            assert client.recv()["request"] == {"sleep": 0.5}
        assert server.wait() == 0
        assert server.find("stopping workers", signal="SIGTERM")


def test_reuse_port_workers_are_replaced_on_sighup() -> None:
    """Each new worker binds its own SO_REUSEPORT socket beside the old ones', then these go."""
    args = ["--tcp", LOCAL, "--workers", "2", "--reuse-port"]
    with serving(PROBE, *args, ready="all workers ready") as server:
        address = server.addresses()[0]
        old = worker_pids(server)
        server.send_signal(signal.SIGHUP)
        server.wait_for("new generation ready", generation=2, timeout=60)
        server.wait_for("old generation drained", generation=1, timeout=60)
        new = {record["worker_pid"] for record in server.find("worker ready", generation=2)}
        assert len(new) == 2
        assert not new & old
        assert serving_pids(address) == new
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_sigint_stops_the_workers() -> None:
    with serving(PROBE, "--tcp", LOCAL, "--workers", "2", ready="all workers ready") as server:
        pids = worker_pids(server)
        server.send_signal(signal.SIGINT)
        assert server.wait() == 0
    for pid in pids:  # reaped by the parent: gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_worker_failing_at_start_up_stops_everything() -> None:
    started = time.monotonic()
    process = run_cli(
        "serve", "cli_helpers:FailingHandler", "--tcp", LOCAL, "--workers", "3",
        "--log-format", "json",
    )  # fmt: skip
    assert process.process.returncode == 3, process.output()
    assert time.monotonic() - started < 15
    assert len(process.find("worker started")) == 1  # the others were never started
    assert process.find("start-up failed: RuntimeError: no database", worker=1)
    assert process.find("worker failed at start-up; stopping", how="exit code 3")


def test_a_replacement_failing_at_start_up_is_retried_while_the_others_serve(
    tmp_path: Any,
) -> None:
    flaky = tmp_path / "failures"
    flaky.write_text("0")
    env = clean_env(FLAKY_START_FILE=str(flaky))
    args = ["--tcp", LOCAL, "--workers", "2"]
    with serving(
        "cli_helpers:FlakyStartHandler", *args, env=env, ready="all workers ready"
    ) as server:
        flaky.write_text("2")  # the database is down for the next two starts
        victim = min(worker_pids(server))
        os.kill(victim, signal.SIGKILL)
        server.wait_for("worker ready", count=3)  # the third start of its replacement
        failed = server.find("worker failed at start-up; the others serve: restarting it")
        assert len(failed) == 2
        assert len(worker_pids(server) - {record["worker_pid"] for record in failed}) == 2
        assert line_exchange(server.addresses()[0], ["still"])[0]["request"] == "still"
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert not server.find("worker failed at start-up; stopping")


def test_a_reload_whose_workers_hang_at_start_up_is_abandoned(tmp_path: Any) -> None:
    hang = tmp_path / "hang"
    env = clean_env(HANG_START_FILE=str(hang))
    args = ["--tcp", LOCAL, "--workers", "2", "--start-timeout", "1"]
    with serving(
        "cli_helpers:HangingStartHandler", *args, env=env, ready="all workers ready"
    ) as server:
        old = worker_pids(server)
        hang.write_text("hang")
        server.send_signal(signal.SIGHUP)
        failed = server.wait_for("reload failed; the old workers keep serving")
        assert failed["how"] == "not ready within 1 s"
        assert line_exchange(server.addresses()[0], ["still"])[0]["pid"] in old
        hang.write_text("")
        server.send_signal(signal.SIGHUP)
        server.wait_for("new generation ready")
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0, server.output()


def test_a_worker_hanging_at_the_first_start_up_stops_the_server(tmp_path: Any) -> None:
    hang = tmp_path / "hang"
    hang.write_text("hang")
    started = time.monotonic()
    process = run_cli(
        "serve", "cli_helpers:HangingStartHandler", "--tcp", LOCAL, "--workers", "2",
        "--start-timeout", "1", "--log-format", "json",
        env=clean_env(HANG_START_FILE=str(hang)),
    )  # fmt: skip
    assert process.process.returncode == 3, process.output()
    assert time.monotonic() - started < 15
    assert process.find("worker failed at start-up; stopping", how="not ready within 1 s")


def test_worker_usage_error_is_exit_2() -> None:
    process = run_cli(
        "serve", "handlers:EchoHandler", "--udp", LOCAL, "--workers", "2", "--log-format", "json"
    )
    assert process.process.returncode == 2, process.output()


def running(pid: int) -> bool:
    """True if ``pid`` runs (an exited process not yet reaped by init is a zombie: not running)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_workers_stop_when_the_parent_is_killed() -> None:
    with serving(PROBE, "--tcp", LOCAL, "--workers", "2", ready="all workers ready") as server:
        pids = worker_pids(server)
        try:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
            deadline = time.monotonic() + 20
            while any(running(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(running(pid) for pid in pids), "orphaned workers kept running"
            assert len(server.find("the parent process is gone; stopping")) == 2
        finally:
            for pid in pids:
                kill_quietly(pid)
