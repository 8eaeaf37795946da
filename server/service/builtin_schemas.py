"""The JSON Schemas every tenant has: model endpoints and prompt templates."""

from __future__ import annotations

from typing import Any

MODEL_ENDPOINT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://llm-config-manager.dev/schemas/model-endpoint.json",
    "title": "Model endpoint",
    "description": "An LLM provider endpoint with its limits and fallback chain.",
    "type": "object",
    "required": ["provider", "model"],
    "properties": {
        "provider": {
            "type": "string",
            "enum": [
                "openai",
                "anthropic",
                "azure-openai",
                "bedrock",
                "vertex",
                "mistral",
                "cohere",
                "ollama",
                "vllm",
                "custom",
            ],
        },
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "endpoint": {"type": "string", "pattern": "^https?://"},
        "api_version": {"type": "string"},
        "region": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 2000000},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        "max_retries": {"type": "integer", "minimum": 0, "maximum": 20},
        "rate_limit": {
            "type": "object",
            "properties": {
                "requests_per_minute": {"type": "integer", "minimum": 1},
                "tokens_per_minute": {"type": "integer", "minimum": 1},
            },
            "additionalProperties": False,
        },
        "fallback": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["provider", "model"],
                "properties": {
                    "provider": {"type": "string"},
                    "model": {"type": "string", "minLength": 1},
                    "endpoint": {"type": "string", "pattern": "^https?://"},
                },
            },
        },
        "secrets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field_path", "secret_ref"],
                "properties": {
                    "field_path": {"type": "string", "minLength": 1},
                    "secret_ref": {"type": "string", "minLength": 1},
                },
                "additionalProperties": False,
            },
        },
    },
}

PROMPT_TEMPLATE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://llm-config-manager.dev/schemas/prompt-template.json",
    "title": "Prompt template",
    "description": "A versioned prompt with its declared variables.",
    "type": "object",
    "required": ["template"],
    "properties": {
        "template": {"type": "string", "minLength": 1, "maxLength": 200000},
        "system": {"type": "string"},
        "variables": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "uniqueItems": True,
        },
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}

BUILTIN_SCHEMAS: dict[str, dict[str, Any]] = {
    "model-endpoint": MODEL_ENDPOINT,
    "prompt-template": PROMPT_TEMPLATE,
}
