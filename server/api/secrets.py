"""REST handlers for /v1/secrets: put, get (plaintext), list, versions, revoke.

A plaintext answer is marked ``Cache-Control: no-store``; every other answer
carries metadata only. As with configs, the raw path is checked before it is
decoded and names are validated, so encoded separators never get through.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from server.api.http import (
    JSON_TYPE,
    body_int,
    body_str,
    ctx_of,
    json_body,
    json_response,
    path_names,
    query_bool,
    query_int,
    services_of,
)
from shared.errors import InvalidInput
from shared.models import Environment, SecretVersion, parse_environment, validate_key, validate_namespace

PREFIX = "/v1/secrets/"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def secret_path(request: web.Request, suffix: str | None = None) -> tuple[str, str]:
    namespace, key = path_names(request, PREFIX, suffix)
    return validate_namespace(namespace), validate_key(key)


def _version_dict(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = record.to_dict()
    return out


async def put_secret(request: web.Request) -> web.Response:
    namespace, key = secret_path(request)
    body = await json_body(request)
    if "value" not in body:
        raise InvalidInput('request body must carry "value": the secret as a string')
    record = await services_of(request).secrets.put(
        ctx_of(request),
        namespace,
        key,
        body["value"],
        env=parse_environment(request.query.get("env")),
        message=body_str(body, "message"),
        grace_period=body.get("grace_period"),
        expires_in=body.get("expires_in"),
        rotation_interval=body.get("rotation_interval"),
    )
    return json_response(_version_dict(record), 201 if record.version == 1 else 200)


_GetArgs = tuple[str, str, Environment, int | None]  # namespace, key, env, version
_parsed_gets: dict[str, _GetArgs] = {}
_PARSED_GETS_MAX = 4096
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # as json_response


def _get_args(request: web.Request) -> _GetArgs:
    """Parse a GET's path and query once; the parse of a given raw URL never changes."""
    args = _parsed_gets.get(request.raw_path)
    if args is None:
        namespace, key = secret_path(request)
        env = parse_environment(request.query.get("env"))
        args = (namespace, key, env, query_int(request, "version", minimum=1))
        if len(_parsed_gets) >= _PARSED_GETS_MAX:
            _parsed_gets.clear()
        _parsed_gets[request.raw_path] = args
    return args


def _read_answer(value: str, record: SecretVersion) -> bytes:
    """The body of a plaintext read; the service keeps it with the opened value for a few seconds."""
    return _encode_json({**_version_dict(record), "value": value}).encode()


async def get_secret(request: web.Request) -> web.Response:
    namespace, key, env, version = _get_args(request)
    body = await services_of(request).secrets.get_encoded(
        ctx_of(request), namespace, key, env=env, version=version, encode=_read_answer
    )
    return web.Response(body=body, content_type=JSON_TYPE, headers=_NO_STORE)


async def secret_versions(request: web.Request) -> web.Response:
    namespace, key = secret_path(request, "versions")
    found = await services_of(request).secrets.versions(
        ctx_of(request), namespace, key, env=parse_environment(request.query.get("env"))
    )
    return json_response({"versions": [_version_dict(v) for v in found]})


async def revoke_secret(request: web.Request) -> web.Response:
    namespace, key = secret_path(request, "revoke")
    body = await json_body(request) if request.can_read_body else {}
    found = await services_of(request).secrets.revoke(
        ctx_of(request),
        namespace,
        key,
        env=parse_environment(request.query.get("env")),
        version=body_int(body, "version"),
    )
    return json_response({"versions": [_version_dict(v) for v in found]})


async def list_secrets(request: web.Request) -> web.Response:
    prefix = request.query.get("prefix") or None
    if prefix is not None:
        validate_namespace(prefix.rstrip("/"))
    secrets = services_of(request).secrets
    found = await secrets.list(
        ctx_of(request),
        env=parse_environment(request.query.get("env")),
        prefix=prefix,
        due=query_bool(request, "due"),
    )
    return json_response(
        {"items": [{**_version_dict(v), "rotation_due": secrets.rotation_due(v)} for v in found]}
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    ns = "{namespace:[^?#]+}"
    key = "{key:[^/?#]+}"
    item_key = "{key:(?!(?:versions|revoke)$)[^/?#]+}"
    r.add_get("/v1/secrets", list_secrets)
    r.add_get(f"/v1/secrets/{ns}/{item_key}", get_secret, allow_head=False)
    r.add_put(f"/v1/secrets/{ns}/{item_key}", put_secret)
    r.add_get(f"/v1/secrets/{ns}/{key}/versions", secret_versions)
    r.add_post(f"/v1/secrets/{ns}/{key}/revoke", revoke_secret)
