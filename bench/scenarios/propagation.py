"""1. Propagation: CreateInjection accepted -> every target ACKed the activation, and the
fault seen in traffic; then the same for withdrawal. 10 real Envoy sidecars.

The fault is an abort with a status the app never answers (418) on every sidecar's
inbound route, so a probe sees it the moment it is live. Times come from the server's
own records: `created_at` and each sidecar's evidence `at` (when the server saw its
ACK). Traffic times are when the first 418 (then the first 200) came back from each
sidecar, probed every 10 ms per sidecar. The probes (1,000 requests/s through ten
Python apps) compete for the same two cores, so ACK times are measured twice: in quiet
repetitions, and under the probes.
"""

from __future__ import annotations

import time

from bench import api
from bench.core import Context, Result
from bench.sidecars import SidecarMesh, shared_mesh
from bench.stats import Figure, Goal
from bench.traffic import Watcher
from faultplane.v1 import faultplane_pb2 as pb

ABORT = {"type": "abort", "http_status": 418}
GOAL = Goal("p99", "<=", 50.0)
# Issue 17's goals: every target ACKed within 15 ms, seen in traffic within 20 ms.
ACKED = Goal("p99", "<=", 15.0)
SEEN = Goal("p99", "<=", 20.0)
PROBE_INTERVAL = 0.01


async def run(ctx: Context, result: Result) -> None:
    mesh = await shared_mesh(ctx)
    reps = ctx.pick(6, 25)
    urls = mesh.ingress_urls()
    result.params = {
        "sidecars": len(urls),
        "repetitions": reps,
        "fault": ABORT,
        "probe_interval_ms": PROBE_INTERVAL * 1000,
    }
    quiet: dict[str, Figure] = {
        "armed": result.figure("activation: accepted -> RDS ACKed (quiet)", "ms"),
        "acked": result.figure("activation: accepted -> all ACKed (quiet)", "ms", goal=ACKED),
        "withdrawn": result.figure("withdrawal: abort -> all ACKed (quiet)", "ms", goal=GOAL),
    }
    admitted = result.figure("CreateInjection call -> accepted (created_at)", "ms")
    probed: dict[str, Figure] = {
        "admitted": admitted,
        "armed": result.figure("activation: accepted -> RDS ACKed (probed)", "ms"),
        "acked": result.figure("activation: accepted -> all ACKed (probed)", "ms", goal=ACKED),
        "seen": result.figure("activation: accepted -> seen in traffic", "ms", goal=SEEN),
        "withdrawn": result.figure("withdrawal: abort -> all ACKed (probed)", "ms", goal=GOAL),
        "cleared": result.figure("withdrawal: abort -> gone from traffic", "ms", goal=GOAL),
    }
    async with api.connect(mesh.api) as client:
        for _ in range(reps):
            await one(client, mesh, urls, quiet, probe=False)
            await one(client, mesh, urls, probed, probe=True)
    result.note = (
        "activation = arm (RDS) then switch on (RTDS), each waiting for every ACK; "
        "withdrawal = RTDS off, then RDS"
    )


async def one(
    client: api.Api, mesh: SidecarMesh, urls: list[str], figures: dict[str, Figure], probe: bool
) -> None:
    watched = urls if probe else []
    async with client.transitions() as transitions, Watcher(watched, _faulted, PROBE_INTERVAL) as w:
        called = time.time()
        created = await client.create(api.request(mesh.service, ABORT, 600, max_pods=len(urls)))
        active = await transitions.until(created.id, {pb.ACTIVE})
        first_seen = await w.wait(10)
    start = api.seconds(created.created_at)
    if "admitted" in figures:
        figures["admitted"].samples.append((start - called) * 1000)
    acks = checked(api.acks(api.transition_to(active, {pb.ACTIVE})), 2 * len(urls))
    figures["armed"].samples.append((acks.last["rds"] - start) * 1000)
    figures["acked"].samples.append((acks.last["rtds"] - start) * 1000)
    if probe:
        figures["seen"].samples.append((max(first_seen.values()) - start) * 1000)

    async with Watcher(watched, _clean, PROBE_INTERVAL) as watch:
        called = time.time()
        aborted = await client.abort(created.id)
        first_clean = await watch.wait(10)
    acks = checked(api.acks(api.transition_to(aborted, {pb.ABORTED})), 2 * len(urls))
    figures["withdrawn"].samples.append((acks.last["rtds"] - called) * 1000)
    if probe:
        figures["cleared"].samples.append((max(first_clean.values()) - called) * 1000)


def _faulted(status: int) -> bool:
    return status == 418


def _clean(status: int) -> bool:
    return status == 200


def checked(acks: api.Acks, expected: int) -> api.Acks:
    if acks.bad or acks.count < expected:
        raise RuntimeError(f"expected {expected} ACKs, got {acks.count}: {acks.bad[:3]}")
    return acks
