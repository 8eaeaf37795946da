"""Governance commands: schema (put, get, list, bind, unbind, validate), audit, policy explain.

``schema validate`` works offline for the built-in schemas: it checks a file
with the very code the server runs (``server.service.schemas.violations_of``),
so a CI job can lint configs without a server or a token. Custom schemas are
fetched from the server and then checked the same way, locally.
"""

from __future__ import annotations

from typing import IO, Any

import click

from server.cli.context import App, pass_app, read_json_object, read_json_text
from server.cli.output import (
    EXIT_FAILED,
    fail,
    json_option,
    pretty,
    print_json,
    print_violations,
    short_time,
    table,
)
from shared.models import CLASSIFICATIONS


def _source(file: IO[str]) -> str:
    return "stdin" if file.name == "<stdin>" else str(file.name)


# -- schema --------------------------------------------------------------------------------


@click.group()
def schema() -> None:
    """Manage, bind and validate against JSON Schemas."""


@schema.command(name="put")
@click.argument("name")
@click.option("--file", "-f", "file", type=click.File("r", encoding="utf-8"), required=True, help="Schema.")
@json_option
@pass_app
def schema_put(app: App, name: str, file: IO[str], as_json: bool) -> None:
    """Create or replace the schema NAME from a JSON Schema file."""
    document = read_json_object(file.read(), _source(file))
    body = app.run(lambda c: c.put_schema(name, document))
    if as_json:
        print_json(body)
        return
    click.echo(f"saved schema {body.get('name')}")


@schema.command(name="get")
@click.argument("name")
@json_option
@pass_app
def schema_get(app: App, name: str, as_json: bool) -> None:
    """Show the schema NAME."""
    body = app.run(lambda c: c.get_schema(name))
    if as_json:
        print_json(body)
        return
    click.echo(pretty(body.get("schema")))


@schema.command(name="list")
@json_option
@pass_app
def schema_list(app: App, as_json: bool) -> None:
    """List the schemas (built-in and the tenant's own)."""
    body = app.run(lambda c: c.schemas())
    if as_json:
        print_json(body)
        return
    rows = [
        (s.get("name"), "built-in" if s.get("builtin") else "custom", s.get("schema", {}).get("title"))
        for s in body.get("schemas", [])
    ]
    table(["NAME", "KIND", "TITLE"], rows, empty="no schemas")


@schema.command(name="bindings")
@json_option
@pass_app
def schema_bindings(app: App, as_json: bool) -> None:
    """List which schemas are bound to which namespaces and keys."""
    body = app.run(lambda c: c.bindings())
    if as_json:
        print_json(body)
        return
    rows = [
        (b.get("id"), b.get("schema"), b.get("namespace"), b.get("key"), short_time(b.get("created_at")))
        for b in body.get("bindings", [])
    ]
    table(["ID", "SCHEMA", "NAMESPACE", "KEY", "CREATED"], rows, empty="no bindings")


@schema.command(name="bind")
@click.argument("name")
@click.option("--namespace", required=True, help="Namespace glob, e.g. 'llm-gateway/*'.")
@click.option("--key", default="*", show_default=True, help="Key glob.")
@json_option
@pass_app
def schema_bind(app: App, name: str, namespace: str, key: str, as_json: bool) -> None:
    """Validate every write to NAMESPACE/KEY (globs) against the schema NAME."""
    body = app.run(lambda c: c.bind_schema(name, namespace, key))
    if as_json:
        print_json(body)
        return
    click.echo(
        f"bound schema {body.get('schema')} to {body.get('namespace')} key {body.get('key')} "
        f"(binding {body.get('id')})"
    )


@schema.command(name="unbind")
@click.argument("binding_id")
@pass_app
def schema_unbind(app: App, binding_id: str) -> None:
    """Remove the binding BINDING_ID."""
    app.run(lambda c: c.unbind_schema(binding_id))
    click.echo(f"removed binding {binding_id}")


def _load_schema(app: App, name: str | None, schema_file: IO[str] | None) -> tuple[str, dict[str, Any]]:
    from server.service.builtin_schemas import BUILTIN_SCHEMAS

    if schema_file is not None:
        return _source(schema_file), read_json_object(schema_file.read(), _source(schema_file))
    assert name is not None
    if name in BUILTIN_SCHEMAS:
        return name, BUILTIN_SCHEMAS[name]
    body = app.run(lambda c: c.get_schema(name))
    document = body.get("schema")
    if not isinstance(document, dict):
        raise fail(f"server sent no schema document for {name!r}")
    return name, document


