"""The secret commands: set, get, list, versions, rotate, revoke.

``secret set`` reads the value from stdin or ``--file`` by default, so it never
has to appear on a command line (``--value`` works too, as in the seed). The
value is printed only by ``secret get``, alone on a line (or in ``--json``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from server.cli.commands_configs import env_option, key_arg, namespace_arg, positive
from server.cli.context import App, pass_app
from server.cli.output import fail, json_option, print_json, short_time, table


def _read_value(value: str | None, file: str | None) -> str:
    if value is not None and file is not None:
        raise fail("give the value with --value or --file, not both", 2)
    if value is not None:
        text = value
    elif file is not None and file != "-":
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror}") from None
    else:
        if sys.stdin.isatty():
            text = click.prompt("secret value", hide_input=True, confirmation_prompt=False)
        else:
            text = sys.stdin.read()
    text = text.rstrip("\r\n")
    if not text:
        raise fail("the secret value is empty")
    return text


@click.group()
def secret() -> None:
    """Store and read secrets (values are encrypted at rest; reads are audited)."""


def _set(
    app: App,
    namespace: str,
    key: str,
    env: str | None,
    value: str | None,
    file: str | None,
    message: str | None,
    grace: int | None,
    expires_in: int | None,
    as_json: bool,
    verb: str,
    rotation_interval: int | None = None,
) -> None:
    text = _read_value(value, file)
    body = app.run(
        lambda c: c.put_secret(
            namespace,
            key,
            text,
            env=env,
            message=message,
            grace_period=grace,
            expires_in=expires_in,
            rotation_interval=rotation_interval,
        )
    )
    if as_json:
        print_json(body)
        return
    click.echo(
        f"{verb} secret {namespace}/{key}: version {body.get('version')}, revision {body.get('revision')}"
    )


_value_options = [
    click.option("--value", help="The value (prefer stdin or --file: a command line is visible to others)."),
    click.option("--file", "file", help="Read the value from FILE ('-' for stdin)."),
    click.option("--message", "-m", help="Why it changed."),
    click.option("--expires-in", type=positive, help="Seconds until this version expires."),
    click.option(
        "--rotation-interval",
        type=positive,
        help="Seconds after which the secret is due for rotation (listed by `secret list --due`).",
    ),
]


@secret.command("set")
@namespace_arg
@key_arg
@env_option
@click.option("--grace", type=click.IntRange(min=0), help="Seconds the replaced version stays valid.")
@json_option
@pass_app
def set_(
    app: App,
    namespace: str,
    key: str,
    env: str | None,
    value: str | None,
    file: str | None,
    message: str | None,
    expires_in: int | None,
    grace: int | None,
    as_json: bool,
    rotation_interval: int | None,
) -> None:
    """Store a new version of secret NAMESPACE KEY (value from stdin, --file or --value)."""
    _set(
        app,
        namespace,
        key,
        env,
        value,
        file,
        message,
        grace,
        expires_in,
        as_json,
        "stored",
        rotation_interval,
    )


@secret.command()
@namespace_arg
@key_arg
@env_option
@click.option(
    "--grace",
    type=click.IntRange(min=0),
    default=3600,
    show_default=True,
    help="Seconds the replaced version stays valid.",
)
@json_option
@pass_app
def rotate(
    app: App,
    namespace: str,
    key: str,
    env: str | None,
    value: str | None,
    file: str | None,
    message: str | None,
    expires_in: int | None,
    grace: int,
    as_json: bool,
    rotation_interval: int | None,
) -> None:
    """Replace secret NAMESPACE KEY; the old version stays valid for --grace seconds."""
    _set(
        app,
        namespace,
        key,
        env,
        value,
        file,
        message,
        grace,
        expires_in,
        as_json,
        "rotated",
        rotation_interval,
    )


for _option in reversed(_value_options):
    set_ = _option(set_)
    rotate = _option(rotate)


@secret.command()
@namespace_arg
@key_arg
@env_option
@click.option("--version", type=positive, help="A version still valid (during its grace period).")
@json_option
@pass_app
def get(app: App, namespace: str, key: str, env: str | None, version: int | None, as_json: bool) -> None:
    """Print the value of secret NAMESPACE KEY (the read is audited)."""
    body = app.run(lambda c: c.get_secret(namespace, key, env=env, version=version))
    if as_json:
        print_json(body)
        return
    click.echo(body.get("value", ""))


def _rows(items: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (
            i.get("namespace"),
            i.get("key"),
            i.get("version"),
            i.get("status"),
            f"v{i.get('kek_version')}",
            short_time(str(i.get("created_at") or "")),
            short_time(str(i.get("expires_at"))) if i.get("expires_at") else "never",
        )
        for i in items
    ]


_HEADERS = ("NAMESPACE", "KEY", "VERSION", "STATUS", "KEK", "CREATED", "EXPIRES")


@secret.command("list")
@click.argument("prefix", required=False)
@env_option
@click.option("--due", is_flag=True, help="Only secrets past their rotation interval.")
@json_option
@pass_app
def list_(app: App, prefix: str | None, env: str | None, due: bool, as_json: bool) -> None:
    """List secrets (metadata only), optionally under namespace PREFIX."""
    body = app.run(lambda c: c.list_secrets(prefix=prefix, env=env, due=due))
    if as_json:
        print_json(body)
        return
    items = list(body.get("items", []))
    rows = [
        (*row, "due" if item.get("rotation_due") else "")
        for row, item in zip(_rows(items), items, strict=True)
    ]
    table((*_HEADERS, "ROTATION"), rows)


@secret.command()
@namespace_arg
@key_arg
@env_option
@json_option
@pass_app
def versions(app: App, namespace: str, key: str, env: str | None, as_json: bool) -> None:
    """List the versions of secret NAMESPACE KEY (metadata only)."""
    body = app.run(lambda c: c.secret_versions(namespace, key, env=env))
    if as_json:
        print_json(body)
        return
    table(_HEADERS, _rows(list(body.get("versions", []))))


@secret.command()
@namespace_arg
@key_arg
@env_option
@click.option("--version", type=positive, help="Revoke only this version (default: all).")
@json_option
@pass_app
def revoke(app: App, namespace: str, key: str, env: str | None, version: int | None, as_json: bool) -> None:
    """Revoke secret NAMESPACE KEY (all versions, or --version N); revoked values are never served."""
    body = app.run(lambda c: c.revoke_secret(namespace, key, env=env, version=version))
    if as_json:
        print_json(body)
        return
    table(_HEADERS, _rows(list(body.get("versions", []))))


COMMANDS = [secret]


@click.group()
def key() -> None:
    """Rotate the tenant's key-encryption key and follow the re-wrap of data keys."""


