import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from spar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostedAdapterState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOSTED_ADAPTER_STATE_UNSPECIFIED: _ClassVar[HostedAdapterState]
    HOSTED_ADAPTER_STATE_STAGED: _ClassVar[HostedAdapterState]
    HOSTED_ADAPTER_STATE_ACTIVE: _ClassVar[HostedAdapterState]
HOSTED_ADAPTER_STATE_UNSPECIFIED: HostedAdapterState
HOSTED_ADAPTER_STATE_STAGED: HostedAdapterState
HOSTED_ADAPTER_STATE_ACTIVE: HostedAdapterState

class AdapterSource(_message.Message):
    __slots__ = ("local_path", "store_target")
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    STORE_TARGET_FIELD_NUMBER: _ClassVar[int]
    local_path: str
    store_target: str
    def __init__(self, local_path: _Optional[str] = ..., store_target: _Optional[str] = ...) -> None: ...

class StageAdapterRequest(_message.Message):
    __slots__ = ("version", "source")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.AdapterVersion
    source: AdapterSource
    def __init__(self, version: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., source: _Optional[_Union[AdapterSource, _Mapping]] = ...) -> None: ...

class StageAdapterResponse(_message.Message):
    __slots__ = ("version", "loaded")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.AdapterVersion
    loaded: bool
    def __init__(self, version: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., loaded: _Optional[bool] = ...) -> None: ...

class ActivateAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ActivateAdapterResponse(_message.Message):
    __slots__ = ("previous", "active")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    previous: str
    active: str
    def __init__(self, previous: _Optional[str] = ..., active: _Optional[str] = ...) -> None: ...

class RetireAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RetireAdapterResponse(_message.Message):
    __slots__ = ("retired",)
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    retired: bool
    def __init__(self, retired: _Optional[bool] = ...) -> None: ...

class ListHostedAdaptersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HostedAdapter(_message.Message):
    __slots__ = ("version", "state", "in_flight", "staged_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    STAGED_AT_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.AdapterVersion
    state: HostedAdapterState
    in_flight: int
    staged_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., state: _Optional[_Union[HostedAdapterState, str]] = ..., in_flight: _Optional[int] = ..., staged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListHostedAdaptersResponse(_message.Message):
    __slots__ = ("adapters", "active", "role", "base_model")
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[HostedAdapter]
    active: str
    role: str
    base_model: str
    def __init__(self, adapters: _Optional[_Iterable[_Union[HostedAdapter, _Mapping]]] = ..., active: _Optional[str] = ..., role: _Optional[str] = ..., base_model: _Optional[str] = ...) -> None: ...
