"""``serve --metrics HOST:PORT``: Prometheus metrics and health checks of the command line.

The server processes are real (``python -m server_framework serve``), on every loop, served a
small application written into the test's temporary directory (``metricsapp.py``: a request
that waits for a file, one that blocks the loop, and otherwise the serving pid), talked to with
the framework's blocking client, scraped over HTTP and parsed with prometheus-client's parser.
Every wait polls against a deadline; every process is killed by its pid if a test fails.

The parent's side of the ``--workers`` channel (:class:`~server_framework.cli.metrics.MetricsHub`)
is also tested in this process, against worker channels over real socket pairs.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocols import JSONSerializer, StreamProtocol
from server_framework import TCPClient
from server_framework.cli.config import build_parser, load_settings, render_toml
from server_framework.cli.metrics import (
    MISSING_PROMETHEUS_CLIENT,
    MetricsHub,
    MetricsReport,
    MetricsRequest,
    ServeState,
    WorkerChannel,
    combine,
)
from server_framework.cli.settings import ConfigError
from server_framework.metrics import ServerMetrics

from cli_helpers import (
    HERE,
    ROOT,
    TIMEOUT,
    ServerProcess,
    clean_env,
    cli,
    kill_quietly,
    run_cli,
)

pytestmark = pytest.mark.timeout(90)

LOCAL = "127.0.0.1:0"
JSON_LINES = StreamProtocol(JSONSerializer())
LOOPS = ["asyncio", "uvloop", "trio"]

APP = """\
import os
import time

import structlog

from handlers import RequestResponseHandler

logger = structlog.get_logger("metricsapp")


class Handler(RequestResponseHandler):
    \"\"\"{"wait": PATH} answers once PATH exists (a request in progress, logged as "request
    started"); {"block": s} blocks the event loop s seconds; every request gets the pid.\"\"\"

    async def respond(self, request, client):
        if "wait" in request:
            logger.info("request started", path=request["wait"])
            deadline = time.monotonic() + 60
            while not os.path.exists(request["wait"]) and time.monotonic() < deadline:
                await client.backend().sleep(0.02)
        if "block" in request:
            time.sleep(request["block"])
        return {"pid": os.getpid()}
"""


# -- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(folder: Path, *args: str, ready: str = "ready") -> Iterator[ServerProcess]:
    """``serve metricsapp:Handler ARGS --metrics 127.0.0.1:0`` from ``folder``, ready; kills
    whatever of it still runs on the way out (its workers too)."""
    (folder / "metricsapp.py").write_text(APP)
    command = cli(
        "serve", "metricsapp:Handler", "--tcp", LOCAL, "--metrics", LOCAL, "--log-format", "json"
    )
    with ServerProcess([*command, *args], cwd=folder) as server:
        try:
            server.wait_for(ready)
            yield server
        finally:
            server.close()
            for record in server.find("worker started") + server.find("server process started"):
                kill_quietly(record.get("worker_pid") or record["server_pid"])


def endpoint_address(server: ServerProcess) -> tuple[str, int]:
    """The metrics endpoint's address, from its "serving metrics" log line."""
    record = server.wait_for("serving metrics")
    assert record["paths"] == ["/metrics", "/ready", "/live"]
    host, _, port = record["address"].rpartition(":")
    return host, int(port)


