"""Simulated sidecars: one process opening many ADS streams that behave like Envoy.

Run as `python -m bench.adsload --xds HOST:PORT --service S --first I --count N --status F`.
Each stream carries its own node (id `S-<i>`, cluster S, metadata service/pod/labels) on
its first request only, as Envoy does with `set_node_on_first_message_only`; subscribes
like a sidecar of a dependency-less service (CDS and LDS wildcard, RDS ingress+egress,
RTDS faultplane) and ACKs every response with its version and nonce. Each stream has its
own connection (its own subchannel pool), as each Envoy does. Progress is written to the
status file as JSON twice a second. With `--track-runtime` the runtime layer (RTDS) of each
response is parsed too, and the status counts the sidecars whose last layer holds a
fault (the soak scenario's "faults left").

The load must cost less than the server it measures, on its own core: responses are not
parsed beyond their version, type and nonce (a scan of the top-level wire fields, the
resources skipped by length), and ACKs are concatenated from per-type pre-serialized
bytes (protobuf fields concatenate), so no message object is built per exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2
from google.protobuf import struct_pb2

from faultplane.xds import types
from faultplane.xds.wire import field as wire_field

SUBSCRIPTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (types.CLUSTER, ()),
    (types.LISTENER, ()),
    (types.ROUTE, ("ingress", "egress")),
    (types.RUNTIME, ("faultplane",)),
)
NAMES = dict(SUBSCRIPTIONS)
CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 << 20),
)
SHARDS = 10
ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

# DiscoveryRequest / DiscoveryResponse field numbers (discovery.proto).
_VERSION, _RESOURCE_NAMES, _TYPE_URL, _NONCE = 1, 3, 4, 5


@dataclass
class Fleet:
    streams: int
    synced: int = 0
    open: int = 0
    failed: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    response_bytes: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    waiting: set[str] = field(default_factory=set)  # node ids not synced yet
    track_runtime: bool = False
    faulted: set[str] = field(default_factory=set)  # node ids whose runtime layer has keys

    def count(self, short: str, size: int) -> None:
        self.responses[short] = self.responses.get(short, 0) + 1
        self.response_bytes[short] = self.response_bytes.get(short, 0) + size

    def snapshot(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "streams": self.streams,
            "open": self.open,
            "synced": self.synced,
            "failed": self.failed,
            "responses": dict(self.responses),
            "response_bytes": dict(self.response_bytes),
            "last_error": self.last_error,
            "waiting": sorted(self.waiting)[:20],
            "faulted": len(self.faulted),
            "faulted_nodes": sorted(self.faulted)[:20],
            "at": time.time(),
        }


def node_for(service: str, index: int) -> base_pb2.Node:
    pod = f"{service}-{index}"
    metadata = struct_pb2.Struct()
    metadata.update({"service": service, "pod": pod, "labels": {"shard": f"s{index % SHARDS}"}})
    return base_pb2.Node(id=pod, cluster=service, metadata=metadata)


# Per type: the ACK's bytes after its version (names, type) and the subscription request.
_ACK_MIDDLE = {
    type_url: b"".join(wire_field(_RESOURCE_NAMES, n.encode()) for n in names)
    + wire_field(_TYPE_URL, type_url.encode())
    for type_url, names in SUBSCRIPTIONS
}


def ack(version: bytes, type_url: str, nonce: bytes) -> bytes:
    """A serialized DiscoveryRequest ACKing (version, nonce) of `type_url`, without node."""
    return wire_field(_VERSION, version) + _ACK_MIDDLE[type_url] + wire_field(_NONCE, nonce)


def scan(response: bytes) -> tuple[bytes, str, bytes]:
    """(version_info, type_url, nonce) of a serialized DiscoveryResponse; the rest (its
    resources) is skipped by length, never parsed."""
    found: dict[int, bytes] = {}
    pos, end = 0, len(response)
    while pos < end:
        key, pos = _read_varint(response, pos)
        wire = key & 7
        if wire == 2:
            length, pos = _read_varint(response, pos)
            found[key >> 3] = response[pos : pos + length]
            pos += length
        elif wire == 0:
            _, pos = _read_varint(response, pos)
        else:
            raise ValueError(f"DiscoveryResponse: wire type {wire} of field {key >> 3}")
    return found.get(_VERSION, b""), found.get(_TYPE_URL, b"").decode(), found.get(_NONCE, b"")


def runtime_has_fault(response: bytes) -> bool:
    """Whether a serialized RTDS DiscoveryResponse sets any runtime key (its layers
    unwrapped from their TTL envelopes); an empty layer means no fault is on."""
    for packed in discovery_pb2.DiscoveryResponse.FromString(response).resources:
        if packed.Is(discovery_pb2.Resource.DESCRIPTOR):
            envelope = discovery_pb2.Resource()
            packed.Unpack(envelope)
            packed = envelope.resource
        runtime = rtds_pb2.Runtime()
        if packed.Unpack(runtime) and runtime.layer.fields:
            return True
    return False


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


async def sidecar(
    address: str, node: base_pb2.Node, fleet: Fleet, connecting: asyncio.Semaphore
) -> None:
    """One Envoy: reconnects with backoff, as Envoy does, until the process is stopped."""
    backoff = 0.1
    first = _subscriptions(node)
    while True:
        synced = await stream(address, node.id, first, fleet, connecting)
        backoff = 0.1 if synced else min(backoff * 2, 2.0)
        await asyncio.sleep(backoff)


def _subscriptions(node: base_pb2.Node) -> list[bytes]:
    """The stream's opening requests, serialized; only the first carries the node."""
    return [
        discovery_pb2.DiscoveryRequest(
            node=node if index == 0 else None, type_url=type_url, resource_names=names
        ).SerializeToString()
        for index, (type_url, names) in enumerate(SUBSCRIPTIONS)
    ]


