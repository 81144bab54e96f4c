"""Abort: answer with an HTTP or a gRPC status instead of calling upstream."""

from __future__ import annotations

from dataclasses import dataclass

from faultplane.faults.kind import FieldValues, Problems
from faultplane.faults.slots import SlotConfig, http_fault, runtime_key, zero_percent
from faultplane.model.spec import FaultSpec


@dataclass(frozen=True)
class Abort:
    """Exactly one of the two statuses is set."""

    http_status: int | None = None
    grpc_status: int | None = None


class AbortKind:
    name = "abort"
    field_names = frozenset({"http_status", "grpc_status"})
    spec_type = Abort

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Abort | None:
        http, grpc = fields.get("http_status"), fields.get("grpc_status")
        if (http is None) == (grpc is None):
            problems.add(
                f"{path}.http_status",
                "an abort fault needs exactly one of http_status or grpc_status",
            )
            return None
        if http is not None and not 200 <= http <= 599:
            problems.add(f"{path}.http_status", "must be between 200 and 599")
            return None
        if grpc is not None and not 0 <= grpc <= 16:
            problems.add(f"{path}.grpc_status", "must be between 0 and 16")
            return None
        return Abort(
            int(http) if http is not None else None, int(grpc) if grpc is not None else None
        )

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        abort = fault.kind
        assert isinstance(abort, Abort)
        config = http_fault(fault)
        config.abort.percentage.CopyFrom(zero_percent())
        if abort.http_status is not None:
            config.abort.http_status = abort.http_status
        else:
            # Set even when 0 (OK): an abort without an error type is no abort.
            config.abort.grpc_status = abort.grpc_status or 0
        key = runtime_key(injection_id, 0, "abort_pct")
        config.abort_percent_runtime = key
        return [SlotConfig(config, {key: fault.percentage})]

    def describe(self, spec: Abort) -> str:
        if spec.http_status is not None:
            return f"abort http {spec.http_status}"
        return f"abort grpc {spec.grpc_status}"


ABORT = AbortKind()
