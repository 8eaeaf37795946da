"""An async REST client for the LLM-Config-Manager server, one method per endpoint.

The operator CLI talks to the server through this module, and the SDK's REST
transport (``shared.sdk.rest``) is built on it, so it knows nothing about terminals
or exit codes. It owns the HTTP edge: a problem+json answer becomes the project's
own exception via ``shared.errors.from_problem``, a connection failure becomes
``Unavailable`` naming the server URL (never the token), and anything that is
not JSON becomes ``ProtocolError``. No aiohttp exception leaves this module, also
not from a streamed body (``RestClient.stream``, used for Server-Sent Events).

    async with RestClient("http://127.0.0.1:8080", token) as client:
        entry = await client.get_config("llm-gateway/routing", "primary-model", env="production")

Namespaces and keys go into the URL path as they are; they are checked here
first with ``validate_namespace`` / ``validate_key`` so a bad name fails early
with the same message the server would give.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from shared.errors import InvalidInput, LLMConfigError, ProtocolError, Unavailable, from_problem
from shared.models import parse_environment, validate_key, validate_namespace

DEFAULT_TIMEOUT = 30.0
_USER_AGENT = "llm-config-manager-client/0.1"
_ERROR_BODY_MAX = 64 * 1024  # an error answer to a stream request is read up to this size


def check_server_url(raw: str) -> str:
    """``raw`` as a base URL without a trailing slash; ``InvalidInput`` unless http(s)://host[:port]."""
    try:
        url = URL(raw.strip())
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        shown = raw.rpartition("@")[2][:200]  # never echo credentials someone put in the URL
        raise InvalidInput(f"server URL must look like http://host:port or https://host, got {shown!r}")
    if url.user is not None or url.password is not None:
        raise InvalidInput("server URL must not carry credentials; pass the token separately")
    if url.query_string or url.fragment:
        raise InvalidInput("server URL must not carry a query string or fragment")
    return str(url).rstrip("/")


def _config_path(namespace: str, key: str, suffix: str = "") -> str:
    return f"/v1/configs/{validate_namespace(namespace)}/{validate_key(key)}{suffix}"


def _secret_path(namespace: str, key: str) -> str:
    return f"/v1/secrets/{validate_namespace(namespace)}/{validate_key(key)}"


def _env(env: str | None) -> dict[str, str]:
    return {} if env is None else {"env": parse_environment(env).value}


