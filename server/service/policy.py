"""Role-based policy: default deny, deny rules first, every decision explainable.

A decision names the rule that made it, so ``explain`` and the audit log can
say why. Deny rules (production change window, restricted classification,
namespace scope of a token) are checked before any role grants; if no role
grants the action the default rule denies it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.errors import InvalidInput
from shared.models import Environment


class Action(StrEnum):
    CONFIG_READ = "config:read"
    CONFIG_WRITE = "config:write"
    SECRET_READ = "secrets:read"  # plaintext
    SECRET_WRITE = "secrets:write"
    SCHEMA_READ = "schema:read"
    SCHEMA_WRITE = "schema:write"
    AUDIT_READ = "audit:read"
    TOKEN_MANAGE = "token:manage"
    SETTINGS_READ = "settings:read"
    SETTINGS_WRITE = "settings:write"
    TENANT_MANAGE = "tenant:manage"
    KEY_MANAGE = "keys:manage"  # rotate key-encryption keys, see rewrap progress


ROLES = ("global-admin", "tenant-admin", "operator", "developer", "service-account", "pii-authorized")
ALL_ENVS = frozenset(Environment)
_CONFIG_ACTIONS = {Action.CONFIG_READ, Action.CONFIG_WRITE}
_SECRET_ACTIONS = {Action.SECRET_READ, Action.SECRET_WRITE}
_NAMESPACED = _CONFIG_ACTIONS | _SECRET_ACTIONS  # bounded by a token's namespace scope
# what a token limited to namespaces may do at all (its scope bounds only these)
_SCOPED_ACTIONS = _NAMESPACED | {Action.SCHEMA_READ}

# role -> action -> environments it may act on (None: the action has no environment)
GRANTS: dict[str, dict[Action, frozenset[Environment] | None]] = {
    "global-admin": {a: (ALL_ENVS if a in _NAMESPACED else None) for a in Action},
    "tenant-admin": {
        a: (ALL_ENVS if a in _NAMESPACED else None) for a in Action if a is not Action.TENANT_MANAGE
    },
    "operator": {
        Action.CONFIG_READ: ALL_ENVS,
        Action.CONFIG_WRITE: ALL_ENVS,
        Action.SECRET_READ: ALL_ENVS,
        Action.SECRET_WRITE: ALL_ENVS,
        Action.SCHEMA_READ: None,
        Action.AUDIT_READ: None,
        Action.SETTINGS_READ: None,
    },
    "developer": {
        Action.CONFIG_READ: frozenset({Environment.GLOBAL, Environment.DEVELOPMENT, Environment.STAGING}),
        Action.CONFIG_WRITE: frozenset({Environment.DEVELOPMENT}),
        Action.SECRET_READ: frozenset({Environment.GLOBAL, Environment.DEVELOPMENT, Environment.STAGING}),
        Action.SECRET_WRITE: frozenset({Environment.DEVELOPMENT}),
        Action.SCHEMA_READ: None,
    },
    "service-account": {Action.CONFIG_READ: ALL_ENVS, Action.SECRET_READ: ALL_ENVS},
    "pii-authorized": {},
}

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: resolved from a bearer token."""

    token_id: str
    tenant_id: str
    name: str
    roles: frozenset[str]
    namespaces: tuple[str, ...]  # empty: not limited to namespaces

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "roles": sorted(self.roles),
            "namespaces": list(self.namespaces),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "rule": self.rule, "reason": self.reason}


def namespace_in_scope(namespace: str, scopes: tuple[str, ...]) -> bool:
    """A scope names a namespace, its descendants (``a`` covers ``a/b``), or a glob."""
    for scope in scopes:
        if namespace == scope or namespace.startswith(scope + "/"):
            return True
        if any(c in scope for c in "*?") and fnmatch.fnmatchcase(namespace, scope):
            return True
    return False


