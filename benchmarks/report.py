"""Figures out of the runs: medians and same-round ratios, targets, and the outputs.

Outputs: tables on the terminal, ``<timestamp>.json`` (every run, the summary and the targets),
``<timestamp>.md`` (the same tables in Markdown) and ``<timestamp>.png`` (ratio to the baseline
per server and workload, server CPU time per request, memory per idle connection).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.machine import describe as describe_machine

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


def machine_line(results: dict[str, Any]) -> str:
    """``Machine: ...``, the facts the run read from the machine (see ``benchmarks.machine``)."""
    return f"Machine (read from it at run time): {describe_machine(results['machine'])}."


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
        "measured in the same round."
    )
    lines.append(machine_line(results))
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

#: Colours run on a log scale of the ratio to the baseline, from 1/RATIO_SPAN to RATIO_SPAN
#: (beyond: the end colours); white is 1.0, the baseline's own figure.
RATIO_SPAN = 4.0
#: Diverging map: blue is better than the baseline, red worse, in every panel.
CMAP = "RdBu"
MISSING_COLOUR = "#d4d4d4"
OURS_PREFIX = "sf-"
OURS_BAND = "#ffe9a8"


def is_ours(server: str) -> bool:
    """A server_framework row (``sf-*``, either engine)."""
    return server.startswith(OURS_PREFIX)


def score(ratio: float | None, higher_is_better: bool) -> float | None:
    """The colour value of a ratio to the baseline: -1 (worst) .. 0 (equal) .. 1 (best).

    log(ratio) / log(RATIO_SPAN), clipped, negated where lower is better (CPU, memory), so that
    "better than the baseline" has the same sign, and the same colour, in every panel.
    """
    if ratio is None or ratio <= 0 or ratio != ratio:  # missing, nonsense or NaN
        return None
    value = math.log(ratio) / math.log(RATIO_SPAN)
    value = max(-1.0, min(1.0, value))
    return value if higher_is_better else -value


@dataclass
class Grid:
    """One heat map: a row per server, a column per workload, each cell a ratio to the
    baseline of its column (same round), its colour value and its median figure."""

    title: str
    subtitle: str
    colorbar: str
    higher_is_better: bool
    columns: list[str]
    labels: list[str]
    rows: list[str]
    ratios: list[list[float | None]]
    scores: list[list[float | None]]
    figures: list[list[str]]
    marks: list[list[str]]


#: A column of a heat map: workload, key of the ratio, key of the ``*`` mark, the figure shown.
_Column = tuple[str, str, str, Callable[[dict[str, Any]], str]]


def _rate(value: float | None, unit: str) -> str:
    return "" if value is None else f"{_num(value)} {unit}"


def chart_grids(results: dict[str, Any]) -> list[Grid]:
    """The chart's heat maps, from ``results`` (summary included): throughput, then cost.

    Every cell is coloured by its own ratio to its column's baseline in the same round (the
    summary's ``ratio`` and ``cpu_ratio``), never by an absolute figure: a server at 2x the
    baseline's CPU per request has one colour whether the request costs 1 us or 100 us.
    Cost: server CPU per request (per connection for churn), and memory per idle connection.
    """
    summary = results["summary"]
    kinds = {w: results["workloads"][w]["kind"] for w in summary}
    rate_w = [w for w in summary if kinds[w] != "idle"]
    idle_w = [w for w in summary if kinds[w] == "idle"]
    servers = _servers(summary, results["servers"])

    def label(workload: str) -> str:
        reference = results["workloads"][workload].get("reference")
        return f"{workload} (\N{DIVISION SIGN} {reference})" if reference else workload

    def build(
        title: str, subtitle: str, colorbar: str, higher: bool, columns: list[_Column]
    ) -> Grid:
        ratios: list[list[float | None]] = []
        scores: list[list[float | None]] = []
        figures: list[list[str]] = []
        marks: list[list[str]] = []
        for server in servers:
            r_row: list[float | None] = []
            s_row: list[float | None] = []
            f_row: list[str] = []
            m_row: list[str] = []
            for workload, key, mark_key, shown in columns:
                f = summary[workload].get(server)
                ratio = f.get(key) if f else None
                r_row.append(ratio)
                s_row.append(score(ratio, higher))
                if f and not f.get("rounds_ok", 1) and f.get("rounds"):
                    f_row.append("FAILED")
                else:
                    f_row.append(shown(f) if f else "")
                m_row.append("*" if f and mark_key and f.get(mark_key) and ratio else "")
            ratios.append(r_row)
            scores.append(s_row)
            figures.append(f_row)
            marks.append(m_row)
        return Grid(
            title=title,
            subtitle=subtitle,
            colorbar=colorbar,
            higher_is_better=higher,
            columns=[c[0] for c in columns],
            labels=[label(c[0]) for c in columns],
            rows=servers,
            ratios=ratios,
            scores=scores,
            figures=figures,
            marks=marks,
        )

    def rate_of(workload: str) -> Callable[[dict[str, Any]], str]:
        unit = results["workloads"][workload]["unit"]
        return lambda f: _rate(f.get("value"), unit)

    base = results["baselines"]
    throughput = build(
        "Throughput \N{DIVISION SIGN} baseline",
        f"{base['tcp']} for TCP, {base['udp']} for UDP, in the same round; higher is better",
        "ratio: higher is better",
        True,
        [(w, "ratio", "client_bound", rate_of(w)) for w in rate_w],
    )
    cost_columns: list[_Column] = [
        (w, "cpu_ratio", "", lambda f: _rate(f.get("cpu_us"), "us")) for w in rate_w
    ] + [(w, "ratio", "", lambda f: _rate(f.get("value"), "KiB")) for w in idle_w]
    cost = build(
        "Server cost \N{DIVISION SIGN} baseline",
        "CPU time per request (per connection for churn)"
        + (", memory per idle connection" if idle_w else "")
        + ", in the same round; lower is better",
        "ratio: lower is better",
        False,
        cost_columns,
    )
    return [throughput, cost]


def chart_legend(results: dict[str, Any]) -> str:
    """The chart's one-line legend."""
    return (
        "Colour: ratio to the column's baseline, same round (blue better, red worse).  "
        "Big: ratio; small: median.  *: client-bound.  -: not run.  Bold, framed: ours (sf-*)."
    )


