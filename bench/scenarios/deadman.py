"""5. Dead-man: the control server is SIGKILLed while a fault is on -> fault gone from
traffic, through the RTDS lease running out on every sidecar. Goal: <= TTL + 1 s.

The kill lands at a random point of the lease cycle (leases are re-sent every TTL/3), and
a fresh server is started afterwards; the sidecars reconnect to it before the next round.
"""

from __future__ import annotations

import asyncio
import random
import time

from bench import api
from bench.core import Context, Result
from bench.scenarios.propagation import ABORT
from bench.sidecars import shared_mesh
from bench.stats import Goal
from bench.traffic import Watcher
from faultplane.v1 import faultplane_pb2 as pb


async def run(ctx: Context, result: Result) -> None:
    mesh = await shared_mesh(ctx)
    reps = ctx.pick(2, 6)
    ttl = mesh.deadman_ttl
    urls = mesh.ingress_urls()
    result.params = {"sidecars": len(urls), "repetitions": reps, "deadman_ttl_s": ttl}
    gone = result.figure(
        "SIGKILL -> fault gone from traffic (all sidecars)",
        "ms",
        goal=Goal("max", "<=", (ttl + 1) * 1000, f"max <= TTL + 1 s = {(ttl + 1) * 1000:g} ms"),
    )
    first = result.figure("SIGKILL -> fault gone (first sidecar)", "ms")
    rng = random.Random(6)
    for _ in range(reps):
        async with api.connect(mesh.api) as client, client.transitions() as transitions:
            created = await client.create(
                # Short enough that a resumed copy (restart survival) cannot linger.
                api.request(mesh.service, ABORT, ttl * 4 + 5, max_pods=len(urls))
            )
            await transitions.until(created.id, {pb.ACTIVE})
        await asyncio.sleep(rng.uniform(0, ttl / 3))
        async with Watcher(urls, _clean, 0.02) as watch:
            assert mesh.run.server is not None
            mesh.run.server.kill()
            killed = time.time()
            seen = await watch.wait(ttl + 10)
        gone.samples.append((max(seen.values()) - killed) * 1000)
        first.samples.append((min(seen.values()) - killed) * 1000)
        await mesh.restart_server()
        async with api.connect(mesh.api) as client:
            await client.abort_all()  # a restarted server may resume the injection
    alive = all(p.envoy.alive() for p in mesh.run.pods)
    result.note = f"TTL {ttl:g} s; every Envoy still running afterwards: {alive}"


def _clean(status: int) -> bool:
    return status == 200
