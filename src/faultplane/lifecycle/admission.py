"""Admission: may an injection start now, on which sidecars, and what would each carry.

A pure function of what the scheduler knows when a CreateInjection (or a PlanInjection)
arrives: the spec, the connected sidecars of its service, the injections in memory, the
faults each sidecar already carries or has reserved, how the plane renders faults onto a
sidecar (where its fault slots run out), the freeze and the approval policy. It does no
I/O and changes nothing, so the scheduler can admit and register in one step, without an
`await` for concurrent creates to interleave in, and every refusal is testable without a
sidecar. The checks, in the order a refusal reports the first that fails: the freeze;
the selector matches a connected sidecar; control mode leaves an unfaulted sidecar; no
chosen sidecar has a live injection on the same traffic scope; every chosen sidecar has
a free fault slot on every route the fault covers.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faultplane.lifecycle.approval import ApprovalPolicy, Freeze
from faultplane.model.injection import Injection, State
from faultplane.model.spec import InjectionSpec
from faultplane.model.targets import select_targets
from faultplane.render.faults import FaultAssignment, SlotsExhausted
from faultplane.render.resources import Resources

# How the plane renders a sidecar carrying these faults (raises SlotsExhausted).
Render = Callable[[str, Sequence[FaultAssignment]], Resources]
Sidecar = tuple[str, Mapping[str, str]]  # node id, labels


class Refused(Exception):
    """The request is valid but cannot be carried out now (FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class Admission:
    """An admitted injection: where its fault goes and what each target would carry."""

    injection_id: str
    spec: InjectionSpec
    matched: tuple[str, ...]  # every connected sidecar the selector matches, sorted
    targets: tuple[str, ...]  # the chosen ones (at most max_pods), in rank order
    fault: FaultAssignment  # the injection's fault, as every target gets it
    # Per target: every fault it would carry, this one last, and how that renders.
    assignments: Mapping[str, tuple[FaultAssignment, ...]]
    rendered: Mapping[str, Resources]
    needs_approval: tuple[str, ...]  # why a second person must approve; empty: starts now

    def injection(self, document: Mapping[str, Any]) -> Injection:
        """The injection in its first state: waiting for approval, or pending."""
        if self.needs_approval:
            first = State.PENDING_APPROVAL
            reason = (
                f"waiting for approval by someone other than {self.spec.owner}: "
                f"{'; '.join(self.needs_approval)}"
            )
        else:
            first, reason = State.PENDING, "accepted, pushing to targets"
        return Injection(
            self.injection_id, self.spec, self.targets, self.matched, document,
            state=first, reason=reason,
        )  # fmt: skip


def new_injection_id() -> str:
    """The id a new injection is admitted under: `inj-<UTC day>-<8 random hex digits>`."""
    return f"inj-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def admit(
    spec: InjectionSpec,
    injection_id: str,
    sidecars: Sequence[Sidecar],
    injections: Iterable[Injection],
    carried: Mapping[str, Mapping[str, FaultAssignment]],
    render: Render,
    *,
    approval: ApprovalPolicy,
    freeze: Freeze | None,
    now: float,
    enabled: bool = False,
) -> Admission:
    """Admit `spec` as `injection_id`, or raise Refused saying why not.

    `sidecars`: the connected sidecars of its service; `injections`: those in memory
    (every live one is); `carried`: per node, the faults it carries or has reserved, by
    injection; `enabled`: render the fault switched on (a plan shows it so) rather than
    armed (as a create reserves it)."""
    if freeze is not None and freeze.active(now):
        raise Refused(freeze.describe())
    target = spec.target
    matched, chosen = select_targets(target, injection_id, sidecars)
    if not chosen:
        raise Refused(
            f"target: selector {target.selector.text!r} matches no connected sidecar "
            f"of {target.service} ({len(sidecars)} connected)"
        )
    if spec.steady_state.compare == "control" and len(sidecars) == len(chosen):
        raise Refused(
            f"steady_state.compare: control mode needs unfaulted sidecars of "
            f"{target.service}, but all {len(sidecars)} would be faulted"
        )
    for other in injections:
        if other.state.live and other.spec.target.scope == target.scope:
            shared = sorted(set(other.targets) & set(chosen))
            if shared:
                raise Refused(
                    f"target: sidecar {shared[0]} already has live injection {other.id} "
                    "on the same traffic scope"
                )
    fault = FaultAssignment(injection_id, spec.fault, target.scope, enabled)
    assignments = {node: (*carried.get(node, {}).values(), fault) for node in chosen}
    rendered = {}
    for node, faults in assignments.items():
        try:
            rendered[node] = render(node, faults)
        except SlotsExhausted as exc:
            raise Refused(f"target: sidecar {node}: {exc}") from exc
    return Admission(
        injection_id, spec, matched, chosen, fault, assignments, rendered,
        tuple(approval.reasons(spec)),
    )  # fmt: skip
