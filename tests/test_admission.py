"""Admission, as the pure decision it is: no server, no sidecar, no event loop.

Each refusal carries the message CreateInjection returns (FAILED_PRECONDITION); the
checks run in order (freeze, selector, control mode, overlap, slots), so each test
passes the ones before it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from faultplane.api.validate import validate_request
from faultplane.lifecycle.admission import Admission, Refused, Sidecar, admit
from faultplane.lifecycle.approval import ApprovalPolicy, Freeze
from faultplane.model.injection import Injection, State
from faultplane.model.mesh import load_mesh
from faultplane.model.spec import InjectionSpec
from faultplane.render.faults import FaultAssignment, render_faults
from faultplane.render.resources import Resources, SidecarLayout, sidecar_resources
from tests.conftest import MESH_FILE
from tests.helpers import injection_request

MESH = load_mesh(MESH_FILE)
NOW = 1_000_000.0
PAYMENTS: list[Sidecar] = [(pod.name, pod.labels) for pod in MESH.services["payments-api"].pods]
SOUTH = ("payments-api-1", "payments-api-2", "payments-api-3")
INBOUND = {"selector": "", "max_pods": 4, "upstream": None}
ABORT = {"type": "abort", "http_status": 503}


def spec(**overrides: Any) -> InjectionSpec:
    """The issue's example (3 of shard south-1, latency on calls to fraud-scoring)."""
    return validate_request(injection_request(**overrides), MESH, None)


def renderer(fault_slots: int = 4):
    def render(node: str, faults: Sequence[FaultAssignment]) -> Resources:
        pod = MESH.pod(node)
        assert pod is not None
        base = sidecar_resources(MESH, pod, SidecarLayout(fault_slots))
        return render_faults(base, faults, fault_slots)

    return render


def decide(
    wanted: InjectionSpec,
    injection_id: str = "inj-new",
    *,
    sidecars: Sequence[Sidecar] = PAYMENTS,
    injections: Iterable[Injection] = (),
    carried: Mapping[str, Mapping[str, FaultAssignment]] | None = None,
    fault_slots: int = 4,
    approval: ApprovalPolicy | None = None,
    freeze: Freeze | None = None,
    enabled: bool = False,
    more_sidecars: Sequence[Sequence[Sidecar]] = (),
) -> Admission:
    return admit(
        wanted, injection_id, sidecars, injections, carried or {}, renderer(fault_slots),
        approval=approval or ApprovalPolicy(), freeze=freeze, now=NOW, enabled=enabled,
        more_sidecars=more_sidecars,
    )  # fmt: skip


def live(wanted: InjectionSpec, injection_id: str) -> Injection:
    """An injection admitted before, still live."""
    return decide(wanted, injection_id).injection({})


def test_admits_up_to_max_pods_of_the_selector_matches_each_carrying_the_fault() -> None:
    admission = decide(spec(target={"max_pods": 2}))

    assert admission.matched == SOUTH
    assert len(admission.targets) == 2 and set(admission.targets) <= set(SOUTH)
    assert set(admission.assignments) == set(admission.rendered) == set(admission.targets)
    assert all(faults == (admission.fault,) for faults in admission.assignments.values())
    assert admission.fault.injection_id == "inj-new" and not admission.fault.enabled


def test_the_same_injection_id_always_chooses_the_same_targets() -> None:
    wanted = spec(target={"max_pods": 2})
    assert decide(wanted, "inj-a").targets == decide(wanted, "inj-a").targets


def test_a_new_fault_is_added_after_the_ones_a_target_already_carries() -> None:
    other = FaultAssignment("inj-old", spec().fault, spec().target.scope, True)
    carried = {node: {"inj-old": other} for node in SOUTH}

    admission = decide(spec(target={"upstream": None}), carried=carried)

    assert all(faults == (other, admission.fault) for faults in admission.assignments.values())


def test_a_plan_renders_the_fault_switched_on() -> None:
    assert decide(spec(), enabled=True).fault.enabled


def test_a_selector_matching_no_connected_sidecar_is_refused() -> None:
    with pytest.raises(Refused) as refused:
        decide(spec(target={"selector": "shard=east-9"}))
    assert str(refused.value) == (
        "target: selector 'shard=east-9' matches no connected sidecar of payments-api (4 connected)"
    )


def test_with_no_connected_sidecar_every_injection_is_refused() -> None:
    with pytest.raises(Refused, match=r"matches no connected sidecar .* \(0 connected\)"):
        decide(spec(), sidecars=[])


