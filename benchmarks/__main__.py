"""``python -m benchmarks``: run the benchmark suite (see ``benchmarks/README.md``)."""

from __future__ import annotations

import argparse
import fnmatch
import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import instructions, report
from benchmarks.runner import Settings, run
from benchmarks.servers import ENGINES, SERVERS, server_table
from benchmarks.workloads import DEFAULT_WORKLOADS, WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"

EPILOG = """\
Servers: {servers}.
Workloads: {workloads}.
Default workloads: {default}.
Workloads of --instructions: {ir_workloads} (default: {ir_default}); its default servers:
{ir_servers}.

Figures: requests/s (connections/s for churn, KiB per connection for idle), p50/p99 latency
where the generator gives it, server CPU time per request (utime+stime from /proc/PID/stat
around the run, divided by the requests served), and the generator's own CPU (a run where it
passed 90% of a core is flagged client-bound). Each is the median of the rounds, and also given
as a ratio to uvloop-protocol (TCP) or uvloop-datagram (UDP) measured in the same round
(json-1k: to bytes-1k on the same server).

--instructions counts instead the instructions each server executes per request under valgrind's
callgrind: (total after 2N requests - total after N, in fresh processes) / N. Counts repeat from
run to run on a busy machine, where times do not.
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
            ir_workloads=", ".join(instructions.WORKLOADS),
            ir_default=", ".join(instructions.DEFAULT_WORKLOADS),
            ir_servers=", ".join(instructions.DEFAULT_SERVERS),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a ~1 minute smoke run: 1 round, short runs")
    add(
        "--servers",
        help="comma-separated names or globs (sf-*), or 'all' (default: all; with "
        "--instructions: the baselines, the raw trio servers and sf-*)",
    )
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
    add(
        "--engine",
        choices=ENGINES,
        default="compiled",
        help="server_framework's engine for the sf-* servers: compiled (the default), pure "
        "(SERVER_FRAMEWORK_PURE_PYTHON=1), or both (each sf-* server twice, the pure one "
        "named NAME[pure])",
    )
    add(
        "--instructions",
        action="store_true",
        help="count instructions per request under valgrind's callgrind instead of timing "
        "(needs valgrind; see the workloads of this mode below)",
    )
    add(
        "--requests",
        type=int,
        metavar="N",
        help="--instructions: requests of the first run of each server (the second runs 2N); "
        "default per workload",
    )
    add("--list", action="store_true", help="list the servers and workloads, and exit")
    args = parser.parse_args(argv)
    if args.compare and len(args.compare) > 2:
        parser.error("--compare takes OLD.json, or OLD.json NEW.json")
    if args.requests is not None and not args.instructions:
        parser.error("--requests goes with --instructions")
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be >= 1")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick

    def pick(value: Any, normal: Any, fast: Any) -> Any:
        return value if value is not None else (fast if quick else normal)

    settings = Settings(
        servers=_select(args.servers or "all", list(SERVERS), "server", ()),
        workloads=_select(args.workloads, list(WORKLOADS), "workload", DEFAULT_WORKLOADS),
        rounds=pick(args.rounds, 3, 1),
        duration=pick(args.duration, 1.0, 0.3),
        warmup=pick(args.warmup, 0.3, 0.1),
        connections=args.connections,
        client_processes=args.client_processes,
        idle_connections=pick(args.idle_connections, 1000, 200),
        quick=quick,
        engine=args.engine,
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


def print_list(engine: str) -> None:
    """``--list``: one line per server (for ``--engine``), workload and --instructions workload."""
    for name, spec in server_table(engine).items():
        engine_label = {None: "", "compiled": "compiled", "pure": "pure"}[spec.engine]
        print(
            f"server   {name:<24} {spec.family:<16} {spec.loop:<8} {engine_label:<9}"
            f"{','.join(spec.modes)}"
        )
    for name, w in WORKLOADS.items():
        default = "default" if name in DEFAULT_WORKLOADS else ""
        print(f"workload {name:<24} {default:<8} {w.description}")
    for name, iw in instructions.WORKLOADS.items():
        default = "default" if name in instructions.DEFAULT_WORKLOADS else ""
        print(f"instructions {name:<20} {default:<8} N={iw.requests:<6} {iw.description}")


def main_compare(paths: list[str], new: dict[str, Any] | None = None) -> int:
    """``--compare``: OLD against NEW (a saved file, or the run just made)."""
    old = report.read(Path(paths[0]))
    if new is None:
        new = report.read(Path(paths[1]))
    kinds = {old.get("mode", "timed"), new.get("mode", "timed")}
    if len(kinds) > 1:
        print("--compare: one is an --instructions run and the other not", file=sys.stderr)
        return 2
    if kinds == {"instructions"}:
        print(instructions.compare(old, new), end="")
    else:
        print(report.compare(report.finish_loaded(old), report.finish_loaded(new)), end="")
    return 0


def main_instructions(args: argparse.Namespace) -> int:
    """``--instructions``: count, print the table, write the JSON and Markdown."""
    servers = _select(
        args.servers or ",".join(instructions.DEFAULT_SERVERS), list(SERVERS), "server", ()
    )
    workloads = _select(
        args.workloads,
        list(instructions.WORKLOADS),
        "--instructions workload",
        instructions.DEFAULT_WORKLOADS,
    )
    if instructions.valgrind_path() is None:
        print(instructions.MISSING_VALGRIND, file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    progress(
        f"benchmarks --instructions: {len(workloads)} workload(s) under callgrind, each server "
        "twice (N and 2N requests); Ctrl-C stops cleanly"
    )
    try:
        results = instructions.run(servers, workloads, args.engine, args.requests, progress)
    except KeyboardInterrupt:
        print("\ninterrupted: every server was stopped", file=sys.stderr)
        return 130
    stem = time.strftime("%Y%m%d-%H%M%S") + "-instructions"
    paths = report.write(results, args.output_dir, stem, instructions.render, None)
    print(instructions.render(results), end="")
    if args.compare:
        print()
        main_compare(args.compare[:1], results)
    print("written: " + ", ".join(str(p) for p in paths))
    return 0 if results["checks_passed"] else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print_list(args.engine)
        return 0
    if args.compare and len(args.compare) == 2:
        return main_compare(args.compare)
    if args.instructions:
        return main_instructions(args)
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
        main_compare(args.compare[:1], results)
    print("written: " + ", ".join(str(p) for p in paths))
    return 0 if results["checks_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