def get(address: tuple[str, int], path: str) -> tuple[int, str]:
    """``(status, body)`` of ``GET path``."""
    connection = http.client.HTTPConnection(*address, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def becomes(address: tuple[str, int], path: str, status: int) -> str:
    """Poll ``path`` until it answers ``status``; return the body."""
    deadline = time.monotonic() + TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        last = get(address, path)
        if last[0] == status:
            body: str = last[1]
            return body
        time.sleep(0.02)
    raise AssertionError(f"{path} did not become {status}: last {last!r}")


def scrape(address: tuple[str, int]) -> dict[str, float]:
    """``/metrics`` as ``{"name{label=value,...}": value}`` (labels sorted, ``listener`` out:
    each test serves one listener)."""
    status, text = get(address, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # one listener, named by its address (never a server's unnamed "tcp" before it serves)
            assert sample.labels.get("listener", "tcp://127.0.0.1:").startswith("tcp://127.0.0.1:")
            labels = ",".join(
                f"{key}={value}"
                for key, value in sorted(sample.labels.items())
                if key != "listener"
            )
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def scrape_until(address: tuple[str, int], name: str, at_least: float) -> dict[str, float]:
    """Scrape until ``name`` is at least ``at_least`` (a reply reaches the client a moment
    before its request is counted); return that scrape."""
    deadline = time.monotonic() + TIMEOUT
    samples: dict[str, float] = {}
    while time.monotonic() < deadline:
        samples = scrape(address)
        if samples.get(name, -1) >= at_least:
            return samples
        time.sleep(0.02)
    raise AssertionError(f"{name} stayed below {at_least}: {samples}")


def ask(address: Any, *requests: Any) -> list[Any]:
    """The replies to ``requests``, on one connection of the framework's blocking client."""
    with TCPClient(address, JSON_LINES) as client:
        replies = []
        for request in requests:
            client.send_packet(request)
            replies.append(client.recv_packet(timeout=TIMEOUT))
        return replies


def start_waiting(address: Any, path: Path) -> TCPClient[Any, Any]:
    """A connection whose request is in progress until ``path`` exists."""
    client: TCPClient[Any, Any] = TCPClient(address, JSON_LINES)
    client.send_packet({"wait": str(path)})
    return client


# -- one process, on every loop ----------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_metrics_ready_and_drain(tmp_path: Path, loop: str) -> None:
    with serving(tmp_path, "--backend", loop, "--shutdown-timeout", "30") as server:
        metrics = endpoint_address(server)
        address = server.addresses()[0]
        assert becomes(metrics, "/ready", 200) == "ready\n"
        assert get(metrics, "/live") == (200, "live\n")

        for _ in range(3):
            assert ask(address, {"n": 1}, {"n": 2}) == [{"pid": server.pid}] * 2
        samples = scrape_until(metrics, "server_framework_requests_total{}", 6)
        assert samples["server_framework_requests_total{}"] == 6
        assert samples["server_framework_connections_accepted_total{}"] == 3
        assert samples["server_framework_request_duration_seconds_count{}"] == 6
        assert samples["server_framework_request_duration_seconds_bucket{le=+Inf}"] == 6
        assert samples["server_framework_received_bytes_total{}"] > 0
        assert samples["server_framework_sent_bytes_total{}"] > 0
        assert samples["server_framework_up{}"] == 1
        assert "server_framework_workers{}" not in samples

        # SIGTERM while a request is in progress: /ready says 503 while it drains.
        go = tmp_path / "go"
        with contextlib.closing(start_waiting(address, go)) as waiting:
            server.wait_for("request started")
            server.send_signal(signal.SIGTERM)
            assert becomes(metrics, "/ready", 503) == "draining\n"
            during = scrape(metrics)
            assert during["server_framework_connections_active{}"] == 1
            assert during["server_framework_requests_total{}"] == 6
            go.touch()
            assert waiting.recv_packet(timeout=TIMEOUT) == {"pid": server.pid}
        assert server.wait() == 0
        assert not server.stderr or all(line.startswith("{") for line in server.stderr)


def test_reload_server_process_serves_the_endpoint(tmp_path: Path) -> None:
    with serving(tmp_path, "--reload") as server:
        metrics = endpoint_address(server)
        assert becomes(metrics, "/ready", 200) == "ready\n"
        ask(server.addresses()[0], {"n": 1})
        scrape_until(metrics, "server_framework_requests_total{}", 1)
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


# -- --workers ----------------------------------------------------------------------------------


def requests_to_both_workers(address: Any, workers: set[int]) -> int:
    """Send requests until both workers answered some; return how many were sent.

    Which worker accepts a connection is the kernel's choice, so one worker is kept busy (its
    event loop blocked for a second) while another connection is made.
    """
    seen: set[int] = set()
    sent = 0
    for _ in range(10):
        with TCPClient(address, JSON_LINES) as busy:
            busy.send_packet({"block": 1.0})
            time.sleep(0.3)
            seen |= {reply["pid"] for reply in ask(address, {"n": 1}, {"n": 2})}
            seen.add(busy.recv_packet(timeout=TIMEOUT)["pid"])
        sent += 3
        if seen == workers:
            return sent
    raise AssertionError(f"the requests did not reach both workers: {seen} of {workers}")


def test_workers_are_summed_and_never_go_down(tmp_path: Path) -> None:
    with serving(tmp_path, "--workers", "2", ready="all workers ready") as server:
        metrics = endpoint_address(server)
        address = server.addresses()[0]
        assert becomes(metrics, "/ready", 200) == "ready\n"
        workers = {record["worker_pid"] for record in server.find("worker ready")}
        assert len(workers) == 2

        sent = requests_to_both_workers(address, workers)
        samples = scrape_until(metrics, "server_framework_requests_total{}", sent)
        assert samples["server_framework_requests_total{}"] == sent
        assert samples["server_framework_connections_accepted_total{}"] == sent / 3 * 2
        assert samples["server_framework_workers{}"] == 2
        assert samples["server_framework_up{}"] == 1
        accepted = samples["server_framework_connections_accepted_total{}"]
        received = samples["server_framework_received_bytes_total{}"]

        # A reload replaces both workers; the old ones' counters stay in the sums.
        server.send_signal(signal.SIGHUP)
        server.wait_for("reload requested")
        assert get(metrics, "/ready") == (200, "ready\n")
        server.wait_for("old generation drained")
        assert get(metrics, "/ready") == (200, "ready\n")
        after = scrape(metrics)
        assert after["server_framework_requests_total{}"] == sent
        assert after["server_framework_connections_accepted_total{}"] == accepted
        assert after["server_framework_received_bytes_total{}"] == received
        assert after["server_framework_workers{}"] == 2
        assert after["server_framework_connections_active{}"] == 0

        replies = ask(address, {"n": 3}, {"n": 4})
        assert replies[0]["pid"] not in workers  # a worker of the new generation
        samples = scrape_until(metrics, "server_framework_requests_total{}", sent + 2)
        assert samples["server_framework_requests_total{}"] == sent + 2

        # A worker killed outright: its last answer's counters stay too.
        victim = replies[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        server.wait_for("worker died; restarting it")
        server.wait_for("worker ready", count=5)
        assert scrape(metrics)["server_framework_requests_total{}"] == sent + 2

        # SIGTERM: /ready says 503 as soon as the workers start draining.
        go = tmp_path / "go"
        with contextlib.closing(start_waiting(address, go)) as waiting:
            server.wait_for("request started")
            server.send_signal(signal.SIGTERM)
            assert becomes(metrics, "/ready", 503) == "draining\n"
            go.touch()
            waiting.recv_packet(timeout=TIMEOUT)
        assert server.wait() == 0


# -- start-up -----------------------------------------------------------------------------------


def test_without_prometheus_client_it_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "prometheus_client.py").write_text('raise ImportError("hidden by the test")\n')
    env = clean_env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(HERE), str(ROOT)]))
    for extra in ([], ["--workers", "2"]):
        process = run_cli(
            "serve", "handlers:EchoHandler", "--tcp", LOCAL, "--metrics", LOCAL, *extra, env=env
        )
        assert process.process.returncode == 2, process.output()
        assert process.stderr == [f"server-framework: error: {MISSING_PROMETHEUS_CLIENT}"]
    assert MISSING_PROMETHEUS_CLIENT == (
        "--metrics needs prometheus-client: pip install 'server-framework[metrics]'"
    )


