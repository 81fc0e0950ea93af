"""The benchmark suite (``python -m benchmarks``) runs end to end and its output is sound.

One small ``--quick`` run (a few servers of each kind, every kind of workload, 0.3 s per
measurement) is shared by the tests. Nothing here asserts a speed: only that the run
completes, every reply the suite checked was right, the files are written in the documented
shape, the C generators are used where installed, and no process outlives the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.servers import PURE_ENV, server_table
from benchmarks.servers import SERVERS as SERVER_SPECS

REPO = Path(__file__).resolve().parents[2]

HAVE_EASYNETWORK = importlib.util.find_spec("easynetwork") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAVE_REDIS_BENCHMARK = shutil.which("redis-benchmark") is not None
HAVE_DNSPERF = shutil.which("dnsperf") is not None

SERVERS = ["uvloop-protocol", "uvloop-datagram", "trio-sockets", "sf-echo-uvloop", "sf-rr-trio"]
if HAVE_EASYNETWORK:
    SERVERS.append("easynetwork-uvloop")
WORKLOADS = [
    "redis-ping",
    "redis-ping-p16",
    "line-64",
    "prefix-1k-p16",
    "udp-dnsperf",
    "udp-64",
    "idle",
    "churn",
]

pytestmark = pytest.mark.slow


def run_benchmarks(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    proc = run_benchmarks(
        "--quick",
        "--servers", ",".join(SERVERS),
        "--workloads", ",".join(WORKLOADS),
        # Enough that their memory shows above the allocator's reuse of free pools: with 100
        # connections at under 2 KiB each, the RSS growth was once 0.
        "--idle-connections", "400",
        "--output-dir", str(out),
    )  # fmt: skip
    jsons = sorted(out.glob("*.json"))
    assert jsons, f"no JSON written; exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return {"proc": proc, "dir": out, "json": jsons[0], "results": json.loads(jsons[0].read_text())}


@pytest.mark.timeout(200)
def test_quick_run_passes_every_check(quick_run: dict[str, Any]) -> None:
    proc, results = quick_run["proc"], quick_run["results"]
    failures = [r for r in results["runs"] if not r["ok"]]
    assert not failures, failures
    assert results["checks_passed"] is True
    assert proc.returncode == 0, proc.stderr
    for run in results["runs"]:
        if run["generator"] == "suite":
            assert run["checked"] > 0, run
            assert run["check_errors"] == 0, run


def test_results_have_the_documented_shape(quick_run: dict[str, Any]) -> None:
    results = quick_run["results"]
    for key in ("started", "machine", "settings", "notes", "baselines", "servers", "workloads",
                "runs", "summary", "targets", "checks_passed", "server_pids"):  # fmt: skip
        assert key in results, key
    assert results["settings"]["quick"] is True
    for key in ("cpus", "cpu_affinity", "cpu_model", "memory_kib", "kernel", "python", "packages",
                "load_before"):  # fmt: skip
        assert key in results["machine"], key  # read from the machine (test_benchmarks_report)
    assert results["baselines"] == {"tcp": "uvloop-protocol", "udp": "uvloop-datagram"}
    assert set(results["summary"]) == set(WORKLOADS)
    for workload, per_server in results["summary"].items():
        info = results["workloads"][workload]
        expected = {s for s in SERVERS if info["mode"] in results["servers"][s]["modes"]}
        assert set(per_server) == expected, workload
        baseline = results["baselines"][info["transport"]]
        assert per_server[baseline]["ratio"] == pytest.approx(1.0)
        for figures in per_server.values():
            assert figures["value"] is not None
            assert figures["value"] > 0
            if info["kind"] != "idle":
                assert figures["cpu_us"] is not None
                assert figures["client_cpu"] is not None
                assert isinstance(figures["client_bound"], bool)
    for run in results["runs"]:
        if results["workloads"][run["workload"]]["kind"] in ("tcp", "churn"):
            assert run["p50_us"] is not None
            assert run["p99_us"] >= run["p50_us"]
    assert results["targets"], "the targets are evaluated"
    for target in results["targets"]:
        assert target["met"] in (True, False, None)


def test_outputs_are_written(quick_run: dict[str, Any]) -> None:
    stem = quick_run["json"].with_suffix("")
    assert stem.name.endswith("-quick")
    markdown = stem.with_suffix(".md").read_text()
    assert "| server |" in markdown
    assert "Targets" in markdown
    assert "Machine (read from it at run time): " in markdown
    assert "Targets" in quick_run["proc"].stdout
    if HAVE_MATPLOTLIB:
        assert stem.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_no_process_outlives_the_run(quick_run: dict[str, Any]) -> None:
    pids = quick_run["results"]["server_pids"]
    assert pids
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert b"benchmarks.servers" not in cmdline, f"server {pid} still runs"


@pytest.mark.skipif(not HAVE_REDIS_BENCHMARK, reason="redis-benchmark is not installed")
def test_redis_benchmark_drives_the_ping_workloads(quick_run: dict[str, Any]) -> None:
    for run in quick_run["results"]["runs"]:
        if run["workload"].startswith("redis-ping"):
            assert run["generator"] == "redis-benchmark"


@pytest.mark.skipif(not HAVE_DNSPERF, reason="dnsperf is not installed")
def test_dnsperf_drives_the_dns_workload(quick_run: dict[str, Any]) -> None:
    for run in quick_run["results"]["runs"]:
        if run["workload"] == "udp-dnsperf":
            assert run["generator"] == "dnsperf"


def test_a_missing_c_generator_falls_back_with_a_note(quick_run: dict[str, Any]) -> None:
    results = quick_run["results"]
    for run in results["runs"]:
        wanted = results["workloads"][run["workload"]]["generator"]
        installed = {"redis-benchmark": HAVE_REDIS_BENCHMARK, "dnsperf": HAVE_DNSPERF}
        if wanted != "suite" and not installed[wanted]:
            assert run["generator"] == "suite"
            assert "not installed" in run["note"]
    if not (HAVE_REDIS_BENCHMARK and HAVE_DNSPERF):
        assert any("not installed" in note for note in results["notes"])


@pytest.mark.skipif(not HAVE_EASYNETWORK, reason="easynetwork is not installed (bench extra)")
def test_easynetwork_is_measured(quick_run: dict[str, Any]) -> None:
    summary = quick_run["results"]["summary"]
    assert all("easynetwork-uvloop" in summary[w] for w in WORKLOADS)


def test_compare_two_saved_runs(quick_run: dict[str, Any]) -> None:
    path = str(quick_run["json"])
    proc = run_benchmarks("--compare", path, path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "+0%" in proc.stdout
    assert "sf-echo-uvloop" in proc.stdout


def test_help_lists_the_options() -> None:
    proc = run_benchmarks("--help", timeout=60)
    assert proc.returncode == 0
    for option in ("--quick", "--rounds", "--duration", "--servers", "--workloads", "--compare",
                   "--client-processes", "--engine", "--instructions", "--requests"):  # fmt: skip
        assert option in proc.stdout


def test_list_shows_the_new_servers_and_workloads() -> None:
    proc = run_benchmarks("--list", timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = {tuple(line.split()[:2]) for line in proc.stdout.splitlines()}
    for loop in ("uvloop", "asyncio", "trio"):
        assert ("server", f"sf-user-{loop}") in names
    assert ("workload", "json-1k") in names
    assert ("workload", "bytes-1k") in names
    for workload in ("ping", "ping-p16", "ping-churn", "udp-64"):
        assert ("instructions", workload) in names
    assert "[pure]" not in proc.stdout
    both = run_benchmarks("--list", "--engine", "both", timeout=60)
    assert both.returncode == 0, both.stderr
    assert "sf-user-trio[pure]" in both.stdout
    assert "uvloop-protocol[pure]" not in both.stdout


def test_engine_both_names_the_pure_twins() -> None:
    both = server_table("both")
    ours = [name for name, spec in SERVER_SPECS.items() if spec.family == "server_framework"]
    assert len(ours) == 9
    for name in ours:
        assert both[name].env() == {PURE_ENV: None}  # compiled: the variable is removed
        twin = both[f"{name}[pure]"]
        assert twin.env() == {PURE_ENV: "1"}
        assert twin.base == name
        assert twin.command() == both[name].command()
        assert list(both).index(f"{name}[pure]") == list(both).index(name) + 1
    assert server_table("pure")["sf-rr-uvloop"].env() == {PURE_ENV: "1"}
    assert "sf-rr-uvloop[pure]" not in server_table("pure")
    for name in ("uvloop-protocol", "uvloop-datagram", "trio-sockets"):
        assert both[name].env() == {}  # baselines are left alone
        assert f"{name}[pure]" not in both


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both engines, the user's handler and typed JSON: one short round."""
    out = tmp_path_factory.mktemp("bench-engines")
    proc = run_benchmarks(
        "--servers", "sf-rr-uvloop,sf-user-uvloop", "--workloads", "json-1k",
        "--engine", "both", "--rounds", "1", "--duration", "0.2", "--warmup", "0.05",
        "--output-dir", str(out), timeout=100,
    )  # fmt: skip
    jsons = sorted(out.glob("*.json"))
    assert jsons, f"no JSON written; exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return {"proc": proc, "results": json.loads(jsons[0].read_text())}


