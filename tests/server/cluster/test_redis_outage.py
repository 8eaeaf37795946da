"""Redis stopped and started under load (a Redis of the test's own): replicas go on serving reads
and writes from PostgreSQL, watchers get every change by polling the store, and the replicas
subscribe again when Redis is back. Replicas without Redis at all find each other's commits the
same way."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.server.cluster.helpers import RedisServer, Replicas, Watcher, ok, replicas_env, wait_until
from tests.support import ServerProcess

QUERY = "env=global&prefix=outage&progress=1s"


def subscriptions(server: ServerProcess) -> int:
    return server.log_path.read_text().count('"redis_subscribed"')


class TestRedisOutage:
    def test_stop_and_start_redis_under_load(
        self, tmp_path: Path, postgres_url: str, own_redis: RedisServer
    ) -> None:
        """Writers on both replicas; Redis stops, then starts again; every acknowledged write is in
        the store, and every watcher saw every one of them, once, in revision order."""
        group = Replicas(tmp_path, postgres_url, replicas_env(own_redis.url, "outage:"))
        try:
            a, b = group.start(2)
            token = a.token
            watchers = [Watcher([s.port], token, QUERY).start() for s in (a, b, b)]
            for w in watchers:
                assert w.connected.wait(15), w.errors
            acked: list[int] = []
            lock = threading.Lock()
            stop = threading.Event()
            failures: list[str] = []

            def writer(server: ServerProcess, name: str) -> None:
                for i in range(1500):
                    if stop.is_set():
                        return
                    reply = server.http(token).put(
                        f"/v1/configs/outage/{name}/k{i % 3}?env=global", {"value": {"i": i}}
                    )
                    if reply.status not in (200, 201):
                        failures.append(f"{reply.status} {reply.body[:200]!r}")
                        return
                    with lock:
                        acked.append(int(reply.json["revision"]))
                    time.sleep(0.005)

            threads = [threading.Thread(target=writer, args=(s, n)) for s, n in ((a, "a"), (b, "b"))]
            for t in threads:
                t.start()
            wait_until(lambda: len(acked) >= 40, 20, "writes before the outage")
            own_redis.stop()
            during = len(acked)
            wait_until(lambda: len(acked) >= during + 60, 30, "writes while Redis is down")
            # reads work too, and are current on the other replica
            latest = ok(
                a.http(token).put("/v1/configs/outage/read/k?env=global", {"value": {"v": "down"}}), 201
            )
            with lock:
                acked.append(int(latest["revision"]))
            assert ok(b.http(token).get("/v1/configs/outage/read/k?env=global&resolve=true"))["value"] == {
                "v": "down"
            }
            own_redis.start()
            wait_until(
                lambda: all(subscriptions(s) >= 2 for s in (a, b)), 20, "both replicas subscribed again"
            )
            after = len(acked)
            wait_until(lambda: len(acked) >= after + 40, 30, "writes after Redis returned")
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert not failures, failures[:3]
            expected = sorted(acked)
            wait_until(lambda: all(len(w.revisions) >= len(expected) for w in watchers), 20, "every event")
            time.sleep(0.3)
            for w in watchers:
                assert w.revisions == expected, (w.port, w.errors)
            stored = []
            for name in ("a", "b"):
                for k in range(3):
                    history = ok(
                        b.http(token).get(f"/v1/configs/outage/{name}/k{k}/history?env=global&limit=1000")
                    )
                    stored += [v["revision"] for v in history["versions"]]
            stored.append(int(latest["revision"]))
            assert sorted(stored) == expected
            for w in watchers:
                w.close()
        finally:
            group.stop()

    def test_replicas_without_redis_poll_the_store(self, tmp_path: Path, postgres_url: str) -> None:
        """No Redis configured: a watcher on B still gets A's writes, in order (polling the store)."""
        env = {"LLMCM_FALLBACK_POLL_INTERVAL": "0.2"}
        group = Replicas(tmp_path, postgres_url, env)
        try:
            a, b = group.start(2)
            watcher = Watcher([b.port], a.token, QUERY).start()
            assert watcher.connected.wait(15), watcher.errors
            acked = [
                int(
                    ok(
                        a.http(a.token).put(
                            f"/v1/configs/outage/np/k{i % 2}?env=global", {"value": {"i": i}}
                        ),
                        200,
                        201,
                    )["revision"]
                )
                for i in range(10)
            ]
            wait_until(lambda: len(watcher.revisions) >= len(acked), 15, "every event")
            assert watcher.revisions == acked
            watcher.close()
        finally:
            group.stop()