def _print_status(body: dict[str, Any]) -> None:
    click.echo(
        f"tenant {body.get('tenant_id')}: provider {body.get('provider')}, current KEK version "
        f"{body.get('current_version')}; re-wrap {body.get('rewrap_done')} done, "
        f"{body.get('rewrap_pending')} pending"
    )
    versions: list[dict[str, Any]] = list(body.get("versions") or [])
    rows = [
        (v.get("version"), v.get("secret_versions"), v.get("encryptions"), short_time(v.get("created_at")))
        for v in versions
    ]
    table(("KEK VERSION", "SECRET VERSIONS", "ENCRYPTIONS", "CREATED"), rows)


@key.command("rotate")
@click.option("--tenant", "tenant_id", help="Another tenant (global-admin).")
@json_option
@pass_app
def key_rotate(app: App, tenant_id: str | None, as_json: bool) -> None:
    """Add a KEK version; data keys are re-wrapped in the background, values stay sealed as they are."""
    body = app.run(lambda c: c.rotate_key(tenant_id=tenant_id))
    if as_json:
        print_json(body)
        return
    _print_status(body)


@key.command("status")
@click.option("--tenant", "tenant_id", help="Another tenant (global-admin).")
@json_option
@pass_app
def key_status(app: App, tenant_id: str | None, as_json: bool) -> None:
    """Show KEK versions and re-wrap progress."""
    body = app.run(lambda c: c.key_status(tenant_id=tenant_id))
    if as_json:
        print_json(body)
        return
    _print_status(body)


COMMANDS.append(key)
