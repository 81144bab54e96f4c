"""3. Deadline precision: the injection's deadline (`ends_at`) -> withdrawal sent and ACKed.

The server records no send time in its API, but each sidecar's evidence `at` is when
its ACK of the withdrawal arrived, which is after the send: "deadline -> all ACKed" is
an upper bound of "deadline -> sent". Traffic shows when the fault actually stopped.
"""

from __future__ import annotations

import asyncio
import time

from bench import api
from bench.core import Context, Result
from bench.scenarios.propagation import ABORT, checked
from bench.sidecars import shared_mesh
from bench.stats import Goal
from bench.traffic import Watcher
from faultplane.v1 import faultplane_pb2 as pb

DURATION = 1.0
GOAL = Goal("p99", "<=", 10.0, "p99 <= 10 ms (issue 17: withdrawal ACKed everywhere)")


async def run(ctx: Context, result: Result) -> None:
    mesh = await shared_mesh(ctx)
    reps = ctx.pick(6, 25)
    urls = mesh.ingress_urls()
    result.params = {"sidecars": len(urls), "repetitions": reps, "duration_s": DURATION}
    first = result.figure("deadline -> first withdrawal ACK (quiet)", "ms")
    acked = result.figure("deadline -> all withdrawal ACKs, >= sent (quiet)", "ms", goal=GOAL)
    probed = result.figure("deadline -> all withdrawal ACKs (probed)", "ms")
    cleared = result.figure("deadline -> gone from traffic (probed)", "ms")
    async with api.connect(mesh.api) as client:
        for rep in range(2 * reps):
            watched = urls if rep % 2 else []
            async with client.transitions() as transitions:
                created = await client.create(
                    api.request(mesh.service, ABORT, DURATION, max_pods=len(urls))
                )
                active = await transitions.until(created.id, {pb.ACTIVE})
                ends_at = api.seconds(active.ends_at)
                # Probe from shortly before the deadline only.
                await asyncio.sleep(max(0.0, ends_at - 0.2 - time.time()))
                async with Watcher(watched, _clean, 0.01) as watch:
                    done = await transitions.until(created.id, {pb.COMPLETED}, DURATION + 30)
                    seen = await watch.wait(10)
            transition = api.transition_to(done, {pb.COMPLETED})
            acks = checked(api.acks(transition), 2 * len(urls))
            last = (acks.last["rtds"] - ends_at) * 1000
            if watched:
                probed.samples.append(last)
                cleared.samples.append((max(seen.values()) - ends_at) * 1000)
            else:
                rtds = [api.seconds(e.at) for e in transition.evidence if e.type == "rtds"]
                first.samples.append((min(rtds) - ends_at) * 1000)
                acked.samples.append(last)
    result.note = f"{DURATION:g} s injections on {len(urls)} sidecars; the timer starts at ACTIVE"


def _clean(status: int) -> bool:
    return status == 200
