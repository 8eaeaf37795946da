"""Torn reads: a reader process parses every managed file in a tight loop while the agent
applies 2,000 changes; it never sees a partial file, a mix of two sets, or an older set."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent.agent_support import Setup, Writer, read_json, running, wait_until
from tests.agent.torn_reader import PAD
from tests.support import ServerProcess

READER = Path(__file__).with_name("torn_reader.py")
TEMPLATE = "i={{ configs.torn.a.i }}\npad={{ configs.torn.a.pad }}\nend\n"
CHANGES = 2000


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


def value(i: int) -> dict[str, object]:
    return {"i": i, "pad": "abcdefgh"[i % 8] * PAD}


def test_no_torn_partial_or_mixed_reads(setup: Setup) -> None:
    """2,000 changes, each rendered into three files (JSON and two templates): every round of
    reads sees one complete set, and sets only move forward."""
    template = setup.tmp / "t.j2"
    template.write_text(TEMPLATE)
    setup.put("torn", "a", value(0))
    root = setup.tmp / "config"
    args = ("watch", "--template", f"t1.conf={template}", "--template", f"conf/t2.conf={template}")
    with running(setup.env("torn"), *args, log_path=setup.tmp / "agent.log") as agent:
        agent.wait_for("watch_synced")
        stop = setup.tmp / "stop"
        reader = subprocess.Popen(
            [sys.executable, str(READER), "--root", str(root), "--files", "torn/a.json,t1.conf,conf/t2.conf",
             "--stop-file", str(stop), "--limit", "150"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout is not None
            assert reader.stdout.readline().strip() == "ready"
            writer = Writer(setup.server.port, setup.token)
            started = time.monotonic()
            for i in range(1, CHANGES + 1):
                writer.put("torn", "a", value(i))
            writer.close()
            last = root / "torn" / "a.json"
            wait_until(lambda: read_json(last)["i"] == CHANGES, timeout=60, what="last change")
            elapsed = time.monotonic() - started
            stop.touch()
            out, _ = reader.communicate(timeout=30)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait(timeout=10)
        applied = len(agent.events("applied"))
    summary = json.loads(out.strip().splitlines()[-1])
    print(f"\n{CHANGES} changes in {elapsed:.1f} s, {applied} sets applied, reader: {summary}")
    assert summary["torn"] == 0, summary
    assert summary["mixed"] == 0, summary
    assert summary["backwards"] == 0, summary
    assert summary["last"] == CHANGES
    assert summary["rounds"] > 100 and summary["distinct"] > 10, summary  # it really read while sets changed
    assert applied > 10
