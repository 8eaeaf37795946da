"""The aiohttp application: one middleware, the routes, health, metrics, OpenAPI.

A single middleware does per-request work in one place (request id,
authentication for /v1 by ``server.auth.Authenticator``, error mapping to
problem+json, Prometheus metrics) so the read path pays for one layer, not
five. Handlers only call the service layer; they never see storage or SQL.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import time
import traceback
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.api import admin, agents, changes, configs, keys, secrets, watch
from server.api.http import CTX_KEY, MAX_BODY, SERVICES, json_response
from server.api.metrics import RequestMetrics
from server.api.openapi import build_openapi
from server.auth import Authenticator, peer_uri_sans
from server.service import Ctx, Services
from shared.errors import LLMConfigError, PayloadTooLarge

log = structlog.get_logger("llmcm.api")

_PROBLEM_TYPE = "application/problem+json"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(error: LLMConfigError, request_id: str) -> web.Response:
    problem = error.to_problem()
    problem["request_id"] = request_id
    headers = {"X-Request-Id": request_id}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="llm-config-manager"'
    if error.status == 429:  # a rate limit or quota (server.cluster.limits): when to try again
        headers["Retry-After"] = str(error.extra.get("retry_after", 1))
    return web.Response(
        body=json.dumps(problem, ensure_ascii=False).encode(),
        status=error.status,
        content_type=_PROBLEM_TYPE,
        headers=headers,
    )


def _http_problem(exc: web.HTTPException, request_id: str) -> web.Response:
    detail = {
        404: "no such route; see /v1/openapi.json",
        405: f"method not allowed on this route; allowed: {exc.headers.get('Allow', '')}",
    }.get(exc.status, exc.reason)
    error = LLMConfigError(detail)
    error.status, error.code, error.title = exc.status, f"http_{exc.status}", exc.reason
    response = problem_response(error, request_id)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id")
    if given and len(given) <= 64 and set(given) <= _ID_CHARS:
        return given
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


METRICS: web.AppKey[RequestMetrics] = web.AppKey("metrics", RequestMetrics)
OPENAPI: web.AppKey[bytes] = web.AppKey("openapi", bytes)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)


def _route_of(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def core_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = _request_id(request)
    status = 500
    try:
        # default deny: every matched route needs a token unless its handler is public;
        # deciding by the matched route (not by path text) can't be fooled by encodings
        match = request.match_info
        if match.http_exception is None and match.handler not in _PUBLIC_HANDLERS:
            # an lcm_ token, a JWT, or (no Authorization header) a verified client certificate
            principal = await request.app[AUTHENTICATOR].authenticate(
                request.headers.get("Authorization"), lambda: peer_uri_sans(request.transport), request_id
            )
            request[CTX_KEY] = Ctx(principal, request_id, _private_channel(request))
        response = await handler(request)
        status = response.status
        if not response.prepared:  # a stream (watch) has sent its headers already
            response.headers["X-Request-Id"] = request_id
        return response
    except LLMConfigError as exc:
        status = exc.status
        if status >= 500:
            log.error("request_failed", request_id=request_id, error=exc.code, route=_route_of(request))
        return problem_response(exc, request_id)
    except web.HTTPRequestEntityTooLarge:
        status = 413
        return problem_response(
            PayloadTooLarge(f"request body is larger than the limit of {request.app[MAX_BODY]} bytes"),
            request_id,
        )
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        return _http_problem(exc, request_id)
    except Exception as exc:
        status = 500
        # the exception message may carry values; log the type and where, not the text
        log.error(
            "unhandled_error",
            request_id=request_id,
            error_type=type(exc).__name__,
            where=traceback.format_tb(exc.__traceback__)[-3:],
        )
        return problem_response(
            LLMConfigError("internal error; see server logs for this request id"), request_id
        )
    finally:
        request.app[METRICS].observe(
            request.method, _route_of(request), status, time.perf_counter() - started
        )


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        await services.core.storage.ping()
    except LLMConfigError:
        return json_response({"status": "unavailable", "storage": "down"}, 503)
    return json_response({"status": "ok", "storage": "up"})


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[METRICS].registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


_PUBLIC_HANDLERS: frozenset[Handler] = frozenset({live, ready, metrics, openapi})


def _private_channel(request: web.Request) -> bool:
    """TLS, or a peer on this machine (loopback)."""
    if request.secure:
        return True
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def create_app(
    services: Services, *, max_body_bytes: int = 1 << 20, authenticator: Authenticator | None = None
) -> web.Application:
    """The REST application; ``authenticator`` defaults to lcm_ bearer tokens only."""
    app = web.Application(middlewares=[core_middleware], client_max_size=max_body_bytes)
    app[SERVICES] = services
    app[AUTHENTICATOR] = authenticator or Authenticator(services.tenants)
    app[MAX_BODY] = max_body_bytes
    app[METRICS] = RequestMetrics()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
    admin.add_routes(app)
    configs.add_routes(app)
    secrets.add_routes(app)
    keys.add_routes(app)
    changes.add_routes(app)
    watch.add_routes(app)
    agents.add_routes(app)
    app[OPENAPI] = json.dumps(build_openapi()).encode()
    return app
