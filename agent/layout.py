"""The files a state becomes: one file per entry in its namespace's format, plus the templates.

    <namespace>/<key>.json|.yaml|.env    render.render_entry, 0600 when the value holds secrets
    <template output>                    each template rendered with the context below

A template sees ``configs`` (``configs[namespace][key]`` is the resolved value; every
configured namespace is present, empty when it has no entries), ``environment``, and
``revision``: the newest revision among the entries. That number depends only on the
entries, so a progress mark from the server never changes a template's output (and
never causes a rewrite or a reload). A template's file is 0600 whenever any entry
holds secrets, since a template may copy any value.
"""

from __future__ import annotations

from typing import Any

from agent.config import AgentConfig
from agent.fileset import FileSpec
from agent.render import render_entry
from agent.state import ConfigState


def template_context(cfg: AgentConfig, state: ConfigState) -> dict[str, Any]:
    configs: dict[str, dict[str, Any]] = {namespace: {} for namespace in cfg.namespaces}
    for (namespace, key), entry in sorted(state.entries.items()):
        configs.setdefault(namespace, {})[key] = entry.value
    return {
        "configs": configs,
        "environment": cfg.environment.value,
        "revision": state.max_entry_revision,
    }


def build_files(cfg: AgentConfig, state: ConfigState) -> list[FileSpec]:
    """The whole set for ``state``; ``RenderError`` / ``InvalidInput`` name the entry or template."""
    specs = [
        render_entry(namespace, key, entry.value, cfg.format_for(namespace), secret=entry.secret)
        for (namespace, key), entry in sorted(state.entries.items())
    ]
    if cfg.templates:
        context = template_context(cfg, state)
        secret = any(entry.secret for entry in state.entries.values())
        specs.extend(template.render(context, secret=secret) for template in cfg.templates)
    return specs