def test_a_busy_metrics_port_is_a_start_up_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--workers", "2"]):
            process = run_cli(
                "serve",
                "handlers:EchoHandler",
                "--tcp",
                LOCAL,
                "--metrics",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
                *extra,
            )
            assert process.process.returncode == 3, process.output()
            errors = [record for record in process.logs() if record["level"] == "error"]
            assert [record["event"] for record in errors] == [
                f"--metrics 127.0.0.1:{port}: cannot listen: Address already in use"
            ]


def load(*argv: str, env: dict[str, str] | None = None) -> Any:
    return load_settings(build_parser().parse_args(["serve", "app:Handler", *argv]), env or {})


def test_the_option_three_ways(tmp_path: Path) -> None:
    assert load().settings.metrics is None
    assert load("--metrics", "127.0.0.1:9100").settings.metrics == ("127.0.0.1", 9100)
    assert load("--metrics", ":9100").settings.metrics == ("", 9100)
    assert load("--metrics", "[::1]:9100").settings.metrics == ("::1", 9100)
    assert load(env={"SERVER_FRAMEWORK_METRICS": "127.0.0.1:9101"}).settings.metrics == (
        "127.0.0.1",
        9101,
    )
    config = tmp_path / "server.toml"
    config.write_text('metrics = "*:9102"\n')
    loaded = load("--config", str(config))
    assert loaded.settings.metrics == ("", 9102)
    assert f'metrics = "*:9102"  # {config}: metrics' in render_toml(loaded).splitlines()
    assert "# metrics: not set, so no metrics endpoint" in render_toml(load()).splitlines()
    with pytest.raises(ConfigError, match=r"--metrics: .*did you mean 127\.0\.0\.1:9100"):
        load("--metrics", "9100")


# -- the parent's side of the --workers channel, in this process --------------------------------


class FakeServer:
    """Something with a ``metrics`` snapshot, as a server has (``ServeState.servers``)."""

    def __init__(self, **fields: Any) -> None:
        self.fields = {"listener": "tcp://x:1", "transport": "tcp", "serving": True, **fields}

    @property
    def metrics(self) -> ServerMetrics:
        return ServerMetrics(**self.fields)


