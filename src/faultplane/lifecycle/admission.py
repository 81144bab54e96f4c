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
from faultplane.model.spec import InjectionSpec, Part, Scope, injection_of, part_id
from faultplane.model.targets import select_targets
from faultplane.render.faults import FaultAssignment, SlotsExhausted
from faultplane.render.resources import Resources

# How the plane renders a sidecar carrying these faults (raises SlotsExhausted).
Render = Callable[[str, Sequence[FaultAssignment]], Resources]
Sidecar = tuple[str, Mapping[str, str]]  # node id, labels


class Refused(Exception):
    """The request is valid but cannot be carried out now (FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class PartAdmission:
    """One part of an admitted injection: its delivery id, sidecars and fault."""

    assignment_id: str  # see faultplane.model.spec.part_id
    targets: tuple[str, ...]
    fault: FaultAssignment


@dataclass(frozen=True)
class Admission:
    """An admitted injection: where its faults go and what each target would carry."""

    injection_id: str
    spec: InjectionSpec
    matched: tuple[str, ...]  # every connected sidecar a selector matches (of every part)
    targets: tuple[str, ...]  # the chosen ones (at most max_pods per part): the union
    fault: FaultAssignment  # the first part's fault, as every one of its targets gets it
    # Per target: every fault it would carry, this injection's last, and how that renders.
    assignments: Mapping[str, tuple[FaultAssignment, ...]]
    rendered: Mapping[str, Resources]
    needs_approval: tuple[str, ...]  # why a second person must approve; empty: starts now
    parts: tuple[PartAdmission, ...] = ()

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
        part_targets = tuple(p.targets for p in self.parts) if len(self.parts) > 1 else ()
        return Injection(
            self.injection_id, self.spec, self.targets, self.matched, document,
            state=first, reason=reason, part_targets=part_targets,
        )  # fmt: skip

    def scope_of(self, node: str) -> Scope:
        """The traffic scope of the first part that chose `node` (a plan shows it)."""
        return next((p.fault.scope for p in self.parts if node in p.targets), self.fault.scope)


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
    more_sidecars: Sequence[Sequence[Sidecar]] = (),
) -> Admission:
    """Admit `spec` as `injection_id`, or raise Refused saying why not.

    `sidecars`: the connected sidecars of its (first part's) service, `more_sidecars`
    those of each later part's; `injections`: those in memory (every live one is);
    `carried`: per node, the faults it carries or has reserved, by delivery id;
    `enabled`: render the faults switched on (a plan shows them so) rather than armed (as
    a create reserves them). Every check covers every part; a refusal names the part
    (`faults[1].target: ...`) when there are several."""
    if freeze is not None and freeze.active(now):
        raise Refused(freeze.describe())
    live = [other for other in injections if other.state.live]
    several = len(spec.parts) > 1
    parts: list[PartAdmission] = []
    matched: dict[str, None] = {}
    for index, part in enumerate(spec.parts):
        where = _where(part, index, several)
        connected = sidecars if index == 0 else more_sidecars[index - 1]
        found, chosen = _choose(part, injection_id, connected, where, spec, live, parts)
        matched.update(dict.fromkeys(found))
        fault = FaultAssignment(part_id(injection_id, index), part.fault, part.target.scope,
                                enabled)  # fmt: skip
        parts.append(PartAdmission(fault.injection_id, chosen, fault))
    targets = tuple(dict.fromkeys(node for p in parts for node in p.targets))
    assignments = {
        node: (
            *(f for key, f in carried.get(node, {}).items() if injection_of(key) != injection_id),
            *(p.fault for p in parts if node in p.targets),
        )
        for node in targets
    }
    rendered = {}
    for node, faults in assignments.items():
        try:
            rendered[node] = render(node, faults)
        except SlotsExhausted as exc:
            raise Refused(f"target: sidecar {node}: {exc}") from exc
    return Admission(
        injection_id, spec, tuple(sorted(matched)), targets, parts[0].fault, assignments,
        rendered, tuple(approval.reasons(spec)), tuple(parts),
    )  # fmt: skip


def _choose(
    part: Part,
    injection_id: str,
    sidecars: Sequence[Sidecar],
    where: str,
    spec: InjectionSpec,
    live: Sequence[Injection],
    earlier: Sequence[PartAdmission],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(matched, chosen) for one part, or Refused: nothing matched, control mode left no
    unfaulted sidecar, or a chosen sidecar already has a live injection (or an earlier
    part of this one) on the same traffic scope."""
    target = part.target
    matched, chosen = select_targets(target, injection_id, sidecars)
    if not chosen:
        raise Refused(
            f"{where}: selector {target.selector.text!r} matches no connected sidecar "
            f"of {target.service} ({len(sidecars)} connected)"
        )
    if spec.steady_state.compare == "control" and len(sidecars) == len(chosen):
        raise Refused(
            f"steady_state.compare: control mode needs unfaulted sidecars of "
            f"{target.service}, but all {len(sidecars)} would be faulted"
        )
    for other in live:
        for _, other_part, other_targets in other.parts():
            if other_part.target.scope != target.scope:
                continue
            shared = sorted(set(other_targets) & set(chosen))
            if shared:
                raise Refused(
                    f"{where}: sidecar {shared[0]} already has live injection {other.id} "
                    "on the same traffic scope"
                )
    for index, before in enumerate(earlier):
        shared = sorted(set(before.targets) & set(chosen))
        if before.fault.scope == target.scope and shared:
            raise Refused(
                f"{where}: sidecar {shared[0]} is also chosen by faults[{index}] on the "
                "same traffic scope (one fault per sidecar and scope)"
            )
    return matched, chosen


def _where(part: Part, index: int, several: bool) -> str:
    """How a refusal names the part: its place in the request, or, for the part faultplane
    added on a partition's upstream (not in the request), the partition it serves."""
    if getattr(part.fault.kind, "side", None) == "destination":
        source = getattr(part.fault.kind, "source_part", 0)
        named = f"faults[{source}]" if several else "the partition"
        return f"the upstream side of {named} ({part.target.service})"
    return f"faults[{index}].target" if several else "target"
