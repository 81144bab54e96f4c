"""The per-type xDS services of overlay mode (RTDS, ECDS) over real gRPC on loopback.

An overlay sidecar opens, on one connection, one RTDS stream and one ECDS stream per
fault slot; the server answers each from the same cache, protocol state machine and
registry as ADS, keeps ACK evidence per slot stream, and holds a node id for one
connection at a time. The last test runs a real Envoy with such a config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2, rtds_pb2_grpc
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import UInt32Value

from faultplane.demo.launcher import envoy_argv
from faultplane.demo.ports import free_port
from faultplane.demo.processes import Child, envoy_binary, wait_until
from faultplane.render.ecds import render_overlay, slot_name
from faultplane.render.resources import RUNTIME_LAYER as LAYER
from faultplane.xds import types
from faultplane.xds.registry import AckOutcome, SidecarRegistry, TypeStatus
from tests.ads_client import InProcessAds
from tests.helpers import ok_upstream, send, until
from tests.per_type_client import (
    OWN_CONNECTION,
    PerTypeClient,
    SidecarConnection,
    overlay_bootstrap,
)

NODE = "payments-api-1"
SLOTS = 2
INBOUND = tuple(slot_name("inbound", i) for i in range(SLOTS))
OUTBOUND = tuple(slot_name("outbound", i) for i in range(SLOTS))
ECDS = types.EXTENSION_CONFIG

Duplicates = list[tuple[str, str, str]]


@pytest.fixture
def duplicates() -> Duplicates:
    """Every (node id, refused peer, holder) the servers reported."""
    return []


@pytest.fixture
async def xds(duplicates: Duplicates) -> AsyncIterator[InProcessAds]:
    """RTDS and ECDS in this process; the node's idle fault layer is in the cache."""
    async with InProcessAds(per_type=True, on_duplicate=lambda *d: duplicates.append(d)) as xds:
        xds.cache.set_resources(NODE, render_overlay([], SLOTS))
        yield xds


@pytest.fixture
async def sidecar(xds: InProcessAds) -> AsyncIterator[SidecarConnection]:
    connection = SidecarConnection(f"127.0.0.1:{xds.port}", NODE)
    try:
        yield connection
    finally:
        await connection.close()


async def test_rtds_and_each_slot_stream_get_their_own_resources_at_once(
    xds: InProcessAds, sidecar: SidecarConnection
) -> None:
    runtime = await sidecar.runtime().subscribe(LAYER)
    [layer] = _unpack(runtime, rtds_pb2.Runtime)
    assert runtime.type_url == types.RUNTIME
    assert layer.name == LAYER and not layer.layer.fields  # idle: answered, and empty

    for name in (*INBOUND, *OUTBOUND):
        response = await sidecar.slot().subscribe(name)
        [slot] = _unpack(response, extension_pb2.TypedExtensionConfig)
        assert response.type_url == ECDS
        fault = fault_pb2.HTTPFault()
        assert slot.name == name and slot.typed_config.Unpack(fault)
        assert fault == fault_pb2.HTTPFault()  # passes everything

    registry = xds.registry
    await until(lambda: registry.subscriptions(NODE, ECDS) == {*INBOUND, *OUTBOUND})
    assert registry.subscriptions(NODE, types.RUNTIME) == {LAYER}
    status = registry.get(NODE)
    assert status is not None and status.streams == 1 + 2 * SLOTS


async def test_wait_for_waits_until_every_slot_stream_acked_with_evidence_per_slot(
    xds: InProcessAds, sidecar: SidecarConnection
) -> None:
    first, second = await _subscribed_slots(xds, sidecar)
    generation = xds.cache.set_resources(NODE, _armed(INBOUND[0]))[ECDS]
    waiter = asyncio.create_task(xds.registry.wait_for(NODE, ECDS, generation, timeout=10))
    armed, unchanged = await first.recv(), await second.recv()
    before = _slot_status(xds.registry, INBOUND[1]).acked_version

    await first.ack(armed, (INBOUND[0],))
    await until(lambda: _slot_status(xds.registry, INBOUND[0]).acked_generation == generation)

    assert not waiter.done()
    assert _slot_status(xds.registry, INBOUND[1]).acked_version == before
    # The sidecar as a whole has ACKed only what its least advanced slot has.
    assert xds.registry.get(NODE).types[ECDS].acked_version == before
    await second.ack(unchanged, (INBOUND[1],))
    assert await waiter == AckOutcome(True, armed.version_info)
    assert xds.registry.get(NODE).types[ECDS].acked_version == armed.version_info


