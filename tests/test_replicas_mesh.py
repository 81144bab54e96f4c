"""`demo --replicas 3` and `mesh up --replicas`: several replicas on one PostgreSQL (a
local one the demo starts itself), every sidecar's bootstrap listing them all, the
stories' states and verdicts right with the latency experiment's owner SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml

from faultplane.demo.bootstrap import render_bootstrap
from faultplane.demo.launcher import MeshRun
from faultplane.demo.processes import wait_until
from faultplane.demo.replicas import Replica, plan_replicas, with_xds_endpoints
from faultplane.model.mesh import ControlPorts, load_mesh
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, ROOT
from tests.helpers import injection_request, run_cli, send, wait_state
from tests.postgres import PostgresCluster, postgres_cluster  # noqa: F401  (a fixture)
from tests.test_restart import ABORT_ALL_PAYMENTS

DEADMAN_TTL = 3.0
BOOTSTRAP = (ROOT / "envoy-configs" / "bootstrap.yaml.tmpl").read_text()


def test_every_sidecar_bootstrap_lists_every_replica() -> None:
    ports = iter(range(30000, 30100))
    replicas = plan_replicas(ControlPorts(18000, 18001, 18002), 3, lambda: next(ports))
    assert [r.name for r in replicas] == ["r1", "r2", "r3"]
    assert replicas[0] == Replica("r1", 18000, 18001, 18002)
    text = render_bootstrap(BOOTSTRAP, load_mesh(MESH_FILE).pods[0], "127.0.0.1", 18000)
    rendered = yaml.safe_load(with_xds_endpoints(text, "127.0.0.1", [r.xds_port for r in replicas]))
    [cluster] = [
        c for c in rendered["static_resources"]["clusters"] if c["name"] == "faultplane_xds"
    ]
    [group] = cluster["load_assignment"]["endpoints"]
    listed = [
        e["endpoint"]["address"]["socket_address"]["port_value"] for e in group["lb_endpoints"]
    ]
    assert listed == [r.xds_port for r in replicas]


def test_replicas_need_a_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="replicas: several need a PostgreSQL store"):
        MeshRun(MESH_FILE, tmp_path, replicas=2)
    with pytest.raises(ValueError, match="replicas: must be 1 or more"):
        plan_replicas(ControlPorts(), 0, lambda: 0)


def test_demo_with_three_replicas_survives_the_owner_sigkill() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faultplane", "demo", "--mesh", str(MESH_FILE),
         "--replicas", "3", "--duration", "8", "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["replicas"] == 3 and summary["sidecars"] == 7
    assert summary["ok"] == summary["requests"] > 0
    latency, guarded = summary["injections"]
    assert (latency["state"], latency["verdict"]) == ("COMPLETED", "hypothesis held")
    assert summary["taken_over"] and summary["takeover_seconds"] < 20
    assert summary["phases"]["during"]["p50_ms"] > summary["phases"]["before"]["p50_ms"] + 100
    assert (guarded["state"], guarded["verdict"]) == ("ABORTED", "hypothesis refuted")
    assert "SIGKILLed replica r1" in result.stderr


@pytest.mark.asyncio
async def test_the_overlay_snippet_lists_several_xds_addresses() -> None:
    code, out, err = await run_cli(
        "overlay", "envoy", "--xds-address", "10.0.0.1:18000",
        "--xds-address", "faultplane-2.example:18000", "--json",
    )  # fmt: skip
    assert code == 0, err
    [cluster] = json.loads(out)["clusters"]
    [group] = cluster["load_assignment"]["endpoints"]
    hosts = [e["endpoint"]["address"]["socket_address"] for e in group["lb_endpoints"]]
    assert hosts == [
        {"address": "10.0.0.1", "port_value": 18000},
        {"address": "faultplane-2.example", "port_value": 18000},
    ]
    assert cluster["type"] == "STRICT_DNS"  # a DNS name among them: resolved by Envoy


@pytest.mark.asyncio
async def test_sidecars_of_a_sigkilled_replica_fail_over_and_keep_the_fault(
    tmp_path: Path,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> None:
    url = postgres_cluster.create_database()
    args = ("--baseline-min-seconds", "0", "--deadman-ttl", str(DEADMAN_TTL), "--ack-timeout", "20")
    async with MeshRun(
        MESH_FILE, tmp_path, server_args=args, load=False, replicas=3, store_url=url
    ) as run:
        apis = {r.name: f"127.0.0.1:{r.api_port}" for r in run.replica_plan}
        async with grpc.aio.insecure_channel(apis["r1"]) as channel:
            viewer = faultplane_pb2_grpc.FaultServiceStub(channel)

            async def all_seen() -> bool:
                sidecars = (await viewer.ListSidecars(pb.ListSidecarsRequest())).sidecars
                return sum(s.connected for s in sidecars) == len(run.pods)

            await wait_until(all_seen, 60, "r1 to see every sidecar")
            sidecars = (await viewer.ListSidecars(pb.ListSidecarsRequest())).sidecars
            holder = {s.node_id: s.replica for s in sidecars}
        # The victim holds the most payments-api sidecars; another replica owns the fault.
        payments = [node for node in holder if node.startswith("payments-api")]
        victim = max(apis, key=lambda r: sum(holder[n] == r for n in payments))
        owner = next(r for r in apis if r != victim)
        async with grpc.aio.insecure_channel(apis[owner]) as channel:
            stub = faultplane_pb2_grpc.FaultServiceStub(channel)
            request = injection_request(**ABORT_ALL_PAYMENTS, duration_seconds=60)
            created = await stub.CreateInjection(request, timeout=30)
            active = await wait_state(stub, created.id, {pb.ACTIVE}, timeout=60)
            moved = [t for t in active.targets if holder[t] == victim]
            assert moved, (holder, victim)
            assert run.mesh is not None
            urls = [
                f"http://127.0.0.1:{run.mesh.pod(t).ports.ingress}/merchant-write" for t in moved
            ]
            run.replicas[victim].kill()
            killed = time.monotonic()
            gaps: list[float] = []
            while time.monotonic() - killed < 20:
                statuses = [(await send(u, method="POST"))[0].status for u in urls]
                if any(s != 503 for s in statuses):
                    gaps.append(time.monotonic() - killed)
                elif time.monotonic() - killed > 2 * DEADMAN_TTL and await all_held_elsewhere(
                    stub, moved, victim
                ):
                    break
                await asyncio.sleep(0.05)  # the probe's pace, not a synchronisation
            assert await all_held_elsewhere(stub, moved, victim)
            assert all([(await send(u, method="POST"))[0].status == 503 for u in urls])
            print(f"{victim}'s sidecars {moved}: fault missing for {len(gaps) * 0.05:.2f}s "
                  f"(last at {max(gaps, default=0):.2f}s after the SIGKILL)")  # fmt: skip
            still = await stub.GetInjection(pb.GetInjectionRequest(id=created.id))
            assert still.state == pb.ACTIVE
            assert [t.to_state for t in still.transitions] == [pb.PENDING, pb.ACTIVE]
            await stub.AbortInjection(pb.AbortInjectionRequest(id=created.id), timeout=60)


async def all_held_elsewhere(stub: faultplane_pb2_grpc.FaultServiceStub, nodes: list[str],
                             gone: str) -> bool:  # fmt: skip
    sidecars = (await stub.ListSidecars(pb.ListSidecarsRequest())).sidecars
    holder = {s.node_id: s.replica for s in sidecars if s.connected}
    return all(holder.get(node) not in (None, gone) for node in nodes)
