"""`llm-config watch` follows changes of one config as they happen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from tests.support import REPO, Http, ServerProcess


def test_watch_prints_current_value_then_each_change(
    server: ServerProcess, tenant: dict[str, str], tmp_path: Path
) -> None:
    """watch shows the resolved value, then each new one; a change to another key is not shown."""
    http = Http(server.port, tenant["token"])
    assert http.put("/v1/configs/watched/app/model?env=global", {"value": {"model": "a"}}).status == 201
    env = {
        **os.environ,
        "LLMCM_SERVER": f"http://127.0.0.1:{server.port}",
        "LLMCM_TOKEN": tenant["token"],
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli.main",
            "watch",
            "watched/app",
            "model",
            "--env",
            "production",
            "--count",
            "2",
            "--json",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)  # a hung watcher fails the test instead of hanging it
    watchdog.start()
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["value"] == {"model": "a"}
        http.put("/v1/configs/watched/app/other?env=global", {"value": {"x": 1}})  # another key: not shown
        http.put("/v1/configs/watched/app/model?env=production", {"value": {"model": "b"}})
        assert json.loads(proc.stdout.readline())["value"] == {"model": "b"}
        http.put("/v1/configs/watched/app/model?env=global", {"value": {"model": "c", "t": 1}})
        assert json.loads(proc.stdout.readline())["value"] == {"model": "b", "t": 1}
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert out == ""  # --count 2: it stopped after the two changes
