"""The steady state is never optional (issue 12): an SLO the server cannot read is refused
up front, a baseline rule says what it checks, and "held" needs readings of the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from faultplane.api.validate import validate_request
from faultplane.lifecycle.lifecycle import HELD, deadline_verdict
from faultplane.model.injection import Injection, SloReading, State
from faultplane.model.mesh import Mesh
from faultplane.server.control import ControlServer
from faultplane.slo.baseline import BaselineStats, preflight_problem
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import ROOT, server_config
from tests.fake_sidecar import fake_sidecars
from tests.helpers import injection_request, rpc_error, until, wait_state
from tests.test_auth_e2e import Serve, refused, serve  # noqa: F401 (the serve fixture)

EXAMPLE_FILE = ROOT / "examples" / "latency-fraud-scoring.json"
SLO_FILE = ROOT / "envoy-configs" / "slos.yaml"
INBOUND = {"selector": "", "max_pods": 4, "upstream": None}


def test_inject_without_a_catalogue_is_refused_naming_the_slo_field(
    serve: Serve,  # noqa: F811
) -> None:
    server = serve(tokens={"root": ("root", "admin")})

    result = server.cli("inject", "-f", str(EXAMPLE_FILE), token=server.tokens["root"])

    message = refused(result, "INVALID_ARGUMENT")
    assert "steady_state.slo" in message and "no SLO catalogue" in message
    assert "--slos" in message


def test_inject_of_an_unknown_slo_lists_the_known_ones(
    serve: Serve,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = serve("--slos", str(SLO_FILE), tokens={"root": ("root", "admin")})
    document = json.loads(EXAMPLE_FILE.read_text())
    document["steady_state"]["slo"] = "checkout-latency"
    unknown = tmp_path / "unknown-slo.json"
    unknown.write_text(json.dumps(document))

    result = server.cli("inject", "-f", str(unknown), token=server.tokens["root"])

    message = refused(result, "INVALID_ARGUMENT")
    assert "steady_state.slo: unknown SLO 'checkout-latency'" in message
    assert "merchant-write-success" in message and "fraud-scoring-success" in message


async def test_in_process_server_without_catalogue_refuses_every_injection(mesh: Mesh) -> None:
    server = ControlServer(server_config(mesh, slos=None))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.api_port}") as channel:
            stub = faultplane_pb2_grpc.FaultServiceStub(channel)
            error = await rpc_error(stub.CreateInjection(injection_request()))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "steady_state.slo" in (error.details() or "")
            listed = await stub.ListInjections(pb.ListInjectionsRequest())
            assert list(listed.injections) == []  # nothing registered
    finally:
        await server.stop(grace=0)


async def test_a_run_whose_slo_was_never_readable_is_inconclusive_not_held(
    mesh: Mesh, tmp_path: Path
) -> None:
    # Fake sidecars publish no stats: every reading of the run is unreadable.
    server = ControlServer(server_config(mesh, db_path=tmp_path / "db", guard_tick=0.2))
    await server.start()
    pods = list(mesh.services["payments-api"].pods)
    try:
        async with fake_sidecars(f"127.0.0.1:{server.xds_port}", mesh, pods):
            await until(lambda: len(server.source.candidates("payments-api")) == 4)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.api_port}") as channel:
                stub = faultplane_pb2_grpc.FaultServiceStub(channel)
                created = await stub.CreateInjection(
                    injection_request(
                        target=INBOUND,
                        fault={"type": "abort", "http_status": 503},
                        duration_seconds=1.0,
                    )
                )
                done = await wait_state(stub, created.id, {pb.COMPLETED, pb.ABORTED, pb.FAILED})
    finally:
        await server.stop(grace=0)

    assert done.state == pb.COMPLETED
    assert done.verdict == "inconclusive: the steady state was never read"
    assert done.readings and all(r.error for r in done.readings)


# -- the rules as pure functions -----------------------------------------------------------


def _run(readings: list[tuple[float, float | None]], abort_after: float = 3.0) -> Injection:
    request = injection_request(
        steady_state={"slo": "merchant-write-success", "min": 0.9, "abort_after": abort_after},
        duration_seconds=10,
    )
    spec = validate_request(request, None, None)
    injection = Injection("inj-x", spec, ("p-1",), ("p-1",), created_at=100.0)
    injection.transition(State.ACTIVE, "on", switched_on_at=100.0)
    injection.readings.extend(
        SloReading(
            at=100.0 + at,
            value=value,
            breach=value is None,
            breach_seconds=0.0,
            error="" if value is not None else "unreadable",
        )
        for at, value in readings
    )
    return injection


def test_readings_covering_the_run_hold() -> None:
    assert deadline_verdict(_run([(t, 0.99) for t in range(0, 11)])) == HELD


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ([], "inconclusive: the steady state was never read"),
        ([(t, None) for t in range(11)], "inconclusive: the steady state was never read"),
        ([(1, 0.99), (2, 0.99), (9, 0.99)], "went unread for 7.0s (abort_after 3s)"),
        ([(2, 0.99), (4, 0.99)], "went unread for 6.0s"),  # the end is a stretch too
        ([(4, 0.99), (6, 0.99), (8, 0.99), (10, 0.99)], "went unread for 4.0s"),  # so is the start
    ],
)
def test_readings_with_a_hole_of_abort_after_are_inconclusive(
    readings: list[tuple[float, Any]], expected: str
) -> None:
    assert expected in deadline_verdict(_run(readings))


def _stats(covered: float, p5: float | None) -> BaselineStats:
    return BaselineStats("s", 10, covered, p5, p5, p5, p5, p5, 0 if p5 is not None else 10)


def test_no_baseline_required_and_none_recorded_admits() -> None:
    assert preflight_problem(_stats(0.0, None), minimum=0.9, min_seconds=0) is None


def test_the_baseline_message_says_what_is_missing() -> None:
    too_short = preflight_problem(_stats(0.0, None), minimum=0.9, min_seconds=10)
    unreadable = preflight_problem(_stats(20.0, None), minimum=0.9, min_seconds=10)
    assert too_short == (
        "steady_state.slo: only 0s of baseline for s, 10s required before injecting"
    )
    assert unreadable is not None and "not one readable sample" in unreadable
