"""Figures out of the runs: medians and same-round ratios, targets, and the outputs.

Outputs: tables on the terminal, ``<timestamp>.json`` (every run, the summary and the targets),
``<timestamp>.md`` (the same tables in Markdown) and ``<timestamp>.png`` (ratio to the baseline
per server and workload, server CPU time per request, memory per idle connection).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# -- summary -------------------------------------------------------------------------------


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _index(runs: list[dict[str, Any]]) -> dict[tuple[int, str, str], dict[str, Any]]:
    return {(r["round"], r["workload"], r["server"]): r for r in runs if r.get("ok")}


def paired_ratio(
    results: dict[str, Any],
    workload: str,
    server: str,
    reference: str,
    metric: str = "value",
    reference_workload: str | None = None,
) -> float | None:
    """Median over rounds of ``server``'s ``metric`` divided by ``reference``'s in that round.

    ``reference_workload``: the reference's figure on that workload (default: ``workload``).
    """
    ok = _index(results["runs"])
    other = reference_workload or workload
    ratios = []
    for round_no in range(1, results["settings"]["rounds"] + 1):
        mine, theirs = ok.get((round_no, workload, server)), ok.get((round_no, other, reference))
        if mine and theirs and mine.get(metric) is not None and theirs.get(metric):
            ratios.append(mine[metric] / theirs[metric])
    return _median(ratios)


def summarize(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{workload: {server: figures}}``: medians of the rounds and ratios to the baseline.

    A workload with a ``reference`` workload (``json-1k``) has its ratios to that workload's
    figures for the same server instead.
    """
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, info in results["workloads"].items():
        baseline = results["baselines"][info["transport"]]
        other = info.get("reference")
        per_server: dict[str, dict[str, Any]] = {}
        for server in results["servers"]:
            ref = server if other else baseline
            runs = [
                r for r in results["runs"] if r["workload"] == workload and r["server"] == server
            ]
            if not runs:
                continue
            good = [r for r in runs if r.get("ok")]
            bound = [r.get("client_bound", False) for r in good]
            per_server[server] = {
                "value": _median(r.get("value") for r in good),
                "ratio": paired_ratio(results, workload, server, ref, "value", other),
                "cpu_us": _median(r.get("cpu_us") for r in good),
                "cpu_ratio": paired_ratio(results, workload, server, ref, "cpu_us", other),
                "p50_us": _median(r.get("p50_us") for r in good),
                "p99_us": _median(r.get("p99_us") for r in good),
                "client_cpu": _median(r.get("client_cpu") for r in good),
                "client_bound": bool(bound) and sum(bound) * 2 > len(bound),
                "generator": good[0]["generator"] if good else None,
                "rounds_ok": len(good),
                "rounds": len(runs),
                "errors": [r["error"] for r in runs if not r.get("ok")][:3],
            }
        summary[workload] = per_server
    return summary


def checks_passed(results: dict[str, Any]) -> bool:
    """True when every run completed and every reply the suite checked was right."""
    return all(r.get("ok") for r in results["runs"])


