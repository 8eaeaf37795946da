"""REST handlers for /v1/configs: the namespace is everything between /v1/configs/ and the key.

The raw request path is checked before anything is decoded: percent-encoded
bytes, dot segments, backslashes and NUL never reach the service layer, so
``..%2f`` and its double-encoded cousins are refused with 400.
"""

from __future__ import annotations

from aiohttp import web

from server.api.http import (
    JSON_TYPE,
    body_int,
    body_str,
    ctx_of,
    if_match_version,
    json_body,
    json_response,
    path_names,
    query_bool,
    query_int,
    services_of,
)
from shared.errors import InvalidInput
from shared.models import ChangeType, ConfigRef, parse_environment

PREFIX = "/v1/configs/"


def config_ref(request: web.Request, suffix: str | None = None) -> ConfigRef:
    """The (namespace, key, env) a request names; ``suffix`` is a sub-resource after the key."""
    namespace, key = path_names(request, PREFIX, suffix)
    return ConfigRef.parse(namespace, key, request.query.get("env"))


_GetArgs = tuple[ConfigRef, int | None, bool, bool]
_parsed_gets: dict[str, _GetArgs] = {}
_PARSED_GETS_MAX = 4096


def _get_args(request: web.Request) -> _GetArgs:
    """Parse a GET's path and query once; the parse of a given raw URL never changes."""
    args = _parsed_gets.get(request.raw_path)
    if args is None:
        ref = config_ref(request)
        version = query_int(request, "version", minimum=1)
        resolve = query_bool(request, "resolve")
        explain = query_bool(request, "explain")
        if version is not None and resolve:
            raise InvalidInput("use either version=N (one stored version) or resolve=true, not both")
        args = (ref, version, resolve, explain)
        if len(_parsed_gets) >= _PARSED_GETS_MAX:
            _parsed_gets.clear()
        _parsed_gets[request.raw_path] = args
    return args


async def get_config(request: web.Request) -> web.Response:
    configs = services_of(request).configs
    ctx = ctx_of(request)
    result = configs.memo_get(ctx.principal, request.raw_path)
    if result is None:
        ref, version, resolve, explain = _get_args(request)
        result = await configs.get(
            ctx, ref, version=version, resolve=resolve, explain=explain, memo_key=request.raw_path
        )
    etag = result.etag
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    headers = {"ETag": etag}
    if "secret_versions" in result.body:  # plaintext secrets injected: never stored by a cache
        headers["Cache-Control"] = "no-store"
    return web.Response(body=result.encoded, content_type=JSON_TYPE, headers=headers)


async def put_config(request: web.Request) -> web.Response:
    ref = config_ref(request)
    body = await json_body(request)
    if "value" not in body:
        raise InvalidInput('request body must carry "value": a JSON object')
    expected = body_int(body, "expected_version")
    header = if_match_version(request)
    if expected is not None and header is not None and expected != header:
        raise InvalidInput("If-Match and expected_version disagree")
    result = await services_of(request).configs.put(
        ctx_of(request),
        ref,
        body["value"],
        message=body_str(body, "message"),
        expected_version=expected if expected is not None else header,
        metadata=body.get("metadata"),
    )
    status = 201 if result.changed and result.version.change_type is ChangeType.CREATE else 200
    return json_response(result.to_dict(), status, {"ETag": f'"{result.version.sha256}"'})


async def delete_config(request: web.Request) -> web.Response:
    ref = config_ref(request)
    result = await services_of(request).configs.delete(
        ctx_of(request),
        ref,
        message=request.query.get("message", "")[:2000],
        expected_version=if_match_version(request),
    )
    return json_response(result.to_dict())


async def history(request: web.Request) -> web.Response:
    ref = config_ref(request, "history")
    versions = await services_of(request).configs.history(
        ctx_of(request),
        ref,
        limit=query_int(request, "limit", minimum=1, default=100) or 100,
        before=query_int(request, "before", minimum=1),
    )
    return json_response({"versions": versions})


async def diff(request: web.Request) -> web.Response:
    ref = config_ref(request, "diff")
    result = await services_of(request).configs.diff(
        ctx_of(request),
        ref,
        from_version=query_int(request, "from", minimum=1),
        to_version=query_int(request, "to", minimum=1),
    )
    return json_response(result)


async def rollback(request: web.Request) -> web.Response:
    ref = config_ref(request, "rollback")
    body = await json_body(request)
    if "version" not in body:
        raise InvalidInput('request body must carry "version": the version to roll back to')
    result = await services_of(request).configs.rollback(
        ctx_of(request),
        ref,
        body["version"],
        message=body_str(body, "message"),
        expected_version=body_int(body, "expected_version"),
    )
    return json_response(result.to_dict())


async def list_configs(request: web.Request) -> web.Response:
    env = parse_environment(request.query.get("env"))
    items = await services_of(request).configs.list_entries(
        ctx_of(request), env, prefix=request.query.get("prefix"), resolve=query_bool(request, "resolve")
    )
    return json_response({"environment": env.value, "items": items})


async def invalid_path(request: web.Request) -> web.Response:
    raise InvalidInput("config path must be /v1/configs/{namespace}/{key}[/history|/diff|/rollback]")


def add_routes(app: web.Application) -> None:
    r = app.router
    ns = "{namespace:[^?#]+}"
    key = "{key:[^/?#]+}"
    # the plain entry comes first (it is the hot path); its key can't be a sub-resource name,
    # so /history, /diff and /rollback fall through to their own routes
    item_key = "{key:(?!(?:history|diff|rollback)$)[^/?#]+}"
    r.add_get("/v1/configs", list_configs)
    r.add_get(f"/v1/configs/{ns}/{item_key}", get_config, allow_head=False)
    r.add_put(f"/v1/configs/{ns}/{item_key}", put_config)
    r.add_delete(f"/v1/configs/{ns}/{item_key}", delete_config)
    r.add_get(f"/v1/configs/{ns}/{key}/history", history)
    r.add_get(f"/v1/configs/{ns}/{key}/diff", diff)
    r.add_post(f"/v1/configs/{ns}/{key}/rollback", rollback)
    r.add_route("*", "/v1/configs/{rest:.*}", invalid_path)
