from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRequest(_message.Message):
    __slots__ = ("namespace", "key", "environment", "version", "resolve", "explain")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    environment: str
    version: int
    resolve: bool
    explain: bool
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., environment: _Optional[str] = ..., version: _Optional[int] = ..., resolve: _Optional[bool] = ..., explain: _Optional[bool] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("environment", "version", "revision")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    environment: str
    version: int
    revision: int
    def __init__(self, environment: _Optional[str] = ..., version: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class SecretVersionUsed(_message.Message):
    __slots__ = ("secret_ref", "version", "revision")
    SECRET_REF_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    secret_ref: str
    version: int
    revision: int
    def __init__(self, secret_ref: _Optional[str] = ..., version: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class ConfigEntry(_message.Message):
    __slots__ = ("namespace", "key", "environment", "version", "revision", "value_json", "sha256", "change_type", "author", "message", "created_at", "deleted", "metadata_json", "resolved", "layers", "provenance", "secret_versions", "patch_json", "changed", "etag")
    class ProvenanceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    SECRET_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    environment: str
    version: int
    revision: int
    value_json: str
    sha256: str
    change_type: str
    author: str
    message: str
    created_at: str
    deleted: bool
    metadata_json: str
    resolved: bool
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    provenance: _containers.ScalarMap[str, str]
    secret_versions: _containers.RepeatedCompositeFieldContainer[SecretVersionUsed]
    patch_json: str
    changed: bool
    etag: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., environment: _Optional[str] = ..., version: _Optional[int] = ..., revision: _Optional[int] = ..., value_json: _Optional[str] = ..., sha256: _Optional[str] = ..., change_type: _Optional[str] = ..., author: _Optional[str] = ..., message: _Optional[str] = ..., created_at: _Optional[str] = ..., deleted: _Optional[bool] = ..., metadata_json: _Optional[str] = ..., resolved: _Optional[bool] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., provenance: _Optional[_Mapping[str, str]] = ..., secret_versions: _Optional[_Iterable[_Union[SecretVersionUsed, _Mapping]]] = ..., patch_json: _Optional[str] = ..., changed: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("prefix", "environment", "resolve")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    environment: str
    resolve: bool
    def __init__(self, prefix: _Optional[str] = ..., environment: _Optional[str] = ..., resolve: _Optional[bool] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("environment", "items")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    environment: str
    items: _containers.RepeatedCompositeFieldContainer[ConfigEntry]
    def __init__(self, environment: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ConfigEntry, _Mapping]]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("namespace", "key", "environment", "value_json", "message", "expected_version", "metadata_json")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    environment: str
    value_json: str
    message: str
    expected_version: int
    metadata_json: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., environment: _Optional[str] = ..., value_json: _Optional[str] = ..., message: _Optional[str] = ..., expected_version: _Optional[int] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("namespace", "key", "environment", "message", "expected_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    environment: str
    message: str
    expected_version: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., environment: _Optional[str] = ..., message: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("namespace", "key", "environment", "limit", "before")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    environment: str
    limit: int
    before: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., environment: _Optional[str] = ..., limit: _Optional[int] = ..., before: _Optional[int] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ConfigEntry]
    def __init__(self, versions: _Optional[_Iterable[_Union[ConfigEntry, _Mapping]]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("namespace", "key", "environment", "version", "message", "expected_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    environment: str
    version: int
    message: str
    expected_version: int
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., environment: _Optional[str] = ..., version: _Optional[int] = ..., message: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("prefixes", "environment", "since_revision", "key", "progress_interval_seconds")
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    prefixes: _containers.RepeatedScalarFieldContainer[str]
    environment: str
    since_revision: int
    key: str
    progress_interval_seconds: float
    def __init__(self, prefixes: _Optional[_Iterable[str]] = ..., environment: _Optional[str] = ..., since_revision: _Optional[int] = ..., key: _Optional[str] = ..., progress_interval_seconds: _Optional[float] = ...) -> None: ...

class SecretRef(_message.Message):
    __slots__ = ("field_path", "secret_ref", "version")
    FIELD_PATH_FIELD_NUMBER: _ClassVar[int]
    SECRET_REF_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    field_path: str
    secret_ref: str
    version: int
    def __init__(self, field_path: _Optional[str] = ..., secret_ref: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "revision", "namespace", "key", "environment", "value_json", "sha256", "secret_refs", "items", "final")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SECRET_REFS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    type: str
    revision: int
    namespace: str
    key: str
    environment: str
    value_json: str
    sha256: str
    secret_refs: _containers.RepeatedCompositeFieldContainer[SecretRef]
    items: _containers.RepeatedCompositeFieldContainer[WatchEvent]
    final: bool
    def __init__(self, type: _Optional[str] = ..., revision: _Optional[int] = ..., namespace: _Optional[str] = ..., key: _Optional[str] = ..., environment: _Optional[str] = ..., value_json: _Optional[str] = ..., sha256: _Optional[str] = ..., secret_refs: _Optional[_Iterable[_Union[SecretRef, _Mapping]]] = ..., items: _Optional[_Iterable[_Union[WatchEvent, _Mapping]]] = ..., final: _Optional[bool] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("agent_id", "namespaces", "environment", "applied_revision", "state", "last_error")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    environment: str
    applied_revision: int
    state: str
    last_error: str
    def __init__(self, agent_id: _Optional[str] = ..., namespaces: _Optional[_Iterable[str]] = ..., environment: _Optional[str] = ..., applied_revision: _Optional[int] = ..., state: _Optional[str] = ..., last_error: _Optional[str] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("agent_id", "namespaces", "environment", "applied_revision", "state", "last_error", "reported_at")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    environment: str
    applied_revision: int
    state: str
    last_error: str
    reported_at: str
    def __init__(self, agent_id: _Optional[str] = ..., namespaces: _Optional[_Iterable[str]] = ..., environment: _Optional[str] = ..., applied_revision: _Optional[int] = ..., state: _Optional[str] = ..., last_error: _Optional[str] = ..., reported_at: _Optional[str] = ...) -> None: ...
