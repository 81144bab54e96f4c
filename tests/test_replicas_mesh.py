"""`demo --replicas 3` and `mesh up --replicas`: several replicas on one PostgreSQL (a
local one the demo starts itself), every sidecar's bootstrap listing them all, the
stories' states and verdicts right with the latency experiment's owner SIGKILLed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from faultplane.demo.bootstrap import render_bootstrap
from faultplane.demo.launcher import MeshRun
from faultplane.demo.replicas import Replica, plan_replicas, with_xds_endpoints
from faultplane.model.mesh import ControlPorts, load_mesh
from tests.conftest import MESH_FILE, ROOT
from tests.helpers import run_cli

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
