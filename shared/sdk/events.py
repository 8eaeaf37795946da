"""The typed events a watch yields, and their decoding from the wire's JSON objects.

A watch stream carries three kinds of event, each its own frozen dataclass so a caller
can ``match`` on them (every one also has a ``type`` string, as on the wire):

- ``Change`` (``type`` "put" or "delete"): the resolved value of (namespace, key) in the
  watched environment changed at ``revision``. ``value`` is None for a delete. Secret values
  are never in a change: ``secret_refs`` names the secrets the value references and the
  version of each; ``ConfigClient.get`` returns the value with them injected.
- ``Snapshot``: the watch started behind the server's retained history, so instead of the
  missed changes it carries every current value (``items``, as put changes) at ``revision``.
  Anything a caller holds that is not in ``items`` no longer exists.
- ``Progress``: everything up to ``revision`` has been delivered; nothing else happened.

Both transports (SSE and gRPC) decode into these, so callers never see the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.errors import ProtocolError

ChangeType = Literal["put", "delete"]
EVENT_TYPES = frozenset({"put", "delete", "progress", "snapshot"})  # others (from a newer server) are skipped


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret a config value references at ``field_path``, and the version it serves now."""

    field_path: str
    secret_ref: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """The resolved value of one entry changed (``type`` "put") or went away ("delete")."""

    type: ChangeType
    revision: int
    namespace: str
    key: str
    environment: str
    value: dict[str, Any] | None
    sha256: str
    secret_refs: tuple[SecretRef, ...] = ()

    @property
    def deleted(self) -> bool:
        return self.type == "delete"

    def to_dict(self) -> dict[str, Any]:
        """The wire form of this change (JSON-ready)."""
        return {
            "type": self.type,
            "revision": self.revision,
            "namespace": self.namespace,
            "key": self.key,
            "environment": self.environment,
            "value": self.value,
            "sha256": self.sha256,
            "secret_refs": [
                {"field_path": r.field_path, "secret_ref": r.secret_ref, "version": r.version}
                for r in self.secret_refs
            ],
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every current value at ``revision``, sent instead of changes the server no longer has."""

    revision: int
    items: tuple[Change, ...]
    type: Literal["snapshot"] = "snapshot"


@dataclass(frozen=True, slots=True)
class Progress:
    """Nothing the watcher can see happened up to ``revision``; the stream is alive and current."""

    revision: int
    type: Literal["progress"] = "progress"


WatchEvent = Change | Snapshot | Progress


def _fail(what: str) -> ProtocolError:
    return ProtocolError(f"malformed watch event from server: {what}")


def _int(raw: Mapping[str, Any], name: str) -> int:
    value = raw.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(f"{name!r} must be a non-negative integer")
    return value


def _str(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name, "")
    if not isinstance(value, str):
        raise _fail(f"{name!r} must be a string")
    return value


def _secret_refs(raw: Any) -> tuple[SecretRef, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail("'secret_refs' must be a list")
    refs = []
    for item in raw:
        if not isinstance(item, dict):
            raise _fail("each of 'secret_refs' must be an object")
        version = item.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise _fail("a secret reference's 'version' must be an integer")
        refs.append(SecretRef(_str(item, "field_path"), _str(item, "secret_ref"), version))
    return tuple(refs)


def change_from_dict(raw: Mapping[str, Any]) -> Change:
    kind = raw.get("type")
    if kind not in ("put", "delete"):
        raise _fail(f"a change's type must be put or delete, got {str(kind)[:40]!r}")
    value = raw.get("value")
    if kind == "put" and not isinstance(value, dict):
        raise _fail("a put must carry 'value', a JSON object")
    return Change(
        type=kind,
        revision=_int(raw, "revision"),
        namespace=_str(raw, "namespace"),
        key=_str(raw, "key"),
        environment=_str(raw, "environment"),
        value=value if kind == "put" else None,
        sha256=_str(raw, "sha256"),
        secret_refs=_secret_refs(raw.get("secret_refs")),
    )


def event_from_dict(raw: Any) -> WatchEvent:
    """Decode one wire event (the JSON object of an SSE ``data`` line); ``ProtocolError`` if bad."""
    if not isinstance(raw, dict):
        raise _fail("not a JSON object")
    kind = raw.get("type")
    if kind == "progress":
        return Progress(_int(raw, "revision"))
    if kind == "snapshot":
        items = raw.get("items")
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise _fail("a snapshot must carry 'items', a list of objects")
        return Snapshot(_int(raw, "revision"), tuple(change_from_dict(item) for item in items))
    return change_from_dict(raw)
