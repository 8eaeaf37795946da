"""The agent's REST + Server-Sent Events transport, on ``agent.http1`` instead of aiohttp.

``AgentClient`` is the SDK's ``ConfigClient`` (same watch resume, reconnect and tenant
check) whose ``http(s)://`` transport is ``RestTransport`` below; ``grpc(s)://`` still gets
the SDK's gRPC transport. ``RestTransport`` speaks the same REST API as
``shared.sdk.rest.RestTransport`` with the same JSON shapes and errors: a problem+json answer
becomes the project's exception (``shared.errors.from_problem``), a connection failure
``Unavailable`` naming the server and the request (never the token), an untrusted TLS
certificate ``ProtocolError`` (retrying can't fix it), anything that is not JSON
``ProtocolError``. The reason it exists: the agent then never imports aiohttp, which is
most of its memory (see ``agent.http1``).

Each request is one connection (``Connection: close``): the agent makes few of them (a
listing per namespace when it syncs, a status report per apply), and the watch is one
long-lived stream.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import ssl
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from agent import http1
from shared.errors import InvalidInput, LLMConfigError, ProtocolError, Unavailable, from_problem
from shared.sdk import ConfigClient
from shared.sdk.events import EVENT_TYPES, WatchEvent, event_from_dict
from shared.sdk.sse import SSEEvent, SSEParser
from shared.sdk.transport import HTTP_SCHEMES, Items, Transport, WatchRequest, idle_timeout, watch_query

ERROR_BODY_MAX = 64 * 1024  # an error answer to the watch request is read up to this size
JSON_TYPES = ("application/json", "application/problem+json")
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT})


class AgentClient(ConfigClient):
    """``ConfigClient`` with the agent's lean REST transport for ``http(s)://`` servers."""

    async def _ready(self) -> Transport:
        if self._transport is None and not self.closed and self.scheme in HTTP_SCHEMES:
            self._transport = RestTransport(self.endpoint, self._token, timeout=self._timeout)
        return await super()._ready()


def _config_path(namespace: str, key: str, suffix: str = "") -> str:
    return f"/v1/configs/{quote(namespace, safe='/')}/{quote(key, safe='')}{suffix}"


