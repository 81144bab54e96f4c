from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NetworkFault(_message.Message):
    __slots__ = ("pod", "id", "kind", "direction", "cidr", "port", "percentage", "kbps", "delay_ms")
    POD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    KBPS_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    pod: str
    id: str
    kind: str
    direction: str
    cidr: str
    port: int
    percentage: float
    kbps: int
    delay_ms: int
    def __init__(self, pod: _Optional[str] = ..., id: _Optional[str] = ..., kind: _Optional[str] = ..., direction: _Optional[str] = ..., cidr: _Optional[str] = ..., port: _Optional[int] = ..., percentage: _Optional[float] = ..., kbps: _Optional[int] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class AgentPod(_message.Message):
    __slots__ = ("name", "service", "labels", "netns", "stats_address")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    STATS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    service: str
    labels: _containers.ScalarMap[str, str]
    netns: str
    stats_address: str
    def __init__(self, name: _Optional[str] = ..., service: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., netns: _Optional[str] = ..., stats_address: _Optional[str] = ...) -> None: ...

class AgentCapabilities(_message.Message):
    __slots__ = ("netem", "netem_reason", "kinds")
    NETEM_FIELD_NUMBER: _ClassVar[int]
    NETEM_REASON_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    netem: bool
    netem_reason: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, netem: _Optional[bool] = ..., netem_reason: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("pods", "capabilities")
    PODS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    pods: _containers.RepeatedCompositeFieldContainer[AgentPod]
    capabilities: AgentCapabilities
    def __init__(self, pods: _Optional[_Iterable[_Union[AgentPod, _Mapping]]] = ..., capabilities: _Optional[_Union[AgentCapabilities, _Mapping]] = ...) -> None: ...
