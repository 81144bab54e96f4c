"""Replicas: several control servers on one PostgreSQL store (faultplane.replicas).

- Cross-replica activation: create -> ACTIVE (the server's own transition times) on a
  3-replica mesh, where the sidecars are spread over the replicas and the creating
  replica waits for the others' evidence through the store, vs the same on one server
  (SQLite, every sidecar on it).
- Failover: the owner SIGKILLed -> the lifecycle resumed by another replica (the time of
  its "taken over" transition), whose goal is the lease (5 s) plus one renewal period.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench import api
from bench.core import Context, Result
from bench.scenarios.propagation import ABORT
from bench.stats import Goal, Ratio
from faultplane.demo.launcher import HOST, MeshRun
from faultplane.demo.postgres import local_postgres
from faultplane.demo.processes import wait_until
from faultplane.replicas.ownership import LEASE_SECONDS
from faultplane.v1 import faultplane_pb2 as pb

MESH_FILE = Path(__file__).resolve().parents[2] / "envoy-configs" / "mesh.yaml"
SERVICE = "payments-api"
SERVER_ARGS = ("--baseline-min-seconds", "0", "--deadman-ttl", "3")


async def run(ctx: Context, result: Result) -> None:
    reps = ctx.pick(2, 8)
    kills = ctx.pick(1, 3)
    result.params = {"replicas": 3, "activations": reps, "kills": kills}
    single = result.figure("one server: create -> ACTIVE", "ms")
    spread = result.figure("3 replicas: create -> ACTIVE (targets on other replicas)", "ms")
    failover = result.figure(
        "owner SIGKILL -> lifecycle resumed elsewhere",
        "ms",
        goal=Goal("max", "<=", (LEASE_SECONDS * 4 / 3 + 1) * 1000, "lease + a renewal + 1 s"),
    )
    async with MeshRun(MESH_FILE, ctx.dir("single"), server_args=SERVER_ARGS, load=False) as run:
        await _activations(run.api_address, reps, single.samples)
    cluster = local_postgres()
    try:
        url = cluster.create_database()
        async with MeshRun(
            MESH_FILE, ctx.dir("replicas"), server_args=SERVER_ARGS, load=False,
            replicas=3, store_url=url,
        ) as run:  # fmt: skip
            apis = {r.name: f"{HOST}:{r.api_port}" for r in run.replica_plan}
            async with api.connect(apis["r2"]) as client:
                held = {s.replica for s in await client.sidecars(SERVICE)}
            result.note = f"{SERVICE} sidecars held by replicas {sorted(held)}"
            await _activations(apis["r2"], reps, spread.samples)
            for _ in range(kills):
                failover.samples.append(await _failover(run, apis))
    finally:
        cluster.stop()
        cluster.remove()
    result.ratios.append(
        Ratio(
            "3 replicas / one server: create -> ACTIVE p50",
            spread.name,
            single.name,
            spread.stat("p50") / single.stat("p50"),
        )
    )


async def _activations(address: str, reps: int, samples: list[float]) -> None:
    async with api.connect(address) as client:

        async def connected() -> bool:  # anywhere: only the holder shows xDS evidence
            return sum(s.connected for s in await client.sidecars(SERVICE)) >= 4

        await wait_until(connected, 60, f"{SERVICE}'s sidecars")
        for _ in range(reps):
            created = await client.create(api.request(SERVICE, ABORT, 30, max_pods=4))
            active = await client.wait_state(created.id, {pb.ACTIVE})
            went = api.transition_to(active, {pb.ACTIVE})
            samples.append((api.seconds(went.at) - api.seconds(created.created_at)) * 1000)
            await client.abort(created.id)


async def _failover(run: MeshRun, apis: dict[str, str]) -> float:
    async with api.connect(apis["r1"]) as owner:
        created = await owner.create(api.request(SERVICE, ABORT, 60, max_pods=4))
        await owner.wait_state(created.id, {pb.ACTIVE})
    run.replicas["r1"].kill()
    killed = time.time()
    async with api.connect(apis["r2"]) as survivor:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            injection = await survivor.get(created.id)
            taken = [t for t in injection.transitions if "taken over" in t.reason]
            if taken:
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError(f"{created.id} was not taken over")
        await survivor.abort(created.id)
    run.restart_replica("r1", kill=True)
    await wait_until(lambda: api.serving(apis["r1"]), 60, "r1 again", [run.replicas["r1"]])
    return (api.seconds(taken[0].at) - killed) * 1000
