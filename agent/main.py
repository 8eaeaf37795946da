"""``llm-config-agent``: the per-pod agent (init container, sidecar, edge).

Only the command surface exists so far; the modes arrive with the agent work.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """LLM-Config-Manager agent: fetch configuration, write files, reload the app.

    Modes: init (fetch once, exit), watch (sidecar), run --standalone (edge).
    Not implemented in this version: each mode exits with status 2.
    """


def _not_yet(mode: str) -> None:
    raise click.UsageError(f"agent mode {mode!r} is not implemented in this version")


@cli.command()
def init() -> None:
    """Fetch once, write files, exit (not implemented yet)."""
    _not_yet("init")


@cli.command()
def watch() -> None:
    """Follow changes, rewrite files, reload the app (not implemented yet)."""
    _not_yet("watch")


@cli.command()
@click.option("--standalone", is_flag=True, help="Edge mode (not implemented yet).")
def run(standalone: bool) -> None:
    """Run as an edge agent with --standalone (not implemented yet)."""
    _not_yet("run --standalone" if standalone else "run")


def main() -> None:
    cli(prog_name="llm-config-agent")


if __name__ == "__main__":
    main()
