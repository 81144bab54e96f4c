"""Notifications from a real server driving a real Envoy mesh, to real HTTP receivers.

The mesh and the per-test server come from tests/test_metrics_live.py (one mesh for the
module); the receivers are tests/test_notify_delivery.py's `Receiver`.
"""

# ruff: noqa: F811 (`mesh_run`, `start`, `stub` are fixtures imported from test_metrics_live)
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from faultplane.demo.processes import wait_until
from faultplane.notify.courier import DeliveryPolicy
from faultplane.notify.targets import NotifyTarget, parse_target
from faultplane.observability import metrics
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.helpers import injection_request, until, wait_state
from tests.test_metrics_live import (  # noqa: F401 - fixtures, shared with this module
    ALL_PAYMENTS_INBOUND,
    HARMLESS,
    Start,
    guarded,
    mesh_run,
    start,
    stub,
)
from tests.test_notify_delivery import Receiver

pytestmark = pytest.mark.asyncio(loop_scope="module")

WEB = "http://127.0.0.1:8080"
FAST = DeliveryPolicy(attempts=40, first_delay=0.05, max_delay=0.5, timeout=5.0)
Stub = faultplane_pb2_grpc.FaultServiceStub


@pytest_asyncio.fixture(loop_scope="module")
async def hooks() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """A generic-JSON receiver and a Slack-format one, both up."""
    receivers = (Receiver(), Receiver())
    for receiver in receivers:
        await receiver.up()
    try:
        yield receivers
    finally:
        for receiver in receivers:
            await receiver.down()


def harmless(seconds: float) -> pb.InjectionRequest:
    return injection_request(target=ALL_PAYMENTS_INBOUND, fault=HARMLESS, duration_seconds=seconds)


async def test_receivers_are_told_of_start_completion_aborts_and_freeze(
    start: Start, stub: Stub, hooks: tuple[Receiver, Receiver]
) -> None:
    plain, slack = hooks
    targets = (NotifyTarget(plain.url), parse_target("slack+" + slack.url))
    await start(notify=targets, web_url=WEB, notify_policy=FAST)

    held = await stub.CreateInjection(harmless(1.5))
    held_done = await wait_state(stub, held.id, {pb.COMPLETED})
    stopped = await stub.CreateInjection(harmless(120))
    await wait_state(stub, stopped.id, {pb.ACTIVE})
    await stub.AbortInjection(pb.AbortInjectionRequest(id=stopped.id, reason="paged at 2:47"))
    refuted = await stub.CreateInjection(
        injection_request(target=ALL_PAYMENTS_INBOUND,
                          fault={"type": "abort", "http_status": 503, "percentage": 100},
                          duration_seconds=60, **guarded(0.99, 1))
    )  # fmt: skip
    await wait_state(stub, refuted.id, {pb.ABORTED}, 30)
    await stub.Freeze(pb.FreezeRequest(reason="INC-7 in progress"))
    await until(lambda: plain.events()[-1:] == ["frozen"], 10, "the freeze notification")
    await stub.Unfreeze(pb.UnfreezeRequest())

    expected = [
        ("started", held.id), ("completed", held.id),
        ("started", stopped.id), ("aborted", stopped.id),
        ("started", refuted.id), ("guard_abort", refuted.id),
        ("frozen", ""), ("unfrozen", ""),
    ]  # fmt: skip
    await until(lambda: len(plain.bodies) >= len(expected), 15, "every notification")
    assert [(b["event"], b["injection_id"]) for b in plain.bodies] == expected

    completed = plain.bodies[1]
    assert completed["owner"] == "sre-oncall@paysetu.example"
    assert completed["services"] == ["payments-api"]
    assert sorted(completed["targets"]) == sorted(held_done.targets)
    assert completed["faults"] == ["latency 1ms on 100% of payments-api inbound"]
    assert completed["ends_at"] == pytest.approx(held_done.ends_at.ToNanoseconds() / 1e9)
    assert completed["verdict"] == "hypothesis held"
    assert completed["link"] == f"{WEB}/experiments/{held.id}"
    assert "paged at 2:47" in plain.bodies[3]["reason"]
    assert plain.bodies[5]["verdict"] == "hypothesis refuted"
    assert plain.bodies[5]["reason"].startswith("steady-state breach: merchant-write-success")
    assert plain.bodies[6]["reason"] == "INC-7 in progress" and plain.bodies[6]["by"] == "local"

    await until(lambda: len(slack.bodies) >= len(expected), 15, "every Slack message")
    texts = [body["text"] for body in slack.bodies]
    assert texts[0].startswith(f"Fault injection started: {held.id} owned by sre-oncall")
    assert f"Experiment: {WEB}/experiments/{refuted.id}" in texts[5]
    assert texts[5].startswith("Guard aborted a fault injection")
    assert texts[6].startswith("Fault injection frozen by local")


