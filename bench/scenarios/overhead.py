"""6. Data-plane overhead of idle fault slots: one Envoy, two listeners identical but for
the four no-op fault filters faultplane puts in every HTTP connection manager, both
routing to a second Envoy that answers directly (no Python in the path).

Both listeners are built by faultplane's own resource builder (`sidecar_resources` with 4
slots and with 0), with the route inlined instead of fetched by RDS. Latency: requests
to the two listeners alternate pair by pair at a fixed rate over two keep-alive
connections, timed with a minimal client; each round gives the p50 (and p99) overhead
in percent. Throughput: wrk, closed loop, alternating listeners.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from bench.core import Context, Result
from bench.http1 import Connection
from bench.meshes import real_mesh
from bench.stats import Goal, percentile
from bench.tools import ensure
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import envoy_binary, wait_until
from faultplane.render.resources import INGRESS, LOCAL_APP_CLUSTER, SidecarLayout, sidecar_resources
from faultplane.xds import types

SLOTS = 4
GOAL = Goal("p50", "<", 2.0, "p50 < 2 %")


async def run(ctx: Context, result: Result) -> None:
    rounds = ctx.pick(3, 10)
    seconds = ctx.pick(2.0, 4.0)
    rate = 500  # pairs per second: 1,000 requests/s in all
    directory = ctx.dir("overhead")
    ports = PortAllocator()
    backend_port, slots_port, bare_port = ports(), ports(), ports()
    backend = ctx.procs.spawn(
        "overhead-backend",
        envoy_argv(write(directory / "backend.json", backend_bootstrap(backend_port, ports()))),
    )
    proxy = ctx.procs.spawn(
        "overhead-proxy",
        envoy_argv(
            write(
                directory / "proxy.json",
                proxy_bootstrap(backend_port, slots_port, bare_port, ports()),
            )
        ),
    )
    try:
        for port, child in ((backend_port, backend), (slots_port, proxy), (bare_port, proxy)):
            await wait_until(lambda port=port: _answers(port), 30, f"port {port}", [child])
        result.params = {
            "fault_slots": SLOTS,
            "rounds": rounds,
            "round_s": seconds,
            "rate_per_listener": rate,
        }
        p50 = result.figure("latency p50 overhead, slots vs none (fixed rate)", "%", goal=GOAL)
        p99 = result.figure("latency p99 overhead, slots vs none (fixed rate)", "%")
        with_slots = result.figure("latency p50 with idle slots", "us")
        without = result.figure("latency p50 without slots", "us")
        for _ in range(rounds):
            a, b = await paired(slots_port, bare_port, rate, seconds)
            with_slots.samples.append(percentile(a, 50))
            without.samples.append(percentile(b, 50))
            p50.samples.append(_overhead(percentile(a, 50), percentile(b, 50)))
            p99.samples.append(_overhead(percentile(a, 99), percentile(b, 99)))
        await throughput(result, slots_port, bare_port, ctx.pick(2, 4), seconds)
        result.note = (
            f"{rate} req/s to each listener, alternating; proxy and backend Envoys have one "
            "worker each; a negative overhead means the slotted listener was faster"
        )
    finally:
        ctx.procs.stop(proxy)
        ctx.procs.stop(backend)


async def paired(
    a_port: int, b_port: int, rate: float, seconds: float
) -> tuple[list[float], list[float]]:
    """Latencies (us) of requests alternating between two listeners at `rate` pairs/s."""
    a, b = Connection("127.0.0.1", a_port), Connection("127.0.0.1", b_port)
    await a.get()
    await b.get()
    out: dict[int, list[float]] = {a_port: [], b_port: []}
    period = 1 / rate
    next_at = time.monotonic()
    end = next_at + seconds
    flip = False
    try:
        while next_at < end:
            order = (b, a) if flip else (a, b)
            flip = not flip
            for connection in order:
                started = time.perf_counter_ns()
                await connection.get()
                out[connection.port].append((time.perf_counter_ns() - started) / 1000)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await a.close()
        await b.close()
    return out[a_port], out[b_port]


async def throughput(result: Result, a_port: int, b_port: int, rounds: int, seconds: float) -> None:
    wrk = ensure("wrk")
    if wrk is None:
        result.note += "; wrk not available: no throughput figures"
        return
    slots = result.figure("throughput with idle slots (wrk, closed loop)", "req/s")
    bare = result.figure("throughput without slots (wrk, closed loop)", "req/s")
    cost = result.figure("throughput cost of idle slots", "%")
    for _ in range(rounds):
        rps_a = await _wrk(wrk, a_port, seconds)
        rps_b = await _wrk(wrk, b_port, seconds)
        slots.samples.append(rps_a)
        bare.samples.append(rps_b)
        cost.samples.append((rps_b - rps_a) / rps_b * 100)


async def _wrk(wrk: str, port: int, seconds: float) -> float:
    process = await asyncio.create_subprocess_exec(
        wrk,
        "-t1",
        "-c16",
        f"-d{seconds:g}s",
        f"http://127.0.0.1:{port}/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    match = re.search(rb"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk said: {out.decode(errors='replace')[-500:]}")
    return float(match.group(1))


def _overhead(with_slots: float, without: float) -> float:
    return (with_slots - without) / without * 100


async def _answers(port: int) -> bool:
    connection = Connection("127.0.0.1", port)
    try:
        status, _ = await connection.get()
        return status == 200
    except OSError:
        return False
    finally:
        await connection.close()


def envoy_argv(bootstrap: Path) -> list[str]:
    return [
        envoy_binary(),
        "-c",
        str(bootstrap),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warning",
    ]


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=1))
    return path


def backend_bootstrap(port: int, admin: int) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "backend",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                        }
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {"address": _address(admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "backend",
                    "address": _address(port),
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ]
        },
    }


def proxy_bootstrap(backend: int, slots_port: int, bare_port: int, admin: int) -> dict[str, Any]:
    """Two listeners from faultplane's own builder: 4 idle fault slots, and none."""
    mesh = real_mesh("overhead", 1)
    pod = mesh.services["overhead"].pods[0]
    listeners = []
    for name, port, slots in (("slots", slots_port, SLOTS), ("bare", bare_port, 0)):
        resources = sidecar_resources(mesh, pod, SidecarLayout(slots))
        listener = resources[types.LISTENER][INGRESS]
        listener.name = name
        listener.address.socket_address.port_value = port
        network = listener.filter_chains[0].filters[0]
        hcm = hcm_pb2.HttpConnectionManager()
        network.typed_config.Unpack(hcm)
        hcm.ClearField("rds")
        hcm.route_config.CopyFrom(resources[types.ROUTE][INGRESS])
        network.typed_config.Pack(hcm)
        listeners.append(json_format.MessageToDict(listener))
    cluster = sidecar_resources(mesh, pod)[types.CLUSTER][LOCAL_APP_CLUSTER]
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    endpoint.address.socket_address.port_value = backend
    return {
        "admin": {"address": _address(admin)},
        "static_resources": {
            "listeners": listeners,
            "clusters": [json_format.MessageToDict(cluster)],
        },
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}
