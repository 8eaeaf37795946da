"""The config commands: get, resolve, set, list, history, diff, rollback, delete.

Each command validates its names, asks the server through ``RestClient`` and
prints either the raw answer (``--json``) or a short human rendering. The seed's
usage works as written, e.g. ``llm-config get llm-gateway/routing primary-model --env production``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import IO, Any

import click

from server.cli.context import App, pass_app, read_json_object
from server.cli.output import (
    compact,
    entry_name,
    json_option,
    pretty,
    print_json,
    short_time,
    table,
)
from shared.errors import InvalidInput, NotFound
from shared.logs import configure_logging
from shared.models import CLASSIFICATIONS, parse_environment, validate_key, validate_namespace
from shared.sdk import Change, ConfigClient, Progress, Snapshot


def _namespace(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return validate_namespace(value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.detail) from None


def _key(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return validate_key(value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.detail) from None


def _env(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_environment(value).value
    except InvalidInput as exc:
        raise click.BadParameter(exc.detail) from None


namespace_arg = click.argument("namespace", callback=_namespace)
key_arg = click.argument("key", callback=_key)
env_option = click.option(
    "--env",
    "-e",
    callback=_env,
    help="Environment: global (default), development, staging, production, edge.",
)
positive = click.IntRange(min=1)
_PAST = {"create": "created", "update": "updated", "delete": "deleted", "rollback": "rolled back"}


def _where(body: dict[str, Any]) -> str:
    return f"{entry_name(body)} in {body.get('environment')}"


@click.command()
@namespace_arg
@key_arg
@env_option
@click.option("--version", "version", type=positive, help="A stored version instead of the latest.")
@json_option
@pass_app
def get(app: App, namespace: str, key: str, env: str | None, version: int | None, as_json: bool) -> None:
    """Show the stored value of NAMESPACE KEY in one environment."""
    body = app.run(lambda c: c.get_config(namespace, key, env=env, version=version))
    if as_json:
        print_json(body)
        return
    state = " (deleted)" if body.get("deleted") else ""
    click.echo(f"{_where(body)}: version {body.get('version')}, revision {body.get('revision')}{state}")
    message = f": {body['message']}" if body.get("message") else ""
    change = _PAST.get(str(body.get("change_type")), str(body.get("change_type")))
    click.echo(f"{change} by {body.get('author')} at {short_time(body.get('created_at'))}{message}")
    click.echo(pretty(body.get("value")))


@click.command()
@namespace_arg
@key_arg
@click.option("--env", "-e", callback=_env, required=True, help="Environment whose chain is resolved.")
@json_option
@pass_app
def resolve(app: App, namespace: str, key: str, env: str, as_json: bool) -> None:
    """Show the merged value an app sees, with provenance.

    The environment chain is merged (lowest priority first) and every leaf is shown
    with the environment that supplied it.
    """
    body = app.run(lambda c: c.get_config(namespace, key, env=env, resolve=True, explain=True))
    if as_json:
        print_json(body)
        return
    layers = " -> ".join(f"{layer['environment']} v{layer['version']}" for layer in body.get("layers", []))
    click.echo(f"{_where(body)} (resolved from {layers}), revision {body.get('revision')}")
    click.echo(pretty(body.get("value")))
    click.echo("")
    provenance: dict[str, str] = body.get("provenance") or {}
    table(["POINTER", "ENVIRONMENT"], sorted(provenance.items()), empty="(no leaves)")


def _read_value(file: IO[str] | None, value: str | None) -> tuple[dict[str, Any], str]:
    if file is not None and value is not None:
        raise click.UsageError("give the value with --file or --value, not both")
    if value is not None:
        return read_json_object(value, "--value"), "--value"
    if file is None:
        if sys.stdin.isatty():
            raise click.UsageError("no value given: use --file F, --value JSON, or pipe JSON on stdin")
        return read_json_object(sys.stdin.read(), "stdin"), "stdin"
    source = "stdin" if file.name == "<stdin>" else file.name
    try:
        text = file.read()
    except UnicodeDecodeError:
        raise InvalidInput(f"{source} is not UTF-8 text") from None
    return read_json_object(text, source), source


@click.command(name="set")
@namespace_arg
@key_arg
@env_option
@click.option("--file", "-f", "file", type=click.File("r", encoding="utf-8"), help="JSON file ('-': stdin).")
@click.option("--value", "value", help="The value as a JSON object on the command line.")
@click.option("--message", "-m", default="", help="Change message kept in the history.")
@click.option(
    "--expect-version", type=click.IntRange(min=0), help="Fail with exit 4 unless the latest version is N."
)
@click.option("--metadata", help='Metadata as a JSON object, e.g. \'{"classification": "internal"}\'.')
@click.option("--classification", type=click.Choice(CLASSIFICATIONS), help="Shorthand for metadata.")
@json_option
@pass_app
def set_(
    app: App,
    namespace: str,
    key: str,
    env: str | None,
    file: IO[str] | None,
    value: str | None,
    message: str,
    expect_version: int | None,
    metadata: str | None,
    classification: str | None,
    as_json: bool,
) -> None:
    """Write a new version of NAMESPACE KEY.

    The value, a JSON object, comes from --file ('-': stdin), --value, or stdin when
    neither is given. Prints the new version and revision.
    """
    parsed, _ = _read_value(file, value)
    meta = read_json_object(metadata, "--metadata") if metadata is not None else None
    if classification is not None:
        meta = {**(meta or {}), "classification": classification}
    body = app.run(
        lambda c: c.put_config(
            namespace, key, parsed, env=env, message=message, expected_version=expect_version, metadata=meta
        )
    )
    if as_json:
        print_json(body)
        return
    verb = {"create": "created", "update": "updated"}.get(str(body.get("change_type")), "wrote")
    if not body.get("changed", True):
        verb = "unchanged"
    click.echo(f"{verb} {_where(body)}: version {body.get('version')}, revision {body.get('revision')}")


@click.command(name="list")
@click.argument("pattern", required=False)
@env_option
@click.option("--resolve", is_flag=True, help="List resolved values of the environment chain.")
@json_option
@pass_app
def list_(app: App, pattern: str | None, env: str | None, resolve: bool, as_json: bool) -> None:
    """List configs, optionally those under PATTERN.

    PATTERN is a namespace (its sub-namespaces included) or a glob such as 'llm-gateway/*'.
    """
    body = app.run(lambda c: c.list_configs(prefix=pattern, env=env, resolve=resolve))
    if as_json:
        print_json(body)
        return
    items: list[dict[str, Any]] = body.get("items", [])
    empty = f"no configs in {body.get('environment')}" + (f" matching {pattern}" if pattern else "")
    if resolve:
        resolved: list[tuple[Any, ...]] = [
            (
                i.get("namespace"),
                i.get("key"),
                i.get("revision"),
                " ".join(f"{la['environment']}:v{la['version']}" for la in i.get("layers", [])),
            )
            for i in items
        ]
        table(["NAMESPACE", "KEY", "REVISION", "LAYERS"], resolved, empty=empty)
        return
    rows = [
        (
            i.get("namespace"),
            i.get("key"),
            i.get("version"),
            i.get("revision"),
            short_time(i.get("created_at")),
            i.get("author"),
        )
        for i in items
    ]
    table(["NAMESPACE", "KEY", "VERSION", "REVISION", "UPDATED", "AUTHOR"], rows, empty=empty)


@click.command()
@namespace_arg
@key_arg
@env_option
@click.option("--limit", type=click.IntRange(1, 1000), help="At most N versions, newest first.")
@json_option
@pass_app
def history(app: App, namespace: str, key: str, env: str | None, limit: int | None, as_json: bool) -> None:
    """List the versions of NAMESPACE KEY, newest first."""
    body = app.run(lambda c: c.history(namespace, key, env=env, limit=limit))
    if as_json:
        print_json(body)
        return
    rows = [
        (
            v.get("version"),
            v.get("revision"),
            v.get("change_type"),
            v.get("author"),
            short_time(v.get("created_at")),
            v.get("message") or "",
        )
        for v in body.get("versions", [])
    ]
    table(["VERSION", "REVISION", "CHANGE", "AUTHOR", "CREATED", "MESSAGE"], rows, empty="no versions")


@click.command()
@namespace_arg
@key_arg
@env_option
@click.option("--from", "from_version", type=positive, help="Older version (default: the one before --to).")
@click.option("--to", "to_version", type=positive, help="Newer version (default: the latest).")
@json_option
@pass_app
def diff(
    app: App,
    namespace: str,
    key: str,
    env: str | None,
    from_version: int | None,
    to_version: int | None,
    as_json: bool,
) -> None:
    """Show what changed between two versions.

    Prints JSON Patch operations: + added, ~ replaced, - removed.
    """
    body = app.run(
        lambda c: c.diff(namespace, key, env=env, from_version=from_version, to_version=to_version)
    )
    if as_json:
        print_json(body)
        return
    click.echo(f"{_where(body)}: version {body.get('from_version')} -> version {body.get('to_version')}")
    patch: list[dict[str, Any]] = body.get("patch", [])
    if not patch:
        click.echo("no differences")
    for op in patch:
        path = op.get("path") or "/"
        kind = op.get("op")
        if kind == "remove":
            click.echo(f"- {path}")
        elif kind in ("add", "replace"):
            click.echo(f"{'+' if kind == 'add' else '~'} {path}: {compact(op.get('value'))}")
        else:  # move / copy: make_patch may emit them
            click.echo(f"{kind} {op.get('from')} -> {path}")


@click.command()
@namespace_arg
@key_arg
@click.option("--version", "version", type=positive, required=True, help="The version to restore.")
@env_option
@click.option("--message", "-m", default="", help="Change message kept in the history.")
@click.option("--expect-version", type=click.IntRange(min=0), help="Fail with exit 4 unless the latest is N.")
@json_option
@pass_app
def rollback(
    app: App,
    namespace: str,
    key: str,
    version: int,
    env: str | None,
    message: str,
    expect_version: int | None,
    as_json: bool,
) -> None:
    """Restore the value of an earlier version as a new version."""
    body = app.run(
        lambda c: c.rollback(
            namespace, key, version, env=env, message=message, expected_version=expect_version
        )
    )
    if as_json:
        print_json(body)
        return
    click.echo(
        f"rolled back {_where(body)} to version {version}: "
        f"now version {body.get('version')}, revision {body.get('revision')}"
    )


@click.command()
@namespace_arg
@key_arg
@env_option
@click.option("--message", "-m", default="", help="Change message kept in the history.")
@click.option("--expect-version", type=click.IntRange(min=0), help="Fail with exit 4 unless the latest is N.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def delete(
    app: App,
    namespace: str,
    key: str,
    env: str | None,
    message: str,
    expect_version: int | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete NAMESPACE KEY in one environment.

    The history is kept; rollback restores the value.
    """
    where = f"{namespace}/{key} in {env or 'global'}"
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to delete {where} without --yes (stdin is not a terminal)")
        click.confirm(f"delete {where}?", abort=True)
    body = app.run(
        lambda c: c.delete_config(namespace, key, env=env, message=message, expected_version=expect_version)
    )
    if as_json:
        print_json(body)
        return
    click.echo(f"deleted {_where(body)}: version {body.get('version')}, revision {body.get('revision')}")


