"""Simulated sidecars: one process opening many ADS streams that behave like Envoy.

Run as `python -m bench.adsload --xds HOST:PORT --service S --first I --count N --status F`.
Each stream carries its own node (id `S-<i>`, cluster S, metadata service/pod/labels, on
every request as Envoy sends it), subscribes like a sidecar of a dependency-less service
(CDS and LDS wildcard, RDS ingress+egress, RTDS faultplane) and ACKs every response with
its version and nonce. Each stream has its own connection (its own subchannel pool), as
each Envoy does. Progress is written to the status file as JSON twice a second.
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
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from faultplane.xds import types

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


@dataclass
class Fleet:
    streams: int
    synced: int = 0
    open: int = 0
    failed: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    waiting: set[str] = field(default_factory=set)  # node ids not synced yet

    def snapshot(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "streams": self.streams,
            "open": self.open,
            "synced": self.synced,
            "failed": self.failed,
            "responses": dict(self.responses),
            "last_error": self.last_error,
            "waiting": sorted(self.waiting)[:20],
            "at": time.time(),
        }


def node_for(service: str, index: int) -> base_pb2.Node:
    pod = f"{service}-{index}"
    metadata = struct_pb2.Struct()
    metadata.update({"service": service, "pod": pod, "labels": {"shard": f"s{index % SHARDS}"}})
    return base_pb2.Node(id=pod, cluster=service, metadata=metadata)


async def sidecar(
    address: str, node: base_pb2.Node, fleet: Fleet, connecting: asyncio.Semaphore
) -> None:
    """One Envoy: reconnects with backoff, as Envoy does, until the process is stopped."""
    backoff = 0.1
    while True:
        synced = await stream(address, node, fleet, connecting)
        backoff = 0.1 if synced else min(backoff * 2, 2.0)
        await asyncio.sleep(backoff)


async def stream(
    address: str, node: base_pb2.Node, fleet: Fleet, connecting: asyncio.Semaphore
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
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            wait_for_ready=True
        )
        fleet.open += 1
        try:
            for type_url, names in SUBSCRIPTIONS:
                await call.write(
                    discovery_pb2.DiscoveryRequest(
                        node=node, type_url=type_url, resource_names=names
                    )
                )
            async for response in call:
                short = types.short_name(response.type_url)
                fleet.responses[short] = fleet.responses.get(short, 0) + 1
                await call.write(
                    discovery_pb2.DiscoveryRequest(
                        node=node,
                        type_url=response.type_url,
                        resource_names=NAMES.get(response.type_url, ()),
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
                if short not in seen:
                    seen.add(short)
                    if len(seen) == len(SUBSCRIPTIONS):
                        fleet.synced += 1
                        fleet.waiting.discard(node.id)
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
                fleet.waiting.add(node.id)
    return len(seen) == len(SUBSCRIPTIONS)


async def report(fleet: Fleet, path: Path) -> None:
    while True:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(fleet.snapshot()))
        partial.replace(path)
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> None:
    fleet = Fleet(args.count)
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
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
