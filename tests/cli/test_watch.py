"""`llm-config watch` follows changes of one config as they happen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from tests.cli.conftest import Cli
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


def test_watch_since_replays_changes_as_json(cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
    """--since REV replays the key's changes after REV, in order, ending with a deletion."""
    http = Http(server.port, tenant["token"])
    path = "/v1/configs/replayed/app/model"
    revisions = [http.put(f"{path}?env=global", {"value": {"model": "a"}}).json["revision"]]
    http.put("/v1/configs/replayed/app/other?env=global", {"value": {"x": 1}})  # another key: not shown
    revisions.append(http.put(f"{path}?env=production", {"value": {"model": "b"}}).json["revision"])
    revisions.append(http.delete(f"{path}?env=production").json["revision"])  # global shows again
    revisions.append(http.delete(f"{path}?env=global").json["revision"])
    since = str(revisions[0] - 1)
    run = cli("watch", "replayed/app", "model", "--env", "prod", "--since", since, "--count", "4", "--json")
    assert run.code == 0, run.err
    shown = [json.loads(line) for line in run.out.splitlines()]
    assert [s["revision"] for s in shown] == revisions
    assert [s["value"] for s in shown] == [{"model": "a"}, {"model": "b"}, {"model": "a"}, None]
    assert [s.get("deleted", False) for s in shown] == [False, False, False, True]
    assert {(s["namespace"], s["key"], s["environment"]) for s in shown} == {
        ("replayed/app", "model", "production")
    }


def test_watch_human_output(cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
    """Without --json each change is a heading line naming the revision, then the value."""
    http = Http(server.port, tenant["token"])
    first = http.put("/v1/configs/human/app/model?env=global", {"value": {"model": "a"}}).json["revision"]
    run = cli("watch", "human/app", "model", "--since", str(first - 1), "--count", "1")
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        f"-- human/app/model in global: revision {first} (put)",
        "{",
        '  "model": "a"',
        "}",
    ]


def test_watch_refused_exits_with_error(cli: Cli) -> None:
    """A watch the server refuses (bad token) ends at once with the documented exit code."""
    run = cli.with_token("lcm_bogus")("watch", "denied/app", "model", "--count", "1")
    assert run.code == 5
    assert run.err.startswith("error: ")
    assert run.out == ""
