"""``run_demo``: the walk-through in one event loop, and what happens however it ends.

It prepares ``./demo-config`` and a work dir, runs ``Walkthrough``, and stops every process
it started (by PID) however the run ends: done, failed, Ctrl-C, SIGTERM or SIGHUP. A finished
run prints the reload times and what it stopped, and removes the work dir; a failed one keeps
the work dir for its logs; with ``keep`` a finished run leaves the processes running and
prints how to use and stop them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from server.demo import scenario as sc
from server.demo.console import Console
from server.demo.processes import Children
from server.demo.stack import Stack
from server.demo.walkthrough import Walkthrough
from server.demo.workspace import Workspace, prepare

EXIT_INTERRUPTED = 130


def run_demo(config_dir: Path, *, keep: bool = False, console: Console | None = None) -> int:
    """Run the demo in ``config_dir``; the exit status (0 done, 130 interrupted).

    ``InvalidInput`` before anything starts when ``config_dir`` may not be used; any other
    failure is raised after every process the demo started is stopped.
    """
    console = console or Console()
    work = prepare(config_dir)
    children = Children(on_change=work.record)
    stack = Stack(console, children, work)
    walk = Walkthrough(console, stack, keep)
    console.title("LLM-Config-Manager demo: a server, an agent and an app, on this machine only")
    console.info(f"config files: ./{config_dir.name}    work dir (store, logs): {work.work_dir}")
    started = time.monotonic()
    outcome = "failed"
    try:
        asyncio.run(_in_loop(walk))
        outcome = "done"
    except (KeyboardInterrupt, asyncio.CancelledError):
        outcome = "interrupted"
    finally:
        _finish(console, walk, children, work, outcome, time.monotonic() - started)
    return EXIT_INTERRUPTED if outcome == "interrupted" else 0


async def _in_loop(walk: Walkthrough) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await walk.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _finish(
    console: Console, walk: Walkthrough, children: Children, work: Workspace, outcome: str, seconds: float
) -> None:
    console.clear_live()
    console.plain()
    if outcome == "done" and walk.keep:
        _print_kept(console, walk, children, work)
        return
    stopped = children.stop_all()
    names = ", ".join(f"{c.name} (pid {c.pid})" for c in stopped) or "nothing was running"
    if outcome == "done":
        console.title(f"[done] in {seconds:.1f} s")
        timings = ", ".join(f"{label} {millis:.0f} ms" for label, millis in walk.timings)
        console.ok(f"write -> app reloaded: {timings}")
        console.ok(f"stopped {names}")
        work.remove_work_dir()
        console.ok(f"removed the work dir {work.work_dir}")
        files = sorted(
            p.relative_to(work.config_dir).as_posix() for p in (work.config_dir / sc.NAMESPACE).iterdir()
        )
        console.ok(f"./{work.config_dir.name} holds the final set:")
        for name in files:
            console.info(f"  ./{work.config_dir.name}/{name}")
        console.info(f"{sc.ENDPOINT_KEY}.json holds the API key: mode 0600, like every file with a secret")
        return
    if outcome == "interrupted":
        console.title("[interrupted]")
        console.ok(f"stopped {names}")
        work.remove_work_dir()
        return
    console.title("[failed]")
    console.ok(f"stopped {names}")
    console.info(f"logs kept in {work.work_dir} (server.log, agent.log, app.log); remove it when done")


def _print_kept(console: Console, walk: Walkthrough, children: Children, work: Workspace) -> None:
    kept = children.detach()
    server = walk.server
    assert server is not None  # a finished walk-through started it
    console.title("[kept running] explore, then stop it")
    console.ok("running: " + ", ".join(f"{c.name} (pid {c.pid})" for c in kept))
    console.info(f"REST     {server.url}    (OpenAPI: {server.url}/v1/openapi.json)")
    console.info(f"gRPC     127.0.0.1:{server.grpc_port}")
    console.info(f"agent    http://127.0.0.1:{walk.stack.agent_port}/health/ready  (and /metrics)")
    console.info(f"token    {server.token}    (global admin of this throwaway server)")
    console.info(f"logs     {work.work_dir}/app.log (each reload), agent.log, server.log")
    console.plain()
    console.info("try:")
    console.info(f"  export LLMCM_SERVER={server.url} LLMCM_TOKEN={server.token}")
    console.info(f"  llm-config resolve {sc.NAMESPACE} {sc.ROUTING_KEY} --env production")
    console.info(
        f"  llm-config set {sc.NAMESPACE} {sc.ROUTING_KEY} --env production "
        '--value \'{"request_timeout_ms": 20000, "rate_limit": {"requests_per_minute": 1200}}\''
    )
    console.info(
        f"  tail -f {work.work_dir}/app.log; cat ./{work.config_dir.name}/{sc.NAMESPACE}/routing.json"
    )
    console.plain()
    pids = " ".join(str(c.pid) for c in reversed(kept))
    console.info(f"stop:  llm-config demo --stop    (or: kill {pids}; rm -rf {work.work_dir})")
