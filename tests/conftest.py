"""Shared fixtures: the demo mesh on free ports, an in-process control server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from faultplane.demo.ports import RANGE_VARIABLE, PortAllocator
from faultplane.model.mesh import Mesh, load_mesh
from faultplane.server.control import ControlServer, ServerConfig
from faultplane.slo.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parent.parent
MESH_FILE = ROOT / "envoy-configs" / "mesh.yaml"


SLO_FILE = ROOT / "envoy-configs" / "slos.yaml"

# Parallel workers (pytest -n) each pick ports from a range of their own, inherited by the
# processes they start, so two workers never race for one port between check and bind.
WORKER_PORT_SPAN = 5000
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw"):
    _low = 10_000 + int(_worker[2:]) * WORKER_PORT_SPAN
    os.environ.setdefault(RANGE_VARIABLE, f"{_low}-{_low + WORKER_PORT_SPAN}")


def server_config(mesh: Mesh, **overrides: Any) -> ServerConfig:
    """A server on the mesh's control ports, without a metrics endpoint, guarding with the
    mesh's SLO catalogue (every injection needs one) and no baseline wait."""
    defaults: dict[str, Any] = {
        "slos": load_catalogue(SLO_FILE, mesh.services),
        "baseline_min_seconds": 0.0,
    }
    return ServerConfig(
        mesh=mesh,
        xds_port=mesh.control.xds_port,
        api_port=mesh.control.api_port,
        metrics_port=None,
        **{**defaults, **overrides},
    )


@pytest.fixture
def mesh() -> Mesh:
    """The demo mesh with every port replaced by a free loopback port."""
    return load_mesh(MESH_FILE).with_ports(PortAllocator())


@pytest.fixture
async def control(mesh: Mesh) -> AsyncIterator[ControlServer]:
    """A control server in this process, on the mesh's control ports, without metrics."""
    server = ControlServer(server_config(mesh))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)