def settings_line(results: dict[str, Any]) -> str:
    s = results["settings"]
    engine = f", engine {s['engine']}" if s.get("engine") else ""
    return (
        f"{s['rounds']} round(s) of {s['duration']:g} s after {s['warmup']:g} s warm-up, "
        f"{s['connections']} connections{engine}; medians of the rounds"
    )


def _contrast(rgba: tuple[float, ...]) -> str:
    """Black or white, whichever reads better on ``rgba``."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(first, last) of every run of True in ``flags``."""
    spans, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i - 1))
            start = None
    return spans


def chart(results: dict[str, Any], path: Path) -> bool:
    """Write the PNG chart; False (and nothing written) when matplotlib is missing, or when
    there is nothing to draw.

    Two heat maps (throughput; server CPU per request and memory per idle connection), every
    cell coloured by its ratio to its column's baseline, with a colour scale each, our rows
    framed, a legend line under the title and the machine's facts (from ``results``) below.
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.cm import ScalarMappable  # noqa: PLC0415
        from matplotlib.colors import Normalize  # noqa: PLC0415
        from matplotlib.patches import Rectangle  # noqa: PLC0415
    except ImportError:
        return False
    import textwrap  # noqa: PLC0415

    grids = [g for g in chart_grids(results) if g.columns]
    rows = grids[0].rows if grids else []
    if not rows:
        return False
    cmap = plt.get_cmap(CMAP)
    norm = Normalize(-1.0, 1.0)

    # The layout, in inches: a label column, the heat maps stacked, a colour bar each.
    cell_w, cell_h = 1.05, 0.46
    label_w = 0.3 + 0.085 * max((len(r) for r in rows), default=8)
    columns = max(len(g.columns) for g in grids)
    header_h = 0.75 + 0.04 * max((len(lab) for g in grids for lab in g.labels), default=8)
    title_h, legend_h, footer_h, gap_h = 0.45, 0.3, 0.75, 0.3
    bar_w, bar_gap, bar_label_w, right = 0.17, 0.15, 1.2, 0.25
    legend = chart_legend(results)
    min_w = 0.075 * len(legend) + 0.4  # the legend fits on its line (9 pt)
    fixed_w = label_w + bar_gap + bar_w + bar_label_w + right
    cell_w = min(1.5, max(cell_w, (min_w - fixed_w) / max(columns, 1)))
    fig_w = max(min_w, fixed_w + cell_w * columns)
    left = label_w + max(0.0, (fig_w - fixed_w - cell_w * columns) / 2)  # centred
    panel_h = header_h + cell_h * len(rows)
    fig_h = title_h + legend_h + len(grids) * panel_h + (len(grids) - 1) * gap_h + footer_h
    fig = plt.figure(figsize=(fig_w, fig_h))

    def box(
        left: float, top: float, width: float, height: float
    ) -> tuple[float, float, float, float]:
        return (left / fig_w, 1 - (top + height) / fig_h, width / fig_w, height / fig_h)

    # Numbers sized to the cell: the ratio on two thirds of its height, the figure below.
    cell_pt = min(cell_h * 72 / 2.6, cell_w * 72 / 5.0)
    big, small = max(7.0, min(13.0, cell_pt)), max(6.0, min(10.0, cell_pt * 0.75))
    label_pt = max(8.0, min(11.0, cell_h * 72 / 3.0))

    top = title_h + legend_h
    for grid in grids:
        width = cell_w * len(grid.columns)
        ax = fig.add_axes(box(left, top + header_h, width, cell_h * len(rows)))
        colours = [
            [
                cmap(norm(v)) if v is not None else matplotlib.colors.to_rgba(MISSING_COLOUR)
                for v in row
            ]
            for row in grid.scores
        ]
        ax.imshow(colours, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(grid.columns)))
        ax.set_xticklabels(
            grid.labels, rotation=30, ha="left", rotation_mode="anchor", fontsize=label_pt
        )
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=label_pt)
        ax.tick_params(length=0)
        ax.set_xticks([x - 0.5 for x in range(1, len(grid.columns))], minor=True)
        ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        for tick, server in zip(ax.get_yticklabels(), rows, strict=True):
            if is_ours(server):
                tick.set_fontweight("bold")
                tick.set_bbox({"facecolor": OURS_BAND, "edgecolor": "none", "pad": 1.5})
        for first, last in _runs([is_ours(r) for r in rows]):
            ax.add_patch(
                Rectangle(
                    (-0.5, first - 0.5),
                    len(grid.columns),
                    last - first + 1,
                    fill=False,
                    edgecolor="black",
                    linewidth=2.2,
                    clip_on=False,
                    zorder=3,
                )
            )
        for y, row in enumerate(grid.ratios):
            for x, ratio in enumerate(row):
                ink = _contrast(colours[y][x])
                main = "-" if ratio is None else f"{ratio:.2f}x{grid.marks[y][x]}"
                ax.text(
                    x,
                    y - 0.12,
                    main,
                    ha="center",
                    va="center",
                    fontsize=big,
                    fontweight="bold" if is_ours(rows[y]) else "normal",
                    color=ink,
                )
                if grid.figures[y][x]:
                    ax.text(
                        x,
                        y + 0.27,
                        grid.figures[y][x],
                        ha="center",
                        va="center",
                        fontsize=small,
                        color=ink,
                    )
        title_y = 1 - (top + 0.05) / fig_h
        fig.text(
            0.15 / fig_w, title_y, grid.title, ha="left", va="top", fontsize=12, fontweight="bold"
        )
        fig.text(
            0.15 / fig_w,
            title_y - 0.24 / fig_h,
            grid.subtitle,
            ha="left",
            va="top",
            fontsize=9.5,
            color="#333333",
        )
        # The colour scale: ratios as tick labels, better at the top in both panels.
        cax = fig.add_axes(box(left + width + bar_gap, top + header_h, bar_w, cell_h * len(rows)))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, extend="both")
        ticks = [r for r in (0.25, 0.5, 1.0, 2.0, 4.0) if 1 / RATIO_SPAN <= r <= RATIO_SPAN]
        bar.set_ticks([score(r, grid.higher_is_better) or 0.0 for r in ticks])
        bar.set_ticklabels([f"{r:g}x" for r in ticks])
        bar.ax.tick_params(labelsize=label_pt - 1)
        bar.set_label(grid.colorbar, fontsize=label_pt - 1)
        top += panel_h + gap_h

    fig.text(
        0.5,
        1 - 0.25 / fig_h,
        f"server_framework benchmarks, {results['started']}",
        ha="center",
        va="center",
        fontsize=14,
        fontweight="bold",
    )
    fig.text(
        0.5, 1 - (title_h + legend_h / 2) / fig_h, legend, ha="center", va="center", fontsize=9
    )
    footer = textwrap.fill(
        f"{machine_line(results)} {settings_line(results)}.",
        width=int((fig_w - 0.3) / 0.072),
    )
    fig.text(
        0.012, (footer_h - 0.15) / fig_h, footer, ha="left", va="top", fontsize=8.5, color="#333333"
    )
    fig.savefig(path, dpi=100)
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


# -- re-rendering a saved run --------------------------------------------------------------


def rerender(path: Path, directory: Path | None = None) -> list[Path]:
    """Write ``<stem>.md`` (and for a timed run ``<stem>.png``) again from a saved
    ``<stem>.json``, into ``directory`` (default: beside it); the JSON is left as it is."""
    results = read(path)
    directory = path.parent if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{path.stem}.md"
    if results.get("mode") == "instructions":
        from benchmarks import instructions  # noqa: PLC0415 (it imports this module)

        markdown.write_text(instructions.render(results, markdown=True))
        return [markdown]
    finish_loaded(results)
    markdown.write_text(render(results, markdown=True))
    png = directory / f"{path.stem}.png"
    return [markdown, png] if chart(results, png) else [markdown]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.report RESULTS.json ...``: the Markdown and the chart again."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Write the Markdown report and the PNG chart of saved runs again, from "
        "their JSON (which is left as it is), and print each run's machine line.",
    )
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json")
    parser.add_argument("--output-dir", type=Path, help="where to write (default: beside each)")
    args = parser.parse_args(argv)
    for path in args.results:
        written = rerender(path, args.output_dir)
        print(f"{path}: {machine_line(read(path))}")
        print("written: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
