"""`faultplane demo`: the whole story on one machine, start to tear-down.

It brings the mesh up with real Envoy sidecars and load, measures payments-api's calls to
fraud-scoring, injects the latency fault of the seed scenario (shard south-1, max 3 pods,
p50 200 ms / p99 500 ms) for a short duration, shows it live, lets the deadline withdraw
it, measures again, and tears everything down. Latencies are the apps' own calls through
their sidecars, from the targeted pods only.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format

from faultplane.client import fault_stub
from faultplane.display import injection_detail, sidecars_table, state_name, table
from faultplane.meshrun.launcher import HOST, MeshRun
from faultplane.stats import quantile
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


async def run_demo(mesh_file: Path, duration: float, as_json: bool) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="faultplane-demo-"))
    say(f"bringing the mesh up from {mesh_file} (logs in {run_dir})")
    async with (
        MeshRun(mesh_file, run_dir) as mesh,
        grpc.aio.insecure_channel(mesh.api_address) as channel,
    ):
        stub = fault_stub(channel)
        sidecars = (await stub.ListSidecars(pb.ListSidecarsRequest(), timeout=10)).sidecars
        connected = sum(1 for s in sidecars if s.connected)
        say(f"\n{connected} sidecars connected to the control server at {mesh.api_address}:")
        say(sidecars_table(sidecars))
        story = await latency_story(mesh, stub, duration)
        final = await mesh.load_stats(stop=True)
        say(f"\ntraffic: {final['requests']} merchant writes, {final['ok']} ok, "
            f"p50 {final['p50_ms']} ms, p99 {final['p99_ms']} ms")  # fmt: skip
    say("mesh torn down")
    summary: dict[str, Any] = {
        "sidecars": connected,
        "requests": final["requests"],
        "ok": final["ok"],
        **story,
    }
    if as_json:
        print(json.dumps(summary), flush=True)
    healthy = connected == len(mesh.pods) and final["requests"] > 0
    completed = story["injection"]["state"] == "COMPLETED"
    return 0 if healthy and completed and final["ok"] == final["requests"] else 1


async def latency_story(mesh: MeshRun, stub: Any, duration: float) -> dict[str, Any]:
    """Before, during and after the seed latency fault; the phases' p50/p99."""
    quiet = max(3.0, duration / 4)
    fault_seconds = max(4.0, duration / 2)
    loop = asyncio.get_running_loop()
    say(f"\nphase 'before': {quiet:.0f}s of merchant writes, no fault")
    before_start = time.time()
    await asyncio.sleep(quiet)
    before_end = time.time()

    request = json_format.ParseDict(
        {**copy.deepcopy(SEED_INJECTION), "duration_seconds": fault_seconds}, pb.InjectionRequest()
    )
    events = stub.WatchInjections(pb.WatchInjectionsRequest())
    await events.initial_metadata()
    created = await stub.CreateInjection(request, timeout=10)
    say(f"\ninjecting {fault_seconds:.0f}s of latency, payments-api -> fraud-scoring: {created.id}")
    ended = loop.create_future()

    async def follow() -> None:
        async for event in events:
            if event.injection.id != created.id:
                continue
            change = event.transition
            moved = f"{state_name(change.from_state)} -> {state_name(change.to_state)}"
            say(f"  {moved}: {change.reason}")
            if event.injection.state in (pb.COMPLETED, pb.ABORTED, pb.FAILED):
                ended.set_result(event.injection)
                return

    follower = asyncio.create_task(follow())
    try:
        injection: pb.Injection = await asyncio.wait_for(ended, fault_seconds + 30)
    finally:
        follower.cancel()
        events.cancel()
    say("\n" + injection_detail(injection))

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
    return {
        "injection": {
            "id": injection.id,
            "state": pb.State.Name(injection.state),
            "targets": list(injection.targets),
        },
        "phases": phases,
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
    print(text, flush=True)
