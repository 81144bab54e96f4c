"""The ADS server's stream loop under a stalled or flooding peer (issue 9, items 6 and 11).

A real gRPC stream over loopback to an `AdsServer` alone in this process; the stream's
passes are counted by wrapping `AdsServer._send_due`, which every pass calls once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from envoy.service.runtime.v3 import rtds_pb2
from google.protobuf import struct_pb2
from prometheus_client import REGISTRY

from faultplane.server.control import XDS_SERVER_OPTIONS
from faultplane.xds import server as server_module
from faultplane.xds import types
from faultplane.xds.server import AdsServer
from tests.ads_client import InProcessAds, RawAdsClient
from tests.helpers import until

NODE = "stalled-1"
LAYER = ("faultplane",)


@dataclass
class Passes:
    """Counts the stream loop's passes and can hold the loop inside one."""

    count: int = 0
    hold: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Passes]:
    counter = Passes()
    original = AdsServer._send_due

    async def send_due(self: AdsServer, *args: Any) -> None:
        counter.count += 1
        if counter.hold:
            counter.held.set()
            await counter.release.wait()
        await original(self, *args)

    monkeypatch.setattr(AdsServer, "_send_due", send_due)
    yield counter
    counter.release.set()


@pytest.fixture
async def ads() -> AsyncIterator[InProcessAds]:
    async with InProcessAds() as server:
        yield server


def runtime(marker: str) -> dict[str, dict[str, rtds_pb2.Runtime]]:
    layer = struct_pb2.Struct(fields={marker: struct_pb2.Value(number_value=1)})
    return {types.RUNTIME: {"faultplane": rtds_pb2.Runtime(name="faultplane", layer=layer)}}


async def test_an_unacked_leased_response_does_not_spin_the_loop(
    ads: InProcessAds, passes: Passes
) -> None:
    """A sidecar that never answers a leased response must not wake its stream: nothing
    can be sent to it until it answers (measured before the fix: ~10,000 passes/s)."""
    ads.cache.set_resources(NODE, runtime("on"), ttl_seconds={types.RUNTIME: 0.3})
    client = ads.client(NODE)
    await client.request(types.RUNTIME, LAYER)
    leased = await client.recv()  # never ACKed while measuring
    start = passes.count

    # The measurement window. The lease re-send falls due 0.1 s into it, from when on
    # the stream has something overdue that it cannot send.
    await asyncio.sleep(1.0)

    wakeups = passes.count - start
    assert wakeups < 50, f"{wakeups} stream passes in 1 s with nothing to send"
    # The stream is alive, only waiting: the ACK brings the overdue lease re-send at once.
    await client.ack(leased, LAYER)
    again = await client.recv()
    assert again.version_info == leased.version_info and again.nonce != leased.nonce


async def test_changes_while_the_stream_is_busy_wake_it_once(
    ads: InProcessAds, passes: Passes
) -> None:
    ads.cache.set_resources(NODE, runtime("v0"))
    client = ads.client(NODE)
    await client.request(types.RUNTIME, LAYER)
    await client.ack(await client.recv(), LAYER)
    await _until_acked(ads, "test-1")
    passes.hold = True
    ads.cache.set_resources(NODE, runtime("v1"))
    await passes.held.wait()  # the stream is inside a pass, as if writing to a slow peer

    for i in range(2, 1001):
        ads.cache.set_resources(NODE, runtime(f"v{i}"))
    held_at = passes.count
    passes.hold = False
    passes.release.set()

    latest = await client.recv()
    assert latest.version_info == f"test-{1001}"  # only the newest state is sent
    # The ACK queues behind whatever wake-ups are pending: once it is recorded, all ran.
    await client.ack(latest, LAYER)
    await _until_acked(ads, latest.version_info)
    assert passes.count - held_at <= 3, "one pass per change instead of one for all"


async def test_a_request_flood_is_back_pressured_not_queued(
    ads: InProcessAds, passes: Passes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the stream is busy, the server reads at most its backlog off the stream,
    and loses nothing: the reader waits for room instead of queueing without bound."""
    read, handled = _count_reads_and_handling(monkeypatch)
    ads.cache.set_resources(NODE, runtime("v0"))
    client = ads.client(NODE)
    await client.request(types.RUNTIME, LAYER)
    first = await client.recv()
    passes.hold = True
    throttled_before = _throttled()

    total = 2000
    flood = asyncio.create_task(_flood(client, first, total))
    await passes.held.wait()
    limit = server_module.REQUEST_BACKLOG
    # Either the reader stops (throttled), or the backlog outgrows its bound (the bug).
    await until(
        lambda: _throttled() > throttled_before or read[0] - handled[0] > limit + 1,
        what="the reader to stop reading",
    )

    assert read[0] > limit, "the flood never reached the server"
    assert read[0] - handled[0] <= limit + 1, f"{read[0] - handled[0]} requests queued"
    # The rest waits in gRPC's flow-control window (measured: ~1 MB), then in the peer.
    passes.hold = False
    passes.release.set()
    await flood  # and then everything goes through: nothing is dropped
    await until(lambda: handled[0] == total + 1, what="every request handled")


def test_the_ads_port_pings_its_peers_and_permits_their_pings() -> None:
    options = dict(XDS_SERVER_OPTIONS)
    assert 0 < options["grpc.keepalive_time_ms"] <= 60_000
    assert 0 < options["grpc.keepalive_timeout_ms"] <= 20_000
    # Envoy pings every 5 s: permitted, never answered with GOAWAY.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= 5_000
    assert options["grpc.http2.max_ping_strikes"] == 0


async def _flood(client: RawAdsClient, answering: Any, total: int) -> None:
    """`total` requests acknowledging `answering` with a superseded nonce after the first:
    each is handled (stale) and changes nothing."""
    for _ in range(total):
        await client.ack(answering, LAYER)


async def _until_acked(ads: InProcessAds, version: str) -> None:
    def acked() -> bool:
        sidecar = ads.registry.get(NODE)
        return sidecar is not None and sidecar.status(types.RUNTIME).acked_version == version

    await until(acked, what=f"the ACK of {version}")


def _count_reads_and_handling(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[int], list[int]]:
    """Count requests the server read off the stream, and those its loop handled."""
    read, handled = [0], [0]
    original_reader = server_module._read_requests
    original_on_request = AdsServer._on_request

    async def counted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            read[0] += 1
            yield request

    async def reader(requests: AsyncIterator[Any], events: Any) -> None:
        await original_reader(counted(requests), events)

    def on_request(self: AdsServer, *args: Any) -> None:
        handled[0] += 1
        original_on_request(self, *args)

    monkeypatch.setattr(server_module, "_read_requests", reader)
    monkeypatch.setattr(AdsServer, "_on_request", on_request)
    return read, handled


def _throttled() -> float:
    return REGISTRY.get_sample_value("faultplane_xds_requests_throttled_total") or 0.0
