"""Agent status: which agent runs which revision, and how the rollout of a revision is going.

After each apply (and when it starts, fails or goes stale) an agent reports its id, the
namespaces and environment it serves, the revision its files are current as of (a progress
mark of the watch counts: an agent that is caught up reports the tenant's revision) and its
state. The last report per agent is kept; ``llm-config agents`` lists them and
``llm-config rollout status --revision R`` sorts them into applied / behind / failed.

Who may do what: an agent reports with the token it reads its configs with, so reporting
needs ``config:read`` on every namespace it names in its environment (a service account
limited to other namespaces is refused, and the refusal is audited). Reading the fleet's
state needs ``audit:read``: operators and admins, the people who may see who changed what.
A report is status, not a change: it does not take a revision and is not an audit record.

``last_error`` is free text from the agent, so it is cleaned before it is stored: control
characters go, anything that looks like a credential (an lcm_ token, a bearer value, a JWT,
a provider API key, URL user info, ``password=…``) is replaced by ``[redacted]``, and it is
cut to 500 characters.
"""

from __future__ import annotations

import re
from typing import Any

from server.service import policy
from server.service.core import Core, Ctx
from server.service.policy import Action
from server.storage.base import AgentStatus
from shared.errors import InvalidInput
from shared.models import Environment, parse_environment, validate_namespace

STATES = ("applied", "check_failed", "rolled_back", "error", "stale", "starting")
FAILED_STATES = frozenset({"check_failed", "rolled_back", "error"})
MAX_NAMESPACES = 100
LAST_ERROR_MAX = 500
# pod and host names (DNS-1123, up to 253), optionally with a ':' or '.'-separated suffix
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_REDACTIONS = (
    (re.compile(r"lcm_[A-Za-z0-9_-]+"), "lcm_[redacted]"),
    (re.compile(r"(?i)\b(bearer|basic|token)(\s*[:=]?\s*)[^\s,;\"']+"), r"\1\2[redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"\b(?:sk|pk|rk|xox[abp]|ghp|gho|AKIA)[-_]?[A-Za-z0-9_-]{12,}"), "[redacted-key]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@"), r"\1[redacted]@"),
    (
        re.compile(
            r"(?i)\b([a-z0-9_-]*(?:password|passwd|secret|api[_-]?key|apikey|access[_-]?key|credential)"
            r"[a-z0-9_-]*)(\"?\s*[:=]\s*\"?)[^\s,;\"'}]+"
        ),
        r"\1\2[redacted]",
    ),
)


def scrub_error(text: str) -> str:
    """``text`` fit to store and show: one line, credentials redacted, at most 500 characters."""
    cleaned = _CONTROL.sub(" ", text).strip()
    for pattern, replacement in _REDACTIONS:
        cleaned = pattern.sub(replacement, cleaned)
    if len(cleaned) > LAST_ERROR_MAX:
        cleaned = cleaned[: LAST_ERROR_MAX - 1] + "…"
    return cleaned


def _agent_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("'agent_id' is required: a string such as the pod or host name")
    if not _AGENT_ID.match(value):
        raise InvalidInput(
            f"invalid agent_id {value[:80]!r}: use letters, digits, '.', '_', ':' and '-' "
            "(at most 253 characters, starting with a letter or digit)"
        )
    return value


def _namespaces(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidInput("'namespaces' is required: a non-empty list of the namespaces the agent serves")
    if len(value) > MAX_NAMESPACES:
        raise InvalidInput(f"'namespaces' lists {len(value)} namespaces; the limit is {MAX_NAMESPACES}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidInput("'namespaces' must be a list of strings")
        name = validate_namespace(item)
        if name not in out:
            out.append(name)
    return tuple(out)


def _environment(value: Any) -> Environment:
    if value is None or value == "":
        raise InvalidInput("'environment' is required: the environment the agent resolves configs for")
    if not isinstance(value, str):
        raise InvalidInput("'environment' must be a string")
    return parse_environment(value)


def _revision(value: Any, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be an integer")
    if value < minimum:
        raise InvalidInput(f"'{name}' must be at least {minimum}")
    return value


def _state(value: Any) -> str:
    if value not in STATES:
        shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
        raise InvalidInput(f"'state' must be one of {', '.join(STATES)}, got {shown}")
    return str(value)


class AgentService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def report(
        self,
        ctx: Ctx,
        *,
        agent_id: Any,
        namespaces: Any,
        environment: Any,
        applied_revision: Any,
        state: Any,
        last_error: Any = "",
    ) -> AgentStatus:
        """Store an agent's report (replacing its last one) and return it as stored."""
        agent = _agent_id(agent_id)
        names = _namespaces(namespaces)
        env = _environment(environment)
        revision = _revision(applied_revision, "applied_revision", 0)
        current_state = _state(state)
        if last_error is None:
            last_error = ""
        if not isinstance(last_error, str):
            raise InvalidInput("'last_error' must be a string")
        tenant_id = ctx.principal.tenant_id
        for namespace in names:
            await self.core.authorize(
                ctx, policy.Request(Action.CONFIG_READ, env, namespace), f"agent/{agent}"
            )
        current = await self.core.storage.current_revision(tenant_id)
        if revision > current:
            raise InvalidInput(
                f"applied_revision {revision} is ahead of the tenant's current revision {current}"
            )
        status = AgentStatus(
            tenant_id=tenant_id,
            agent_id=agent,
            namespaces=names,
            environment=env.value,
            applied_revision=revision,
            state=current_state,
            last_error=scrub_error(last_error),
            reported_at=self.core.now_iso(),
        )
        async with self.core.storage.write(tenant_id) as tx:
            await tx.put_agent_status(status)
        return status

    async def list_agents(self, ctx: Ctx, *, environment: str | None = None) -> list[AgentStatus]:
        """The last report of every agent of the caller's tenant, optionally of one environment."""
        await self.core.authorize(ctx, policy.Request(Action.AUDIT_READ), "agents")
        found = await self.core.storage.list_agent_status(ctx.principal.tenant_id)
        if environment:
            env = parse_environment(environment).value
            found = [s for s in found if s.environment == env]
        return found

    async def rollout(self, ctx: Ctx, revision: Any, *, environment: str | None = None) -> dict[str, Any]:
        """How far ``revision`` has got: agents that applied it (or later), are behind, or failed.

        An agent whose last report is a failure (check_failed, rolled_back, error) counts as
        failed whatever its revision; the others have applied the revision when their files
        are current as of it or later, and are behind otherwise.
        """
        wanted = _revision(revision, "revision", 1)
        agents = await self.list_agents(ctx, environment=environment)
        current = await self.core.storage.current_revision(ctx.principal.tenant_id)
        if wanted > current:
            raise InvalidInput(f"revision {wanted} does not exist yet; the current revision is {current}")
        groups: dict[str, list[dict[str, Any]]] = {"applied": [], "behind": [], "failed": []}
        for status in agents:
            if status.state in FAILED_STATES:
                group = "failed"
            elif status.applied_revision >= wanted:
                group = "applied"
            else:
                group = "behind"
            groups[group].append(status.to_dict())
        return {
            "revision": wanted,
            "current_revision": current,
            "total": len(agents),
            "counts": {name: len(items) for name, items in groups.items()},
            **groups,
        }
