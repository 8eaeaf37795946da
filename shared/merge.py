"""Deep merge of an environment chain, with the provenance of every leaf.

Objects merge key by key; anything else (lists, scalars, null) replaces what
the lower layer had. Provenance maps the JSON Pointer (RFC 6901) of every leaf
of the result to the environment that supplied it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

Prov = dict[str, Any]  # nested like the value; leaves are environment names


def _leaf_prov(value: Any, source: str) -> Any:
    if isinstance(value, dict):
        return {k: _leaf_prov(v, source) for k, v in value.items()}
    return source


def _merge_into(base: dict[str, Any], prov: Prov, over: dict[str, Any], source: str) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge_into(base[k], prov[k], v, source)
        else:
            base[k] = copy.deepcopy(v)
            prov[k] = _leaf_prov(v, source)


def pointer_escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _flatten(prov: Prov, prefix: str, out: dict[str, str]) -> None:
    for k, v in prov.items():
        path = f"{prefix}/{pointer_escape(k)}"
        if isinstance(v, dict):
            _flatten(v, path, out)
        else:
            out[path] = v


def deep_merge(layers: Iterable[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge ``(source, value)`` layers lowest priority first; return (value, provenance)."""
    merged: dict[str, Any] = {}
    prov: Prov = {}
    for source, value in layers:
        _merge_into(merged, prov, value, source)
    flat: dict[str, str] = {}
    _flatten(prov, "", flat)
    return merged, flat
