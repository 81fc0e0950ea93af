"""``server_framework.prometheus``: the text the collector renders, and the HTTP endpoint over
real loopback sockets (``/metrics``, ``/ready``, ``/live``, a silent or trickling peer).

Snapshots are made by hand here, so that every line can be checked exactly; the command line's
``--metrics`` with real servers is tests/functional/test_cli_metrics.py.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server_framework.metrics import LATENCY_BUCKETS, LatencyHistogram, ServerMetrics
from server_framework.prometheus import (
    DEFAULT_MAX_STALL,
    INSTALL_HINT,
    MetricsCollector,
    MetricsEndpoint,
    liveness,
    metrics_registry,
    readiness,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "howto" / "metrics_endpoint.py"
DEPLOYMENT_DOC = ROOT / "docs" / "howto_deployment.rst"
TCP = "tcp://127.0.0.1:9000"

#: Every family the collector renders, in order (``workers`` only when given a count).
FAMILIES = [
    "server_framework_up",
    "server_framework_connections_accepted",
    "server_framework_connections_refused",
    "server_framework_connections_active",
    "server_framework_peers_active",
    "server_framework_requests",
    "server_framework_request_duration_seconds",
    "server_framework_received_bytes",
    "server_framework_sent_bytes",
    "server_framework_handler_errors",
    "server_framework_deadlines_expired",
    "server_framework_accept_errors",
    "server_framework_datagrams_received",
    "server_framework_datagrams_dropped",
    "server_framework_write_high_water",
    "server_framework_threads_busy",
    "server_framework_event_loop_lag_seconds",
]


def snapshot(**fields: Any) -> ServerMetrics:
    values: dict[str, Any] = {"listener": TCP, "transport": "tcp", "serving": True}
    values.update(fields)
    return ServerMetrics(**values)


def render(*snapshots: ServerMetrics, workers: int | None = None) -> list[str]:
    registry = metrics_registry(
        lambda: list(snapshots), workers=None if workers is None else lambda: workers
    )
    return generate_latest(registry).decode().splitlines()


# -- the collector ------------------------------------------------------------------------------


def test_counters_and_gauges_exact_lines() -> None:
    lines = render(
        snapshot(
            connections_accepted=12,
            connections_active=2,
            requests=40,
            bytes_received=1000,
            bytes_sent=2000,
            connections_refused={"max_connections": 3, "tls_handshake": 1},
            handler_errors={"ValueError": 2},
            deadlines_expired={"idle_timeout": 5},
            accept_errors={"EMFILE": 7},
            write_high_water_hits=4,
            threads_busy=1,
            loop_lag=0.25,
        )
    )
    label = f'listener="{TCP}"'
    expected = [
        "# TYPE server_framework_up gauge",
        f"server_framework_up{{{label}}} 1.0",
        "# TYPE server_framework_connections_accepted_total counter",
        f"server_framework_connections_accepted_total{{{label}}} 12.0",
        f'server_framework_connections_refused_total{{{label},reason="max_connections"}} 3.0',
        f'server_framework_connections_refused_total{{{label},reason="tls_handshake"}} 1.0',
        f"server_framework_connections_active{{{label}}} 2.0",
        f"server_framework_requests_total{{{label}}} 40.0",
        f"server_framework_received_bytes_total{{{label}}} 1000.0",
        f"server_framework_sent_bytes_total{{{label}}} 2000.0",
        f'server_framework_handler_errors_total{{{label},type="ValueError"}} 2.0',
        f'server_framework_deadlines_expired_total{{kind="idle_timeout",{label}}} 5.0',
        f'server_framework_accept_errors_total{{errno="EMFILE",{label}}} 7.0',  # sorted
        f"server_framework_write_high_water_total{{{label}}} 4.0",
        f"server_framework_threads_busy{{{label}}} 1.0",
        f"server_framework_event_loop_lag_seconds{{{label}}} 0.25",
    ]
    for line in expected:
        assert line in lines
    assert not any(line.startswith("server_framework_workers") for line in lines)
    helps = [line for line in lines if line.startswith("# HELP ")]
    assert len(helps) == len(FAMILIES)
    assert all(len(line.split(" ", 3)[3]) > 10 for line in helps)  # each one says something


def test_known_label_values_start_at_zero() -> None:
    stream = render(snapshot())
    label = f'listener="{TCP}"'
    for reason in ("max_connections", "max_connections_per_ip"):
        line = f'server_framework_connections_refused_total{{{label},reason="{reason}"}} 0.0'
        assert line in stream
    assert f'server_framework_deadlines_expired_total{{kind="write_timeout",{label}}} 0.0' in (
        stream
    )
    assert not any(line.startswith("server_framework_datagrams_dropped_total{") for line in stream)
    udp = "udp://127.0.0.1:5353"
    datagram = render(snapshot(listener=udp, transport="udp", datagrams_dropped={"max_clients": 2}))
    assert (
        f'server_framework_datagrams_dropped_total{{listener="{udp}",reason="max_clients"}} 2.0'
        in datagram
    )
    assert (
        f'server_framework_datagrams_dropped_total{{listener="{udp}",reason="too_large"}} 0.0'
        in datagram
    )
    assert not any(
        line.startswith("server_framework_connections_refused_total{") for line in datagram
    )


def test_every_family_in_order_and_valid_exposition() -> None:
    text = "\n".join(render(snapshot(), workers=3)) + "\n"
    families = list(text_string_to_metric_families(text))
    assert [family.name for family in families] == [*FAMILIES, "server_framework_workers"]
    workers = families[-1]
    assert workers.type == "gauge"
    assert [(sample.labels, sample.value) for sample in workers.samples] == [({}, 3.0)]
    for family in families[:-1]:
        assert all(sample.labels["listener"] == TCP for sample in family.samples)


def test_histogram_buckets_are_cumulative() -> None:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    # 1 within 50 us, 2 within 100 us, 4 within 2.5 ms, 3 above 10 s
    counts[0], counts[1], counts[5], counts[-1] = 1, 2, 4, 3
    latency = LatencyHistogram(counts=tuple(counts), sum=31.5, count=10)
    lines = render(snapshot(latency=latency, requests=10))
    name = "server_framework_request_duration_seconds"
    buckets = [line for line in lines if line.startswith(f"{name}_bucket")]
    assert buckets[:7] == [
        f'{name}_bucket{{le="5e-05",listener="{TCP}"}} 1.0',
        f'{name}_bucket{{le="0.0001",listener="{TCP}"}} 3.0',
        f'{name}_bucket{{le="0.00025",listener="{TCP}"}} 3.0',
        f'{name}_bucket{{le="0.0005",listener="{TCP}"}} 3.0',
        f'{name}_bucket{{le="0.001",listener="{TCP}"}} 3.0',
        f'{name}_bucket{{le="0.0025",listener="{TCP}"}} 7.0',
        f'{name}_bucket{{le="0.005",listener="{TCP}"}} 7.0',
    ]
    assert buckets[-2:] == [
        f'{name}_bucket{{le="10.0",listener="{TCP}"}} 7.0',
        f'{name}_bucket{{le="+Inf",listener="{TCP}"}} 10.0',
    ]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert f'{name}_count{{listener="{TCP}"}} 10.0' in lines
    assert f'{name}_sum{{listener="{TCP}"}} 31.5' in lines
    assert "# TYPE server_framework_request_duration_seconds histogram" in lines


def test_unmeasured_loop_lag_is_left_out() -> None:
    lines = render(snapshot(loop_lag=math.nan), snapshot(listener="udp://127.0.0.1:9000"))
    lag = "server_framework_event_loop_lag_seconds"
    assert f"# TYPE {lag} gauge" in lines
    assert not any(line.startswith(lag + "{") for line in lines)
    lines = render(snapshot(loop_lag=math.nan), snapshot(listener="udp://x:1", loop_lag=0.5))
    assert [line for line in lines if line.startswith(lag + "{")] == [
        f'{lag}{{listener="udp://x:1"}} 0.5'
    ]


def test_label_values_are_escaped() -> None:
    listener = 'unix:///tmp/a"b\\c\nd'
    lines = render(snapshot(listener=listener, handler_errors={'my."Error"': 1}))
    escaped = 'unix:///tmp/a\\"b\\\\c\\nd'
    assert f'server_framework_requests_total{{listener="{escaped}"}} 0.0' in lines
    assert (
        f'server_framework_handler_errors_total{{listener="{escaped}",type="my.\\"Error\\""}} 1.0'
        in lines
    )
    parsed = text_string_to_metric_families("\n".join(lines) + "\n")
    requests = next(family for family in parsed if family.name == "server_framework_requests")
    assert requests.samples[0].labels == {"listener": listener}


def test_snapshots_of_one_listener_are_summed() -> None:
    one = snapshot(requests=3, connections_active=1, connections_refused={"tls_handshake": 1})
    two = snapshot(requests=4, connections_active=2, connections_refused={"tls_handshake": 2})
    other = snapshot(listener="udp://127.0.0.1:9000", transport="udp", datagrams_received=9)
    lines = render(one, two, other)
    assert f'server_framework_requests_total{{listener="{TCP}"}} 7.0' in lines
    assert f'server_framework_connections_active{{listener="{TCP}"}} 3.0' in lines
    refused = (
        f'server_framework_connections_refused_total{{listener="{TCP}",reason="tls_handshake"}}'
    )
    assert f"{refused} 3.0" in lines
    assert 'server_framework_datagrams_received_total{listener="udp://127.0.0.1:9000"} 9.0' in lines


def test_down_and_draining_listeners() -> None:
    lines = render(snapshot(serving=False), snapshot(listener="udp://x:1", draining=True))
    assert f'server_framework_up{{listener="{TCP}"}} 0.0' in lines
    assert 'server_framework_up{listener="udp://x:1"} 1.0' in lines  # draining: not the up gauge


def test_no_server_renders_the_families_without_samples() -> None:
    lines = render()
    assert "# TYPE server_framework_requests_total counter" in lines
    assert not any(line.startswith("server_framework_") for line in lines)


def test_collector_reads_the_source_at_every_scrape() -> None:
    calls: list[int] = []

    def source() -> list[ServerMetrics]:
        calls.append(1)
        return [snapshot(requests=len(calls))]

    collector = MetricsCollector(source)
    first = next(family for family in collector.collect() if family.name.endswith("requests"))
    second = next(family for family in collector.collect() if family.name.endswith("requests"))
    assert [sample.value for sample in first.samples] == [1]
    assert [sample.value for sample in second.samples] == [2]


# -- the health checks ---------------------------------------------------------------------------


def test_readiness() -> None:
    assert readiness([]) == (False, "no server")
    assert readiness([snapshot()]) == (True, "ready")
    assert readiness([snapshot(), snapshot(listener="udp://x:1", serving=False)]) == (
        False,
        "not serving: udp://x:1",
    )
    assert readiness([snapshot(serving=False, draining=True)]) == (False, f"draining: {TCP}")


def test_liveness() -> None:
    assert liveness([]) == (True, "live")
    assert liveness([snapshot(loop_lag=math.nan)]) == (True, "live")
    assert liveness([snapshot(loop_lag=DEFAULT_MAX_STALL)]) == (True, "live")
    assert liveness([snapshot(loop_lag=31.25)]) == (
        False,
        f"event loop blocked for 31.2 s: {TCP}",
    )
    assert liveness([snapshot(loop_lag=2.0)], max_stall=1.0)[0] is False


# -- the endpoint, over loopback ----------------------------------------------------------------


class Checks:
    """Health answers a test changes as it goes."""

    def __init__(self) -> None:
        self.ready = (False, "starting")
        self.snapshots = [snapshot(requests=5)]


@contextlib.contextmanager
def endpoint(
    checks: Checks, *, timeout: float = 5.0, host: str = "127.0.0.1", **options: Any
) -> Iterator[MetricsEndpoint]:
    with MetricsEndpoint(
        host, 0, lambda: checks.snapshots, ready=lambda: checks.ready, timeout=timeout, **options
    ) as running:
        yield running


def get(address: tuple[str, int], path: str, method: str = "GET") -> tuple[int, str, str]:
    """``(status, content type, body)`` of one request."""
    connection = http.client.HTTPConnection(address[0], address[1], timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def test_metrics_over_http() -> None:
    checks = Checks()
    with endpoint(checks, workers=lambda: 2) as running:
        host, port = running.address
        assert host == "127.0.0.1"
        assert port != 0
        status, content_type, body = get(running.address, "/metrics")
        assert status == 200
        assert content_type == CONTENT_TYPE_LATEST
        assert f'server_framework_requests_total{{listener="{TCP}"}} 5.0' in body.splitlines()
        assert "server_framework_workers 2.0" in body.splitlines()
        checks.snapshots = [snapshot(requests=6)]
        status, _, body = get(running.address, "/metrics?name[]=x")  # a query is ignored
        assert f'server_framework_requests_total{{listener="{TCP}"}} 6.0' in body.splitlines()


def test_ready_live_and_not_found() -> None:
    checks = Checks()
    with endpoint(checks) as running:
        assert get(running.address, "/ready") == (503, "text/plain; charset=utf-8", "starting\n")
        checks.ready = (True, "ready")
        assert get(running.address, "/ready")[::2] == (200, "ready\n")
        checks.ready = (False, "draining")
        assert get(running.address, "/ready")[::2] == (503, "draining\n")
        assert get(running.address, "/live")[::2] == (200, "live\n")
        checks.snapshots = [snapshot(loop_lag=45.0)]
        assert get(running.address, "/live")[::2] == (
            503,
            f"event loop blocked for 45.0 s: {TCP}\n",
        )
        status, _, body = get(running.address, "/")
        assert (status, body) == (404, "not found: try /metrics, /ready or /live\n")
        assert get(running.address, "/metrics", method="POST")[0] == 501


def test_default_checks_use_the_source() -> None:
    snapshots = [snapshot(serving=False)]
    with MetricsEndpoint("127.0.0.1", 0, lambda: snapshots) as running:
        assert get(running.address, "/ready")[::2] == (503, f"not serving: {TCP}\n")
        snapshots[:] = [snapshot()]
        assert get(running.address, "/ready")[::2] == (200, "ready\n")
        assert get(running.address, "/live")[::2] == (200, "live\n")


def test_a_failing_source_is_a_500_and_the_endpoint_goes_on() -> None:
    def broken() -> list[ServerMetrics]:
        raise RuntimeError("no snapshot")

    with MetricsEndpoint("127.0.0.1", 0, broken, ready=lambda: (True, "ready")) as running:
        status, _, body = get(running.address, "/metrics")
        assert status == 500
        assert "RuntimeError: no snapshot" in body
        assert get(running.address, "/ready")[0] == 200


def closed_by_peer(sock: socket.socket, feed: Callable[[], None] | None = None) -> bool:
    """Wait (at most 20 s) until the endpoint closes ``sock``; ``feed()`` is called between
    reads (a trickling peer). True if it was closed, False if the 20 s ran out."""
    deadline = time.monotonic() + 20
    sock.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionResetError:
            return True
        if feed is not None:
            try:
                feed()
            except (BrokenPipeError, ConnectionResetError):
                return True
    return False


def test_a_silent_peer_holds_the_endpoint_for_the_timeout_only() -> None:
    checks = Checks()
    checks.ready = (True, "ready")
    with (
        endpoint(checks, timeout=0.3) as running,
        socket.create_connection(running.address, timeout=10) as silent,
    ):
        # The endpoint serves one request at a time: this one waits for the silent peer's
        # deadline, then is served (http.client's own timeout is 10 s).
        assert get(running.address, "/ready")[::2] == (200, "ready\n")
        assert closed_by_peer(silent)


def test_a_trickling_peer_is_cut_at_the_deadline() -> None:
    checks = Checks()
    with endpoint(checks, timeout=0.3) as running:
        with socket.create_connection(running.address, timeout=10) as trickler:
            trickler.sendall(b"GET /metrics HTTP/1.0\r\n")
            # One header byte every 50 ms: every read makes progress, yet the whole request
            # must arrive within the deadline.
            assert closed_by_peer(trickler, feed=lambda: trickler.send(b"X"))
        assert get(running.address, "/live")[0] == 200


def test_stop_closes_the_socket_and_joins_the_thread() -> None:
    running = MetricsEndpoint("127.0.0.1", 0, list)
    address = running.address
    running.start()
    with pytest.raises(RuntimeError, match="already started"):
        running.start()
    assert get(address, "/live")[0] == 200
    running.stop()
    running.stop()  # idempotent
    assert not [thread for thread in threading.enumerate() if thread.name == "metrics-endpoint"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()


def test_a_busy_port_is_an_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            MetricsEndpoint("127.0.0.1", taken.getsockname()[1], list)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_loopback() -> None:
    try:
        running = MetricsEndpoint("::1", 0, list)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with running:
        assert running.address[0] == "::1"
        assert get(running.address, "/live")[0] == 200


# -- without prometheus-client --------------------------------------------------------------------


def test_import_without_prometheus_client_names_the_install_line(tmp_path: Path) -> None:
    (tmp_path / "prometheus_client.py").write_text('raise ImportError("hidden by the test")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", "import server_framework.prometheus"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "ImportError: server_framework.prometheus needs prometheus-client: "
        "pip install 'server-framework[metrics]'"
    )
    assert INSTALL_HINT == "pip install 'server-framework[metrics]'"


# -- the deployment guide's example --------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_deployment_guide_example(loop: str) -> None:
    """docs/examples/howto/metrics_endpoint.py serves, scrapes itself and prints the scrape;
    the excerpt in the guide shows families and labels that it really prints."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), loop],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout.splitlines()
    assert output[-1] == "# after the stop: 3 requests"
    scrape = "\n".join(output[:-1]) + "\n"
    families = {family.name: family for family in text_string_to_metric_families(scrape)}
    assert list(families) == FAMILIES
    requests = families["server_framework_requests"].samples
    assert [sample.value for sample in requests] == [3.0]
    listener = requests[0].labels["listener"]
    assert listener.startswith("tcp://127.0.0.1:")
    accepted = families["server_framework_connections_accepted"].samples
    assert [sample.value for sample in accepted] == [1.0]
    assert families["server_framework_received_bytes"].samples[0].value > 0
    assert families["server_framework_up"].samples[0].value == 1.0

    real = {
        (sample.name, tuple(sorted(sample.labels)))
        for family in families.values()
        for sample in family.samples
    }
    shown = documented_samples()
    assert shown, "no scrape excerpt found in the deployment guide"
    assert shown <= real


def documented_samples() -> set[tuple[str, tuple[str, ...]]]:
    """``(sample name, label names)`` of the scrape excerpt in the deployment guide."""
    text = DEPLOYMENT_DOC.read_text()
    start = text.index(".. scrape-excerpt-start")
    end = text.index(".. scrape-excerpt-end")
    lines = [line.strip() for line in text[start:end].splitlines()]
    excerpt = (
        "\n".join(line for line in lines if line.startswith(("server_framework_", "# "))) + "\n"
    )
    return {
        (sample.name, tuple(sorted(sample.labels)))
        for family in text_string_to_metric_families(excerpt)
        for sample in family.samples
    }
