"""Partition: cut a selected group of sidecars off from one upstream, in either direction.

A partition is an abort on 100 % of the chosen traffic (`target.match` may narrow it),
answered with HTTP 503 unless the request says otherwise (`http_status`, or for a gRPC
upstream `grpc_status`: 14, UNAVAILABLE, is what a gRPC client sees of a lost peer),
between the target's selected group (`target.selector`, capped at `target.max_pods`) and
ONE upstream (`target.upstream`, required). Several upstreams are several parts of one
experiment.

`direction` says which side refuses the group's calls:

- `egress` (default): the group's own sidecars abort their calls to the upstream, on
  their egress route (full mesh) or their outbound ECDS slot matched on the upstream's
  cluster (overlay). Covers every request the group sends there; the upstream never sees
  them. Works in both modes.
- `ingress`: the upstream's sidecars (every sidecar of its service) abort, on their
  inbound, the requests that came through one of the group's sidecars; everyone else's
  calls are served. The upstream's side is where the partition is seen (its inbound stats
  count the aborts), as when the upstream's network drops one peer.
- `both`: the two together (belt and braces: what the group's abort lets through, e.g.
  past `max_active`, the upstream refuses).

How the upstream's inbound tells the group's requests from others': while the partition
is on, the group's sidecars add `x-faultplane-partition: <delivery id of the group's
part>` to every request on their route to the upstream, and the upstream's inbound abort
matches that header (`HTTPFault.headers`). Every sidecar's egress route strips the header
before adding its own (Envoy removes before it adds on one route), so an app cannot forge
a mark through its sidecar; a client calling an upstream's inbound listener directly, not
through a sidecar, can send any header (as it can `x-envoy-downstream-service-node`).
Envoy's own caller identity (`add_user_agent` setting `x-envoy-downstream-service-node`,
matched by `HTTPFault.downstream_nodes`) would need the group's node ids in the
upstream's filter, and the group is chosen at admission (max_pods picks among the
connected sidecars), after the request is validated; the mark names the group by the part
that chose it, so the upstream's filter is fixed when the request is validated and
survives a control-server restart unchanged.

Only faultplane's own mesh renders routes, so only there can the group mark its requests:
in overlay mode `ingress` and `both` are refused at the edge (`fault.direction`).

An `ingress` or `both` partition is delivered as two parts of one injection (see
`with_destinations`): the request's own part on the group (a mark, and for `both` the
abort) and, appended after the request's parts, one on the upstream's service (every
sidecar: selector empty, max_pods the service's pod count). Both sides are targets:
every one must ACK before the injection is ACTIVE, the overlap and slot checks cover both,
the plan shows both, and every end withdraws both. As for every injection, the targets
are the sidecars connected at admission: an upstream pod that connects later does not
refuse the group (its `egress` side, for `both`, still does).

The percentage is never a knob (a partition that lets 30 % through is an abort; use
`abort`), so a percentage other than 100 is refused, and so is a `ramp` pattern; `burst`
and `random` (a partition that comes and goes) are welcome on an `egress` partition. An
`ingress` or `both` partition has no pattern (yet): its two parts would each need the
pattern, moved together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from envoy.config.route.v3 import route_components_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from faultplane.faults.abort import ABORT, Abort
from faultplane.faults.kind import FieldValues, Problems
from faultplane.faults.slots import SlotConfig
from faultplane.model.mesh import Mesh
from faultplane.model.selector import parse_selector
from faultplane.model.spec import FaultSpec, Part, Scope, TargetSpec, injection_of, part_id
from faultplane.render.resources import PARTITION_HEADER
from faultplane.v1 import faultplane_pb2 as pb

DEFAULT_HTTP_STATUS = 503
DIRECTIONS = ("egress", "ingress", "both")
# The destination's max_pods when the mesh is not known (a stored record reloaded):
# every sidecar of the upstream. Its targets were chosen at admission and are stored.
_EVERY_POD = 100_000

Direction = Literal["egress", "ingress", "both"]
Side = Literal["sources", "destination"]


@dataclass(frozen=True)
class Partition:
    """Exactly one of the two statuses is set (503 when the request gave neither).

    `side`: on the group's sidecars ("sources", the request's own part) or on the
    upstream's ("destination", added by `with_destinations`); `source_part`, on the
    destination, is the index in the spec's parts of the group's part, whose delivery id
    is the mark it refuses."""

    http_status: int | None = DEFAULT_HTTP_STATUS
    grpc_status: int | None = None
    direction: Direction = "egress"
    side: Side = "sources"
    source_part: int = 0

    def as_abort(self) -> Abort:
        return Abort(self.http_status, self.grpc_status)

    @property
    def aborts_here(self) -> bool:
        """Whether this side aborts (the group's side of an `ingress` only marks)."""
        return self.side == "destination" or self.direction != "ingress"

    @property
    def marks(self) -> bool:
        """Whether this side marks the group's requests for the upstream's inbound."""
        return self.side == "sources" and self.direction != "egress"


class PartitionKind:
    name = "partition"
    field_names = frozenset({"http_status", "grpc_status", "direction"})
    spec_type = Partition

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Partition | None:
        http, grpc = fields.get("http_status"), fields.get("grpc_status")
        direction = _direction(fields.get("direction"), path, problems)
        if http is not None and grpc is not None:
            problems.add(
                f"{path}.grpc_status",
                "a partition answers with http_status or grpc_status, not both "
                f"(neither: http {DEFAULT_HTTP_STATUS})",
            )
            return None
        if direction is None:
            return None
        if http is None and grpc is None:
            return Partition(direction=direction)
        # The statuses' ranges are an abort's: one place says what they are.
        abort = ABORT.parse(fields, path, problems)
        if abort is None:
            return None
        return Partition(abort.http_status, abort.grpc_status, direction)

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
        elif fault.HasField("pattern") and fault.direction in ("ingress", "both"):
            problems.add(
                f"{prefix}fault.pattern",
                f"not supported on a partition with direction {fault.direction} (yet): it is "
                "delivered on both sides, which one pattern does not move together; "
                "use direction egress",
            )

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        """An abort slot switched on by the same runtime key as an abort's (percentage
        fixed at 100 by validation); on the upstream's side, limited to requests bearing
        the group's mark. The group's side of an `ingress` partition has no slot: it only
        marks (`request_headers`)."""
        partition = fault.kind
        assert isinstance(partition, Partition)
        if not partition.aborts_here:
            return []
        slots = ABORT.render(injection_id, replace(fault, kind=partition.as_abort()))
        if partition.side == "destination":
            mark = part_id(injection_of(injection_id), partition.source_part)
            for slot in slots:
                slot.config.headers.append(_bearing(mark))
        return slots

    def request_headers(self, injection_id: str, fault: FaultSpec) -> list[tuple[str, str]]:
        """Headers the group's sidecars add to the requests the fault covers: the mark the
        upstream's inbound refuses (its value the group's delivery id, `injection_id`)."""
        partition = fault.kind
        assert isinstance(partition, Partition)
        return [(PARTITION_HEADER, injection_id)] if partition.marks else []

    def describe(self, spec: Partition) -> str:
        status = (
            f"http {spec.http_status}"
            if spec.http_status is not None
            else f"grpc {spec.grpc_status}"
        )
        where = "" if spec.direction == "egress" else f" {spec.direction}"
        return f"partition {status}{where}"


_BY_NAME: dict[object, Direction] = {
    None: "egress",  # not given
    "egress": "egress",
    "ingress": "ingress",
    "both": "both",
}


def _direction(value: object, path: str, problems: Problems) -> Direction | None:
    """The given direction (egress when not given), or None with the problem added."""
    direction = _BY_NAME.get(value)
    if direction is not None:
        return direction
    # The value is not quoted back: it is unbounded text from the request.
    problems.add(f"{path}.direction", f"must be one of {', '.join(DIRECTIONS)}")
    return None


def _bearing(mark: str) -> route_components_pb2.HeaderMatcher:
    """Matches a request carrying `mark` in PARTITION_HEADER, alone or among other marks
    (Envoy joins a repeated header's values with commas before matching)."""
    regex = f"(.*,)?{re.escape(mark)}(,.*)?"
    return route_components_pb2.HeaderMatcher(
        name=PARTITION_HEADER,
        string_match=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex)),
    )