class Worker:
    """A worker's channel (the real :class:`WorkerChannel`) over a socket pair of the hub."""

    def __init__(self, hub: MetricsHub, pid: int, **fields: Any) -> None:
        self.server = FakeServer(**fields)
        self.state = ServeState()
        self.state.servers = (self.server,)
        self.state.started = True
        parent, self.child = hub.channel()
        self.channel = WorkerChannel(os.dup(self.child.fileno()), self.state)
        hub.add(pid, 1, parent)
        self.channel.__enter__()
        self.stopped = False

    def stop(self) -> None:
        """Its servers stopped: the final report goes out, the channel closes."""
        if not self.stopped:
            self.stopped = True
            self.state.stopping = True
            self.channel.__exit__(None, None, None)
            self.child.close()

    def crash(self) -> None:
        """It dies without a final report."""
        self.child.shutdown(socket.SHUT_RDWR)  # nothing more goes out (the final report fails)
        self.stop()


def only(snapshots: list[ServerMetrics]) -> tuple[Any, ...]:
    """``(requests, connections_active, serving, loop_lag)`` of the one listener."""
    (snap,) = snapshots
    return snap.requests, snap.connections_active, snap.serving, snap.loop_lag


def test_hub_sums_workers_and_keeps_the_counters_of_exited_ones() -> None:
    hub = MetricsHub(timeout=TIMEOUT)
    one = Worker(hub, 101, requests=5, connections_active=1, loop_lag=0.5)
    two = Worker(hub, 102, requests=7, connections_active=2, loop_lag=0.25)
    try:
        assert hub.readiness() == (False, "starting")
        hub.set_ready(True, "ready")
        assert hub.readiness() == (True, "ready")
        assert hub.workers() == 2
        assert only(hub.collect()) == (12, 3, True, 0.5)

        # Worker one stops: its final report (6 requests) is its last word; then it exits.
        one.server.fields.update(requests=6, connections_active=0, serving=False)
        one.stop()
        hub.remove(101)
        assert hub.workers() == 1
        assert only(hub.collect()) == (13, 2, True, 0.25)

        # Worker two dies without a word: the counters of its last answer (7) stay.
        two.server.fields.update(requests=9)
        two.crash()
        hub.remove(102)
        assert hub.workers() == 0
        requests, active, serving, lag = only(hub.collect())
        assert (requests, active, serving) == (13, 0, False)
        assert math.isnan(lag)  # gauges of exited workers are not kept
    finally:
        one.stop()
        two.stop()
        hub.close()


def test_hub_uses_the_last_counters_of_a_worker_that_does_not_answer() -> None:
    hub = MetricsHub(timeout=0.2)
    answering = Worker(hub, 201, requests=3)
    parent, silent = hub.channel()  # a worker whose channel thread does not answer in time
    hub.add(202, 2, parent)
    try:
        assert hub.collect()[0].requests == 3  # the silent one has never answered
        answer_first_request(silent, requests=4)  # too late for that scrape...
        assert hub.collect()[0].requests == 7  # ...but its counters count from the next one
        answering.server.fields.update(requests=5)
        (snap,) = hub.collect()
        assert snap.requests == 9  # 5 fresh, 4 from the silent one's last answer
        assert snap.serving  # the answering worker serves
    finally:
        answering.stop()
        silent.close()
        hub.close()


def answer_first_request(sock: socket.socket, **fields: Any) -> None:
    """Read the first request queued on a worker's end of a channel; answer it."""
    sock.settimeout(TIMEOUT)
    size = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
    request = msgspec.msgpack.decode(sock.recv(size, socket.MSG_WAITALL), type=MetricsRequest)
    payload = msgspec.msgpack.encode(
        MetricsReport(request.id, [FakeServer(**fields).metrics], True)
    )
    sock.sendall(len(payload).to_bytes(4, "big") + payload)


def test_combine_keeps_counters_and_only_fresh_gauges() -> None:
    old = ServerMetrics(listener="l", transport="tcp", requests=4, connections_active=3)
    fresh = ServerMetrics(
        listener="l", transport="tcp", serving=True, requests=6, connections_active=1
    )
    draining = ServerMetrics(listener="l", transport="tcp", draining=True, requests=1)
    (combined,) = combine([old, fresh, draining], [fresh, draining])
    assert (combined.requests, combined.connections_active) == (11, 1)
    assert (combined.serving, combined.draining) == (True, True)
    (gone,) = combine([old], [])
    assert (gone.requests, gone.connections_active, gone.serving) == (4, 0, False)
    assert math.isnan(gone.loop_lag)


def test_no_thread_is_left_behind() -> None:
    hub = MetricsHub(timeout=0.2)
    worker = Worker(hub, 301)
    worker.stop()
    hub.remove(301)
    hub.close()
    assert not [thread for thread in threading.enumerate() if thread.name == "metrics-channel"]
