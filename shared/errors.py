"""The one exception tree of LLM-Config-Manager.

Every layer raises these; driver errors (SQLite, PostgreSQL, HTTP, gRPC) are
translated into them at the boundary where they occur and never cross a layer.
Each class carries the HTTP status and a stable ``code`` so the REST and gRPC
edges map them without a lookup table of their own, and ``retriable`` so that
one retry policy can decide what to try again.

    LLMConfigError
    ├── InvalidInput          400  the request itself is wrong (name, JSON, environment …)
    │   └── SchemaViolation   422  a value breaks a bound JSON Schema (carries every violation)
    ├── PayloadTooLarge       413
    ├── Unauthenticated       401  no token, unknown, expired or revoked
    ├── PermissionDenied      403  a policy rule said no (carries the rule)
    ├── NotFound              404
    ├── Conflict              409  optimistic concurrency: expected vs actual version
    ├── AlreadyExists         409
    ├── RateLimited           429  retriable
    ├── StorageError          500  the store failed; retriable when the driver says so
    │   └── AuditWriteFailed  500  fail closed: no audit record, no change
    ├── Unavailable           503  retriable (server down, not ready)
    └── ProtocolError         502  a peer answered something we cannot read

Messages never contain secret values or tokens: callers pass names, never values.
"""

from __future__ import annotations

from typing import Any


class LLMConfigError(Exception):
    """Base of every error this project raises on purpose."""

    status: int = 500
    code: str = "internal"
    title: str = "Internal error"
    retriable: bool = False

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = extra

    def to_problem(self) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        problem: dict[str, Any] = {
            "type": f"https://llm-config-manager.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        problem.update(self.extra)
        return problem


class InvalidInput(LLMConfigError):
    status = 400
    code = "invalid_input"
    title = "Invalid input"


class SchemaViolation(InvalidInput):
    status = 422
    code = "schema_violation"
    title = "Value violates its schema"

    def __init__(self, detail: str, violations: list[dict[str, Any]], **extra: Any) -> None:
        super().__init__(detail, violations=violations, **extra)
        self.violations = violations


class PayloadTooLarge(LLMConfigError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class Unauthenticated(LLMConfigError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(LLMConfigError):
    status = 403
    code = "permission_denied"
    title = "Permission denied"


class NotFound(LLMConfigError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(LLMConfigError):
    status = 409
    code = "version_conflict"
    title = "Version conflict"


class AlreadyExists(LLMConfigError):
    status = 409
    code = "already_exists"
    title = "Already exists"


class RateLimited(LLMConfigError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"
    retriable = True


class StorageError(LLMConfigError):
    status = 500
    code = "storage_error"
    title = "Storage error"

    def __init__(self, detail: str, *, retriable: bool = False, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retriable = retriable


class AuditWriteFailed(StorageError):
    code = "audit_write_failed"
    title = "Audit record could not be written"


class Unavailable(LLMConfigError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"
    retriable = True


class ProtocolError(LLMConfigError):
    status = 502
    code = "protocol_error"
    title = "Unexpected answer from peer"


_BY_CODE: dict[str, type[LLMConfigError]] = {
    cls.code: cls
    for cls in (
        InvalidInput,
        SchemaViolation,
        PayloadTooLarge,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        Conflict,
        AlreadyExists,
        RateLimited,
        StorageError,
        AuditWriteFailed,
        Unavailable,
        ProtocolError,
    )
}


def from_problem(problem: dict[str, Any], status: int) -> LLMConfigError:
    """Rebuild the error a server sent as problem+json (used by clients)."""
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    extra = {k: v for k, v in problem.items() if k not in {"type", "title", "status", "detail", "code"}}
    cls = _BY_CODE.get(str(problem.get("code", "")))
    if cls is SchemaViolation:
        violations = extra.pop("violations", [])
        return SchemaViolation(detail, violations=violations, **extra)
    if cls is None:
        cls = next((c for c in _BY_CODE.values() if c.status == status), LLMConfigError)
    return cls(detail, **extra)
