import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("node_id", "cluster", "service", "labels", "connected", "admin_address", "connected_at", "xds")
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
    node_id: str
    cluster: str
    service: str
    labels: _containers.ScalarMap[str, str]
    connected: bool
    admin_address: str
    connected_at: _timestamp_pb2.Timestamp
    xds: _containers.RepeatedCompositeFieldContainer[XdsTypeStatus]
    def __init__(self, node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., service: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., connected: _Optional[bool] = ..., admin_address: _Optional[str] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., xds: _Optional[_Iterable[_Union[XdsTypeStatus, _Mapping]]] = ...) -> None: ...

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
