"""The freeze lever's `until` is checked at the edge (issue 9, item 11).

`Freeze(until=1e18)` used to be stored, after which describing the freeze (a datetime
past year 9999) failed every CreateInjection, and every GetFreeze, with an internal
error. Through the real gRPC API: out-of-range, non-finite and past times are refused
with INVALID_ARGUMENT naming `until`, nothing is stored, and admission keeps working; a
freeze already stored with such a time (by an older server) still refuses injections
with a readable FAILED_PRECONDITION instead of breaking them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import grpc
import pytest

from faultplane.api.validate import MAX_FREEZE_SECONDS
from faultplane.lifecycle.approval import Freeze
from faultplane.store import SqliteStore
from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import rpc_error
from tests.test_governance import Start, request_by, start  # noqa: F401 (the server fixture)

DAY = 86400.0
# Each a function of "now", so that a slow machine cannot turn a future time into a past one.
BAD_UNTIL = {
    "1e18": lambda now: 1e18,
    "past the protobuf range": lambda now: 253_402_300_800.0,
    "year 33658": lambda now: 1e12,
    "just past the limit": lambda now: now + MAX_FREEZE_SECONDS + DAY,
    "nan": lambda now: math.nan,
    "inf": lambda now: math.inf,
    "-inf": lambda now: -math.inf,
    "an hour ago": lambda now: now - 3600,
    "negative": lambda now: -1.0,
}


async def test_out_of_range_until_is_refused_and_admission_still_works(
    start: Start,  # noqa: F811
) -> None:
    api = await start()

    refusals = {}
    for name, until in BAD_UNTIL.items():
        request = pb.FreezeRequest(until=until(time.time()), reason="maintenance")
        refusals[name] = await rpc_error(api.call("Freeze", request, "root"))
    state = await api.call("GetFreeze", pb.GetFreezeRequest(), "vic")
    created = await api.call("CreateInjection", request_by("alice"), "alice")

    for name, error in refusals.items():
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
        assert error.details().startswith("until: must be a time in the future no later than"), (
            name,
            error.details(),
        )
    assert not state.frozen
    assert api.server.store.settings.get("freeze") is None  # nothing was stored
    assert created.state == pb.PENDING


async def test_a_freeze_within_the_limit_is_accepted_and_refuses_injections(
    start: Start,  # noqa: F811
) -> None:
    api = await start()
    until = time.time() + MAX_FREEZE_SECONDS - DAY

    state = await api.call("Freeze", pb.FreezeRequest(until=until, reason="peak"), "root")
    refused = await rpc_error(api.call("CreateInjection", request_by("alice"), "alice"))

    assert state.frozen and abs(state.until.ToNanoseconds() / 1e9 - until) < 1e-3
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "injections are frozen until 20" in refused.details()
    assert "by root: peak" in refused.details()


async def test_freeze_reason_is_required_and_named(
    start: Start,  # noqa: F811
) -> None:
    api = await start()

    error = await rpc_error(api.call("Freeze", pb.FreezeRequest(until=math.nan), "root"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason: required" in error.details()
    assert "until: must be a time in the future" in error.details()  # all problems at once


async def test_a_stored_out_of_range_freeze_still_refuses_readably(
    start: Start,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A store written before the edge check holds `until: 1e18`: the restarted server
    stays frozen (failing safe) and says so, and GetFreeze answers."""
    with SqliteStore(tmp_path / "faultplane.db") as store:  # the path `start` serves from
        store.settings.set(
            "freeze", {"until": 1e18, "reason": "legacy", "by": "root", "at": time.time()}
        )
    api = await start()

    refused = await rpc_error(api.call("CreateInjection", request_by("alice"), "alice"))
    state = await api.call("GetFreeze", pb.GetFreezeRequest(), "vic")

    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.details()
    assert "injections are frozen until Unix time 1e+18" in refused.details()
    assert state.frozen and state.until.ToJsonString().startswith("9999-12-31T23:59:59")


@pytest.mark.parametrize("until", [1e18, 1e12, -1e18, math.inf, 253_402_300_800.0])
def test_describe_never_raises(until: float) -> None:
    text = Freeze(until, "why", "root", time.time()).describe()

    assert text.startswith("injections are frozen until ") and text.endswith("by root: why")
