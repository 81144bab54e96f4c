"""`python -m bench scheduling [--seeds N] [--experiments N]`: the scheduling simulation.

Pure computation on a simulated clock (no server, no Envoy): each seed draws a 30-service
graph and a queue; faultplane's packer, serial one-at-a-time and the FIS rule alone
drain the same queue; the table compares them (mean over seeds) and the ratios say by
how much; every run is judged by the independent checker. Results go to
`bench/results/scheduling.json` and `.md` next to the main benchmark's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.scheduling.simulate import Outcome, simulate
from bench.scheduling.strategies import STRATEGIES
from bench.scheduling.workload import make

RESULTS = Path(__file__).resolve().parent.parent / "results"

# (column, Outcome attribute, digits)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("started", "started", 1),
    ("expired", "expired", 1),
    ("never fits", "left", 1),
    ("makespan h", "makespan_h", 1),
    ("services tested, first 24 h", "first_day_services", 1),
    ("services tested per day", "services_per_day", 1),
    ("all services tested after h", "all_covered_h", 1),
    ("mean wait h", "mean_wait_h", 1),
    ("rule violations", "violation_count", 0),
    ("planning CPU s", "cpu_s", 2),
)


def _value(outcome: Outcome, attribute: str) -> float:
    if attribute == "started":
        return len(outcome.runs)
    if attribute == "violation_count":
        return len(outcome.violations)
    value = getattr(outcome, attribute)
    return float("nan") if value is None else float(value)


def summarise(outcomes: dict[str, list[Outcome]]) -> dict[str, dict[str, float]]:
    """Mean over seeds of every column, per strategy (violations: the total)."""
    table: dict[str, dict[str, float]] = {}
    for name, runs in outcomes.items():
        row = {}
        for column, attribute, _ in COLUMNS:
            values = [_value(o, attribute) for o in runs]
            total = attribute == "violation_count"
            row[column] = sum(values) if total else statistics.fmean(values)
        table[name] = row
    return table


KINDS = (
    ("same sidecar and scope", "same sidecar and scope at once"),
    ("same request path", "on one request path at once"),
    ("cool-down", "within the cool-down"),
    ("concurrency limit", "running"),
    ("calendar or deadline", ""),
)


def breakdown(outcomes: dict[str, list[Outcome]]) -> dict[str, dict[str, int]]:
    """Violations per kind and strategy (total over seeds): what each rule would catch."""
    table: dict[str, dict[str, int]] = {}
    for name, runs in outcomes.items():
        counts = dict.fromkeys((kind for kind, _ in KINDS), 0)
        for line in (v for o in runs for v in o.violations):
            kind = next(k for k, marker in KINDS if marker in line)
            counts[kind] += 1
        table[name] = counts
    return table


def ratios(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """How faultplane's packing compares: > 1 means faultplane is better."""
    fp, serial, fis = table["faultplane"], table["serial"], table["fis"]
    return {
        "makespan serial / faultplane": serial["makespan h"] / fp["makespan h"],
        "makespan fis / faultplane": fis["makespan h"] / fp["makespan h"],
        "mean wait serial / faultplane": serial["mean wait h"] / fp["mean wait h"],
        "services per day faultplane / serial": (
            fp["services tested per day"] / serial["services tested per day"]
        ),
        "services per day faultplane / fis": (
            fp["services tested per day"] / fis["services tested per day"]
        ),
        "all tested serial / faultplane": (
            serial["all services tested after h"] / fp["all services tested after h"]
        ),
    }


def markdown(
    table: dict[str, dict[str, float]],
    kinds: dict[str, dict[str, int]],
    found: dict[str, float],
    params: str,
) -> str:
    names = list(table)
    lines = [f"# Scheduling simulation ({params})", "", "| | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---:|" * len(names))
    for column, _, digits in COLUMNS:
        cells = [f"{table[n][column]:.{digits}f}" for n in names]
        lines.append(f"| {column} | " + " | ".join(cells) + " |")
    for kind, _ in KINDS:
        cells = [str(kinds[n][kind]) for n in names]
        lines.append(f"| violations: {kind} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in found.items()]
    return "\n".join(lines) + "\n"


def run(seeds: Sequence[int], experiments: int) -> dict[str, list[Outcome]]:
    outcomes: dict[str, list[Outcome]] = {name: [] for name in STRATEGIES}
    for seed in seeds:
        workload = make(seed, experiments)
        for name, planner in STRATEGIES.items():
            outcomes[name].append(simulate(workload, name, planner))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scheduling", description=__doc__)
    parser.add_argument("--seeds", type=int, default=5, help="workloads to average over")
    parser.add_argument("--experiments", type=int, default=200, help="queued per workload")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args(argv)
    outcomes = run(range(1, args.seeds + 1), args.experiments)
    table = summarise(outcomes)
    found = ratios(table)
    params = f"{args.experiments} experiments, 30 services, mean of {args.seeds} seeds"
    kinds = breakdown(outcomes)
    text = markdown(table, kinds, found, params)
    print(text)
    fp_violations = [v for o in outcomes["faultplane"] for v in o.violations]
    for line in fp_violations[:20]:
        print("VIOLATION (faultplane):", line)
    args.out.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "params": params, "table": table, "violations": kinds, "ratios": found,
    }  # fmt: skip
    (args.out / "scheduling.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "scheduling.md").write_text(text)
    print(f"wrote {args.out / 'scheduling.json'} and {args.out / 'scheduling.md'}")
    return 1 if fp_violations else 0
