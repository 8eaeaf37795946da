"""Identity and administration: login, logout, whoami, tenant, token, settings.

``login`` checks the token with ``GET /v1/whoami`` before it saves anything,
so a saved login always worked once. New tokens are printed once, on a line of
their own, and never again: the server keeps only their hash.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import click

from server.cli.context import App, SavedLogin, Target, pass_app, read_json_object, remove_login, save_login
from server.cli.output import json_option, pretty, print_json, short_time, table
from shared.client import check_server_url
from shared.errors import InvalidInput


def _describe(who: dict[str, Any]) -> str:
    roles = ", ".join(who.get("roles", [])) or "none"
    scopes = ", ".join(who.get("namespaces", [])) or "all namespaces"
    tenant = who.get("tenant_name") or who.get("tenant_id")
    return f"{who.get('name')} (token {who.get('token_id')}) in tenant {tenant}; roles: {roles}; {scopes}"


@click.command()
@click.option("--server", "server", help="Server URL, e.g. http://127.0.0.1:8080 (default: LLMCM_SERVER).")
@click.option("--token", "token", help="Bearer token (prompted for, hidden, when not given).")
@click.option("--token-stdin", is_flag=True, help="Read the token from stdin.")
@json_option
@pass_app
def login(app: App, server: str | None, token: str | None, token_stdin: bool, as_json: bool) -> None:
    """Save a server URL and token for later commands.

    The token is checked with the server first; the file is written with mode 0600.
    """
    url = server or app.env.server
    if url is None:
        raise click.UsageError("give --server URL (or set LLMCM_SERVER)")
    url = check_server_url(url)
    if token is not None and token_stdin:
        raise click.UsageError("give --token or --token-stdin, not both")
    if token_stdin:
        token = sys.stdin.readline().strip()
    elif token is None:
        token = str(click.prompt("Token", hide_input=True)).strip()
    if not token:
        raise click.UsageError("the token is empty")
    who = app.run(lambda c: c.whoami(), Target(url, token))
    save_login(app.env.config_path, SavedLogin(url, token))
    if as_json:
        print_json({**who, "server": url, "saved_to": str(app.env.config_path)})
        return
    click.echo(f"logged in to {url} as {_describe(who)}")
    click.echo(f"saved to {app.env.config_path}")
    for name, value in (("LLMCM_SERVER", app.env.server), ("LLMCM_TOKEN", app.env.token)):
        if value:
            click.echo(f"note: {name} is set and wins over the saved login", err=True)


@click.command()
@pass_app
def logout(app: App) -> None:
    """Forget the saved login."""
    if remove_login(app.env.config_path):
        click.echo(f"removed {app.env.config_path}")
    else:
        click.echo("not logged in")


@click.command()
@json_option
@pass_app
def whoami(app: App, as_json: bool) -> None:
    """Show the current token's name, tenant and roles."""
    target = app.target()
    who = app.run(lambda c: c.whoami(), target)
    if as_json:
        print_json(who)
        return
    click.echo(f"{_describe(who)} at {target.server}")


# -- tenants -------------------------------------------------------------------------------


@click.group()
def tenant() -> None:
    """Create and list tenants (global-admin)."""


@tenant.command(name="create")
@click.argument("name")
@click.option("--admin-token", is_flag=True, help="Also create a tenant-admin token and print it once.")
@json_option
@pass_app
def tenant_create(app: App, name: str, admin_token: bool, as_json: bool) -> None:
    """Create tenant NAME; prints its id (and its admin token once, if asked)."""
    body = app.run(lambda c: c.create_tenant(name, admin_token=admin_token))
    if as_json:
        print_json(body)
        return
    created = body.get("tenant", {})
    click.echo(f"created tenant {created.get('name')} (id {created.get('id')})")
    admin = body.get("admin_token")
    if admin:
        click.echo(f"admin token {admin.get('id')} (shown once, store it now):")
        click.echo(admin.get("token"))


@tenant.command(name="list")
@json_option
@pass_app
def tenant_list(app: App, as_json: bool) -> None:
    """List every tenant."""
    body = app.run(lambda c: c.tenants())
    if as_json:
        print_json(body)
        return
    rows = [
        (t.get("id"), t.get("name"), t.get("status"), short_time(t.get("created_at")))
        for t in body.get("tenants", [])
    ]
    table(["ID", "NAME", "STATUS", "CREATED"], rows, empty="no tenants")


