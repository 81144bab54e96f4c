import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnConflict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_CONFLICT_REFUSE: _ClassVar[OnConflict]
    ON_CONFLICT_QUEUE: _ClassVar[OnConflict]

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    PENDING: _ClassVar[State]
    ACTIVE: _ClassVar[State]
    COMPLETED: _ClassVar[State]
    ABORTED: _ClassVar[State]
    FAILED: _ClassVar[State]
    PENDING_APPROVAL: _ClassVar[State]
    QUEUED: _ClassVar[State]
    EXPIRED: _ClassVar[State]

class InjectionEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INJECTION_EVENT_TRANSITION: _ClassVar[InjectionEventKind]
    INJECTION_EVENT_READING: _ClassVar[InjectionEventKind]
    INJECTION_EVENT_FREEZE: _ClassVar[InjectionEventKind]
    INJECTION_EVENT_SCHEDULING: _ClassVar[InjectionEventKind]
ON_CONFLICT_REFUSE: OnConflict
ON_CONFLICT_QUEUE: OnConflict
STATE_UNSPECIFIED: State
PENDING: State
ACTIVE: State
COMPLETED: State
ABORTED: State
FAILED: State
PENDING_APPROVAL: State
QUEUED: State
EXPIRED: State
INJECTION_EVENT_TRANSITION: InjectionEventKind
INJECTION_EVENT_READING: InjectionEventKind
INJECTION_EVENT_FREEZE: InjectionEventKind
INJECTION_EVENT_SCHEDULING: InjectionEventKind

class ApproveInjectionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class FreezeRequest(_message.Message):
    __slots__ = ("until", "reason")
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    until: float
    reason: str
    def __init__(self, until: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class UnfreezeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFreezeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FreezeState(_message.Message):
    __slots__ = ("frozen", "until", "reason", "by", "at", "lapsed")
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    LAPSED_FIELD_NUMBER: _ClassVar[int]
    frozen: bool
    until: _timestamp_pb2.Timestamp
    reason: str
    by: str
    at: _timestamp_pb2.Timestamp
    lapsed: bool
    def __init__(self, frozen: _Optional[bool] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., by: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lapsed: _Optional[bool] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("injection_id", "since", "page_size", "page_token")
    INJECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    injection_id: str
    since: float
    page_size: int
    page_token: str
    def __init__(self, injection_id: _Optional[str] = ..., since: _Optional[float] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "at", "entry_json", "prev_hash", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_JSON_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    entry_json: str
    prev_hash: str
    hash: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entry_json: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditVerdict(_message.Message):
    __slots__ = ("ok", "entries", "broken_at", "problem", "checked", "unchecked")
    OK_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BROKEN_AT_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    UNCHECKED_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    entries: int
    broken_at: int
    problem: str
    checked: _containers.RepeatedScalarFieldContainer[str]
    unchecked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., entries: _Optional[int] = ..., broken_at: _Optional[int] = ..., problem: _Optional[str] = ..., checked: _Optional[_Iterable[str]] = ..., unchecked: _Optional[_Iterable[str]] = ...) -> None: ...

class InjectionRequest(_message.Message):
    __slots__ = ("target", "fault", "duration_seconds", "steady_state", "hypothesis", "owner", "faults", "not_before", "not_after", "priority", "on_conflict", "windows", "allow_dependent")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STEADY_STATE_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESIS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DEPENDENT_FIELD_NUMBER: _ClassVar[int]
    target: Target
    fault: Fault
    duration_seconds: float
    steady_state: SteadyState
    hypothesis: str
    owner: str
    faults: _containers.RepeatedCompositeFieldContainer[FaultPart]
    not_before: _timestamp_pb2.Timestamp
    not_after: _timestamp_pb2.Timestamp
    priority: int
    on_conflict: OnConflict
    windows: _containers.RepeatedCompositeFieldContainer[ExperimentWindow]
    allow_dependent: bool
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., fault: _Optional[_Union[Fault, _Mapping]] = ..., duration_seconds: _Optional[float] = ..., steady_state: _Optional[_Union[SteadyState, _Mapping]] = ..., hypothesis: _Optional[str] = ..., owner: _Optional[str] = ..., faults: _Optional[_Iterable[_Union[FaultPart, _Mapping]]] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[int] = ..., on_conflict: _Optional[_Union[OnConflict, str]] = ..., windows: _Optional[_Iterable[_Union[ExperimentWindow, _Mapping]]] = ..., allow_dependent: _Optional[bool] = ...) -> None: ...

class ListQueueRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQueueResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[QueueRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[QueueRow, _Mapping]]] = ...) -> None: ...

