"""The edge's checks of a kernel-layer fault (`fault.layer: kernel`), beside validate.py.

A kernel fault is delivered by node agents, not Envoy, so what only Envoy can do is
refused here, naming the field: a per-kind member (`fault.latency: {...}`; the kernel
layer is written flat), `max_active`, a `pattern`, `target.upstream` and `target.match`
(the far end of a kernel fault is `fault.cidr` and/or `fault.port`). The fault's own
fields are checked by faultplane.faults.kernel. Its `target.service` is not looked up in
the mesh: agent pods register their services when their agent connects, and a selector
matching none of them is refused at admission (FAILED_PRECONDITION), as for sidecars.
"""

from __future__ import annotations

from dataclasses import replace

from faultplane.faults.kernel import LAYER, parse_kernel_fault
from faultplane.faults.kind import Problems
from faultplane.kernel.fault import NetworkFaultSpec
from faultplane.model.spec import FaultSpec, Scope, TargetSpec
from faultplane.v1 import faultplane_pb2 as pb

_ENVOY_ONLY = ("max_active", "pattern")


def is_kernel(holder: pb.InjectionRequest | pb.FaultPart) -> bool:
    """Whether the part's fault names a layer (only `kernel` is one): its checks are here."""
    return holder.HasField("fault") and holder.fault.HasField("layer")


def kernel_fault(
    holder: pb.InjectionRequest | pb.FaultPart, problems: Problems
) -> FaultSpec | None:
    """The part's kernel fault as a FaultSpec (its kind a NetworkFaultSpec), or None with
    every problem of the fault and of the target fields it cannot use added."""
    fault, before = holder.fault, len(problems.found)
    if fault.layer != LAYER:
        problems.add(
            "fault.layer", f"must be {LAYER} or absent (the sidecar layer), not {fault.layer!r}"
        )
        return None
    member = fault.WhichOneof("kind")
    if member is not None:
        problems.add(
            f"fault.{member}", "a kernel fault is written flat: type and its fields beside it"
        )
    for name in _ENVOY_ONLY:
        if fault.HasField(name):
            problems.add(f"fault.{name}", "not offered on the kernel layer (an Envoy filter's)")
    if holder.HasField("target"):
        if holder.target.upstream:
            problems.add(
                "target.upstream",
                "a kernel fault names its far end with fault.cidr and/or fault.port, "
                "not a mesh upstream",
            )
        if holder.target.HasField("match"):
            problems.add("target.match", "a kernel fault sees packets, not requests: no match")
    given = {
        field.name: value
        for field, value in fault.ListFields()
        if field.name not in _ENVOY_ONLY and field.name != member
    }
    spec = parse_kernel_fault(given, problems)
    if spec is None or len(problems.found) > before:
        return None
    # The share of matching traffic faulted, as approval policies read it: a loss's
    # percentage; every packet for the other kinds.
    return FaultSpec(spec, percentage=getattr(spec.spec, "percentage", 100.0))


def kernel_scope(target: TargetSpec, fault: FaultSpec) -> TargetSpec:
    """The target with the kernel fault's traffic as its scope: its direction and far end
    (`kernel:egress:10.0.0.5/32:5432`), so that the overlap check refuses a second fault
    on the same pod's same traffic but lets one towards the database and one towards the
    cache run together, as two upstreams of a sidecar do."""
    spec = fault.kind
    assert isinstance(spec, NetworkFaultSpec)
    far = f"{spec.cidr or 'any'}:{spec.port or 'any'}"
    return replace(target, scope=Scope(f"kernel:{spec.direction.value}:{far}"))
