"""Turns an InjectionRequest into an InjectionSpec, or says exactly what is wrong.

Every problem is reported with the field's path in the request document
(`fault.p99_ms: must be greater than p50_ms (200)`), all of them at once, so an operator
fixes a file in one go. A fault's own fields are its kind's to check (faultplane.faults).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from faultplane.api.validate_kernel import is_kernel, kernel_fault, kernel_scope
from faultplane.api.validate_queue import queue_terms
from faultplane.faults.kind import Problems
from faultplane.faults.message import given_fault
from faultplane.faults.partition import with_destinations
from faultplane.model.mesh import DNS_LABEL, Mesh
from faultplane.model.pattern import parse_pattern
from faultplane.model.selector import SelectorError, parse_selector
from faultplane.model.spec import (
    FaultSpec,
    InjectionSpec,
    Match,
    Part,
    Scope,
    SteadyStateSpec,
    TargetSpec,
)
from faultplane.v1 import faultplane_pb2 as pb

MAX_DURATION_SECONDS = 24 * 3600
MAX_PODS_LIMIT = 100_000
MAX_PARTS = 16  # faults in one experiment
# A freeze with an end is a planned window (a release, peak trading); longer than this is
# "until lifted" (until 0), which says so instead of hiding in a date nobody will reach.
# The bound also keeps every accepted time inside what datetime and protobuf Timestamps
# can represent (year 9999): past that, describing the freeze used to fail every
# CreateInjection with an internal error.
MAX_FREEZE_SECONDS = 366 * 24 * 3600
MAX_TEXT = 4096
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class InvalidRequest(ValueError):
    """The request cannot be accepted; `problems` are (field path, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


# The longest text each field of an InjectionRequest may hold (characters). Every accepted
# request is stored whole (its injection, the audit log), so every field is bounded, and
# checked first: later messages quote values ("unknown service 'x'"), and a quoted
# megabyte would flood the audit and the logs all the same.
MAX_NAME = 256  # service, upstream, SLO, owner, fault type, header name, method
MAX_SHORT_TEXT = 512  # selector, path prefix, header value
MAX_MATCH_HEADERS = 8
MAX_MATCH_METHODS = len(HTTP_METHODS)


def length_problem(value: str, limit: int) -> str | None:
    """The reason a text field is refused for its length, or None if it fits."""
    if len(value) <= limit:
        return None
    return f"at most {limit} characters (got {len(value)})"


def check_length(value: str, path: str, limit: int) -> None:
    """Raise InvalidRequest (INVALID_ARGUMENT naming `path` and its limit) if `value` is
    longer than `limit` characters: for free-text fields outside InjectionRequest, such
    as an abort's `reason`."""
    reason = length_problem(value, limit)
    if reason is not None:
        raise InvalidRequest([(path, reason)])


def oversized_fields(request: pb.InjectionRequest) -> list[tuple[str, str]]:
    """(field, reason) for every text field of the request over its limit."""
    fields: list[tuple[str, str, int]] = [
        ("steady_state.slo", request.steady_state.slo, MAX_NAME),
        ("steady_state.compare", request.steady_state.compare, MAX_NAME),
        ("hypothesis", request.hypothesis, MAX_TEXT),
        ("owner", request.owner, MAX_NAME),
    ]
    found: list[tuple[str, str]] = []
    if len(request.faults) > MAX_PARTS:
        found.append(("faults", f"at most {MAX_PARTS} parts (got {len(request.faults)})"))
        return found
    holders = [("", request)] + [(f"faults[{i}].", p) for i, p in enumerate(request.faults)]
    for prefix, holder in holders:
        found.extend(_oversized_part(holder, prefix, fields))
    for path, value, limit in fields:
        reason = length_problem(value, limit)
        if reason is not None:
            found.append((path, reason))
    return found


def _oversized_part(
    holder: pb.InjectionRequest | pb.FaultPart, prefix: str, fields: list[tuple[str, str, int]]
) -> list[tuple[str, str]]:
    """The part's text fields go on `fields` (checked by the caller); what is refused
    before any length is measured (too many headers or methods) is returned."""
    target, match = holder.target, holder.target.match
    t = f"{prefix}target"
    fields.extend([
        (f"{t}.service", target.service, MAX_NAME),
        (f"{t}.selector", target.selector, MAX_SHORT_TEXT),
        (f"{t}.upstream", target.upstream, MAX_NAME),
        (f"{t}.namespace", target.namespace, MAX_NAME),
        (f"{t}.match.path_prefix", match.path_prefix, MAX_SHORT_TEXT),
        (f"{prefix}fault.type", holder.fault.type, MAX_NAME),
    ])  # fmt: skip
    found: list[tuple[str, str]] = []
    if len(match.headers) > MAX_MATCH_HEADERS:
        found.append((f"{t}.match.headers", f"at most {MAX_MATCH_HEADERS} headers"))
    else:
        for name, value in match.headers.items():
            if len(name) > MAX_NAME:
                found.append((f"{t}.match.headers", f"header names of at most {MAX_NAME} "
                              f"characters (got {len(name)})"))  # fmt: skip
            else:
                fields.append((f"{t}.match.headers.{name}", value, MAX_SHORT_TEXT))
    if len(match.methods) > MAX_MATCH_METHODS:
        found.append((f"{t}.match.methods", f"at most {MAX_MATCH_METHODS} methods"))
    else:
        fields.extend((f"{t}.match.methods", m, MAX_NAME) for m in match.methods)
    return found


def validate_request(
    request: pb.InjectionRequest, mesh: Mesh | None, slos: Collection[str] | None
) -> InjectionSpec:
    """`slos`: the SLO catalogue's names (empty: none configured, so every SLO is
    unreadable and refused), or None to skip the check (reloading a stored request).

    `mesh` None trusts the service and upstream names: reloading a record accepted
    against a mesh that has changed since."""
    # Refused before any value is parsed, or echoed back in an error. Not on a reload
    # (slos None): a record accepted before these limits existed must still load.
    too_long = oversized_fields(request) if slos is not None else []
    if too_long:
        raise InvalidRequest(too_long)
    problems = Problems()
    duration = _duration(request, problems)
    parts = _parts(request, mesh, duration, problems)
    if parts:
        # An ingress or both partition is delivered on the upstream's sidecars too; not
        # in overlay mode (a new request, mesh None), where it is refused.
        prefixes = [f"faults[{i}]." for i in range(len(parts))] if request.faults else [""]
        overlay = mesh is None and slos is not None
        parts = with_destinations(parts, mesh, overlay, prefixes, problems)
    steady_state = _steady_state(request, slos, problems)
    hypothesis = _required_text(request.hypothesis, "hypothesis", problems)
    owner = _required_text(request.owner, "owner", problems)
    terms = queue_terms(request, problems)
    if problems.found:
        raise InvalidRequest(problems.found)
    assert parts and steady_state and duration is not None
    first, *more = parts
    return InjectionSpec(
        first.target, first.fault, duration, steady_state, hypothesis, owner, tuple(more),
        terms,
    )  # fmt: skip


@dataclass
class _Under(Problems):
    """Problems of one part of `faults`, added to the request's under `prefix`."""

    prefix: str = ""

    def add(self, path: str, reason: str) -> None:
        self.found.append((f"{self.prefix}{path}", reason))


def _parts(
    request: pb.InjectionRequest, mesh: Mesh | None, duration: float | None, problems: Problems
) -> list[Part] | None:
    """The request's parts: its target and fault, or each entry of `faults` (exactly one
    form). Each part may have its own pattern (one driver per part moves its keys)."""
    if not request.faults:
        part = _part(request, mesh, duration, problems)
        return [part] if part else None
    if request.HasField("target") or request.HasField("fault"):
        problems.add("faults", "give target and fault, or faults, not both")
        return None
    if len(request.faults) > MAX_PARTS:
        problems.add("faults", f"at most {MAX_PARTS} parts (got {len(request.faults)})")
        return None
    parts = []
    for i, given in enumerate(request.faults):
        under = _Under(problems.found, f"faults[{i}].")
        parts.append(_part(given, mesh, duration, under))
    return None if None in parts else [p for p in parts if p is not None]


def _part(
    holder: pb.InjectionRequest | pb.FaultPart,
    mesh: Mesh | None,
    duration: float | None,
    problems: Problems,
) -> Part | None:
    target = _target(holder, mesh, problems)
    fault = _fault(holder, problems)
    fault = _with_pattern(holder.fault, fault, duration, problems)
    if target and fault and is_kernel(holder):
        target = kernel_scope(target, fault)
    return Part(target, fault) if target and fault else None


def _target(
    request: pb.InjectionRequest | pb.FaultPart, mesh: Mesh | None, problems: Problems
) -> TargetSpec | None:
    if not request.HasField("target"):
        problems.add("target", "required")
        return None
    target = request.target
    ok = True
    service = mesh.services.get(target.service) if mesh is not None else None
    if not target.service:
        problems.add("target.service", "required")
        ok = False
    elif service is None and mesh is not None and not is_kernel(request):
        problems.add("target.service", f"unknown service {target.service!r}")
        ok = False
    try:
        selector = parse_selector(target.selector)
    except SelectorError as exc:
        problems.add("target.selector", str(exc))
        ok = False
    if not 1 <= target.max_pods <= MAX_PODS_LIMIT:
        bounds = f"between 1 and {MAX_PODS_LIMIT}"  # 0 is how proto3 says "not given"
        reason = f"{bounds}, not {target.max_pods}" if target.max_pods else f"required, {bounds}"
        problems.add("target.max_pods", reason)
        ok = False
    upstream = target.upstream or None
    if upstream is not None and service is not None and upstream not in service.dependencies:
        problems.add(
            "target.upstream",
            f"{upstream!r} is not a dependency of {target.service} "
            f"(its dependencies: {', '.join(service.dependencies) or 'none'})",
        )
        ok = False
    if target.namespace and not DNS_LABEL.fullmatch(target.namespace):
        problems.add("target.namespace", "must be a DNS label (a Kubernetes namespace name)")
        ok = False
    match = _match(target, problems)
    if not ok or match is None:
        return None
    scope = Scope(upstream, match)
    return TargetSpec(target.service, selector, target.max_pods, scope, target.namespace or None)


def _match(target: pb.Target, problems: Problems) -> Match | None:
    if not target.HasField("match"):
        return Match()
    match = target.match
    ok = True
    if match.path_prefix and not match.path_prefix.startswith("/"):
        problems.add("target.match.path_prefix", "must start with '/'")
        ok = False
    for name in match.headers:
        if not _HEADER_NAME.match(name) or name.startswith(":"):
            problems.add(f"target.match.headers.{name}", "not a valid header name")
            ok = False
    methods = tuple(m.upper() for m in match.methods)
    unknown = sorted(set(methods) - HTTP_METHODS)
    if unknown:
        problems.add("target.match.methods", f"unknown method(s) {', '.join(unknown)}")
        ok = False
    if not ok:
        return None
    headers = tuple(sorted((k.lower(), v) for k, v in match.headers.items()))
    return Match(match.path_prefix, headers, tuple(sorted(set(methods))))


def _fault(request: pb.InjectionRequest | pb.FaultPart, problems: Problems) -> FaultSpec | None:
    if not request.HasField("fault"):
        problems.add("fault", "required")
        return None
    if is_kernel(request):  # a node agent's fault: checked by api.validate_kernel
        return kernel_fault(request, problems)
    fault = request.fault
    given = given_fault(fault, problems)
    if given is None:
        return None
    before = len(problems.found)
    kind = given.kind.parse(given.fields, given.path, problems)
    # A kind that needs something of the rest of the request (a partition: an upstream,
    # the whole of the traffic) says so through its optional check_request.
    check_request = getattr(given.kind, "check_request", None)
    if check_request is not None:
        check_request(request.target, fault, problems)
    percentage = fault.percentage if fault.HasField("percentage") else 100.0
    if not (math.isfinite(percentage) and 0 < percentage <= 100):
        problems.add("fault.percentage", "must be greater than 0 and at most 100")
    if fault.HasField("max_active") and fault.max_active < 1:
        problems.add("fault.max_active", "must be at least 1")
    if kind is None or len(problems.found) > before:
        return None
    max_active = fault.max_active if fault.HasField("max_active") else None
    return FaultSpec(kind, percentage, max_active)


def _with_pattern(
    given: pb.Fault, fault: FaultSpec | None, duration: float | None, problems: Problems
) -> FaultSpec | None:
    """`fault` with its `pattern`, which every kind may have (a pattern scales the
    runtime percentages every kind is switched on by); checked against the duration."""
    if not given.HasField("pattern"):
        return fault
    fields = {f.name: v for f, v in given.pattern.ListFields() if f.name != "kind"}
    pattern = parse_pattern(given.pattern.kind, fields, duration, problems)
    return replace(fault, pattern=pattern) if fault and pattern else None


def _duration(request: pb.InjectionRequest, problems: Problems) -> float | None:
    """Seconds, numeric on the API (the CLI turns "5m" into 300). Proto3 cannot tell a
    missing number from 0, so only 0 says "required"; a value that was given is told
    what was wrong with it, not that it is missing."""
    duration = request.duration_seconds
    limit = f"at most {MAX_DURATION_SECONDS} ({MAX_DURATION_SECONDS // 3600} h)"
    if duration == 0:
        problems.add("duration_seconds", f"required: seconds, greater than 0 and {limit}")
    elif math.isfinite(duration) and duration > MAX_DURATION_SECONDS:
        problems.add("duration_seconds", f"{limit}, not {duration:g}")
    elif not (math.isfinite(duration) and duration > 0):
        problems.add("duration_seconds", f"must be greater than 0 and {limit}, not {duration:g}")
    else:
        return duration
    return None


def _steady_state(
    request: pb.InjectionRequest, slos: Collection[str] | None, problems: Problems
) -> SteadyStateSpec | None:
    if not request.HasField("steady_state"):
        problems.add("steady_state", "required: the SLO that must hold while the fault runs")
        return None
    steady = request.steady_state
    before = len(problems.found)
    if not steady.slo:
        problems.add("steady_state.slo", "required")
    elif slos is not None and not slos:
        problems.add(
            "steady_state.slo",
            f"cannot read SLO {steady.slo!r}: this server has no SLO catalogue "
            "(start it with serve --slos FILE); the steady state is never optional",
        )
    elif slos is not None and steady.slo not in slos:
        problems.add(
            "steady_state.slo", f"unknown SLO {steady.slo!r} (known: {', '.join(sorted(slos))})"
        )
    if not steady.HasField("min") or not math.isfinite(steady.min):
        problems.add("steady_state.min", "required: the lowest acceptable SLO value")
    if not (math.isfinite(steady.abort_after) and steady.abort_after > 0):
        problems.add("steady_state.abort_after", "required, in seconds, greater than 0")
    if steady.compare not in ("", "control"):
        problems.add("steady_state.compare", "must be empty or 'control'")
    if len(problems.found) > before:
        return None
    return SteadyStateSpec(steady.slo, steady.min, steady.abort_after, steady.compare)


def _required_text(value: str, path: str, problems: Problems) -> str:
    if not value.strip():
        problems.add(path, "required")
    elif len(value) > MAX_TEXT:
        problems.add(path, f"at most {MAX_TEXT} characters")
    return value.strip()


def validate_freeze(request: pb.FreezeRequest, now: float) -> tuple[float | None, str]:
    """A Freeze request's (until, reason); `until` None means until lifted.

    Refused here, at the edge, rather than stored: a stored freeze is consulted by every
    later CreateInjection, so one bad value would break admission for everyone.
    """
    problems = Problems()
    reason = _required_text(request.reason, "reason", problems)
    until = _freeze_until(request.until, now, problems)
    if problems.found:
        raise InvalidRequest(problems.found)
    return until, reason


def _freeze_until(until: float, now: float, problems: Problems) -> float | None:
    """0 (the proto default) is "until lifted"; anything else must be a real, future
    moment within MAX_FREEZE_SECONDS (NaN, infinities and the past are all refused)."""
    if until == 0:
        return None
    latest = now + MAX_FREEZE_SECONDS
    if not (math.isfinite(until) and now < until <= latest):
        problems.add(
            "until",
            f"must be a time in the future no later than {_iso(latest)} "
            f"({MAX_FREEZE_SECONDS // 86400} days from now), in Unix seconds; "
            f"0 freezes until lifted (got {until!r})",
        )
        return None
    return until


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
