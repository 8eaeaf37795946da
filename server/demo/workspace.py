"""Where the demo puts things: ``./demo-config`` for the agent's files, a temporary work dir
for everything else, and a marker that says a directory is the demo's.

``./demo-config`` is created fresh on every run. An existing one is replaced only when it
holds the marker ``.llm-config-demo`` (a previous run made it) or is empty; anything else is
refused with a message saying what to do, so the demo never deletes a directory it did not
make. The marker (JSON) names the work dir and the processes currently running for the demo
(name, PID, start time), rewritten whenever that changes: ``llm-config demo --stop`` reads it
to stop a demo kept with ``--keep``, and a new run refuses while such a demo still runs. It
never holds a token or a secret.

The work dir (``$TMPDIR/llmcm-demo-*``) holds the server's SQLite store, the logs, the app's
state file and the check's report; it is removed when the demo stops what it started.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.demo.processes import Child, same_process, stop_process
from shared.errors import InvalidInput

DEMO_DIR_NAME = "demo-config"
MARKER = ".llm-config-demo"
WORK_PREFIX = "llmcm-demo-"
# the order in which kept processes are stopped
STOP_ORDER = ("app", "agent", "server")


@dataclass(frozen=True)
class Workspace:
    config_dir: Path
    work_dir: Path

    @property
    def server_data(self) -> Path:
        return self.work_dir / "server"

    def log(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    @property
    def app_state(self) -> Path:
        return self.work_dir / "app-state.json"

    @property
    def app_pid_file(self) -> Path:
        return self.work_dir / "app.pid"

    @property
    def check_report(self) -> Path:
        return self.work_dir / "check-report.jsonl"

    def record(self, children: Sequence[Child]) -> None:
        """Rewrite the marker with the processes running now."""
        processes = {c.name: {"pid": c.pid, "started": c.started} for c in children}
        _write_marker(self.config_dir, {"work_dir": str(self.work_dir), "processes": processes})

    def remove_work_dir(self) -> None:
        _remove_work_dir(self.work_dir)


def prepare(config_dir: Path) -> Workspace:
    """A fresh ``config_dir`` (see the module docstring) and a new work dir."""
    if config_dir.is_symlink() or (config_dir.exists() and not config_dir.is_dir()):
        raise InvalidInput(
            f"{config_dir} exists and is not a directory the demo made; "
            "move it away or run the demo in another directory"
        )
    if config_dir.exists():
        marker = _read_marker(config_dir)
        if marker is None:
            if any(config_dir.iterdir()):
                raise InvalidInput(
                    f"{config_dir} exists and was not made by the demo (no {MARKER} in it); the demo "
                    "writes its config files there, so move it away or run the demo in another directory"
                )
            config_dir.rmdir()
        else:
            running = _running(marker)
            if running:
                pids = ", ".join(f"{name} {proc.pid}" for name, proc in running)
                raise InvalidInput(
                    f"a demo left running with --keep still uses {config_dir} ({pids}); "
                    "stop it first with 'llm-config demo --stop'"
                )
            _remove_work_dir(Path(str(marker.get("work_dir", ""))))
            shutil.rmtree(config_dir)
    config_dir.mkdir(mode=0o755)
    work = Workspace(config_dir, Path(tempfile.mkdtemp(prefix=WORK_PREFIX)))
    work.record([])
    return work


def stop_kept(config_dir: Path) -> tuple[list[tuple[str, int]], Path | None]:
    """Stop the processes a kept demo in ``config_dir`` runs and remove its work dir.

    Returns what was stopped (name, PID) and the work dir removed; ``InvalidInput`` when
    ``config_dir`` holds no demo. The config files stay.
    """
    marker = _read_marker(config_dir) if config_dir.is_dir() and not config_dir.is_symlink() else None
    if marker is None:
        raise InvalidInput(f"no demo found in {config_dir} (no {MARKER} in it): nothing to stop")
    stopped = []
    for name, proc in _running(marker):
        stop_process(proc)
        stopped.append((name, proc.pid))
    work = Path(str(marker.get("work_dir", "")))
    removed = work if _remove_work_dir(work) else None
    _write_marker(config_dir, {"work_dir": "", "processes": {}})
    return stopped, removed


def _running(marker: dict[str, Any]) -> list[tuple[str, Any]]:
    """The marker's processes that still run (same PID and start time), in stop order."""
    found = []
    processes = marker.get("processes")
    if not isinstance(processes, dict):
        return []
    names = sorted(processes, key=lambda n: STOP_ORDER.index(n) if n in STOP_ORDER else -1)
    for name in names:
        entry = processes[name]
        if not isinstance(entry, dict):
            continue
        try:
            pid, started = int(entry["pid"]), float(entry["started"])
        except (KeyError, TypeError, ValueError):
            continue
        proc = same_process(pid, started)
        if proc is not None:
            found.append((name, proc))
    return found


def _read_marker(config_dir: Path) -> dict[str, Any] | None:
    path = config_dir / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(config_dir: Path, data: dict[str, Any]) -> None:
    path = config_dir / MARKER
    tmp = config_dir / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"demo": 1, **data}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _remove_work_dir(path: Path) -> bool:
    """Remove a work dir of the demo; anything not named like one is left alone."""
    if not path.name.startswith(WORK_PREFIX) or path.is_symlink() or not path.is_dir():
        return False
    if path.parent.resolve() != Path(tempfile.gettempdir()).resolve():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
