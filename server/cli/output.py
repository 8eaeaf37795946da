"""How the CLI speaks: aligned plain-text tables, JSON, one-line errors and exit codes.

Scripts rely on two things here. ``--json`` prints the server's answer as it
came, and the exit code says what kind of failure happened (``EXIT_CODES``,
also shown in ``llm-config --help``). Humans get compact tables and
pretty-printed values. Errors go to stderr as one line, ``error: <detail>``;
a schema violation adds one line per violation. Never a traceback, never a token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

from shared.errors import (
    AlreadyExists,
    Conflict,
    LLMConfigError,
    NotFound,
    PermissionDenied,
    SchemaViolation,
    Unauthenticated,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_AUTH = 5
EXIT_UNAVAILABLE = 6

EXIT_CODES_HELP = """\b
Exit codes:
  0  ok
  1  failure: invalid input, schema violation, audit chain broken, validation failed
  2  usage error (bad flags or arguments)
  3  not found (HTTP 404)
  4  conflict: version mismatch or already exists (HTTP 409)
  5  authentication or permission (HTTP 401/403)
  6  server unreachable or server error (HTTP 5xx)

\b
Server and token: 'llm-config login', or LLMCM_SERVER and LLMCM_TOKEN (these win).
"""

_CELL_MAX = 60


def exit_code_for(error: LLMConfigError) -> int:
    """The documented exit code for an error raised by the client or the CLI."""
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, Conflict | AlreadyExists):
        return EXIT_CONFLICT
    if isinstance(error, Unauthenticated | PermissionDenied):
        return EXIT_AUTH
    if error.status >= 500:
        return EXIT_UNAVAILABLE
    return {404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT, 401: EXIT_AUTH, 403: EXIT_AUTH}.get(
        error.status, EXIT_FAILED
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def report_error(error: LLMConfigError) -> None:
    """``error: <detail>`` on stderr, then one line per schema violation."""
    rule = error.extra.get("rule") if isinstance(error, PermissionDenied) else None
    suffix = f" (rule {rule})" if isinstance(rule, str) and rule not in error.detail else ""
    click.echo(f"error: {_one_line(error.detail)}{suffix}", err=True)
    if isinstance(error, SchemaViolation):
        print_violations(error.violations)


def print_violations(violations: Iterable[dict[str, Any]]) -> None:
    for violation in violations:
        where = str(violation.get("pointer") or "(root)")  # "" is the whole document (RFC 6901)
        schema = violation.get("schema")
        envs = violation.get("environments")
        suffix = f" (schema {schema})" if schema else ""
        if isinstance(envs, list) and envs:
            suffix += f" [resolved in {', '.join(map(str, envs))}]"
        click.echo(f"  {where}: {_one_line(str(violation.get('message', '')))}{suffix}", err=True)


def fail(message: str, code: int = EXIT_FAILED) -> click.exceptions.Exit:
    """Print ``error: message`` and return the Exit to raise (``raise fail(...)``)."""
    click.echo(f"error: {_one_line(message)}", err=True)
    return click.exceptions.Exit(code)


def json_option(func: F) -> F:
    """The ``--json`` flag every command carries: print the server's answer as JSON."""
    return click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")(func)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cell(value: Any) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value) or "-"
    else:
        text = _one_line(str(value)) or "-"
    return text if len(text) <= _CELL_MAX else text[: _CELL_MAX - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "(none)") -> None:
    """Print rows as columns aligned with two spaces; ``empty`` when there are none."""
    cells = [[_cell(v) for v in row] for row in rows]
    if not cells:
        click.echo(empty)
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def short_time(iso: str | None) -> str:
    """``2024-05-01T12:00:00.123456Z`` as ``2024-05-01 12:00:00Z``."""
    if not iso:
        return "-"
    date, _, rest = iso.partition("T")
    return f"{date} {rest[:8]}Z" if rest else date


def entry_name(body: dict[str, Any]) -> str:
    return f"{body.get('namespace')}/{body.get('key')}"
