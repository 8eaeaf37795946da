"""REST handlers for key-encryption-key rotation and rewrap progress (/v1/keys)."""

from __future__ import annotations

from aiohttp import web

from server.api.http import ctx_of, json_response, services_of


async def rotate(request: web.Request) -> web.Response:
    status = await services_of(request).keys.rotate(ctx_of(request), request.query.get("tenant_id"))
    return json_response(status)


async def status(request: web.Request) -> web.Response:
    report = await services_of(request).keys.status(ctx_of(request), request.query.get("tenant_id"))
    return json_response(report)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/keys/rotate", rotate)
    app.router.add_get("/v1/keys/status", status)
