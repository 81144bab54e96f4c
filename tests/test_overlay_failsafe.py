"""Overlay mode's guarantees when something dies, on real Envoys and a real server process.

The server is `faultplane serve --overlay --deadman-ttl 3` as a child process, so it can
be SIGKILLed; Envoys come from static bootstraps built from `faultplane overlay envoy
--json`. Each guarantee is read from traffic first: a fault that is "off" is a request
that gets the app's 200, not a state in faultplane's own records.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from faultplane.demo.processes import wait_until
from faultplane.render.ecds import slot_name
from faultplane.v1 import faultplane_pb2 as pb
from tests.cli_processes import START_TIMEOUT, cli, ok
from tests.helpers import fault_runtime_keys, wait_state
from tests.overlay_envoy import (
    SETTLED,
    OverlayRig,
    Sidecar,
    attached,
    overlay_request,
    running_rig,
    slot_faults,
    stat_values,
    streams_connected,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEADMAN_TTL = 3.0
# A live injection for as long as any test here needs one; each test aborts its own.
LONG = 120
ABORT = {"type": "abort", "http_status": 503}
PAYMENTS = {"service": "payments-api", "selector": "", "max_pods": 1, "upstream": None}
# A restarted server or Envoy reconnects on its own backoff: RTDS within ~1 s of the
# server answering, ECDS streams after up to ~10 s (measured, FINDINGS §4); generous
# for a loaded 2-core machine.
RECONNECT_TIMEOUT = 45.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OverlayRig]:
    run_dir = tmp_path_factory.mktemp("overlay-failsafe")
    async with running_rig(run_dir, "--deadman-ttl", str(DEADMAN_TTL)) as rig:
        yield rig


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def payments(rig: OverlayRig) -> Sidecar:
    metadata = {"service": "payments-api", "labels": {"app": "payments-api"}}
    return await rig.sidecar("payments-api-1", metadata)


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(rig: OverlayRig, payments: Sidecar) -> AsyncIterator[None]:
    """Every test ends with a serving server, no live injection and the shared sidecar's
    every stream connected (a test that restarted the server leaves each one
    reconnecting on its own backoff)."""
    yield
    if not (rig.server.child and rig.server.child.alive()):
        rig.server.start()
        await rig.server.healthy()
    await rig.abort_all()
    await wait_until(lambda: streams_connected(payments), RECONNECT_TIMEOUT, "every stream back")


async def status(url: str) -> int:
    """One request's status; 0 when it got no HTTP answer at all."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def until_status(url: str, wanted: int, timeout: float, what: str) -> float:
    """Poll `url` until it answers `wanted`; returns the seconds that took."""
    started = time.monotonic()
    await wait_until(lambda: _is(url, wanted), timeout, what, interval=0.02)
    return time.monotonic() - started


async def _is(url: str, wanted: int) -> bool:
    return await status(url) == wanted


async def test_sigkill_of_server_clears_fault_within_ttl_and_restart_resumes_it(
    rig: OverlayRig, payments: Sidecar
) -> None:
    injection = await rig.inject(overlay_request(PAYMENTS, ABORT, duration_seconds=LONG))
    url = f"{payments.inbound}/pay"
    assert await status(url) == 503

    assert rig.server.child is not None
    rig.server.child.kill()
    off_after = await until_status(url, 200, DEADMAN_TTL + 10, "the lease to run out")
    runtime_keys = await fault_runtime_keys(payments.admin)
    rig.server.child.stop()  # reaped

    # Faultplane's lease is the only thing that ran out: the sidecar's own listeners,
    # routes and clusters (the app's 200 above) never depended on it.
    assert off_after <= DEADMAN_TTL + 1
    assert runtime_keys == []

    rig.server.start()
    await rig.server.healthy()
    await until_status(url, 503, RECONNECT_TIMEOUT, "the restored fault")
    resumed = await rig.stub.GetInjection(pb.GetInjectionRequest(id=injection.id))

    assert resumed.state == pb.ACTIVE, resumed.reason
    assert resumed.ends_at == injection.ends_at  # the remaining time, not a fresh duration


