"""Readable tables for the CLI (scripts use --json)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp

from faultplane.faults.message import describe_fault
from faultplane.model.pattern import describe_pattern
from faultplane.v1 import faultplane_pb2 as pb


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(
            str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)
        ).rstrip()
        for line in lines
    )


XDS_COLUMNS = ("cds", "eds", "lds", "rds", "ecds", "rtds", "kernel")
FULL_MESH_COLUMNS = ("cds", "eds", "lds", "rds", "rtds")


def sidecars_table(sidecars: Sequence[pb.Sidecar]) -> str:
    """One column per xDS type the sidecars use: a full mesh's five, an overlay
    sidecar's ECDS and RTDS."""
    seen = {status.type for sidecar in sidecars for status in sidecar.xds}
    xds_types = tuple(t for t in XDS_COLUMNS if t in seen) or FULL_MESH_COLUMNS
    agents = any(sidecar.kind == "agent" for sidecar in sidecars)
    rows = []
    for sidecar in sidecars:
        acked = {status.type: status.version_acked or "-" for status in sidecar.xds}
        errors = "; ".join(f"{s.type}: {s.last_error}" for s in sidecar.xds if s.last_error)
        # A node agent's pod: the kernel fault kinds its agent can apply, and why not more.
        kinds = ",".join(sidecar.capabilities) + (f" ({sidecar.capability_note})"
                                                  if sidecar.capability_note else "")  # fmt: skip
        rows.append(
            [
                sidecar.node_id,
                sidecar.kind or "envoy",
                sidecar.service,
                ",".join(f"{k}={v}" for k, v in sorted(sidecar.labels.items())),
                "yes" if sidecar.connected else "no",
                *(acked.get(t, "-") for t in xds_types),
                errors or "-",
                *([kinds or "-"] if agents else []),
            ]
        )
    headers = ["SIDECAR", "KIND", "SERVICE", "LABELS", "CONNECTED",
               *(t.upper() for t in xds_types), "LAST NACK"]  # fmt: skip
    return table([*headers, *(["KERNEL FAULTS"] if agents else [])], rows)


def natural_key(name: str) -> list[int | str]:
    """payments-api-2 before payments-api-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def plan_summary(plan: pb.InjectionPlan, request: pb.InjectionRequest) -> str:
    """What `inject` would do, one rendering per distinct change: the sidecars that get the
    same route config and runtime keys share one block, named together."""
    targets = sorted(plan.targets, key=natural_key)
    lines = [
        f"matched: {', '.join(plan.matched) or 'nothing'}",
        f"targets: {', '.join(targets) or 'none'}",
    ]
    caps = [part.target.max_pods for part in request_parts(request)]
    if sum(caps) < len(plan.matched):
        lines.append(
            f"note: max_pods {'+'.join(map(str, caps))} < {len(plan.matched)} matched: these "
            f"{len(targets)} are this plan's pick; `inject` picks again for the injection it "
            "creates, so the sidecars it faults may differ"
        )
    groups: dict[tuple[str, str, tuple[tuple[str, float], ...]], list[str]] = {}
    for sidecar in plan.sidecars:
        change = (
            sidecar.route_config,
            sidecar.route_config_json,
            tuple(sorted(sidecar.runtime.items())),
        )
        groups.setdefault(change, []).append(sidecar.sidecar)
    count = len(groups)
    lines.append(f"{count} distinct change{'' if count == 1 else 's'}:")
    for (route_config, config_json, runtime), sidecars in groups.items():
        names = ", ".join(sorted(sidecars, key=natural_key))
        lines.append(f"\n{names}: route config {route_config!r}")
        lines.append(json.dumps(json.loads(config_json), indent=2))
        lines += [f"  runtime {key} = {percent:g} %" for key, percent in runtime]
    for pod in plan.agent_pods:  # kernel faults: the nftables transaction, verbatim
        lines.append(f"\n{pod.target}: nft in netns {pod.netns or '?'} (one transaction)")
        lines += [f"  {command}" for command in pod.nft_commands]
    return "\n".join(lines)


def state_name(state: int) -> str:
    """A state's name; a transition from nothing reads 'new'."""
    return "new" if state == pb.STATE_UNSPECIFIED else pb.State.Name(state)


