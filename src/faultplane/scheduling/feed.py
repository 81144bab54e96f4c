"""Footprints from real injections: the seam between the server's model and the packer.

The packer's overlap rule must be the admission check's rule, or the scheduler would
start what admission then refuses (or hold back what it would admit). Admission refuses
a part whose chosen sidecars share one with a live injection's part on an equal traffic
scope; so a footprint's slots are (chosen sidecar, scope key) with a key that is equal
exactly when the scopes are equal. A queued injection's chosen sidecars are the ones
admission will choose: the choice is a pure function of the injection id and the
connected sidecars (faultplane.model.targets), so the footprint is exact as long as the
fleet does not change, and the packer re-plans when it does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from faultplane.model.injection import Injection
from faultplane.model.mesh import Mesh
from faultplane.model.spec import InjectionSpec, Scope
from faultplane.model.targets import select_targets
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Footprint

Sidecar = tuple[str, Mapping[str, str]]  # node id, labels (as admission takes them)


def scope_key(scope: Scope) -> str:
    """'inbound', 'upstream:fraud-scoring', plus the match when there is one; two keys
    are equal exactly when the scopes are (the match's repr is its full value)."""
    base = "inbound" if scope.upstream is None else f"upstream:{scope.upstream}"
    return f"{base} {scope.match!r}" if scope.match else base


def footprint_of_spec(
    spec: InjectionSpec, injection_id: str, sidecars: Sequence[Sequence[Sidecar]]
) -> Footprint:
    """A queued injection's footprint: `sidecars[i]` are the connected sidecars of part
    i's service, as admission would be given them."""
    slots = set()
    for part, connected in zip(spec.parts, sidecars, strict=True):
        _, chosen = select_targets(part.target, injection_id, connected)
        slots.update((node, scope_key(part.target.scope)) for node in chosen)
    return Footprint(spec.services, frozenset(slots))


def footprint_of_injection(injection: Injection) -> Footprint:
    """A live injection's footprint: the sidecars it really has, per part."""
    slots = {
        (node, scope_key(part.target.scope))
        for _, part, nodes in injection.parts()
        for node in nodes
    }
    return Footprint(injection.spec.services, frozenset(slots))


def graph_of_mesh(mesh: Mesh) -> DependencyGraph:
    """The dependency rule's graph from mesh.yaml's `dependencies` (who calls whom)."""
    return DependencyGraph({s.name: frozenset(s.dependencies) for s in mesh.services.values()})