async def test_injection_right_after_a_server_restart_waits_for_slot_streams_still_reconnecting(
    rig: OverlayRig, payments: Sidecar
) -> None:
    # The sidecar has every slot; after an outage Envoy reconnects each slot's stream on
    # its own backoff, seconds apart. An injection in that window must wait for them,
    # not fail the sidecar as lacking a slot its config declares.
    failures = "faultplane_xds.upstream_cx_connect_fail"
    before = (await stat_values(payments.admin, failures)).get(f"cluster.{failures}", 0)
    rig.server.stop()

    # Each of its 5 streams has failed to reconnect about twice: backed off, yet due back
    # within the ACK timeout (Envoy's jittered backoff doubles from 0.5 s per failure, so
    # deeper backoff could outlast it, and then judging the sidecar would be right).
    async def backed_off() -> bool:
        values = await stat_values(payments.admin, failures)
        return values.get(f"cluster.{failures}", 0) >= before + 10

    await wait_until(backed_off, RECONNECT_TIMEOUT, "Envoy to back off reconnecting")
    rig.server.start()
    await rig.server.healthy()

    async def reconnected() -> bool:
        reply = await rig.stub.ListSidecars(pb.ListSidecarsRequest(service="payments-api"))
        return any(s.connected for s in reply.sidecars)

    await wait_until(reconnected, RECONNECT_TIMEOUT, "the sidecar to reconnect")
    created = await rig.stub.CreateInjection(overlay_request(PAYMENTS, ABORT), timeout=10)
    injection = await wait_state(rig.stub, created.id, set(SETTLED), 30)

    assert injection.state == pb.ACTIVE, injection.reason
    assert await status(f"{payments.inbound}/pay") == 503


async def test_envoy_restarted_mid_injection_gets_the_fault_back(
    rig: OverlayRig, payments: Sidecar
) -> None:
    injection = await rig.inject(overlay_request(PAYMENTS, ABORT, duration_seconds=LONG))
    url = f"{payments.inbound}/pay"
    assert await status(url) == 503

    rig.restart_sidecar(payments)
    await rig.wait_live(payments, attach=False)
    await until_status(url, 503, RECONNECT_TIMEOUT, "the fault on the restarted Envoy")
    slots = await slot_faults(payments.admin)
    still = await rig.stub.GetInjection(pb.GetInjectionRequest(id=injection.id))

    assert slots[slot_name("inbound", 0)]["abort"]["http_status"] == 503
    assert (still.state, still.ends_at) == (pb.ACTIVE, injection.ends_at)


async def test_sidecar_without_outbound_slots_fails_an_outbound_fault_naming_it_and_the_slot(
    rig: OverlayRig,
) -> None:
    metadata = {"service": "ledger-client", "labels": {"app": "ledger-client"}}
    sidecar = await rig.sidecar("ledger-client-1", metadata, slots=("inbound",))
    target = {
        "service": "ledger-client",
        "selector": "",
        "max_pods": 1,
        "upstream": "fraud-scoring",
    }

    created = await rig.stub.CreateInjection(overlay_request(target, ABORT), timeout=10)
    ended = await wait_state(rig.stub, created.id, set(SETTLED), 30)

    assert ended.state == pb.FAILED
    assert "ledger-client-1" in ended.reason and slot_name("outbound", 0) in ended.reason
    assert await fault_runtime_keys(sidecar.admin) == []  # nothing was switched on


async def test_duplicate_node_id_is_refused_audited_and_the_registry_tells_the_truth(
    rig: OverlayRig,
) -> None:
    since = time.time()
    first = await rig.sidecar("twin-1", {"service": "twin", "labels": {"copy": "first"}})
    second = await rig.sidecar(
        "twin-1", {"service": "twin", "labels": {"copy": "second"}}, attach=False
    )

    async def refusal_audited() -> bool:
        reply = await rig.stub.ListAudit(pb.ListAuditRequest(since=since, page_size=1000))
        entries = [json.loads(e.entry_json) for e in reply.entries]
        return any(
            (e.get("method"), e.get("principal"), e.get("outcome"))
            == ("xds.duplicate_node", "twin-1", "ALREADY_EXISTS")
            for e in entries
        )

    await wait_until(refusal_audited, 30, "the refused duplicate in the audit log")
    listed = json.loads(ok(await cli("sidecars", "--json", "--api", rig.server.api)))
    twins = [s for s in listed if s["node_id"] == "twin-1"]

    assert [(s["labels"], s["connected"]) for s in twins] == [({"copy": "first"}, True)]
    assert not await attached(second)  # its streams were refused: no layer, no slot

    first.child.stop()

    async def second_holds_it() -> bool:
        reply = await rig.stub.ListSidecars(pb.ListSidecarsRequest(service="twin"))
        return [(dict(s.labels), s.connected) for s in reply.sidecars] == [
            ({"copy": "second"}, True)
        ]

    await wait_until(second_holds_it, RECONNECT_TIMEOUT, "the second twin to hold twin-1")
    await wait_until(lambda: attached(second), START_TIMEOUT, "the second twin attached")
