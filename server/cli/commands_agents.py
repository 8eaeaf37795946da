"""Agent commands: ``agents`` (who runs what) and ``rollout status`` (how far a revision got).

Both read what agents report after each apply (``POST /v1/agents/status``); they need an
operator or admin token. ``--json`` prints the server's answer as it came.
"""

from __future__ import annotations

from typing import Any

import click

from server.cli.context import App, pass_app
from server.cli.output import json_option, print_json, short_time, table
from shared.client import RestClient
from shared.errors import InvalidInput, ProtocolError
from shared.models import parse_environment

_HEADERS = ["AGENT", "ENVIRONMENT", "NAMESPACES", "REVISION", "STATE", "REPORTED", "LAST ERROR"]


def _env(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_environment(value).value
    except InvalidInput as exc:
        raise click.BadParameter(exc.detail) from None


env_option = click.option("--env", "-e", callback=_env, help="Only agents of this environment.")


async def _get(client: RestClient, path: str, params: dict[str, Any]) -> dict[str, Any]:
    answer = await client.request("GET", path, params=params)
    if not isinstance(answer, dict):
        raise ProtocolError(f"server {client.base_url} answered GET {path} with something not an object")
    return answer


def _rows(agents: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            a.get("agent_id"),
            a.get("environment"),
            a.get("namespaces"),
            a.get("applied_revision"),
            a.get("state"),
            short_time(a.get("reported_at")),
            a.get("last_error") or None,
        )
        for a in agents
    ]


@click.command()
@env_option
@json_option
@pass_app
def agents(app: App, env: str | None, as_json: bool) -> None:
    """List the agents of the tenant with the revision each applied and its state."""
    body = app.run(lambda c: _get(c, "/v1/agents", {"env": env}))
    if as_json:
        print_json(body)
        return
    table(_HEADERS, _rows(body.get("agents", [])), empty="no agent has reported yet")


@click.group()
def rollout() -> None:
    """Follow the rollout of a revision to the agents."""


@rollout.command(name="status")
@click.option("--revision", "-r", type=click.IntRange(min=1), required=True, help="The revision to follow.")
@env_option
@json_option
@pass_app
def rollout_status(app: App, revision: int, env: str | None, as_json: bool) -> None:
    """How many agents applied REVISION (or later), are behind, or failed; then who.

    An agent whose last report is a failure (check_failed, rolled_back, error) counts as
    failed whatever revision it runs.
    """
    body = app.run(lambda c: _get(c, "/v1/agents/rollout", {"revision": revision, "env": env}))
    if as_json:
        print_json(body)
        return
    counts = body.get("counts", {})
    click.echo(
        f"revision {body.get('revision')} (current {body.get('current_revision')}): "
        f"{counts.get('applied', 0)} applied, {counts.get('behind', 0)} behind, "
        f"{counts.get('failed', 0)} failed of {body.get('total', 0)} agents"
    )
    for group in ("failed", "behind", "applied"):
        members = body.get(group) or []
        if members:
            click.echo(f"\n{group}:")
            table(_HEADERS, _rows(members))


COMMANDS = [agents, rollout]
