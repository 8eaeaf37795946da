"""``llm-config``: the operator CLI of LLM-Config-Manager.

This module only assembles the command group and owns the one place where
errors become exit codes: ``CliGroup.invoke`` turns every ``LLMConfigError``
(from the client or the CLI itself) into ``error: <detail>`` on stderr and the
documented exit code, so no command handles errors on its own and no traceback
reaches the user. The commands live in ``commands_*.py``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from server.cli import (
    commands_admin,
    commands_agents,
    commands_configs,
    commands_demo,
    commands_governance,
    commands_secrets,
)
from server.cli.context import App, CliEnv
from server.cli.output import EXIT_CODES_HELP, EXIT_FAILED, exit_code_for, report_error
from shared.errors import LLMConfigError

_PASS_THROUGH = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort)


class CliGroup(click.Group):
    """A click group that maps the project's exceptions to one-line errors and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except BrokenPipeError:
            # the reader went away (``llm-config list | head -1``): stop quietly, as the Python docs advise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_FAILED) from None
        except LLMConfigError as exc:
            if _debug(ctx):
                raise
            report_error(exc)
            raise click.exceptions.Exit(exit_code_for(exc)) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            click.echo(
                f"error: unexpected {type(exc).__name__}: {exc} (set LLMCM_DEBUG=1 for a traceback)", err=True
            )
            raise click.exceptions.Exit(EXIT_FAILED) from None


def _debug(ctx: click.Context) -> bool:
    return isinstance(ctx.obj, App) and ctx.obj.env.debug


@click.group(
    cls=CliGroup,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Manage configs, schemas, tokens and the audit log of an LLM-Config-Manager server.

    \b
    Examples:
      llm-config login --server http://127.0.0.1:8080
      llm-config get llm-gateway/routing primary-model --env production
      llm-config set llm-gateway/routing primary-model --file config.json --env production
      llm-config list 'llm-gateway/*' --env production
      llm-config rollback llm-gateway/routing primary-model --version 4
    """
    if not isinstance(ctx.obj, App):
        ctx.obj = App(CliEnv.from_environ(os.environ))


for _module in (
    commands_configs,
    commands_admin,
    commands_governance,
    commands_secrets,
    commands_agents,
    commands_demo,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point: read the environment once, run the command."""
    cli.main(prog_name="llm-config", obj=App(CliEnv.from_environ(os.environ)))


if __name__ == "__main__":
    main()