def validate_change_window(window: Any) -> dict[str, Any] | None:
    """Check a tenant's change window setting; None turns the rule off."""
    if window is None:
        return None
    if not isinstance(window, dict):
        raise InvalidInput(
            "change_window must be an object like "
            '{"days": ["mon", "tue"], "start": "09:00", "end": "17:00"} or null'
        )
    days = window.get("days", list(_DAYS[:5]))
    if not isinstance(days, list) or not days or any(d not in _DAYS for d in days):
        raise InvalidInput(f"change_window.days must be a non-empty list of {', '.join(_DAYS)}")
    for field in ("start", "end"):
        raw = window.get(field)
        try:
            datetime.strptime(str(raw), "%H:%M")
        except ValueError:
            raise InvalidInput(f"change_window.{field} must be a time like 09:00 (UTC)") from None
    if window["start"] == window["end"]:
        raise InvalidInput(
            "change_window.start and change_window.end must differ "
            "(an end before the start is a window across midnight)"
        )
    return {"days": days, "start": window["start"], "end": window["end"]}


def depends_on_time(request: Request) -> bool:
    return request.action is Action.CONFIG_WRITE and request.environment is Environment.PRODUCTION


def in_change_window(window: dict[str, Any], now: datetime) -> bool:
    """Inside the window? ``days`` name the day a window opens; 22:00-06:00 runs past midnight."""
    day, hhmm = now.weekday(), now.strftime("%H:%M")
    start, end, days = window["start"], window["end"], window["days"]
    if start < end:
        return _DAYS[day] in days and start <= hhmm < end
    return (_DAYS[day] in days and hhmm >= start) or (_DAYS[(day - 1) % 7] in days and hhmm < end)


@dataclass(frozen=True, slots=True)
class Request:
    """What a principal wants to do, with the facts the rules need."""

    action: Action
    environment: Environment | None = None
    namespace: str | None = None
    classification: str | None = None


def decide(
    principal: Principal, request: Request, settings: dict[str, Any], now: Callable[[], datetime]
) -> Decision:
    """Evaluate the policy. Pure: the caller supplies the tenant settings and the clock.

    Only the production change window depends on time, so ``now`` is called only for it;
    every other decision is a function of (principal, request, settings) and may be memoized.
    """
    action = request.action
    if principal.namespaces and action not in _SCOPED_ACTIONS:
        return Decision(
            False,
            "deny:namespace-scope",
            f"a token limited to namespaces may only read and write configs and secrets, not {action.value}",
        )
    if principal.namespaces and request.namespace is not None and action in _NAMESPACED:
        if not namespace_in_scope(request.namespace, principal.namespaces):
            return Decision(
                False,
                "deny:namespace-scope",
                f"token is limited to namespaces {', '.join(principal.namespaces)}; "
                f"{request.namespace!r} is outside them",
            )
    if request.classification == "restricted" and action in _CONFIG_ACTIONS:
        if "pii-authorized" not in principal.roles:
            return Decision(
                False,
                "deny:restricted-classification",
                "the config is classified 'restricted' and the token lacks the pii-authorized role",
            )
    window = settings.get("change_window")
    if (
        action is Action.CONFIG_WRITE
        and request.environment is Environment.PRODUCTION
        and window
        and not in_change_window(window, now())
    ):
        return Decision(
            False,
            "deny:production-change-window",
            f"production writes are allowed only {','.join(window['days'])} "
            f"{window['start']}-{window['end']} UTC",
        )
    for role in sorted(principal.roles):
        grants = GRANTS.get(role, {})
        if action not in grants:
            continue
        envs = grants[action]
        # a config action without an environment means every environment
        if envs is None or (envs == ALL_ENVS if request.environment is None else request.environment in envs):
            where = f" in {request.environment.value}" if request.environment else ""
            return Decision(True, f"allow:role:{role}", f"role {role} grants {action.value}{where}")
    where = f" in {request.environment.value}" if request.environment else ""
    return Decision(
        False,
        "deny:default",
        f"no role of this token ({', '.join(sorted(principal.roles)) or 'none'}) grants "
        f"{action.value}{where}",
    )
