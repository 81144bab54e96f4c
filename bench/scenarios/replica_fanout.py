"""Fan-out over replicas: K simulated sidecars (bench.adsload) all held by one replica vs
split evenly over two replicas on one PostgreSQL store (faultplane.replicas); one
injection targeting all K created on r1: accepted -> all 2K ACKs (the owner's ACTIVE
evidence, which with two replicas includes r2's, recorded through the store), the
withdrawal, and the server CPU per sidecar update on each replica (that replica's CPU
over the change / the responses its own sidecars got).

Unlike `fanout`, nothing is pinned: on this 2-core machine the replicas, the simulated
sidecars and PostgreSQL share both cores (a second replica only helps if the cores have
room for it). The dead-man TTL is 30 s as in `fanout`, so lease re-sends stay out of
the change's span.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench import api
from bench.core import Context, Result
from bench.fleet import Fleet
from bench.meshes import placeholder_mesh, write_mesh
from bench.procs import usage
from bench.scenarios.fanout import (
    ABORT,
    CONVERGE_TIMEOUT,
    DEADMAN_TTL,
    SERVICE,
    cpu_share,
)
from bench.stats import Ratio
from faultplane.demo.ports import PortAllocator
from faultplane.demo.postgres import local_postgres
from faultplane.demo.processes import Child, wait_until
from faultplane.demo.replicas import Replica, plan_replicas
from faultplane.v1 import faultplane_pb2 as pb

IDLE_WINDOW = 3.0  # seconds of each replica's idle CPU, with every sidecar held


async def run(ctx: Context, result: Result) -> None:
    k = ctx.pick(100, 1000)
    reps = ctx.pick(1, 3)
    result.params = {"streams": k, "repetitions": reps, "deadman_ttl_s": DEADMAN_TTL}
    cluster = local_postgres()
    converged: dict[int, float] = {}
    try:
        for count in (1, 2):
            url = cluster.create_database()
            converged[count] = await one_layout(ctx, result, url, k, count, reps)
    finally:
        cluster.stop()
        cluster.remove()
    result.ratios.append(
        Ratio(
            f"K={k}: 2 replicas / 1: accepted -> all K ACKed p50",
            "2 replicas",
            "1 replica",
            converged[2] / converged[1],
        )
    )
    result.note = f"K={k} on one PostgreSQL; created on r1; nothing pinned to a core"


async def one_layout(
    ctx: Context,
    result: Result,
    url: str,
    k: int,
    count: int,
    reps: int,
    idle_window: float = IDLE_WINDOW,
) -> float:
    """K sidecars over `count` replicas (r1 holds the first K/count); returns the
    accepted -> all ACKed p50."""
    directory = ctx.dir(f"replica-fanout-{count}")
    mesh = placeholder_mesh(SERVICE, k)
    mesh_file = write_mesh(mesh, directory)
    replicas = plan_replicas(mesh.control, count, PortAllocator())
    servers = [_serve(ctx, replica, mesh_file, url, directory) for replica in replicas]
    fleets: list[Fleet] = []
    label = f"K={k} over {count} replica{'s' if count > 1 else ''}"
    address = f"127.0.0.1:{replicas[0].api_port}"
    try:
        for replica in replicas:
            where = f"127.0.0.1:{replica.api_port}"
            await wait_until(lambda a=where: api.serving(a), 180, replica.name, servers)
        for index, (server, replica) in enumerate(zip(servers, replicas, strict=True)):
            first, last = index * k // count, (index + 1) * k // count
            status = directory / f"load-{replica.name}.json"
            status.unlink(missing_ok=True)
            load = ctx.procs.python(
                f"replica-fanout-{count}-load-{replica.name}", "bench.adsload",
                "--xds", f"127.0.0.1:{replica.xds_port}", "--service", SERVICE,
                "--first", str(first), "--count", str(last - first), "--status", str(status),
            )  # fmt: skip
            xds = f"127.0.0.1:{replica.xds_port}"
            fleets.append(Fleet(server, where, xds, [load], [status]))
        everything: list[Child] = [*servers, *(c for f in fleets for c in f.clients)]

        async def all_synced() -> bool:
            return sum(f.synced() for f in fleets) >= k

        await wait_until(all_synced, 600, f"{k} streams", everything, 0.5)
        converged = result.figure(f"{label}: change accepted -> all K ACKed", "ms")
        withdrawn = result.figure(f"{label}: withdrawal: abort -> all K ACKed", "ms")
        per_update = [
            result.figure(f"{label}: {r.name} CPU per sidecar update (response + ACK)", "us")
            for r in replicas
        ]
        # Each replica's idle CPU (heartbeats, registry publishing, the 2 s resync), taken
        # off the change's span for the second figure.
        idle = [await cpu_share(server.pid, idle_window) / 100 for server in servers]
        net_update = [
            result.figure(f"{label}: {r.name} CPU per sidecar update above idle", "us")
            for r in replicas
        ]
        async with api.connect(address) as client:

            async def connected() -> bool:  # anywhere: only the holder shows xDS status
                return sum(s.connected for s in await client.sidecars(SERVICE)) >= k

            # Every replica's sidecars in r1's view (published through the store).
            await wait_until(connected, 120, f"r1 to see {k} sidecars", everything, 0.2)
            for _ in range(reps):
                cpu0 = [usage(s.pid).cpu_seconds for s in servers]
                span0 = time.monotonic()
                sent0 = [f.responses()[0] for f in fleets]
                async with client.transitions() as transitions:
                    created = await client.create(api.request(SERVICE, ABORT, 3600, max_pods=k))
                    active = await transitions.until(created.id, {pb.ACTIVE}, CONVERGE_TIMEOUT)
                acks = api.acks(api.transition_to(active, {pb.ACTIVE}))
                if acks.bad or acks.count < 2 * k:
                    raise RuntimeError(f"{label}: {acks.count} answers, bad: {acks.bad[:3]}")
                converged.samples.append(
                    (acks.last["rtds"] - api.seconds(created.created_at)) * 1000
                )
                called = time.time()
                aborted = await client.abort(created.id)
                acks = api.acks(api.transition_to(aborted, {pb.ABORTED}))
                withdrawn.samples.append((acks.last["rtds"] - called) * 1000)
                await asyncio.sleep(1.0)  # the status files catch up (written every 0.5 s)
                span = time.monotonic() - span0
                for i, (server, fleet) in enumerate(zip(servers, fleets, strict=True)):
                    sent = max(fleet.responses()[0] - sent0[i], 1)
                    cpu = usage(server.pid).cpu_seconds - cpu0[i]
                    per_update[i].samples.append(cpu / sent * 1e6)
                    net_update[i].samples.append(max(0.0, cpu - idle[i] * span) / sent * 1e6)
        return converged.stat("p50")
    finally:
        for child in [*(c for f in fleets for c in f.clients), *reversed(servers)]:
            ctx.procs.stop(child)


def _serve(ctx: Context, replica: Replica, mesh_file: Path, url: str, directory: Path) -> Child:
    return ctx.procs.python(
        f"replica-fanout-{replica.name}", "faultplane", "serve", "--mesh", str(mesh_file),
        "--auth", "local", "--slos", str(mesh_file.parent / "slos.yaml"),
        "--baseline-min-seconds", "0", "--ack-timeout", "120",
        "--deadman-ttl", str(DEADMAN_TTL), *replica.serve_args(url, directory),
    )  # fmt: skip