COMMANDS = [get, resolve, set_, list_, history, diff, rollback, delete]


@click.command()
@namespace_arg
@key_arg
@env_option
@click.option(
    "--since",
    type=click.IntRange(min=0),
    help="Replay every change after this revision, then follow (default: show the value now, then follow).",
)
@click.option("--count", type=positive, help="Stop after this many changes.")
@json_option
@pass_app
def watch(
    app: App, namespace: str, key: str, env: str | None, since: int | None, count: int | None, as_json: bool
) -> None:
    """Print the resolved value of NAMESPACE KEY now and after every change (Ctrl-C stops).

    Follows the server's watch stream (Server-Sent Events); a dropped connection is resumed
    from the last revision shown, so no change is missed or shown twice. Values in change
    events carry secret references, never secret values.
    """
    environment = env or "global"
    target = app.target()
    configure_logging("warning", "console")  # reconnect notices go to stderr, never into the output

    async def follow() -> None:
        async with ConfigClient(
            target.server, None, target.token, cache_enabled=False, reconnect_attempts=_WATCH_ATTEMPTS
        ) as client:
            shown_sha: str | None = None  # of the value on screen; "" when it shows "no value"
            current_shown = since is not None  # with --since the replay is shown instead
            shown = 0
            watching = client.watch(namespace, key, environment=environment, since=since, progress=True)
            async with contextlib.aclosing(watching) as events:
                async for event in events:
                    if isinstance(event, Progress):
                        if not current_shown:  # connected: what is there now, then what changes
                            current_shown = True
                            shown_sha = await show_current(client)
                        continue
                    for change in _changes_of(event, namespace, key, environment, shown_sha):
                        sha = "" if change.deleted else change.sha256
                        if sha == shown_sha:
                            continue  # already on screen (the first read may have seen it)
                        shown_sha = sha
                        show_change(change)
                        shown += 1
                        if count is not None and shown >= count:
                            return

    async def show_current(client: ConfigClient) -> str:
        try:
            body = await client.get_entry(namespace, key, environment)
        except NotFound:
            body = {"namespace": namespace, "key": key, "environment": environment, "deleted": True}
        if as_json:
            click.echo(json.dumps(body, ensure_ascii=False))
        else:
            when = f"revision {body.get('revision')}" if "revision" in body else "no value"
            click.echo(f"-- {namespace}/{key} in {environment}: {when}")
            if "value" in body:
                click.echo(pretty(body["value"]))
        return str(body.get("sha256", "")) if "value" in body else ""

    def show_change(change: Change) -> None:
        if as_json:
            out = change.to_dict()
            if change.deleted:
                out["deleted"] = True
            click.echo(json.dumps(out, ensure_ascii=False))
            return
        if change.deleted:
            click.echo(
                f"-- {namespace}/{key} in {environment}: no value (deleted at revision {change.revision})"
            )
            return
        click.echo(f"-- {namespace}/{key} in {environment}: revision {change.revision} ({change.type})")
        click.echo(pretty(change.value))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())


_WATCH_ATTEMPTS = 5  # connection attempts in a row (jittered backoff, at most ~15 s) before watch gives up


def _changes_of(
    event: Change | Snapshot, namespace: str, key: str, environment: str, shown_sha: str | None
) -> list[Change]:
    """The changes of the watched key an event stands for; a snapshot without the key is its deletion."""
    if isinstance(event, Change):
        return [event]
    for item in event.items:
        if item.namespace == namespace and item.key == key:
            return [item]
    if shown_sha is None:
        return []  # nothing on screen yet, so nothing to take back
    return [Change("delete", event.revision, namespace, key, environment, None, "")]


COMMANDS.append(watch)
