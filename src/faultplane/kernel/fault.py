"""One kernel fault on one pod, validated at the edge and trusted behind it.

`parse_network_fault` turns a request's fields (a dict) into a frozen `NetworkFaultSpec`
(what the API edge validates, before targets are chosen); `parse_fault` turns the agent's
xDS message (the same plus pod and id) into a `KernelFault`. Both raise `KernelFaultError`
carrying every problem at once, each naming the field and the reason (`fault.cidr:
'10.0.0.300/8' is not an IP network: ...`), the way the API edge reports a sidecar
fault's fields.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faultplane.faults.kind import Problems
from faultplane.kernel.kinds import KINDS, KindSpec, kind_of

# Fault ids and pod names end up in nft comments and xDS resource names: a safe alphabet.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
_SCOPE_FIELDS = frozenset({"pod", "id", "kind", "direction", "cidr", "port"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Direction(enum.Enum):
    EGRESS = "egress"  # packets the pod sends: the far end is their destination
    INGRESS = "ingress"  # packets the pod receives: the far end is their source


@dataclass(frozen=True)
class KernelFault:
    """`spec` on the traffic between pod `pod` and the far end (`cidr` and/or `port`;
    neither: all traffic) in one direction."""

    pod: str
    id: str
    direction: Direction
    cidr: Network | None
    port: int | None
    spec: KindSpec

    @property
    def kind(self) -> str:
        return kind_of(self.spec).name

    @property
    def key(self) -> str:
        """The xDS resource name, and the tag on its rules: `POD/ID`."""
        return f"{self.pod}/{self.id}"

    def describe(self) -> str:
        far = " ".join(
            part
            for part in (
                str(self.cidr) if self.cidr else "",
                f"port {self.port}" if self.port else "",
            )
            if part
        )
        return f"{kind_of(self.spec).describe(self.spec)} {self.direction.value} {far or 'all'}"


class KernelFaultError(ValueError):
    """A kernel fault that cannot be applied as given; `problems` are (field, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


@dataclass(frozen=True)
class NetworkFaultSpec:
    """What a request asks of every targeted pod, before it is placed on one: the API
    edge validates this (no pod or id yet); `on` makes each pod's KernelFault."""

    direction: Direction
    cidr: Network | None
    port: int | None
    spec: KindSpec

    def on(self, pod: str, fault_id: str) -> KernelFault:
        return KernelFault(pod, fault_id, self.direction, self.cidr, self.port, self.spec)


def parse_network_fault(fields: Mapping[str, Any], path: str = "fault") -> NetworkFaultSpec:
    """The validated request fields (kind, direction, cidr, port and the kind's own), or
    KernelFaultError naming every bad field and why.

    Unset fields may be absent, None, "" or 0 (a proto3 message's defaults)."""
    problems = Problems()
    found = _network_fault(fields, path, problems)
    if problems.found or found is None:
        raise KernelFaultError(problems.found)
    return found


def parse_fault(fields: Mapping[str, Any], path: str = "fault") -> KernelFault:
    """The same with `pod` and `id` (the agent's xDS resource): one pod's fault."""
    problems = Problems()
    pod = _name(fields, "pod", path, problems)
    fault_id = _name(fields, "id", path, problems)
    found = _network_fault(fields, path, problems)
    if problems.found or found is None:
        raise KernelFaultError(problems.found)
    assert pod and fault_id
    return found.on(pod, fault_id)


def _network_fault(
    fields: Mapping[str, Any], path: str, problems: Problems
) -> NetworkFaultSpec | None:
    direction = _direction(fields.get("direction"), path, problems)
    cidr = _cidr(fields.get("cidr"), path, problems)
    port = _port(fields.get("port"), path, problems)
    kind_name = fields.get("kind") or ""
    kind = KINDS.get(kind_name)
    if kind is None:
        problems.add(f"{path}.kind", f"unknown kind {kind_name!r}; one of {', '.join(KINDS)}")
        return None
    own = {k: v for k, v in fields.items() if k in kind.field_names and v not in (None, "")}
    spec = kind.parse(own, path, problems)
    for name in sorted(set(fields) - kind.field_names - _SCOPE_FIELDS):
        if fields[name] not in (None, "", 0):
            problems.add(f"{path}.{name}", f"not a field of a {kind.name} fault")
    if direction is None or spec is None:
        return None
    return NetworkFaultSpec(direction, cidr, port, spec)


def _name(fields: Mapping[str, Any], name: str, path: str, problems: Problems) -> str | None:
    value = fields.get(name) or ""
    if not isinstance(value, str) or not _NAME.match(value):
        problems.add(f"{path}.{name}", f"{value!r} is not a name (1-63 of A-Z a-z 0-9 _ . : -)")
        return None
    return value


def _direction(value: Any, path: str, problems: Problems) -> Direction | None:
    try:
        return Direction(value)
    except ValueError:
        problems.add(f"{path}.direction", f"must be egress or ingress, not {value!r}")
        return None


def _cidr(value: Any, path: str, problems: Problems) -> Network | None:
    if value in (None, ""):
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError) as exc:
        problems.add(f"{path}.cidr", f"{value!r} is not an IP network: {exc}")
        return None


def _port(value: Any, path: str, problems: Problems) -> int | None:
    if value in (None, 0, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        problems.add(f"{path}.port", f"must be a port in 1-65535, not {value!r}")
        return None
    return value
