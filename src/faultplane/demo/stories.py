"""`faultplane demo`: the whole story on one machine, start to tear-down.

It brings the mesh up with real Envoy sidecars and load, then runs two experiments:
1. the seed scenario: 200 ms p50 / 500 ms p99 on payments-api's calls to fraud-scoring
   from at most 3 pods of shard south-1, measured before, during and after (the apps' own
   calls from the targeted pods), withdrawn at its deadline: hypothesis held;
2. 503 on 30 % of payments-api's inbound requests, guarded by merchant-write-success:
   the steady-state guard withdraws it without a human: hypothesis refuted.

With --json, stdout is one JSON document (the summary) and the narration goes to stderr,
so `faultplane demo --json | jq .` works.

With --overlay, the same stories run on sidecars whose listeners, routes and clusters
come from another control plane (the demo's base server, standing in for istiod), with
faultplane as `serve --overlay`: it reaches them only through their fault slots (ECDS)
and its leased runtime layer (RTDS). `upstream: fraud-scoring` is then the Envoy cluster
name the sidecars use for that dependency.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format

from faultplane.cli.connection import fault_stub
from faultplane.cli.tables import (
    baseline_summary,
    injection_detail,
    sidecars_table,
    state_name,
    table,
)
from faultplane.demo.launcher import HOST, MeshRun
from faultplane.slo.quantile import quantile
from faultplane.v1 import faultplane_pb2 as pb

# Calls still being delayed when a phase starts belong to the previous phase.
SETTLE_SECONDS = 0.6
SEED_INJECTION: dict[str, Any] = {
    "target": {
        "service": "payments-api",
        "selector": "shard=south-1",
        "max_pods": 3,
        "upstream": "fraud-scoring",
    },
    "fault": {"type": "latency", "p50_ms": 200, "p99_ms": 500},
    "steady_state": {"slo": "merchant-write-success", "min": 0.995, "abort_after": 60},
    "hypothesis": "fraud-scoring 200ms degradation must not breach merchant-write SLO",
    "owner": "demo@faultplane.local",
}
GUARDED_INJECTION: dict[str, Any] = {
    "target": {"service": "payments-api", "selector": "", "max_pods": 4},
    "fault": {"type": "abort", "http_status": 503, "percentage": 30},
    "duration_seconds": 120,
    "steady_state": {"slo": "merchant-write-success", "min": 0.99, "abort_after": 3},
    "hypothesis": "a 30% burst of 503s from payments-api stays within merchant-write SLO",
    "owner": "demo@faultplane.local",
}


# Where `say` writes: stdout for people, stderr when stdout is the JSON summary. Module
# state, set once per run: the demo is one command, and every step narrates.
_narrate_to_stderr = False


async def run_demo(mesh_file: Path, duration: float, as_json: bool, overlay: bool = False) -> int:
    global _narrate_to_stderr
    _narrate_to_stderr = as_json
    run_dir = Path(tempfile.mkdtemp(prefix="faultplane-demo-"))
    what = "the overlay mesh (base config from another control plane)" if overlay else "the mesh"
    say(f"bringing {what} up from {mesh_file} (logs in {run_dir})")
    server_args = ("--slos", str(mesh_file.parent / "slos.yaml"), "--baseline-min-seconds", "3")
    async with (
        MeshRun(mesh_file, run_dir, server_args=server_args, overlay=overlay) as mesh,
        grpc.aio.insecure_channel(mesh.api_address) as channel,
    ):
        stub = fault_stub(channel)
        sidecars = (await stub.ListSidecars(pb.ListSidecarsRequest(), timeout=10)).sidecars
        connected = sum(1 for s in sidecars if s.connected)
        if mesh.overlay is not None:
            say(f"\nlisteners, routes and clusters from the base control server at "
                f"{mesh.overlay.address}; faultplane serves only the fault layer")  # fmt: skip
        if mesh.web_url:
            say(f"\ndashboard: {mesh.web_url} (the live experiments, and their Abort buttons)")
        say(f"\n{connected} sidecars connected to the control server at {mesh.api_address}:")
        say(sidecars_table(sidecars))
        story = await latency_story(mesh, stub, duration)
        # Nothing so far fails a request on purpose: every merchant write must be ok.
        clean = await mesh.load_stats()
        guarded = await guarded_abort_story(stub)
        final = await mesh.load_stats(stop=True)
        say(f"\ntraffic: {final['requests']} merchant writes, {final['ok']} ok, "
            f"{final['injected']} failed by the injected fault, "
            f"p50 {final['p50_ms']} ms, p99 {final['p99_ms']} ms")  # fmt: skip
    say("mesh torn down")
    summary: dict[str, Any] = {
        "sidecars": connected,
        "requests": clean["requests"],
        "ok": clean["ok"],
        **story,
        "injections": [story["injection"], guarded],
        "guarded_phase": {
            "requests": final["requests"] - clean["requests"],
            "ok": final["ok"] - clean["ok"],
            "failed_by_injection": final["injected"] - clean["injected"],
        },
    }
    if as_json:
        print(json.dumps(summary), flush=True)
    healthy = connected == len(mesh.pods) and 0 < clean["requests"] == clean["ok"]
    held = story["injection"]["verdict"] == "hypothesis held"
    refuted = guarded["verdict"] == "hypothesis refuted"
    # The guarded abort fault fails requests on purpose; no request may fail otherwise.
    only_injected = final["ok"] + final["injected"] == final["requests"]
    return 0 if healthy and held and refuted and only_injected else 1


async def latency_story(mesh: MeshRun, stub: Any, duration: float) -> dict[str, Any]:
    """Before, during and after the seed latency fault; the phases' p50/p99."""
    quiet = max(3.0, duration / 4)
    fault_seconds = max(4.0, duration / 2)
    say(f"\nphase 'before': {quiet:.0f}s of merchant writes, no fault")
    before_start = time.time()
    await asyncio.sleep(quiet)
    before_end = time.time()
    await baseline_ready(stub, SEED_INJECTION["steady_state"]["slo"])

    say(f"\ninjecting {fault_seconds:.0f}s of latency, payments-api -> fraud-scoring")
    document = {**copy.deepcopy(SEED_INJECTION), "duration_seconds": fault_seconds}
    request = json_format.ParseDict(document, pb.InjectionRequest())
    injection = await follow_to_end(stub, request, fault_seconds + 30)

    say(f"\nphase 'after': {quiet:.0f}s of merchant writes once the fault is gone")
    await asyncio.sleep(quiet + SETTLE_SECONDS)
    windows = {
        "before": (before_start, before_end),
        "during": (_seconds(injection.activated_at) + SETTLE_SECONDS, _seconds(injection.ends_at)),
        "after": (_seconds(injection.ended_at) + SETTLE_SECONDS, time.time()),
    }
    phases = {
        name: await calls_to(mesh, injection.targets, "fraud-scoring", *window)
        for name, window in windows.items()
    }
    say("\npayments-api -> fraud-scoring calls from the targeted pods:")
    rows = [
        [name, str(p["calls"]), str(p["p50_ms"]), str(p["p99_ms"])] for name, p in phases.items()
    ]
    say(table(["PHASE", "CALLS", "P50 MS", "P99 MS"], rows))
    return {"injection": summary_of(injection), "phases": phases}


