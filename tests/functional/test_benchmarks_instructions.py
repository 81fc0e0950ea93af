"""``python -m benchmarks --instructions``: its arithmetic, its parsing, its client, its run.

The callgrind parsing and the arithmetic are pure functions, tested here without valgrind; the
suite's blocking client is run against real servers for a handful of requests (no valgrind: it
must count replies right); one end-to-end run under valgrind (one server, tiny N) runs only
where valgrind is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
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

from benchmarks import instructions
from benchmarks.generators import instructions as client
from benchmarks.messages import json_message, request_and_reply
from benchmarks.runner import Children, Server, start_server, wait_ready
from benchmarks.servers import server_table

REPO = Path(__file__).resolve().parents[2]
HAVE_VALGRIND = shutil.which("valgrind") is not None

# -- parsing callgrind's output --------------------------------------------------------------

CALLGRIND = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 2492
cmd:  /usr/bin/python3 -m benchmarks.servers.uvloop_protocol --port 0
part: 1

desc: Timerange: Basic block 0 - 28959
desc: Trigger: Program termination

positions: line
events: Ir
summary: 126637


ob=(1) /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
fl=(57) ./io/../sysdeps/unix/sysv/linux/read_nocancel.c
fn=(192) __read_nocancel
26 8
+1 2

totals: 126637
"""


def test_the_total_is_read_from_the_totals_line() -> None:
    assert instructions.parse_callgrind_total(CALLGRIND) == 126637


def test_totals_win_over_summary() -> None:
    text = CALLGRIND.replace("summary: 126637", "summary: 999")
    assert instructions.parse_callgrind_total(text) == 126637


def test_the_summary_line_is_enough() -> None:
    text = CALLGRIND.replace("totals: 126637\n", "")
    assert instructions.parse_callgrind_total(text) == 126637


def test_ir_is_found_among_several_events() -> None:
    text = (
        "events: Dr Ir Dw\n"
        "summary: 27893 126639 11770\n"
        "fn=(1) main\n"
        "1 2 3 4\n"
        "totals: 27893 126637 11770\n"
    )
    assert instructions.parse_callgrind_total(text) == 126637
    assert instructions.parse_callgrind_total(text, "Dw") == 11770


def test_the_totals_of_several_parts_add_up() -> None:
    text = "events: Ir\npart: 1\ntotals: 100\npart: 2\ntotals: 250\n"
    assert instructions.parse_callgrind_total(text) == 350


@pytest.mark.parametrize(
    "text",
    [
        "",  # an empty file (callgrind was killed before writing)
        "events: Ir\nfn=(1) main\n1 2\n",  # no total
        "events: Dr\ntotals: 12\n",  # no Ir
        "events: Ir\ntotals: lots\n",  # not a number
    ],
)
def test_output_without_a_total_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"callgrind|Ir|count"):
        instructions.parse_callgrind_total(text)


# -- arithmetic --------------------------------------------------------------------------------


def test_per_request_is_the_difference_over_n() -> None:
    # start-up 1,000,000 and 300 per request: N=2000 gives 1,600,000, 2N gives 2,200,000
    assert instructions.per_request(1_600_000, 2_200_000, 2000) == 300.0
    with pytest.raises(ValueError, match="positive"):
        instructions.per_request(1, 2, 0)


def test_ratio() -> None:
    assert instructions.ratio(300.0, 100.0) == 3.0
    assert instructions.ratio(None, 100.0) is None
    assert instructions.ratio(300.0, None) is None
    assert instructions.ratio(300.0, 0.0) is None


def test_requests_are_whole_pipelined_batches() -> None:
    p16 = instructions.WORKLOADS["ping-p16"]
    ping = instructions.WORKLOADS["ping"]
    assert instructions.requests_for(ping) == ping.requests
    assert instructions.requests_for(ping, 5) == 5
    assert instructions.requests_for(p16, 20) == 32
    assert instructions.requests_for(p16, 32) == 32
    assert instructions.requests_for(p16) % 16 == 0
    with pytest.raises(ValueError, match="positive"):
        instructions.requests_for(ping, 0)


def _run(server: str, workload: str, value: float | None, ok: bool = True) -> dict[str, Any]:
    return {"server": server, "workload": workload, "ir_per_request": value, "ok": ok}


