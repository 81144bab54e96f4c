"""9. Soak: K simulated sidecars on one server at the default dead-man TTL, injections
created at a steady rate for many minutes, then every one must have ended and no
sidecar may hold a fault.

Each injection takes a fifth of one shard's pods (`shard=sN`, round robin over the ten
shards) for a few seconds, queued if its shard is still busy; one in ten is aborted by
the operator mid-way, the rest end at their deadline. The server's RSS is sampled all
along: after a warm-up (imports, caches, the streams' buffers, and the window of recent
finished injections the server keeps in memory filled: `--keep-finished`, 1,000 by
default, run here with a smaller window that fills in the first minutes) it must stay
flat. The simulated sidecars parse every runtime layer they receive, so
"faults left" is what the sidecars hold, not what the server believes it sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from bench import api
from bench.core import Context, Result
from bench.fleet import Fleet, connect_sidecars, start_server
from bench.meshes import SHARDS
from bench.procs import usage
from bench.stats import Goal
from faultplane.v1 import faultplane_pb2 as pb

SERVICE = "soak"
ABORT = {"type": "abort", "http_status": 503, "percentage": 50}
PER_MINUTE = 100
DURATION_S = 4.0
ABORT_EVERY = 10  # one injection in ten is aborted by the operator
SETTLE_S = 90.0  # after the last creation: its deadline, a queued one's, and the ACKs
ENDED = {pb.COMPLETED, pb.ABORTED, pb.FAILED, pb.EXPIRED}
FLAT = Goal("max", "<=", 5.0, "<= 5 % after warm-up")
NONE_LEFT = Goal("max", "<=", 0.0, "0")


@dataclass
class Tally:
    created: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    aborts: int = 0
    create_ms: list[float] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds in, MB)
    faulted_peak: int = 0  # sidecars holding a fault at once, at the samples


async def run(ctx: Context, result: Result) -> None:
    k = ctx.pick(100, 1000)
    minutes = ctx.pick(0.5, 10.0)
    warm_up, every, keep = ctx.pick((20.0, 5.0, 20), (150.0, 15.0, 200))
    result.params = {
        "streams": k,
        "minutes": minutes,
        "injections_per_minute": PER_MINUTE,
        "duration_s": DURATION_S,
        "fault": ABORT,
        "deadman_ttl_s": "server default (10)",
        "rss_warm_up_s": warm_up,
        "keep_finished": keep,
    }
    fleet = await start_server(
        ctx, "soak", SERVICE, k, ["--ack-timeout", "60", "--keep-finished", str(keep)]
    )
    try:
        await connect_sidecars(ctx, fleet, "soak", SERVICE, k, track_runtime=True)
        tally = Tally()
        cpu0 = usage(fleet.server.pid).cpu_seconds
        async with api.connect(fleet.api) as client:
            sampler = asyncio.create_task(sample(fleet, tally, every))
            try:
                await create_steadily(client, tally, k, minutes * 60)
                await wait_all_ended(client, tally.created, SETTLE_S)
            finally:
                sampler.cancel()
            await asyncio.sleep(1.5)  # the status files catch up (written every 0.5 s)
            stuck = await not_ended(client, tally.created)
        cpu_s = usage(fleet.server.pid).cpu_seconds - cpu0
        report(result, fleet, tally, stuck, minutes * 60, cpu_s, warm_up)
    finally:
        for child in fleet.children():
            ctx.procs.stop(child)


async def create_steadily(client: api.Api, tally: Tally, k: int, seconds: float) -> None:
    """PER_MINUTE injections a minute for `seconds`, on a fixed schedule (a slow call
    does not push the later ones back)."""
    interval = 60.0 / PER_MINUTE
    per_shard = max(1, k // SHARDS // 5)
    started = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    index = 0
    while (due := started + index * interval) < started + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.create_task(one_injection(client, tally, index, per_shard))
        pending.add(task)
        task.add_done_callback(pending.discard)
        index += 1
    if pending:
        await asyncio.gather(*pending)


async def one_injection(client: api.Api, tally: Tally, index: int, per_shard: int) -> None:
    request = api.request(
        SERVICE, ABORT, DURATION_S, per_shard, selector=f"shard=s{index % SHARDS}"
    )
    request.on_conflict = pb.ON_CONFLICT_QUEUE
    called = time.monotonic()
    try:
        created = await client.create(request)
    except grpc.aio.AioRpcError as exc:  # counted: a refusal is a finding, not a crash
        tally.refused.append(f"{exc.code().name}: {exc.details()}")
        return
    tally.create_ms.append((time.monotonic() - called) * 1000)
    tally.created.append(created.id)
    if index % ABORT_EVERY == ABORT_EVERY - 1:
        await asyncio.sleep(DURATION_S / 2)
        await client.abort(created.id)
        tally.aborts += 1


async def sample(fleet: Fleet, tally: Tally, every: float) -> None:
    """The server's RSS, and how many sidecars hold a fault (which shows the sidecars'
    tracking sees faults at all, so that "0 left" means something)."""
    started = time.monotonic()
    while True:
        rss = usage(fleet.server.pid).rss_bytes / 2**20
        tally.rss_mb.append((time.monotonic() - started, rss))
        tally.faulted_peak = max(tally.faulted_peak, fleet.faulted())
        await asyncio.sleep(every)


async def not_ended(client: api.Api, ids: list[str]) -> list[str]:
    """The injections, of `ids`, not in an ended state."""
    stuck = []
    for injection_id in ids:
        injection = await client.get(injection_id)
        if injection.state not in ENDED:
            stuck.append(f"{injection_id} {pb.State.Name(injection.state)}")
    return stuck


async def wait_all_ended(client: api.Api, ids: list[str], timeout: float) -> None:
    """Polls (once a second, a cheap call next to the load) until every injection ended
    or `timeout`; what is left is reported as stuck, not raised."""
    deadline = time.monotonic() + timeout
    remaining = list(ids)
    while remaining and time.monotonic() < deadline:
        remaining = [i for i in remaining if (await client.get(i)).state not in ENDED]
        if remaining:
            await asyncio.sleep(1.0)


def report(
    result: Result,
    fleet: Fleet,
    tally: Tally,
    stuck: list[str],
    seconds: float,
    cpu_s: float,
    warm_up: float,
) -> None:
    warm = [mb for at, mb in tally.rss_mb if at >= warm_up] or [mb for _, mb in tally.rss_mb]
    growth = (max(warm) - warm[0]) / warm[0] * 100 if warm else float("nan")
    k = fleet.synced()
    result.figure("streams held at the end", "streams", samples=[float(k)])
    result.figure("injections created", "count", samples=[float(len(tally.created))])
    result.figure("of which aborted by the operator", "count", samples=[float(tally.aborts)])
    result.figure("creations refused", "count", samples=[float(len(tally.refused))])
    result.figure("CreateInjection call", "ms", samples=tally.create_ms)
    result.figure("server RSS over the run", "MB", samples=[mb for _, mb in tally.rss_mb])
    result.figure("server RSS growth after warm-up", "%", samples=[growth], goal=FLAT)
    result.figure("server CPU over the run", "% core", samples=[cpu_s / seconds * 100])
    result.figure(
        "faults left on sidecars at the end", "sidecars", samples=[float(fleet.faulted())],
        goal=NONE_LEFT,
    )  # fmt: skip
    result.figure(
        "sidecars holding a fault, most at one sample", "sidecars",
        samples=[float(tally.faulted_peak)],
    )  # fmt: skip
    result.figure("injections not ended", "count", samples=[float(len(stuck))], goal=NONE_LEFT)
    notes = []
    if tally.refused:
        notes.append(f"refused: {tally.refused[:3]}")
    if stuck:
        notes.append(f"not ended: {stuck[:5]}")
    result.note = "; ".join(notes)
