"""Reloading a real app process: finding it, signalling it, commands, URLs, checks, health, debounce."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from agent.config import AgentConfig
from agent.errors import ReloadFailed
from agent.reload import (
    CommandReloader,
    Debouncer,
    ProcessFinder,
    SignalReloader,
    UrlReloader,
    build_reloader,
    check_argv,
    run_check,
    wait_healthy,
)
from tests.support import free_port

SAMPLE_APP = Path(__file__).with_name("sample_app.py")


@dataclass
class App:
    pid: int
    worker: int
    record: Path
    marker: str
    proc: subprocess.Popen[str]

    def signals(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def wait_for_signals(self, count: int, limit: float = 10.0) -> list[str]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and len(self.signals()) < count:
            time.sleep(0.02)
        return self.signals()


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """Start sample apps as real processes; every one started is killed (by pid) at teardown."""
    started: list[App] = []

    def start(*extra: str) -> App:
        marker = f"llmcm-test-app-{uuid.uuid4().hex[:12]}"
        record = tmp_path / f"{marker}.log"
        proc = subprocess.Popen(
            [sys.executable, str(SAMPLE_APP), "--record", str(record), "--marker", marker, *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        words = proc.stdout.readline().split()
        assert words[:1] == ["ready"], words
        app = App(int(words[1]), int(words[2]) if len(words) > 2 else 0, record, marker, proc)
        started.append(app)
        return app

    yield start
    for app in started:
        for pid in (app.worker, app.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        app.proc.wait(timeout=10)


class TestFinding:
    async def test_pid_file(self, start_app: Callable[..., App], tmp_path: Path) -> None:
        """SIGHUP reaches the process named by the pid file."""
        app = start_app("--pid-file", str(tmp_path / "app.pid"))
        result = await SignalReloader(ProcessFinder(pid_file=tmp_path / "app.pid")).reload()
        assert result.pids == (app.pid,)
        assert app.wait_for_signals(1) == [f"SIGHUP {app.pid}"]

    async def test_process_name(self, start_app: Callable[..., App]) -> None:
        """A process found by its name (as ps shows it) gets the signal."""
        name = f"app{uuid.uuid4().hex[:8]}"
        app = start_app("--name", name)
        result = await SignalReloader(ProcessFinder(name=name)).reload()
        assert result.pids == (app.pid,)
        assert app.wait_for_signals(1) == [f"SIGHUP {app.pid}"]

    async def test_cmdline_regex(self, start_app: Callable[..., App]) -> None:
        """A process found by a regex over its command line gets the signal."""
        app = start_app()
        result = await SignalReloader(ProcessFinder(cmdline=rf"--marker {app.marker}\b")).reload()
        assert result.pids == (app.pid,)
        assert app.wait_for_signals(1) == [f"SIGHUP {app.pid}"]

    async def test_only_the_topmost_match(self, start_app: Callable[..., App]) -> None:
        """Master and worker both match: only the master is signalled (as with nginx)."""
        name = f"app{uuid.uuid4().hex[:8]}"
        app = start_app("--name", name, "--worker")
        assert app.worker and psutil.Process(app.worker).name() == name
        result = await SignalReloader(ProcessFinder(name=name)).reload()
        assert result.pids == (app.pid,)
        assert app.wait_for_signals(1) == [f"SIGHUP {app.pid}"]

    async def test_other_signal(self, start_app: Callable[..., App], tmp_path: Path) -> None:
        """RELOAD_SIGNAL picks the signal: SIGUSR1 by name."""
        app = start_app("--pid-file", str(tmp_path / "app.pid"))
        flags = {"pid_file": str(tmp_path / "app.pid")}
        cfg = AgentConfig.load(flags=flags, environ={"RELOAD_SIGNAL": "USR1"})
        reloader = build_reloader(cfg)
        assert reloader is not None
        await reloader.reload()
        assert app.wait_for_signals(1) == [f"SIGUSR1 {app.pid}"]

    def test_the_agent_never_matches_itself(self) -> None:
        """A pattern that matches the agent's own command line does not select the agent or its parents."""
        own = " ".join(psutil.Process().cmdline())
        finder = ProcessFinder(cmdline=".")
        try:
            pids = {p.pid for p in finder.find()}
        except ReloadFailed:
            pids = set()
        assert os.getpid() not in pids
        assert not {p.pid for p in psutil.Process().parents()} & pids
        assert own  # the pattern really did match our own command line

    async def test_nothing_found(self, tmp_path: Path) -> None:
        """No match, a missing pid file, a bad pid file, a dead pid: each a clear ReloadFailed."""
        with pytest.raises(ReloadFailed, match="no running process found by process name"):
            await SignalReloader(ProcessFinder(name=f"none{uuid.uuid4().hex[:8]}")).reload()
        with pytest.raises(ReloadFailed, match="does not exist"):
            await SignalReloader(ProcessFinder(pid_file=tmp_path / "absent.pid")).reload()
        (tmp_path / "bad.pid").write_text("nginx\n")
        with pytest.raises(ReloadFailed, match="does not hold a process id"):
            await SignalReloader(ProcessFinder(pid_file=tmp_path / "bad.pid")).reload()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (tmp_path / "dead.pid").write_text(str(dead.pid))
        with pytest.raises(ReloadFailed, match="not running"):
            await SignalReloader(ProcessFinder(pid_file=tmp_path / "dead.pid")).reload()