async def guarded_abort_story(stub: Any) -> dict[str, Any]:
    """An abort fault that breaks the SLO: the guard withdraws it without a human."""
    steady = GUARDED_INJECTION["steady_state"]
    baseline = await stub.GetBaseline(pb.GetBaselineRequest(slo=steady["slo"]), timeout=10)
    say("\nbaseline pre-flight, what fine looks like:\n" + baseline_summary(baseline))
    say(f"\ninjecting 503 on 30% of payments-api inbound, guarded by {steady['slo']} >= "
        f"{steady['min']} (abort after {steady['abort_after']}s of breach)")  # fmt: skip
    request = json_format.ParseDict(copy.deepcopy(GUARDED_INJECTION), pb.InjectionRequest())
    injection = await follow_to_end(stub, request, GUARDED_INJECTION["duration_seconds"] + 30)
    abort_latency_ms = None
    if injection.HasField("breach_limit_at"):
        late = _seconds(injection.ended_at) - _seconds(injection.breach_limit_at)
        abort_latency_ms = round(late * 1000, 1)
        say(f"\nwithdrawn, and ACKed by every target, {abort_latency_ms} ms after the breach "
            "had lasted abort_after")  # fmt: skip
    return summary_of(injection, abort_latency_ms=abort_latency_ms)


async def baseline_ready(stub: Any, slo: str, timeout: float = 60.0) -> None:
    """Wait until the SLO has the baseline history the pre-flight asks for."""
    deadline = time.monotonic() + timeout
    while True:
        baseline = await stub.GetBaseline(pb.GetBaselineRequest(slo=slo), timeout=10)
        if baseline.seconds_covered >= baseline.required_seconds:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{slo} has only {baseline.seconds_covered:.0f}s of baseline")
        await asyncio.sleep(0.5)


async def follow_to_end(stub: Any, request: pb.InjectionRequest, timeout: float) -> pb.Injection:
    """Create the injection, print each transition as it happens, return it once ended."""
    events = stub.WatchInjections(pb.WatchInjectionsRequest())
    await events.initial_metadata()  # subscribed: no transition can slip past
    created = await stub.CreateInjection(request, timeout=10)
    say(f"  {created.id}")

    async def until_ended() -> pb.Injection:
        async for event in events:
            if event.injection.id != created.id:
                continue
            change = event.transition
            moved = f"{state_name(change.from_state)} -> {state_name(change.to_state)}"
            say(f"  {moved}: {change.reason}")
            if event.injection.state in (pb.COMPLETED, pb.ABORTED, pb.FAILED):
                return event.injection
        raise RuntimeError(f"the watch ended before {created.id} did")

    try:
        injection = await asyncio.wait_for(until_ended(), timeout)
    finally:
        events.cancel()
    say("\n" + injection_detail(injection))
    return injection


def summary_of(injection: pb.Injection, **extra: Any) -> dict[str, Any]:
    return {
        "id": injection.id,
        "state": pb.State.Name(injection.state),
        "verdict": injection.verdict,
        "targets": list(injection.targets),
        **extra,
    }


async def calls_to(
    mesh: MeshRun, pods: Any, dependency: str, since: float, until: float
) -> dict[str, Any]:
    """p50/p99 of the pods' calls to `dependency` that ended within [since, until]."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        for name in pods:
            pod = mesh.mesh.pod(name) if mesh.mesh else None
            assert pod is not None
            url = f"http://{HOST}:{pod.ports.app}/calls"
            params = {"dependency": dependency, "since": str(since), "until": str(until)}
            async with session.get(url, params=params) as response:
                latencies += (await response.json())["latencies_ms"]
    ordered = sorted(latencies)
    return {
        "calls": len(ordered),
        "p50_ms": quantile(ordered, 0.50, digits=1),
        "p99_ms": quantile(ordered, 0.99, digits=1),
    }


def _seconds(stamp: Any) -> float:
    return stamp.ToNanoseconds() / 1e9


def say(text: str) -> None:
    print(text, file=sys.stderr if _narrate_to_stderr else sys.stdout, flush=True)
