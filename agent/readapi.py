"""The edge mode's local read API, served beside /health and /metrics (default 127.0.0.1:8081).

    GET /v1/configs                        the entries served: namespace, key, revision
    GET /v1/configs/<namespace>/<key>      one resolved value, as applied to the files

Answers come from the set the agent applied last (from the server, or from the cache
while the server is unreachable), never from a request to the server, so an app on an
edge node can read its configuration offline. Values may hold injected secrets: answers
are ``Cache-Control: no-store``, and the listener stays on loopback unless configured
otherwise. Errors are problem+json.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.health import Route
from agent.http1 import Reply
from agent.state import ConfigState
from shared.errors import InvalidInput, LLMConfigError, NotFound, Unavailable
from shared.models import validate_key, validate_namespace

NO_STORE = {"Cache-Control": "no-store"}
PREFIX = "/v1/configs/"


def _problem(exc: LLMConfigError) -> Reply:
    return Reply.json(exc.to_problem(), exc.status, content_type="application/problem+json", headers=NO_STORE)


def read_routes(current: Callable[[], ConfigState | None], environment: str) -> list[Route]:
    """Routes answering from ``current()``, the applied state (None before the first apply)."""

    def applied() -> ConfigState:
        state = current()
        if state is None:
            raise Unavailable("no configuration applied yet (server unreachable and no usable cache)")
        return state

    async def list_configs(path: str, query: Mapping[str, str]) -> Reply:
        try:
            state = applied()
        except LLMConfigError as exc:
            return _problem(exc)
        items = [
            {"namespace": namespace, "key": key, "revision": entry.revision}
            for (namespace, key), entry in sorted(state.entries.items())
        ]
        body = {"environment": environment, "revision": state.revision, "items": items}
        return Reply.json(body, headers=NO_STORE)

    async def get_config(path: str, query: Mapping[str, str]) -> Reply:
        namespace, _, key = path.removeprefix(PREFIX).rpartition("/")
        try:
            validate_namespace(namespace)
            validate_key(key)
        except InvalidInput as exc:
            return _problem(InvalidInput(f"path must be /v1/configs/<namespace>/<key>: {exc.detail}"))
        try:
            entry = applied().entries.get((namespace, key))
            if entry is None:
                raise NotFound(f"config {namespace}/{key} is not among the configs this agent serves")
        except LLMConfigError as exc:
            return _problem(exc)
        body: dict[str, Any] = {
            "namespace": namespace,
            "key": key,
            "environment": environment,
            "revision": entry.revision,
            "value": entry.value,
        }
        return Reply.json(body, headers=NO_STORE)

    return [Route("/v1/configs", list_configs), Route(PREFIX, get_config)]