class TestCommandAndUrl:
    async def test_reload_command_runs_without_shell(self, tmp_path: Path) -> None:
        """The command is split like a shell would but run without one: ';' is just an argument."""
        marker = tmp_path / "touched"
        reloader = CommandReloader(f"echo reloaded; touch {marker}")
        result = await reloader.reload()
        assert result.output.strip() == f"reloaded; touch {marker}"
        assert not marker.exists()

    async def test_failing_command(self) -> None:
        """A non-zero exit is ReloadFailed with the status; the output rides on the error, not in it."""
        reloader = CommandReloader(f"{sys.executable} -c \"print('sk-SECRET'); raise SystemExit(4)\"")
        with pytest.raises(ReloadFailed, match="exited with status 4") as caught:
            await reloader.reload()
        assert "sk-SECRET" not in caught.value.detail
        assert "sk-SECRET" in caught.value.output

    async def test_hanging_command_is_killed(self, tmp_path: Path) -> None:
        """A command that hangs is killed with its children at the time limit (confd #346)."""
        pid_file = tmp_path / "child.pid"
        reloader = CommandReloader(f"sh -c 'sleep 30 & echo $! > {pid_file}; wait'", timeout=0.5)
        with pytest.raises(ReloadFailed, match="timed out"):
            await reloader.reload()
        child = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and psutil.pid_exists(child):
            try:
                if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            await asyncio.sleep(0.02)
        gone = not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        assert gone

    async def test_reload_url(self, http_app: tuple[str, list[str]]) -> None:
        """--reload-url POSTs; 2xx is success, anything else or no answer is ReloadFailed."""
        base, seen = http_app
        await UrlReloader(f"{base}/reload").reload()
        assert seen == ["POST /reload"]
        with pytest.raises(ReloadFailed, match="answered HTTP 500"):
            await UrlReloader(f"{base}/broken").reload()
        with pytest.raises(ReloadFailed, match="failed"):
            await UrlReloader(f"http://127.0.0.1:{free_port()}/reload", timeout=2).reload()

    def test_build_reloader(self, tmp_path: Path) -> None:
        """The config picks the reloader; without any setting there is none."""
        assert build_reloader(AgentConfig.load(environ={})) is None
        by_cmd = build_reloader(AgentConfig.load(flags={"reload_command": "nginx -s reload"}, environ={}))
        assert isinstance(by_cmd, CommandReloader) and by_cmd.argv == ["nginx", "-s", "reload"]
        url = "http://127.0.0.1:1/-/reload"
        by_url = build_reloader(AgentConfig.load(flags={"reload_url": url}, environ={}))
        assert isinstance(by_url, UrlReloader)
        by_name = build_reloader(AgentConfig.load(flags={"process_name": "nginx"}, environ={}))
        assert isinstance(by_name, SignalReloader) and by_name.sig is signal.SIGHUP