class RestTransport:
    """``shared.sdk.transport.Transport`` over ``agent.http1``, one server and one token."""

    def __init__(self, endpoint: str, token: str, *, timeout: float) -> None:
        parts = urlsplit(endpoint.strip())
        if parts.scheme not in HTTP_SCHEMES or not parts.hostname:
            raise InvalidInput("server URL must look like http://host:port or https://host")
        if parts.username is not None or parts.password is not None:
            raise InvalidInput("server URL must not carry credentials; pass the token separately")
        if parts.query or parts.fragment:
            raise InvalidInput("server URL must not carry a query string or fragment")
        self.endpoint = endpoint.strip().rstrip("/")
        self.timeout = timeout
        self.reconnect_hint: float | None = None  # the server's ``retry:``, in seconds
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._streams: set[http1.Stream] = set()  # open watches; close() cuts them

    async def close(self) -> None:
        """End open watches (nothing else stays open between requests)."""
        for stream in list(self._streams):
            stream.abort()

    # ---- the HTTP edge

    async def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Any:
        target = path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {**self._headers, **(extra_headers or {})}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await http1.request(
                method, self.endpoint + target, headers=headers, body=data, time_limit=self.timeout
            )
        except (OSError, TimeoutError, http1.BadResponse) as exc:
            raise self._unavailable(exc, method, path) from None
        return self._answer(method, path, response.status, response.content_type, response.body)

    async def _obj(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        extra_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        answer = await self._request(method, path, query, body, extra_headers)
        if not isinstance(answer, dict):
            raise ProtocolError(
                f"server {self.endpoint} answered {method} {path} with something not an object"
            )
        return answer

    def _unavailable(self, exc: BaseException, method: str, path: str) -> LLMConfigError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ProtocolError(
                f"server {self.endpoint} presented a TLS certificate this client does not trust "
                f"({exc.verify_message or type(exc).__name__}); give its CA with SSL_CERT_FILE"
            )
        if isinstance(exc, TimeoutError):
            return Unavailable(f"server {self.endpoint} did not answer {method} {path} in time")
        if isinstance(exc, socket.gaierror):
            return Unavailable(f"cannot reach server {self.endpoint}: its name does not resolve")
        if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
            return Unavailable(f"cannot reach server {self.endpoint}: {os.strerror(exc.errno).lower()}")
        return Unavailable(
            f"connection to server {self.endpoint} failed during {method} {path}: {type(exc).__name__}"
        )

    def _answer(self, method: str, path: str, status: int, content_type: str, raw: bytes) -> Any:
        parsed: Any = None
        if raw and content_type in JSON_TYPES:
            try:
                parsed = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ProtocolError(
                    f"server {self.endpoint} sent malformed JSON for {method} {path} (HTTP {status})"
                ) from None
        if 200 <= status < 300:
            if status == 204 or not raw:
                return None
            if parsed is None:
                raise ProtocolError(
                    f"server {self.endpoint} answered {method} {path} with {content_type or 'no type'}, "
                    "not JSON; is this an LLM-Config-Manager server?"
                )
            return parsed
        if isinstance(parsed, dict):
            error = from_problem(parsed, status)
        else:
            text = raw[:200].decode("utf-8", "replace").strip()
            detail = f"HTTP {status} from {self.endpoint} for {method} {path}" + (f": {text}" if text else "")
            error = from_problem({"detail": detail}, status)
        error.status = status
        raise error

    # ---- Transport

    async def whoami(self) -> dict[str, Any]:
        return await self._obj("GET", "/v1/whoami")

    async def get(self, namespace: str, key: str, environment: str) -> dict[str, Any]:
        query = [("env", environment), ("resolve", "true")]
        return await self._obj("GET", _config_path(namespace, key), query)

    async def get_secret(self, namespace: str, key: str, environment: str | None) -> dict[str, Any]:
        path = f"/v1/secrets/{quote(namespace, safe='/')}/{quote(key, safe='')}"
        return await self._obj("GET", path, [] if environment is None else [("env", environment)])

    async def list(self, prefix: str | None, environment: str, resolve: bool) -> Items:
        query = [("env", environment)]
        if prefix is not None:
            query.append(("prefix", prefix))
        if resolve:
            query.append(("resolve", "true"))
        answer = await self._obj("GET", "/v1/configs", query)
        return _list_of(answer, "items", "GET /v1/configs", self.endpoint)

    async def put(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"value": value}
        if message:
            body["message"] = message
        if expected_version is not None:
            body["expected_version"] = expected_version
        return await self._obj("PUT", _config_path(namespace, key), [("env", environment)], body)

    async def delete(
        self, namespace: str, key: str, environment: str, message: str | None, expected_version: int | None
    ) -> dict[str, Any]:
        headers = {"If-Match": str(expected_version)} if expected_version is not None else None
        query = [("env", environment)] + ([("message", message)] if message else [])
        return await self._obj("DELETE", _config_path(namespace, key), query, None, headers)

    async def history(self, namespace: str, key: str, environment: str, limit: int | None) -> Items:
        query = [("env", environment)] + ([("limit", str(limit))] if limit is not None else [])
        answer = await self._obj("GET", _config_path(namespace, key, "/history"), query)
        return _list_of(answer, "versions", "GET history", self.endpoint)

    async def rollback(
        self,
        namespace: str,
        key: str,
        version: int,
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"version": version}
        if message:
            body["message"] = message
        if expected_version is not None:
            body["expected_version"] = expected_version
        path = _config_path(namespace, key, "/rollback")
        return await self._obj("POST", path, [("env", environment)], body)

    async def report_status(self, report: dict[str, Any]) -> dict[str, Any]:
        return await self._obj("POST", "/v1/agents/status", body=report)

    async def watch(self, request: WatchRequest) -> AsyncGenerator[WatchEvent, None]:
        """One SSE connection: its events until it ends, then ``Unavailable`` (retriable)."""
        headers = {**self._headers, "Accept": "text/event-stream"}
        if request.resume_after is not None:
            headers["Last-Event-ID"] = str(request.resume_after)
        path = "/v1/watch"
        url = f"{self.endpoint}{path}?{urlencode(watch_query(request))}"
        parser = SSEParser()
        opened: http1.Stream | None = None
        try:
            async with http1.stream(
                url,
                headers=headers,
                connect_timeout=self.timeout,
                read_timeout=idle_timeout(request.progress_interval),
            ) as response:
                opened = response
                self._streams.add(response)
                if not 200 <= response.status < 300:
                    raw = await response.read_bounded(ERROR_BODY_MAX)
                    self._answer("GET", path, response.status, response.content_type, raw)
                if response.content_type != "text/event-stream":
                    raise ProtocolError(
                        f"server {self.endpoint} answered GET {path} with "
                        f"{response.content_type or 'no type'}, not text/event-stream"
                    )
                async for chunk in response.chunks():
                    events = parser.feed(chunk)
                    if parser.retry is not None:
                        self.reconnect_hint = parser.retry / 1000
                    for sse in events:
                        if sse.event in EVENT_TYPES:
                            yield self._decode(sse)
        except (OSError, TimeoutError, http1.BadResponse) as exc:
            raise self._unavailable(exc, "GET", path) from None
        finally:
            if opened is not None:
                self._streams.discard(opened)
        raise Unavailable(f"server {self.endpoint} ended the watch stream")

    def _decode(self, sse: SSEEvent) -> WatchEvent:
        try:
            raw = json.loads(sse.data)
        except json.JSONDecodeError:
            raise ProtocolError(f"server {self.endpoint} sent a watch event that is not JSON") from None
        event = event_from_dict(raw)
        if event.type != sse.event:
            raise ProtocolError(
                f"server {self.endpoint} sent a {event.type!r} watch event named {sse.event!r}"
            )
        return event


def _list_of(answer: dict[str, Any], name: str, what: str, endpoint: str) -> Items:
    items = answer.get(name)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ProtocolError(f"server {endpoint}: answer to {what} lacks {name!r}, a list of objects")
    return items
