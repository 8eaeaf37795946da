"""The processes the demo starts, and stopping every one of them by its PID.

Each child runs in a session of its own, so Ctrl-C in the terminal reaches only the demo,
which then stops its children in reverse start order (app, agent, server): SIGTERM, up to
``STOP_TIMEOUT`` seconds, then SIGKILL. ``Children.stop_all`` ignores further Ctrl-C while
it runs and is safe to call twice; ``detach`` hands the children over to the user
(``--keep``). A child's identity is its PID plus its start time, so a PID the system
reuses later is never taken for one of ours (see ``same_process``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shared.errors import Unavailable

STOP_TIMEOUT = 10.0
# settings of the user's own server, agent or CLI that must not leak into the demo's processes
_SCRUBBED_PREFIXES = ("LLMCM_", "CONFIG_", "CACHE_")
_SCRUBBED_NAMES = frozenset({"NAMESPACES", "ENVIRONMENT", "TENANT_ID", "SYNC_INTERVAL", "RELOAD_SIGNAL"})
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def child_env(base: Mapping[str, str], **settings: str) -> dict[str, str]:
    """``base`` without server/agent settings, the project importable, plus ``settings``."""
    env = {k: v for k, v in base.items() if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES}
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = _PROJECT_ROOT + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def same_process(pid: int, started: float) -> psutil.Process | None:
    """The live process ``pid`` if it is the one that started at ``started``, else None."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.5 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def stop_process(proc: psutil.Process, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, SIGKILL; returns once it has exited (a zombie waiting for its parent
    to reap it counts: it runs no more)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    with contextlib.suppress(psutil.Error):
                        proc.wait(0)  # reaps it if it is our child
                    return
                proc.wait(0.1)
                return
            except psutil.NoSuchProcess:
                return
            except psutil.TimeoutExpired:
                continue


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for a short, bounded job (stopping the children)."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    started: float
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 3) -> str:
        if self.log is None:
            return ""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


@dataclass
class Children:
    """Everything the demo started, in start order; ``on_change`` sees the live list."""

    on_change: Callable[[list[Child]], None] | None = None
    live: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log: Path | None,
        pipe: bool = False,
    ) -> Child:
        """Start ``argv``; its output goes to ``log`` (or a pipe, for short commands we read)."""
        with open(log if log is not None else os.devnull, "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else out,
                stderr=out,
                start_new_session=True,
            )
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            started = time.time()
        child = Child(name, proc, started, log)
        self.live.append(child)
        self._changed()
        return child

    def forget(self, child: Child) -> None:
        """A short command finished: it is no longer ours to stop."""
        if child in self.live:
            self.live.remove(child)
            self._changed()

    def check_alive(self) -> None:
        """``Unavailable`` naming the first long-lived child that exited on its own."""
        for child in self.live:
            code = child.exited()
            if code is not None:
                tail = child.log_tail()
                where = f"; its log ends: {tail}" if tail else ""
                raise Unavailable(f"the {child.name} (pid {child.pid}) exited with status {code}{where}")

    def stop_all(self) -> list[Child]:
        """Stop every child, newest first; the ones that were still running are returned."""
        stopped: list[Child] = []
        with no_interrupts():
            while self.live:
                child = self.live.pop()
                if child.exited() is None:
                    stopped.append(child)
                    child.proc.terminate()
                    try:
                        child.proc.wait(STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        child.proc.kill()
                        child.proc.wait(STOP_TIMEOUT)
                if child.proc.stdout is not None:
                    child.proc.stdout.close()
            self._changed()
        return stopped

    def detach(self) -> list[Child]:
        """Leave the children running (``--keep``); the demo no longer stops them."""
        kept, self.live = self.live, []
        return kept

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(list(self.live))
