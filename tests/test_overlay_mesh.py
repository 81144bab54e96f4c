"""The overlay demo mesh (issue 11, item 7): real Envoys whose listeners, routes and
clusters come from a second control server (the demo's base server, standing in for
istiod), with faultplane attached as `serve --overlay`, serving only the fault layer.

One mesh is shared by the module: the tests that read it come first, the one that kills
and restarts the base server last. `faultplane demo --overlay` brings up its own mesh, so
it runs first, before the shared one exists (two meshes at once would crowd two cores).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from faultplane.cli.connection import fault_stub
from faultplane.demo.launcher import MeshRun
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import load_mesh
from faultplane.render.ecds import DIRECTIONS, slot_name
from faultplane.render.overlay_config import DEFAULT_SLOTS, slot_filter
from faultplane.render.resources import overlay_base_resources, sidecar_resources
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.xds import types
from tests.conftest import MESH_FILE, ROOT
from tests.helpers import admin_json, send

# The async tests share the module-scoped mesh, so they share its event loop.
ON_MESH_LOOP = pytest.mark.asyncio(loop_scope="module")

ISTIO_POD = "payments-api-4"  # its node speaks Istio's metadata keys; the others ours
SOUTH = ["payments-api-1", "payments-api-2", "payments-api-3"]
SLOTS = [slot_name(direction, i) for direction in DIRECTIONS for i in range(DEFAULT_SLOTS)]
# Envoy's gauge for its ADS stream to the base server (the per-type subscriptions to
# faultplane have their own, under `runtime.` and each slot's scope).
BASE_CONNECTED = "control_plane.connected_state"
OUTAGE_TIMEOUT = 20.0  # Envoy sees a killed server's socket close at once; the rest is load


@pytest.mark.timeout(300)
@ON_MESH_LOOP
async def test_demo_overlay_measures_the_seed_latency_on_three_of_four_payments_sidecars() -> None:
    """Done when of issue 11: `faultplane demo --overlay --json` exits 0, ok == requests."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "faultplane", "demo", "--overlay", "--duration", "8", "--json"],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    summary = json.loads(result.stdout)  # --json: stdout is the one JSON document
    assert summary["sidecars"] == 7
    assert 0 < summary["requests"] == summary["ok"], summary
    assert sorted(summary["injection"]["targets"]) == SOUTH
    assert summary["injection"]["verdict"] == "hypothesis held"
    phases = summary["phases"]
    assert phases["during"]["calls"] > 0 and phases["during"]["p50_ms"] >= 190, phases
    assert phases["before"]["p50_ms"] < 100 and phases["after"]["p50_ms"] < 100, phases
    held, refuted = summary["injections"]
    assert held == summary["injection"]
    assert refuted["state"] == "ABORTED" and refuted["verdict"] == "hypothesis refuted"
    guarded = summary["guarded_phase"]
    assert guarded["failed_by_injection"] > 0
    assert guarded["ok"] + guarded["failed_by_injection"] == guarded["requests"]
    assert "faultplane serves only the fault layer" in result.stderr


def test_base_config_is_the_full_meshs_with_the_pasted_slots_and_no_fault_layer() -> None:
    mesh = load_mesh(MESH_FILE)
    pod = mesh.pod("payments-api-1")
    assert pod is not None
    full = sidecar_resources(mesh, pod)

    base = overlay_base_resources(mesh, pod, DEFAULT_SLOTS)

    # No runtime layer, and clusters and routes as the full mesh's (egress clusters named
    # after the dependency, no fault config on any route).
    assert list(base) == [types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE]
    for type_url in (types.CLUSTER, types.ENDPOINT, types.ROUTE):
        assert base[type_url] == full[type_url]
    for listener, direction in (("ingress", "inbound"), ("egress", "outbound")):
        filters = hcm_of(base[types.LISTENER][listener]).http_filters
        slots = [slot_name(direction, i) for i in range(DEFAULT_SLOTS)]
        assert [f.name for f in filters] == [*slots, "envoy.filters.http.router"]
        for slot, name in zip(filters, slots, strict=False):
            pasted = json_format.MessageToDict(slot, preserving_proto_field_name=True)
            assert pasted == slot_filter(name)  # exactly what `overlay envoy` prints
        # Only the filters differ from the full mesh's listener.
        assert without_filters(base[types.LISTENER][listener]) == without_filters(
            full[types.LISTENER][listener]
        )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    async with MeshRun(
        MESH_FILE,
        tmp_path_factory.mktemp("overlay"),
        load=False,
        overlay=True,
        istio_nodes=(ISTIO_POD,),
        server_args=("--baseline-min-seconds", "0"),
    ) as mesh_run:
        yield mesh_run


@ON_MESH_LOOP
async def test_base_servers_listeners_routes_and_clusters_carry_ingress_and_egress_traffic(
    run: MeshRun,
) -> None:
    assert run.mesh is not None
    for pod in run.mesh.services["payments-api"].pods:
        writes = await send(
            f"http://127.0.0.1:{pod.ports.ingress}/merchant-write", 5, method="POST"
        )
        assert [r.status for r in writes] == [200] * 5, pod.name
        for dependency in ("fraud-scoring", "ledger"):
            calls = await send(f"http://127.0.0.1:{pod.ports.egress}/x", 3, host=dependency)
            assert [r.status for r in calls] == [200] * 3, (pod.name, dependency)
    # faultplane served none of it: only the fault layer.
    for sidecar in await list_sidecars(run):
        assert {status.type for status in sidecar.xds} == {"ecds", "rtds"}, sidecar.node_id


