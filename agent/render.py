"""Render resolved config values into file bytes: JSON, YAML, dotenv, or a sandboxed Jinja2 template.

Formats are chosen per namespace; each entry becomes ``<namespace>/<key><suffix>``:

    json    canonical JSON (sorted keys, no spaces), newline-terminated      .json  (default)
    yaml    block-style YAML with sorted keys (PyYAML's safe dumper)          .yaml
    dotenv  KEY=value lines; nested keys joined by '_' and upper-cased,       .env
            values quoted for POSIX sh (``set -a; . ./file.env``)

A template (e.g. an nginx.conf) is compiled once from its text and rendered in
the sandbox of ``agent.sandbox`` (``jinja2.sandbox.ImmutableSandboxedEnvironment``
with ``StrictUndefined``: no loader, no globals, no env vars, an allow-list of pure
filters, bounded ``*`` and ``**``); the output is capped while it streams. Jinja2 and
PyYAML are imported only when a template or a YAML namespace needs them, so an agent
writing JSON does not pay their memory.

Error messages name the template and line; a message that would quote something
not written in the template itself (a value, perhaps a secret) is withheld.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from agent.errors import RenderError
from agent.fileset import FileSpec, check_relpath
from shared.errors import InvalidInput
from shared.models import canonical_json

if TYPE_CHECKING:
    import jinja2

MAX_OUTPUT_BYTES = 16 << 20


class Format(StrEnum):
    JSON = "json"
    YAML = "yaml"
    DOTENV = "dotenv"


SUFFIXES: dict[Format, str] = {Format.JSON: ".json", Format.YAML: ".yaml", Format.DOTENV: ".env"}


def parse_format(raw: str) -> Format:
    try:
        return Format(raw.strip().lower())
    except ValueError:
        raise InvalidInput(
            f"unknown output format {raw[:40]!r}; use one of {', '.join(f.value for f in Format)}"
        ) from None


def render_value(value: Any, fmt: Format) -> bytes:
    """The bytes of one config value in ``fmt``."""
    if fmt is Format.JSON:
        return canonical_json(value) + b"\n"
    if fmt is Format.YAML:
        import yaml  # only for namespaces written as YAML

        return yaml.safe_dump(value, sort_keys=True, allow_unicode=True, default_flow_style=False).encode()
    return render_dotenv(value)


def render_entry(
    namespace: str, key: str, value: Any, fmt: Format = Format.JSON, *, secret: bool = False
) -> FileSpec:
    """The file of one entry: ``<namespace>/<key><suffix>`` (names validated by FileSpec)."""
    try:
        content = render_value(value, fmt)
    except RenderError as exc:
        raise RenderError(f"{namespace}/{key}: {exc.detail}") from None
    return FileSpec.for_entry(namespace, key, SUFFIXES[fmt], content, secret=secret)


# ---- dotenv

_ENV_SAFE = re.compile(r"[A-Za-z0-9_./:@%+,=-]+", re.ASCII)
_ENV_NAME_BAD = re.compile(r"[^A-Z0-9_]", re.ASCII)


def render_dotenv(value: Any) -> bytes:
    if not isinstance(value, dict):
        raise RenderError("dotenv output needs a JSON object at the top level")
    flat: dict[str, str] = {}
    sources: dict[str, str] = {}
    _flatten(value, "", "", flat, sources)
    lines = [f"{name}={_quote(text)}\n" for name, text in sorted(flat.items())]
    return "".join(lines).encode()


def _env_name(key: str) -> str:
    name = _ENV_NAME_BAD.sub("_", key.upper())
    return "_" + name if not name or name[0].isdigit() else name


def _flatten(value: Any, prefix: str, path: str, flat: dict[str, str], sources: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            name = _env_name(str(key))
            _flatten(item, f"{prefix}_{name}" if prefix else name, f"{path}/{key}", flat, sources)
        return
    if isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}_{index}", f"{path}/{index}", flat, sources)
        return
    if prefix in flat:
        raise RenderError(f"dotenv variable {prefix} comes from both {sources[prefix]!r} and {path!r}")
    flat[prefix] = _scalar_text(value)
    sources[prefix] = path


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        if "\x00" in value:
            raise RenderError("dotenv values cannot hold a NUL character")
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return json.dumps(value)  # numbers, and empty objects and lists as {} and []


def _quote(text: str) -> str:
    """POSIX sh quoting: safe tokens bare, everything else in single quotes (' as '\\'')."""
    if _ENV_SAFE.fullmatch(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


# ---- templates (jinja2 is imported only when a template is configured: agent.sandbox)

_QUOTED = re.compile(r"'([^']*)'")
# how Jinja and Python name a type in a message: 'str' object, 'dict object'
_TYPE_MENTION = re.compile(r"'[A-Za-z_][A-Za-z0-9_]{0,60}(?:' object| object')", re.ASCII)
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "tuple", "NoneType", "Undefined"})


class Template:
    """A template compiled once; ``render`` gives the file it produces for a context."""

    def __init__(self, output: str, source: str) -> None:
        try:
            check_relpath(output)
        except InvalidInput as exc:
            raise InvalidInput(f"template output name: {exc.detail}") from None
        self.output = output
        self._source = source
        self._filename = f"<template {output}>"
        import jinja2

        from agent.sandbox import compile_template

        try:
            self._template: jinja2.Template = compile_template(source, output, self._filename)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(
                f"template {output} line {exc.lineno}: syntax error: {self._safe(exc.message or '')}"
            ) from None

    def render(self, context: Mapping[str, Any], *, secret: bool = False) -> FileSpec:
        """Render with only ``context`` visible; ``RenderError`` naming the line on any failure."""
        chunks: list[str] = []
        size = 0
        try:
            for chunk in self._template.generate(dict(context)):
                size += len(chunk)
                if size > MAX_OUTPUT_BYTES:
                    raise RenderError(
                        f"template {self.output}: output is larger than {MAX_OUTPUT_BYTES} bytes"
                    )
                chunks.append(chunk)
        except RenderError:
            raise
        except Exception as exc:  # anything a template can raise, reported without values
            raise RenderError(self._describe(exc)) from None
        return FileSpec(self.output, "".join(chunks).encode(), secret=secret)

    def _describe(self, exc: BaseException) -> str:
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self._filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        from agent.sandbox import describe_kind

        where = f"template {self.output}" + (f" line {line}" if line else "")
        return f"{where}: {describe_kind(exc)}: {self._safe(str(exc))}"

    def _safe(self, message: str) -> str:
        """``message`` if everything it quotes is in the template text or names a type; else withheld."""
        for fragment in _QUOTED.findall(_TYPE_MENTION.sub("", message)):
            if fragment in _TYPE_NAMES or fragment in self._source:
                continue
            return "(details withheld: the message would quote a value)"
        if len(message) > 300:
            return message[:300] + "…"
        return message
