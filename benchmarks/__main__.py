"""``python -m benchmarks``: run the benchmark suite (see ``benchmarks/README.md``)."""

from __future__ import annotations

import argparse
import fnmatch
import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.runner import Settings, run
from benchmarks.servers import SERVERS
from benchmarks.workloads import DEFAULT_WORKLOADS, WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"

EPILOG = """\
Servers: {servers}.
Workloads: {workloads}.
Default workloads: {default}.

Figures: requests/s (connections/s for churn, KiB per connection for idle), p50/p99 latency
where the generator gives it, server CPU time per request (utime+stime from /proc/PID/stat
around the run, divided by the requests served), and the generator's own CPU (a run where it
passed 90% of a core is flagged client-bound). Each is the median of the rounds, and also given
as a ratio to uvloop-protocol (TCP) or uvloop-datagram (UDP) measured in the same round.
"""


def _select(spec: str, known: list[str], what: str, default: tuple[str, ...]) -> list[str]:
    if spec == "all":
        return list(known)
    if spec == "default":
        return list(default)
    chosen: list[str] = []
    for pattern in spec.split(","):
        matched = fnmatch.filter(known, pattern.strip())
        if not matched:
            raise SystemExit(f"unknown {what} {pattern!r}; known: {', '.join(known)}")
        chosen += [m for m in matched if m not in chosen]
    return [name for name in known if name in chosen]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark server_framework against raw event-loop servers and EasyNetwork.",
        epilog=EPILOG.format(
            servers=", ".join(SERVERS),
            workloads=", ".join(WORKLOADS),
            default=", ".join(DEFAULT_WORKLOADS),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a ~1 minute smoke run: 1 round, short runs")
    add("--servers", default="all", help="comma-separated names or globs (sf-*), or 'all'")
    add("--workloads", default="default", help="names or globs, 'default' or 'all'")
    add("--rounds", type=int, help="rounds (default 3; --quick: 1)")
    add("--duration", type=float, help="seconds measured per run (default 1.0; --quick: 0.3)")
    add("--warmup", type=float, help="seconds of warm-up per run (default 0.3; --quick: 0.1)")
    add("--connections", type=int, default=50, help="client connections (50)")
    add("--client-processes", type=int, default=1, help="processes of the suite's generator (1)")
    add("--idle-connections", type=int, help="connections held by 'idle' (1000; --quick: 200)")
    add("--output-dir", type=Path, default=RESULTS, help="for JSON, Markdown, PNG (results/)")
    add(
        "--compare",
        nargs="+",
        metavar="JSON",
        help="OLD.json: print the change after this run; OLD.json NEW.json: compare two saved "
        "runs without running anything",
    )
    add("--list", action="store_true", help="list the servers and workloads, and exit")
    args = parser.parse_args(argv)
    if args.compare and len(args.compare) > 2:
        parser.error("--compare takes OLD.json, or OLD.json NEW.json")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick

    def pick(value: Any, normal: Any, fast: Any) -> Any:
        return value if value is not None else (fast if quick else normal)

    settings = Settings(
        servers=_select(args.servers, list(SERVERS), "server", ()),
        workloads=_select(args.workloads, list(WORKLOADS), "workload", DEFAULT_WORKLOADS),
        rounds=pick(args.rounds, 3, 1),
        duration=pick(args.duration, 1.0, 0.3),
        warmup=pick(args.warmup, 0.3, 0.1),
        connections=args.connections,
        client_processes=args.client_processes,
        idle_connections=pick(args.idle_connections, 1000, 200),
        quick=quick,
    )
    if settings.rounds < 1 or settings.duration <= 0 or settings.warmup < 0:
        raise SystemExit("--rounds must be >= 1, --duration > 0 and --warmup >= 0")
    return settings


class Progress:
    """Which server, which round, time left: one updated line on a terminal, else a line each."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, state: dict[str, Any]) -> None:
        minutes, seconds = divmod(int(state["eta"] + 0.5), 60)
        if state.get("done"):
            line = f"done: {state['total']} measurements"
        else:
            line = (
                f"[{state['index'] + 1}/{state['total']}] round {state['round']}/{state['rounds']}"
                f"  {state['workload']:<15} {state['server']:<20} ~{minutes}m{seconds:02d}s left"
            )
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if state.get("done") else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, spec in SERVERS.items():
            print(f"server   {name:<20} {spec.family:<16} {spec.loop:<8} {','.join(spec.modes)}")
        for name, w in WORKLOADS.items():
            default = "default" if name in DEFAULT_WORKLOADS else ""
            print(f"workload {name:<20} {default:<8} {w.description}")
        return 0
    if args.compare and len(args.compare) == 2:
        old, new = (report.load(Path(p)) for p in args.compare)
        print(report.compare(old, new), end="")
        return 0
    settings = settings_from(args)
    signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly on SIGTERM too
    print(
        f"benchmarks: {len(settings.workloads)} workload(s), {settings.rounds} round(s) of "
        f"{settings.duration:g} s (+{settings.warmup:g} s warm-up); Ctrl-C stops cleanly",
        file=sys.stderr,
    )
    stem = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if settings.quick else "")
    try:
        results = report.finish(run(settings, Progress()))
    except KeyboardInterrupt:
        print("\ninterrupted: every server and generator was stopped", file=sys.stderr)
        return 130
    paths = report.write(results, args.output_dir, stem)
    print(report.render(results), end="")
    if args.compare:
        print()
        print(report.compare(report.load(Path(args.compare[0])), results), end="")
    print("written: " + ", ".join(str(p) for p in paths))
    return 0 if results["checks_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
