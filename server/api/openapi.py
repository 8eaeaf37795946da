"""The OpenAPI 3.1 description of the REST API, served at /v1/openapi.json.

Kept by hand next to the routes; tests/server/api/test_openapi.py fails when a
registered route is missing here or a described one is not registered.
"""

from __future__ import annotations

from typing import Any

from server.service.agents import STATES as AGENT_STATES
from server.service.policy import ROLES, Action
from shared.models import CLASSIFICATIONS, Environment

# the catch-all that turns malformed config paths into 400s is not an operation
UNDOCUMENTED = frozenset({("*", "/v1/configs/{rest}")})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid input (name, JSON, parameter)",
        401: "Missing, unknown, expired or revoked token",
        403: "Denied by policy",
        404: "Not found",
        409: "Version conflict or already exists",
        413: "Body over the size limit",
        422: "Schema violation: every violation with its JSON Pointer",
    }
    return {
        str(c): {"description": text[c], "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for c in codes
    }


def _param(
    name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


_ENV = _param(
    "env",
    "query",
    {"type": "string", "enum": [*(e.value for e in Environment), "dev", "prod"], "default": "global"},
    "Environment (aliases dev, prod)",
)
_NS = _param(
    "namespace",
    "path",
    {"type": "string", "pattern": "^[a-z0-9-]+(/[a-z0-9-]+)*$", "maxLength": 500},
    "Namespace; may contain '/'",
)
_KEY = _param("key", "path", {"type": "string", "pattern": "^[a-z0-9_-]+$", "maxLength": 255}, "Key")
_INT = {"type": "integer", "minimum": 1}
_AUTH = (401, 403)


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    public: bool = False,
    tag: str = "configs",
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if public:
        op["security"] = []
    return op


def _paths() -> dict[str, Any]:
    cfg = [_NS, _KEY, _ENV]
    write_body = {
        "type": "object",
        "required": ["value"],
        "properties": {
            "value": {"type": "object"},
            "message": {"type": "string", "maxLength": 2000},
            "expected_version": {
                "type": "integer",
                "minimum": 0,
                "description": "optimistic concurrency; 0 = must not exist",
            },
            "metadata": {
                "type": "object",
                "properties": {"classification": {"type": "string", "enum": list(CLASSIFICATIONS)}},
            },
        },
    }
    return {
        "/health/live": {"get": _op("Liveness", {"200": _json({"type": "object"})}, public=True, tag="ops")},
        "/health/ready": {
            "get": _op(
                "Readiness (storage reachable)",
                {"200": _json({"type": "object"}), "503": {"description": "Not ready"}},
                public=True,
                tag="ops",
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {"200": {"description": "text exposition format"}},
                public=True,
                tag="ops",
            )
        },
        "/v1/openapi.json": {
            "get": _op("This document", {"200": _json({"type": "object"})}, public=True, tag="ops")
        },
        "/v1/whoami": {
            "get": _op(
                "The calling token's principal",
                {"200": _json(_ref("Principal")), **_problems(401)},
                tag="auth",
            )
        },
        "/v1/configs": {
            "get": _op(
                "List current configs by namespace prefix or glob",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"environment": {"type": "string"}, "items": {"type": "array"}},
                        }
                    ),
                    **_problems(400, *_AUTH),
                },
                params=[
                    _param("prefix", "query", {"type": "string"}, "Namespace prefix or glob (llm-gateway/*)"),
                    _ENV,
                    _param("resolve", "query", {"type": "boolean"}, "Resolve along the chain"),
                ],
            )
        },
        "/v1/configs/{namespace}/{key}": {
            "get": _op(
                "Get the current value, a version, or the resolved value",
                {
                    "200": _json(_ref("ConfigVersion")),
                    "304": {"description": "Not modified"},
                    **_problems(400, *_AUTH, 404),
                },
                params=[
                    *cfg,
                    _param("version", "query", _INT, "A stored version"),
                    _param("resolve", "query", {"type": "boolean"}, "Deep-merge the chain"),
                    _param("explain", "query", {"type": "boolean"}, "Add provenance per leaf"),
                    _param(
                        "If-None-Match",
                        "header",
                        {"type": "string"},
                        "The ETag of an earlier answer, as sent; 304 with no body if it still matches",
                    ),
                ],
            ),
            "put": _op(
                "Write a new version",
                {
                    "200": _json(_ref("WriteResult")),
                    "201": _json(_ref("WriteResult"), "Created"),
                    **_problems(400, *_AUTH, 409, 413, 422),
                },
                params=[*cfg, _param("If-Match", "header", {"type": "string"}, "Expected version")],
                body=write_body,
            ),
            "delete": _op(
                "Delete (writes a tombstone version)",
                {"200": _json(_ref("WriteResult")), **_problems(400, *_AUTH, 404, 409)},
                params=[
                    *cfg,
                    _param("If-Match", "header", {"type": "string"}, "Expected version"),
                    _param(
                        "message",
                        "query",
                        {"type": "string", "maxLength": 2000},
                        "Change message for history and audit (longer ones are cut to 2000 characters)",
                    ),
                ],
            ),
        },
        "/v1/configs/{namespace}/{key}/history": {
            "get": _op(
                "Versions newest first, each with its JSON Patch",
                {
                    "200": _json({"type": "object", "properties": {"versions": {"type": "array"}}}),
                    **_problems(400, *_AUTH, 404),
                },
                params=[
                    *cfg,
                    _param("limit", "query", _INT, "At most this many"),
                    _param("before", "query", _INT, "Versions below this one"),
                ],
            )
        },
        "/v1/configs/{namespace}/{key}/diff": {
            "get": _op(
                "RFC 6902 JSON Patch between two versions",
                {"200": _json({"type": "object"}), **_problems(400, *_AUTH, 404)},
                params=[
                    *cfg,
                    _param("from", "query", _INT, "Default: to - 1"),
                    _param("to", "query", _INT, "Default: current"),
                ],
            )
        },
        "/v1/configs/{namespace}/{key}/rollback": {
            "post": _op(
                "Write a new version equal to an old one",
                {"200": _json(_ref("WriteResult")), **_problems(400, *_AUTH, 404, 409, 422)},
                params=cfg,
                body={
                    "type": "object",
                    "required": ["version"],
                    "properties": {
                        "version": _INT,
                        "message": {"type": "string"},
                        "expected_version": {"type": "integer"},
                    },
                },
            )
        },
        "/v1/secrets": {
            "get": _op(
                "List secrets the caller may read (metadata only, never values)",
                {
                    "200": _json({"type": "object", "properties": {"items": {"type": "array"}}}),
                    **_problems(400, *_AUTH),
                },
                params=[
                    _param("prefix", "query", {"type": "string"}, "Namespace prefix"),
                    _ENV,
                    _param("due", "query", {"type": "boolean"}, "Only secrets past their rotation interval"),
                ],
                tag="secrets",
            )
        },
        "/v1/secrets/{namespace}/{key}": {
            "get": _op(
                "The plaintext of the active (or a given, still valid) version; audited; no-store",
                {"200": _json(_ref("SecretValue")), **_problems(400, *_AUTH, 404)},
                params=[_NS, _KEY, _ENV, _param("version", "query", _INT, "A version still valid")],
                tag="secrets",
            ),
            "put": _op(
                "Seal a new version; it becomes active, the previous one enters its grace period",
                {
                    "200": _json(_ref("SecretVersion")),
                    "201": _json(_ref("SecretVersion"), "Created"),
                    **_problems(400, *_AUTH, 413),
                },
                params=[_NS, _KEY, _ENV],
                body={
                    "type": "object",
                    "required": ["value"],
                    "properties": {
                        "value": {"type": "string", "maxLength": 65536},
                        "message": {"type": "string"},
                        "grace_period": {"type": "integer", "minimum": 0, "description": "seconds"},
                        "expires_in": {"type": "integer", "minimum": 0, "description": "seconds"},
                        "rotation_interval": {"type": "integer", "minimum": 0, "description": "seconds"},
                    },
                },
                tag="secrets",
            ),
        },
        "/v1/secrets/{namespace}/{key}/versions": {
            "get": _op(
                "Versions newest first, metadata only",
                {
                    "200": _json({"type": "object", "properties": {"versions": {"type": "array"}}}),
                    **_problems(400, *_AUTH, 404),
                },
                params=[_NS, _KEY, _ENV],
                tag="secrets",
            )
        },
        "/v1/secrets/{namespace}/{key}/revoke": {
            "post": _op(
                "Revoke one version, or every version when no body is sent",
                {"200": _json({"type": "object"}), **_problems(400, *_AUTH, 404)},
                params=[_NS, _KEY, _ENV],
                tag="secrets",
            )
        },
        "/v1/changes": {
            "get": _op(
                "Long-poll: every change after a revision the caller may see, in revision order, or at the "
                "deadline an empty list with the current revision. Config changes, and with kinds=secret "
                "secret events (kind secret; type created, rotated, revoked or rotation_due; metadata "
                "only, never a value), shown to those who may list the secret",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"revision": {"type": "integer"}, "changes": {"type": "array"}},
                        }
                    ),
                    **_problems(400, *_AUTH),
                },
                params=[
                    _param(
                        "since", "query", {"type": "integer", "minimum": 0}, "Changes after this revision"
                    ),
                    _param(
                        "wait",
                        "query",
                        {"type": "string"},
                        "How long to wait for one: 30s, 500ms, 2m (max 5m)",
                    ),
                    _param("prefix", "query", {"type": "string"}, "Namespace prefix"),
                    _param(
                        "env",
                        "query",
                        {"type": "string"},
                        "Only this environment's rows (secret events: of secrets that serve it)",
                    ),
                    _param(
                        "resolve",
                        "query",
                        {"type": "boolean"},
                        "With env: the watch stream's events (resolved values of env) instead of rows",
                    ),
                    _param("key", "query", {"type": "string"}, "With resolve: only this key"),
                    _param(
                        "format",
                        "query",
                        {"type": "string", "enum": ["changes", "cloudevents"]},
                        "cloudevents: the changes as CloudEvents 1.0 structured JSON under 'events' "
                        "(types com.llmconfig.config.created/updated/deleted and "
                        "com.llmconfig.secret.created/rotated/revoked/rotation_due)",
                    ),
                    _param(
                        "kinds",
                        "query",
                        {"type": "string", "pattern": "^(config|secret)(,(config|secret))?$"},
                        "Which changes: config, secret or config,secret (default: config for "
                        "format=changes, both for format=cloudevents); not with resolve",
                    ),
                ],
                tag="watch",
            )
        },
        "/v1/watch": {
            "get": _op(
                "Server-Sent Events: every change of the resolved values in one environment after a "
                "revision (id: revision; Last-Event-ID resumes), then live changes and progress marks",
                {
                    "200": {
                        "description": "text/event-stream of put, delete, progress and snapshot events",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_problems(400, *_AUTH),
                },
                params=[
                    _param("env", "query", {"type": "string"}, "Environment whose resolved values to watch"),
                    _param(
                        "prefix",
                        "query",
                        {"type": "array", "items": {"type": "string"}},
                        "Namespace prefixes (repeatable; none: every namespace the caller may read)",
                    ),
                    _param("key", "query", {"type": "string"}, "Only this key"),
                    _param(
                        "since",
                        "query",
                        {"type": "integer", "minimum": 0},
                        "Replay every change after this revision first (default: live only)",
                    ),
                    _param(
                        "progress",
                        "query",
                        {"type": "string"},
                        "Progress mark interval when idle: 10s (default), 500ms, 0 for none",
                    ),
                    _param("Last-Event-ID", "header", {"type": "string"}, "Resume after this revision"),
                ],
                tag="watch",
            )
        },
        "/v1/compact": {
            "post": _op(
                "Drop history superseded at or below a revision; watches starting before it get a snapshot",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "compacted_revision": {"type": "integer"},
                                "removed_versions": {"type": "integer"},
                            },
                        }
                    ),
                    **_problems(400, *_AUTH),
                },
                body={
                    "type": "object",
                    "required": ["revision"],
                    "properties": {"revision": {"type": "integer", "minimum": 1}},
                },
                tag="watch",
            )
        },
        "/v1/keys/rotate": {
            "post": _op(
                "Add a key-encryption-key version; existing data keys are re-wrapped in the background",
                {"200": _json(_ref("KeyStatus")), **_problems(*_AUTH, 404)},
                params=[_param("tenant_id", "query", {"type": "string"}, "Another tenant (global-admin)")],
                tag="keys",
            )
        },
        "/v1/keys/status": {
            "get": _op(
                "KEK versions, what each wraps, and rewrap progress",
                {"200": _json(_ref("KeyStatus")), **_problems(*_AUTH, 404)},
                params=[_param("tenant_id", "query", {"type": "string"}, "Another tenant (global-admin)")],
                tag="keys",
            )
        },
        "/v1/tenants": {
            "get": _op(
                "List tenants (global-admin)",
                {"200": _json({"type": "object"}), **_problems(*_AUTH)},
                tag="admin",
            ),
            "post": _op(
                "Create a tenant (global-admin), optionally with a tenant-admin token",
                {"201": _json({"type": "object"}), **_problems(400, *_AUTH, 409)},
                tag="admin",
                body={
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "admin_token": {"type": "boolean"}},
                },
            ),
        },
        "/v1/tenants/{tenant_id}": {
            "get": _op(
                "A tenant",
                {"200": _json({"type": "object"}), **_problems(*_AUTH, 404)},
                tag="admin",
                params=[_param("tenant_id", "path", {"type": "string"}, "Tenant id")],
            )
        },
        "/v1/tokens": {
            "get": _op(
                "List tokens (never their secrets)",
                {"200": _json({"type": "object"}), **_problems(*_AUTH, 404)},
                tag="admin",
                params=[_param("tenant_id", "query", {"type": "string"}, "Another tenant (global-admin)")],
            ),
            "post": _op(
                "Create a token; the secret is returned once",
                {"201": _json({"type": "object"}), **_problems(400, *_AUTH, 404)},
                tag="admin",
                body={
                    "type": "object",
                    "required": ["name", "roles"],
                    "properties": {
                        "name": {"type": "string"},
                        "roles": {"type": "array", "items": {"type": "string", "enum": list(ROLES)}},
                        "namespaces": {"type": "array", "items": {"type": "string"}},
                        "expires_in": {"type": "integer", "minimum": 1},
                        "tenant_id": {"type": "string"},
                    },
                },
            ),
        },
        "/v1/tokens/{token_id}": {
            "delete": _op(
                "Revoke a token",
                {"200": _json({"type": "object"}), **_problems(*_AUTH, 404)},
                tag="admin",
                params=[
                    _param("token_id", "path", {"type": "string"}, "Token id"),
                    _param("tenant_id", "query", {"type": "string"}, "Another tenant (global-admin)"),
                ],
            )
        },
        "/v1/settings": {
            "get": _op("Tenant settings", {"200": _json(_ref("Settings")), **_problems(*_AUTH)}, tag="admin"),
            "put": _op(
                "Replace tenant settings (unspecified fields take defaults)",
                {"200": _json(_ref("Settings")), **_problems(400, *_AUTH)},
                tag="admin",
                body=_ref("Settings"),
            ),
        },
        "/v1/schemas": {
            "get": _op(
                "List schemas (built-in and the tenant's)",
                {"200": _json({"type": "object"}), **_problems(*_AUTH)},
                tag="schemas",
            )
        },
        "/v1/schemas/{name}": {
            "get": _op(
                "A schema",
                {"200": _json({"type": "object"}), **_problems(*_AUTH, 404)},
                tag="schemas",
                params=[_param("name", "path", {"type": "string"}, "Schema name")],
            ),
            "put": _op(
                "Create or replace a schema",
                {"200": _json({"type": "object"}), **_problems(400, *_AUTH, 409)},
                tag="schemas",
                params=[_param("name", "path", {"type": "string"}, "Schema name")],
                body={"type": "object", "required": ["schema"], "properties": {"schema": {"type": "object"}}},
            ),
        },
        "/v1/schema-bindings": {
            "get": _op(
                "List bindings", {"200": _json({"type": "object"}), **_problems(*_AUTH)}, tag="schemas"
            ),
            "post": _op(
                "Bind a schema to namespace/key globs",
                {"201": _json({"type": "object"}), **_problems(400, *_AUTH, 404)},
                tag="schemas",
                body={
                    "type": "object",
                    "required": ["schema", "namespace"],
                    "properties": {
                        "schema": {"type": "string"},
                        "namespace": {"type": "string"},
                        "key": {"type": "string", "default": "*"},
                    },
                },
            ),
        },
        "/v1/schema-bindings/{binding_id}": {
            "delete": _op(
                "Remove a binding",
                {"204": {"description": "Removed"}, **_problems(*_AUTH, 404)},
                tag="schemas",
                params=[_param("binding_id", "path", {"type": "string"}, "Binding id")],
            )
        },
        "/v1/audit": {
            "get": _op(
                "Audit records in order",
                {"200": _json({"type": "object"}), **_problems(400, *_AUTH, 404)},
                tag="audit",
                params=[
                    _param("after", "query", {"type": "integer", "minimum": 0}, "Records after this seq"),
                    _param("limit", "query", _INT, "At most this many (1-1000)"),
                    _param("action", "query", {"type": "string"}, "Only this action"),
                    _param("result", "query", {"type": "string"}, "Only this result (ok, denied, unchanged)"),
                    _param("chain", "query", {"type": "string"}, "Another chain (global-admin; _system)"),
                ],
            )
        },
        "/v1/audit/verify": {
            "get": _op(
                "Verify the hash chain; names the first bad record",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "ok": {"type": "boolean"},
                                "checked": {"type": "integer"},
                                "first_bad_seq": {"type": ["integer", "null"]},
                                "reason": {"type": ["string", "null"]},
                            },
                        }
                    ),
                    **_problems(*_AUTH, 404),
                },
                tag="audit",
                params=[_param("chain", "query", {"type": "string"}, "Another chain (global-admin)")],
            )
        },
        "/v1/agents/status": {
            "post": _op(
                "An agent reports what it applied (needs config:read on every namespace it names)",
                {"200": _json(_ref("AgentStatus")), **_problems(400, *_AUTH, 413)},
                tag="agents",
                body={
                    "type": "object",
                    "required": ["agent_id", "namespaces", "environment", "applied_revision", "state"],
                    "additionalProperties": False,
                    "properties": {
                        "agent_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$"},
                        "namespaces": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "environment": {"type": "string"},
                        "applied_revision": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "the revision the agent's files are current as of",
                        },
                        "state": {"type": "string", "enum": list(AGENT_STATES)},
                        "last_error": {
                            "type": "string",
                            "description": "kept to 500 characters, credentials redacted",
                        },
                    },
                },
            )
        },
        "/v1/agents": {
            "get": _op(
                "The last report of every agent (operators and admins: audit:read)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"agents": {"type": "array", "items": _ref("AgentStatus")}},
                        }
                    ),
                    **_problems(400, *_AUTH),
                },
                tag="agents",
                params=[_param("env", "query", {"type": "string"}, "Only agents of this environment")],
            )
        },
        "/v1/agents/rollout": {
            "get": _op(
                "How far a revision has rolled out: agents that applied it, are behind, or failed",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "revision": {"type": "integer"},
                                "current_revision": {"type": "integer"},
                                "total": {"type": "integer"},
                                "counts": {
                                    "type": "object",
                                    "properties": {
                                        "applied": {"type": "integer"},
                                        "behind": {"type": "integer"},
                                        "failed": {"type": "integer"},
                                    },
                                },
                                "applied": {"type": "array", "items": _ref("AgentStatus")},
                                "behind": {"type": "array", "items": _ref("AgentStatus")},
                                "failed": {"type": "array", "items": _ref("AgentStatus")},
                            },
                        }
                    ),
                    **_problems(400, *_AUTH),
                },
                tag="agents",
                params=[
                    _param("revision", "query", _INT, "The revision whose rollout to show", required=True),
                    _param("env", "query", {"type": "string"}, "Only agents of this environment"),
                ],
            )
        },
        "/v1/policy/explain": {
            "post": _op(
                "Which rule decides an action",
                {"200": _json({"type": "object"}), **_problems(400, *_AUTH)},
                tag="policy",
                body={
                    "type": "object",
                    "required": ["action"],
                    "properties": {
                        "action": {"type": "string", "enum": [a.value for a in Action]},
                        "namespace": {"type": "string"},
                        "environment": {"type": "string"},
                        "classification": {"type": "string"},
                        "token_id": {"type": "string"},
                    },
                },
            )
        },
    }


