"""REST handlers for agent status: agents report what they applied; operators see the fleet.

    POST /v1/agents/status                 an agent's report (its service-account token)
    GET  /v1/agents[?env=E]                the last report of every agent
    GET  /v1/agents/rollout?revision=R     applied / behind / failed for revision R
"""

from __future__ import annotations

from aiohttp import web

from server.api.http import ctx_of, json_body, json_response, query_int, services_of
from shared.errors import InvalidInput


async def report_status(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"agent_id", "namespaces", "environment", "applied_revision", "state", "last_error"}
    if unknown:
        raise InvalidInput(f"unknown fields in the report: {', '.join(sorted(unknown))[:200]}")
    status = await services_of(request).agents.report(
        ctx_of(request),
        agent_id=body.get("agent_id"),
        namespaces=body.get("namespaces"),
        environment=body.get("environment"),
        applied_revision=body.get("applied_revision"),
        state=body.get("state"),
        last_error=body.get("last_error", ""),
    )
    return json_response(status.to_dict())


async def list_agents(request: web.Request) -> web.Response:
    agents = services_of(request).agents
    found = await agents.list_agents(ctx_of(request), environment=request.query.get("env"))
    return json_response({"agents": [s.to_dict() for s in found]}, headers={"Cache-Control": "no-store"})


async def rollout(request: web.Request) -> web.Response:
    revision = query_int(request, "revision", minimum=1)
    if revision is None:
        raise InvalidInput("query parameter 'revision' is required: the revision whose rollout to show")
    result = await services_of(request).agents.rollout(
        ctx_of(request), revision, environment=request.query.get("env")
    )
    return json_response(result, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/agents/status", report_status)
    app.router.add_get("/v1/agents", list_agents)
    app.router.add_get("/v1/agents/rollout", rollout)
