"""Governance through the real API: authentication, roles, owners, the two-person rule,
freeze, the audit trail, concurrent admission, mutual TLS.

The control server runs in-process with token auth and its own SQLite file; the mesh's
payments-api pods are fake sidecars (real ADS clients on loopback that ACK like Envoy).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from faultplane.auth.tokens import new_token, token_hash
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.model.mesh import Mesh
from faultplane.server.control import ControlServer, ServerConfig, TlsConfig
from faultplane.store import NewToken
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import server_config
from tests.fake_sidecar import start_with_sidecars
from tests.helpers import injection_request, rpc_error, wait_state
from tests.test_auth import Pki, pki  # noqa: F401 (the certificate fixture)

INBOUND = {"selector": "", "max_pods": 4, "upstream": None}
ABORT = {"type": "abort", "http_status": 503}


class Api:
    """A server, its tokens, and calls made as one principal or another."""

    def __init__(self, server: ControlServer, channel: grpc.aio.Channel) -> None:
        self.server = server
        self.stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        self.tokens: dict[str, str] = {}

    def issue(self, principal: str, role: str) -> str:
        token_id, token = new_token()
        self.server.store.tokens.add(
            NewToken(token_id, principal, role, token_hash(token), time.time())
        )
        self.tokens[principal] = token
        return token

    def call(self, method: str, request, as_: str | None) -> Awaitable:
        metadata = [("authorization", f"Bearer {self.tokens[as_]}")] if as_ else []
        return getattr(self.stub, method)(request, metadata=metadata, timeout=20)


Start = Callable[..., Awaitable[Api]]


@pytest_asyncio.fixture
async def start(mesh: Mesh, tmp_path: Path) -> AsyncIterator[Start]:
    async with AsyncExitStack() as stack:

        async def start_api(**config) -> Api:
            server, channel = await start_with_sidecars(
                stack,
                server_config(mesh, db_path=tmp_path / "faultplane.db", auth="token", **config),
                list(mesh.services["payments-api"].pods),
            )
            api = Api(server, channel)
            for principal, role in (("vic", "viewer"), ("alice", "operator"),
                                    ("bob", "approver"), ("root", "admin")):  # fmt: skip
                api.issue(principal, role)
            return api

        yield start_api


def request_by(owner: str, **overrides) -> pb.InjectionRequest:
    return injection_request(**{"target": INBOUND, "fault": ABORT, "owner": owner, **overrides})


async def audit_entries(api: Api, **filters) -> list[dict]:
    reply = await api.call("ListAudit", pb.ListAuditRequest(**filters), "root")
    return [json.loads(e.entry_json) for e in reply.entries]


async def test_no_token_is_unauthenticated_and_the_refusal_is_audited(start: Start) -> None:
    api = await start()

    error = await rpc_error(api.call("ListInjections", pb.ListInjectionsRequest(), None))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = [e for e in await audit_entries(api) if e.get("outcome") == "UNAUTHENTICATED"]
    assert refused and refused[0]["method"] == "ListInjections"


@pytest.mark.parametrize(
    ("method", "request_message", "allowed"),
    [
        ("ListInjections", pb.ListInjectionsRequest(), {"vic", "alice", "bob", "root"}),
        ("ListSidecars", pb.ListSidecarsRequest(), {"vic", "alice", "bob", "root"}),
        ("ListAudit", pb.ListAuditRequest(), {"vic", "alice", "bob", "root"}),
        # Every role may plan; vic and bob are refused here only for naming alice as owner.
        ("PlanInjection", request_by("alice"), {"alice", "root"}),
        ("ApproveInjection", pb.ApproveInjectionRequest(id="inj-x"), {"bob", "root"}),
        # Stopping is easier than starting: every role but a viewer stops and freezes...
        ("AbortAllInjections", pb.AbortAllInjectionsRequest(), {"alice", "bob", "root"}),
        ("Freeze", pb.FreezeRequest(reason="r"), {"alice", "bob", "root"}),
        # ...but lifting a freeze is for oncall and admin (test_roles_stop has oncall).
        ("Unfreeze", pb.UnfreezeRequest(), {"root"}),
    ],
)
async def test_each_role_against_each_method(
    start: Start, method: str, request_message, allowed: set[str]
) -> None:
    api = await start()
    for principal in ("vic", "alice", "bob", "root"):
        try:
            await api.call(method, request_message, principal)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        if principal in allowed:
            assert code not in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            ), (principal, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (principal, code)
    denied = [e for e in await audit_entries(api) if e.get("outcome") == "PERMISSION_DENIED"]
    assert {e["principal"] for e in denied if e["method"] == method} == {
        "vic",
        "alice",
        "bob",
        "root",
    } - allowed


async def test_owner_is_the_caller_unless_an_admin_files_it(start: Start) -> None:
    api = await start()

    spoofed = await rpc_error(api.call("CreateInjection", request_by("bob"), "alice"))
    for_bob = await api.call("CreateInjection", request_by("bob"), "root")
    # Stopping is easier than starting: alice may stop bob's fault, and it says whose.
    stopped = await api.call("AbortInjection", pb.AbortInjectionRequest(id=for_bob.id), "alice")

    assert spoofed.code() == grpc.StatusCode.PERMISSION_DENIED and "owner" in spoofed.details()
    assert for_bob.owner == "bob"
    assert stopped.state == pb.ABORTED and stopped.reason == "aborted by alice (owner: bob)"
    created = [e for e in await audit_entries(api) if e.get("method") == "CreateInjection"]
    assert [(e["principal"], e["outcome"]) for e in created] == [
        ("alice", "PERMISSION_DENIED"), ("root", "OK"),
    ]  # fmt: skip


async def test_two_person_rule(start: Start) -> None:
    api = await start(approval=ApprovalPolicy(max_pods=2, timeout_seconds=60))

    parked = await api.call("CreateInjection", request_by("alice"), "alice")
    self_approval = await rpc_error(
        api.call("ApproveInjection", pb.ApproveInjectionRequest(id=parked.id), "alice")
    )
    approved = await api.call("ApproveInjection", pb.ApproveInjectionRequest(id=parked.id), "bob")
    active = await wait_state(_As(api, "bob"), parked.id, {pb.ACTIVE})

    assert parked.state == pb.PENDING_APPROVAL and "max_pods 4 > 2" in parked.reason
    assert self_approval.code() == grpc.StatusCode.PERMISSION_DENIED
    assert approved.id == parked.id
    assert active.approved_by == "bob"
    assert [t.to_state for t in active.transitions] == [pb.PENDING_APPROVAL, pb.PENDING, pb.ACTIVE]
    small = await api.call(
        "CreateInjection",
        request_by("alice", target={**INBOUND, "max_pods": 1, "upstream": "ledger"}),
        "alice",
    )
    assert small.state == pb.PENDING  # within the limits: no second person needed


async def test_an_admin_cannot_approve_their_own_injection(start: Start) -> None:
    api = await start(approval=ApprovalPolicy(max_pods=2, timeout_seconds=60))
    parked = await api.call("CreateInjection", request_by("root"), "root")

    error = await rpc_error(
        api.call("ApproveInjection", pb.ApproveInjectionRequest(id=parked.id), "root")
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "someone else must approve it" in error.details()


async def test_unapproved_injection_expires(start: Start) -> None:
    api = await start(approval=ApprovalPolicy(max_pods=2, timeout_seconds=0.5))

    parked = await api.call("CreateInjection", request_by("alice"), "alice")
    expired = await wait_state(_As(api, "alice"), parked.id, {pb.ABORTED}, timeout=10)

    assert expired.reason == "approval expired after 0.5s"
    late = await rpc_error(
        api.call("ApproveInjection", pb.ApproveInjectionRequest(id=parked.id), "bob")
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_concurrent_creation_admits_exactly_one_per_traffic_scope(start: Start) -> None:
    api = await start()
    scopes = [
        {"upstream": "fraud-scoring"},
        {"upstream": "ledger"},
        {"upstream": None},
        {"upstream": None, "match": {"path_prefix": "/refunds"}},
        {"upstream": None, "match": {"path_prefix": "/payouts"}},
    ]
    requests = [
        request_by(
            "root",
            target={**INBOUND, **scopes[i % len(scopes)]},
            fault={"type": "latency", "fixed_ms": 5},
        )
        for i in range(50)
    ]

    results = await asyncio.gather(
        *(api.call("CreateInjection", r, "root") for r in requests), return_exceptions=True
    )

    winners = [r for r in results if isinstance(r, pb.Injection)]
    losers = [r for r in results if not isinstance(r, pb.Injection)]
    assert len(winners) == len(scopes)
    assert (
        len({(w.request.target.upstream, w.request.target.match.path_prefix) for w in winners}) == 5
    )
    assert all(e.code() == grpc.StatusCode.FAILED_PRECONDITION for e in losers)
    winner_ids = {w.id for w in winners}
    assert all(any(i in e.details() for i in winner_ids) for e in losers)
    live = await api.call(
        "ListInjections", pb.ListInjectionsRequest(states=[pb.PENDING, pb.ACTIVE]), "root"
    )
    assert {i.id for i in live.injections} == winner_ids


async def test_freeze_refuses_new_injections_until_lifted(start: Start) -> None:
    api = await start()
    live = await api.call("CreateInjection", request_by("alice"), "alice")

    await api.call("Freeze", pb.FreezeRequest(reason="peak trading"), "root")
    aborted = await api.call(
        "AbortAllInjections", pb.AbortAllInjectionsRequest(reason="red button"), "root"
    )
    frozen = await rpc_error(api.call("CreateInjection", request_by("alice"), "alice"))
    state = await api.call("GetFreeze", pb.GetFreezeRequest(), "vic")
    await api.call("Unfreeze", pb.UnfreezeRequest(), "root")
    after = await api.call("CreateInjection", request_by("alice"), "alice")

    assert [i.id for i in aborted.aborted] == [live.id]
    assert frozen.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "frozen until lifted by root: peak trading" in frozen.details()
    assert state.frozen and state.by == "root"
    assert after.state == pb.PENDING


async def test_audit_chain_records_calls_transitions_and_sidecar_answers(
    start: Start, tmp_path: Path
) -> None:
    api = await start()
    created = await api.call("CreateInjection", request_by("alice", duration_seconds=60), "alice")
    await wait_state(_As(api, "alice"), created.id, {pb.ACTIVE})
    await api.call(
        "AbortInjection", pb.AbortInjectionRequest(id=created.id, reason="done"), "alice"
    )

    entries = await audit_entries(api, injection_id=created.id)
    verdict = await api.call("VerifyAudit", pb.VerifyAuditRequest(), "vic")

    transitions = [e for e in entries if e["kind"] == "transition"]
    assert [(t["from"], t["to"]) for t in transitions] == [
        (None, "PENDING"), ("PENDING", "ACTIVE"), ("ACTIVE", "ABORTED"),
    ]  # fmt: skip
    assert transitions[-1]["principal"] == "alice"
    answers = {(e["sidecar"], e["type"], e["outcome"]) for e in transitions[1]["evidence"]}
    pods = {f"payments-api-{i}" for i in range(1, 5)}
    assert answers == {(pod, kind, "acked") for pod in pods for kind in ("rds", "rtds")}
    calls = [(e["method"], e["principal"]) for e in entries if e["kind"] == "call"]
    assert ("CreateInjection", "alice") in calls and ("AbortInjection", "alice") in calls
    assert verdict.ok and verdict.entries > len(entries)


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap"])
async def test_audit_verify_finds_where_the_chain_breaks(
    start: Start, tmp_path: Path, tamper: str
) -> None:
    api = await start()
    for _ in range(3):
        await api.call("ListInjections", pb.ListInjectionsRequest(), "vic")
    await api.server.stop(grace=0)
    db = tmp_path / "faultplane.db"
    with sqlite3.connect(db) as conn:
        if tamper == "edit":
            conn.execute("UPDATE audit SET entry = replace(entry, 'vic', 'eve') WHERE seq = 2")
        elif tamper == "delete":
            conn.execute("DELETE FROM audit WHERE seq = 2")
        else:
            rows = dict(conn.execute("SELECT seq, entry FROM audit WHERE seq IN (2, 3)").fetchall())
            conn.execute("UPDATE audit SET entry = ? WHERE seq = 2", (rows[3],))
            conn.execute("UPDATE audit SET entry = ? WHERE seq = 3", (rows[2],))

    result = subprocess.run(
        [sys.executable, "-m", "faultplane", "audit", "verify", "--db", str(db)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert result.returncode == 1
    assert "audit chain BROKEN" in result.stdout
    assert "entry 2" in result.stdout or "between 1 and 3" in result.stdout, result.stdout


async def test_mtls_principal_is_the_client_certificate_subject(
    mesh: Mesh,
    tmp_path: Path,
    pki: Pki,  # noqa: F811
) -> None:
    from faultplane.auth.tls import channel_credentials

    server = ControlServer(
        ServerConfig(
            mesh=mesh, metrics_port=None, db_path=tmp_path / "db", auth="token",
            tls=TlsConfig(pki.server_cert, pki.server_key, pki.ca),
        )
    )  # fmt: skip
    await server.start()
    try:
        token_id, token = new_token()
        server.store.tokens.add(
            NewToken(token_id, "CN=alice,O=sre", "operator", token_hash(token), time.time())
        )
        credentials = channel_credentials(pki.ca, pki.alice_cert, pki.alice_key)
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.api_port}", credentials) as channel:
            stub = faultplane_pb2_grpc.FaultServiceStub(channel)
            await stub.ListInjections(
                pb.ListInjectionsRequest(), metadata=[("authorization", f"Bearer {token}")]
            )
        entries = server.store.audit.entries()
        assert entries[-1].entry["principal"] == "CN=alice,O=sre"
        assert entries[-1].entry["via"] == "mtls"
    finally:
        await server.stop(grace=0)


class _As:
    """A stub whose calls carry one principal's token (for helpers that take a stub)."""

    def __init__(self, api: Api, principal: str) -> None:
        self._api, self._principal = api, principal

    def __getattr__(self, method: str):
        return lambda request, **_: self._api.call(method, request, self._principal)