class QueueRow(_message.Message):
    __slots__ = ("injection_id", "status", "start", "end", "reason")
    INJECTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    injection_id: str
    status: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, injection_id: _Optional[str] = ..., status: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class FaultPart(_message.Message):
    __slots__ = ("target", "fault")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    target: Target
    fault: Fault
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., fault: _Optional[_Union[Fault, _Mapping]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("service", "selector", "max_pods", "upstream", "match", "namespace")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MAX_PODS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    service: str
    selector: str
    max_pods: int
    upstream: str
    match: Match
    namespace: str
    def __init__(self, service: _Optional[str] = ..., selector: _Optional[str] = ..., max_pods: _Optional[int] = ..., upstream: _Optional[str] = ..., match: _Optional[_Union[Match, _Mapping]] = ..., namespace: _Optional[str] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("path_prefix", "headers", "methods")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    path_prefix: str
    headers: _containers.ScalarMap[str, str]
    methods: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, path_prefix: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., methods: _Optional[_Iterable[str]] = ...) -> None: ...

class Fault(_message.Message):
    __slots__ = ("type", "fixed_ms", "p50_ms", "p99_ms", "http_status", "grpc_status", "kbps", "percentage", "max_active", "latency", "abort", "bandwidth", "jitter_ms", "pattern", "direction", "layer", "cidr", "port")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FIXED_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    KBPS_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    type: str
    fixed_ms: float
    p50_ms: float
    p99_ms: float
    http_status: int
    grpc_status: int
    kbps: int
    percentage: float
    max_active: int
    latency: LatencyFault
    abort: AbortFault
    bandwidth: BandwidthFault
    jitter_ms: float
    pattern: Pattern
    direction: str
    layer: str
    cidr: str
    port: int
    def __init__(self, type: _Optional[str] = ..., fixed_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., http_status: _Optional[int] = ..., grpc_status: _Optional[int] = ..., kbps: _Optional[int] = ..., percentage: _Optional[float] = ..., max_active: _Optional[int] = ..., latency: _Optional[_Union[LatencyFault, _Mapping]] = ..., abort: _Optional[_Union[AbortFault, _Mapping]] = ..., bandwidth: _Optional[_Union[BandwidthFault, _Mapping]] = ..., jitter_ms: _Optional[float] = ..., pattern: _Optional[_Union[Pattern, _Mapping]] = ..., direction: _Optional[str] = ..., layer: _Optional[str] = ..., cidr: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class Pattern(_message.Message):
    __slots__ = ("kind", "on_seconds", "off_seconds", "from_percentage", "to_percentage", "steps", "on_probability", "tick_seconds", "seed")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ON_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OFF_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FROM_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    TO_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ON_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    TICK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    kind: str
    on_seconds: float
    off_seconds: float
    from_percentage: float
    to_percentage: float
    steps: int
    on_probability: float
    tick_seconds: float
    seed: int
    def __init__(self, kind: _Optional[str] = ..., on_seconds: _Optional[float] = ..., off_seconds: _Optional[float] = ..., from_percentage: _Optional[float] = ..., to_percentage: _Optional[float] = ..., steps: _Optional[int] = ..., on_probability: _Optional[float] = ..., tick_seconds: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class LatencyFault(_message.Message):
    __slots__ = ("fixed_ms", "p50_ms", "p99_ms", "jitter_ms")
    FIXED_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    fixed_ms: float
    p50_ms: float
    p99_ms: float
    jitter_ms: float
    def __init__(self, fixed_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., jitter_ms: _Optional[float] = ...) -> None: ...

class AbortFault(_message.Message):
    __slots__ = ("http_status", "grpc_status")
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    http_status: int
    grpc_status: int
    def __init__(self, http_status: _Optional[int] = ..., grpc_status: _Optional[int] = ...) -> None: ...

class BandwidthFault(_message.Message):
    __slots__ = ("kbps",)
    KBPS_FIELD_NUMBER: _ClassVar[int]
    kbps: int
    def __init__(self, kbps: _Optional[int] = ...) -> None: ...

class SteadyState(_message.Message):
    __slots__ = ("slo", "min", "abort_after", "compare")
    SLO_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    ABORT_AFTER_FIELD_NUMBER: _ClassVar[int]
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    slo: str
    min: float
    abort_after: float
    compare: str
    def __init__(self, slo: _Optional[str] = ..., min: _Optional[float] = ..., abort_after: _Optional[float] = ..., compare: _Optional[str] = ...) -> None: ...

class Injection(_message.Message):
    __slots__ = ("id", "request", "state", "reason", "owner", "targets", "matched", "created_at", "activated_at", "ends_at", "ended_at", "transitions", "verdict", "readings", "breach_limit_at", "approved_by", "waiting_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    BREACH_LIMIT_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: InjectionRequest
    state: State
    reason: str
    owner: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    matched: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    activated_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    transitions: _containers.RepeatedCompositeFieldContainer[Transition]
    verdict: str
    readings: _containers.RepeatedCompositeFieldContainer[SloReading]
    breach_limit_at: _timestamp_pb2.Timestamp
    approved_by: str
    waiting_reason: str
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[InjectionRequest, _Mapping]] = ..., state: _Optional[_Union[State, str]] = ..., reason: _Optional[str] = ..., owner: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., matched: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transitions: _Optional[_Iterable[_Union[Transition, _Mapping]]] = ..., verdict: _Optional[str] = ..., readings: _Optional[_Iterable[_Union[SloReading, _Mapping]]] = ..., breach_limit_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approved_by: _Optional[str] = ..., waiting_reason: _Optional[str] = ...) -> None: ...

class SloReading(_message.Message):
    __slots__ = ("at", "value", "breach", "breach_seconds", "error", "control_value")
    AT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BREACH_FIELD_NUMBER: _ClassVar[int]
    BREACH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTROL_VALUE_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    value: float
    breach: bool
    breach_seconds: float
    error: str
    control_value: float
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ..., breach: _Optional[bool] = ..., breach_seconds: _Optional[float] = ..., error: _Optional[str] = ..., control_value: _Optional[float] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("from_state", "to_state", "at", "reason", "evidence")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    from_state: State
    to_state: State
    at: _timestamp_pb2.Timestamp
    reason: str
    evidence: _containers.RepeatedCompositeFieldContainer[SidecarEvidence]
    def __init__(self, from_state: _Optional[_Union[State, str]] = ..., to_state: _Optional[_Union[State, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., evidence: _Optional[_Iterable[_Union[SidecarEvidence, _Mapping]]] = ...) -> None: ...

class SidecarEvidence(_message.Message):
    __slots__ = ("sidecar", "type", "version", "outcome", "error", "at")
    SIDECAR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    sidecar: str
    type: str
    version: str
    outcome: str
    error: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, sidecar: _Optional[str] = ..., type: _Optional[str] = ..., version: _Optional[str] = ..., outcome: _Optional[str] = ..., error: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InjectionPlan(_message.Message):
    __slots__ = ("targets", "matched", "sidecars", "unrendered", "agent_pods")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    SIDECARS_FIELD_NUMBER: _ClassVar[int]
    UNRENDERED_FIELD_NUMBER: _ClassVar[int]
    AGENT_PODS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedScalarFieldContainer[str]
    matched: _containers.RepeatedScalarFieldContainer[str]
    sidecars: _containers.RepeatedCompositeFieldContainer[SidecarPlan]
    unrendered: _containers.RepeatedScalarFieldContainer[str]
    agent_pods: _containers.RepeatedCompositeFieldContainer[AgentPodPlan]
    def __init__(self, targets: _Optional[_Iterable[str]] = ..., matched: _Optional[_Iterable[str]] = ..., sidecars: _Optional[_Iterable[_Union[SidecarPlan, _Mapping]]] = ..., unrendered: _Optional[_Iterable[str]] = ..., agent_pods: _Optional[_Iterable[_Union[AgentPodPlan, _Mapping]]] = ...) -> None: ...

class SidecarPlan(_message.Message):
    __slots__ = ("sidecar", "route_config_json", "route_config", "runtime")
    class RuntimeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SIDECAR_FIELD_NUMBER: _ClassVar[int]
    ROUTE_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    ROUTE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    sidecar: str
    route_config_json: str
    route_config: str
    runtime: _containers.ScalarMap[str, float]
    def __init__(self, sidecar: _Optional[str] = ..., route_config_json: _Optional[str] = ..., route_config: _Optional[str] = ..., runtime: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GetInjectionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListInjectionsRequest(_message.Message):
    __slots__ = ("states", "service", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[State]
    service: str
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[State, str]]] = ..., service: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInjectionsResponse(_message.Message):
    __slots__ = ("injections", "next_page_token")
    INJECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    injections: _containers.RepeatedCompositeFieldContainer[Injection]
    next_page_token: str
    def __init__(self, injections: _Optional[_Iterable[_Union[Injection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AbortInjectionRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortAllInjectionsRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class AbortAllInjectionsResponse(_message.Message):
    __slots__ = ("aborted",)
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    aborted: _containers.RepeatedCompositeFieldContainer[Injection]
    def __init__(self, aborted: _Optional[_Iterable[_Union[Injection, _Mapping]]] = ...) -> None: ...

class WatchInjectionsRequest(_message.Message):
    __slots__ = ("id", "kinds")
    ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kinds: _containers.RepeatedScalarFieldContainer[InjectionEventKind]
    def __init__(self, id: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[InjectionEventKind, str]]] = ...) -> None: ...

class InjectionEvent(_message.Message):
    __slots__ = ("injection", "transition", "kind", "injection_id", "reading", "freeze")
    INJECTION_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INJECTION_ID_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    FREEZE_FIELD_NUMBER: _ClassVar[int]
    injection: Injection
    transition: Transition
    kind: InjectionEventKind
    injection_id: str
    reading: SloReading
    freeze: FreezeState
    def __init__(self, injection: _Optional[_Union[Injection, _Mapping]] = ..., transition: _Optional[_Union[Transition, _Mapping]] = ..., kind: _Optional[_Union[InjectionEventKind, str]] = ..., injection_id: _Optional[str] = ..., reading: _Optional[_Union[SloReading, _Mapping]] = ..., freeze: _Optional[_Union[FreezeState, _Mapping]] = ...) -> None: ...

class GetBaselineRequest(_message.Message):
    __slots__ = ("slo", "window_seconds")
    SLO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    slo: str
    window_seconds: float
    def __init__(self, slo: _Optional[str] = ..., window_seconds: _Optional[float] = ...) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("slo", "samples", "seconds_covered", "min", "p1", "p5", "median", "p95", "unreadable", "required_seconds")
    SLO_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_COVERED_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    P1_FIELD_NUMBER: _ClassVar[int]
    P5_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    slo: str
    samples: int
    seconds_covered: float
    min: float
    p1: float
    p5: float
    median: float
    p95: float
    unreadable: int
    required_seconds: float
    def __init__(self, slo: _Optional[str] = ..., samples: _Optional[int] = ..., seconds_covered: _Optional[float] = ..., min: _Optional[float] = ..., p1: _Optional[float] = ..., p5: _Optional[float] = ..., median: _Optional[float] = ..., p95: _Optional[float] = ..., unreadable: _Optional[int] = ..., required_seconds: _Optional[float] = ...) -> None: ...

class ListSidecarsRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class ListSidecarsResponse(_message.Message):
    __slots__ = ("sidecars",)
    SIDECARS_FIELD_NUMBER: _ClassVar[int]
    sidecars: _containers.RepeatedCompositeFieldContainer[Sidecar]
    def __init__(self, sidecars: _Optional[_Iterable[_Union[Sidecar, _Mapping]]] = ...) -> None: ...

class Sidecar(_message.Message):
    __slots__ = ("node_id", "cluster", "service", "labels", "connected", "admin_address", "connected_at", "xds", "kind", "capabilities", "capability_note", "netns", "replica")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    XDS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_NOTE_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster: str
    service: str
    labels: _containers.ScalarMap[str, str]
    connected: bool
    admin_address: str
    connected_at: _timestamp_pb2.Timestamp
    xds: _containers.RepeatedCompositeFieldContainer[XdsTypeStatus]
    kind: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    capability_note: str
    netns: str
    replica: str
    def __init__(self, node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., service: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., connected: _Optional[bool] = ..., admin_address: _Optional[str] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., xds: _Optional[_Iterable[_Union[XdsTypeStatus, _Mapping]]] = ..., kind: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., capability_note: _Optional[str] = ..., netns: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class XdsTypeStatus(_message.Message):
    __slots__ = ("type", "version_sent", "version_acked", "acked_at", "version_nacked", "last_error", "nacked_at")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_NACKED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NACKED_AT_FIELD_NUMBER: _ClassVar[int]
    type: str
    version_sent: str
    version_acked: str
    acked_at: _timestamp_pb2.Timestamp
    version_nacked: str
    last_error: str
    nacked_at: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[str] = ..., version_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., acked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version_nacked: _Optional[str] = ..., last_error: _Optional[str] = ..., nacked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetInjectionPlanRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ExperimentWindow(_message.Message):
    __slots__ = ("weekdays", "hours", "tz")
    WEEKDAYS_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    weekdays: str
    hours: _containers.RepeatedScalarFieldContainer[str]
    tz: str
    def __init__(self, weekdays: _Optional[str] = ..., hours: _Optional[_Iterable[str]] = ..., tz: _Optional[str] = ...) -> None: ...

class AddBlackoutRequest(_message.Message):
    __slots__ = ("name", "weekly", "tz", "start", "end")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEEKLY_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    name: str
    weekly: str
    tz: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., weekly: _Optional[str] = ..., tz: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SchedulingBlackout(_message.Message):
    __slots__ = ("id", "name", "weekly", "tz", "start", "end", "description", "created_by", "created_at", "overlapping")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEEKLY_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    OVERLAPPING_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    weekly: str
    tz: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    description: str
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    overlapping: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., weekly: _Optional[str] = ..., tz: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., description: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., overlapping: _Optional[_Iterable[str]] = ...) -> None: ...

class ListBlackoutsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBlackoutsResponse(_message.Message):
    __slots__ = ("blackouts",)
    BLACKOUTS_FIELD_NUMBER: _ClassVar[int]
    blackouts: _containers.RepeatedCompositeFieldContainer[SchedulingBlackout]
    def __init__(self, blackouts: _Optional[_Iterable[_Union[SchedulingBlackout, _Mapping]]] = ...) -> None: ...

class RemoveBlackoutRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SchedulingPolicy(_message.Message):
    __slots__ = ("cooldown_seconds", "max_per_service", "max_fleet", "updated_by", "updated_at", "dependency_rule")
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_FLEET_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCY_RULE_FIELD_NUMBER: _ClassVar[int]
    cooldown_seconds: float
    max_per_service: int
    max_fleet: int
    updated_by: str
    updated_at: _timestamp_pb2.Timestamp
    dependency_rule: bool
    def __init__(self, cooldown_seconds: _Optional[float] = ..., max_per_service: _Optional[int] = ..., max_fleet: _Optional[int] = ..., updated_by: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dependency_rule: _Optional[bool] = ...) -> None: ...

class CreateScheduleRequest(_message.Message):
    __slots__ = ("experiment", "every", "cron", "tz", "start", "name")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EVERY_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    experiment: InjectionRequest
    every: str
    cron: str
    tz: str
    start: _timestamp_pb2.Timestamp
    name: str
    def __init__(self, experiment: _Optional[_Union[InjectionRequest, _Mapping]] = ..., every: _Optional[str] = ..., cron: _Optional[str] = ..., tz: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class ScheduleOccurrence(_message.Message):
    __slots__ = ("injection_id", "at", "state", "verdict")
    INJECTION_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    injection_id: str
    at: _timestamp_pb2.Timestamp
    state: State
    verdict: str
    def __init__(self, injection_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[State, str]] = ..., verdict: _Optional[str] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("id", "name", "experiment", "recurrence", "paused", "next_at", "last_fired", "history", "held_rate", "judged", "created_by", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RECURRENCE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    NEXT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIRED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    HELD_RATE_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    experiment: InjectionRequest
    recurrence: str
    paused: bool
    next_at: _timestamp_pb2.Timestamp
    last_fired: _timestamp_pb2.Timestamp
    history: _containers.RepeatedCompositeFieldContainer[ScheduleOccurrence]
    held_rate: float
    judged: int
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., experiment: _Optional[_Union[InjectionRequest, _Mapping]] = ..., recurrence: _Optional[str] = ..., paused: _Optional[bool] = ..., next_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_fired: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., history: _Optional[_Iterable[_Union[ScheduleOccurrence, _Mapping]]] = ..., held_rate: _Optional[float] = ..., judged: _Optional[int] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class ScheduleIdRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class AgentPodPlan(_message.Message):
    __slots__ = ("target", "agent", "pod", "netns", "nft_commands")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    NFT_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    target: str
    agent: str
    pod: str
    netns: str
    nft_commands: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[str] = ..., agent: _Optional[str] = ..., pod: _Optional[str] = ..., netns: _Optional[str] = ..., nft_commands: _Optional[_Iterable[str]] = ...) -> None: ...
