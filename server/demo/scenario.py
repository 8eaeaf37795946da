"""What the demo stores: a realistic LLM gateway configuration and the changes it walks through.

Namespace ``llm-gateway`` holds three configs, each with its built-in schema where one exists:

- ``primary-model`` (model-endpoint schema, global): Anthropic's model with a fallback chain
  to OpenAI and Bedrock; its ``api_key`` comes from the secret ``api-keys/anthropic`` through
  a ``secrets: [{field_path, secret_ref}]`` reference, injected only on resolved reads.
- ``support-prompt`` (prompt-template schema, global): the support assistant's prompt.
- ``routing`` (global) with a ``production`` override that raises the rate limit and
  tightens the timeout; the agent resolves for production, so the app sees the merge.

The steps then change the primary model, roll it back, rotate the key, and write an
endpoint whose fallback chain loops back to the primary model: valid for the schema,
refused by the demo's check (``server/demo/check.py``).
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

NAMESPACE = "llm-gateway"
ENDPOINT_KEY = "primary-model"
PROMPT_KEY = "support-prompt"
ROUTING_KEY = "routing"
SECRET_NAMESPACE = "api-keys"
SECRET_KEY = "anthropic"
SECRET_REF = f"{SECRET_NAMESPACE}/{SECRET_KEY}"
ENVIRONMENT = "production"
AGENT_ID = "demo-agent"

PRIMARY_MODEL = "claude-sonnet-4-5"
NEW_MODEL = "claude-opus-4-1"

SCHEMA_BINDINGS = (("model-endpoint", ENDPOINT_KEY), ("prompt-template", PROMPT_KEY))

_ENDPOINT: dict[str, Any] = {
    "provider": "anthropic",
    "model": PRIMARY_MODEL,
    "endpoint": "https://api.anthropic.com/v1/messages",
    "max_tokens": 4096,
    "temperature": 0.2,
    "timeout_seconds": 30,
    "max_retries": 2,
    "rate_limit": {"requests_per_minute": 600, "tokens_per_minute": 400000},
    "fallback": [
        {"provider": "openai", "model": "gpt-4o"},
        {"provider": "bedrock", "model": "anthropic.claude-3-5-sonnet"},
    ],
    "api_key": "",
    "secrets": [{"field_path": "$.api_key", "secret_ref": SECRET_REF}],
}

PROMPT: dict[str, Any] = {
    "system": "You are the support assistant of {product}. Be brief and accurate.",
    "template": "Customer question: {question}\nAnswer for {product}, citing the help centre where you can.",
    "variables": ["product", "question"],
    "max_tokens": 1024,
    "temperature": 0.3,
    "tags": ["support", "v1"],
}

ROUTING: dict[str, Any] = {
    "strategy": "primary-then-fallback",
    "max_fallback_attempts": 2,
    "request_timeout_ms": 30000,
    "retry": {"backoff_ms": 200, "max_backoff_ms": 5000},
    "rate_limit": {"requests_per_minute": 600},
}

ROUTING_PRODUCTION: dict[str, Any] = {
    "request_timeout_ms": 20000,
    "rate_limit": {"requests_per_minute": 3000},
}


def endpoint(model: str = PRIMARY_MODEL) -> dict[str, Any]:
    """The endpoint config with ``model`` as its primary model."""
    value = copy.deepcopy(_ENDPOINT)
    value["model"] = model
    return value


def looping_endpoint() -> dict[str, Any]:
    """A schema-valid endpoint whose fallback chain starts with its own primary model."""
    value = endpoint()
    value["fallback"] = [
        {"provider": "anthropic", "model": PRIMARY_MODEL},
        {"provider": "openai", "model": "gpt-4o"},
    ]
    return value


def new_api_key() -> str:
    """A made-up provider key, unique per run (the demo never calls a provider)."""
    return f"sk-ant-demo-{secrets.token_hex(16)}"


def fallback_chain(value: dict[str, Any]) -> str:
    return " -> ".join(f"{f['provider']}/{f['model']}" for f in value.get("fallback", []))
