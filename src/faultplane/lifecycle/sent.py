"""What each target of an existing injection is (or was) sent for it: GetInjectionPlan.

PlanInjection of an injection's own request cannot answer this while it is live: the
injection holds its own traffic scope, so admission refuses the plan as an overlap. This
renders from what the injection stored instead (its parts and each part's targets), with
its faults switched on, and no admission check. While it is live a target is rendered
with everything it carries now (other injections' faults too, as Envoy has it); once it
has ended, with its own faults alone (the others' may have changed since).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from faultplane.lifecycle.admission import Render
from faultplane.model.injection import Injection
from faultplane.model.spec import Scope, injection_of
from faultplane.render.faults import FaultAssignment, SlotsExhausted
from faultplane.render.resources import Resources

# Per node, the faults it carries or has reserved now, by delivery id.
Carried = Callable[[str], Mapping[str, FaultAssignment]]


@dataclass
class SentPlan:
    rendered: dict[str, Resources] = field(default_factory=dict)
    scopes: dict[str, Scope] = field(default_factory=dict)  # the first part on each target
    unrendered: list[str] = field(default_factory=list)  # "node: why not"


def sent_plan(injection: Injection, render: Render, carried: Carried) -> SentPlan:
    """Each target of `injection` rendered with its faults switched on; a target that
    cannot be rendered today (its pod left the mesh, say) is named in `unrendered`."""
    plan = SentPlan()
    own: dict[str, list[FaultAssignment]] = {}
    for assignment_id, part, nodes in injection.parts():
        fault = FaultAssignment(assignment_id, part.fault, part.target.scope, True)
        for node in nodes:
            own.setdefault(node, []).append(fault)
            plan.scopes.setdefault(node, part.target.scope)
    for node, faults in own.items():
        others = (
            [f for key, f in carried(node).items() if injection_of(key) != injection.id]
            if injection.state.live
            else []
        )
        try:
            plan.rendered[node] = render(node, [*others, *faults])
        except (KeyError, ValueError, SlotsExhausted) as exc:
            plan.unrendered.append(f"{node}: {_why(exc)}")
    return plan


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__
