"""The server goes away and comes back: a watching agent misses nothing, and an agent restarted
meanwhile serves from its encrypted cache, then syncs when the server returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.agent.agent_support import Setup, read_json, running, wait_until
from tests.support import Http, ServerProcess, free_port


@pytest.fixture
def setup(fresh_server: ServerProcess, tmp_path: Path) -> Setup:
    return Setup(fresh_server, fresh_server.token, fresh_server.tenant_id, tmp_path)


def files(root: Path) -> dict[str, object]:
    edge = root / "edge"
    return {p.stem: read_json(p) for p in sorted(edge.iterdir())} if edge.exists() else {}


def write_while_unreachable(server: ServerProcess, setup: Setup) -> None:
    """Changes made on the same data while the agent cannot reach the server: it runs on other
    ports for the writes, then comes back on its own (kill -9 before, kill -9 after)."""
    port, grpc_port = server.port, server.grpc_port
    server.port, server.grpc_port = free_port(), free_port()
    server.start()
    try:
        setup.put("edge", "a", {"v": 2})
        setup.put("edge", "b", {"v": 1})
        setup.delete("edge", "gone")
        setup.put("edge", "a", {"v": 3})
    finally:
        server.kill9()
        server.port, server.grpc_port = port, grpc_port


def test_changes_made_while_the_server_was_down_are_not_missed(setup: Setup) -> None:
    """kill -9 of the server; writes happen before the agent can reconnect; the server comes back
    on the same port and data: the watch resumes from its revision and every change lands (puts,
    a new key, a delete), none applied twice."""
    setup.put("edge", "a", {"v": 1})
    setup.put("edge", "gone", {"v": 1})
    root = setup.tmp / "config"
    with running(setup.env("edge"), "watch", log_path=setup.tmp / "agent.log") as agent:
        agent.wait_for("watch_synced")
        assert files(root) == {"a": {"v": 1}, "gone": {"v": 1}}
        setup.server.kill9()
        agent.wait_for("watch_connection_lost")
        write_while_unreachable(setup.server, setup)
        assert files(root) == {"a": {"v": 1}, "gone": {"v": 1}}  # nothing reached the agent yet
        setup.server.start()
        want = {"a": {"v": 3}, "b": {"v": 1}}
        wait_until(lambda: files(root) == want, timeout=40, what="every change made during the outage")
        assert agent.wait_for("watch_resumed")["after_revision"] == 2
        assert agent.health()[0] == 200
        time.sleep(0.5)
        assert files(root) == want
        revisions = [e["revision"] for e in agent.events("applied")]
        assert revisions == sorted(set(revisions)), revisions  # each set once, never an older one


def test_restarted_agent_serves_offline_from_the_cache_then_syncs(setup: Setup) -> None:
    """Server down, agent restarted into an empty directory: the cache fills it, the read API
    answers, readiness holds within --max-stale; when the server is back, new changes arrive."""
    setup.put("edge", "a", {"v": 1})
    assert setup.http.put("/v1/secrets/keys/edge", {"value": "sk-edge-CACHED-7777"}).status in (200, 201)
    setup.put("edge", "key", {"k": "", "secrets": [{"field_path": "$.k", "secret_ref": "keys/edge"}]})
    with running(setup.env("edge"), "watch", log_path=setup.tmp / "first.log") as agent:
        agent.wait_for("watch_synced")
    setup.server.kill9()
    fresh = setup.tmp / "fresh"
    env = setup.env("edge", CONFIG_DIR=str(fresh))
    with running(env, "run", "--standalone", "--max-stale", "1h", log_path=setup.tmp / "edge.log") as agent:
        agent.wait_for("applied_from_cache")
        assert files(fresh) == {"a": {"v": 1}, "key": {"k": "sk-edge-CACHED-7777", "secrets": [
            {"field_path": "$.k", "secret_ref": "keys/edge"}]}}
        assert (fresh / "edge" / "key.json").stat().st_mode & 0o777 == 0o600
        wait_until(lambda: agent.health()[0] == 200, what="ready from the cache")
        local = Http(agent.port)
        reply = local.get("/v1/configs/edge/a")
        assert reply.status == 200 and reply.json["value"] == {"v": 1}
        assert reply.headers["cache-control"] == "no-store"
        assert local.get("/v1/configs/edge/missing").status == 404
        assert [i["key"] for i in local.get("/v1/configs").json["items"]] == ["a", "key"]
        setup.server.start()
        setup.put("edge", "a", {"v": 2})
        path = fresh / "edge" / "a.json"
        wait_until(lambda: read_json(path) == {"v": 2}, timeout=40, what="sync after return")
        wait_until(lambda: local.get("/v1/configs/edge/a").json["value"] == {"v": 2}, what="read API follows")
        log = agent.log_text()
    assert "sk-edge-CACHED-7777" not in log and setup.token not in log
