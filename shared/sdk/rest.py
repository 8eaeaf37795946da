"""The REST + Server-Sent Events transport (``http://`` and ``https://`` endpoints).

Unary calls go through ``shared.client.RestClient``, so the SDK and the CLI share one HTTP
edge and one mapping of problem+json answers onto ``shared.errors``. A watch is one
``GET /v1/watch`` whose body is parsed by ``shared.sdk.sse`` and decoded into
``shared.sdk.events``; a reconnecting watch sends ``Last-Event-ID`` (the last revision it
got), as a browser's EventSource would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from shared.client import RestClient
from shared.errors import ProtocolError, Unavailable
from shared.sdk.events import EVENT_TYPES, WatchEvent, event_from_dict
from shared.sdk.sse import SSEEvent, SSEParser
from shared.sdk.transport import Items, WatchRequest, idle_timeout, watch_query


class RestTransport:
    """``Transport`` over one ``RestClient`` (one aiohttp session, one token)."""

    def __init__(self, endpoint: str, token: str, *, timeout: float) -> None:
        self._client = RestClient(endpoint, token, timeout=timeout)
        self.endpoint = self._client.base_url
        self.reconnect_hint: float | None = None  # the server's ``retry:``, in seconds

    async def close(self) -> None:
        await self._client.close()

    async def whoami(self) -> dict[str, Any]:
        return await self._client.whoami()

    async def get(self, namespace: str, key: str, environment: str) -> dict[str, Any]:
        return await self._client.get_config(namespace, key, env=environment, resolve=True)

    async def get_secret(self, namespace: str, key: str, environment: str | None) -> dict[str, Any]:
        return await self._client.get_secret(namespace, key, env=environment)

    async def list(self, prefix: str | None, environment: str, resolve: bool) -> Items:
        answer = await self._client.list_configs(prefix=prefix, env=environment, resolve=resolve)
        return _list_of(answer, "items", "GET /v1/configs")

    async def put(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]:
        return await self._client.put_config(
            namespace, key, value, env=environment, message=message, expected_version=expected_version
        )

    async def delete(
        self, namespace: str, key: str, environment: str, message: str | None, expected_version: int | None
    ) -> dict[str, Any]:
        return await self._client.delete_config(
            namespace, key, env=environment, message=message, expected_version=expected_version
        )

    async def history(self, namespace: str, key: str, environment: str, limit: int | None) -> Items:
        answer = await self._client.history(namespace, key, env=environment, limit=limit)
        return _list_of(answer, "versions", "GET history")

    async def rollback(
        self,
        namespace: str,
        key: str,
        version: int,
        environment: str,
        message: str | None,
        expected_version: int | None,
    ) -> dict[str, Any]:
        return await self._client.rollback(
            namespace, key, version, env=environment, message=message, expected_version=expected_version
        )

    async def report_status(self, report: dict[str, Any]) -> dict[str, Any]:
        answer = await self._client.request("POST", "/v1/agents/status", body=report)
        if not isinstance(answer, dict):
            raise ProtocolError(f"server {self.endpoint} answered POST /v1/agents/status with no object")
        return answer

    async def watch(self, request: WatchRequest) -> AsyncGenerator[WatchEvent, None]:
        """One SSE connection: its events until it ends, then ``Unavailable`` (retriable)."""
        headers = {} if request.resume_after is None else {"Last-Event-ID": str(request.resume_after)}
        parser = SSEParser()
        async with self._client.stream(
            "/v1/watch",
            query=watch_query(request),
            headers=headers,
            read_timeout=idle_timeout(request.progress_interval),
        ) as chunks:
            async for chunk in chunks:
                events = parser.feed(chunk)
                if parser.retry is not None:
                    self.reconnect_hint = parser.retry / 1000
                for sse in events:
                    if sse.event in EVENT_TYPES:
                        yield self._decode(sse)
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


def _list_of(answer: dict[str, Any], field: str, what: str) -> Items:
    items = answer.get(field)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ProtocolError(f"answer to {what} lacks {field!r}, a list of objects")
    return items
