"""kill -9 of the agent while it applies: the output directory always holds one complete set,
and a restarted agent leaves no temporary directory behind and catches up."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agent.fileset import DATA_LINK, DATA_TMP, LINK_TMP, LOCK_NAME, TIMESTAMPED_RE, FileSet
from tests.agent.agent_support import AgentProcess, Setup, Writer, read_json, wait_until
from tests.support import ServerProcess

KEYS = ("a", "b", "c")


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


def check_one_complete_set(root: Path) -> str:
    """The set ``..data`` points at is whole and as the agent wrote it; returns its directory."""
    current = FileSet(root).current()
    assert current is not None
    assert current.drifted == ()
    assert sorted(current.files) == [f"crash/{key}.json" for key in KEYS]
    for key in KEYS:
        assert read_json(root / "crash" / f"{key}.json")["key"] == key  # readable through the visible path
    return current.directory


def leftovers(root: Path, current: str) -> set[str]:
    """Timestamped directories other than the applied one, and temporary links."""
    names = set(os.listdir(root))
    return {n for n in names if (TIMESTAMPED_RE.fullmatch(n) and n != current) or n in (DATA_TMP, LINK_TMP)}


def test_kill9_during_applies_leaves_one_complete_set(setup: Setup) -> None:
    for key in KEYS:
        setup.put("crash", key, {"key": key, "i": 0})
    root = setup.tmp / "config"
    agent = AgentProcess(setup.env("crash"), "watch", log_path=setup.tmp / "agent.log")
    total = 600
    done, stop = threading.Event(), threading.Event()

    def write() -> None:
        writer = Writer(setup.server.port, setup.token)
        try:
            for i in range(1, total + 1):
                if stop.is_set():
                    return
                writer.put("crash", KEYS[i % len(KEYS)], {"key": KEYS[i % len(KEYS)], "i": i})
        finally:
            writer.close()
            done.set()

    agent.start()
    try:
        agent.wait_for("watch_synced")
        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        kills = 0
        for _ in range(3):
            applied = len(agent.events("applied"))
            wait_until(lambda a=applied: len(agent.events("applied")) >= a + 5, timeout=30, what="applies")
            agent.kill9()  # in the middle of a stream of applies
            kills += 1
            left = leftovers(root, check_one_complete_set(root))  # what the kill left behind
            agent.start()
            agent.wait_for("watch_synced")
            check_one_complete_set(root)
            assert not left & set(os.listdir(root))  # recovery removed it
        assert done.wait(60), "writer did not finish"
        thread.join(timeout=10)
        last = {key: setup.http.get(f"/v1/configs/crash/{key}?env=production").json["value"] for key in KEYS}
        for key in KEYS:
            path = root / "crash" / f"{key}.json"
            wait_until(lambda p=path, k=key: read_json(p) == last[k], timeout=30, what=f"final {key}")
        time.sleep(0.3)
        current = check_one_complete_set(root)
        assert leftovers(root, current) == set()
        assert set(os.listdir(root)) == {current, DATA_LINK, LOCK_NAME, "crash"}
        assert kills == 3
    finally:
        stop.set()
        agent.stop()
    assert "apply_failed" not in agent.log_text()