@pytest.fixture
async def http_app() -> AsyncIterator[tuple[str, list[str]]]:
    """An aiohttp app on a free loopback port: /reload and /healthz answer 200, /broken 500, /down 503."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        status = {"/reload": 200, "/healthz": 200, "/broken": 500, "/down": 503}.get(request.path, 404)
        return web.Response(status=status, text="x")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


class TestCheck:
    async def test_staged_placeholder_and_ok(self, tmp_path: Path) -> None:
        """{staged} becomes the staged directory, kept as one argument even with spaces in it."""
        staged = tmp_path / "dir with space"
        staged.mkdir()
        (staged / "app.json").write_text('{"ok": true}')
        cmd = f"{sys.executable} -c \"import json,sys; json.load(open(sys.argv[1]))\" {{staged}}/app.json"
        assert check_argv(cmd, staged)[-1] == f"{staged}/app.json"
        result = await run_check(cmd, staged)
        assert result.ok and result.returncode == 0

    async def test_failed_check_returns_output(self, tmp_path: Path) -> None:
        """A failing check is not ok and carries the command's output for the log."""
        (tmp_path / "app.json").write_text("{broken")
        cmd = f"{sys.executable} -c \"import json,sys; json.load(open(sys.argv[1]))\" {{staged}}/app.json"
        result = await run_check(cmd, tmp_path)
        assert not result.ok and result.returncode == 1
        assert "JSONDecodeError" in result.output

    async def test_no_shell_injection_through_staged(self, tmp_path: Path) -> None:
        """Shell syntax in the template is not interpreted: nothing after ';' runs."""
        marker = tmp_path / "pwned"
        result = await run_check(f"echo {{staged}}; touch {marker}", tmp_path)
        assert result.ok and not marker.exists()

    async def test_timeout_and_missing_command(self, tmp_path: Path) -> None:
        """A check over its time limit fails (returncode None); a missing program fails with 127."""
        slow = await run_check("sleep 30", tmp_path, time_limit=0.3)
        assert not slow.ok and slow.returncode is None
        missing = await run_check("no-such-program-xyz {staged}", tmp_path)
        assert not missing.ok and missing.returncode == 127 and "cannot run" in missing.output


class TestHealth:
    async def test_healthy_app(self, start_app: Callable[..., App]) -> None:
        """An app answering 2xx on the health URL is healthy."""
        port = free_port()
        start_app("--health-port", str(port))
        result = await wait_healthy(f"http://127.0.0.1:{port}/healthz", 10)
        assert result.ok, result.detail

    async def test_unhealthy_within_limit(self, http_app: tuple[str, list[str]]) -> None:
        """An app that keeps answering 503 is unhealthy once the time limit passes."""
        base, _ = http_app
        result = await wait_healthy(f"{base}/down", 0.6, interval=0.1)
        assert not result.ok and "HTTP 503" in result.detail

    async def test_app_died_after_reload(self, start_app: Callable[..., App], tmp_path: Path) -> None:
        """An app that exits on SIGHUP is noticed as dead, not waited for until the time limit."""
        port = free_port()
        app = start_app("--pid-file", str(tmp_path / "app.pid"), "--exit-on-hup", "--health-port", str(port))
        result = await SignalReloader(ProcessFinder(pid_file=tmp_path / "app.pid")).reload()
        health = await wait_healthy(f"http://127.0.0.1:{port}/nope", 30, processes=result.processes)
        assert not health.ok and f"process {app.pid} exited" in health.detail


class TestDebouncer:
    async def test_burst_fires_once(self) -> None:
        """Changes closer together than MIN are one burst: one wait() return with the count."""
        deb = Debouncer(0.2, 5.0)
        for _ in range(5):
            deb.notify()
            await asyncio.sleep(0.01)
        assert await deb.wait() == 5
        assert deb.pending == 0

    async def test_max_bounds_a_never_quiet_stream(self) -> None:
        """A stream that never goes quiet still fires after MAX, before the stream ends."""
        deb = Debouncer(0.3, 0.5)
        total = 60

        async def stream() -> None:
            for _ in range(total):
                deb.notify()
                await asyncio.sleep(0.05)

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(stream())
            first = await deb.wait()
            finished_before_fire = task.done()
        assert not finished_before_fire and 0 < first < total

    async def test_waits_for_first_change(self) -> None:
        """wait() blocks until there is a change; MIN 0 fires right after it."""
        deb = Debouncer(0.0, 0.0)
        waiter = asyncio.create_task(deb.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        deb.notify()
        assert await asyncio.wait_for(waiter, 5) == 1

    def test_bad_bounds(self) -> None:
        """MIN larger than MAX is refused."""
        with pytest.raises(ValueError, match="min_quiet"):
            Debouncer(2.0, 1.0)
