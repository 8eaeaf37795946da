"""Writes under concurrency and crashes, against a real server process and SQLite file."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support import Http, ServerProcess


class TestConcurrentWriters:
    def test_no_lost_update_with_expected_version(
        self, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """8 clients increment one counter with expected_version and retry on 409: no update is lost."""
        http = server.http(tenant["token"])
        path = "/v1/configs/load/counter/n?env=global"
        assert http.put(path, {"value": {"n": 0}}).status == 201

        def worker(increments: int) -> int:
            conflicts = 0
            for _ in range(increments):
                for _attempt in range(200):
                    cur = http.get(path).json
                    reply = http.put(
                        path, {"value": {"n": cur["value"]["n"] + 1}, "expected_version": cur["version"]}
                    )
                    if reply.status == 200:
                        break
                    assert reply.status == 409, reply.body
                    conflicts += 1
                else:
                    raise AssertionError("no progress after 200 attempts")
            return conflicts

        with ThreadPoolExecutor(8) as pool:
            conflicts = sum(pool.map(worker, [20] * 8))
        final = http.get(path).json
        assert final["value"] == {"n": 160}
        assert final["version"] == 161
        assert conflicts > 0  # the clients really did race

    def test_revisions_strictly_increasing_without_gaps(
        self, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """5 writers on 10 keys: every acknowledged revision is unique and together they are 1..N."""
        http = server.http(tenant["token"])
        acked: list[int] = []
        lock = threading.Lock()

        def writer(w: int) -> None:
            for i in range(40):
                reply = http.put(
                    f"/v1/configs/load/gapless/k{(w + i) % 10}?env=production", {"value": {"w": w, "i": i}}
                )
                assert reply.status in (200, 201), reply.body
                with lock:
                    acked.append(reply.json["revision"])

        with ThreadPoolExecutor(5) as pool:
            list(pool.map(writer, range(5)))
        assert sorted(acked) == list(range(1, 201))
        history_revs: list[int] = []
        for k in range(10):
            versions = http.get(f"/v1/configs/load/gapless/k{k}/history?env=production&limit=1000").json[
                "versions"
            ]
            revs = [v["revision"] for v in versions]
            assert revs == sorted(revs, reverse=True)  # newer version, newer revision
            history_revs += revs
        assert sorted(history_revs) == list(range(1, 201))


class TestCrashSafety:
    def test_acknowledged_writes_survive_kill_9(self, fresh_server: ServerProcess) -> None:
        """kill -9 during a stream of writes: after restart every acknowledged write is there, intact."""
        http = fresh_server.admin
        acked: dict[tuple[str, int], dict[str, int]] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w: int) -> None:
            i = 0
            while not stop.is_set() and i < 5000:
                value = {"writer": w, "i": i}
                try:
                    reply = Http(fresh_server.port, fresh_server.token).put(
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
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        fresh_server.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(acked) >= 200, "too few writes before the kill to mean anything"

        fresh_server.start()
        for (ns, ver), value in acked.items():
            got = http.get(f"/v1/configs/crash/{ns}/k?env=global&version={ver}")
            assert got.status == 200, (ns, ver, got.body)
            assert got.json["value"] == value
        verify = http.get("/v1/audit/verify").json
        assert verify["ok"], verify
