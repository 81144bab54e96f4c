"""The kernel layer as a fault kind: a node agent's fault, carried through the platform.

A request's fault with `layer: kernel` is not rendered onto Envoy: it becomes a
`NetworkFaultSpec` (faultplane.kernel.fault), which the agent plane
(faultplane.delivery.agents) sends to the node agent hosting each chosen pod. It is
registered as a kind all the same (`KERNEL`, by its spec only: no document's `type`
names it), so that everything that names a part's
fault (tables, metrics, notifications, the queue's footprints) names it through the one
registry; its `render` is never called (an agent pod is not rendered as Envoy config).

`type` is the kernel kind (packet_loss, partition, reset, bandwidth, latency), with the
request fields mapped onto the kernel's: `percentage` is the share of packets dropped
(packet_loss), `kbps` the rate (bandwidth), `fixed_ms` the delay (latency, netem only),
`direction` egress (default) or ingress, `cidr` and `port` the far end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from faultplane.faults.kind import FieldValues, Problems
from faultplane.kernel.fault import KernelFaultError, NetworkFaultSpec, parse_network_fault
from faultplane.kernel.kinds import kind_of

if TYPE_CHECKING:
    from faultplane.faults.slots import SlotConfig
    from faultplane.model.spec import FaultSpec

LAYER = "kernel"
# Request field -> the kernel fault's field it gives (faultplane.kernel.fault).
REQUEST_FIELDS: Mapping[str, str] = {
    "type": "kind",
    "direction": "direction",
    "cidr": "cidr",
    "port": "port",
    "percentage": "percentage",
    "kbps": "kbps",
    "fixed_ms": "delay_ms",
}


class KernelLayerKind:
    """The registered kind of every kernel-layer fault (its spec: NetworkFaultSpec)."""

    name = LAYER
    field_names: frozenset[str] = frozenset()
    spec_type = NetworkFaultSpec

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> None:
        """Never reached: registered unnamed, it is chosen by `layer`, not by `type`
        (api.validate_kernel parses it)."""
        problems.add(f"{path}.layer", f"a kernel fault is chosen by layer: {LAYER}")

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        raise ValueError("a kernel fault is applied by a node agent, never rendered onto Envoy")

    def describe(self, spec: NetworkFaultSpec) -> str:
        far = " ".join(
            part
            for part in (
                str(spec.cidr) if spec.cidr else "",
                f"port {spec.port}" if spec.port else "",
            )
            if part
        )
        what = kind_of(spec.spec).describe(spec.spec)
        return f"kernel {what} {spec.direction.value} to {far or 'any'}"


KERNEL = KernelLayerKind()


def kernel_fields(given: Mapping[str, Any]) -> dict[str, Any]:
    """The kernel fault's fields from a request fault's set fields (proto names)."""
    fields = {
        REQUEST_FIELDS[name]: value for name, value in given.items() if name in REQUEST_FIELDS
    }
    fields.setdefault("direction", "egress")
    return fields


def parse_kernel_fault(
    given: Mapping[str, Any], problems: Problems, path: str = "fault"
) -> NetworkFaultSpec | None:
    """The request fault's set fields (proto names, `layer` among them) as a validated
    NetworkFaultSpec, or None with every problem added under `path`: a field the kernel
    kind does not read is named with the request's own name for it."""
    inverse = {kernel: request for request, kernel in REQUEST_FIELDS.items()}
    for name in sorted(set(given) - set(REQUEST_FIELDS) - {"layer"}):
        kind = given.get("type") or "kernel"
        problems.add(f"{path}.{name}", f"not a field of a kernel {kind} fault")
    try:
        return parse_network_fault(kernel_fields(given), path)
    except KernelFaultError as exc:
        for where, reason in exc.problems:
            field_name = where.removeprefix(f"{path}.")
            named = inverse.get(field_name, field_name)
            problems.add(f"{path}.{named}", reason)
        return None
