"""``llm-config demo``: see the whole product work on this machine in one command.

It needs no server, login or token: it starts its own (see ``server.demo``), in the
current directory's ``./demo-config`` and a temporary work dir, and stops what it started.
``--keep`` leaves it running; ``--stop`` stops a demo kept that way.
"""

from __future__ import annotations

from pathlib import Path

import click

from server.demo import DEMO_DIR_NAME, run_demo, stop_kept


@click.command()
@click.option("--keep", is_flag=True, help="Leave server, agent and app running afterwards, to explore.")
@click.option("--stop", "stop", is_flag=True, help="Stop a demo left running by --keep in this directory.")
def demo(keep: bool, stop: bool) -> None:
    """Start a server, an agent and a sample app here, and walk through a change, a rollback,
    a key rotation and a refused config, with the time each change took to reach the app.

    \b
    Writes ./demo-config (the agent's files; made fresh each run) and uses a temporary
    work dir for the store and the logs. Loopback only; stops everything it started,
    also on Ctrl-C, unless --keep is given.
    """
    config_dir = Path.cwd() / DEMO_DIR_NAME
    if keep and stop:
        raise click.UsageError("give --keep or --stop, not both")
    if stop:
        stopped, work_dir = stop_kept(config_dir)
        for name, pid in stopped:
            click.echo(f"stopped {name} (pid {pid})")
        if not stopped:
            click.echo("no demo process was running")
        if work_dir is not None:
            click.echo(f"removed the work dir {work_dir}")
        click.echo(f"./{DEMO_DIR_NAME} keeps the last set of config files")
        return
    code = run_demo(config_dir, keep=keep)
    if code:
        raise click.exceptions.Exit(code)


COMMANDS = [demo]