def _drop_none(params: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None or value is False:
            continue
        out[name] = "true" if value is True else str(value)
    return out


class RestClient:
    """One server, one bearer token, one aiohttp session; ``close()`` is safe twice."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = check_server_url(base_url)
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[aiohttp.ClientResponse] = set()  # open streams; close() ends them

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        # closing the session alone leaves a reader of a streamed body waiting forever
        for response in list(self._streams):
            response.close()
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self._session

    # -- the HTTP edge ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; the parsed JSON answer, None for 204, or the project's exception."""
        url = URL(self.base_url + path, encoded=True)
        query = _drop_none(params or {})
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._session_for_request().request(
                method, url, params=query or None, data=data, headers=hdrs
            ) as response:
                raw = await response.read()
                return self._answer(method, path, response.status, response.content_type, raw)
        except LLMConfigError:
            raise
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            raise self._unavailable(exc, method, path) from None

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        accept: str = "text/event-stream",
        read_timeout: float | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """GET ``path`` and yield its body as chunks, for as long as the server sends it.

        An error answer raises the project's exception before anything is yielded, exactly as
        ``request`` does; a 2xx answer of another type than ``accept`` is a ``ProtocolError``.
        ``read_timeout`` bounds the silence between two chunks (None: no bound); a silence
        longer than that, a reset or a truncated body raises ``Unavailable`` from the iterator.
        """
        url = URL(self.base_url + path, encoded=True)
        hdrs = {"Accept": accept, **(headers or {})}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total, sock_read=read_timeout)
        async with contextlib.AsyncExitStack() as stack:
            try:
                response = await stack.enter_async_context(
                    self._session_for_request().get(
                        url, params=list(query) or None, headers=hdrs, timeout=timeout
                    )
                )
                stack.callback(response.close)  # never hand a half-read stream back to the pool
                self._streams.add(response)
                stack.callback(self._streams.discard, response)
                if not 200 <= response.status < 300:
                    raw = await _read_bounded(response.content, _ERROR_BODY_MAX)
                    self._answer("GET", path, response.status, response.content_type, raw)
                if response.content_type != accept:
                    raise ProtocolError(
                        f"server {self.base_url} answered GET {path} with "
                        f"{response.content_type or 'no type'}, not {accept}"
                    )
            except LLMConfigError:
                raise
            except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
                raise self._unavailable(exc, "GET", path) from None
            # outside the try: what the caller raises while reading is the caller's, not ours
            yield self._chunks(response, path)

    async def _chunks(self, response: aiohttp.ClientResponse, path: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            raise self._unavailable(exc, "GET", path) from None

    def _unavailable(self, exc: BaseException, method: str, path: str) -> LLMConfigError:
        """A transport failure as ``Unavailable`` naming the server and the request, never the token.

        An untrusted certificate is no outage: retrying can't fix it, so it is a ``ProtocolError``.
        """
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return ProtocolError(
                f"server {self.base_url} presented a TLS certificate this client does not trust "
                f"({type(exc.certificate_error).__name__}); give its CA with SSL_CERT_FILE"
            )
        if isinstance(exc, TimeoutError):
            return Unavailable(f"server {self.base_url} did not answer {method} {path} in time")
        if isinstance(exc, aiohttp.ClientConnectorError):
            errno = exc.os_error.errno
            reason = os.strerror(errno).lower() if errno else type(exc.os_error).__name__
            return Unavailable(f"cannot reach server {self.base_url}: {reason}")
        return Unavailable(
            f"connection to server {self.base_url} failed during {method} {path}: {type(exc).__name__}"
        )

    def _answer(self, method: str, path: str, status: int, content_type: str, raw: bytes) -> Any:
        parsed: Any = None
        if raw and content_type in ("application/json", "application/problem+json"):
            try:
                parsed = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ProtocolError(
                    f"server {self.base_url} sent malformed JSON for {method} {path} (HTTP {status})"
                ) from None
        if 200 <= status < 300:
            if status == 204 or not raw:
                return None
            if parsed is None:
                raise ProtocolError(
                    f"server {self.base_url} answered {method} {path} with {content_type or 'no type'}, "
                    "not JSON; is this an LLM-Config-Manager server?"
                )
            return parsed
        if isinstance(parsed, dict):
            return_error = from_problem(parsed, status)
        else:
            text = raw[:200].decode("utf-8", "replace").strip()
            detail = f"HTTP {status} from {self.base_url} for {method} {path}" + (f": {text}" if text else "")
            return_error = from_problem({"detail": detail}, status)
        return_error.status = status
        raise return_error

    async def _obj(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        answer = await self.request(method, path, **kw)
        if not isinstance(answer, dict):
            raise ProtocolError(
                f"server {self.base_url} answered {method} {path} with something not an object"
            )
        return answer

    # -- secrets ---------------------------------------------------------------------------

    async def put_secret(
        self,
        namespace: str,
        key: str,
        value: str,
        *,
        env: str | None = None,
        message: str | None = None,
        grace_period: int | None = None,
        expires_in: int | None = None,
        rotation_interval: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"value": value}
        for name, given in (
            ("message", message),
            ("grace_period", grace_period),
            ("expires_in", expires_in),
            ("rotation_interval", rotation_interval),
        ):
            if given is not None:
                body[name] = given
        return await self._obj("PUT", _secret_path(namespace, key), params=_env(env), body=body)

    async def get_secret(
        self, namespace: str, key: str, *, env: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        return await self._obj("GET", _secret_path(namespace, key), params={**_env(env), "version": version})

    async def secret_versions(self, namespace: str, key: str, *, env: str | None = None) -> dict[str, Any]:
        return await self._obj("GET", _secret_path(namespace, key) + "/versions", params=_env(env))

    async def revoke_secret(
        self, namespace: str, key: str, *, env: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        body = {"version": version} if version is not None else None
        return await self._obj("POST", _secret_path(namespace, key) + "/revoke", params=_env(env), body=body)

    async def list_secrets(
        self, *, prefix: str | None = None, env: str | None = None, due: bool = False
    ) -> dict[str, Any]:
        return await self._obj("GET", "/v1/secrets", params={"prefix": prefix, **_env(env), "due": due})

    # -- changes ---------------------------------------------------------------------------

    async def changes(
        self, since: int, *, wait: str | None = None, prefix: str | None = None, env: str | None = None
    ) -> dict[str, Any]:
        """Long-poll: changes after ``since`` (the request may take up to ``wait``)."""
        return await self._obj(
            "GET", "/v1/changes", params={"since": since, "wait": wait, "prefix": prefix, **_env(env)}
        )

    # -- keys ------------------------------------------------------------------------------

    async def rotate_key(self, *, tenant_id: str | None = None) -> dict[str, Any]:
        return await self._obj("POST", "/v1/keys/rotate", params={"tenant_id": tenant_id})

    async def key_status(self, *, tenant_id: str | None = None) -> dict[str, Any]:
        return await self._obj("GET", "/v1/keys/status", params={"tenant_id": tenant_id})

    # -- identity --------------------------------------------------------------------------

    async def whoami(self) -> dict[str, Any]:
        return await self._obj("GET", "/v1/whoami")

    # -- configs ---------------------------------------------------------------------------

    async def get_config(
        self,
        namespace: str,
        key: str,
        *,
        env: str | None = None,
        version: int | None = None,
        resolve: bool = False,
        explain: bool = False,
    ) -> dict[str, Any]:
        params = {**_env(env), "version": version, "resolve": resolve, "explain": explain}
        return await self._obj("GET", _config_path(namespace, key), params=params)

    async def put_config(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        *,
        env: str | None = None,
        message: str | None = None,
        expected_version: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"value": value}
        if message:
            body["message"] = message
        if expected_version is not None:
            body["expected_version"] = expected_version
        if metadata is not None:
            body["metadata"] = metadata
        return await self._obj("PUT", _config_path(namespace, key), params=_env(env), body=body)

    async def delete_config(
        self,
        namespace: str,
        key: str,
        *,
        env: str | None = None,
        message: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        headers = {"If-Match": str(expected_version)} if expected_version is not None else None
        params = {**_env(env), "message": message or None}
        return await self._obj("DELETE", _config_path(namespace, key), params=params, headers=headers)

    async def list_configs(
        self, *, prefix: str | None = None, env: str | None = None, resolve: bool = False
    ) -> dict[str, Any]:
        return await self._obj(
            "GET", "/v1/configs", params={"prefix": prefix, **_env(env), "resolve": resolve}
        )

    async def history(
        self,
        namespace: str,
        key: str,
        *,
        env: str | None = None,
        limit: int | None = None,
        before: int | None = None,
    ) -> dict[str, Any]:
        params = {**_env(env), "limit": limit, "before": before}
        return await self._obj("GET", _config_path(namespace, key, "/history"), params=params)

    async def diff(
        self,
        namespace: str,
        key: str,
        *,
        env: str | None = None,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> dict[str, Any]:
        params = {**_env(env), "from": from_version, "to": to_version}
        return await self._obj("GET", _config_path(namespace, key, "/diff"), params=params)

    async def rollback(
        self,
        namespace: str,
        key: str,
        version: int,
        *,
        env: str | None = None,
        message: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"version": version}
        if message:
            body["message"] = message
        if expected_version is not None:
            body["expected_version"] = expected_version
        path = _config_path(namespace, key, "/rollback")
        return await self._obj("POST", path, params=_env(env), body=body)

    # -- tenants, tokens, settings ---------------------------------------------------------

    async def tenants(self) -> dict[str, Any]:
        return await self._obj("GET", "/v1/tenants")

    async def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        return await self._obj("GET", f"/v1/tenants/{_segment(tenant_id, 'tenant id')}")

    async def create_tenant(self, name: str, *, admin_token: bool = False) -> dict[str, Any]:
        return await self._obj("POST", "/v1/tenants", body={"name": name, "admin_token": admin_token})

    async def tokens(self, *, tenant_id: str | None = None) -> dict[str, Any]:
        return await self._obj("GET", "/v1/tokens", params={"tenant_id": tenant_id})

    async def create_token(
        self,
        name: str,
        roles: list[str],
        *,
        namespaces: list[str] | None = None,
        expires_in: int | None = None,
        tenant_id: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "roles": roles}
        if namespaces:
            body["namespaces"] = namespaces
        if expires_in is not None:
            body["expires_in"] = expires_in
        if tenant_id is not None:
            body["tenant_id"] = tenant_id
        return await self._obj("POST", "/v1/tokens", body=body)

    async def revoke_token(self, token_id: str, *, tenant_id: str | None = None) -> dict[str, Any]:
        path = f"/v1/tokens/{_segment(token_id, 'token id')}"
        return await self._obj("DELETE", path, params={"tenant_id": tenant_id})

    async def settings(self) -> dict[str, Any]:
        return await self._obj("GET", "/v1/settings")

    async def put_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return await self._obj("PUT", "/v1/settings", body=settings)

    # -- schemas ---------------------------------------------------------------------------

    async def schemas(self) -> dict[str, Any]:
        return await self._obj("GET", "/v1/schemas")

    async def get_schema(self, name: str) -> dict[str, Any]:
        return await self._obj("GET", f"/v1/schemas/{_segment(name, 'schema name')}")

    async def put_schema(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return await self._obj("PUT", f"/v1/schemas/{_segment(name, 'schema name')}", body={"schema": schema})

    async def bindings(self) -> dict[str, Any]:
        return await self._obj("GET", "/v1/schema-bindings")

    async def bind_schema(self, schema: str, namespace: str, key: str = "*") -> dict[str, Any]:
        body = {"schema": schema, "namespace": namespace, "key": key}
        return await self._obj("POST", "/v1/schema-bindings", body=body)

    async def unbind_schema(self, binding_id: str) -> None:
        await self.request("DELETE", f"/v1/schema-bindings/{_segment(binding_id, 'binding id')}")

    # -- audit and policy ------------------------------------------------------------------

    async def audit(
        self,
        *,
        chain: str | None = None,
        after: int | None = None,
        limit: int | None = None,
        action: str | None = None,
        result: str | None = None,
    ) -> dict[str, Any]:
        params = {"chain": chain, "after": after, "limit": limit, "action": action, "result": result}
        return await self._obj("GET", "/v1/audit", params=params)

    async def audit_verify(self, *, chain: str | None = None) -> dict[str, Any]:
        return await self._obj("GET", "/v1/audit/verify", params={"chain": chain})

    async def explain(
        self,
        action: str,
        *,
        namespace: str | None = None,
        env: str | None = None,
        classification: str | None = None,
        token_id: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action}
        if namespace is not None:
            body["namespace"] = validate_namespace(namespace)
        if env is not None:
            body["environment"] = parse_environment(env).value
        if classification is not None:
            body["classification"] = classification
        if token_id is not None:
            body["token_id"] = token_id
        return await self._obj("POST", "/v1/policy/explain", body=body)


async def _read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to ``limit`` bytes (an error answer; its end may never come on a broken server)."""
    raw = bytearray()
    while len(raw) < limit:
        chunk = await content.read(limit - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _segment(value: str, what: str) -> str:
    """An id or name that goes into one URL path segment: plain characters only."""
    if not value or len(value) > 200 or not set(value) <= _SEGMENT_CHARS or value in (".", ".."):
        raise InvalidInput(f"invalid {what} {value[:80]!r}: use letters, digits, '-', '_' and '.'")
    return value