async def test_a_slot_stream_that_ends_no_longer_holds_up_the_wait(
    xds: InProcessAds, sidecar: SidecarConnection
) -> None:
    """A listener gone from the sidecar takes its slots' streams with it: the slots
    still open are all the evidence there is."""
    first, second = await _subscribed_slots(xds, sidecar)
    generation = xds.cache.set_resources(NODE, _armed(INBOUND[0]))[ECDS]
    waiter = asyncio.create_task(xds.registry.wait_for(NODE, ECDS, generation, timeout=10))
    armed = await first.recv()
    await first.ack(armed, (INBOUND[0],))
    await until(lambda: _slot_status(xds.registry, INBOUND[0]).acked_generation == generation)
    assert not waiter.done()

    await second.close()

    assert await waiter == AckOutcome(True, armed.version_info)
    assert xds.registry.subscriptions(NODE, ECDS) == {INBOUND[0]}


async def test_a_nack_on_one_slot_stream_answers_the_wait_naming_the_slot(
    xds: InProcessAds, sidecar: SidecarConnection
) -> None:
    first, second = await _subscribed_slots(xds, sidecar)
    generation = xds.cache.set_resources(NODE, _armed(INBOUND[1]))[ECDS]
    waiter = asyncio.create_task(xds.registry.wait_for(NODE, ECDS, generation, timeout=10))
    ok, bad = await first.recv(), await second.recv()

    await first.ack(ok, (INBOUND[0],))
    await second.request(ECDS, (INBOUND[1],), nonce=bad.nonce, error="unknown field")

    error = f"{INBOUND[1]}: unknown field"
    assert await waiter == AckOutcome(False, bad.version_info, error)
    assert xds.registry.get(NODE).types[ECDS].last_error == error
    assert _slot_status(xds.registry, INBOUND[0]).last_error == ""


async def test_a_node_is_connected_while_any_of_its_streams_is_open(
    xds: InProcessAds, sidecar: SidecarConnection
) -> None:
    runtime, slot = sidecar.runtime(), sidecar.slot()
    await runtime.subscribe(LAYER)
    await slot.subscribe(INBOUND[0])
    status = xds.registry.get(NODE)
    assert status is not None
    await until(lambda: status.streams == 2)

    await runtime.close()
    await until(lambda: status.streams == 1, what="the RTDS stream's end")
    assert status.connected and status.disconnected_at is None
    assert xds.registry.subscriptions(NODE, types.RUNTIME) == frozenset()

    await slot.close()
    await until(lambda: not status.connected, what="the last stream's end")
    assert status.disconnected_at is not None
    assert xds.registry.subscriptions(NODE, ECDS) == frozenset()


async def test_a_second_connection_with_a_held_node_id_is_refused_and_reported(
    xds: InProcessAds, sidecar: SidecarConnection, duplicates: Duplicates
) -> None:
    await sidecar.runtime().subscribe(LAYER)
    status = xds.registry.get(NODE)
    assert status is not None
    holder = status.peer
    intruder = SidecarConnection(f"127.0.0.1:{xds.port}", NODE)
    try:
        refused = intruder.slot()
        await refused.request(ECDS, (INBOUND[0],))

        code, details = await refused.status()
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert NODE in details and holder in details
        [(node, peer, held_by)] = duplicates
        assert (node, held_by) == (NODE, holder) and peer != holder
        # The refused stream left no trace: the holder's one stream is all there is.
        assert status.streams == 1 and status.peer == holder
        assert xds.registry.subscriptions(NODE, ECDS) == frozenset()

        await sidecar.close()
        await until(lambda: not status.connected, what="the holder's end")
        # Released: the other connection now gets in, and the record says so.
        await intruder.slot().subscribe(INBOUND[0])
        assert status.connected and status.peer == peer
        assert len(duplicates) == 1
    finally:
        await intruder.close()


async def test_a_reconnect_racing_the_close_of_the_old_connection_is_admitted(
    xds: InProcessAds, duplicates: Duplicates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted Envoy can open its streams before the server saw its old connection
    close: the new stream waits for the old one's end instead of being refused."""
    waiting = asyncio.Event()
    released = xds.registry.released

    async def observed(node_id: str, timeout: float) -> bool:
        waiting.set()
        return await released(node_id, timeout)

    monkeypatch.setattr(xds.registry, "released", observed)
    old = SidecarConnection(f"127.0.0.1:{xds.port}", NODE)
    new = SidecarConnection(f"127.0.0.1:{xds.port}", NODE)
    try:
        await old.runtime().subscribe(LAYER)
        stream = new.runtime()
        await stream.request(types.RUNTIME, (LAYER,))
        await asyncio.wait_for(waiting.wait(), 10)  # the new stream waits on the old one

        await old.close()

        assert (await stream.recv()).type_url == types.RUNTIME
        assert duplicates == []
        status = xds.registry.get(NODE)
        assert status is not None and status.streams == 1
    finally:
        await old.close()
        await new.close()


@pytest.mark.parametrize("first_ok", [False, True], ids=["first-request", "later-request"])
async def test_a_request_of_another_type_on_a_per_type_stream_is_refused(
    xds: InProcessAds, sidecar: SidecarConnection, first_ok: bool
) -> None:
    stream = sidecar.runtime()
    if first_ok:
        await stream.subscribe(LAYER)

    await stream.request(ECDS, (INBOUND[0],))

    code, details = await stream.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("type_url:") and ECDS in details
    status = xds.registry.get(NODE)
    await until(lambda: status is None or not status.connected, what="the stream's end")


async def test_delta_xds_is_not_offered(xds: InProcessAds) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{xds.port}", options=OWN_CONNECTION) as ch:
        call = rtds_pb2_grpc.RuntimeDiscoveryServiceStub(ch).DeltaRuntime()
        # The server may end the call before the request is written: the status is what
        # tells, and a write onto an ended call raises.
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=types.RUNTIME))
        assert await asyncio.wait_for(call.code(), 10) == grpc.StatusCode.UNIMPLEMENTED


