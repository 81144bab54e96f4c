"""Partition: cut a selected group of sidecars off from one upstream.

A partition is an abort on 100 % of the chosen traffic (`target.match` may narrow it),
answered with HTTP 503 unless the request says otherwise (`http_status`, or for a gRPC
upstream `grpc_status`: 14, UNAVAILABLE, is what a gRPC client sees of a lost peer),
between the target's selected group (`target.selector`) and ONE upstream
(`target.upstream`, required). Several upstreams are several parts of one experiment.

Direction: "from" only. The abort sits on the group's egress to that upstream, so it
covers every request the group sends there, in both full-mesh and overlay mode (where
`target.upstream` is the Envoy cluster name, matched as `HTTPFault.upstream_cluster`).
The reverse direction — the upstream's ingress refusing requests that come from the
group — is not offered: Envoy's fault filter can tell a request's origin only through
`downstream_nodes`, which reads the `x-envoy-downstream-service-node` header, and this
mesh's egress does not set it, so an ingress abort would either catch every caller or
none. A "to" partition of the group is the group's own ingress: an `abort` fault with
no upstream.

The percentage is never a knob (a partition that lets 30 % through is an abort; use
`abort`), so a percentage other than 100 is refused, and so is a `ramp` pattern;
`burst` and `random` (a partition that comes and goes) are welcome.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from faultplane.faults.abort import ABORT, Abort
from faultplane.faults.kind import FieldValues, Problems
from faultplane.faults.slots import SlotConfig
from faultplane.model.spec import FaultSpec
from faultplane.v1 import faultplane_pb2 as pb

DEFAULT_HTTP_STATUS = 503


@dataclass(frozen=True)
class Partition:
    """Exactly one of the two statuses is set (503 when the request gave neither)."""

    http_status: int | None = DEFAULT_HTTP_STATUS
    grpc_status: int | None = None

    def as_abort(self) -> Abort:
        return Abort(self.http_status, self.grpc_status)


class PartitionKind:
    name = "partition"
    field_names = frozenset({"http_status", "grpc_status"})
    spec_type = Partition

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Partition | None:
        http, grpc = fields.get("http_status"), fields.get("grpc_status")
        if http is not None and grpc is not None:
            problems.add(
                f"{path}.grpc_status",
                "a partition answers with http_status or grpc_status, not both "
                f"(neither: http {DEFAULT_HTTP_STATUS})",
            )
            return None
        if http is None and grpc is None:
            return Partition()
        # The statuses' ranges are an abort's: one place says what they are.
        abort = ABORT.parse(fields, path, problems)
        return None if abort is None else Partition(abort.http_status, abort.grpc_status)

    def check_request(
        self, target: pb.Target, fault: pb.Fault, problems: Problems, prefix: str = ""
    ) -> None:
        """What a partition needs of the rest of its part, which `parse` cannot see:
        an upstream to cut the group off from, and the whole of the traffic. `prefix`
        is the part's path in a multi-part request (`faults[1].`), empty otherwise."""
        if not target.upstream:
            problems.add(
                f"{prefix}target.upstream",
                "required for a partition: the dependency the group is cut off from "
                "(one per partition; several upstreams are several parts)",
            )
        if fault.HasField("percentage") and fault.percentage != 100:
            problems.add(
                f"{prefix}fault.percentage",
                f"a partition drops 100 % of the chosen traffic, not {fault.percentage:g} "
                "(leave it out; narrow the traffic with target.match, or use an abort fault)",
            )
        if fault.HasField("pattern") and fault.pattern.kind == "ramp":
            problems.add(
                f"{prefix}fault.pattern.kind",
                "a partition is all or nothing: burst or random, not ramp",
            )

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        """An abort slot: the partition is an abort whose percentage validation fixed
        at 100, switched on by the same runtime key."""
        partition = fault.kind
        assert isinstance(partition, Partition)
        return ABORT.render(injection_id, replace(fault, kind=partition.as_abort()))

    def describe(self, spec: Partition) -> str:
        if spec.http_status is not None:
            return f"partition http {spec.http_status}"
        return f"partition grpc {spec.grpc_status}"


PARTITION = PartitionKind()
