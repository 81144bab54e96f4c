"""The demo mesh served to real Envoy sidecars by an in-process control server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from envoy.config.route.v3 import route_components_pb2
from prometheus_client import REGISTRY

from faultplane.demo.launcher import MeshRun, envoy_argv
from faultplane.demo.processes import Child, envoy_binary, wait_until
from faultplane.model.mesh import Mesh
from faultplane.render.resources import sidecar_resources
from faultplane.server.control import ControlServer
from faultplane.xds import types
from tests.conftest import MESH_FILE

POD = "payments-api-1"


@pytest.fixture
async def running(mesh: Mesh, control: ControlServer, tmp_path: Path) -> AsyncIterator[MeshRun]:
    async with MeshRun(MESH_FILE, tmp_path, mesh=mesh, spawn_server=False, load=False) as run:
        yield run


async def http(method: str, url: str, host: str | None = None) -> tuple[int, dict]:
    headers = {"Host": host} if host else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.request(method, url, headers=headers) as response,
    ):
        is_json = response.content_type == "application/json"
        return response.status, (await response.json()) if is_json else {}


def sidecar_ports(run: MeshRun, pod: str):
    assert run.mesh is not None
    found = run.mesh.pod(pod)
    assert found is not None
    return found.ports


async def test_merchant_write_through_ingress_reaches_fraud_scoring_and_ledger(
    running: MeshRun,
) -> None:
    ports = sidecar_ports(running, POD)

    status, body = await http("POST", f"http://127.0.0.1:{ports.ingress}/merchant-write")

    assert status == 200
    assert body["pod"] == POD
    assert {call["service"]: call["status"] for call in body["calls"]} == {
        "fraud-scoring": 200,
        "ledger": 200,
    }


async def test_egress_listener_routes_by_host_to_each_dependency(running: MeshRun) -> None:
    ports = sidecar_ports(running, POD)
    for dependency in ("fraud-scoring", "ledger"):
        status, body = await http("GET", f"http://127.0.0.1:{ports.egress}/score", host=dependency)
        assert status == 200
        assert body["service"] == dependency


async def test_every_sidecar_acks_every_type_with_no_error(
    running: MeshRun, control: ControlServer
) -> None:
    sidecars = {s.node_id: s for s in control.registry.sidecars()}
    assert sorted(sidecars) == sorted(p.name for p in running.mesh.pods)
    for sidecar in sidecars.values():
        assert sidecar.connected
        subscribed = set(types.PUSH_ORDER) - (
            set() if running.mesh.services[sidecar.service].dependencies else {types.ENDPOINT}
        )
        for type_url in subscribed:
            status = sidecar.types[type_url]
            assert status.acked_version.startswith(control.cache.instance), (
                sidecar.node_id,
                type_url,
            )
            assert status.acked_version == status.sent_version
            assert status.last_error == ""
    assert sidecars[POD].labels == {"shard": "south-1", "tier": "critical"}


async def test_nacked_route_keeps_previous_config_is_recorded_and_not_resent(
    running: MeshRun, control: ControlServer
) -> None:
    mesh = running.mesh
    ports = sidecar_ports(running, POD)
    before = control.registry.get(POD).types[types.ROUTE].acked_version
    resources = sidecar_resources(mesh, mesh.pod(POD))
    egress = resources[types.ROUTE]["egress"]
    egress.virtual_hosts.append(
        route_components_pb2.VirtualHost(name="dup", domains=["ledger"])  # duplicate domain
    )
    generation = control.cache.set_resources(POD, resources)[types.ROUTE]

    outcome = await control.registry.wait_for(POD, types.ROUTE, generation, timeout=10)
    sent_after_nack = _responses_sent("rds")

    assert not outcome.acked
    assert "ledger" in outcome.error
    status = control.registry.get(POD).types[types.ROUTE]
    assert status.nacked_version == outcome.version
    assert status.acked_version == before
    assert status.last_error == outcome.error
    # The sidecar still routes with its previous config.
    call, body = await http("GET", f"http://127.0.0.1:{ports.egress}/x", host="ledger")
    assert call == 200 and body["service"] == "ledger"
    # Nothing loops: no further RDS response goes out while the desired state stands.
    await asyncio.sleep(1.0)  # an observation window for something that must not happen
    assert _responses_sent("rds") == sent_after_nack


async def test_restarted_envoy_reconnects_and_converges(
    running: MeshRun, control: ControlServer, tmp_path: Path
) -> None:
    pod = next(p for p in running.pods if p.pod.name == POD)
    first_connect = control.registry.get(POD).connected_at
    pod.envoy.kill()
    pod.envoy.process.wait(10)

    restarted = Child(
        "envoy restarted",
        envoy_argv(envoy_binary(), tmp_path / f"envoy-{POD}.yaml"),
        tmp_path / "envoy-restarted.log",
    ).start()
    try:
        await wait_until(
            lambda: _ready(pod.pod.ports.admin), 30, "restarted sidecar LIVE", [restarted]
        )
        sidecar = control.registry.get(POD)
        assert sidecar.connected and sidecar.connected_at > first_connect
        assert (
            sidecar.types[types.LISTENER].acked_version
            == sidecar.types[types.LISTENER].sent_version
        )
        status, _ = await http("POST", f"http://127.0.0.1:{pod.pod.ports.ingress}/merchant-write")
        assert status == 200
    finally:
        restarted.stop()


async def _ready(admin_port: int) -> bool:
    try:
        status, _ = await http("GET", f"http://127.0.0.1:{admin_port}/ready")
    except (aiohttp.ClientError, TimeoutError):
        return False
    return status == 200


def _responses_sent(short_type: str) -> float:
    value = REGISTRY.get_sample_value("faultplane_xds_responses_sent_total", {"type": short_type})
    return value or 0.0
