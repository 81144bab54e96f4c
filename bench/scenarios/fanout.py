"""2. Fan-out: K simulated sidecars (bench.adsload, in processes of their own, one ADS
stream and connection each, ACKing like Envoy) on one control server; one injection
targeting all K, timed from `created_at` to the last ACK; server RSS and CPU.

The mesh has K pods on placeholder ports (nobody listens on them); each simulated
sidecar is one of them, so each is a real target. While a fault is on, the server
re-sends every target's runtime layer every TTL/3 (the dead-man lease): at the default
10 s TTL that is K/3.3 responses per second, which alone takes more than the one core
a Python server has from a few thousand sidecars on; so the fan-out servers run with a
30 s TTL, the "fault on" CPU figure is that steady cost at 30 s, and the upkeep at the
default TTL is computed from the measured cost per re-send.

The server runs on core 0 and the simulated sidecars on core 1 (`taskset`), whose CPU is
reported next to the server's. In the same run, the floor (`bench.floor`: a grpc.aio echo
with no faultplane code, the same simulated sidecars, responses of the mean size
faultplane sent) gives the least CPU per update a Python gRPC server needs here;
faultplane's CPU per update is reported as a ratio to it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import api, floor
from bench.core import Context, Result
from bench.fleet import STREAMS_PER_CLIENT, connect_sidecars, start_server
from bench.procs import usage
from bench.stats import Figure, Goal, Ratio
from faultplane.v1 import faultplane_pb2 as pb

SERVICE = "fleet"
ABORT = {"type": "abort", "http_status": 418}
DEADMAN_TTL = 30.0
DEFAULT_TTL = 10.0  # `faultplane serve`'s default: lease upkeep is reported for it too
CONVERGE_TIMEOUT = 180.0
CONVERGED = Goal("p99", "<=", 2000.0)
# istiod: ~1.5 GB per 1,000-2,000 sidecars, i.e. >= 750 KB each; an order of magnitude less.
PER_STREAM = Goal("max", "<=", 75.0, "<= 75 KB (istiod/10)")
PER_UPDATE = Goal("p99", "<=", 100.0)
LEASES = Goal("p99", "<=", 20.0)


async def run(ctx: Context, result: Result) -> None:
    sizes = ctx.pick([1000], [1000, 5000, 10000])
    reps = ctx.pick(1, 3)  # quick: one change (a lease period is measured in each)
    result.params = {
        "streams": sizes,
        "repetitions": reps,
        "fault": ABORT,
        "deadman_ttl_s": DEADMAN_TTL,
        "streams_per_load_process": STREAMS_PER_CLIENT,
    }
    notes = []
    for k in sizes:
        try:
            notes.append(await one_size(ctx, result, k, reps))
        except (TimeoutError, RuntimeError) as exc:
            notes.append(f"K={k}: FAILED: {type(exc).__name__}: {exc}")
            result.status = "failed"
    result.note = "; ".join(notes)


async def one_size(ctx: Context, result: Result, k: int, reps: int, window: float = 5.0) -> str:
    """One fleet size; `window` is how long CPU shares are sampled."""
    directory = ctx.dir(f"fanout-{k}")
    server_args = ["--ack-timeout", "120", "--deadman-ttl", str(DEADMAN_TTL)]
    fleet = await start_server(ctx, f"fanout-{k}", SERVICE, k, server_args)
    server = fleet.server
    try:
        before = usage(server.pid)
        connect_started = time.monotonic()
        await connect_sidecars(ctx, fleet, f"fanout-{k}", SERVICE, k)
        connected_s = time.monotonic() - connect_started
        await asyncio.sleep(window / 2)
        held = usage(server.pid)
        rss_per_stream = (held.rss_bytes - before.rss_bytes) / k / 1024
        idle_cpu = await cpu_share(server.pid, window / 2)
        result.figure(
            f"K={k}: streams held",
            "streams",
            samples=[float(fleet.synced())],
            goal=Goal("max", ">=", float(k)),
        )
        result.figure(f"K={k}: connect + first sync of all streams", "s", samples=[connected_s])
        result.figure(
            f"K={k}: server RSS per stream", "KB", samples=[rss_per_stream], goal=PER_STREAM
        )
        converged = result.figure(f"K={k}: change accepted -> all K ACKed", "ms", goal=CONVERGED)
        withdrawn = result.figure(f"K={k}: withdrawal: abort -> all K ACKed", "ms")
        change_cpu = result.figure(f"K={k}: server CPU per change (on + off)", "s")
        on_cpu = result.figure(
            f"K={k}: server CPU with the fault on (lease re-sends, TTL {DEADMAN_TTL:g} s)",
            "% core",
        )
        client_cpu = result.figure(f"K={k}: simulated sidecars' CPU per change (on + off)", "s")
        per_update = result.figure(
            f"K={k}: server CPU per sidecar update (response + ACK)", "us", goal=PER_UPDATE
        )
        sizes: list[float] = []
        resends: list[int] = []
        profiler = start_profile(server.pid, directory / f"profile-{k}.txt")
        async with api.connect(fleet.api) as client:
            for _ in range(reps):
                cpu0, load0 = usage(server.pid).cpu_seconds, fleet.client_cpu()
                sent0, bytes0 = fleet.responses()
                async with client.transitions() as transitions:
                    created = await client.create(api.request(SERVICE, ABORT, 3600, max_pods=k))
                    active = await transitions.until(created.id, {pb.ACTIVE}, CONVERGE_TIMEOUT)
                start = api.seconds(created.created_at)
                acks = api.acks(api.transition_to(active, {pb.ACTIVE}))
                if acks.bad or acks.count < 2 * k:
                    raise RuntimeError(f"K={k}: {acks.count} answers, bad: {acks.bad[:3]}")
                converged.samples.append((acks.last["rtds"] - start) * 1000)
                # A whole lease period: every target is re-sent once in it.
                resent0 = fleet.responses()[0]
                on_cpu.samples.append(await cpu_share(server.pid, DEADMAN_TTL / 3))
                await asyncio.sleep(0.6)  # the status files catch up
                resends.append(fleet.responses()[0] - resent0)
                called = time.time()
                aborted = await client.abort(created.id)
                acks = api.acks(api.transition_to(aborted, {pb.ABORTED}))
                withdrawn.samples.append((acks.last["rtds"] - called) * 1000)
                change_cpu.samples.append(usage(server.pid).cpu_seconds - cpu0)
                client_cpu.samples.append(fleet.client_cpu() - load0)
                await asyncio.sleep(1.0)  # the status files catch up (written every 0.5 s)
                # Every response the sidecars got in the span, lease re-sends included,
                # against the server CPU of the same span.
                sent1, bytes1 = fleet.responses()
                sent, size = sent1 - sent0, bytes1 - bytes0
                span_cpu = usage(server.pid).cpu_seconds - cpu0
                per_update.samples.append(span_cpu / max(sent, 1) * 1e6)
                sizes.append(size / max(sent, 1))
                await asyncio.sleep(window / 5)
        stop_profile(profiler)
        peak = usage(server.pid)
        result.figure(
            f"K={k}: server RSS", "MB", samples=[held.rss_bytes / 2**20, peak.rss_bytes / 2**20]
        )
        lease_figures(result, k, on_cpu, resends, idle_cpu)
    finally:
        for child in fleet.children():
            ctx.procs.stop(child)
    size = round(sum(sizes) / len(sizes))
    floor_run = await floor.measure(ctx.procs, directory, k, size)
    result.figure(
        f"K={k}: floor: grpc.aio echo server CPU per update ({size} B)",
        "us",
        samples=[floor_run.server_us],
    )
    result.figure(
        f"K={k}: floor: simulated sidecars' CPU per update", "us", samples=[floor_run.clients_us]
    )
    result.ratios.append(
        Ratio(
            f"K={k}: server CPU per update, faultplane / floor",
            "faultplane p50",
            "grpc.aio echo",
            per_update.stat("p50") / floor_run.server_us,
            "goal <= 2",
        )
    )
    return (
        f"K={k}: idle CPU {idle_cpu:.1f} % of a core; mean response {size} B; RSS "
        f"{before.rss_bytes / 2**20:.0f} MB before streams"
    )


def lease_figures(
    result: Result, k: int, on_cpu: Figure, resends: list[int], idle_cpu: float
) -> None:
    """The CPU of one lease re-send (response + ACK): the "fault on" CPU above idle over
    one lease period (TTL/3), divided by the re-sends the sidecars received in it; and
    what the fleet costs at the default TTL, K / (TTL/3) re-sends a second. Computed
    rather than run at 10 s, where a fleet this size would hold the core and skew the
    convergence figures."""
    period = DEADMAN_TTL / 3
    per_resend = [
        max(0.0, share - idle_cpu) / 100 * period / count * 1e6
        for share, count in zip(on_cpu.samples, resends, strict=True)
        if count >= k / 2  # a period that held (most of) the fleet's re-sends
    ]
    result.figure(f"K={k}: server CPU per lease re-send (response + ACK)", "us", samples=per_resend)
    result.figure(
        f"K={k}: lease upkeep at the default TTL ({DEFAULT_TTL:g} s), from the cost per re-send",
        "% core",
        samples=[us / 1e6 * k / (DEFAULT_TTL / 3) * 100 for us in per_resend],
        goal=LEASES if k >= 10000 else None,
    )


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on the server while the changes run, if `BENCH_PROFILE` is set (collapsed
    stacks in `out`; `python -m bench.profile out` summarises them). Off by default: the
    sampler takes CPU from the two cores it measures."""
    if not os.environ.get("BENCH_PROFILE"):
        return None
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
         "--format", "raw", "--rate", "200", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)


async def cpu_share(pid: int, seconds: float) -> float:
    """Percent of one core `pid` used over the next `seconds`."""
    before = usage(pid).cpu_seconds
    await asyncio.sleep(seconds)
    return (usage(pid).cpu_seconds - before) / seconds * 100
