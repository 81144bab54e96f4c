"""4. Guard latency: an SLO breach that has lasted `abort_after` -> withdrawal ACKed.
Goal: within one guard tick.

Runs only when `faultplane serve --help` offers `--slos` (the steady-state guard). Its own
mesh of 2 sidecars, with an SLO catalogue of one success-ratio SLO over their inbound
traffic, steady traffic to both, a short baseline, and an abort of every request (503)
guarded by min 0.9 and abort_after 2 s. The server reports when the breach had lasted
abort_after (`breach_limit_at`); the withdrawal's ACKs are in the ABORTED transition.
"""

from __future__ import annotations

import asyncio

import grpc

from bench import api, serverflags
from bench.core import Context, Result
from bench.sidecars import start_mesh
from bench.stats import Goal
from bench.traffic import SteadyLoad
from faultplane.v1 import faultplane_pb2 as pb

SERVICE = "guarded"
SLO = "guarded-success"
TICK = 1.0
ABORT_AFTER = 2.0
BASELINE_SECONDS = 4.0
# The baseline book also records the breaches the benchmark causes; a short window lets
# them age out between repetitions (otherwise the next injection's min is "in the noise").
BASELINE_WINDOW = 6.0
CATALOGUE = f"""slos:
  {SLO}:
    description: inbound requests of {SERVICE} that did not fail
    service: {SERVICE}
    kind: success_ratio
    listener: ingress
    window_seconds: 2
"""


async def run(ctx: Context, result: Result) -> None:
    if not serverflags.has("--slos"):
        result.status = "skipped"
        result.note = "not available yet: `faultplane serve --help` has no --slos (SLO guard)"
        return
    reps = ctx.pick(1, 4)
    directory = ctx.dir("guard")
    # Not slos.yaml: the mesh writer puts its default catalogue there, over this one.
    catalogue = directory / "guard-slos.yaml"
    catalogue.write_text(CATALOGUE)
    args = (
        "--slos",
        str(catalogue),
        "--guard-tick",
        str(TICK),
        "--baseline-min-seconds",
        str(BASELINE_SECONDS),
        "--baseline-window",
        str(BASELINE_WINDOW),
    )
    mesh = await start_mesh(directory, SERVICE, 2, 3.0, args)
    result.params = {
        "sidecars": 2,
        "repetitions": reps,
        "tick_s": TICK,
        "abort_after_s": ABORT_AFTER,
        "slo_window_s": 2,
        "min": 0.9,
    }
    late = result.figure(
        "breach lasted abort_after -> withdrawal ACKed",
        "ms",
        goal=Goal("max", "<=", TICK * 1000, f"<= 1 tick ({TICK * 1000:g} ms)"),
    )
    detected = result.figure("fault on -> breach limit reached", "ms")
    try:
        async with SteadyLoad(mesh.ingress_urls(), rate=40), api.connect(mesh.api) as client:
            await asyncio.sleep(BASELINE_SECONDS + 3 * TICK)
            for _ in range(reps):
                request = api.request(SERVICE, {"type": "abort", "http_status": 503}, 120, 2)
                request.steady_state.slo = SLO
                request.steady_state.min = 0.9
                request.steady_state.abort_after = ABORT_AFTER
                async with client.transitions() as transitions:
                    created = await _create(client, request)
                    active = await transitions.until(created.id, {pb.ACTIVE})
                    ended = await transitions.until(
                        created.id, {pb.ABORTED, pb.COMPLETED, pb.FAILED}, 60
                    )
                if ended.state != pb.ABORTED or not ended.HasField("breach_limit_at"):
                    raise RuntimeError(f"the guard did not abort: {ended.reason}")
                limit = api.seconds(ended.breach_limit_at)
                acks = api.acks(api.transition_to(ended, {pb.ABORTED}))
                late.samples.append((acks.last["rtds"] - limit) * 1000)
                detected.samples.append((limit - api.seconds(active.activated_at)) * 1000)
                await asyncio.sleep(BASELINE_WINDOW + 2 * TICK)  # the breach ages out
    finally:
        mesh.run.stop()
    result.note = "the guard aborts at the first tick at which the breach has lasted abort_after"


async def _create(client: api.Api, request: pb.InjectionRequest) -> pb.Injection:
    """Create, waiting out a baseline that is a tick short of the required history."""
    for attempt in range(10):
        try:
            return await client.create(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or attempt == 9:
                raise
            await asyncio.sleep(TICK)
    raise AssertionError("unreachable")