def with_destinations(
    parts: list[Part], mesh: Mesh | None, overlay: bool, prefixes: list[str], problems: Problems
) -> list[Part]:
    """`parts` followed by the upstream's part of every `ingress` or `both` partition
    among them (the request's parts keep their indices, so `faults[i]` still names them).

    `overlay`: the request is being accepted in overlay mode, where the group cannot mark
    its requests, so such a partition is refused (`prefixes[i]` is part i's path prefix
    in the request: `faults[1].`, or empty). `mesh` None (overlay, or a stored record
    reloaded) gives the destination max_pods = every pod."""
    destinations: list[Part] = []
    for index, part in enumerate(parts):
        partition = part.fault.kind
        if not isinstance(partition, Partition) or partition.direction == "egress":
            continue
        if overlay:
            problems.add(
                f"{prefixes[index]}fault.direction",
                f"{partition.direction} needs faultplane's own mesh: in overlay mode the "
                "group's sidecars cannot mark their requests for the upstream's inbound "
                "(faultplane does not render their routes); use direction egress",
            )
            continue
        destinations.append(_destination(part, index, mesh))
    return [*parts, *destinations]


def _destination(part: Part, index: int, mesh: Mesh | None) -> Part:
    """The upstream's part of the group's partition `part` (index `index`): every sidecar
    of the upstream's service, aborting on its inbound what bears the group's mark."""
    partition = part.fault.kind
    assert isinstance(partition, Partition) and part.target.scope.upstream is not None
    upstream = part.target.scope.upstream
    service = mesh.services.get(upstream) if mesh is not None else None
    max_pods = len(service.pods) if service is not None and service.pods else _EVERY_POD
    target = TargetSpec(
        upstream, parse_selector(""), max_pods, Scope(None, part.target.scope.match)
    )
    kind = replace(partition, side="destination", source_part=index)
    return Part(target, replace(part.fault, kind=kind))


PARTITION = PartitionKind()
