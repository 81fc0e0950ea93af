"""The benchmark report from a saved or synthetic results dict: no server, no load.

The chart's colours (every cell by its ratio to its column's baseline in the same round), the
chart file, the machine's facts read from this machine and the line that states them, and the
re-rendering of a saved run (``python -m benchmarks.report``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from benchmarks import machine, report
from benchmarks.runner import machine as run_machine

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

_UNITS = {"tcp": "req/s", "churn": "conn/s", "udp": "req/s", "idle": "KiB/conn"}


def _workload(kind: str, transport: str, reference: str | None = None) -> dict[str, Any]:
    return {
        "kind": kind, "transport": transport, "unit": _UNITS[kind], "description": f"a {kind} one",
        "reference": reference, "mode": "udp" if transport == "udp" else "line",
    }  # fmt: skip


#: (value, cpu_us) of the baseline per workload; ours run at FACTOR of the baseline everywhere.
BASE = {
    "redis-ping": (100_000.0, 10.0),
    "prefix-1k-p16": (1_000_000.0, 0.5),
    "churn": (10_000.0, 400.0),
    "udp-dnsperf": (120_000.0, 6.0),
    "idle": (1.0, None),
}
#: sf-rr-uvloop's figures over the baseline's: throughput, CPU per request (memory for idle).
THROUGHPUT, CPU = 0.5, 2.0


def synthetic_results(rounds: int = 3) -> dict[str, Any]:
    """Two baselines, a raw trio server and one of ours, every workload kind; not run."""
    workloads = {
        "redis-ping": _workload("tcp", "tcp"),
        "prefix-1k-p16": _workload("tcp", "tcp"),
        "churn": _workload("churn", "tcp"),
        "udp-dnsperf": _workload("udp", "udp"),
        "idle": _workload("idle", "tcp"),
    }
    servers = {
        "uvloop-protocol": {"modes": ["line", "prefix"]},
        "uvloop-datagram": {"modes": ["udp"]},
        "trio-sockets": {"modes": ["line", "prefix"]},
        "sf-rr-uvloop": {"modes": ["line", "prefix", "udp"]},
    }
    runs = []
    for round_no in range(1, rounds + 1):
        drift = 1 + 0.1 * round_no  # the machine drifts; same-round ratios do not
        for name, info in workloads.items():
            value, cpu_us = BASE[name]
            baseline = "uvloop-datagram" if info["transport"] == "udp" else "uvloop-protocol"
            figures = {
                baseline: (value, cpu_us),
                "sf-rr-uvloop": (value * THROUGHPUT, cpu_us and cpu_us * CPU),
            }
            if info["kind"] == "idle":  # memory: ours CPU times the baseline's
                figures["sf-rr-uvloop"] = (value * CPU, None)
            if info["transport"] == "tcp" and info["kind"] != "idle":
                figures["trio-sockets"] = (value, cpu_us)  # the baseline's equal
            for server, (v, cpu) in figures.items():
                runs.append({
                    "round": round_no, "workload": name, "server": server, "ok": True,
                    "value": v / drift if info["kind"] != "idle" else v,
                    "cpu_us": cpu and cpu * drift, "p50_us": 100.0, "p99_us": 200.0,
                    "client_cpu": 0.95 if server == baseline else 0.5,
                    "client_bound": server == baseline, "generator": "suite",
                })  # fmt: skip
    results = {
        "started": "2026-12-06T12:00:00+0000",
        "machine": {**machine.facts(), "load_before": 0.2, "load_after": 0.3},
        "settings": {
            "rounds": rounds,
            "duration": 1.0,
            "warmup": 0.3,
            "connections": 50,
            "engine": "compiled",
        },
        "notes": [],
        "baselines": {"tcp": "uvloop-protocol", "udp": "uvloop-datagram"},
        "servers": servers,
        "workloads": workloads,
        "runs": runs,
    }
    return report.finish(results)


@pytest.fixture
def results() -> dict[str, Any]:
    return synthetic_results()


def _cell(grid: report.Grid, server: str, workload: str, what: str = "scores") -> Any:
    return getattr(grid, what)[grid.rows.index(server)][grid.columns.index(workload)]


# -- colours ---------------------------------------------------------------------------------


def test_score_is_centred_on_the_baseline_and_good_is_positive_in_both_senses() -> None:
    assert report.score(1.0, True) == 0.0
    assert report.score(1.0, False) == 0.0
    assert report.score(2.0, True) == pytest.approx(0.5)  # log(2) / log(4)
    assert report.score(2.0, False) == pytest.approx(-0.5)  # twice the CPU: worse
    assert report.score(0.5, False) == pytest.approx(0.5)  # half the CPU: better
    assert report.score(0.5, True) == report.score(2.0, False)  # worse looks alike
    assert report.score(100.0, True) == 1.0  # clipped to the scale
    assert report.score(0.001, True) == -1.0
    for missing in (None, 0.0, -1.0, float("nan")):
        assert report.score(missing, True) is None


def test_cost_colours_are_per_column_ratios_not_absolute_microseconds(
    results: dict[str, Any],
) -> None:
    throughput, cost = report.chart_grids(results)
    # sf-rr-uvloop's CPU per request is 2x the baseline's in every column, whether a request
    # costs 0.5 us (pipelined) or 400 us (churn): one colour.
    columns = ["redis-ping", "prefix-1k-p16", "churn", "udp-dnsperf"]
    micros = {w: _cell(cost, "sf-rr-uvloop", w, "figures") for w in columns}
    assert micros["prefix-1k-p16"] != micros["churn"]  # unlike absolute figures...
    scores = [_cell(cost, "sf-rr-uvloop", w) for w in columns]
    assert scores == [pytest.approx(report.score(CPU, False))] * len(columns)  # ...like colours
    assert _cell(cost, "sf-rr-uvloop", "idle") == pytest.approx(report.score(CPU, False))
    # trio-sockets costs what the baseline costs: white (0), although 400 us on churn.
    for workload in ("redis-ping", "prefix-1k-p16", "churn"):
        assert _cell(cost, "trio-sockets", workload) == pytest.approx(0.0)
        assert _cell(cost, "uvloop-protocol", workload) == pytest.approx(0.0)
    # Throughput: half the baseline's everywhere, one colour, and the same one as twice the
    # CPU (worse is worse, in both panels).
    scores = [_cell(throughput, "sf-rr-uvloop", w) for w in columns]
    assert scores == [pytest.approx(report.score(CPU, False))] * len(columns)
    assert throughput.higher_is_better
    assert not cost.higher_is_better


def test_a_column_is_coloured_by_its_own_baseline(results: dict[str, Any]) -> None:
    scaled = copy.deepcopy(results)
    for run in scaled["runs"]:  # one workload 1000x dearer for every server alike
        if run["workload"] == "churn":
            run["cpu_us"] *= 1000
    del scaled["summary"]
    report.finish(scaled)
    before, after = report.chart_grids(results)[1], report.chart_grids(scaled)[1]
    assert after.scores == before.scores
    assert after.figures != before.figures


def test_missing_cells_ours_and_marks(results: dict[str, Any]) -> None:
    throughput, cost = report.chart_grids(results)
    assert throughput.rows == ["uvloop-protocol", "uvloop-datagram", "trio-sockets", "sf-rr-uvloop"]
    assert "idle" not in throughput.columns
    assert cost.columns[-1] == "idle"
    assert _cell(throughput, "uvloop-datagram", "redis-ping") is None  # did not run: grey
    assert _cell(throughput, "uvloop-datagram", "redis-ping", "ratios") is None
    assert _cell(throughput, "uvloop-datagram", "redis-ping", "figures") == ""
    assert _cell(cost, "trio-sockets", "udp-dnsperf") is None
    assert _cell(throughput, "uvloop-protocol", "redis-ping", "marks") == "*"  # client-bound
    assert _cell(throughput, "sf-rr-uvloop", "redis-ping", "marks") == ""
    assert (
        _cell(throughput, "sf-rr-uvloop", "redis-ping", "figures") == "42k req/s"
    )  # median: 50k / 1.2
    assert [s for s in throughput.rows if report.is_ours(s)] == ["sf-rr-uvloop"]
    assert report.is_ours("sf-user-trio[pure]")
    assert not report.is_ours("easynetwork-uvloop")


# -- the chart file --------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib is not installed (bench extra)")
def test_the_chart_is_written(results: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    assert report.chart(results, path) is True
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 800 <= width <= 3000
    assert 600 <= height <= 3000


def test_without_matplotlib_no_chart(
    results: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    path = tmp_path / "chart.png"
    assert report.chart(results, path) is False
    assert not path.exists()


def test_the_legend_is_one_line(results: dict[str, Any]) -> None:
    legend = report.chart_legend(results)
    assert "\n" not in legend
    for words in ("baseline", "same round", "blue better", "red worse", "client-bound",
                  "not run", "sf-*"):  # fmt: skip
        assert words in legend


# -- the machine -----------------------------------------------------------------------------


def test_machine_facts_are_read_from_this_machine() -> None:
    facts = run_machine()
    for key in ("cpus", "cpu_affinity", "cpu_model", "memory_kib", "system", "kernel",
                "platform", "python", "packages", "redis-benchmark", "dnsperf"):  # fmt: skip
        assert key in facts, key
    assert facts["cpus"] == os.cpu_count()
    assert facts["kernel"] == platform.release()
    assert facts["python"] == platform.python_version()
    assert facts["platform"] == platform.platform()
    if hasattr(os, "sched_getaffinity"):
        assert facts["cpu_affinity"] == len(os.sched_getaffinity(0))
        assert 1 <= facts["cpu_affinity"] <= facts["cpus"]
    if Path("/proc/meminfo").exists():
        assert facts["memory_kib"] > 64 * 1024  # more than 64 MiB
    if Path("/proc/cpuinfo").exists() and platform.machine() in ("x86_64", "AMD64"):
        assert facts["cpu_model"]
    packages = facts["packages"]
    assert {"uvloop", "trio", "msgspec", "easynetwork", "server_framework"} <= set(packages)
    for name in ("uvloop", "trio", "msgspec"):
        if importlib.util.find_spec(name) is not None:
            assert packages[name] == version(name)


def test_cpuinfo_and_meminfo_are_parsed() -> None:
    assert machine.cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7R13\n") == "AMD EPYC 7R13"
    assert machine.cpu_model("processor : 0\nModel : Raspberry Pi 4 Model B\n") == (
        "Raspberry Pi 4 Model B"
    )
    assert machine.memory_total_kib("MemTotal:       24683784 kB\nMemFree: 1 kB\n") == 24683784
    assert machine.memory_total_kib("") is None


def test_the_machine_line_says_what_was_recorded() -> None:
    line = machine.describe({
        "cpus": 4, "cpu_affinity": 2, "cpu_model": "AMD EPYC", "memory_kib": 8 * 1024**2,
        "system": "Linux", "kernel": "6.1.0", "python": "3.11.7",
        "python_implementation": "CPython",
        "packages": {"server_framework": "0.1", "uvloop": "0.23.0", "easynetwork": None},
        "redis-benchmark": "redis-benchmark 7.0.15", "dnsperf": "2.10.0",
        "valgrind": "valgrind-3.19.0", "load_before": 0.25,
    })  # fmt: skip
    assert line == (
        "4 CPUs (AMD EPYC, 2 usable), 8.0 GiB RAM, Linux 6.1.0, Python 3.11.7, uvloop 0.23.0, "
        "redis-benchmark 7.0.15, dnsperf 2.10.0, valgrind-3.19.0; load average 0.2 at the start"
    )
    # A results file written before the newer keys: what it has, nothing guessed.
    old = machine.describe({"cpus": 2, "platform": "Linux-6.1-x86_64", "python": "3.11.7",
                            "packages": {"trio": "0.35.0"}})  # fmt: skip
    assert old == "2 CPUs, Linux-6.1-x86_64, Python 3.11.7, trio 0.35.0"


def test_the_markdown_report_has_the_machine_line(results: dict[str, Any]) -> None:
    markdown = report.render(results, markdown=True)
    expected = f"Machine (read from it at run time): {os.cpu_count()} CPUs"
    assert expected in markdown
    assert f"Python {platform.python_version()}" in markdown
    assert report.machine_line(results) in report.render(results)


# -- re-rendering a saved run ----------------------------------------------------------------


def test_a_saved_run_is_rendered_again(
    results: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "20261206-120000.json"
    del results["summary"]  # as an older version might have saved it: computed on load
    saved.write_text(json.dumps(results))
    before = saved.read_bytes()
    assert report.main([str(saved)]) == 0
    assert saved.read_bytes() == before  # the JSON is left as it is
    markdown = saved.with_suffix(".md").read_text()
    assert "Machine (read from it at run time)" in markdown
    assert "| sf-rr-uvloop |" in markdown
    out = capsys.readouterr().out
    assert "Machine (read from it at run time)" in out
    assert saved.with_suffix(".png").exists() == HAVE_MATPLOTLIB
    other = tmp_path / "elsewhere"
    assert report.main([str(saved), "--output-dir", str(other)]) == 0
    assert (other / "20261206-120000.md").exists()