@pytest.mark.timeout(110)
def test_engine_both_runs_each_server_twice(engine_run: dict[str, Any]) -> None:
    proc, results = engine_run["proc"], engine_run["results"]
    assert proc.returncode == 0, proc.stderr
    assert results["checks_passed"] is True
    assert results["settings"]["engine"] == "both"
    servers = results["servers"]
    assert set(servers) == {
        "uvloop-protocol", "sf-rr-uvloop", "sf-rr-uvloop[pure]", "sf-user-uvloop",
        "sf-user-uvloop[pure]",
    }  # fmt: skip
    for name in ("sf-rr-uvloop", "sf-user-uvloop"):
        assert servers[name]["engine_requested"] == "compiled"
        assert servers[name]["engine"] in ("compiled", "pure Python")
        assert servers[f"{name}[pure]"]["engine_requested"] == "pure"
        assert servers[f"{name}[pure]"]["engine"] == "pure Python"
        assert servers[f"{name}[pure]"]["base"] == name
    assert servers["uvloop-protocol"]["engine"] is None
    assert "sf-rr-uvloop[pure]" in proc.stdout
    assert any("engine: both" in note for note in results["notes"])


def test_typed_json_is_compared_with_raw_bytes_on_the_same_server(
    engine_run: dict[str, Any],
) -> None:
    results = engine_run["results"]
    assert results["workloads"]["json-1k"]["reference"] == "bytes-1k"
    assert any("added bytes-1k" in note for note in results["notes"])
    summary = results["summary"]
    assert summary["bytes-1k"]["uvloop-protocol"]["ratio"] == pytest.approx(1.0)
    assert "uvloop-protocol" not in summary["json-1k"]  # raw servers do not speak typed JSON
    for server, figures in summary["json-1k"].items():
        own_bytes = summary["bytes-1k"][server]
        assert figures["ratio"] == pytest.approx(figures["value"] / own_bytes["value"])
        assert figures["cpu_ratio"] == pytest.approx(figures["cpu_us"] / own_bytes["cpu_us"])
    for run in results["runs"]:
        assert run["generator"] == "suite"
        assert run["checked"] > 0
    json_targets = [t for t in results["targets"] if t["workload"] == "json-1k"]
    assert {t["server"] for t in json_targets} == {"sf-rr-uvloop", "sf-user-uvloop"}
    assert all(t["measured"] is not None for t in json_targets)


class _WrongLines(socketserver.StreamRequestHandler):
    """Answers every line with the line in upper case: the right length, the wrong bytes."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


@pytest.fixture
def wrong_server() -> Iterator[int]:
    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", 0), _WrongLines) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(5)


def test_the_generator_fails_a_server_that_answers_wrongly(wrong_server: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.generators.loadgen", "--port", str(wrong_server),
         "--mode", "tcp", "--framing", "line", "--size", "64", "--connections", "2",
         "--duration", "0.2"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        proc.stdin.write("start 0\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
        assert result["event"] == "result"
        assert result["errors"] == 2
        assert "ABCDEF" in result["error_samples"][0]
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_servers_bind_loopback_only() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.servers.uvloop_protocol", "--host", "0.0.0.0",
         "--port", str(port)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "loopback" in proc.stderr