# -- tokens --------------------------------------------------------------------------------


@click.group()
def token() -> None:
    """Create, list and revoke bearer tokens."""


@token.command(name="create")
@click.option("--name", required=True, help="A name for the token (who or what uses it).")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="Role (repeatable): global-admin, tenant-admin, operator, developer, service-account, "
    "pii-authorized.",
)
@click.option("--namespace", "namespaces", multiple=True, help="Limit to a namespace or glob (repeatable).")
@click.option("--expires-in", type=click.IntRange(min=1), help="Lifetime in seconds (default: no expiry).")
@click.option("--tenant", "tenant_id", help="Tenant id (global-admin; default: your own tenant).")
@json_option
@pass_app
def token_create(
    app: App,
    name: str,
    roles: tuple[str, ...],
    namespaces: tuple[str, ...],
    expires_in: int | None,
    tenant_id: str | None,
    as_json: bool,
) -> None:
    """Create a token; it is printed once, on its own last line."""
    body = app.run(
        lambda c: c.create_token(
            name, list(roles), namespaces=list(namespaces), expires_in=expires_in, tenant_id=tenant_id
        )
    )
    if as_json:
        print_json(body)
        return
    expiry = f", expires {short_time(body.get('expires_at'))}" if body.get("expires_at") else ""
    click.echo(
        f"created token {body.get('id')} ({body.get('name')}; roles {', '.join(body.get('roles', []))}; "
        f"tenant {body.get('tenant_id')}{expiry})"
    )
    click.echo("token (shown once, store it now):")
    click.echo(body.get("token"))


@token.command(name="list")
@click.option("--tenant", "tenant_id", help="Tenant id (global-admin; default: your own tenant).")
@json_option
@pass_app
def token_list(app: App, tenant_id: str | None, as_json: bool) -> None:
    """List tokens (never their secret part)."""
    body = app.run(lambda c: c.tokens(tenant_id=tenant_id))
    if as_json:
        print_json(body)
        return
    rows = [
        (
            t.get("id"),
            t.get("name"),
            t.get("roles"),
            t.get("namespaces") or "all",
            short_time(t.get("expires_at")) if t.get("expires_at") else "never",
            "revoked" if t.get("revoked") else "active",
        )
        for t in body.get("tokens", [])
    ]
    table(["ID", "NAME", "ROLES", "NAMESPACES", "EXPIRES", "STATUS"], rows, empty="no tokens")


@token.command(name="revoke")
@click.argument("token_id")
@click.option("--tenant", "tenant_id", help="Tenant id (global-admin; default: your own tenant).")
@json_option
@pass_app
def token_revoke(app: App, token_id: str, tenant_id: str | None, as_json: bool) -> None:
    """Revoke TOKEN_ID (a tok_… id, not the token itself); it stops working at once."""
    if token_id.startswith("lcm_"):
        raise InvalidInput("give the token's id (tok_…), not the token itself; see 'llm-config token list'")
    body = app.run(lambda c: c.revoke_token(token_id, tenant_id=tenant_id))
    if as_json:
        print_json(body)
        return
    click.echo(f"revoked token {body.get('id')} ({body.get('name')})")


# -- settings ------------------------------------------------------------------------------


@click.group()
def settings() -> None:
    """Show or replace the tenant's settings.

    Settings: environment chains, the production change window, auditing of reads.
    """


@settings.command(name="get")
@json_option
@pass_app
def settings_get(app: App, as_json: bool) -> None:
    """Show the tenant's settings."""
    body = app.run(lambda c: c.settings())
    if as_json:
        print_json(body)
        return
    click.echo(pretty(body))


@settings.command(name="set")
@click.option(
    "--file", "-f", "file", type=click.File("r", encoding="utf-8"), required=True, help="JSON file."
)
@json_option
@pass_app
def settings_set(app: App, file: IO[str], as_json: bool) -> None:
    """Replace the tenant's settings with the fields of a JSON file (others reset to defaults)."""
    source = "stdin" if file.name == "<stdin>" else file.name
    wanted = read_json_object(file.read(), source)
    body = app.run(lambda c: c.put_settings(wanted))
    if as_json:
        print_json(body)
        return
    click.echo("settings saved:")
    click.echo(pretty(body))


COMMANDS = [login, logout, whoami, tenant, token, settings]
