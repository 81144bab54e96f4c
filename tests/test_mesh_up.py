"""`faultplane mesh up`, `faultplane demo` and control-server restarts, as operators run them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from faultplane.cli.connection import fault_stub
from faultplane.demo.launcher import MeshRun
from faultplane.demo.processes import wait_until
from faultplane.v1 import faultplane_pb2 as pb
from tests.conftest import MESH_FILE, ROOT

FAULTPLANE = [sys.executable, "-m", "faultplane"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def state_pids(state: dict) -> list[int]:
    pids = [state["server_pid"], state["loadgen_pid"]]
    for pod in state["pods"]:
        pids += [pod["pid"], pod["app_pid"]]
    return [pid for pid in pids if pid]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def list_sidecars(api: str) -> list[pb.Sidecar]:
    async with grpc.aio.insecure_channel(api) as channel:
        reply = await fault_stub(channel).ListSidecars(pb.ListSidecarsRequest(), timeout=5)
    return list(reply.sidecars)


async def test_mesh_up_writes_its_state_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    process = subprocess.Popen(
        [*FAULTPLANE, "mesh", "up", "--mesh", str(MESH_FILE), "--state-file", str(state_file),
         "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    state: dict = {}
    try:
        await wait_until(_exists(state_file), 90, "the state file")
        state = json.loads(state_file.read_text())
        assert len(state["pods"]) == 7
        assert {p["service"] for p in state["pods"]} == {"payments-api", "fraud-scoring", "ledger"}
        south = [p for p in state["pods"] if p["labels"].get("shard") == "south-1"]
        assert sum(p["service"] == "payments-api" for p in south) == 3
        assert all(pid_alive(pid) for pid in state_pids(state))
        sidecars = await list_sidecars(state["api"])
        assert sorted(s.node_id for s in sidecars if s.connected) == sorted(
            p["pod"] for p in state["pods"]
        )

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert not [pid for pid in state_pids(state) if pid_alive(pid)]
    finally:
        process.kill()
        process.wait()
        kill_all(state_pids(state) if state else [])


def test_demo_runs_the_seed_fault_to_its_deadline_and_the_guard_aborts_the_second() -> None:
    result = subprocess.run(
        [*FAULTPLANE, "demo", "--mesh", str(MESH_FILE), "--duration", "8", "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)  # --json: stdout is the one JSON document
    assert summary["sidecars"] == 7
    assert summary["requests"] > 0
    assert summary["ok"] == summary["requests"]
    injection = summary["injection"]
    assert injection["state"] == "COMPLETED"
    assert sorted(injection["targets"]) == ["payments-api-1", "payments-api-2", "payments-api-3"]
    phases = summary["phases"]
    assert phases["during"]["calls"] > 0 and phases["during"]["p50_ms"] >= 190
    assert phases["before"]["p50_ms"] < 100 and phases["after"]["p50_ms"] < 100
    assert "ACTIVE -> COMPLETED: deadline reached" in result.stderr  # narration
    held, refuted = summary["injections"]
    assert held["verdict"] == "hypothesis held"
    assert refuted["state"] == "ABORTED" and refuted["verdict"] == "hypothesis refuted"
    assert refuted["abort_latency_ms"] is not None and refuted["abort_latency_ms"] < 1000
    guarded = summary["guarded_phase"]
    assert guarded["failed_by_injection"] > 0
    assert guarded["ok"] + guarded["failed_by_injection"] == guarded["requests"]


@pytest.fixture
async def mesh_with_server_process(tmp_path: Path):
    async with MeshRun(MESH_FILE, tmp_path) as run:
        yield run


async def test_restarted_control_server_gets_every_sidecar_back_converged(
    mesh_with_server_process: MeshRun,
) -> None:
    run = mesh_with_server_process
    before = await list_sidecars(run.api_address)
    old_instance = before[0].xds[0].version_acked.split("-")[0]

    run.restart_server()
    await run.wait_server_healthy()

    async def converged() -> bool:
        sidecars = await list_sidecars(run.api_address)
        return len(sidecars) == 7 and all(
            s.connected
            and s.xds
            and all(t.version_acked and t.version_acked == t.version_sent for t in s.xds)
            and all(not t.version_acked.startswith(old_instance) for t in s.xds)
            for s in sidecars
        )

    await wait_until(converged, 30, "every sidecar to converge on the new server")
    stats = await run.load_stats(stop=True)
    assert stats["requests"] > 0
    # Envoy kept serving its last config while the control server was away.
    assert stats["ok"] == stats["requests"]


def _exists(path: Path):
    async def check() -> bool:
        return path.exists() and path.stat().st_size > 0

    return check
