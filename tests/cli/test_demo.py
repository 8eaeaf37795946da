"""``llm-config demo`` as a user runs it: a subprocess in a fresh current directory.

The demo starts its own server, agent and app; these tests check what it prints, what it
leaves in ``./demo-config`` and that none of its processes outlives it (found by the PIDs
it prints and by scanning for processes that name its work dir). ``TMPDIR`` points into the
test's directory, so the work dir the demo creates and removes is the test's to inspect.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from server.demo.sample_app import mask
from tests.support import REPO

_SCRIPT = Path(sys.executable).with_name("llm-config")
DEMO_CMD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "server.cli.main"]
FULL_KEY = re.compile(r"sk-ant-demo-[0-9a-f]{6,}")
STEPS = [
    "[1/7] Start a server on a temporary SQLite store",
    "[2/7] Load LLM configuration",
    "[3/7] Start the agent (watch mode) and the sample app",
    "[4/7] Change the primary model",
    "[5/7] Roll back",
    "[6/7] Rotate the API key",
    "[7/7] Break a config: the agent's check rejects it",
]


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Place:
    cwd: Path
    tmp: Path  # the demo's TMPDIR

    def run(self, *args: str, timeout: float = 90) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCM_")}
        env.update(
            HOME=str(self.cwd.parent),
            XDG_CONFIG_HOME=str(self.cwd.parent / "xdg"),
            TMPDIR=str(self.tmp),
            PYTHONPATH=str(REPO),
        )
        proc = subprocess.run(
            [*DEMO_CMD, "demo", *args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    @property
    def config(self) -> Path:
        return self.cwd / "demo-config"


@pytest.fixture
def place(tmp_path: Path) -> Place:
    cwd, tmp = tmp_path / "here", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    return Place(cwd, tmp)


def printed_pids(out: str) -> dict[str, int]:
    """The PIDs the demo announced as it started each process."""
    found = {name: int(pid) for name, pid in re.findall(r"\b(server|agent|app) pid (\d+)", out)}
    assert set(found) == {"server", "agent", "app"}, out
    return found


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line mentions ``text``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and text in " ".join(proc.info["cmdline"] or ()):
                found.append(proc.info["pid"])
    return found


@contextlib.contextmanager
def stopped_afterwards(pids: list[int]) -> Iterator[None]:
    """Whatever happens in the test, the processes the demo left running are stopped (by PID)."""
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                proc.terminate()
                proc.wait(10)


class TestWalkthrough:
    def test_demo_runs_every_step_and_leaves_nothing_running(self, place: Place) -> None:
        """Exit 0, every step shown with its markers, three measured reload times, the refusal as an
        expected step, every process stopped, the final set in ./demo-config, the key never in full."""
        run = place.run()
        assert run.code == 0, run.out + run.err
        assert "Traceback" not in run.out + run.err
        positions = [run.out.find(step) for step in STEPS]
        assert -1 not in positions and positions == sorted(positions), run.out
        assert "[done]" in run.out

        reloads = re.findall(r"ok  app reloaded (\d+) ms after the write", run.out)
        assert len(reloads) == 3, run.out
        assert re.search(
            r"write -> app reloaded: change model \d+ ms, roll back \d+ ms, rotate key \d+ ms", run.out
        )
        assert re.search(
            r"!!  check refused the set: primary-model: fallback chain repeats the primary model", run.out
        )
        assert "demo-agent  production  revision" in run.out and "check_failed" in run.out

        pids = printed_pids(run.out)
        stopped = dict(re.findall(r"(server|agent|app) \(pid (\d+)\)", run.out.split("[done]")[1]))
        assert {name: int(pid) for name, pid in stopped.items()} == pids
        assert not [name for name, pid in pids.items() if running(pid)]
        work_dir = re.search(r"work dir \(store, logs\): (\S+)", run.out)
        assert work_dir is not None and work_dir.group(1).startswith(str(place.tmp))
        assert not Path(work_dir.group(1)).exists()
        assert processes_naming(work_dir.group(1)) == []
        assert processes_naming(str(place.config)) == []

        files = place.config / "llm-gateway"
        assert sorted(p.name for p in files.iterdir()) == [
            "primary-model.json",
            "routing.json",
            "support-prompt.json",
        ]
        endpoint = json.loads((files / "primary-model.json").read_text())
        assert endpoint["model"] == "claude-sonnet-4-5"
        assert [f["model"] for f in endpoint["fallback"]] == ["gpt-4o", "anthropic.claude-3-5-sonnet"]
        assert stat.S_IMODE((files / "primary-model.json").stat().st_mode) == 0o600
        routing = json.loads((files / "routing.json").read_text())
        assert routing["rate_limit"]["requests_per_minute"] == 3000  # the production override
        assert routing["request_timeout_ms"] == 20000

        key = endpoint["api_key"]
        assert key.startswith("sk-ant-demo-")
        assert key not in run.out + run.err
        assert FULL_KEY.findall(run.out + run.err) == []
        assert f"-> {mask(key)}" in run.out  # the rotated key, masked

    def test_a_second_run_replaces_its_own_directory(self, place: Place) -> None:
        """./demo-config from an earlier run is made fresh; a stray file in it does not survive."""
        place.config.mkdir()
        (place.config / ".llm-config-demo").write_text('{"demo": 1, "processes": {}}\n')
        (place.config / "stale.json").write_text("{}")
        run = place.run()
        assert run.code == 0, run.out + run.err
        assert not (place.config / "stale.json").exists()
        assert (place.config / "llm-gateway" / "routing.json").is_file()
        assert not [name for name, pid in printed_pids(run.out).items() if running(pid)]


class TestRefusals:
    def test_a_directory_it_did_not_make_is_refused(self, place: Place) -> None:
        """Nothing is started or deleted when ./demo-config belongs to someone else."""
        place.config.mkdir()
        (place.config / "mine.txt").write_text("keep me")
        run = place.run(timeout=30)
        assert run.code == 1
        assert "demo-config exists and was not made by the demo" in run.err
        assert "Traceback" not in run.err and "[1/7]" not in run.out
        assert (place.config / "mine.txt").read_text() == "keep me"
        assert list(place.tmp.iterdir()) == []

    def test_keep_and_stop(self, place: Place) -> None:
        """--keep leaves a working server, agent and app with URLs and token printed; a new run is
        refused meanwhile; --stop ends them and removes the work dir."""
        run = place.run("--keep")
        pids = printed_pids(run.out) if run.code == 0 else {}
        with stopped_afterwards(list(pids.values())):
            assert run.code == 0, run.out + run.err
            assert "[kept running]" in run.out and "llm-config demo --stop" in run.out
            assert all(running(pid) for pid in pids.values())
            url = re.search(r"REST +http://127\.0\.0\.1:(\d+)", run.out)
            token = re.search(r"token +(lcm_\S+)", run.out)
            assert url is not None and token is not None
            conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=10)
            try:
                conn.request("GET", "/v1/whoami", headers={"Authorization": f"Bearer {token.group(1)}"})
                assert conn.getresponse().status == 200
            finally:
                conn.close()

            again = place.run(timeout=30)
            assert again.code == 1 and "still uses" in again.err and "llm-config demo --stop" in again.err

            stop = place.run("--stop", timeout=60)
            assert stop.code == 0, stop.out + stop.err
            for name, pid in pids.items():
                assert f"stopped {name} (pid {pid})" in stop.out
            assert not [name for name, pid in pids.items() if running(pid)]
            assert list(place.tmp.iterdir()) == []
            assert (place.config / "llm-gateway" / "primary-model.json").is_file()