@ON_MESH_LOOP
async def test_every_sidecar_holds_one_runtime_layer_and_2n_slots_served_by_faultplane(
    run: MeshRun,
) -> None:
    assert run.mesh is not None
    sidecars = {sidecar.node_id: sidecar for sidecar in await list_sidecars(run)}
    assert sorted(sidecars) == sorted(pod.name for pod in run.mesh.pods)
    for pod in run.mesh.pods:
        sidecar = sidecars[pod.name]
        assert sidecar.connected
        acked = {status.type: status for status in sidecar.xds}
        for status in acked.values():
            assert status.version_acked == status.version_sent and not status.last_error
        # Envoy's side: exactly one RTDS and 2N ECDS subscriptions, each on a live stream,
        # each holding the version faultplane says it ACKed.
        stats = await envoy_stats(f"127.0.0.1:{pod.ports.admin}")
        slot_versions = {
            name.split(".http_filter.", 1)[1].removesuffix(".version_text"): value
            for name, value in stats.items()
            if name.startswith("extension_config_discovery.") and name.endswith(".version_text")
        }
        assert sorted(slot_versions) == sorted(SLOTS), pod.name
        assert set(slot_versions.values()) == {acked["ecds"].version_acked}, pod.name
        assert stats["runtime.version_text"] == acked["rtds"].version_acked, pod.name
        for scope in ["runtime", *(f"extension_config_discovery.http_filter.{s}" for s in SLOTS)]:
            assert stats[f"{scope}.control_plane.connected_state"] == 1, (pod.name, scope)


@ON_MESH_LOOP
async def test_sidecars_are_identified_by_their_node_metadata_plain_or_istio_shaped(
    run: MeshRun,
) -> None:
    sidecars = {sidecar.node_id: sidecar for sidecar in await list_sidecars(run)}

    plain, istio = sidecars["payments-api-1"], sidecars[ISTIO_POD]

    assert (plain.service, plain.cluster) == ("payments-api", "payments-api")
    assert dict(plain.labels) == {"shard": "south-1", "tier": "critical"}
    # Istio's node: the service from LABELS' `app`, not from node.cluster.
    assert (istio.service, istio.cluster) == ("payments-api", "payments-api.demo")
    assert dict(istio.labels) == {"app": "payments-api", "shard": "north-1", "tier": "critical"}
    assert istio.admin_address == f"127.0.0.1:{run.mesh.pod(ISTIO_POD).ports.admin}"


@ON_MESH_LOOP
async def test_base_server_killed_then_restarted_leaves_traffic_serving(run: MeshRun) -> None:
    assert run.mesh is not None and run.base_server is not None
    admins = [f"127.0.0.1:{pod.ports.admin}" for pod in run.mesh.pods]
    ingress = f"http://127.0.0.1:{run.mesh.pod('payments-api-1').ports.ingress}/merchant-write"
    before = await envoy_stats(admins[0])

    run.base_server.kill()
    await wait_until(lambda: base_connected(admins, 0), OUTAGE_TIMEOUT, "every ADS stream to drop")
    during = await send(ingress, 20, method="POST")
    run.restart_base_server()
    await run.wait_base_server_healthy()
    await wait_until(lambda: base_connected(admins, 1), OUTAGE_TIMEOUT, "every ADS to reconnect")
    await wait_until(
        lambda: lds_version_changed(admins[0], before["listener_manager.lds.version_text"]),
        OUTAGE_TIMEOUT, "the new base server's listeners to be ACKed",
    )  # fmt: skip
    after = await send(ingress, 20, method="POST")

    assert [r.status for r in during] == [200] * 20
    assert [r.status for r in after] == [200] * 20
    # faultplane's streams are another connection: the base server's outage left them be.
    assert all(sidecar.connected for sidecar in await list_sidecars(run))


def hcm_of(listener: Any) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return hcm


def without_filters(listener: Any) -> tuple[Any, hcm_pb2.HttpConnectionManager]:
    """The listener without its filter chains, and its HCM without HTTP filters."""
    hcm = hcm_of(listener)
    del hcm.http_filters[:]
    bare = type(listener)()
    bare.CopyFrom(listener)
    del bare.filter_chains[:]
    return bare, hcm


async def list_sidecars(run: MeshRun) -> list[pb.Sidecar]:
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        reply = await fault_stub(channel).ListSidecars(pb.ListSidecarsRequest(), timeout=10)
    return list(reply.sidecars)


async def envoy_stats(admin: str) -> dict[str, Any]:
    """Every counter, gauge and text readout of the sidecar, by name."""
    body = await admin_json(admin, "/stats?format=json")
    return {stat["name"]: stat["value"] for stat in body["stats"] if "value" in stat}


async def base_connected(admins: list[str], state: int) -> bool:
    """Whether every sidecar's ADS stream to the base server is in `state` (1 up, 0 down)."""
    for admin in admins:
        if (await envoy_stats(admin)).get(BASE_CONNECTED) != state:
            return False
    return True


async def lds_version_changed(admin: str, old: str) -> bool:
    return (await envoy_stats(admin))["listener_manager.lds.version_text"] != old
