"""Mesh files for benchmarks: one service of N pods, on free or on placeholder ports.

The launcher reads the bootstrap template beside the mesh file, so each mesh is written
into its own directory next to a copy of envoy-configs/bootstrap.yaml.tmpl.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from faultplane.demo.bootstrap import TEMPLATE_NAME
from faultplane.demo.ports import PortAllocator
from faultplane.model.mesh import Mesh, parse_mesh

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "envoy-configs" / TEMPLATE_NAME
SHARDS = 10


def service_mesh(
    service: str,
    pods: int,
    port: Callable[[], int],
    control: tuple[int, int, int],
    dependencies: dict[str, int] | None = None,
) -> Mesh:
    """`service` with `pods` pods (labels shard=s0..s9), plus leaf `dependencies` (name: pods)."""
    services: dict[str, Any] = {
        service: {"dependencies": list(dependencies or {}), "pods": _pods(service, pods, port)}
    }
    for dep, count in (dependencies or {}).items():
        services[dep] = {"dependencies": [], "pods": _pods(dep, count, port)}
    xds, api, metrics = control
    doc = {
        "services": services,
        "control": {"xds_port": xds, "api_port": api, "metrics_port": metrics},
    }
    return parse_mesh(doc)


def real_mesh(service: str, pods: int, dependencies: dict[str, int] | None = None) -> Mesh:
    """Every port a free loopback port: for meshes whose sidecars really run."""
    allocate = PortAllocator()
    control = (allocate(), allocate(), allocate())
    return service_mesh(service, pods, allocate, control, dependencies)


def placeholder_mesh(service: str, pods: int) -> Mesh:
    """Free control ports; pod ports are distinct placeholders nobody listens on (simulated
    sidecars never open their listeners), so that 10,000 pods fit in the port range."""
    allocate = PortAllocator()
    control = (allocate(), allocate(), allocate())
    taken = set(control)
    counter = iter(range(1024, 65536))

    def placeholder() -> int:
        port = next(counter)
        while port in taken:
            port = next(counter)
        return port

    return service_mesh(service, pods, placeholder, control)


BENCH_SLO = "merchant-write-success"


def write_mesh(mesh: Mesh, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEMPLATE, directory / TEMPLATE_NAME)
    path = directory / "mesh.yaml"
    # JSON is YAML, and the C emitter keeps 10,000 pods quick to write.
    path.write_text(yaml.dump(mesh.to_dict(), Dumper=yaml.CSafeDumper, sort_keys=False))
    # Every injection names a readable SLO: the one bench.api's requests use, over the
    # first service (the one the scenarios fault).
    first = next(iter(mesh.services))
    slo = {"service": first, "kind": "success_ratio", "window_seconds": 60}
    (directory / "slos.yaml").write_text(yaml.safe_dump({"slos": {BENCH_SLO: slo}}))
    return path


def pod_name(service: str, index: int) -> str:
    return f"{service}-{index}"


def _pods(service: str, count: int, port: Callable[[], int]) -> list[dict[str, Any]]:
    return [
        {
            "name": pod_name(service, i),
            "labels": {"shard": f"s{i % SHARDS}"},
            "ports": {"app": port(), "ingress": port(), "egress": port(), "admin": port()},
        }
        for i in range(count)
    ]
