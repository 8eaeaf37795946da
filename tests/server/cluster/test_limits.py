"""Per-tenant rate limits and quotas (settings ``limits``): counted in memory on one server, in
Redis across replicas; a request over a limit gets 429 with ``Retry-After``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.cluster.limits import validate_limits
from server.cluster.local import MemoryCounters, retry_after, window_estimate
from server.service.core import validate_settings
from shared.errors import InvalidInput
from tests.server.cluster.helpers import REDIS_URL, Replicas, ok, replicas_env, wait_until
from tests.support import Http, Reply, ServerProcess


def limited(reply: Reply) -> dict[str, Any]:
    assert reply.status == 429, (reply.status, reply.body)
    assert reply.content_type == "application/problem+json"
    assert int(reply.headers["retry-after"]) >= 1
    problem: dict[str, Any] = reply.json
    assert problem["code"] == "rate_limited"
    return problem


def new_tenant(admin: Http, name: str) -> str:
    return str(
        ok(admin.post("/v1/tenants", {"name": name, "admin_token": True}), 201)["admin_token"]["token"]
    )


class TestWindow:
    def test_admits_up_to_the_limit_then_says_when(self) -> None:
        """5 per 60 s: five admitted, the sixth refused with the time until the window rolls over."""
        counters = MemoryCounters()
        assert [counters.hit_now("k", 5, 60.0, 120.0 + i) for i in range(5)] == [0.0] * 5
        wait = counters.hit_now("k", 5, 60.0, 130.0)
        assert 60.0 - 10.0 < wait <= 60.0 - 10.0 + 60.0

    def test_the_previous_window_weighs_by_its_overlap(self) -> None:
        """Full previous window: the next admission comes once enough of it has slid out."""
        assert window_estimate(10, 0, 30.0, 60.0) == 5.0
        wait = retry_after(10, 0, 0.0, 60.0, 10)  # must slide until 10*(1-e/60) <= 9
        assert math.isclose(wait, 6.0)

    def test_limits_are_checked(self) -> None:
        """Unknown fields, zero, negatives and non-integers are refused with the field named."""
        assert validate_limits({"max_configs": 3})["max_configs"] == 3
        assert validate_limits({"max_configs": None})["max_configs"] is None
        for bad, word in (({"max_cfgs": 1}, "max_cfgs"), ({"max_secrets": 0}, "max_secrets")):
            with pytest.raises(InvalidInput, match=word):
                validate_limits(bad)
        with pytest.raises(InvalidInput, match="api_calls_per_minute"):
            validate_settings({"limits": {"api_calls_per_minute": "10"}})


class TestOneServer:
    def test_api_rate_per_tenant(self, server: ServerProcess, admin: Http) -> None:
        """Five calls a minute: the sixth is 429 with Retry-After; another tenant is not affected."""
        http = server.http(new_tenant(admin, f"rate-{server.port}"))
        ok(http.put("/v1/settings", {"limits": {"api_calls_per_minute": 5}}))
        statuses = [http.get("/v1/configs?env=production").status for _ in range(5)]
        assert statuses.count(200) >= 4  # the settings call itself may count once
        problem = limited(http.get("/v1/configs?env=production"))
        assert "api_calls_per_minute" in problem["detail"]
        assert admin.get("/v1/configs?env=production").status == 200

    def test_config_quota(self, server: ServerProcess, admin: Http) -> None:
        """max_configs 2: a third entry is refused, updating one is not, deleting one frees its slot."""
        http = server.http(new_tenant(admin, f"quota-{server.port}"))
        ok(http.put("/v1/settings", {"limits": {"max_configs": 2}}))
        ok(http.put("/v1/configs/q/a/k?env=global", {"value": {"n": 1}}), 201)
        ok(http.put("/v1/configs/q/b/k?env=global", {"value": {"n": 1}}), 201)
        problem = limited(http.put("/v1/configs/q/c/k?env=global", {"value": {"n": 1}}))
        assert problem["quota"] == "max_configs"
        ok(http.put("/v1/configs/q/a/k?env=global", {"value": {"n": 2}}))
        ok(http.delete("/v1/configs/q/b/k?env=global"))
        ok(http.put("/v1/configs/q/c/k?env=global", {"value": {"n": 1}}), 201)

    def test_secret_and_storage_quotas(self, server: ServerProcess, admin: Http) -> None:
        """max_secrets 1 refuses a second secret (a new version of the first is fine); max_storage_bytes
        refuses a value that would not fit."""
        http = server.http(new_tenant(admin, f"bytes-{server.port}"))
        ok(http.put("/v1/settings", {"limits": {"max_secrets": 1, "max_storage_bytes": 200}}))
        ok(http.put("/v1/secrets/keys/one", {"value": "v1"}), 201)
        ok(http.put("/v1/secrets/keys/one", {"value": "v2"}), 200, 201)
        assert limited(http.put("/v1/secrets/keys/two", {"value": "x"}))["quota"] == "max_secrets"
        ok(http.put("/v1/configs/q/small/k?env=global", {"value": {"n": "x" * 50}}), 201)
        problem = limited(http.put("/v1/configs/q/big/k?env=global", {"value": {"n": "x" * 300}}))
        assert problem["quota"] == "max_storage_bytes"


@pytest.fixture
def two_replicas(tmp_path: Path, postgres_url: str, redis_prefix: str) -> Iterator[list[ServerProcess]]:
    group = Replicas(tmp_path, postgres_url, replicas_env(REDIS_URL, redis_prefix))
    try:
        yield group.start(2)
    finally:
        group.stop()


class TestAcrossReplicas:
    def test_rate_counts_calls_on_every_replica(self, two_replicas: list[ServerProcess]) -> None:
        """20 calls a minute for the tenant, whichever replica takes them: alternating calls get 20
        (give or take the one that saw the new setting) and then 429 on both replicas."""
        a, b = two_replicas
        token = new_tenant(a.http(a.token), "rated")
        ok(a.http(token).put("/v1/settings", {"limits": {"api_calls_per_minute": 20}}))
        wait_until(
            lambda: b.http(token).get("/v1/settings").json["limits"]["api_calls_per_minute"] == 20,
            5,
            "the limit on replica B",
        )
        replies = [(a, b)[i % 2].http(token).get("/v1/configs?env=global") for i in range(40)]
        admitted = sum(r.status == 200 for r in replies)
        assert 18 <= admitted <= 20, [r.status for r in replies]
        assert all(r.status in (200, 429) for r in replies)
        for refused in (replies[-1], replies[-2]):  # the last call on each replica
            limited(refused)

    def test_quota_holds_across_replicas(self, two_replicas: list[ServerProcess]) -> None:
        """max_configs 3 with entries created through both replicas: the fourth is refused on either."""
        a, b = two_replicas
        token = new_tenant(a.http(a.token), "quota")
        ok(a.http(token).put("/v1/settings", {"limits": {"max_configs": 3}}))
        wait_until(
            lambda: b.http(token).get("/v1/settings").json["limits"]["max_configs"] == 3, 5, "the quota on B"
        )
        ok(a.http(token).put("/v1/configs/q/a/k?env=global", {"value": {}}), 201)
        ok(b.http(token).put("/v1/configs/q/b/k?env=global", {"value": {}}), 201)
        ok(a.http(token).put("/v1/configs/q/c/k?env=global", {"value": {}}), 201)
        limited(b.http(token).put("/v1/configs/q/d/k?env=global", {"value": {}}))
        limited(a.http(token).put("/v1/configs/q/d/k?env=global", {"value": {}}))
        ok(b.http(token).delete("/v1/configs/q/a/k?env=global"))
        ok(a.http(token).put("/v1/configs/q/d/k?env=global", {"value": {}}), 201)
