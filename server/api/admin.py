"""REST handlers for everything that is not a config: tenants, tokens, settings,
schemas and bindings, audit, policy explain, and the caller's own identity."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.api.http import body_str, ctx_of, json_body, json_response, query_int, services_of
from server.service import Ctx
from server.service.policy import Action, Request
from server.service.tenants import principal_of
from shared.errors import InvalidInput
from shared.models import parse_environment, validate_namespace


async def whoami(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    tenant = await services_of(request).core.storage.get_tenant(ctx.principal.tenant_id)
    out: dict[str, Any] = ctx.principal.to_dict()
    out["tenant_name"] = tenant.name if tenant else None
    return json_response(out)


# -- tenants -------------------------------------------------------------------------------


async def create_tenant(request: web.Request) -> web.Response:
    body = await json_body(request)
    name = body_str(body, "name", limit=100)
    admin_token = body.get("admin_token", False)
    if not isinstance(admin_token, bool):
        raise InvalidInput("'admin_token' must be true or false")
    tenant, token, record = await services_of(request).tenants.create_tenant(
        ctx_of(request), name, admin_token=admin_token
    )
    out: dict[str, Any] = {"tenant": tenant.to_dict()}
    if token is not None and record is not None:
        out["admin_token"] = {"token": token, **record.to_dict()}
    return json_response(out, 201)


async def list_tenants(request: web.Request) -> web.Response:
    tenants = await services_of(request).tenants.list_tenants(ctx_of(request))
    return json_response({"tenants": [t.to_dict() for t in tenants]})


async def get_tenant(request: web.Request) -> web.Response:
    tenant = await services_of(request).tenants.get_tenant(ctx_of(request), request.match_info["tenant_id"])
    return json_response(tenant.to_dict())


# -- tokens --------------------------------------------------------------------------------


async def create_token(request: web.Request) -> web.Response:
    body = await json_body(request)
    tenant_id = body.get("tenant_id")
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise InvalidInput("'tenant_id' must be a string")
    token, record = await services_of(request).tenants.create_token(
        ctx_of(request),
        name=body_str(body, "name", limit=100),
        roles=body.get("roles"),
        namespaces=body.get("namespaces"),
        expires_in=body.get("expires_in"),
        tenant_id=tenant_id,
    )
    return json_response({"token": token, **record.to_dict()}, 201)


async def list_tokens(request: web.Request) -> web.Response:
    records = await services_of(request).tenants.list_tokens(ctx_of(request), request.query.get("tenant_id"))
    return json_response({"tokens": [r.to_dict() for r in records]})


async def revoke_token(request: web.Request) -> web.Response:
    record = await services_of(request).tenants.revoke_token(
        ctx_of(request), request.match_info["token_id"], request.query.get("tenant_id")
    )
    return json_response(record.to_dict())


# -- settings ------------------------------------------------------------------------------


async def get_settings(request: web.Request) -> web.Response:
    return json_response(await services_of(request).tenants.get_settings(ctx_of(request)))


async def put_settings(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services_of(request).tenants.put_settings(ctx_of(request), body))


# -- schemas -------------------------------------------------------------------------------


async def list_schemas(request: web.Request) -> web.Response:
    records = await services_of(request).schemas.list_schemas(ctx_of(request))
    return json_response({"schemas": [r.to_dict() for r in records]})


async def get_schema(request: web.Request) -> web.Response:
    record = await services_of(request).schemas.get_schema(ctx_of(request), request.match_info["name"])
    return json_response(record.to_dict())


async def put_schema(request: web.Request) -> web.Response:
    body = await json_body(request)
    if "schema" not in body:
        raise InvalidInput('request body must carry "schema": a JSON Schema object')
    record = await services_of(request).schemas.put_schema(
        ctx_of(request), request.match_info["name"], body["schema"]
    )
    return json_response(record.to_dict())


async def list_bindings(request: web.Request) -> web.Response:
    bindings = await services_of(request).schemas.list_bindings(ctx_of(request))
    return json_response({"bindings": [b.to_dict() for b in bindings]})


async def create_binding(request: web.Request) -> web.Response:
    body = await json_body(request)
    binding = await services_of(request).schemas.bind(
        ctx_of(request),
        body_str(body, "schema", limit=100),
        body_str(body, "namespace", limit=500),
        body_str(body, "key", default="*", limit=500),
    )
    return json_response(binding.to_dict(), 201)


async def delete_binding(request: web.Request) -> web.Response:
    await services_of(request).schemas.unbind(ctx_of(request), request.match_info["binding_id"])
    return web.Response(status=204)


# -- audit ---------------------------------------------------------------------------------


async def list_audit(request: web.Request) -> web.Response:
    records = await services_of(request).audit.records(
        ctx_of(request),
        chain=request.query.get("chain"),
        after=query_int(request, "after", default=0) or 0,
        limit=query_int(request, "limit", minimum=1, default=100) or 100,
        action=request.query.get("action"),
        result=request.query.get("result"),
    )
    return json_response({"records": [r.to_dict() for r in records]})


async def verify_audit(request: web.Request) -> web.Response:
    report = await services_of(request).audit.verify(ctx_of(request), chain=request.query.get("chain"))
    return json_response(report)


# -- policy --------------------------------------------------------------------------------


async def explain_policy(request: web.Request) -> web.Response:
    """Which rule decides ``action`` for the caller (or, for admins, another token)."""
    body = await json_body(request)
    services = services_of(request)
    ctx = ctx_of(request)
    try:
        action = Action(body_str(body, "action"))
    except ValueError:
        raise InvalidInput(f"'action' must be one of {', '.join(a.value for a in Action)}") from None
    env = parse_environment(body["environment"]) if body.get("environment") else None
    namespace = body.get("namespace")
    if namespace is not None:
        namespace = validate_namespace(body_str(body, "namespace", limit=500))
    classification = body.get("classification")
    if classification is not None and not isinstance(classification, str):
        raise InvalidInput("'classification' must be a string")
    principal = ctx.principal
    token_id = body.get("token_id")
    if token_id is not None and token_id != principal.token_id:
        await services.core.authorize(ctx, Request(Action.TOKEN_MANAGE), "policy/explain")
        other = await services.core.storage.get_token(principal.tenant_id, str(token_id)[:64])
        if other is None:
            raise InvalidInput("no token with that id in this tenant")
        principal = principal_of(other)
    decision = await services.core.check(
        Ctx(principal, ctx.request_id), Request(action, env, namespace, classification)
    )
    return json_response({"principal": principal.to_dict(), **decision.to_dict()})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/whoami", whoami)
    r.add_get("/v1/tenants", list_tenants)
    r.add_post("/v1/tenants", create_tenant)
    r.add_get("/v1/tenants/{tenant_id}", get_tenant)
    r.add_get("/v1/tokens", list_tokens)
    r.add_post("/v1/tokens", create_token)
    r.add_delete("/v1/tokens/{token_id}", revoke_token)
    r.add_get("/v1/settings", get_settings)
    r.add_put("/v1/settings", put_settings)
    r.add_get("/v1/schemas", list_schemas)
    r.add_get("/v1/schemas/{name}", get_schema)
    r.add_put("/v1/schemas/{name}", put_schema)
    r.add_get("/v1/schema-bindings", list_bindings)
    r.add_post("/v1/schema-bindings", create_binding)
    r.add_delete("/v1/schema-bindings/{binding_id}", delete_binding)
    r.add_get("/v1/audit", list_audit)
    r.add_get("/v1/audit/verify", verify_audit)
    r.add_post("/v1/policy/explain", explain_policy)