# -- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A target of the issue, checked on ``workload`` for each of ``servers``.

    ``reference`` None compares the server's own value with ``threshold``; otherwise the
    same-round ratio of ``metric`` (``value`` or ``cpu_us``) to the reference's. ``reference``
    ``"same"`` with ``reference_workload``: the ratio to the same server on that workload.
    """

    label: str
    workload: str
    servers: tuple[str, ...]
    reference: str | None
    threshold: float
    at_least: bool = True
    metric: str = "value"
    aside: str | None = None  # a second reference whose ratio is shown (e.g. "aim 0.4x raw")
    reference_workload: str | None = None


_OURS_UV = ("sf-echo-uvloop", "sf-rr-uvloop")
_OURS_TRIO = ("sf-echo-trio", "sf-rr-trio")
_PURE_UV = ("sf-echo-uvloop[pure]", "sf-rr-uvloop[pure]")

#: The compiled engine's targets (issue 13), on the compiled engine unless the server's name
#: says [pure] (``--engine both``).
TARGETS: tuple[Target, ...] = (
    Target("TCP req/resp throughput >= 0.9x uvloop Protocol", "redis-ping", _OURS_UV,
           "uvloop-protocol", 0.9),
    Target("TCP req/resp server CPU/request <= 1.2x uvloop Protocol", "redis-ping", _OURS_UV,
           "uvloop-protocol", 1.2, at_least=False, metric="cpu_us"),
    Target("TCP pipelined >= 0.5x uvloop Protocol", "redis-ping-p16", _OURS_UV,
           "uvloop-protocol", 0.5),
    Target("1 KiB length-prefixed, 16 in flight >= 0.6x uvloop Protocol", "prefix-1k-p16",
           _OURS_UV, "uvloop-protocol", 0.6),
    Target("UDP >= 0.9x uvloop DatagramProtocol", "udp-dnsperf", _OURS_UV,
           "uvloop-datagram", 0.9),
    Target("UDP server CPU/datagram <= 1.2x uvloop DatagramProtocol", "udp-dnsperf", _OURS_UV,
           "uvloop-datagram", 1.2, at_least=False, metric="cpu_us"),
    Target("churn >= 0.85x uvloop Protocol connections/s", "churn", _OURS_UV,
           "uvloop-protocol", 0.85),
    Target("churn server CPU/connection <= 1.5x uvloop Protocol", "churn", _OURS_UV,
           "uvloop-protocol", 1.5, at_least=False, metric="cpu_us"),
    Target("trio req/resp >= 0.9x trio sockets", "redis-ping", _OURS_TRIO, "trio-sockets", 0.9),
    Target("trio pipelined >= 0.6x trio sockets", "redis-ping-p16", _OURS_TRIO,
           "trio-sockets", 0.6),
    Target("UDP on asyncio >= 2.5x asyncio DatagramProtocol", "udp-dnsperf",
           ("sf-echo-asyncio", "sf-rr-asyncio"), "asyncio-datagram", 2.5),
    Target("1 KiB typed JSON CPU/request <= 1.5x raw bytes, same server", "json-1k",
           ("sf-rr-uvloop", "sf-user-uvloop"), "same", 1.5, at_least=False, metric="cpu_us",
           reference_workload="bytes-1k"),
    Target("user-style handler CPU/request <= 1.1x the tuned echo handler", "redis-ping",
           ("sf-user-uvloop",), "sf-echo-uvloop", 1.1, at_least=False, metric="cpu_us"),
    Target("memory <= 3 KiB per idle connection, uvloop", "idle", _OURS_UV, None, 3.0,
           at_least=False),
    Target("memory <= 8 KiB per idle connection, trio", "idle", _OURS_TRIO, None, 8.0,
           at_least=False),
    Target("pure-Python engine req/resp >= 0.8x uvloop Protocol", "redis-ping", _PURE_UV,
           "uvloop-protocol", 0.8),
    Target("pure-Python engine pipelined >= 0.25x uvloop Protocol", "redis-ping-p16", _PURE_UV,
           "uvloop-protocol", 0.25),
)  # fmt: skip


def evaluate_targets(results: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target for each of its servers: the measured figure, and met / missed / not run."""
    rows = []
    for target in TARGETS:
        for server in target.servers:
            figures = summary.get(target.workload, {}).get(server)
            if target.reference is None:
                measured = figures["value"] if figures else None
            else:
                reference = server if target.reference == "same" else target.reference
                measured = paired_ratio(
                    results, target.workload, server, reference, target.metric,
                    target.reference_workload,
                )  # fmt: skip
            met = None
            if measured is not None:
                met = (
                    measured >= target.threshold
                    if target.at_least
                    else measured <= target.threshold
                )
            aside = None
            if target.aside is not None:
                aside = paired_ratio(results, target.workload, server, target.aside)
            rows.append({
                "target": target.label, "workload": target.workload, "server": server,
                "reference": target.reference, "metric": target.metric,
                "reference_workload": target.reference_workload,
                "threshold": target.threshold, "at_least": target.at_least,
                "measured": measured, "met": met,
                "aside_reference": target.aside, "aside_ratio": aside,
                "client_bound": bool(figures and figures["client_bound"]),
            })  # fmt: skip
    return rows