def _when(stamp: Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S") if stamp.seconds else "-"


def _at(stamp: Timestamp) -> str:
    """A queue spans days: the date too, in UTC."""
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def request_parts(request: pb.InjectionRequest) -> list[pb.FaultPart]:
    """The request's faults: its `faults`, or its one target and fault as a part."""
    if request.faults:
        return list(request.faults)
    return [pb.FaultPart(target=request.target, fault=request.fault)]


def fault_summary(request: pb.InjectionRequest) -> str:
    """`latency p50 200ms p99 500ms on 30% -> fraud-scoring`, each part's joined by
    ` + ` in a multi-fault experiment (`... + abort 503 on 10% -> ledger`)."""
    return " + ".join(_part_summary(part) for part in request_parts(request))


def _part_summary(request: pb.FaultPart) -> str:
    """One part: the kind says its part."""
    fault = request.fault
    what = describe_fault(fault)
    if fault.HasField("percentage"):
        what += f" on {fault.percentage:g}%"
    if fault.HasField("pattern"):
        fields = {f.name: v for f, v in fault.pattern.ListFields() if f.name != "kind"}
        what += f", {describe_pattern(fault.pattern.kind, fields)}"
    scope = f" -> {request.target.upstream}" if request.target.upstream else " inbound"
    return what + scope


def injections_table(injections: Sequence[pb.Injection]) -> str:
    rows = [
        [
            inj.id,
            pb.State.Name(inj.state),
            ",".join(dict.fromkeys(p.target.service for p in request_parts(inj.request))),
            fault_summary(inj.request),
            str(len(inj.targets)),
            inj.owner,
            _when(inj.ended_at) if inj.ended_at.seconds else _when(inj.ends_at),
        ]
        for inj in injections
    ]
    listed = table(["ID", "STATE", "SERVICE", "FAULT", "PODS", "OWNER", "ENDS/ENDED"], rows)
    waiting = [f"{inj.id} {inj.waiting_reason}" for inj in injections if inj.waiting_reason]
    return "\n".join([listed, *(["", "queued:"] if waiting else []), *waiting])


def queue_table(rows: Sequence[pb.QueueRow]) -> str:
    """`faultplane queue`: the forecast, earliest first, with why each waits now."""
    body = [
        [
            row.injection_id,
            row.status,
            _at(row.start) if row.HasField("start") else "-",
            _at(row.end) if row.HasField("end") else "-",
            row.reason,
        ]
        for row in rows
    ]
    if not body:
        return "nothing queued or running"
    return table(["ID", "STATUS", "START", "END", "WAITS NOW FOR"], body)


def injection_detail(injection: pb.Injection) -> str:
    request = injection.request
    lines = [
        f"injection   {injection.id}",
        f"state       {pb.State.Name(injection.state)} ({injection.reason})",
        *([f"waiting     {injection.waiting_reason}"] if injection.waiting_reason else []),
        *([f"verdict     {injection.verdict}"] if injection.verdict else []),
        f"owner       {injection.owner}",
        f"hypothesis  {request.hypothesis}",
        f"fault       {fault_summary(request)}, {request.duration_seconds:g}s",
        *[
            f"target      {p.target.service} [{p.target.selector}] max {p.target.max_pods}"
            + (f": {', '.join(injection.targets)}" if not request.faults else "")
            for p in request_parts(request)
        ],
        *([f"sidecars    {', '.join(injection.targets)}"] if request.faults else []),
        f"steady      {request.steady_state.slo} >= {request.steady_state.min:g} "
        f"(abort after {request.steady_state.abort_after:g}s)",
        f"times       created {_when(injection.created_at)}, active {_when(injection.activated_at)}"
        f", ends {_when(injection.ends_at)}, ended {_when(injection.ended_at)}",
        "transitions:",
    ]
    for change in injection.transitions:
        answers = Counter(f"{e.type} {e.outcome}" for e in change.evidence)
        evidence = ", ".join(f"{n} {what}" for what, n in sorted(answers.items()))
        lines.append(
            f"  {_when(change.at)}  {state_name(change.from_state)} -> "
            f"{state_name(change.to_state)}  {change.reason}"
            + (f"  [{evidence}]" if evidence else "")
        )
    if injection.readings:
        lines.append(
            f"steady state ({request.steady_state.slo}, min {request.steady_state.min:g}):"
        )
        lines += [_reading_line(reading) for reading in injection.readings]
    return "\n".join(lines)


def _reading_line(reading: pb.SloReading) -> str:
    value = f"{reading.value:.4f}" if reading.HasField("value") else "unreadable"
    control = f"  control {reading.control_value:.4f}" if reading.HasField("control_value") else ""
    breach = f"  BREACH {reading.breach_seconds:.1f}s" if reading.breach else ""
    error = f"  ({reading.error})" if reading.error else ""
    return f"  {_when(reading.at)}  {value}{control}{breach}{error}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def baseline_summary(baseline: pb.Baseline) -> str:
    def field(name: str) -> float | None:
        return getattr(baseline, name) if baseline.HasField(name) else None

    ready = baseline.seconds_covered >= baseline.required_seconds
    return "\n".join(
        [
            f"slo          {baseline.slo}",
            f"history      {baseline.seconds_covered:.0f}s, {baseline.samples} samples "
            f"({baseline.unreadable} unreadable); {baseline.required_seconds:g}s required: "
            + ("ready" if ready else "not yet"),
            f"min          {_number(field('min'))}",
            f"p1           {_number(field('p1'))}",
            f"p5           {_number(field('p5'))}",
            f"median       {_number(field('median'))}",
            f"noise band   {_number(field('p5'))} .. {_number(field('p95'))} (p5 .. p95); "
            "a steady_state.min above the p5 is refused",
        ]
    )
