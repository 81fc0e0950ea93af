"""Keep ``benchmarks/micro/bench_threads.py`` working: run it in quick mode, in process."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks" / "micro" / "bench_threads.py"


def test_bench_threads_quick_run_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    bench = runpy.run_path(str(BENCH), run_name="bench_threads")
    assert bench["main"](["--quick"]) == 0
    table = capsys.readouterr().out
    for loop in ("asyncio", "uvloop", "trio"):
        for operation in ("run_in_thread", "portal.run_sync", "portal.run_coroutine"):
            assert any(line.split()[:2] == [loop, operation] for line in table.splitlines()), (
                f"no {loop} {operation} row in:\n{table}"
            )


def test_bench_threads_help(capsys: pytest.CaptureFixture[str]) -> None:
    bench = runpy.run_path(str(BENCH), run_name="bench_threads")
    with pytest.raises(SystemExit) as info:
        bench["main"](["--help"])
    assert info.value.code == 0
    assert "--quick" in capsys.readouterr().out
