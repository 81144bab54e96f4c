"""7. Fidelity: what was requested versus what traffic through real Envoy measured.

One sidecar (selector shard=s0) gets, in turn: latency p50 200 ms / p99 500 ms (as in the
seed scenario), an abort of 30 % of requests, and a 256 KiB/s bandwidth limit. Latency
is measured as the added delay (faulted percentile minus the same percentile without
the fault); each figure is the error in percent of the requested value. Goal: within 10 %.
"""

from __future__ import annotations

from typing import Any

from bench import api
from bench.core import Context, Result
from bench.sidecars import SidecarMesh, shared_mesh
from bench.stats import Goal, percentile
from bench.traffic import Reply, send
from faultplane.v1 import faultplane_pb2 as pb

LATENCY = {"type": "latency", "p50_ms": 200, "p99_ms": 500}
ABORT = {"type": "abort", "http_status": 418, "percentage": 30}
BANDWIDTH = {"type": "bandwidth", "kbps": 256}
BODY_BYTES = 512 * 1024
GOAL = Goal("max", "<=", 10.0, "max <= 10 %")
TARGET = "bench-0"


async def run(ctx: Context, result: Result) -> None:
    mesh = await shared_mesh(ctx)
    rounds = ctx.pick(1, 3)
    latency_requests = ctx.pick(400, 1000)
    abort_requests = ctx.pick(2000, 4000)
    result.params = {
        "sidecar": TARGET,
        "rounds": rounds,
        "latency": LATENCY,
        "latency_requests": latency_requests,
        "abort": ABORT,
        "abort_requests": abort_requests,
        "bandwidth": BANDWIDTH,
        "bandwidth_body_bytes": BODY_BYTES,
    }
    p50 = result.figure("latency p50 added vs 200 ms: error", "%", goal=GOAL)
    p99 = result.figure("latency p99 added vs 500 ms: error", "%", goal=GOAL)
    aborts = result.figure("abort share vs 30 %: error", "%", goal=GOAL)
    rate = result.figure("bandwidth vs 256 KiB/s: error", "%", goal=GOAL)
    measured: dict[str, list[float]] = {"p50": [], "p99": [], "abort": [], "kibps": []}
    url = mesh.url_of(TARGET, "/fidelity")
    for _ in range(rounds):
        # Concurrency low enough that the app never queues: what is added is the fault.
        base = await send(url, latency_requests // 4, concurrency=2)
        during = await with_fault(mesh, LATENCY, send(url, latency_requests, concurrency=25))
        added_p50 = _pct(during, 50) - _pct(base, 50)
        added_p99 = _pct(during, 99) - _pct(base, 99)
        measured["p50"].append(added_p50)
        measured["p99"].append(added_p99)
        p50.samples.append(abs(added_p50 - 200) / 200 * 100)
        p99.samples.append(abs(added_p99 - 500) / 500 * 100)

        replies = await with_fault(mesh, ABORT, send(url, abort_requests, concurrency=50))
        share = sum(r.status == 418 for r in replies) / len(replies) * 100
        measured["abort"].append(share)
        aborts.samples.append(abs(share - 30) / 30 * 100)

        big = f"{url}?size={BODY_BYTES}"
        unlimited = (await send(big, 1))[0]
        limited = (await with_fault(mesh, BANDWIDTH, send(big, 1)))[0]
        kibps = limited.size / 1024 / max(1e-3, (limited.ms - unlimited.ms) / 1000)
        measured["kibps"].append(kibps)
        rate.samples.append(abs(kibps - 256) / 256 * 100)
    result.note = "measured: " + ", ".join(
        f"{name} {' / '.join(f'{v:.1f}' for v in values)}" for name, values in measured.items()
    )


async def with_fault(mesh: SidecarMesh, fault: dict[str, Any], traffic: Any) -> Any:
    """Run `traffic` (an awaitable) while `fault` is ACTIVE on the target sidecar."""
    async with api.connect(mesh.api) as client, client.transitions() as transitions:
        created = await client.create(
            api.request(mesh.service, fault, 600, max_pods=1, selector="shard=s0")
        )
        if list(created.targets) != [TARGET]:
            raise RuntimeError(f"expected target {TARGET}, got {list(created.targets)}")
        await transitions.until(created.id, {pb.ACTIVE})
        try:
            return await traffic
        finally:
            await client.abort(created.id)


def _pct(replies: list[Reply], q: float) -> float:
    ok = [r.ms for r in replies if r.status == 200]
    return percentile(ok, q)