async def test_a_receiver_down_for_a_while_gets_the_notifications_by_retries(
    start: Start, stub: Stub
) -> None:
    receiver = Receiver()  # not listening yet: every first attempt is refused
    try:
        await start(notify=(NotifyTarget(receiver.url),), notify_policy=FAST)
        retried = metrics.NOTIFICATIONS.labels("retried")._value.get()
        injection = await stub.CreateInjection(harmless(1))
        await wait_state(stub, injection.id, {pb.COMPLETED})
        await until(
            lambda: metrics.NOTIFICATIONS.labels("retried")._value.get() >= retried + 2,
            10, "attempts to fail while the receiver is down",
        )  # fmt: skip
        assert receiver.bodies == []
        await receiver.up()
        await until(lambda: len(receiver.bodies) == 2, 15, "the retries to deliver")
        assert receiver.events() == ["started", "completed"]
    finally:
        await receiver.down()


async def test_a_receiver_that_never_answers_2xx_leaves_audit_records(
    start: Start, stub: Stub, hooks: tuple[Receiver, Receiver]
) -> None:
    failing = hooks[0]
    failing.status = 503
    policy = DeliveryPolicy(attempts=3, first_delay=0.05, max_delay=0.1, timeout=5.0)
    await start(notify=(NotifyTarget(failing.url),), notify_policy=policy)
    injection = await stub.CreateInjection(harmless(1))
    await wait_state(stub, injection.id, {pb.COMPLETED})

    async def audited() -> list[dict[str, object]]:
        page = await stub.ListAudit(pb.ListAuditRequest(injection_id=injection.id))
        entries = [json.loads(e.entry_json) for e in page.entries]
        return [e for e in entries if e["kind"] == "notification"]

    found: list[list[dict[str, object]]] = [[]]

    async def both() -> bool:
        found[0] = await audited()
        return len(found[0]) == 2

    await wait_until(both, 15, "both undelivered notifications in the audit")
    assert [e["method"] for e in found[0]] == ["notify.started", "notify.completed"]
    assert all(e["outcome"] == "FAILED" and "HTTP 503" in str(e["detail"]) for e in found[0])
    assert failing.attempts == 6 and failing.bodies == []


async def test_a_hanging_receiver_does_not_delay_a_withdrawal(
    start: Start, stub: Stub, hooks: tuple[Receiver, Receiver]
) -> None:
    hanging = hooks[0]
    hanging.hang()
    policy = DeliveryPolicy(attempts=1, timeout=120.0)
    await start(notify=(NotifyTarget(hanging.url),), notify_policy=policy)
    injection = await stub.CreateInjection(harmless(120))
    await wait_state(stub, injection.id, {pb.ACTIVE})
    await until(lambda: hanging.hanging == 1, 10, "the start notification to hang")

    began = time.monotonic()
    aborted = await stub.AbortInjection(pb.AbortInjectionRequest(id=injection.id, reason="x"))
    took = time.monotonic() - began

    assert aborted.state == pb.ABORTED
    assert all(e.outcome == "acked" for e in aborted.transitions[-1].evidence)
    # The withdrawal finished while the receiver still held the notification open.
    assert hanging.hanging == 1 and hanging.bodies == []
    assert took < 5.0, f"withdrawal took {took:.2f}s"


async def test_without_web_url_links_point_at_the_servers_own_dashboard(
    start: Start, stub: Stub, hooks: tuple[Receiver, Receiver]
) -> None:
    plain = hooks[0]
    server = await start(notify=(NotifyTarget(plain.url),), notify_policy=FAST, web_port=0)
    assert server.web is not None
    injection = await stub.CreateInjection(harmless(1))
    await until(lambda: len(plain.bodies) == 1, 15, "the start notification")
    assert plain.bodies[0]["link"] == f"{server.web.url.rstrip('/')}/experiments/{injection.id}"
