"""`faultplane demo`: the whole story on one machine, start to tear-down.

It brings the mesh up with real Envoy sidecars, shows what the control server knows about
them, drives merchant writes through the mesh, and tears everything down again.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from faultplane.client import fault_stub
from faultplane.display import sidecars_table
from faultplane.meshrun.launcher import MeshRun
from faultplane.v1 import faultplane_pb2 as pb

PROGRESS_EVERY = 5.0


async def run_demo(mesh_file: Path, duration: float, as_json: bool) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="faultplane-demo-"))
    say(f"bringing the mesh up from {mesh_file} (logs in {run_dir})")
    async with MeshRun(mesh_file, run_dir) as mesh:
        sidecars = await list_sidecars(mesh.api_address)
        connected = sum(1 for s in sidecars if s.connected)
        say(f"{connected} sidecars connected to the control server at {mesh.api_address}:")
        say(sidecars_table(sidecars))
        say(f"driving merchant writes into payments-api for {duration:.0f}s")
        await drive(mesh, duration)
        final = await mesh.load_stats(stop=True)
        say(f"traffic: {final['requests']} requests, {final['ok']} ok, "
            f"p50 {final['p50_ms']} ms, p99 {final['p99_ms']} ms")  # fmt: skip
    say("mesh torn down")
    summary: dict[str, Any] = {
        "sidecars": connected,
        "requests": final["requests"],
        "ok": final["ok"],
        "p50_ms": final["p50_ms"],
        "p99_ms": final["p99_ms"],
    }
    if as_json:
        print(json.dumps(summary), flush=True)
    healthy = connected == len(mesh.pods) and final["requests"] > 0
    return 0 if healthy and final["ok"] == final["requests"] else 1


async def drive(mesh: MeshRun, duration: float) -> None:
    end = time.monotonic() + duration
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(PROGRESS_EVERY, left))
        stats = await mesh.load_stats()
        say(f"  {stats['requests']} requests, {stats['ok']} ok, p99 {stats['p99_ms']} ms")


async def list_sidecars(api: str) -> list[pb.Sidecar]:
    async with grpc.aio.insecure_channel(api) as channel:
        reply = await fault_stub(channel).ListSidecars(pb.ListSidecarsRequest(), timeout=10)
    return list(reply.sidecars)


def say(text: str) -> None:
    print(text, flush=True)