def test_control_mode_is_refused_when_every_sidecar_would_be_faulted() -> None:
    steady = {"slo": "merchant-write-success", "min": 0.9, "abort_after": 60}
    control = {**steady, "compare": "control"}
    with pytest.raises(Refused) as refused:
        decide(spec(target=INBOUND, steady_state=control))
    assert str(refused.value) == (
        "steady_state.compare: control mode needs unfaulted sidecars of payments-api, "
        "but all 4 would be faulted"
    )
    assert len(decide(spec(target={**INBOUND, "max_pods": 3}, steady_state=control)).targets) == 3


def test_a_live_injection_on_the_same_scope_and_a_shared_sidecar_refuses_the_new_one() -> None:
    earlier = live(spec(target=INBOUND, fault=ABORT), "inj-earlier")
    with pytest.raises(Refused) as refused:
        decide(spec(target={**INBOUND, "selector": "shard=north-1"}), injections=[earlier])
    assert str(refused.value) == (
        "target: sidecar payments-api-4 already has live injection inj-earlier "
        "on the same traffic scope"
    )


def test_injections_on_other_scopes_other_sidecars_or_finished_do_not_conflict() -> None:
    inbound = spec(target=INBOUND, fault=ABORT)
    outbound = live(spec(target={**INBOUND, "upstream": "fraud-scoring"}), "inj-outbound")
    match_scoped = live(spec(target={**INBOUND, "match": {"path_prefix": "/a"}}), "inj-match")
    elsewhere = live(spec(target={"upstream": None, "max_pods": 3}), "inj-south")
    finished = live(inbound, "inj-finished")
    finished.transition(State.ABORTED, "aborted by an operator")

    admission = decide(
        spec(target={**INBOUND, "selector": "shard=north-1"}),
        injections=[outbound, match_scoped, elsewhere, finished],
    )
    assert admission.targets == ("payments-api-4",)


def test_a_target_without_a_free_fault_slot_is_refused() -> None:
    scope = spec(target=INBOUND).target.scope
    busy = FaultAssignment("inj-busy", spec(fault=ABORT).fault, scope, True)

    with pytest.raises(Refused) as refused:
        decide(
            spec(target={**INBOUND, "match": {"path_prefix": "/x"}}, fault=ABORT),
            carried={"payments-api-2": {"inj-busy": busy}},
            fault_slots=1,
        )
    assert str(refused.value).startswith("target: sidecar payments-api-2: route ")
    assert str(refused.value).endswith("has no free fault slot (all 1 in use)")


def test_a_fault_needing_more_slots_than_a_sidecar_has_is_refused() -> None:
    # A p50/p99 latency distribution takes two slots per route.
    with pytest.raises(Refused, match=r"no free fault slot \(all 1 in use\)"):
        decide(spec(), fault_slots=1)


def test_an_active_freeze_refuses_before_anything_else() -> None:
    freeze = Freeze(NOW + 60, "release week", "vic", NOW - 60)
    with pytest.raises(Refused) as refused:
        decide(spec(target={"selector": "shard=east-9"}), sidecars=[], freeze=freeze)
    assert str(refused.value) == freeze.describe()
    assert str(refused.value).endswith("by vic: release week")


def test_a_freeze_that_ran_out_refuses_nothing() -> None:
    freeze = Freeze(NOW - 1, "release week", "vic", NOW - 60)
    assert decide(spec(), freeze=freeze).targets


def test_above_the_approval_policy_the_injection_waits_for_a_second_person() -> None:
    admission = decide(spec(), approval=ApprovalPolicy(max_pods=2))

    assert admission.needs_approval == ("max_pods 3 > 2",)
    injection = admission.injection({"owner": "x"})
    assert injection.state is State.PENDING_APPROVAL
    assert injection.reason == (
        "waiting for approval by someone other than sre-oncall@paysetu.example: max_pods 3 > 2"
    )
    assert injection.targets == admission.targets and injection.matched == admission.matched


def test_within_the_approval_policy_the_injection_starts_pending() -> None:
    injection = decide(spec()).injection({})
    assert injection.state is State.PENDING
    assert injection.reason == "accepted, pushing to targets"
    assert [t.to_state for t in injection.transitions] == [State.PENDING]


def test_admission_changes_none_of_its_inputs() -> None:
    earlier = live(spec(target=INBOUND, fault=ABORT), "inj-earlier")
    other = FaultAssignment("inj-old", spec().fault, spec().target.scope, True)
    carried = {"payments-api-1": {"inj-old": other}}
    before = (copy.deepcopy(carried), earlier.state, list(earlier.transitions))

    with pytest.raises(Refused):
        decide(spec(target=INBOUND), injections=[earlier], carried=carried)
    decide(spec(), carried=carried)

    assert (carried, earlier.state, earlier.transitions) == before
