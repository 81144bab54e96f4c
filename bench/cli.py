"""`python -m bench [SCENARIO ...] [--quick]`: run the scenarios, print a table, write results.

Scenarios run in an order that keeps the shared 10-sidecar mesh up only while it is
needed (its users first), but are reported in the issue's order. A scenario that fails
is recorded as failed with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import machine, report
from bench.core import Context, Result, Scenario
from bench.procs import Processes, install_safety_net
from bench.sidecars import close_shared_mesh

RESULTS = Path(__file__).resolve().parent / "results"

# name, title, uses the shared mesh; in the order.
SCENARIOS: tuple[tuple[str, str, bool], ...] = (
    ("propagation", "accepted -> ACKed everywhere and seen in traffic, 10 Envoys", True),
    ("fanout", "one change to K simulated sidecars: convergence, RSS, CPU", False),
    ("deadline", "deadline -> withdrawal ACKed", True),
    ("guard", "SLO breach lasting abort_after -> withdrawal ACKed", False),
    ("deadman", "server SIGKILLed -> fault gone from traffic", True),
    ("overhead", "idle fault slots vs none: latency and throughput through Envoy", False),
    ("fidelity", "requested latency / abort % / bandwidth vs measured", True),
    ("peer", "sovereign (REST polling) vs faultplane (gRPC push) on real Envoy", True),
    ("soak", "K streams, 100 injections a minute: RSS flat, nothing left on", False),
    ("replicas", "3 replicas on PostgreSQL: failover, cross-replica activation", False),
    ("replica_fanout", "K simulated sidecars on 1 replica vs 2: convergence, CPU each", False),
)


def load(name: str) -> Scenario:
    for scenario_name, title, uses_mesh in SCENARIOS:
        if scenario_name == name:
            module = importlib.import_module(f"bench.scenarios.{name}")
            return Scenario(name, title, module.run, uses_mesh)
    raise KeyError(name)


def execution_order(names: list[str]) -> list[str]:
    """Mesh users first (so the mesh stops before the heavy standalone scenarios)."""
    uses = {name: mesh for name, _, mesh in SCENARIOS}
    return sorted(names, key=lambda n: (not uses[n], names.index(n)))


async def run_all(names: list[str], quick: bool, work: Path) -> list[Result]:
    results: dict[str, Result] = {}
    with Processes(work / "logs") as procs:
        ctx = Context(quick=quick, work=work, procs=procs)
        try:
            order = execution_order(names)
            for index, name in enumerate(order):
                scenario = load(name)
                result = Result(name, scenario.title)
                print(f"== {name}: {scenario.title}", flush=True)
                started = time.monotonic()
                try:
                    await scenario.run(ctx, result)
                except Exception as exc:  # recorded, and the run goes on
                    result.status = "failed"
                    result.note = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                result.seconds = time.monotonic() - started
                results[name] = result
                print(report.table([result]), flush=True)
                if not any(load(n).uses_mesh for n in order[index + 1 :]):
                    await close_shared_mesh(ctx)
        finally:
            await ctx.close()
    return [results[name] for name in names]


def main(argv: list[str] | None = None) -> None:
    names = [name for name, _, _ in SCENARIOS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(names))
    parser.add_argument("--quick", action="store_true", help="a smoke run, under 3 minutes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--work", type=Path, help="logs and run files (default: a temp dir)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.scenarios if n not in names]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = args.scenarios or names
    install_safety_net()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: the machine is busy (load {load_before[0]:.2f}): numbers will suffer")
    work = args.work or Path(tempfile.mkdtemp(prefix="faultplane-bench-"))
    started_at = datetime.now(UTC)
    started = time.monotonic()
    print(f"faultplane bench ({'quick' if args.quick else 'full'}), logs in {work}", flush=True)
    results = asyncio.run(run_all(chosen, args.quick, work))
    document = {
        "machine": machine.describe(),
        "run": {
            "mode": "quick" if args.quick else "full",
            "scenarios": chosen,
            "started": started_at.isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            # Other work on the machine skews every figure: the 1-minute load average
            # before the run (the harness's own load is in the one after).
            "loadavg_before": round(load_before[0], 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
        },
        "results": {r.scenario: r.to_dict() for r in results},
    }
    report.write(args.out, document, results)
    print()
    print(report.table(results))
    print(f"\nwrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
