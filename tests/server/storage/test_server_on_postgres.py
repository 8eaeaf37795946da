"""Real server processes on PostgreSQL: the REST API works as on SQLite, replicas sharing one
database hand out gapless revisions, and acknowledged writes survive kill -9."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, SERVER_CMD, Http, Reply, ServerProcess


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.body
    return reply.json


@pytest.fixture
def replica(tmp_path: Path, postgres_url: str) -> Iterator[ServerProcess]:
    """A server initialized and serving on the test's own database (env LLMCM_STORAGE)."""
    with ServerProcess(tmp_path / "one", env={"LLMCM_STORAGE": postgres_url}).running() as srv:
        yield srv


def second_replica(first: ServerProcess, tmp_path: Path, postgres_url: str) -> ServerProcess:
    """Another server on the same database, its own data dir holding a copy of the master key."""
    (tmp_path / "two").mkdir(mode=0o700)
    shutil.copy2(first.data_dir / "master.key", tmp_path / "two" / "master.key")
    other = ServerProcess(tmp_path / "two", env={"LLMCM_STORAGE": postgres_url})
    other.token, other.tenant_id = first.token, first.tenant_id
    return other


class TestServeOnPostgres:
    def test_configs_secrets_and_audit(self, replica: ServerProcess) -> None:
        """Write, read, history, a secret and the audit chain work over REST on PostgreSQL."""
        http = replica.admin
        path = "/v1/configs/llm-gateway/routing/primary-model?env=production"
        first = ok(http.put(path, {"value": {"model": "a", "limits": {"rpm": 10}}}), 201)
        second = ok(http.put(path, {"value": {"model": "b", "limits": {"rpm": 10}}, "expected_version": 1}))
        assert (first["revision"], second["revision"]) == (1, 2)
        assert http.put(path, {"value": {"model": "c"}, "expected_version": 1}).status == 409
        assert ok(http.get(path))["value"] == {"model": "b", "limits": {"rpm": 10}}
        history = ok(http.get("/v1/configs/llm-gateway/routing/primary-model/history?env=production"))
        assert [v["version"] for v in history["versions"]] == [2, 1]
        ok(http.put("/v1/secrets/api-keys/anthropic", {"value": "sk-test-1"}), 201)
        assert ok(http.get("/v1/secrets/api-keys/anthropic"))["value"] == "sk-test-1"
        verify = ok(http.get("/v1/audit/verify"))
        assert verify["ok"] is True, verify
        assert ok(http.get("/health/ready")) is not None

    def test_second_init_is_refused(self, replica: ServerProcess, postgres_url: str, tmp_path: Path) -> None:
        """init on a database that already has a tenant fails and says so."""
        out = subprocess.run(
            [*SERVER_CMD, "init", "--data", str(tmp_path / "again"), "--storage", postgres_url, "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1
        assert "already initialized" in out.stderr
        assert "Traceback" not in out.stderr

    def test_replica_without_the_master_key_is_refused(
        self, replica: ServerProcess, postgres_url: str, tmp_path: Path
    ) -> None:
        """A replica whose data dir lacks the key init made refuses to start instead of making its own."""
        other = ServerProcess(tmp_path / "keyless", env={"LLMCM_STORAGE": postgres_url})
        other.data_dir.mkdir()
        with pytest.raises(RuntimeError, match=r"master key file .* is missing"):
            other.start()
        assert not (other.data_dir / "master.key").exists()


class TestReplicas:
    def test_writers_on_two_replicas_get_gapless_revisions(
        self, replica: ServerProcess, postgres_url: str, tmp_path: Path
    ) -> None:
        """6 clients write through two replicas at once: revisions 1..120, each once, seen by both."""
        other = second_replica(replica, tmp_path, postgres_url)
        other.start()
        try:
            replicas = [replica.admin, other.admin]
            acked: list[int] = []
            lock = threading.Lock()

            def writer(w: int) -> None:
                for i in range(20):
                    http = replicas[(w + i) % 2]
                    reply = http.put(
                        f"/v1/configs/load/k{(w + i) % 5}?env=global", {"value": {"w": w, "i": i}}
                    )
                    assert reply.status in (200, 201), reply.body
                    with lock:
                        acked.append(reply.json["revision"])

            with ThreadPoolExecutor(6) as pool:
                list(pool.map(writer, range(6)))
            assert sorted(acked) == list(range(1, 121))
            for http in replicas:  # both see every write: the store is the one truth
                revs = []
                for k in range(5):
                    versions = ok(http.get(f"/v1/configs/load/k{k}/history?env=global&limit=1000"))[
                        "versions"
                    ]
                    revs += [v["revision"] for v in versions]
                assert sorted(revs) == list(range(1, 121))
            assert ok(other.admin.get("/v1/audit/verify"))["ok"] is True
        finally:
            other.stop()

    def test_acknowledged_writes_survive_kill_9(self, replica: ServerProcess) -> None:
        """kill -9 during a stream of writes: after restart every acknowledged write is there, intact."""
        acked: dict[tuple[str, int], dict[str, int]] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w: int) -> None:
            i = 0
            while not stop.is_set() and i < 5000:
                value = {"writer": w, "i": i}
                try:
                    reply = Http(replica.port, replica.token).put(
                        f"/v1/configs/crash/w{w}/k?env=global", {"value": value}, timeout=5
                    )
                except OSError:
                    return  # the server died mid-request: not acknowledged
                if reply.status in (200, 201):
                    with lock:
                        acked[(f"w{w}", reply.json["version"])] = value
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.02)
        replica.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(acked) >= 150, "too few writes before the kill to mean anything"

        replica.start()
        http = replica.admin
        for (ns, ver), value in acked.items():
            got = http.get(f"/v1/configs/crash/{ns}/k?env=global&version={ver}")
            assert got.status == 200, (ns, ver, got.body)
            assert got.json["value"] == value
        assert ok(http.get("/v1/audit/verify"))["ok"] is True
