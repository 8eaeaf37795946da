"""REST long-poll over the change feed: GET /v1/changes?since=REV&wait=30s.

The plain answer lists config changes unless ``kinds`` asks for secret events too (they
are ``{"kind": "secret", ...}`` entries, so a client that reads config changes only is
never handed one by surprise); ``format=cloudevents`` carries both kinds by default, told
apart by the event ``type``.
"""

from __future__ import annotations

from aiohttp import web

from server.api.http import ctx_of, json_body, json_response, query_bool, query_int, services_of
from server.service.changes import KINDS, as_cloudevents, parse_kinds, parse_wait
from shared.errors import InvalidInput
from shared.models import parse_environment, validate_namespace

_CONFIG_ONLY = frozenset({"config"})


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
    if "kinds" in request.query and query_bool(request, "resolve"):
        raise InvalidInput("kinds does not go with resolve=true (resolved values are config changes)")
    if query_bool(request, "resolve"):  # the watch stream's events, as one long-poll answer
        if not env or style != "changes":
            raise InvalidInput("resolve=true needs env=E (the environment to resolve) and no format")
        resolved = await services_of(request).watch.poll(
            ctx,
            environment=parse_environment(env),
            since=since,
            wait=parse_wait(request.query.get("wait")),
            prefixes=[prefix] if prefix else [],
            key=request.query.get("key") or None,
        )
        return json_response(resolved, headers={"Cache-Control": "no-store"})
    result = await services_of(request).changes.poll(
        ctx,
        since,
        wait=parse_wait(request.query.get("wait")),
        prefix=prefix,
        environment=parse_environment(env) if env else None,
        kinds=parse_kinds(request.query.get("kinds"), KINDS if style == "cloudevents" else _CONFIG_ONLY),
    )
    if style == "cloudevents":
        result = {
            "revision": result["revision"],
            "events": as_cloudevents(ctx.principal.tenant_id, result["changes"]),
        }
    return json_response(result, headers={"Cache-Control": "no-store"})


async def compact(request: web.Request) -> web.Response:
    body = await json_body(request)
    result = await services_of(request).watch.compact(ctx_of(request), body.get("revision"))
    return json_response(result)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/changes", changes)
    app.router.add_post("/v1/compact", compact)