def build_openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LLM-Config-Manager",
            "version": "1",
            "description": (
                "Versioned configuration for LLM applications. Errors are application/problem+json."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string"},
                        "request_id": {"type": "string"},
                        "violations": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "pointer": {"type": "string"},
                                    "message": {"type": "string"},
                                    "schema": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "ConfigVersion": {
                    "type": "object",
                    "properties": {
                        "namespace": {"type": "string"},
                        "key": {"type": "string"},
                        "environment": {"type": "string"},
                        "version": {"type": "integer"},
                        "revision": {"type": "integer"},
                        "value": {"type": "object"},
                        "sha256": {"type": "string"},
                        "change_type": {"type": "string"},
                        "author": {"type": "string"},
                        "message": {"type": "string"},
                        "created_at": {"type": "string"},
                        "deleted": {"type": "boolean"},
                        "metadata": {"type": "object"},
                        "resolved": {"type": "boolean"},
                        "layers": {"type": "array"},
                        "provenance": {"type": "object"},
                    },
                },
                "WriteResult": {
                    "allOf": [
                        _ref("ConfigVersion"),
                        {"type": "object", "properties": {"changed": {"type": "boolean"}}},
                    ]
                },
                "SecretVersion": {
                    "type": "object",
                    "properties": {
                        "namespace": {"type": "string"},
                        "key": {"type": "string"},
                        "version": {"type": "integer"},
                        "revision": {"type": "integer"},
                        "status": {"type": "string", "enum": ["active", "grace", "deprecated", "revoked"]},
                        "kek_id": {"type": "string"},
                        "kek_version": {"type": "integer"},
                        "created_at": {"type": "string"},
                        "author": {"type": "string"},
                        "message": {"type": "string"},
                        "valid_until": {"type": ["string", "null"]},
                        "expires_at": {"type": ["string", "null"]},
                        "metadata": {"type": "object"},
                    },
                },
                "KeyStatus": {
                    "type": "object",
                    "properties": {
                        "tenant_id": {"type": "string"},
                        "provider": {"type": "string"},
                        "current_version": {"type": "integer"},
                        "versions": {"type": "array"},
                        "rewrap_pending": {"type": "integer"},
                        "rewrap_done": {"type": "integer"},
                    },
                },
                "SecretValue": {
                    "allOf": [
                        _ref("SecretVersion"),
                        {"type": "object", "properties": {"value": {"type": "string"}}},
                    ]
                },
                "AgentStatus": {
                    "type": "object",
                    "properties": {
                        "agent_id": {"type": "string"},
                        "namespaces": {"type": "array", "items": {"type": "string"}},
                        "environment": {"type": "string"},
                        "applied_revision": {"type": "integer"},
                        "state": {"type": "string", "enum": list(AGENT_STATES)},
                        "last_error": {"type": "string"},
                        "reported_at": {"type": "string"},
                    },
                },
                "Principal": {
                    "type": "object",
                    "properties": {
                        "token_id": {"type": "string"},
                        "tenant_id": {"type": "string"},
                        "tenant_name": {"type": "string"},
                        "name": {"type": "string"},
                        "roles": {"type": "array", "items": {"type": "string"}},
                        "namespaces": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Settings": {
                    "type": "object",
                    "properties": {
                        "chains": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                        "change_window": {
                            "type": ["object", "null"],
                            "properties": {
                                "days": {"type": "array", "items": {"type": "string"}},
                                "start": {"type": "string"},
                                "end": {"type": "string"},
                            },
                        },
                        "audit_reads": {"type": "boolean"},
                    },
                },
            },
        },
    }
