"""The results: a table on the terminal, bench/results/latest.json and latest.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.core import Result
from bench.stats import Figure


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _met(figure: Figure) -> str:
    met = figure.met()
    return "" if met is None else ("yes" if met else "NO")


def rows(result: Result) -> list[list[str]]:
    out = []
    for f in result.figures:
        goal = f.goal.describe(f.unit) if f.goal else ""
        out.append(
            [
                result.scenario,
                f.name,
                str(len(f.samples)),
                _fmt(f.stat("p50")),
                _fmt(f.stat("p99")),
                _fmt(f.stat("max")),
                f.unit,
                goal,
                _met(f),
            ]
        )
    for r in result.ratios:
        out.append([result.scenario, f"ratio: {r.name}", "", _fmt(r.value), "", "", "x", "", ""])
    if result.status != "ok" or not out:
        out.append([result.scenario, f"{result.status.upper()}: {result.note}", *[""] * 7])
    return out


HEADER = ["scenario", "figure", "n", "p50", "p99", "max", "unit", "goal", "met"]


def table(results: list[Result]) -> str:
    body = [r for result in results for r in rows(result)]
    widths = [max(len(row[i]) for row in [HEADER, *body]) for i in range(len(HEADER))]
    widths[1] = min(widths[1], 60)
    lines = [
        "  ".join(cell[: widths[i]].ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [HEADER, *body]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write(directory: Path, document: dict[str, Any], results: list[Result]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    (directory / "latest.md").write_text(markdown(document, results))


def markdown(document: dict[str, Any], results: list[Result]) -> str:
    machine = document["machine"]
    run = document["run"]
    lines = [
        "# faultplane benchmark results",
        "",
        f"Mode: **{run['mode']}**, started {run['started']}, took {run['seconds']:.0f} s "
        f"(1-minute load average before the run: {run.get('loadavg_before', '?')}). "
        "Each figure is p50 / p99 / max over its repetitions (nearest rank: with fewer "
        "than 100 samples p99 is the worst but one or the worst).",
        "",
        "Machine: "
        + ", ".join(
            f"{key} {machine[key]}"
            for key in ("cores", "memory_gib", "cpu", "os", "python", "envoy", "grpcio")
        )
        + f"; faultplane {machine['faultplane_commit']}"
        + (" (with uncommitted changes in src/)" if machine["faultplane_dirty"] else ""),
        "",
        "| scenario | figure | n | p50 | p99 | max | unit | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in rows(result):
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    lines += ["", "## Notes per scenario", ""]
    for result in results:
        lines.append(
            f"- **{result.scenario}** ({result.title}; {result.status}, "
            f"{result.seconds:.0f} s): {result.note or 'no note'}"
        )
        if result.params:
            lines.append(f"  parameters: `{json.dumps(result.params, sort_keys=True)}`")
    return "\n".join(lines) + "\n"
