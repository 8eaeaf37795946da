"""Three replicas on one PostgreSQL database with the machine's Redis: a change made on one
reaches watchers on the others in revision order, survives a replica's kill -9, and no replica
ever answers from a cache older than an acknowledged write.

The replicas' safety poll is an hour, so what crosses replicas here crosses through Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.server.cluster.helpers import (
    REDIS_URL,
    Replicas,
    Watcher,
    ok,
    replicas_env,
    wait_until,
)
from tests.support import Http, ServerProcess

QUERY = "env=production&prefix=ha&progress=1s"


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str, redis_prefix: str) -> Iterator[list[ServerProcess]]:
    group = Replicas(tmp_path, postgres_url, replicas_env(REDIS_URL, redis_prefix))
    try:
        yield group.start(3)
    finally:
        group.stop()


def put(http: Http, key: str, value: dict[str, object], env: str = "production") -> int:
    return int(ok(http.put(f"/v1/configs/ha/svc/{key}?env={env}", {"value": value}), 200, 201)["revision"])


def assert_saw_in_order(watcher: Watcher, expected: list[int]) -> None:
    assert watcher.revisions == expected, (watcher.port, watcher.revisions[:20], watcher.errors)


class TestFanOut:
    def test_watchers_on_other_replicas_see_every_revision_in_order(
        self, replicas: list[ServerProcess]
    ) -> None:
        """Writes on replicas A and B; SSE watchers on all three each get every revision, once, in order."""
        a, b, c = replicas
        token = a.token
        watchers = [Watcher([s.port], token, QUERY).start() for s in (b, c, c, a)]
        try:
            for w in watchers:
                assert w.connected.wait(15), w.errors
            acked = []
            for i in range(30):
                writer = (a, b)[i % 3 == 2]  # two thirds on A, a third on B
                acked.append(put(writer.http(token), f"k{i % 4}", {"model": f"m{i}", "i": i}))
            # a production override and a global write resolve into production too
            acked.append(put(a.http(token), "k0", {"temperature": 0.5}, env="global"))
            assert acked == sorted(acked) and len(set(acked)) == len(acked)
            wait_until(lambda: all(len(w.revisions) >= len(acked) for w in watchers), 20, "every event")
            time.sleep(0.3)  # anything extra (a duplicate) would arrive now
            for w in watchers:
                assert_saw_in_order(w, acked)
        finally:
            for w in watchers:
                w.close()

    def test_kill_9_a_replica_its_watchers_resume_on_another(self, replicas: list[ServerProcess]) -> None:
        """Writes stream through A; B is killed with -9; its watchers reconnect to C with
        Last-Event-ID and end with every acknowledged revision exactly once, in order."""
        a, b, c = replicas
        token = a.token
        watchers = [Watcher([b.port, c.port], token, QUERY).start() for _ in range(3)]
        acked: list[int] = []
        stop = threading.Event()

        def writer() -> None:
            for i in range(400):
                if stop.is_set():
                    return
                acked.append(put(a.http(token), f"w{i % 5}", {"i": i}))
                time.sleep(0.01)

        try:
            for w in watchers:
                assert w.connected.wait(15), w.errors
            thread = threading.Thread(target=writer)
            thread.start()
            wait_until(lambda: len(acked) >= 30, 20, "writes before the kill")
            b.kill9()
            wait_until(lambda: len(acked) >= 90, 30, "writes after the kill")
            stop.set()
            thread.join(timeout=30)
            wait_until(lambda: all(len(w.revisions) >= len(acked) for w in watchers), 20, "every event")
            time.sleep(0.3)
            for w in watchers:
                assert w.reconnects >= 1, "the watcher never left the killed replica"
                assert_saw_in_order(w, acked)
        finally:
            stop.set()
            for w in watchers:
                w.close()


class TestSharedCache:
    def test_no_replica_answers_older_than_an_acknowledged_write(
        self, replicas: list[ServerProcess], redis_prefix: str
    ) -> None:
        """Each write is read back at once, resolved and raw, on every replica: never an older value.
        The resolved answers live in Redis under the prefix (the shared cache is in use)."""
        token = replicas[0].token
        clients = [s.http(token) for s in replicas]
        path = "/v1/configs/ha/cache/entry?env=production"
        for i in range(40):
            value = {"model": f"m{i}", "n": i}
            reply = ok(clients[i % 3].put(path, {"value": value}), 200, 201)
            for http in clients:  # warm every replica's caches, then check them after the next write
                for query in ("&resolve=true", ""):
                    got = ok(http.get(path + query))
                    assert got["value"] == value, (i, got)
                    assert got["revision"] == reply["revision"]
        cached = list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{redis_prefix}cache:*", count=1000))
        assert cached, "no resolved config was put in the shared cache"

    def test_settings_change_reaches_other_replicas(self, replicas: list[ServerProcess]) -> None:
        """A chain changed on A shapes resolved reads on B and C (notice through Redis)."""
        a, b, c = replicas
        token = a.token
        put(a.http(token), "chained", {"from": "staging"}, env="staging")
        for s in (b, c):
            assert ok(s.http(token).get("/v1/configs/ha/svc/chained?env=production&resolve=true"))["value"]
        ok(a.http(token).put("/v1/settings", {"chains": {"production": ["global", "production"]}}))
        for s in (b, c):
            wait_until(
                lambda s=s: (
                    s.http(token).get("/v1/configs/ha/svc/chained?env=production&resolve=true").status == 404
                ),
                5,
                f"the new chain on replica {s.port}",
            )


class TestTokens:
    def test_revocation_holds_on_the_other_replicas(self, replicas: list[ServerProcess]) -> None:
        """A token used (and cached) on B and C, revoked on A, is refused by B and C within moments
        (their token cache lives 30 s and the safety poll an hour: the notice did it)."""
        a, b, c = replicas
        admin = a.http(a.token)
        created = ok(admin.post("/v1/tokens", {"name": "short-lived", "roles": ["operator"]}), 201)
        secret, token_id = created["token"], created["id"]
        for s in (b, c):
            assert s.http(secret).get("/v1/configs?env=production").status == 200
        ok(admin.delete(f"/v1/tokens/{token_id}"), 200)
        for s in (b, c):
            wait_until(
                lambda s=s: s.http(secret).get("/v1/configs?env=production").status == 401,
                5,
                f"the revocation on replica {s.port}",
            )