# -- formatting ----------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _table(headers: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return lines
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def fmt(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(padded)

    return [fmt(headers), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def workload_table(results: dict[str, Any], summary: dict[str, Any], workload: str,
                   markdown: bool) -> list[str]:  # fmt: skip
    """The table of one workload: a row per server."""
    info = results["workloads"][workload]
    unit = info["unit"]
    rows = []
    for server, f in summary[workload].items():
        flags = []
        if f["client_bound"]:
            flags.append("client-bound")
        if f["rounds_ok"] < f["rounds"]:
            flags.append(f"FAILED {f['rounds'] - f['rounds_ok']}/{f['rounds']}")
        if info["kind"] == "idle":
            rows.append([server, _num(f["value"]), _ratio(f["ratio"]), " ".join(flags)])
        else:
            rows.append([
                server, _num(f["value"]), _ratio(f["ratio"]), _num(f["p50_us"]), _num(f["p99_us"]),
                _num(f["cpu_us"]), _ratio(f["cpu_ratio"]), _pct(f["client_cpu"]), " ".join(flags),
            ])  # fmt: skip
    per = "conn" if info["kind"] == "churn" else "req"
    if info["kind"] == "idle":
        headers = ["server", unit, "ratio", "flags"]
    else:
        headers = ["server", unit, "ratio", "p50 us", "p99 us", f"CPU us/{per}", "CPU ratio",
                   "client CPU", "flags"]  # fmt: skip
    title = f"{workload}: {info['description']}"
    if info.get("reference"):
        title += f" (ratios: to {info['reference']} on the same server)"
    gens = {f["generator"] for f in summary[workload].values() if f["generator"]}
    if gens:
        title += f" [generator: {', '.join(sorted(gens))}]"
    heading = [f"### {title}", ""] if markdown else [title]
    return [*heading, *_table(headers, rows, markdown), ""]


def _servers(summary: dict[str, Any], order: Iterable[str]) -> list[str]:
    present = {s for per_server in summary.values() for s in per_server}
    return [s for s in order if s in present]


def matrix_table(summary: dict[str, Any], order: Iterable[str], key: str, markdown: bool,
                 fmt: Callable[[float | None], str]) -> list[str]:  # fmt: skip
    """Servers down, workloads across, one figure per cell (``*``: client-bound)."""
    workloads = list(summary)
    servers = _servers(summary, order)
    rows = []
    for server in servers:
        row = [server]
        for w in workloads:
            f = summary[w].get(server)
            cell = fmt(f[key]) if f else ""
            if f and f["client_bound"] and cell not in ("", "-"):
                cell += "*"
            row.append(cell)
        rows.append(row)
    return _table(["server", *workloads], rows, markdown)


def targets_table(targets: list[dict[str, Any]], markdown: bool) -> list[str]:
    rows = []
    for t in targets:
        measured = t["measured"]
        if t["reference"] is None:
            shown = "-" if measured is None else f"{measured:.2f} KiB"
        else:
            shown = _ratio(measured)
        if t["aside_ratio"] is not None:
            shown += f" ({_ratio(t['aside_ratio'])} {t['aside_reference']})"
        if t["client_bound"]:
            shown += " client-bound"
        verdict = {True: "met", False: "MISSED", None: "not run"}[t["met"]]
        rows.append([t["target"], t["server"], shown, verdict])
    return _table(["target", "server", "measured", "verdict"], rows, markdown)


def render(results: dict[str, Any], markdown: bool = False) -> str:
    """Every table, as terminal text or Markdown."""
    summary = results["summary"]
    s = results["settings"]
    lines = []
    if markdown:
        lines += [f"# Benchmark results, {results['started']}", ""]
    lines.append(
        f"{s['rounds']} round(s) of {s['duration']:g} s after {s['warmup']:g} s warm-up; "
        f"{s['connections']} connections; median of rounds; ratios to "
        f"{results['baselines']['tcp']} (TCP) / {results['baselines']['udp']} (UDP) "
        f"measured in the same round. Machine: {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}."
    )
    lines += [f"- note: {n}" for n in results["notes"]]
    lines.append("")
    for workload in summary:
        lines += workload_table(results, summary, workload, markdown)
    head = "### " if markdown else ""
    referenced = [
        f"{w}: to {results['workloads'][w]['reference']} on the same server"
        for w in summary
        if results["workloads"][w].get("reference")
    ]
    aside = "".join(f"; {r}" for r in referenced)
    lines += [
        f"{head}Throughput ratio to the baseline (memory ratio for idle{aside}; * client-bound)",
        "",
    ]
    lines += [*matrix_table(summary, results["servers"], "ratio", markdown, _ratio), ""]
    lines += [f"{head}Server CPU time per request, us (per connection for churn)", ""]
    rates = {w: v for w, v in summary.items() if results["workloads"][w]["kind"] != "idle"}
    lines += [*matrix_table(rates, results["servers"], "cpu_us", markdown, _num), ""]
    lines += [f"{head}Targets", ""]
    lines += [*targets_table(results["targets"], markdown), ""]
    verdict = "all replies checked and right" if results["checks_passed"] else "SOME RUNS FAILED"
    lines.append(f"Checks: {verdict}.")
    for r in results["runs"]:
        if not r.get("ok"):
            lines.append(f"- round {r['round']} {r['workload']} {r['server']}: {r.get('error')}")
    return "\n".join(lines) + "\n"


# -- chart ---------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> bool:
    """Write the PNG chart; False (and nothing written) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.colors import LogNorm  # noqa: PLC0415
    except ImportError:
        return False
    summary = results["summary"]
    kinds = {w: results["workloads"][w]["kind"] for w in summary}
    rate_w = [w for w in summary if kinds[w] != "idle"]
    idle_w = [w for w in summary if kinds[w] == "idle"]
    servers = _servers(summary, results["servers"])

    def grid(workloads: list[str], key: str) -> list[list[float]]:
        return [
            [(summary[w].get(s) or {}).get(key) or float("nan") for w in workloads] for s in servers
        ]

    panels = 2 + (1 if idle_w else 0)
    width = max(8.0, 1.1 * len(rate_w) + 3)
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=(width * 2 + (5 if idle_w else 0), 0.45 * len(servers) + 3),
        gridspec_kw={"width_ratios": [width, width, *([4] if idle_w else [])]},
    )
    for ax, key, title, norm, cmap, fmt in (
        (axes[0], "ratio", "throughput / baseline (same round)", LogNorm(0.03, 2.0), "RdYlGn",
         lambda v: f"{v:.2f}"),
        (axes[1], "cpu_us", "server CPU us per request", LogNorm(1, 1000), "RdYlGn_r",
         lambda v: f"{v:.1f}" if v < 100 else f"{v:.0f}"),
    ):  # fmt: skip
        data = grid(rate_w, key)
        ax.imshow(data, norm=norm, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(rate_w)), rate_w, rotation=35, ha="right")
        ax.set_yticks(range(len(servers)), servers)
        ax.set_title(title)
        for y, row in enumerate(data):
            for x, value in enumerate(row):
                if value == value:  # not NaN
                    ax.text(x, y, fmt(value), ha="center", va="center", fontsize=8)
    if idle_w:
        ax = axes[2]
        values = [(summary[idle_w[0]].get(s) or {}).get("value") or 0.0 for s in servers]
        ax.barh(range(len(servers)), values, color="tab:blue")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yticks(range(len(servers)), servers)
        ax.invert_yaxis()
        ax.set_title("KiB per idle connection")
        for y, value in enumerate(values):
            if value:
                ax.text(value, y, f" {value:.1f}", va="center", fontsize=8)
    fig.suptitle(f"server_framework benchmarks, {results['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# -- files and comparison ------------------------------------------------------------------


def finish(results: dict[str, Any]) -> dict[str, Any]:
    """Add the summary, the targets and the verdict to ``results``."""
    results["summary"] = summarize(results)
    results["targets"] = evaluate_targets(results, results["summary"])
    results["checks_passed"] = checks_passed(results)
    return results


def write(
    results: dict[str, Any],
    directory: Path,
    stem: str,
    renderer: Callable[..., str] | None = None,
    charter: Callable[[dict[str, Any], Path], bool] | None = chart,
) -> list[Path]:
    """Write ``stem``.json, .md and .png into ``directory``; return the paths written.

    ``renderer(results, markdown=True)`` gives the Markdown (default :func:`render`);
    ``charter`` draws the PNG (None: no chart).
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.json", directory / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=1) + "\n")
    paths[1].write_text((renderer or render)(results, markdown=True))
    png = directory / f"{stem}.png"
    if charter is not None and charter(results, png):
        paths.append(png)
    return paths


def read(path: Path) -> dict[str, Any]:
    """A saved results file, as written (timed or ``--instructions``)."""
    results: dict[str, Any] = json.loads(path.read_text())
    return results


def finish_loaded(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` of a timed run, with its summary computed if it was saved without."""
    if "summary" not in results:
        finish(results)
    return results


def load(path: Path) -> dict[str, Any]:
    """A saved timed run, summary included."""
    return finish_loaded(read(path))


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The change from ``old`` to ``new`` for every (workload, server) both measured."""
    rows = []
    for workload, servers in new["summary"].items():
        for server, f in servers.items():
            before = old["summary"].get(workload, {}).get(server)
            if not before:
                continue

            def change(key: str, f: dict[str, Any] = f, before: dict[str, Any] = before) -> str:
                a, b = before.get(key), f.get(key)
                return "-" if not a or b is None else f"{(b / a - 1) * 100:+.0f}%"

            rows.append([
                workload, server, _num(before["value"]), _num(f["value"]), change("value"),
                _ratio(before["ratio"]), _ratio(f["ratio"]),
                _num(before["cpu_us"]), _num(f["cpu_us"]), change("cpu_us"),
            ])  # fmt: skip
    headers = ["workload", "server", "old", "new", "change", "old ratio", "new ratio",
               "old CPU us", "new CPU us", "CPU change"]  # fmt: skip
    title = f"Change from {old['started']} to {new['started']} (median figures):"
    return "\n".join([title, *_table(headers, rows, markdown=False)]) + "\n"