def test_summary_ratios() -> None:
    workloads = {
        "ping": {"transport": "tcp", "reference": None},
        "udp-64": {"transport": "udp", "reference": None},
        "bytes-1k": {"transport": "tcp", "reference": None},
        "json-1k": {"transport": "tcp", "reference": "bytes-1k"},
    }
    servers = {
        "uvloop-protocol": {"loop": "uvloop"},
        "uvloop-datagram": {"loop": "uvloop"},
        "trio-sockets": {"loop": "trio"},
        "sf-rr-trio": {"loop": "trio"},
        "sf-rr-uvloop": {"loop": "uvloop"},
        "sf-echo-uvloop": {"loop": "uvloop"},
    }
    runs = [
        _run("uvloop-protocol", "ping", 1000.0),
        _run("trio-sockets", "ping", 4000.0),
        _run("sf-rr-trio", "ping", 8000.0),
        _run("sf-rr-uvloop", "ping", 2500.0),
        _run("sf-echo-uvloop", "ping", None, ok=False),
        _run("uvloop-datagram", "udp-64", 500.0),
        _run("sf-rr-trio", "udp-64", 2000.0),
        _run("uvloop-protocol", "bytes-1k", 2000.0),
        _run("sf-rr-uvloop", "bytes-1k", 4000.0),
        _run("sf-rr-uvloop", "json-1k", 10000.0),
    ]
    summary = instructions.summarize(runs, workloads, servers)
    ping = summary["ping"]
    assert ping["uvloop-protocol"]["ratio"] == 1.0
    assert ping["sf-rr-uvloop"]["ratio"] == 2.5
    assert ping["sf-rr-uvloop"]["reference"] == "uvloop-protocol"
    assert "trio_ratio" not in ping["sf-rr-uvloop"]
    assert ping["sf-rr-trio"]["ratio"] == 8.0
    assert ping["sf-rr-trio"]["trio_ratio"] == 2.0
    assert ping["sf-rr-trio"]["trio_reference"] == "trio-sockets"
    assert "trio_ratio" not in ping["trio-sockets"]  # not against itself
    assert "sf-echo-uvloop" not in ping  # its run failed
    assert summary["udp-64"]["sf-rr-trio"]["ratio"] == 4.0
    assert summary["udp-64"]["sf-rr-trio"]["trio_ratio"] is None  # trio-udp did not run
    assert summary["bytes-1k"]["sf-rr-uvloop"]["ratio"] == 2.0
    json_1k = summary["json-1k"]["sf-rr-uvloop"]
    assert json_1k["ratio"] == 2.5  # to bytes-1k on the same server, not to the baseline
    assert json_1k["reference"] == "bytes-1k (same server)"

    results = {
        "summary": summary,
        "settings": {"engine": "compiled"},
        "started": "now",
        "machine": {"python": "3.11", "valgrind": "valgrind-3.19.0"},
        "notes": ["a note"],
        "runs": runs,
    }
    text = instructions.render(results)
    assert "instructions/request" in text
    assert "2.50x" in text
    assert "2.00x trio-sockets" in text
    assert "SOME RUNS FAILED" in text
    markdown = instructions.render(results, markdown=True)
    assert "| server | workload | instructions/request |" in markdown
    compared = instructions.compare(results, results)
    assert "+0.0%" in compared


def test_the_baselines_are_added_and_easynetwork_left_out() -> None:
    notes: list[str] = []
    workloads = [instructions.WORKLOADS["ping"], instructions.WORKLOADS["udp-64"]]
    specs = instructions.select(["sf-rr-uvloop"], workloads, "both", notes)
    names = [s.name for s in specs]
    assert names[:2] == ["uvloop-protocol", "uvloop-datagram"]
    assert "sf-rr-uvloop" in names
    assert "sf-rr-uvloop[pure]" in names
    assert any("uvloop-protocol" in note for note in notes)
    chosen = instructions.with_references(["json-1k"], notes)
    assert [w.name for w in chosen] == ["bytes-1k", "json-1k"]


# -- the client, against real servers (no valgrind) ------------------------------------------


@contextlib.contextmanager
def running(name: str, mode: str) -> Iterator[Server]:
    with Children() as children:
        server = wait_ready(start_server(children, server_table("both")[name], mode))
        yield server


@pytest.mark.parametrize("name", ["uvloop-protocol", "sf-rr-uvloop", "sf-user-uvloop"])
def test_the_client_counts_every_reply(name: str) -> None:
    with running(name, "line") as server:
        one = client.drive("127.0.0.1", server.port, "tcp", "ping", 4, 7)
        assert (one.requests, one.replies, one.errors) == (7, 7, 0)
        assert one.ok
        # 3 connections, 16 per write: 37 requests is 2 batches and a partial one per connection
        piped = client.drive("127.0.0.1", server.port, "tcp", "ping", 4, 37, connections=3,
                             depth=16)  # fmt: skip
        assert (piped.requests, piped.replies, piped.errors) == (37, 37, 0)
        churn = client.drive("127.0.0.1", server.port, "churn", "ping", 4, 5)
        assert (churn.requests, churn.replies, churn.errors) == (5, 5, 0)
        echoed = client.drive("127.0.0.1", server.port, "tcp", "line", 64, 9, depth=4)
        assert (echoed.replies, echoed.errors) == (9, 0)
        assert server.info.get("engine", "none") in ("compiled", "pure Python", "none")


@pytest.mark.parametrize("name", ["uvloop-datagram", "sf-user-trio", "sf-echo-asyncio"])
def test_the_client_counts_every_datagram(name: str) -> None:
    with running(name, "udp") as server:
        result = client.drive("127.0.0.1", server.port, "udp", "udp", 64, 6)
        assert (result.requests, result.replies, result.errors) == (6, 6, 0)


