"""8. Peer: the same config change delivered to real Envoy by sovereign (the Python Envoy
control plane on PyPI; REST polling) and by faultplane (ADS, gRPC push), on this machine
in one run: time from change to effect in traffic, and control-server CPU per sidecar.

Each side has 10 Envoys. The change: an abort (418) on every Envoy's inbound route, then
its removal. sovereign renders listeners, clusters and routes from Python templates; the
fault comes from its template context, a file it reloads every second (its shortest
period); Envoys poll every second (`refresh_delay: 1s`). sovereign runs one worker, as
faultplane is one process. The faultplane side is the shared mesh (dead-man TTL 3 s, so
leases are re-sent every second while the fault is on).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import bench.peer
from bench import api
from bench.core import Context, Result
from bench.procs import usage
from bench.scenarios.overhead import backend_bootstrap, envoy_argv, write
from bench.scenarios.propagation import ABORT
from bench.sidecars import SidecarMesh, shared_mesh
from bench.stats import Ratio
from bench.traffic import Watcher
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, wait_until
from faultplane.v1 import faultplane_pb2 as pb

ENVOYS = 10
TEMPLATES = Path(bench.peer.__file__).parent
PROBE = 0.01


async def run(ctx: Context, result: Result) -> None:
    if importlib.util.find_spec("sovereign") is None:  # importing it would load its config
        result.status = "skipped"
        result.note = "sovereign is not installed: pip install -e '.[bench]'"
        return
    mesh = await shared_mesh(ctx)
    reps = ctx.pick(2, 5)
    window = ctx.pick(5.0, 15.0)
    directory = ctx.dir("peer")
    ports = PortAllocator()
    fault_file = directory / "fault.json"
    _set_fault(fault_file, False)
    backend_port, sovereign_port = ports(), ports()
    started: list[Child] = []
    try:
        started.append(
            ctx.procs.spawn(
                "peer-backend",
                envoy_argv(
                    write(directory / "backend.json", backend_bootstrap(backend_port, ports()))
                ),
            )
        )
        sovereign_proc = ctx.procs.spawn(
            "peer-sovereign",
            [sys.executable, "-m", "sovereign.server"],
            env=_sovereign_env(directory, sovereign_port, fault_file),
        )
        started.append(sovereign_proc)
        urls = []
        for index in range(ENVOYS):
            listener = ports()
            bootstrap = _rest_bootstrap(index, listener, backend_port, sovereign_port, ports())
            path = write(directory / f"envoy-{index}.json", bootstrap)
            started.append(ctx.procs.spawn(f"peer-envoy-{index}", envoy_argv(path)))
            urls.append(f"http://127.0.0.1:{listener}/probe")
        for url in urls:
            await wait_until(lambda url=url: _ok(url), 90, f"{url} via sovereign", started)

        result.params = {
            "sidecars_each": ENVOYS,
            "repetitions": reps,
            "cpu_window_s": window,
            "sovereign_poll_s": 1,
            "sovereign_context_refresh_s": 1,
            "sovereign_workers": 1,
            "faultplane_deadman_ttl_s": mesh.deadman_ttl,
        }
        sov_on = result.figure("sovereign: change -> effect in traffic (on)", "ms")
        sov_off = result.figure("sovereign: change -> effect in traffic (off)", "ms")
        fp_on = result.figure("faultplane: change -> effect in traffic (on)", "ms")
        fp_off = result.figure("faultplane: change -> effect in traffic (off)", "ms")
        for _ in range(reps):
            on, off = await _sovereign_change(fault_file, urls)
            sov_on.samples.append(on)
            sov_off.samples.append(off)
            on, off = await _faultplane_change(mesh)
            fp_on.samples.append(on)
            fp_off.samples.append(off)

        sov_cpu = await _cpu_per_sidecar(sovereign_proc.pid, window, ENVOYS)
        assert mesh.run.server is not None
        fp_idle = await _cpu_per_sidecar(mesh.run.server.pid, window, ENVOYS)
        fp_active = await _faultplane_cpu_with_fault(mesh, window)
        result.figure("sovereign: CPU per sidecar (steady, polled)", "ms/s", samples=[sov_cpu])
        result.figure("faultplane: CPU per sidecar (no fault)", "ms/s", samples=[fp_idle])
        result.figure("faultplane: CPU per sidecar (fault on, leases)", "ms/s", samples=[fp_active])
        result.ratios += [
            Ratio(
                "time to effect (on), sovereign / faultplane",
                "sovereign p50",
                "faultplane p50",
                sov_on.stat("p50") / fp_on.stat("p50"),
            ),
            Ratio(
                "time to effect (off), sovereign / faultplane",
                "sovereign p50",
                "faultplane p50",
                sov_off.stat("p50") / fp_off.stat("p50"),
            ),
            Ratio(
                "CPU per sidecar, sovereign / faultplane (fault on)",
                "sovereign",
                "faultplane fault on",
                sov_cpu / max(fp_active, 1e-6),
            ),
        ]
        result.note = (
            "ms/s = milliseconds of control-server CPU per second per sidecar (1 ms/s = 0.1 % "
            f"of a core); faultplane idle uses {fp_idle:.3f} ms/s per sidecar"
        )
    finally:
        for child in reversed(started):
            ctx.procs.stop(child)


async def _sovereign_change(fault_file: Path, urls: list[str]) -> tuple[float, float]:
    times = []
    for on in (True, False):
        async with Watcher(urls, _faulted if on else _clean, PROBE) as watch:
            changed = time.time()
            _set_fault(fault_file, on)
            seen = await watch.wait(30)
        times.append((max(seen.values()) - changed) * 1000)
        await asyncio.sleep(1)
    return times[0], times[1]


async def _faultplane_change(mesh: SidecarMesh) -> tuple[float, float]:
    urls = mesh.ingress_urls()
    async with api.connect(mesh.api) as client:
        await client.sidecars(mesh.service)  # the channel is up before the clock starts
        async with Watcher(urls, _faulted, PROBE) as watch:
            changed = time.time()
            created = await client.create(api.request(mesh.service, ABORT, 600, len(urls)))
            on = (max((await watch.wait(30)).values()) - changed) * 1000
        async with Watcher(urls, _clean, PROBE) as watch:
            changed = time.time()
            await client.abort(created.id)
            off = (max((await watch.wait(30)).values()) - changed) * 1000
    return on, off


async def _faultplane_cpu_with_fault(mesh: SidecarMesh, window: float) -> float:
    assert mesh.run.server is not None
    urls = mesh.ingress_urls()
    async with api.connect(mesh.api) as client, client.transitions() as transitions:
        created = await client.create(api.request(mesh.service, ABORT, 600, len(urls)))
        await transitions.until(created.id, {pb.ACTIVE})
        try:
            return await _cpu_per_sidecar(mesh.run.server.pid, window, len(urls))
        finally:
            await client.abort(created.id)


async def _cpu_per_sidecar(pid: int, window: float, sidecars: int) -> float:
    """Milliseconds of CPU per second per sidecar, of `pid` and its children."""
    before = usage(pid).cpu_seconds
    await asyncio.sleep(window)
    return (usage(pid).cpu_seconds - before) / window / sidecars * 1000


def _set_fault(path: Path, on: bool) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"on": on, "http_status": 418}))
    partial.replace(path)


def _faulted(status: int) -> bool:
    return status == 418


def _clean(status: int) -> bool:
    return status == 200


async def _ok(url: str) -> bool:
    from urllib.parse import urlsplit

    from bench.http1 import Connection

    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = Connection(parts.hostname, parts.port, parts.path)
    try:
        status, _ = await connection.get()
        return status == 200
    except (OSError, ValueError):
        return False
    finally:
        await connection.close()


def _sovereign_env(directory: Path, port: int, fault_file: Path) -> dict[str, str]:
    spec = {"protocol": "python", "serialization": "passthrough"}
    config = {
        "templates": {
            "default": [
                {"type": kind, "spec": {**spec, "path": str(TEMPLATES / f"{kind}.py")}}
                for kind in ("listeners", "clusters", "routes")
            ]
        },
        "template_context": {
            "context": {
                "fault": {"protocol": "file", "serialization": "json", "path": str(fault_file)}
            },
            "refresh_rate": 1,
        },
        "matching": {"enabled": False},
    }
    config_file = directory / "sovereign.yaml"
    config_file.write_text(json.dumps(config, indent=1))
    return {
        "SOVEREIGN_CONFIG": f"file://{config_file}",
        "SOVEREIGN_HOST": "127.0.0.1",
        "SOVEREIGN_PORT": str(port),
        "SOVEREIGN_WORKERS": "1",
    }


def _rest_bootstrap(
    index: int, listener: int, backend: int, sovereign: int, admin: int
) -> dict[str, Any]:
    rest = {
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": ["sovereign"],
            "refresh_delay": "1s",
            "request_timeout": "1s",
        },
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": sovereign}}
    return {
        "node": {
            "id": f"sovereign-envoy-{index}",
            "cluster": "peer",
            "metadata": {"listener_port": listener, "backend_port": backend},
        },
        "dynamic_resources": {"lds_config": rest, "cds_config": rest},
        "static_resources": {
            "clusters": [
                {
                    "name": "sovereign",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "sovereign",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
                    },
                }
            ]
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
    }