@schema.command(name="validate")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--schema", "name", help="Schema name: built-in ones are checked offline, others fetched.")
@click.option("--schema-file", type=click.File("r", encoding="utf-8"), help="A JSON Schema file (offline).")
@json_option
@pass_app
def schema_validate(
    app: App, file: IO[str], name: str | None, schema_file: IO[str] | None, as_json: bool
) -> None:
    """Check the JSON value in FILE against a schema; exit 1 listing every violation."""
    from server.service.schemas import violations_of

    if (name is None) == (schema_file is None):
        raise click.UsageError("give exactly one of --schema NAME or --schema-file F")
    value = read_json_text(file.read(), _source(file))
    label, document = _load_schema(app, name, schema_file)
    violations = violations_of(label, document, value)
    if as_json:
        print_json({"valid": not violations, "schema": label, "violations": violations})
    elif not violations:
        click.echo(f"{_source(file)} is valid against schema {label}")
    if violations:
        if not as_json:
            click.echo(
                f"error: {_source(file)} violates schema {label} in {len(violations)} place(s)", err=True
            )
            print_violations(violations)
        raise click.exceptions.Exit(EXIT_FAILED)


# -- audit ---------------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """Read and verify the tamper-evident audit log."""


@audit.command(name="list")
@click.option("--after", type=click.IntRange(min=0), help="Only records after sequence number SEQ.")
@click.option("--limit", type=click.IntRange(1, 1000), help="At most N records (server default 100).")
@click.option("--action", help="Only this action, e.g. config:put, auth, token:create.")
@click.option("--result", help="Only this result: ok, denied, unchanged.")
@click.option("--chain", help="Another tenant's id, or _system for failed logins (global-admin).")
@json_option
@pass_app
def audit_list(
    app: App,
    after: int | None,
    limit: int | None,
    action: str | None,
    result: str | None,
    chain: str | None,
    as_json: bool,
) -> None:
    """List audit records, oldest first."""
    body = app.run(lambda c: c.audit(chain=chain, after=after, limit=limit, action=action, result=result))
    if as_json:
        print_json(body)
        return
    rows = [
        (
            r.get("seq"),
            short_time(r.get("time")),
            r.get("actor"),
            r.get("action"),
            r.get("resource"),
            r.get("result"),
        )
        for r in body.get("records", [])
    ]
    table(["SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "RESULT"], rows, empty="no audit records")


@audit.command(name="verify")
@click.option("--chain", help="Another tenant's id, or _system for failed logins (global-admin).")
@json_option
@pass_app
def audit_verify(app: App, chain: str | None, as_json: bool) -> None:
    """Check the hash chain; exit 1 naming the first bad record when it is broken."""
    report = app.run(lambda c: c.audit_verify(chain=chain))
    if as_json:
        print_json(report)
    if report.get("ok"):
        if not as_json:
            click.echo(f"audit chain {report.get('chain')} ok: {report.get('checked')} records verified")
        return
    raise fail(
        f"audit chain {report.get('chain')} is broken at record {report.get('first_bad_seq')}: "
        f"{report.get('reason')} ({report.get('checked')} records before it verified)"
    )


# -- policy --------------------------------------------------------------------------------


@click.group()
def policy() -> None:
    """Ask the policy engine why something is allowed or denied."""


@policy.command(name="explain")
@click.option("--action", required=True, help="e.g. config:read, config:write, schema:write, token:manage.")
@click.option("--namespace", help="Namespace the action is on.")
@click.option("--env", "-e", help="Environment the action is in.")
@click.option("--classification", type=click.Choice(CLASSIFICATIONS), help="Classification of the config.")
@click.option("--token-id", help="Explain for another token of the tenant (tok_…; needs token:manage).")
@json_option
@pass_app
def policy_explain(
    app: App,
    action: str,
    namespace: str | None,
    env: str | None,
    classification: str | None,
    token_id: str | None,
    as_json: bool,
) -> None:
    """Say whether ACTION is allowed, and which rule decided it and why."""
    body = app.run(
        lambda c: c.explain(
            action, namespace=namespace, env=env, classification=classification, token_id=token_id
        )
    )
    if as_json:
        print_json(body)
        return
    who = body.get("principal", {})
    scope = "".join(
        f" {label} {value}"
        for label, value in (("on", namespace), ("in", env), ("classified", classification))
        if value
    )
    verdict = "allowed" if body.get("allowed") else "denied"
    click.echo(f"{verdict}: {action}{scope} for {who.get('name')} ({who.get('token_id')})")
    click.echo(f"rule: {body.get('rule')}")
    click.echo(f"reason: {body.get('reason')}")


COMMANDS = [schema, audit, policy]
