"""The scheduling simulation runs, and its independent checker really checks.

A tiny simulation (one seed, 30 experiments) must give faultplane's packing 0 rule
violations; the checker must catch each kind of violation when one is made on purpose,
and must not load any scheduler module (it would then share the scheduler's bugs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.scheduling import main as bench_main
from bench.scheduling.checker import Started, violations
from bench.scheduling.simulate import simulate
from bench.scheduling.strategies import STRATEGIES
from bench.scheduling.workload import make
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Experiment, Footprint
from faultplane.scheduling.rules import Policy
from faultplane.scheduling.windows import parse_blackout, parse_windows

ROOT = Path(__file__).resolve().parent.parent
T = datetime(2026, 12, 7, 10, tzinfo=UTC)  # Monday


def test_tiny_simulation_packs_with_zero_violations_and_fis_alone_breaks_rules() -> None:
    workload = make(seed=3, experiments=30)
    outcomes = {name: simulate(workload, name, p) for name, p in STRATEGIES.items()}
    for name in ("faultplane", "serial"):
        assert outcomes[name].violations == (), name
    fp = outcomes["faultplane"]
    assert len(fp.runs) + fp.expired + fp.left == 30
    assert fp.makespan_h <= outcomes["serial"].makespan_h
    # The FIS rule alone knows no request paths or limits: the same checker catches it.
    assert outcomes["fis"].violations


def test_bench_entry_writes_its_table_and_exits_zero(tmp_path: Path) -> None:
    assert bench_main.main(["--seeds", "1", "--experiments", "20", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "scheduling.json").read_text())
    assert written["table"]["faultplane"]["rule violations"] == 0
    assert set(written["ratios"]) >= {"makespan serial / faultplane"}
    assert "| rule violations | 0 |" in (tmp_path / "scheduling.md").read_text()


def test_checker_loads_no_scheduler_module() -> None:
    code = (
        "import sys, bench.scheduling.checker\n"
        "print(sorted(m for m in sys.modules if m.startswith('faultplane')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def run(id: str, service: str, start_min: int, minutes: int = 30, **kw: object) -> Started:
    fields: dict[str, object] = {"submitted_at": T, "duration": timedelta(minutes=minutes)}
    fields.update(kw)
    slots = fields.pop("slots", frozenset({(f"{service}-0", "inbound")}))
    exp = Experiment(id, Footprint(frozenset({service}), slots), **fields)  # type: ignore[arg-type]
    return Started(exp, T + timedelta(minutes=start_min))


GRAPH = DependencyGraph.of([("a", "b"), ("b", "c")])
OFFICE = parse_windows([{"weekdays": "Mon-Fri", "hours": "09:00-17:00", "tz": "UTC"}])
WEEKEND = parse_blackout({"name": "weekend", "weekly": "Mon 10:20 - Mon 10:40", "tz": "UTC"})


@pytest.mark.parametrize(
    ("runs", "policy", "expected"),
    [
        ([run("x", "a", 0), run("y", "a", 10)], Policy(),
         "x and y: same sidecar and scope at once"),
        ([run("x", "a", 0), run("y", "c", 29, slots=frozenset())], Policy(graph=GRAPH),
         "x and y: a and c on one request path at once"),
        ([run("x", "a", 0, minutes=5), run("y", "a", 59, minutes=5)],
         Policy(cooldown=timedelta(hours=1)), "x and y: two starts on a within the cool-down"),
        ([run("x", "a", 0), run("y", "d", 5)], Policy(max_fleet=1),
         "2026-12-07 10:05: 2 running, fleet limit 1"),
        ([run("x", "a", 420, minutes=61, windows=OFFICE)], Policy(),
         "x: runs outside its windows"),
        ([run("x", "a", 0)], Policy(blackouts=(WEEKEND,)), "x: meets blackout weekend"),
        ([run("x", "a", 5, not_after=T + timedelta(minutes=5))], Policy(),
         "x: started after its deadline"),
    ],
)  # fmt: skip
def test_checker_catches_each_kind_of_violation(
    runs: list[Started], policy: Policy, expected: str
) -> None:
    assert expected in violations(runs, policy)


def test_checker_passes_a_schedule_that_keeps_every_rule() -> None:
    policy = Policy(timedelta(hours=1), 1, 2, GRAPH, (WEEKEND,))
    runs = [
        run("x", "a", -60, minutes=20, windows=OFFICE),  # ends 09:20
        run("y", "a", 0, minutes=20),  # 60 min later: cool-down kept; ends at the blackout
        run("z", "d", 40, minutes=30, not_after=T + timedelta(minutes=41)),  # after it
        run("w", "c", 40, minutes=30, slots=frozenset({("c-0", "upstream:e")})),
    ]
    assert violations(runs, policy) == []