@pytest.mark.parametrize("name", ["sf-user-uvloop", "sf-rr-trio[pure]"])
def test_the_client_sends_typed_json(name: str) -> None:
    with running(name, "json") as server:
        assert server.info["engine"] in ("compiled", "pure Python")
        result = client.drive("127.0.0.1", server.port, "tcp", "json", 1024, 20, depth=16)
        assert (result.requests, result.replies, result.errors) == (20, 20, 0)


def test_json_messages_have_the_size_asked() -> None:
    assert len(json_message(1024)) == 1024
    request, reply = request_and_reply(1024, "json", 2)
    assert request == reply == (json_message(1024) + b"\r\n") * 2


class _Limited(socketserver.StreamRequestHandler):
    """Answers PING lines: the first three right, the fourth wrong, then closes."""

    def handle(self) -> None:
        for count, _line in enumerate(self.rfile):
            if count == 3:
                self.wfile.write(b"+PANG\r\n")
                return
            self.wfile.write(b"+PONG\r\n")


class _Closing(socketserver.StreamRequestHandler):
    """Answers two PING lines, then closes."""

    def handle(self) -> None:
        for count, _line in enumerate(self.rfile):
            self.wfile.write(b"+PONG\r\n")
            if count == 1:
                return


@contextlib.contextmanager
def thread_server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    class TCPServer(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        block_on_close = True

    with TCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(5)


def test_the_client_stops_at_a_wrong_reply() -> None:
    with thread_server(_Limited) as port:
        result = client.drive("127.0.0.1", port, "tcp", "ping", 4, 10, timeout=5)
    assert (result.requests, result.replies, result.errors) == (4, 3, 1)
    assert not result.ok
    assert "+PANG" in result.error_samples[0]


def test_the_client_notices_an_early_close() -> None:
    with thread_server(_Closing) as port:
        result = client.drive("127.0.0.1", port, "tcp", "ping", 4, 8, depth=4, timeout=5)
    assert result.replies == 2
    assert result.errors == 1
    assert "closed" in result.error_samples[0]


def test_the_client_reports_a_refused_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = client.drive("127.0.0.1", port, "churn", "ping", 4, 3, timeout=5)
    assert (result.replies, result.errors) == (0, 1)


# -- the command line --------------------------------------------------------------------------


def run_benchmarks(*args: str, timeout: float = 120, env: dict[str, str] | None = None
                   ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )  # fmt: skip


def test_without_valgrind_the_mode_says_how_to_install_it(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # a PATH without valgrind
    proc = run_benchmarks("--instructions", "--output-dir", str(tmp_path), env=env, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "valgrind" in lines[0]
    assert "apt-get install valgrind" in lines[0]
    assert not list(tmp_path.glob("*.json"))


def test_requests_needs_instructions() -> None:
    proc = run_benchmarks("--requests", "10", timeout=60)
    assert proc.returncode == 2
    assert "--instructions" in proc.stderr


def test_unknown_instruction_workloads_are_refused() -> None:
    proc = run_benchmarks("--instructions", "--workloads", "redis-ping", timeout=60)
    assert proc.returncode != 0
    assert "ping-p16" in proc.stderr  # the known ones are listed


@pytest.mark.slow
# valgrind runs Python ~50x slower, and a busy machine slows it more: about 10 s on a quiet
# machine, over 85 s once with three other valgrind runs beside it. The bound is for a hang.
@pytest.mark.timeout(400)
@pytest.mark.skipif(not HAVE_VALGRIND, reason="valgrind is not installed")
def test_an_instructions_run_end_to_end(tmp_path: Path) -> None:
    proc = run_benchmarks(
        "--instructions", "--servers", "uvloop-protocol", "--workloads", "ping",
        "--requests", "60", "--output-dir", str(tmp_path), timeout=390,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (path,) = tmp_path.glob("*-instructions.json")
    assert path.with_suffix(".md").exists()
    results = json.loads(path.read_text())
    assert results["mode"] == "instructions"
    assert results["checks_passed"] is True
    (run,) = results["runs"]
    assert run["server"] == "uvloop-protocol"
    assert run["n"] == 60
    assert run["replies"] == 180  # N + 2N, every one checked
    assert run["ir_2n"] > run["ir_n"] > 0
    figures = results["summary"]["ping"]["uvloop-protocol"]
    assert figures["ratio"] == 1.0
    # a hand-written asyncio Protocol on uvloop: some thousands of instructions per PING
    assert 500 < figures["ir_per_request"] < 200_000
    assert "instructions/request" in proc.stdout
    assert "uvloop-protocol" in proc.stdout
    # callgrind's files went to a temporary directory, removed
    assert not list(tmp_path.glob("callgrind*"))
    assert not list(REPO.glob("callgrind.out*"))
