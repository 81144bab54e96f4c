"""Stopping is easier than starting (issue 12), through the real API and the real CLI.

Any role that may act may stop any fault: an operator aborts a colleague's injection,
the new `oncall` role aborts everything and freezes but may not inject or approve, a
viewer may plan (a plan changes nothing) but not stop. The audit names who stopped whose
fault. In-process: test_governance's server (token auth, fake sidecars). End to end: a
`faultplane serve` child process, fake sidecars ACKing over its ADS port, and every
operator action a `faultplane` CLI process.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from faultplane.model.mesh import load_mesh
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, ROOT
from tests.fake_sidecar import fake_sidecars
from tests.helpers import EXAMPLE, rpc_error, wait_state
from tests.serve_process import Launcher, Server, launch  # noqa: F401 (fixture)
from tests.test_auth_e2e import create_token
from tests.test_governance import Api, Start, _As, audit_entries, request_by, start  # noqa: F401

SLO_FILE = ROOT / "envoy-configs" / "slos.yaml"
DENIED = grpc.StatusCode.PERMISSION_DENIED
# Plans go to calls into ledger: another traffic scope than the live injections' inbound
# one, so the plan is not refused as overlapping them.
TO_LEDGER = {"selector": "", "max_pods": 4, "upstream": "ledger"}


async def with_stoppers(start: Start) -> Api:  # noqa: F811
    """The governance server with, besides vic/alice/bob/root, an on-call engineer and a
    second operator."""
    api = await start()
    api.issue("olga", "oncall")
    api.issue("carl", "operator")
    return api


# --- the API ---------------------------------------------------------------------------


async def test_an_operator_aborts_a_colleagues_injection_and_the_audit_names_both(
    start: Start,  # noqa: F811
) -> None:
    api = await with_stoppers(start)
    created = await api.call("CreateInjection", request_by("alice", duration_seconds=600), "alice")
    await wait_state(_As(api, "alice"), created.id, {pb.ACTIVE})

    stopped = await api.call(
        "AbortInjection", pb.AbortInjectionRequest(id=created.id, reason="pager"), "carl"
    )

    assert stopped.state == pb.ABORTED and stopped.owner == "alice"
    assert stopped.reason == "aborted by carl (owner: alice): pager"
    entries = await audit_entries(api, injection_id=created.id)
    (call,) = [e for e in entries if e.get("method") == "AbortInjection"]
    assert (call["principal"], call["outcome"]) == ("carl", "OK")
    (aborted,) = [e for e in entries if e.get("to") == "ABORTED"]
    assert aborted["principal"] == "carl" and "owner: alice" in aborted["reason"]


async def test_oncall_stops_and_freezes_but_cannot_start_or_approve(
    start: Start,  # noqa: F811
) -> None:
    api = await with_stoppers(start)
    live = await api.call("CreateInjection", request_by("alice", duration_seconds=600), "alice")

    create = await rpc_error(api.call("CreateInjection", request_by("olga"), "olga"))
    approve = await rpc_error(
        api.call("ApproveInjection", pb.ApproveInjectionRequest(id=live.id), "olga")
    )
    plan = await api.call("PlanInjection", request_by("olga", target=TO_LEDGER), "olga")
    frozen = await api.call("Freeze", pb.FreezeRequest(reason="incident"), "olga")
    aborted = await api.call(
        "AbortAllInjections", pb.AbortAllInjectionsRequest(reason="incident"), "olga"
    )
    lifted = await api.call("Unfreeze", pb.UnfreezeRequest(), "olga")

    assert create.code() == DENIED
    assert "role oncall may not call CreateInjection" in create.details()
    assert approve.code() == DENIED
    assert len(plan.targets) == 4
    assert frozen.frozen and frozen.by == "olga"
    assert [(i.id, i.state) for i in aborted.aborted] == [(live.id, pb.ABORTED)]
    assert aborted.aborted[0].reason == "aborted by olga: incident"
    assert not lifted.frozen


async def test_a_viewer_may_plan_but_not_stop_or_start(start: Start) -> None:  # noqa: F811
    api = await with_stoppers(start)
    live = await api.call("CreateInjection", request_by("alice", duration_seconds=600), "alice")

    plan = await api.call("PlanInjection", request_by("vic", target=TO_LEDGER), "vic")
    refusals = [
        await rpc_error(api.call(method, request, "vic"))
        for method, request in (
            ("CreateInjection", request_by("vic")),
            ("AbortInjection", pb.AbortInjectionRequest(id=live.id)),
            ("AbortAllInjections", pb.AbortAllInjectionsRequest()),
            ("Freeze", pb.FreezeRequest(reason="no")),
        )
    ]

    assert sorted(plan.targets) == [f"payments-api-{i}" for i in range(1, 5)]
    assert [e.code() for e in refusals] == [DENIED] * 4
    assert "needs oncall or operator or approver or admin" in refusals[2].details()
    still = await api.call("GetInjection", pb.GetInjectionRequest(id=live.id), "vic")
    assert still.state in (pb.PENDING, pb.ACTIVE)


async def test_an_operator_may_freeze_but_only_oncall_or_admin_lifts_it(
    start: Start,  # noqa: F811
) -> None:
    api = await with_stoppers(start)

    await api.call("Freeze", pb.FreezeRequest(reason="saw a spike"), "carl")
    lift = await rpc_error(api.call("Unfreeze", pb.UnfreezeRequest(), "carl"))
    approver = await rpc_error(api.call("Unfreeze", pb.UnfreezeRequest(), "bob"))
    await api.call("Unfreeze", pb.UnfreezeRequest(), "olga")

    assert lift.code() == DENIED and "needs oncall or admin" in lift.details()
    assert approver.code() == DENIED
    assert not (await api.call("GetFreeze", pb.GetFreezeRequest(), "vic")).frozen


# --- the CLI against a real server -----------------------------------------------------


def injection_file(tmp_path: Path, owner: str) -> Path:
    """The example document on every payments-api pod's inbound traffic, owned by `owner`,
    with a steady state the fake sidecars never breach within the test."""
    document: dict[str, Any] = copy.deepcopy(EXAMPLE)
    document["target"] = {"service": "payments-api", "selector": "", "max_pods": 4}
    document["fault"] = {"type": "abort", "http_status": 503}
    document["duration_seconds"] = 600
    document["steady_state"] = {"slo": "merchant-write-success", "min": 0.0, "abort_after": 600}
    document["owner"] = owner
    path = tmp_path / f"{owner}.json"
    path.write_text(json.dumps(document))
    return path


async def cli(server: Server, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    """A `faultplane` process, off the event loop (the fake sidecars ACK on it)."""
    return await asyncio.to_thread(server.cli, *args, token=token)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return json.loads(result.stdout)


def denied(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert f"faultplane: PERMISSION_DENIED: {what}" in result.stderr, result.stderr


async def _sidecars_connected(server: Server, token: str, count: int) -> None:
    deadline = time.monotonic() + 30
    async with grpc.aio.insecure_channel(server.api) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        while True:
            reply = await stub.ListSidecars(
                pb.ListSidecarsRequest(), metadata=[("authorization", f"Bearer {token}")]
            )
            if sum(s.connected for s in reply.sidecars) >= count:
                return
            assert time.monotonic() < deadline, "fake sidecars did not connect in time"
            await asyncio.sleep(0.1)  # poll interval; the deadline bounds the wait


@pytest.mark.timeout(300)
async def test_stopping_through_the_cli(launch: Launcher, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "state" / "faultplane.db"
    people = {"alice": "operator", "carl": "operator", "olga": "oncall", "vic": "viewer"}
    tokens = {name: create_token(db, name, role) for name, role in people.items()}
    server = launch(db, "--slos", str(SLO_FILE), "--baseline-min-seconds", "0")
    mesh = load_mesh(MESH_FILE)
    pods = list(mesh.services["payments-api"].pods)
    async with fake_sidecars(f"127.0.0.1:{server.xds_port}", mesh, pods):
        await _sidecars_connected(server, tokens["vic"], len(pods))
        files = {name: str(injection_file(tmp_path, name)) for name in people}

        # An operator stops a colleague's fault.
        first = ok_json(await cli(server, "inject", "-f", files["alice"], "--json",
                                  token=tokens["alice"]))  # fmt: skip
        assert first["state"] == "ACTIVE"
        (stopped,) = ok_json(await cli(server, "abort", first["id"], "--reason", "pager",
                                       "--json", token=tokens["carl"]))  # fmt: skip
        assert stopped["state"] == "ABORTED"
        assert stopped["reason"] == "aborted by carl (owner: alice): pager"

        # On-call may not start one, but presses the big red button.
        second = ok_json(await cli(server, "inject", "-f", files["alice"], "--json",
                                   token=tokens["alice"]))  # fmt: skip
        denied(
            await cli(server, "inject", "-f", files["olga"], token=tokens["olga"]),
            "role oncall may not call CreateInjection",
        )
        red = ok_json(await cli(server, "abort", "--all", "--freeze", "--reason", "incident",
                                "--json", token=tokens["olga"]))  # fmt: skip
        assert [(i["id"], i["state"]) for i in red] == [(second["id"], "ABORTED")]
        frozen = await cli(server, "inject", "-f", files["alice"], token=tokens["alice"])
        assert frozen.returncode == 1 and "FAILED_PRECONDITION" in frozen.stderr
        assert "by olga: incident" in frozen.stderr
        denied(await cli(server, "unfreeze", token=tokens["carl"]), "role operator may not")
        assert (await cli(server, "unfreeze", token=tokens["olga"])).returncode == 0

        # A viewer plans, and stops nothing.
        plan = ok_json(await cli(server, "plan", "-f", files["vic"], "--json",
                                 token=tokens["vic"]))  # fmt: skip
        assert len(plan["targets"]) == 4
        denied(await cli(server, "abort", "--all", token=tokens["vic"]), "role viewer")
        denied(await cli(server, "inject", "-f", files["vic"], token=tokens["vic"]),
               "role viewer")  # fmt: skip

        # The audit says who stopped whose fault.
        audit = [e["entry"] for e in ok_json(await cli(server, "audit", "--json",
                                                       token=tokens["vic"]))]  # fmt: skip
    ended = {e["injection_id"]: e for e in audit if e.get("to") == "ABORTED"}
    assert ended[first["id"]]["principal"] == "carl"
    assert "owner: alice" in ended[first["id"]]["reason"]
    assert ended[second["id"]]["principal"] == "olga"
    calls = {(e["method"], e["principal"], e["outcome"]) for e in audit if e["kind"] == "call"}
    assert ("AbortInjection", "carl", "OK") in calls
    assert ("AbortAllInjections", "olga", "OK") in calls
    assert ("Freeze", "olga", "OK") in calls
    assert ("CreateInjection", "olga", "PERMISSION_DENIED") in calls
    assert ("PlanInjection", "vic", "OK") in calls
