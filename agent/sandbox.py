"""The Jinja2 sandbox templates render in (imported only when a template is configured).

``jinja2.sandbox.ImmutableSandboxedEnvironment`` with ``StrictUndefined``: no loader
(``include``/``import``/``extends`` fail), no globals (no ``range``, ``cycler``, ``lipsum``,
``namespace``, no env vars), only an allow-list of pure filters plus ``tojson`` and
``toyaml``, no access to ``_``-prefixed attributes, no mutation of the values it is given.
``*`` and ``**`` are bounded so a template cannot build a huge string or number.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_REPEAT = 1 << 20  # longest string or list that '*' may build in a template
MAX_EXPONENT = 1000

# Pure filters only: no attr/format (attribute and format-string access), no random (output
# must be reproducible), no pprint/urlize/xmlattr/safe/escape (nothing to escape for).
_FILTERS = (
    "abs", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "filesizeformat",
    "first", "float", "groupby", "indent", "int", "items", "join", "last", "length", "list", "lower",
    "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "select", "selectattr",
    "slice", "sort", "string", "striptags", "sum", "title", "trim", "truncate", "unique", "upper",
    "urlencode", "wordcount", "wordwrap",
)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=indent)


def _toyaml(value: Any) -> str:
    import yaml

    text: str = yaml.safe_dump(value, sort_keys=True, allow_unicode=True, default_flow_style=False)
    return text


class Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise jinja2.exceptions.SecurityError(f"exponent above {MAX_EXPONENT} is not allowed")
            return left**right
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                if len(seq) * times > MAX_REPEAT:
                    raise jinja2.exceptions.SecurityError(f"'*' would build more than {MAX_REPEAT} items")
        return left * right


def _environment() -> Sandbox:
    env = Sandbox(
        loader=None,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in _FILTERS}
    env.filters["tojson"] = _tojson
    env.filters["toyaml"] = _toyaml
    return env


ENV = _environment()


def compile_template(source: str, output: str, filename: str) -> jinja2.Template:
    """The compiled template; ``jinja2.TemplateSyntaxError`` on a syntax error."""
    code = ENV.compile(source, name=output, filename=filename)
    return ENV.template_class.from_code(ENV, code, ENV.make_globals(None))


def describe_kind(exc: BaseException) -> str:
    """How a render error is named in messages."""
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return "not allowed in the sandbox"
    if isinstance(exc, jinja2.UndefinedError):
        return "undefined"
    if isinstance(exc, jinja2.TemplateError):
        return "template error"
    return type(exc).__name__
