"""Every fault kind through overlay mode, on real Envoys faultplane does not configure.

One `faultplane serve --overlay` process; Envoys whose listeners, routes and clusters
come from static bootstraps built from `faultplane overlay envoy --json`, with the demo
app as their own app and as two dependencies (`fraud-scoring`, `ledger`). Faults reach
them only through the ECDS slots and the leased RTDS layer; each test asserts from
traffic, and from Envoy's own config dump where that says more.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from faultplane.demo.processes import wait_until
from faultplane.render.ecds import slot_name
from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import fault_runtime_keys, percentile, rpc_error, send, wait_state
from tests.overlay_envoy import (
    FINISHED,
    OverlayRig,
    Sidecar,
    overlay_request,
    running_rig,
    slot_faults,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Envoy's delay timer may fire a few milliseconds before the delay has fully elapsed.
TIMER_SLACK_MS = 5
PAYMENTS = {"service": "payments-api", "selector": "", "max_pods": 1, "upstream": None}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OverlayRig]:
    async with running_rig(tmp_path_factory.mktemp("overlay-faults")) as rig:
        yield rig


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def payments(rig: OverlayRig) -> Sidecar:
    """A plain-Envoy sidecar of payments-api (faultplane's own metadata keys)."""
    return await rig.sidecar(
        "payments-api-1",
        {
            "service": "payments-api",
            "labels": {"app": "payments-api", "shard": "south-1"},
        },
    )


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(rig: OverlayRig) -> AsyncIterator[None]:
    """Each test's injection is withdrawn before the next test starts."""
    yield
    await rig.abort_all()


async def test_fixed_delay_slows_every_inbound_request(rig: OverlayRig, payments: Sidecar) -> None:
    injection = await rig.inject(overlay_request(PAYMENTS, {"type": "latency", "fixed_ms": 300}))

    replies = await send(f"{payments.inbound}/pay", 20)
    slots = await slot_faults(payments.admin)
    keys = await fault_runtime_keys(payments.admin)

    assert [r.status for r in replies] == [200] * 20
    assert min(r.ms for r in replies) >= 300 - TIMER_SLACK_MS
    assert "delay" in slots[slot_name("inbound", 0)]
    assert slots[slot_name("outbound", 0)] == {}
    assert keys and all(injection.id in key for key in keys)


async def test_p50_p99_latency_takes_two_slots_and_shapes_the_distribution(
    rig: OverlayRig, payments: Sidecar
) -> None:
    await rig.inject(overlay_request(PAYMENTS, {"type": "latency", "p50_ms": 200, "p99_ms": 500}))

    replies = await send(f"{payments.inbound}/pay", 300)
    slots = await slot_faults(payments.admin)

    assert {r.status for r in replies} == {200}
    latencies = [r.ms for r in replies]
    assert min(latencies) >= 200 - TIMER_SLACK_MS
    # 4 % of requests get the 300 ms tail on top: fewer than 3 of 300 has odds ~4e-4.
    assert percentile(latencies, 0.5) < 500 <= percentile(latencies, 0.99)
    assert "delay" in slots[slot_name("inbound", 0)] and "delay" in slots[slot_name("inbound", 1)]


async def test_abort_503_hits_about_the_given_percentage(
    rig: OverlayRig, payments: Sidecar
) -> None:
    fault = {"type": "abort", "http_status": 503, "percentage": 30}
    await rig.inject(overlay_request(PAYMENTS, fault))

    replies = await send(f"{payments.inbound}/pay", 400)

    statuses = Counter(r.status for r in replies)
    assert set(statuses) == {200, 503}
    # Binomial(400, 0.3): mean 120, sd 9.2; outside 5 sd has odds below 1e-6.
    assert 74 <= statuses[503] <= 166, statuses


async def test_abort_grpc_status_fails_grpc_calls_with_that_status(
    rig: OverlayRig, payments: Sidecar
) -> None:
    await rig.inject(overlay_request(PAYMENTS, {"type": "abort", "grpc_status": 14}))

    async with grpc.aio.insecure_channel(payments.inbound.removeprefix("http://")) as channel:
        pay = channel.unary_unary("/payments.v1.Payments/Pay")
        errors = [await rpc_error(pay(b"", timeout=10)) for _ in range(5)]

    assert {(e.code(), e.details()) for e in errors} == {
        (grpc.StatusCode.UNAVAILABLE, "fault filter abort")
    }


async def test_bandwidth_limit_makes_a_large_body_take_longer(
    rig: OverlayRig, payments: Sidecar
) -> None:
    await rig.inject(overlay_request(PAYMENTS, {"type": "bandwidth", "kbps": 64}))

    [small] = await send(f"{payments.inbound}/pay?size=100")
    [large] = await send(f"{payments.inbound}/pay?size={64 * 1024}")

    assert (small.status, large.status) == (200, 200)
    assert large.size > 64 * 1024
    # 64 KiB at 64 KiB/s: about a second (Envoy's bucket lets a first chunk through).
    assert large.ms >= 700 and large.ms > small.ms + 500


async def test_outbound_fault_hits_only_calls_to_its_upstream_cluster(
    rig: OverlayRig, payments: Sidecar
) -> None:
    target = {**PAYMENTS, "upstream": "fraud-scoring"}
    await rig.inject(overlay_request(target, {"type": "abort", "http_status": 503}))

    fraud = await send(f"{payments.outbound}/score", 20, host="fraud-scoring")
    ledger = await send(f"{payments.outbound}/entry", 20, host="ledger")
    inbound = await send(f"{payments.inbound}/pay", 20)
    slots = await slot_faults(payments.admin)

    assert [r.status for r in fraud] == [503] * 20
    assert [r.status for r in ledger] == [200] * 20
    assert [r.status for r in inbound] == [200] * 20
    assert slots[slot_name("outbound", 0)]["upstream_cluster"] == "fraud-scoring"
    assert slots[slot_name("inbound", 0)] == {}


async def test_match_on_path_prefix_and_header_faults_only_matching_requests(
    rig: OverlayRig, payments: Sidecar
) -> None:
    match = {"path_prefix": "/api/v1", "headers": {"x-user": "canary"}}
    await rig.inject(
        overlay_request({**PAYMENTS, "match": match}, {"type": "abort", "http_status": 503})
    )
    canary = {"x-user": "canary"}

    both = await send(f"{payments.inbound}/api/v1/pay", 20, headers=canary)
    no_header = await send(f"{payments.inbound}/api/v1/pay", 20, headers={"x-user": "other"})
    other_path = await send(f"{payments.inbound}/api/v2/pay", 20, headers=canary)

    assert [r.status for r in both] == [503] * 20
    assert [r.status for r in no_header] == [200] * 20
    assert [r.status for r in other_path] == [200] * 20


async def test_at_the_deadline_the_fault_is_withdrawn_from_traffic_slots_and_runtime(
    rig: OverlayRig, payments: Sidecar
) -> None:
    injection = await rig.inject(
        overlay_request(PAYMENTS, {"type": "abort", "http_status": 503}, duration_seconds=3)
    )
    during = await send(f"{payments.inbound}/pay", 10)
    keys_during = await fault_runtime_keys(payments.admin)

    ended = await wait_state(rig.stub, injection.id, set(FINISHED), 30)
    after = await send(f"{payments.inbound}/pay", 20)
    slots = await slot_faults(payments.admin)
    keys_after = await fault_runtime_keys(payments.admin)

    assert [r.status for r in during] == [503] * 10 and keys_during
    assert ended.state == pb.COMPLETED, ended.reason
    assert [r.status for r in after] == [200] * 20
    assert slots and all(config == {} for config in slots.values()), slots
    assert keys_after == []


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def checkout(rig: OverlayRig) -> list[Sidecar]:
    """Four Istio-shaped sidecars of checkout (service from LABELS.app); the last one
    in namespace canary, the others in payments."""

    def istio_node(i: int) -> dict[str, object]:
        return {
            "NAME": f"checkout-{i}",
            "NAMESPACE": "canary" if i == 4 else "payments",
            "LABELS": {"app": "checkout", "version": "v1"},
            "INSTANCE_IPS": "127.0.0.1",
        }

    return list(
        await asyncio.gather(
            *(
                rig.sidecar(f"checkout-{i}.payments", istio_node(i), cluster="checkout.payments")
                for i in range(1, 5)
            )
        )
    )


async def faulted(sidecars: list[Sidecar]) -> dict[str, tuple[bool, set[int]]]:
    """Per node: whether its inbound slot 0 holds a fault, and its replies' statuses."""
    found = {}
    for sidecar in sidecars:
        slots = await slot_faults(sidecar.admin)
        replies = await send(f"{sidecar.inbound}/checkout", 10)
        found[sidecar.node_id] = (slots[slot_name("inbound", 0)] != {}, {r.status for r in replies})
    return found


async def test_max_pods_caps_an_istio_shaped_fleet_at_exactly_that_many(
    rig: OverlayRig, checkout: list[Sidecar]
) -> None:
    target = {"service": "checkout", "selector": "app=checkout", "max_pods": 3, "upstream": None}
    abort = {"type": "abort", "http_status": 503}
    injection = await rig.inject(overlay_request(target, abort, slo="checkout-inbound"))

    seen = await faulted(checkout)

    assert sorted(injection.matched) == sorted(s.node_id for s in checkout)
    assert len(injection.targets) == 3
    assert seen == {
        node: (True, {503}) if node in injection.targets else (False, {200}) for node in seen
    }

    # The guard reads the SLO from the targets' stats_address (Istio's INSTANCE_IPS rule
    # cannot reach them on loopback): their 503s, none of the untouched one's 200s. It
    # reads an increase between two samples, so traffic goes on until one is read.
    values: list[float] = []

    async def read() -> bool:
        await asyncio.gather(*(send(f"{s.inbound}/checkout", 5) for s in checkout))
        got = await rig.stub.GetInjection(pb.GetInjectionRequest(id=injection.id))
        values[:] = [r.value for r in got.readings if r.HasField("value")]
        return bool(values)

    await wait_until(read, 30, "a readable SLO reading")
    assert values[0] == 0.0


async def test_target_namespace_narrows_the_selection(
    rig: OverlayRig, checkout: list[Sidecar]
) -> None:
    target = {
        "service": "checkout", "selector": "", "max_pods": 3, "upstream": None,
        "namespace": "canary",
    }  # fmt: skip
    abort = {"type": "abort", "http_status": 503}
    injection = await rig.inject(overlay_request(target, abort, slo="checkout-inbound"))

    seen = await faulted(checkout)

    assert list(injection.matched) == list(injection.targets) == ["checkout-4.payments"]
    assert seen == {
        node: (True, {503}) if node == "checkout-4.payments" else (False, {200}) for node in seen
    }
