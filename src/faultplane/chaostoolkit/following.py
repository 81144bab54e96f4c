"""Waiting for an injection's state, and what an activity returns about an injection.

Waiting subscribes to the injection's events first and reads its state second, as
`faultplane inject` does, so no transition can fall between the read and the
subscription; it wakes on the transition itself, not on a polling tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from chaoslib.exceptions import ActivityFailed

from faultplane.chaostoolkit.connection import Stub
from faultplane.cli.connection import RPC_TIMEOUT
from faultplane.cli.watching import FINAL_STATES, watch_dropped
from faultplane.v1 import faultplane_pb2 as pb


def state_name(state: int) -> str:
    return pb.State.Name(state)


def summary(injection: pb.Injection) -> dict[str, Any]:
    """An injection as an activity's output in the journal: what a tolerance or a
    reader of the journal checks, not the whole evidence (`faultplane get ID` has it)."""
    return {
        "id": injection.id,
        "state": state_name(injection.state),
        "reason": injection.reason,
        "verdict": injection.verdict,
        "targets": list(injection.targets),
    }


def get(stub: Stub, injection_id: str) -> pb.Injection:
    return stub.GetInjection(pb.GetInjectionRequest(id=injection_id), timeout=RPC_TIMEOUT)


def has_ended(injection: pb.Injection) -> bool:
    return injection.state in FINAL_STATES


def has_left_pending(injection: pb.Injection) -> bool:
    return injection.state != pb.PENDING


def follow(
    stub: Stub,
    injection_id: str,
    done: Callable[[pb.Injection], bool],
    timeout: float,
    what: str,
) -> pb.Injection:
    """The injection as soon as `done(injection)` holds; ActivityFailed after `timeout`
    seconds naming `what` was awaited and the state it is still in."""
    deadline = time.monotonic() + timeout
    latest: pb.Injection | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            still = state_name(latest.state) if latest is not None else "unknown"
            raise ActivityFailed(
                f"timeout: injection {injection_id} did not {what} within {timeout:g}s "
                f"(still {still}); raise the activity's timeout argument"
            )
        events = stub.WatchInjections(pb.WatchInjectionsRequest(id=injection_id), timeout=remaining)
        try:
            events.initial_metadata()  # subscribed: no transition can slip past the read
            latest = get(stub, injection_id)
            if done(latest):
                return latest
            for event in events:
                latest = event.injection
                if done(latest):
                    return latest
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if watch_dropped(exc) or code == grpc.StatusCode.DEADLINE_EXCEEDED:
                continue  # resubscribe; the deadline check above ends the wait
            raise
        finally:
            events.cancel()
