"""Telling the app about a new set, checking the set first, and checking the app afterwards.

- ``ProcessFinder`` finds the app by pid file, process name or command-line regex
  (psutil; in a pod with ``shareProcessNamespace: true``). Of several matches, only
  the topmost are kept (the nginx master, not its workers); the agent itself and its
  ancestors never match.
- Reloaders: ``SignalReloader`` (default SIGHUP), ``CommandReloader`` (argv, no
  shell, with a timeout so a hanging command cannot wedge the agent), ``UrlReloader``
  (HTTP POST). ``build_reloader`` picks one from the config.
- ``Debouncer`` implements ``--wait MIN:MAX``: after a change, wait for MIN of quiet,
  at most MAX since the first change, then fire once for the whole burst.
- ``run_check`` runs ``--check-cmd`` against a staged set, ``{staged}`` replaced by
  its directory; ``wait_healthy`` polls ``--health-url`` after a reload and notices
  when the signalled process died.

Command output is returned to the caller, never put into an error message: a tool
like ``nginx -t`` may quote the configuration it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from agent import http1
from agent.config import AgentConfig
from agent.errors import ReloadFailed
from shared.models import redact_url

if TYPE_CHECKING:
    import psutil

log = structlog.get_logger("agent.reload")

OUTPUT_LIMIT = 16 << 10  # bytes of command output kept (the tail)
REPLY_LIMIT = 1 << 20  # bytes an app's answer to --reload-url / --health-url may have


# ---- finding the app


class ProcessFinder:
    """Finds the app's process(es) by exactly one of pid file, name, or command-line regex."""

    def __init__(self, *, pid_file: Path | None = None, name: str = "", cmdline: str = "") -> None:
        if sum(bool(x) for x in (pid_file, name, cmdline)) != 1:
            raise ValueError("give exactly one of pid_file, name, cmdline")
        self.pid_file = pid_file
        self.name = name
        self.cmdline = re.compile(cmdline) if cmdline else None
        if pid_file is not None:
            self.description = f"pid file {pid_file}"
        elif name:
            self.description = f"process name {name!r}"
        else:
            self.description = f"command line /{cmdline}/"

    def find(self) -> list[psutil.Process]:
        """The matching live processes; ``ReloadFailed`` when there are none."""
        found = self._from_pid_file() if self.pid_file is not None else self._scan()
        if not found:
            raise ReloadFailed(f"no running process found by {self.description}")
        return found

    def _from_pid_file(self) -> list[psutil.Process]:
        assert self.pid_file is not None
        try:
            text = self.pid_file.read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            raise ReloadFailed(f"pid file {self.pid_file} does not exist (is the app running?)") from None
        except OSError as exc:
            raise ReloadFailed(f"cannot read pid file {self.pid_file}: {exc.strerror}") from None
        if not text.isdigit() or int(text) <= 0:
            raise ReloadFailed(f"pid file {self.pid_file} does not hold a process id")
        import psutil

        try:
            proc = psutil.Process(int(text))
        except psutil.NoSuchProcess:
            raise ReloadFailed(f"pid file {self.pid_file} names pid {text}, which is not running") from None
        return [proc] if alive(proc) else []

    def _scan(self) -> list[psutil.Process]:
        import psutil

        excluded = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        matches: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["pid", "ppid", "name", "cmdline", "status"]):
            info = proc.info
            if info["pid"] in excluded or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            by_name = bool(self.name) and info["name"] == self.name
            by_cmdline = self.cmdline is not None and self.cmdline.search(" ".join(info["cmdline"] or ()))
            if by_name or by_cmdline:
                matches[info["pid"]] = proc
        return [p for p in matches.values() if p.info["ppid"] not in matches]


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie has exited; psutil's is_running says yes to it)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---- reloading


@dataclass(frozen=True, slots=True)
class ReloadResult:
    method: str  # "signal", "command" or "url"
    pids: tuple[int, ...] = ()  # the processes signalled
    processes: tuple[psutil.Process, ...] = ()  # the same, for wait_healthy to watch
    output: str = ""


class Reloader(Protocol):
    description: str

    async def reload(self) -> ReloadResult: ...


class SignalReloader:
    def __init__(self, finder: ProcessFinder, sig: signal.Signals = signal.SIGHUP) -> None:
        self.finder = finder
        self.sig = sig
        self.description = f"{sig.name} to {finder.description}"

    async def reload(self) -> ReloadResult:
        return await asyncio.to_thread(self._send)

    def _send(self) -> ReloadResult:
        import psutil

        sent: list[psutil.Process] = []
        for proc in self.finder.find():
            try:
                proc.send_signal(self.sig)  # psutil refuses a pid reused by another process
                sent.append(proc)
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                raise ReloadFailed(
                    f"not permitted to send {self.sig.name} to pid {proc.pid} "
                    "(same user? shareProcessNamespace: true in a pod?)"
                ) from None
        if not sent:
            raise ReloadFailed(
                f"the process found by {self.finder.description} exited before {self.sig.name}"
            )
        log.info("app_signalled", signal=self.sig.name, pids=[p.pid for p in sent])
        return ReloadResult("signal", tuple(p.pid for p in sent), tuple(sent))


class CommandReloader:
    def __init__(self, command: str, timeout: float = 30.0) -> None:
        self.argv = shlex.split(command)
        self.timeout = timeout
        self.description = f"command {self.argv[0]}"

    async def reload(self) -> ReloadResult:
        code, output = await run_command(self.argv, self.timeout)
        if code != 0:
            reason = "timed out" if code is None else f"exited with status {code}"
            exc = ReloadFailed(f"reload command {self.argv[0]} {reason}")
            exc.output = output
            raise exc
        log.info("app_reload_command_ran", command=self.argv[0])
        return ReloadResult("command", output=output)


