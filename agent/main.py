"""``llm-config-agent``: the per-pod agent (init container, sidecar, edge).

    llm-config-agent init                 fetch once, write the files, exit
    llm-config-agent watch                follow changes, rewrite the files, reload the app
    llm-config-agent run --standalone     edge: serve from the encrypted cache, sync when possible

Every setting is a flag or an environment variable (the seed's CONFIG_SERVER, TENANT_ID,
NAMESPACES, ENVIRONMENT, SYNC_INTERVAL, RELOAD_SIGNAL, CONFIG_TOKEN / CONFIG_TOKEN_FILE,
CONFIG_DIR, CACHE_PATH, CACHE_KEY_FILE; others as LLMCM_AGENT_<SETTING>); flags win. The
token and the cache key come from the environment or files only. See ``agent.config``.

Exit status: 0 done (init) or stopped (watch, run); 1 the configuration could not be
fetched or written (one line on stderr says why); 2 a setting is wrong.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
import structlog

from agent.config import AgentConfig
from agent.core import run_follow, run_init
from shared.errors import InvalidInput, LLMConfigError
from shared.logs import configure_logging

log = structlog.get_logger("agent.main")

# (flag, setting, help); every one maps to an AgentConfig field of the same name
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--server", "server", "Config server URL: http(s):// (REST + SSE) or grpc(s):// [CONFIG_SERVER]."),
    ("--tenant-id", "tenant_id", "Tenant the token must belong to [TENANT_ID]."),
    ("--namespaces", "namespaces", "Comma-separated namespaces to fetch [NAMESPACES]."),
    ("--environment", "environment", "Environment to resolve for [ENVIRONMENT]."),
    ("--sync-interval", "sync_interval", "Fallback poll interval, e.g. 30s [SYNC_INTERVAL]."),
    ("--token-file", "token_file", "File holding the bearer token [CONFIG_TOKEN_FILE]."),
    ("--agent-id", "agent_id", "Name reported to the server (default: POD_NAME or host name)."),
    ("--config-dir", "config_dir", "Output directory (default /config) [CONFIG_DIR]."),
    ("--file-mode", "file_mode", "Mode of files without secrets (default 0644)."),
    ("--secret-file-mode", "secret_file_mode", "Mode of files holding secrets (default 0600)."),
    ("--file-owner", "file_owner", "USER[:GROUP] owning the written files."),
    ("--cache-path", "cache_path", "Encrypted offline cache (sqlite) [CACHE_PATH]."),
    ("--cache-key-file", "cache_key_file", "Cache key: 32 random bytes, base64 [CACHE_KEY_FILE]."),
    ("--reload-signal", "reload_signal", "Signal asking the app to reload (default SIGHUP) [RELOAD_SIGNAL]."),
    ("--pid-file", "pid_file", "Find the app to signal by its pid file."),
    ("--process-name", "process_name", "Find the app to signal by process name."),
    ("--process-cmdline", "process_cmdline", "Find the app to signal by a command-line regex."),
    ("--reload-command", "reload_command", "Run this command to reload the app instead of a signal."),
    ("--reload-url", "reload_url", "POST to this URL to reload the app instead of a signal."),
    ("--reload-timeout", "reload_timeout", "Time limit of a reload command or URL (default 30s)."),
    ("--wait", "wait", "MIN[:MAX]: apply a burst of changes once, after MIN of quiet (at most MAX)."),
    ("--check-cmd", "check_cmd", "Command run on the staged set before the swap; {staged} is its directory."),
    ("--check-timeout", "check_timeout", "Time limit of --check-cmd (default 30s)."),
    ("--health-url", "health_url", "After a reload, the app must answer 2xx here or the set is rolled back."),
    ("--health-timeout", "health_timeout", "How long the app has to answer --health-url (default 30s)."),
    ("--init-timeout", "init_timeout", "How long init retries an unreachable server (default 60s)."),
    ("--max-stale", "max_stale", "Readiness turns false when the set is older than this (e.g. 1h)."),
    ("--listen-host", "listen_host", "Address of health, metrics and read API (default 127.0.0.1)."),
    ("--listen-port", "listen_port", "Port of health, metrics and read API (default 8081)."),
    ("--log-level", "log_level", "debug, info, warning or error."),
    ("--log-format", "log_format", "json or console."),
)


def agent_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for flag, name, text in reversed(_OPTIONS):
        func = click.option(flag, name, default=None, help=text)(func)
    func = click.option(
        "--format", "formats", multiple=True, help="NAMESPACE=json|yaml|dotenv (repeatable)."
    )(func)
    func = click.option(
        "--template", "templates", multiple=True, help="OUTPUT=TEMPLATE_FILE: a sandboxed Jinja2 template."
    )(func)
    func = click.option(
        "--allow-stale",
        "allow_stale",
        is_flag=True,
        default=None,
        help="init: when the server stays unreachable, write from a valid cache and exit 0.",
    )(func)
    return func


def _load(mode: str, flags: dict[str, Any]) -> AgentConfig:
    try:
        cfg = AgentConfig.load(flags=flags)
        cfg.check_for(mode)
    except InvalidInput as exc:
        click.echo(f"llm-config-agent: error: {exc.detail}", err=True)
        sys.exit(2)
    configure_logging(cfg.log_level, cfg.log_format)
    return cfg


def _fail(exc: LLMConfigError) -> None:
    click.echo(f"llm-config-agent: error: {exc.detail}", err=True)
    sys.exit(2 if isinstance(exc, InvalidInput) else 1)


async def _until_signalled(cfg: AgentConfig, mode: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await run_follow(cfg, mode, stop)


def _first_error(group: BaseExceptionGroup[BaseException]) -> LLMConfigError | None:
    for exc in group.exceptions:
        found = _first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(found, LLMConfigError):
            return found
    return None


def _run_follow(cfg: AgentConfig, mode: str) -> None:
    try:
        code = asyncio.run(_until_signalled(cfg, mode))
    except LLMConfigError as exc:
        _fail(exc)
    except BaseExceptionGroup as group:  # a task of the TaskGroup failed
        first = _first_error(group)
        if first is None:
            raise
        _fail(first)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """LLM-Config-Manager agent: fetch configuration, write files, reload the app.

    Modes: init (fetch once, exit), watch (sidecar), run --standalone (edge).
    """


@cli.command()
@agent_options
def init(**flags: Any) -> None:
    """Fetch the configuration once, write the files, exit (an init container)."""
    cfg = _load("init", flags)
    try:
        warning = asyncio.run(run_init(cfg))
    except LLMConfigError as exc:
        _fail(exc)
    if warning:
        click.echo(f"llm-config-agent: warning: {warning}", err=True)
    sys.exit(0)


@cli.command()
@agent_options
def watch(**flags: Any) -> None:
    """Write the files, then follow changes: rewrite and reload the app (a sidecar)."""
    _run_follow(_load("watch", flags), "watch")


@cli.command()
@click.option("--standalone", is_flag=True, help="Edge mode: serve from the encrypted cache while offline.")
@agent_options
def run(standalone: bool, **flags: Any) -> None:
    """Run as an edge agent (``run --standalone``)."""
    if not standalone:
        raise click.UsageError("run needs --standalone (the edge mode); for a sidecar use 'watch'")
    _run_follow(_load("standalone", flags), "standalone")


def main() -> None:
    cli(prog_name="llm-config-agent")


if __name__ == "__main__":
    main()