# A real Envoy whose listeners and clusters are static, with fault slots and the runtime
# layer from the server. Its RTDS initial fetch timeout is far longer than the test's
# bound: Envoy is LIVE in time only if RTDS is answered at once.
RTDS_FETCH_TIMEOUT = 60.0
LIVE_WITHIN = 30.0


async def test_envoy_opens_one_rtds_and_one_stream_per_slot_on_one_connection_and_goes_live(
    xds: InProcessAds, backend: int, tmp_path: Path
) -> None:
    ports = {"admin": free_port(), "inbound": free_port(), "outbound": free_port()}
    bootstrap = tmp_path / "envoy.json"
    config = overlay_bootstrap(NODE, xds.port, backend, ports, SLOTS, RTDS_FETCH_TIMEOUT)
    bootstrap.write_text(json.dumps(config))
    envoy = Child("envoy", envoy_argv(envoy_binary(), bootstrap), tmp_path / "envoy.log")
    started = time.monotonic()
    envoy.start()
    try:
        live = f"http://127.0.0.1:{ports['admin']}/ready"
        await wait_until(lambda: _ok(live), LIVE_WITHIN, "Envoy LIVE", [envoy])
        assert time.monotonic() - started < RTDS_FETCH_TIMEOUT

        status = xds.registry.get(NODE)
        assert status is not None
        expected = {types.RUNTIME: 1, ECDS: 2 * SLOTS}

        def all_streams_acked() -> bool:
            served = [s.served for s in status.open_streams.values()]
            counts = {t: served.count(t) for t in set(served)}
            acked = all(
                s.types.get(s.served or "", TypeStatus()).acked_generation > 0
                for s in status.open_streams.values()
            )
            return counts == expected and acked

        await until(all_streams_acked, 20, "1 RTDS + 2N ECDS streams, each ACKed")
        assert len({s.peer for s in status.open_streams.values()}) == 1  # one connection
        assert xds.registry.subscriptions(NODE, ECDS) == {*INBOUND, *OUTBOUND}
        for port in (ports["inbound"], ports["outbound"]):  # the idle slots pass everything
            [reply] = await send(f"http://127.0.0.1:{port}/pay")
            assert reply.status == 200
    finally:
        envoy.stop()


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """An upstream answering 200 to everything; yields its port."""
    async with ok_upstream() as port:
        yield port


async def _ok(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _subscribed_slots(
    xds: InProcessAds, sidecar: SidecarConnection
) -> tuple[PerTypeClient, PerTypeClient]:
    """Two slot streams of the node, each with its first response ACKed and recorded."""
    streams = []
    for name in INBOUND:
        stream = sidecar.slot()
        response = await stream.subscribe(name)
        await stream.ack(response, (name,))
        streams.append(stream)
    acked = xds.registry.get(NODE)
    await until(lambda: acked is not None and acked.types[ECDS].acked_generation > 0)
    return streams[0], streams[1]


def _armed(name: str) -> dict[str, dict[str, Message]]:
    """The idle fault layer with slot `name` holding a fault shape (a new generation)."""
    resources = render_overlay([], SLOTS)
    armed = extension_pb2.TypedExtensionConfig(name=name)
    armed.typed_config.Pack(fault_pb2.HTTPFault(max_active_faults=UInt32Value(value=1)))
    return {ECDS: {**resources[ECDS], name: armed}}


def _slot_status(registry: SidecarRegistry, name: str) -> TypeStatus:
    """The evidence of the stream subscribed to slot `name`."""
    sidecar = registry.get(NODE)
    assert sidecar is not None
    [stream] = [s for s in sidecar.streams_of(ECDS) if s.names.get(ECDS) == {name}]
    return stream.types.get(ECDS, TypeStatus())


def _unpack(response: discovery_pb2.DiscoveryResponse, kind: type[Message]) -> Iterator[Any]:
    for packed in response.resources:
        message = kind()
        assert packed.Unpack(message), packed.type_url
        yield message
