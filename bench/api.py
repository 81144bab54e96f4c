"""The operator API as benchmarks use it: only faultplane.v1 messages, no internals.

Times come from the server's own records (created_at, transition `at`, each sidecar's
evidence `at`), all wall-clock on this one machine, so they compare with the harness's
`time.time()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from faultplane.demo.launcher import grpc_serving
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

BIG_MESSAGES = (
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 256 << 20),
)
TERMINAL = {pb.COMPLETED, pb.ABORTED, pb.FAILED}
STEADY_STATE = {"slo": "merchant-write-success", "min": 0.5, "abort_after": 600}


def seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def request(
    service: str,
    fault: dict[str, Any],
    duration: float,
    max_pods: int,
    selector: str = "",
    upstream: str | None = None,
) -> pb.InjectionRequest:
    target: dict[str, Any] = {"service": service, "selector": selector, "max_pods": max_pods}
    if upstream:
        target["upstream"] = upstream
    document = {
        "target": target,
        "fault": fault,
        "duration_seconds": duration,
        "steady_state": STEADY_STATE,
        "hypothesis": "benchmark: the platform delivers and withdraws faults on time",
        "owner": "bench@faultplane.local",
    }
    return json_format.ParseDict(document, pb.InjectionRequest())


@dataclass(frozen=True)
class Acks:
    """When the last target ACKed, per type, for one transition."""

    count: int
    last: dict[str, float]  # type -> latest evidence `at`
    bad: list[str]  # sidecars whose answer was not an ACK


def acks(transition: pb.Transition) -> Acks:
    last: dict[str, float] = {}
    bad = []
    for evidence in transition.evidence:
        if evidence.outcome != "acked":
            bad.append(f"{evidence.sidecar} {evidence.type} {evidence.outcome}")
            continue
        at = seconds(evidence.at)
        last[evidence.type] = max(last.get(evidence.type, 0.0), at)
    return Acks(len(transition.evidence), last, bad)


def transition_to(injection: pb.Injection, states: Iterable[int]) -> pb.Transition:
    wanted = set(states)
    for transition in injection.transitions:
        if transition.to_state in wanted:
            return transition
    raise LookupError(f"{injection.id} has no transition to {sorted(wanted)}")


class Api:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stub = faultplane_pb2_grpc.FaultServiceStub(channel)

    async def create(self, req: pb.InjectionRequest) -> pb.Injection:
        return await self.stub.CreateInjection(req, timeout=60)

    async def get(self, injection_id: str) -> pb.Injection:
        return await self.stub.GetInjection(pb.GetInjectionRequest(id=injection_id), timeout=60)

    async def abort(self, injection_id: str) -> pb.Injection:
        return await self.stub.AbortInjection(
            pb.AbortInjectionRequest(id=injection_id, reason="bench"), timeout=120
        )

    async def abort_all(self) -> None:
        await self.stub.AbortAllInjections(
            pb.AbortAllInjectionsRequest(reason="bench"), timeout=120
        )

    async def sidecars(self, service: str = "") -> list[pb.Sidecar]:
        reply = await self.stub.ListSidecars(pb.ListSidecarsRequest(service=service), timeout=60)
        return list(reply.sidecars)

    async def wait_state(
        self, injection_id: str, states: set[int], timeout: float = 60.0
    ) -> pb.Injection:
        deadline = time.monotonic() + timeout
        while True:
            injection = await self.get(injection_id)
            if injection.state in states:
                return injection
            if injection.state in TERMINAL:
                raise RuntimeError(
                    f"{injection_id} ended {pb.State.Name(injection.state)}: {injection.reason}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{injection_id} still {pb.State.Name(injection.state)}")
            await asyncio.sleep(0.02)

    def transitions(self) -> Transitions:
        """Every transition from now on (use as `async with api.transitions() as t:`)."""
        return Transitions(self.stub)

    async def wait_connected(self, service: str, count: int, timeout: float = 60.0) -> None:
        """Until `count` sidecars of `service` are connected and have ACKed RTDS."""
        deadline = time.monotonic() + timeout
        while True:
            ready = [
                s
                for s in await self.sidecars(service)
                if s.connected and any(x.type == "rtds" and x.version_acked for x in s.xds)
            ]
            if len(ready) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ready)}/{count} sidecars of {service} connected")
            await asyncio.sleep(0.1)


class Transitions:
    """A WatchInjections subscription, open before the injection it waits for is created
    (so no transition can slip by), and cheap for the server: no polling."""

    def __init__(self, stub: faultplane_pb2_grpc.FaultServiceStub) -> None:
        self._stub = stub
        self._call: Any = None
        self._seen: dict[str, pb.Injection] = {}

    async def __aenter__(self) -> Transitions:
        self._call = self._stub.WatchInjections(pb.WatchInjectionsRequest())
        await self._call.initial_metadata()  # subscribed
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._call.cancel()

    async def until(
        self, injection_id: str, states: set[int], timeout: float = 60.0
    ) -> pb.Injection:
        """The injection as of its first transition into `states`."""
        seen = self._seen.get(injection_id)
        if seen is not None and seen.state in states:
            return seen
        async with asyncio.timeout(timeout):
            while True:
                event = await self._call.read()
                if event is grpc.aio.EOF:
                    raise RuntimeError("the server ended the watch")
                injection = event.injection
                self._seen[injection.id] = injection
                if injection.id != injection_id:
                    continue
                if injection.state in states:
                    return injection
                if injection.state in TERMINAL:
                    raise RuntimeError(
                        f"{injection_id} ended {pb.State.Name(injection.state)}: {injection.reason}"
                    )


@asynccontextmanager
async def connect(address: str) -> AsyncIterator[Api]:
    async with grpc.aio.insecure_channel(address, options=BIG_MESSAGES) as channel:
        yield Api(channel)


serving = grpc_serving  # the launcher's health probe
