"""``python -m benchmarks.profile_server SERVER WORKLOAD``: where a server's CPU time goes.

Starts SERVER under cProfile with a CPU-time timer (so time spent waiting or descheduled on a
busy machine is not counted), drives it with WORKLOAD's generator for a warm-up and then
``--seconds`` of profiling, and prints the functions with the most CPU time of their own.
cProfile adds its own overhead per Python call (pure-Python paths look heavier than they are);
compare call counts and relative shares, not absolute times. For a wall-clock view with native
frames, ``py-spy record --pid PID`` on a server started by hand works too.
"""

from __future__ import annotations

import argparse
import pstats
import signal
import sys
import time
from pathlib import Path

from benchmarks.generators import dnsperf, redis_benchmark, suite
from benchmarks.runner import START_TIMEOUT, Children
from benchmarks.servers import SERVERS
from benchmarks.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_server", description=__doc__
    )
    parser.add_argument("server", choices=list(SERVERS))
    parser.add_argument("workload", choices=[w for w in WORKLOADS if w != "idle"])
    parser.add_argument("--seconds", type=float, default=4.0, help="profiled time (4)")
    parser.add_argument("--warmup", type=float, default=0.7, help="unprofiled warm-up (0.7)")
    parser.add_argument("--top", type=int, default=30, help="functions listed (30)")
    parser.add_argument("--output", type=Path, help="the .prof file (in benchmarks/results)")
    args = parser.parse_args()
    spec, workload = SERVERS[args.server], WORKLOADS[args.workload]
    if workload.mode not in spec.modes:
        parser.error(f"{spec.name} does not serve the {workload.mode} wire format")
    out = args.output or RESULTS / f"profile-{spec.name}-{workload.name}.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    lasting = args.warmup + args.seconds + 5
    with Children() as children:
        argv = [sys.executable, "-m", "benchmarks._profiled", str(out), *spec.command()[1:]]
        server = children.spawn(spec.name, [*argv, "--port", "0", "--workload", workload.mode])
        line = server.read_line(START_TIMEOUT) or ""
        if not line.startswith("READY "):
            raise SystemExit(f"{spec.name} did not start{server.tail()}")
        port = int(line.split()[1])
        if workload.generator == "redis-benchmark" and redis_benchmark.path():
            gen_argv = redis_benchmark.command(port, 50, workload.depth, 10**8)
            generator = children.spawn("redis-benchmark", gen_argv)
        elif workload.generator == "dnsperf" and dnsperf.path():
            generator = children.spawn("dnsperf", dnsperf.command(port, lasting))
        else:
            mode = {"tcp": "tcp", "udp": "udp", "churn": "churn"}[workload.kind]
            size = max(workload.size, 8) if mode == "udp" else workload.size
            gen_argv = suite.command(
                port, mode, workload.framing, size, workload.depth, 50, lasting
            )
            generator = children.spawn("generator", gen_argv, stdin=True)
            generator.event("ready", START_TIMEOUT)
            generator.send(f"start {time.time()!r}")
        time.sleep(args.warmup)
        server.popen.send_signal(signal.SIGUSR2)
        time.sleep(args.seconds)
        server.popen.send_signal(signal.SIGUSR1)
        server.popen.wait(30)
        children.stop(generator)
    stats = pstats.Stats(str(out))
    print(f"{spec.name} under {workload.name}, {args.seconds:g} s profiled (CPU time): {out}")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
