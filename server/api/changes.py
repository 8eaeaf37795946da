"""REST long-poll over the change feed: GET /v1/changes?since=REV&wait=30s."""

from __future__ import annotations

from aiohttp import web

from server.api.http import ctx_of, json_response, query_int, services_of
from server.service.changes import as_cloudevent, parse_wait
from shared.errors import InvalidInput
from shared.models import parse_environment, validate_namespace


async def changes(request: web.Request) -> web.Response:
    since = query_int(request, "since", minimum=0, default=0) or 0
    prefix = request.query.get("prefix") or None
    if prefix is not None:
        validate_namespace(prefix.rstrip("/"))
    env = request.query.get("env")
    style = request.query.get("format", "changes")
    if style not in ("changes", "cloudevents"):
        raise InvalidInput("format must be changes or cloudevents")
    ctx = ctx_of(request)
    result = await services_of(request).changes.poll(
        ctx,
        since,
        wait=parse_wait(request.query.get("wait")),
        prefix=prefix,
        environment=parse_environment(env) if env else None,
    )
    if style == "cloudevents":
        tenant_id = ctx.principal.tenant_id
        result = {
            "revision": result["revision"],
            "events": [as_cloudevent(tenant_id, change) for change in result.pop("changes")],
        }
    return json_response(result, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/changes", changes)