async def stream(
    address: str, node_id: str, first: list[bytes], fleet: Fleet, connecting: asyncio.Semaphore
) -> bool:
    """One ADS stream until it ends; whether it got every subscribed type once.

    At most `connecting` streams of this process are between connect and first sync at
    a time, so the fleet connects as fast as the server takes it and no faster (a
    thousand unanswered streams would be dropped by gRPC's pending-call limit).
    """
    seen: set[str] = set()
    await connecting.acquire()
    held = True
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        # No serializers: requests go out as the bytes given, responses come in as bytes.
        call = channel.stream_stream(ADS_METHOD)(wait_for_ready=True)
        fleet.open += 1
        try:
            for request in first:
                await call.write(request)
            async for response in call:
                version, type_url, nonce = scan(response)
                short = types.short_name(type_url)
                fleet.count(short, len(response))
                if fleet.track_runtime and type_url == types.RUNTIME:
                    if runtime_has_fault(response):
                        fleet.faulted.add(node_id)
                    else:
                        fleet.faulted.discard(node_id)
                await call.write(ack(version, type_url, nonce))
                if short not in seen:
                    seen.add(short)
                    if len(seen) == len(SUBSCRIPTIONS):
                        fleet.synced += 1
                        fleet.waiting.discard(node_id)
                        connecting.release()
                        held = False
        except grpc.aio.AioRpcError as exc:
            fleet.failed += 1
            fleet.last_error = (
                f"{exc.code().name}: {exc.details()} {exc.debug_error_string()} seen={sorted(seen)}"
            )
        finally:
            if held:
                connecting.release()
            fleet.open -= 1
            if len(seen) == len(SUBSCRIPTIONS):
                fleet.synced -= 1
                fleet.waiting.add(node_id)
    return len(seen) == len(SUBSCRIPTIONS)


async def report(fleet: Fleet, path: Path) -> None:
    while True:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(fleet.snapshot()))
        partial.replace(path)
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> None:
    fleet = Fleet(args.count, track_runtime=args.track_runtime)
    reporter = asyncio.create_task(report(fleet, args.status))
    indexes = range(args.first, args.first + args.count)
    fleet.waiting = {f"{args.service}-{i}" for i in indexes}
    connecting = asyncio.Semaphore(args.connecting)
    tasks = [
        asyncio.create_task(sidecar(args.xds, node_for(args.service, i), fleet, connecting))
        for i in indexes
    ]
    await asyncio.gather(*tasks, return_exceptions=True)
    reporter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reporter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--xds", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument(
        "--connecting", type=int, default=50, help="streams connecting at once (default 50)"
    )
    parser.add_argument(
        "--track-runtime", action="store_true", help="count sidecars with a fault on (RTDS)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
