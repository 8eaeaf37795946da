"""Small helpers shared by the REST handlers: reading bodies and query parameters, writing JSON.

Everything here turns bad input into ``InvalidInput`` with a message naming the
parameter, so handlers stay short and every error reads the same way.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from server.service import Ctx, Services
from shared.errors import InvalidInput, PayloadTooLarge
from shared.models import parse_json

CTX_KEY = "llmcm_ctx"
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body_bytes", int)
JSON_TYPE = "application/json"


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def ctx_of(request: web.Request) -> Ctx:
    ctx: Ctx = request[CTX_KEY]
    return ctx


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 if malformed, 413 if over the limit."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body is larger than the limit of {request.app[MAX_BODY]} bytes"
        ) from None
    if not raw:
        raise InvalidInput("request body is empty; send a JSON object")
    body = parse_json(raw, "request body")
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type=JSON_TYPE, headers=headers)


def query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in ("", "1", "true", "yes"):
        return lowered != ""
    if lowered in ("0", "false", "no"):
        return False
    raise InvalidInput(f"query parameter {name!r} must be true or false, got {raw[:40]!r}")


def query_int(request: web.Request, name: str, *, minimum: int = 0, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.lstrip("-").isdigit():
        raise InvalidInput(f"query parameter {name!r} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if value < minimum:
        raise InvalidInput(f"query parameter {name!r} must be at least {minimum}")
    return value


def body_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name!r} must be an integer")
    return value


def body_str(body: dict[str, Any], name: str, *, default: str = "", limit: int = 2000) -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"{name!r} must be a string")
    if len(value) > limit:
        raise InvalidInput(f"{name!r} is longer than {limit} characters")
    return value


def path_names(request: web.Request, prefix: str, suffix: str | None = None) -> tuple[str, str]:
    """(namespace, key) from the *raw* path ``{prefix}{namespace}/{key}[/{suffix}]``, unvalidated.

    Checked before anything is decoded: percent-encoded bytes, backslashes and NUL are
    refused here, so ``..%2f`` and its double-encoded cousins never reach a handler. The
    caller validates both names (shared.models), which also refuses dot segments.
    """
    raw = request.raw_path.split("?", 1)[0]
    usage = f"path must be {prefix}{{namespace}}/{{key}}" + (f"/{suffix}" if suffix else "")
    if not raw.startswith(prefix):
        raise InvalidInput(usage)
    tail = raw[len(prefix) :]
    if "%" in tail or "\\" in tail or "\x00" in tail:
        raise InvalidInput(
            "namespace and key may not contain percent-encoded characters, backslashes or NUL; "
            "use plain a-z, 0-9, '-', '_' and '/'"
        )
    segments = tail.split("/")
    if suffix is not None:
        if segments[-1] != suffix:
            raise InvalidInput(usage)
        segments = segments[:-1]
    if len(segments) < 2:
        raise InvalidInput(usage)
    return "/".join(segments[:-1]), segments[-1]


def if_match_version(request: web.Request) -> int | None:
    """``If-Match: 3`` or ``If-Match: "3"`` as an expected version."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isascii() or not text.isdigit():
        raise InvalidInput("If-Match must carry a version number, e.g. If-Match: 3")
    return int(text)
