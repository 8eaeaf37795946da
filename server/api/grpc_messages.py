"""Messages of ``llmconfig.v1.ConfigService``: REST answer bodies and watch events as protobufs.

The servicer (``grpc_service``) calls the same services as the REST handlers and gets the
same dicts back; this module turns them into messages field by field, with values as JSON
text so integers and floats keep their JSON form. ``watch_bytes`` serializes a watch event
(once per event: the servicer shares the bytes among every watcher that receives it);
``serialize`` is the unary calls' response serializer.
"""

from __future__ import annotations

import json
from typing import Any

from server.storage.base import AgentStatus
from shared.proto.llmconfig.v1 import config_pb2 as pb


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def entry_message(body: dict[str, Any]) -> pb.ConfigEntry:
    """A REST answer body (a version, a resolved value, a write result) as a ``ConfigEntry``."""
    msg = pb.ConfigEntry(
        namespace=body.get("namespace", ""),
        key=body.get("key", ""),
        environment=body.get("environment", ""),
        version=body.get("version", 0),
        revision=body.get("revision", 0),
        value_json=_dumps(body["value"]) if "value" in body else "",
        sha256=body.get("sha256", ""),
        change_type=body.get("change_type", ""),
        author=body.get("author", ""),
        message=body.get("message", ""),
        created_at=body.get("created_at", ""),
        deleted=bool(body.get("deleted", False)),
        metadata_json=_dumps(body["metadata"]) if "metadata" in body else "",
        resolved=bool(body.get("resolved", False)),
        patch_json=_dumps(body["patch"]) if "patch" in body else "",
        changed=bool(body.get("changed", False)),
    )
    for layer in body.get("layers", ()):
        msg.layers.add(environment=layer["environment"], version=layer["version"], revision=layer["revision"])
    for pointer, env in (body.get("provenance") or {}).items():
        msg.provenance[pointer] = env
    for used in body.get("secret_versions", ()):
        msg.secret_versions.add(
            secret_ref=used["secret_ref"], version=used["version"], revision=used["revision"]
        )
    return msg


def agent_message(status: AgentStatus) -> pb.AgentStatus:
    return pb.AgentStatus(
        agent_id=status.agent_id,
        namespaces=list(status.namespaces),
        environment=status.environment,
        applied_revision=status.applied_revision,
        state=status.state,
        last_error=status.last_error,
        reported_at=status.reported_at,
    )


def watch_message(event: Any) -> pb.WatchEvent:
    """A ``server.service.watch.WatchEvent`` as its message (snapshot items included)."""
    msg = pb.WatchEvent(
        type=event.kind,
        revision=event.revision,
        namespace=event.namespace,
        key=event.key,
        environment=event.environment,
        value_json=_dumps(event.value) if event.value is not None else "",
        sha256=event.sha256,
        final=getattr(event, "final", True),
    )
    for ref in event.secret_refs:
        msg.secret_refs.add(
            field_path=str(ref.get("field_path", "")),
            secret_ref=str(ref.get("secret_ref", "")),
            version=int(ref.get("version") or 0),
        )
    for item in event.items:
        msg.items.append(watch_message(item))
    return msg


def watch_bytes(event: Any) -> bytes:
    return bytes(watch_message(event).SerializeToString())


def serialize(message: Any) -> bytes:
    """Responses are messages, or bytes already serialized (shared watch events)."""
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())
