"""Run a server module under cProfile with a CPU-time timer (for ``profile_server``).

``python -m benchmarks._profiled OUT.prof MODULE ARGS...``: SIGUSR2 starts profiling, SIGUSR1
writes ``OUT.prof`` and ends the process.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
import time

profiler = cProfile.Profile(time.process_time)


def _start(signum: int, frame: object) -> None:
    profiler.enable()


def _stop(signum: int, frame: object) -> None:
    profiler.disable()
    profiler.dump_stats(OUT)
    os._exit(0)


OUT = sys.argv[1]
signal.signal(signal.SIGUSR2, _start)
signal.signal(signal.SIGUSR1, _stop)
if __name__ == "__main__":
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
