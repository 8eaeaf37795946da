"""Secret references inside config values: ``secrets: [{field_path, secret_ref}]``.

``field_path`` is a JSONPath in the dotted subset (``$.auth.api_key``,
``$.fallback[0].key``); ``secret_ref`` names a secret as ``namespace/key``
(optionally ``secret://namespace/key``). References are checked when a config
is written; on a resolved read the plaintext is injected at each path.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidInput
from shared.models import validate_key, validate_namespace

_TOKEN = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", re.ASCII)
MAX_REFS = 64


@dataclass(frozen=True, slots=True)
class SecretRef:
    field_path: str
    path: tuple[str | int, ...]
    namespace: str
    key: str

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.key}"


def parse_path(text: str) -> tuple[str | int, ...]:
    body = text[1:] if text.startswith("$") else "." + text
    tokens: list[str | int] = []
    pos = 0
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None:
            raise InvalidInput(
                f"secrets: field_path {text[:100]!r} is not a supported JSONPath; use $.a.b or $.list[0].c"
            )
        tokens.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if not tokens:
        raise InvalidInput("secrets: field_path must name a field, e.g. $.api_key")
    return tuple(tokens)


def parse_refs(value: dict[str, Any]) -> list[SecretRef]:
    """The references of a config value; ``InvalidInput`` naming what is wrong."""
    raw = value.get("secrets")
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_REFS:
        raise InvalidInput(
            f"'secrets' must be a list of at most {MAX_REFS} {{field_path, secret_ref}} objects"
        )
    refs = []
    for i, entry in enumerate(raw):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("field_path"), str)
            or not isinstance(entry.get("secret_ref"), str)
        ):
            raise InvalidInput(f"secrets[{i}] must be an object with string field_path and secret_ref")
        name = entry["secret_ref"].removeprefix("secret://")
        namespace, _, key = name.rpartition("/")
        try:
            validate_namespace(namespace)
            validate_key(key)
        except InvalidInput as exc:
            raise InvalidInput(f"secrets[{i}].secret_ref must be namespace/key: {exc.detail}") from None
        path = parse_path(entry["field_path"])
        if path[0] == "secrets":
            raise InvalidInput(f"secrets[{i}].field_path may not point into the secrets list itself")
        refs.append(SecretRef(entry["field_path"], path, namespace, key))
    return refs


def inject(value: dict[str, Any], plaintexts: list[tuple[SecretRef, str]]) -> dict[str, Any]:
    """A copy of ``value`` with each plaintext set at its path (creating objects on the way)."""
    out = copy.deepcopy(value)
    for ref, plaintext in plaintexts:
        node: Any = out
        for step, nxt in zip(ref.path, (*ref.path[1:], None), strict=True):
            if nxt is None:
                _set(node, step, plaintext, ref)
                break
            child = _get(node, step)
            if child is None:
                child = {} if isinstance(nxt, str) else []
                _set(node, step, child, ref)
            node = child
    return out


def _get(node: Any, step: str | int) -> Any:
    if isinstance(step, int):
        return node[step] if isinstance(node, list) and step < len(node) else None
    return node.get(step) if isinstance(node, dict) else None


def _set(node: Any, step: str | int, item: Any, ref: SecretRef) -> None:
    if isinstance(step, str) and isinstance(node, dict):
        node[step] = item
        return
    if isinstance(step, int) and isinstance(node, list) and step < len(node):
        node[step] = item
        return
    raise InvalidInput(f"secret {ref.name}: field_path {ref.field_path} does not fit the config's shape")
