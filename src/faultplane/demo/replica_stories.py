"""`faultplane demo --replicas N`: the demo's two stories on N control-server replicas
sharing one PostgreSQL store, with the latency experiment's owner SIGKILLed mid-way.

1. The seed latency experiment is created on replica r1, which then dies (SIGKILL: no
   withdrawal, no goodbye). A surviving replica takes its lifecycle over once r1's lease
   expires, puts the fault back, and ends it at its deadline; r1's sidecars reconnect to
   the survivors (every bootstrap lists every replica). Followed from replica r2, which
   reads it from the store.
2. The guarded 503 experiment runs on r2: the guard withdraws it, as with one server.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from faultplane.cli.connection import fault_stub
from faultplane.cli.tables import injection_detail, sidecars_table, state_name
from faultplane.demo import stories
from faultplane.demo.launcher import HOST, MeshRun
from faultplane.demo.stories import (
    SEED_INJECTION,
    SETTLE_SECONDS,
    baseline_ready,
    calls_to,
    guarded_abort_story,
    say,
    summary_of,
)
from faultplane.v1 import faultplane_pb2 as pb

ENDED = (pb.COMPLETED, pb.ABORTED, pb.FAILED)
POLL_SECONDS = 0.5
# Long enough for the owner's lease to expire and a survivor to take over well before
# the deadline (faultplane.replicas.ownership.LEASE_SECONDS plus a heartbeat or two).
MIN_FAULT_SECONDS = 20.0


async def run_replica_demo(
    mesh_file: Path, duration: float, as_json: bool, replicas: int, store_url: str
) -> int:
    stories._narrate_to_stderr = as_json
    run_dir = Path(tempfile.mkdtemp(prefix="faultplane-demo-"))
    say(f"bringing the mesh up with {replicas} control-server replicas on one PostgreSQL "
        f"store (logs in {run_dir})")  # fmt: skip
    server_args = ("--slos", str(mesh_file.parent / "slos.yaml"), "--baseline-min-seconds", "3")
    async with MeshRun(
        mesh_file, run_dir, server_args=server_args, replicas=replicas, store_url=store_url
    ) as mesh:
        apis = {r.name: f"{HOST}:{r.api_port}" for r in mesh.replica_plan}
        async with (
            grpc.aio.insecure_channel(apis["r1"]) as first,
            grpc.aio.insecure_channel(apis["r2"]) as second,
        ):
            stub1, stub2 = fault_stub(first), fault_stub(second)
            sidecars = (await stub2.ListSidecars(pb.ListSidecarsRequest(), timeout=10)).sidecars
            connected = sum(1 for s in sidecars if s.connected)
            held_by = {s.node_id: s.replica for s in sidecars}
            say(f"\n{connected} sidecars, spread over replicas {sorted(set(held_by.values()))}:")
            say(sidecars_table(sidecars))
            story = await failover_story(mesh, stub1, stub2, duration)
            clean = await mesh.load_stats()
            guarded = await guarded_abort_story(stub2)
            final = await mesh.load_stats(stop=True)
        say(f"\ntraffic: {final['requests']} merchant writes, {final['ok']} ok, "
            f"{final['injected']} failed by the injected fault")  # fmt: skip
    say("mesh torn down")
    summary: dict[str, Any] = {
        "replicas": replicas,
        "sidecars": connected,
        "requests": clean["requests"],
        "ok": clean["ok"],
        **story,
        "injections": [story["injection"], guarded],
    }
    if as_json:
        print(json.dumps(summary), flush=True)
    healthy = connected == len(mesh.pods) and 0 < clean["requests"] == clean["ok"]
    held = story["injection"]["verdict"] == "hypothesis held"
    refuted = guarded["verdict"] == "hypothesis refuted"
    only_injected = final["ok"] + final["injected"] == final["requests"]
    return 0 if healthy and held and refuted and only_injected and story["taken_over"] else 1


async def failover_story(
    mesh: MeshRun, owner: Any, survivor: Any, duration: float
) -> dict[str, Any]:
    """The seed latency experiment created on r1, r1 SIGKILLed while it runs."""
    quiet = max(3.0, duration / 4)
    fault_seconds = max(MIN_FAULT_SECONDS, duration)
    say(f"\nphase 'before': {quiet:.0f}s of merchant writes, no fault")
    before = (time.time(), time.time() + quiet)
    await asyncio.sleep(quiet)
    await baseline_ready(owner, SEED_INJECTION["steady_state"]["slo"])

    say(f"\ninjecting {fault_seconds:.0f}s of latency on replica r1, payments-api -> fraud-scoring")
    document = {**copy.deepcopy(SEED_INJECTION), "duration_seconds": fault_seconds}
    created = await owner.CreateInjection(json_format.ParseDict(document, pb.InjectionRequest()))
    active = await poll(survivor, created.id, lambda i: i.state != pb.PENDING, 60)
    say(f"  {created.id}: {state_name(active.state)}")
    await asyncio.sleep(fault_seconds / 4)
    mesh.replicas["r1"].kill()
    killed = time.time()
    say(f"\nSIGKILLed replica r1, the experiment's owner, {fault_seconds / 4:.0f}s into it")
    injection = await poll(survivor, created.id, lambda i: i.state in ENDED, fault_seconds + 60)
    takeover = next((t for t in injection.transitions if "taken over" in t.reason), None)
    if takeover is not None:
        at = takeover.at.ToNanoseconds() / 1e9
        say(f"taken over {at - killed:.1f}s after the SIGKILL: {takeover.reason}")
    say("\n" + injection_detail(injection))
    say(f"\nphase 'after': {quiet:.0f}s of merchant writes once the fault is gone")
    await asyncio.sleep(quiet + SETTLE_SECONDS)
    stamp = lambda s: s.ToNanoseconds() / 1e9  # noqa: E731
    windows = {
        "before": before,
        "during": (stamp(injection.activated_at) + SETTLE_SECONDS, stamp(injection.ends_at)),
        "after": (stamp(injection.ended_at) + SETTLE_SECONDS, time.time()),
    }
    phases = {
        name: await calls_to(mesh, injection.targets, "fraud-scoring", *window)
        for name, window in windows.items()
    }
    return {
        "injection": summary_of(injection),
        "phases": phases,
        "taken_over": takeover is not None,
        "takeover_seconds": round(takeover.at.ToNanoseconds() / 1e9 - killed, 1)
        if takeover is not None
        else None,
    }


async def poll(stub: Any, injection_id: str, done: Any, timeout: float) -> pb.Injection:
    """GetInjection until `done(injection)` (read from the store by a non-owner)."""
    deadline = time.monotonic() + timeout
    while True:
        injection = await stub.GetInjection(pb.GetInjectionRequest(id=injection_id), timeout=10)
        if done(injection):
            return injection
        if time.monotonic() > deadline:
            raise TimeoutError(f"{injection_id} is still {state_name(injection.state)}")
        await asyncio.sleep(POLL_SECONDS)
