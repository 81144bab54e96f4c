"""The queue with real Envoy sidecars and a real `faultplane serve` (issue 14, phase 2).

What an operator relies on: a queued experiment's fault is really applied once it
starts, not just its state changed; and `faultplane queue` tells beforehand what will
run together and what after. Faults are told apart in traffic by the injection id Envoy
stamps on a faulted reply (INJECTION_HEADER)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
import pytest_asyncio

from faultplane.demo.launcher import MeshRun
from faultplane.render.faults import INJECTION_HEADER
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.helpers import injection_request, run_cli, send, wait_state

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    args = ("--ack-timeout", "20", "--baseline-min-seconds", "0")
    async with MeshRun(
        MESH_FILE, tmp_path_factory.mktemp("mesh"), load=False, server_args=args
    ) as mesh_run:
        yield mesh_run


@pytest_asyncio.fixture(loop_scope="module")
async def stub(run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        yield faultplane_pb2_grpc.FaultServiceStub(channel)


async def cli(run: MeshRun, *args: str) -> str:
    code, out, err = await run_cli(*args, "--api", run.api_address)
    assert code == 0, f"faultplane {' '.join(args)}: {err}"
    return out


async def faulted_by(run: MeshRun, pod: str) -> tuple[int, str]:
    """One request to the pod's inbound: (status, the injection that faulted it or '')."""
    url = f"http://127.0.0.1:{run.mesh.pod(pod).ports.ingress}/merchant-write"
    (reply,) = await send(url, method="POST")
    return reply.status, reply.headers.get(INJECTION_HEADER, "")


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def on(service: str, status: int, seconds: float, **top: object) -> pb.InjectionRequest:
    target = {"service": service, "selector": "", "max_pods": 4, "upstream": None}
    fault = {"type": "abort", "http_status": status}
    return injection_request(
        target=target, fault=fault, duration_seconds=seconds, on_conflict="ON_CONFLICT_QUEUE",
        **top,
    )  # fmt: skip


async def test_the_second_of_two_overlapping_experiments_starts_when_the_first_ends(
    run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    # Submitted at once, both asking to queue on conflict: one runs, the other waits.
    a, b = await asyncio.gather(
        stub.CreateInjection(on("payments-api", 503, 8), timeout=30),
        stub.CreateInjection(on("payments-api", 429, 8), timeout=30),
    )
    (first,) = [i for i in (a, b) if i.state != pb.QUEUED]
    (second,) = [i for i in (a, b) if i.state == pb.QUEUED]
    first_status, second_status = (503, 429) if first is a else (429, 503)
    assert second.waiting_reason.startswith(f"waits for {first.id} (same sidecar payments-api-")
    assert second.waiting_reason.endswith(", same scope)")

    await wait_state(stub, first.id, {pb.ACTIVE})
    assert await faulted_by(run, "payments-api-2") == (first_status, first.id)
    shown = await cli(run, "ls", "--state", "QUEUED")
    assert f"{second.id} {second.waiting_reason}" in shown
    assert f"waiting     {second.waiting_reason}" in await cli(run, "get", second.id)
    assert (await stub.GetInjection(pb.GetInjectionRequest(id=second.id))).state == pb.QUEUED

    # The first reaches its deadline; the second starts, and its fault is in traffic.
    await wait_state(stub, first.id, {pb.COMPLETED}, timeout=30)
    started = await wait_state(stub, second.id, {pb.ACTIVE}, timeout=30)
    assert (
        started.activated_at.ToSeconds()
        >= (await stub.GetInjection(pb.GetInjectionRequest(id=first.id))).ended_at.ToSeconds() - 1
    )  # started after the first ended (clock granularity)
    assert await faulted_by(run, "payments-api-2") == (second_status, second.id)
    await stub.AbortInjection(pb.AbortInjectionRequest(id=second.id, reason="test done"))
    assert await faulted_by(run, "payments-api-2") == (200, "")


async def test_three_queued_two_conflicting_run_two_together_then_the_third(
    run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    begin = time.time() + 6  # time for `faultplane queue` to show the plan first
    fraud = await stub.CreateInjection(on("fraud-scoring", 503, 6, not_before=stamp(begin)))
    ledger = await stub.CreateInjection(on("ledger", 503, 12, not_before=stamp(begin)))
    later = await stub.CreateInjection(on("fraud-scoring", 429, 6, not_before=stamp(begin)))
    assert {fraud.state, ledger.state, later.state} == {pb.QUEUED}

    rows = {r["injection_id"]: r for r in json.loads(await cli(run, "queue", "--json"))}
    assert rows[fraud.id]["status"] == rows[ledger.id]["status"] == "starts"
    assert rows[fraud.id]["start"] == rows[ledger.id]["start"]
    # The third is planned for when the one it conflicts with ends.
    assert rows[later.id]["status"] == "starts"
    assert rows[later.id]["start"] == rows[fraud.id]["end"]
    table = await cli(run, "queue")
    assert "WAITS NOW FOR" in table and later.id in table

    await wait_state(stub, fraud.id, {pb.ACTIVE}, timeout=30)
    await wait_state(stub, ledger.id, {pb.ACTIVE}, timeout=30)
    waiting = await stub.GetInjection(pb.GetInjectionRequest(id=later.id))
    assert waiting.state == pb.QUEUED
    assert waiting.waiting_reason.startswith(f"waits for {fraud.id} (same sidecar fraud-scoring-")
    assert (await faulted_by(run, "fraud-scoring-1"))[1] == fraud.id
    assert (await faulted_by(run, "ledger-1"))[1] == ledger.id

    await wait_state(stub, later.id, {pb.ACTIVE}, timeout=30)
    assert (await stub.GetInjection(pb.GetInjectionRequest(id=fraud.id))).state == pb.COMPLETED
    assert await faulted_by(run, "fraud-scoring-1") == (429, later.id)
    await stub.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="test done"))
    # AbortAll returns once every target ACKed the withdrawal.
    for pod in ("fraud-scoring-1", "ledger-1"):
        assert await faulted_by(run, pod) == (200, ""), pod


async def test_with_the_dependency_rule_a_caller_waits_for_its_dependency(
    run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    """payments-api calls fraud-scoring (mesh.yaml): with the rule on, an experiment on
    payments-api waits while one on fraud-scoring runs, then its fault is in traffic."""
    await cli(run, "policy", "set", "--dependency-rule", "on")
    try:
        dependency = await stub.CreateInjection(on("fraud-scoring", 503, 6), timeout=30)
        caller = await stub.CreateInjection(on("payments-api", 429, 30), timeout=30)
        assert caller.state == pb.QUEUED
        assert caller.waiting_reason == (
            f"waits for {dependency.id} (payments-api depends on fraud-scoring: same request path)"
        )
        await wait_state(stub, dependency.id, {pb.ACTIVE}, timeout=30)
        # Not yet faulted itself (its call to fraud-scoring fails: the dependency's fault).
        assert (await faulted_by(run, "payments-api-2"))[1] == ""
        await wait_state(stub, dependency.id, {pb.COMPLETED}, timeout=30)
        await wait_state(stub, caller.id, {pb.ACTIVE}, timeout=30)
        assert await faulted_by(run, "payments-api-2") == (429, caller.id)
    finally:
        await cli(run, "policy", "set", "--dependency-rule", "off")
        await stub.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="test done"))
