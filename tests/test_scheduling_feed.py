"""The packer's overlap rule, fed from real injection specs, agrees with admission.

For pairs of a live injection and a new one on the test mesh, the real admission check
refuses the new one for a shared sidecar and scope exactly when the scheduler's
`conflict` says they conflict, naming the same sidecar.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from faultplane.api.validate import validate_request
from faultplane.lifecycle.admission import Refused, admit
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.model.injection import Injection
from faultplane.model.mesh import load_mesh
from faultplane.model.spec import InjectionSpec
from faultplane.render.faults import render_faults
from faultplane.render.resources import SidecarLayout, sidecar_resources
from faultplane.scheduling.feed import (
    footprint_of_injection,
    footprint_of_spec,
    graph_of_mesh,
    scope_key,
)
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Experiment, Footprint
from faultplane.scheduling.rules import conflict
from tests.conftest import MESH_FILE
from tests.helpers import injection_request

MESH = load_mesh(MESH_FILE)
PAYMENTS = [(pod.name, pod.labels) for pod in MESH.services["payments-api"].pods]
INBOUND = {"selector": "", "max_pods": 4, "upstream": None}
ABORT = {"type": "abort", "http_status": 503}


def spec(**overrides: Any) -> InjectionSpec:
    return validate_request(injection_request(**overrides), MESH, None)


def render(node: str, faults: Any) -> Any:
    pod = MESH.pod(node)
    assert pod is not None
    return render_faults(sidecar_resources(MESH, pod, SidecarLayout(4)), faults, 4)


def admit_on_payments(wanted: InjectionSpec, injection_id: str, live: list[Injection]) -> Any:
    return admit(
        wanted, injection_id, PAYMENTS, live, {}, render,
        approval=ApprovalPolicy(), freeze=None, now=1_000_000.0, enabled=False,
    )  # fmt: skip


def experiment(id: str, footprint: Footprint) -> Experiment:
    return Experiment(id, footprint, timedelta(minutes=5), datetime(2026, 12, 3, tzinfo=UTC))


@pytest.mark.parametrize(
    ("new_target", "refused_on"),
    [
        ({**INBOUND, "selector": "shard=north-1"}, "payments-api-4"),
        ({**INBOUND, "upstream": "fraud-scoring"}, None),
        ({**INBOUND, "match": {"path_prefix": "/a"}}, None),
        ({**INBOUND, "max_pods": 1}, "chosen"),
    ],
)
def test_conflict_agrees_with_admission_on_shared_sidecar_and_scope(
    new_target: dict[str, Any], refused_on: str | None
) -> None:
    earlier = admit_on_payments(spec(target=INBOUND, fault=ABORT), "inj-e", [])
    live = earlier.injection({})
    wanted = spec(target=new_target, fault=ABORT)
    try:
        admit_on_payments(wanted, "inj-new", [live])
        refused: str | None = None
    except Refused as exc:
        refused = str(exc)
    ours = experiment("inj-new", footprint_of_spec(wanted, "inj-new", [PAYMENTS]))
    theirs = experiment("inj-e", footprint_of_injection(live))
    why = conflict(ours, theirs, DependencyGraph())
    assert (why is None) == (refused is None) == (refused_on is None), (why, refused)
    if refused is not None and why is not None:
        sidecar = why.removeprefix("same sidecar ").split(",")[0]
        assert f"sidecar {sidecar} already has live injection inj-e" in refused
        # the one sidecar admission chooses for inj-new (the choice hangs on the id)
        assert sidecar == (refused_on if refused_on != "chosen" else min(ours.footprint.slots)[0])


def test_scope_keys_are_equal_exactly_when_scopes_are() -> None:
    inbound = spec(target=INBOUND).target.scope
    upstream = spec(target={**INBOUND, "upstream": "fraud-scoring"}).target.scope
    matched = spec(target={**INBOUND, "match": {"path_prefix": "/a"}}).target.scope
    keys = [scope_key(s) for s in (inbound, upstream, matched)]
    assert keys[:2] == ["inbound", "upstream:fraud-scoring"]
    assert len(set(keys)) == 3
    assert scope_key(spec(target=INBOUND).target.scope) == keys[0]


def test_the_mesh_dependencies_feed_the_dependency_rule() -> None:
    graph = graph_of_mesh(MESH)
    assert graph.on_same_path("payments-api", "ledger")
    assert graph.on_same_path("fraud-scoring", "payments-api")
    assert not graph.on_same_path("fraud-scoring", "ledger")  # siblings, not one path
    fraud = experiment("inj-f", Footprint(frozenset({"fraud-scoring"})))
    payments = experiment("inj-p", Footprint(frozenset({"payments-api"})))
    assert conflict(fraud, payments, graph) == (
        "payments-api depends on fraud-scoring: same request path"
    )