class UrlReloader:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self.description = f"POST {redact_url(url)}"

    async def reload(self) -> ReloadResult:
        try:
            response = await http1.request(
                "POST", self.url, body=b"", time_limit=self.timeout, max_body=REPLY_LIMIT
            )
        except (OSError, TimeoutError, http1.BadResponse) as exc:
            raise ReloadFailed(f"{self.description} failed: {type(exc).__name__}") from None
        output = response.body[:OUTPUT_LIMIT].decode(errors="replace")
        if not 200 <= response.status < 300:
            exc2 = ReloadFailed(f"{self.description} answered HTTP {response.status}")
            exc2.output = output
            raise exc2
        log.info("app_reload_url_posted", url=redact_url(self.url), status=response.status)
        return ReloadResult("url", output=output)


def build_reloader(cfg: AgentConfig) -> Reloader | None:
    """The reloader the config asks for; None when the app is not to be told."""
    if cfg.pid_file is not None or cfg.process_name or cfg.process_cmdline:
        finder = ProcessFinder(pid_file=cfg.pid_file, name=cfg.process_name, cmdline=cfg.process_cmdline)
        return SignalReloader(finder, cfg.reload_signal)
    if cfg.reload_command:
        return CommandReloader(cfg.reload_command, cfg.reload_timeout)
    if cfg.reload_url:
        return UrlReloader(cfg.reload_url, cfg.reload_timeout)
    return None


# ---- commands


async def run_command(argv: Sequence[str], time_limit: float) -> tuple[int | None, str]:
    """Run ``argv`` (no shell); (exit status, or None when killed at ``time_limit`` seconds;
    the tail of stdout+stderr)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
    except OSError as exc:
        return 127, f"cannot run {argv[0]}: {exc.strerror}"
    tail = bytearray()

    async def collect() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail.extend(chunk)
            del tail[:-OUTPUT_LIMIT]
        await proc.wait()

    try:
        await asyncio.wait_for(collect(), time_limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return None, tail.decode(errors="replace")
    return proc.returncode, tail.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    returncode: int | None  # None: timed out
    output: str
    argv: tuple[str, ...]


def check_argv(template: str, staged: Path) -> list[str]:
    """``template`` split like a shell would (no shell runs), ``{staged}`` replaced in each word."""
    return [word.replace("{staged}", str(staged)) for word in shlex.split(template)]


async def run_check(template: str, staged: Path, time_limit: float = 30.0) -> CheckResult:
    """Run ``--check-cmd`` against the staged set; ok when it exits 0 within ``time_limit``."""
    argv = check_argv(template, staged)
    code, output = await run_command(argv, time_limit)
    result = CheckResult(code == 0, code, output, tuple(argv))
    if result.ok:
        log.info("check_passed", command=argv[0])
    else:
        log.warning("check_failed", command=argv[0], status=code if code is not None else "timeout")
    return result


# ---- after the reload


@dataclass(frozen=True, slots=True)
class HealthResult:
    ok: bool
    detail: str


async def wait_healthy(
    url: str,
    time_limit: float,
    *,
    processes: Sequence[psutil.Process] = (),
    interval: float = 0.2,
) -> HealthResult:
    """Poll ``url`` until it answers 2xx (ok) or ``time_limit`` seconds pass, failing at once if a
    process in ``processes`` (the ones just signalled) has exited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + time_limit
    shown = redact_url(url)
    last = "no answer yet"
    while True:
        for proc in processes:
            if not alive(proc):  # a cheap /proc read: no worker thread to wait for
                return HealthResult(False, f"app process {proc.pid} exited after the reload")
        remaining = deadline - loop.time()
        if remaining <= 0:
            return HealthResult(False, f"{shown} not healthy within {time_limit:g} s ({last})")
        try:
            response = await http1.request(
                "GET", url, time_limit=min(remaining, 2.0), max_body=REPLY_LIMIT
            )
        except (OSError, TimeoutError, http1.BadResponse) as exc:
            last = f"last try {type(exc).__name__}"
        else:
            if 200 <= response.status < 300:
                return HealthResult(True, f"{shown} answered HTTP {response.status}")
            last = f"last answer HTTP {response.status}"
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))


# ---- debounce


class Debouncer:
    """``--wait MIN:MAX``: ``notify()`` on each change; ``wait()`` returns once per burst.

    A burst ends after ``min_quiet`` seconds without a change, or ``max_wait`` seconds
    after its first change, whichever comes first. Use on one event loop.
    """

    def __init__(self, min_quiet: float, max_wait: float) -> None:
        if not 0 <= min_quiet <= max_wait:
            raise ValueError("need 0 <= min_quiet <= max_wait")
        self.min_quiet = min_quiet
        self.max_wait = max_wait
        self._event = asyncio.Event()
        self._count = 0
        self._first = 0.0
        self._last = 0.0

    def notify(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._count == 0:
            self._first = now
        self._last = now
        self._count += 1
        self._event.set()

    @property
    def pending(self) -> int:
        return self._count

    async def wait(self) -> int:
        """Wait for a burst to end; returns how many changes it held."""
        loop = asyncio.get_running_loop()
        while self._count == 0:
            self._event.clear()
            await self._event.wait()
        while True:
            until = min(self._last + self.min_quiet, self._first + self.max_wait)
            remaining = until - loop.time()
            if remaining <= 0:
                break
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)
        count, self._count = self._count, 0
        self._event.clear()
        return count
