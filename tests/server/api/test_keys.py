"""KEK rotation over REST and CLI, and the background rewrap surviving kill -9."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.api.helpers import ok, problem
from tests.support import Http, ServerProcess

N = 120


@pytest.fixture
def slow_rewrap_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that re-wraps 30 data keys a second, so a kill lands mid-job."""
    with ServerProcess(tmp_path / "data", env={"LLMCM_REWRAP_RATE": "30"}).running() as srv:
        yield srv


def wait_for(http: Http, predicate: Callable[[dict[str, Any]], bool], limit: float = 60.0) -> dict[str, Any]:
    """Poll /v1/keys/status until ``predicate`` holds (bounded)."""
    deadline = time.monotonic() + limit
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = ok(http.get("/v1/keys/status"))
        if predicate(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"key status never reached the expected state: {status}")


class TestRotation:
    def test_rewrap_finishes_after_kill_9(self, slow_rewrap_server: ServerProcess) -> None:
        """kill -9 mid-rewrap, restart: the job resumes, finishes, and every secret still opens."""
        http = slow_rewrap_server.admin
        for i in range(N):
            ok(http.put(f"/v1/secrets/fleet/k{i}", {"value": f"secret-{i}"}), 201)
        rotated = ok(http.post("/v1/keys/rotate"))
        assert rotated["rewrap_pending"] == N
        wait_for(http, lambda s: 0 < s["rewrap_done"] < N // 2)
        slow_rewrap_server.kill9()
        slow_rewrap_server.start()
        interrupted = ok(http.get("/v1/keys/status"))
        assert 0 < interrupted["rewrap_pending"] < N
        done = wait_for(http, lambda s: s["rewrap_pending"] == 0)
        assert done["rewrap_done"] == N
        for i in range(N):
            assert ok(http.get(f"/v1/secrets/fleet/k{i}"))["value"] == f"secret-{i}"
        assert ok(http.get("/v1/audit/verify"))["ok"]

    def test_status_and_rotate_need_admin(self, server: ServerProcess, make_token: object) -> None:
        """An operator can neither rotate keys nor read their status."""
        operator, _ = make_token(["operator"])  # type: ignore[operator]
        assert problem(operator.post("/v1/keys/rotate"), 403)["rule"] == "deny:default"
        assert problem(operator.get("/v1/keys/status"), 403)["rule"] == "deny:default"
