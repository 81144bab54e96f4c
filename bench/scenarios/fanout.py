"""2. Fan-out: K simulated sidecars (bench.adsload, in processes of their own, one ADS
stream and connection each, ACKing like Envoy) on one control server; one injection
targeting all K, timed from `created_at` to the last ACK; server RSS and CPU.

The mesh has K pods on placeholder ports (nobody listens on them); each simulated
sidecar is one of them, so each is a real target. While a fault is on, the server
re-sends every target's runtime layer every TTL/3 (the dead-man lease): at the default
10 s TTL that is K/3.3 responses per second, which alone takes more than the one core
a Python server has from about 4,000 sidecars on; so the fan-out servers run with a
30 s TTL, and the "fault on" CPU figure is that steady cost at 30 s.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from bench import api, serverflags
from bench.core import Context, Result
from bench.meshes import placeholder_mesh, write_mesh
from bench.procs import usage
from bench.stats import Goal
from faultplane.demo.processes import Child, wait_until
from faultplane.v1 import faultplane_pb2 as pb

SERVICE = "fleet"
ABORT = {"type": "abort", "http_status": 418}
STREAMS_PER_CLIENT = 2500
DEADMAN_TTL = 30.0
CONVERGE_TIMEOUT = 180.0
CONVERGED = Goal("p99", "<=", 2000.0)
# istiod: ~1.5 GB per 1,000-2,000 sidecars, i.e. >= 750 KB each; an order of magnitude less.
PER_STREAM = Goal("max", "<=", 75.0, "<= 75 KB (istiod/10)")


@dataclass
class Fleet:
    server: Child
    clients: list[Child]
    status_files: list[Path]
    api: str

    def synced(self) -> int:
        total = 0
        for path in self.status_files:
            if path.exists():
                total += int(json.loads(path.read_text())["synced"])
        return total

    def client_cpu(self) -> float:
        return sum(usage(c.pid).cpu_seconds for c in self.clients if c.alive())


async def run(ctx: Context, result: Result) -> None:
    sizes = ctx.pick([1000], [1000, 5000, 10000])
    reps = ctx.pick(2, 3)
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
    mesh = placeholder_mesh(SERVICE, k)
    mesh_file = write_mesh(mesh, directory)
    control = mesh.control
    server = ctx.procs.python(
        f"fanout-{k}-server",
        "faultplane",
        "serve",
        "--mesh",
        str(mesh_file),
        "--ack-timeout",
        "120",
        "--deadman-ttl",
        str(DEADMAN_TTL),
        *serverflags.standalone_args(directory),
    )
    fleet = Fleet(server, [], [], f"127.0.0.1:{control.api_port}")
    try:
        await wait_until(lambda: api.serving(fleet.api), 180, "fan-out server", [server])
        before = usage(server.pid)
        connect_started = time.monotonic()
        clients = max(1, math.ceil(k / STREAMS_PER_CLIENT))
        for index in range(clients):
            first, count = index * k // clients, (index + 1) * k // clients - index * k // clients
            status = directory / f"load-{index}.json"
            status.unlink(missing_ok=True)
            fleet.status_files.append(status)
            fleet.clients.append(
                ctx.procs.python(
                    f"fanout-{k}-load-{index}",
                    "bench.adsload",
                    "--xds",
                    f"127.0.0.1:{control.xds_port}",
                    "--service",
                    SERVICE,
                    "--first",
                    str(first),
                    "--count",
                    str(count),
                    "--status",
                    str(status),
                )
            )

        async def all_synced() -> bool:
            return fleet.synced() >= k

        await wait_until(all_synced, 900, f"{k} streams", [server, *fleet.clients], 0.5)
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
        on_cpu = result.figure(f"K={k}: server CPU with the fault on (lease re-sends)", "% core")
        client_cpu = 0.0
        async with api.connect(fleet.api) as client:
            for _ in range(reps):
                cpu0, load0 = usage(server.pid).cpu_seconds, fleet.client_cpu()
                async with client.transitions() as transitions:
                    created = await client.create(api.request(SERVICE, ABORT, 3600, max_pods=k))
                    active = await transitions.until(created.id, {pb.ACTIVE}, CONVERGE_TIMEOUT)
                start = api.seconds(created.created_at)
                acks = api.acks(api.transition_to(active, {pb.ACTIVE}))
                if acks.bad or acks.count < 2 * k:
                    raise RuntimeError(f"K={k}: {acks.count} answers, bad: {acks.bad[:3]}")
                converged.samples.append((acks.last["rtds"] - start) * 1000)
                on_cpu.samples.append(await cpu_share(server.pid, window))
                called = time.time()
                aborted = await client.abort(created.id)
                acks = api.acks(api.transition_to(aborted, {pb.ABORTED}))
                withdrawn.samples.append((acks.last["rtds"] - called) * 1000)
                change_cpu.samples.append(usage(server.pid).cpu_seconds - cpu0)
                client_cpu += fleet.client_cpu() - load0
                await asyncio.sleep(window / 5)
        peak = usage(server.pid)
        result.figure(
            f"K={k}: server RSS", "MB", samples=[held.rss_bytes / 2**20, peak.rss_bytes / 2**20]
        )
        return (
            f"K={k}: idle CPU {idle_cpu:.1f} % of a core; load clients used "
            f"{client_cpu / reps:.1f} CPU-s per change; RSS {before.rss_bytes / 2**20:.0f} MB "
            f"before streams"
        )
    finally:
        for child in [*fleet.clients, server]:
            ctx.procs.stop(child)


async def cpu_share(pid: int, seconds: float) -> float:
    """Percent of one core `pid` used over the next `seconds`."""
    before = usage(pid).cpu_seconds
    await asyncio.sleep(seconds)
    return (usage(pid).cpu_seconds - before) / seconds * 100
