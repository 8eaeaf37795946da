"""The secrets REST API and CLI against a real server: values never leak, isolation holds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import ok, problem
from tests.support import REPO, Http, ServerProcess

PLANTED = "sk-ant-api03-PLANTED-VALUE-do-not-leak-7f3a9c"


def cfg_path(namespace: str, key: str) -> str:
    return f"/v1/configs/{namespace}/{key}?env=global"


def sec(namespace: str, key: str, query: str = "") -> str:
    return f"/v1/secrets/{namespace}/{key}{'?' + query if query else ''}"


class TestSecretsApi:
    def test_put_get_roundtrip_is_not_cached(self, tadmin: Http) -> None:
        """PUT then GET returns the value with Cache-Control: no-store; metadata has no value."""
        created = ok(tadmin.put(sec("api-keys", "anthropic"), {"value": PLANTED}), 201)
        assert "value" not in created
        reply = tadmin.get(sec("api-keys", "anthropic", "env=production"))
        assert ok(reply)["value"] == PLANTED
        assert reply.headers["cache-control"] == "no-store"

    def test_list_and_versions_are_metadata_only(self, tadmin: Http) -> None:
        """Neither list nor versions carries the value or any ciphertext."""
        ok(tadmin.put(sec("api-keys", "one"), {"value": PLANTED}), 201)
        ok(tadmin.put(sec("api-keys", "one"), {"value": PLANTED + "-2", "grace_period": 60}))
        for path in ("/v1/secrets?prefix=api-keys", sec("api-keys", "one") + "/versions"):
            body = tadmin.get(path).body.decode()
            assert PLANTED not in body
            assert "ciphertext" not in body
            assert "wrapped_dek" not in body
        statuses = [v["status"] for v in ok(tadmin.get(sec("api-keys", "one") + "/versions"))["versions"]]
        assert statuses == ["active", "grace"]

    def test_revoke_stops_serving(self, tadmin: Http) -> None:
        """After revoke, GET answers 404 naming the revocation."""
        ok(tadmin.put(sec("api-keys", "gone"), {"value": PLANTED}), 201)
        ok(tadmin.post(sec("api-keys", "gone") + "/revoke"))
        assert "no active version" in problem(tadmin.get(sec("api-keys", "gone")), 404)["detail"]

    def test_bad_input(self, tadmin: Http) -> None:
        """Non-string values, traversal and oversized values are 400/413, with nothing stored."""
        assert problem(tadmin.put(sec("api-keys", "x"), {"value": {"a": 1}}), 400)
        assert problem(tadmin.put("/v1/secrets/a/..%2f/x", {"value": "v"}), 400)
        assert problem(tadmin.put(sec("api-keys", "big"), {"value": "x" * 70_000}), 400)
        assert ok(tadmin.get("/v1/secrets?prefix=api-keys"))["items"] == [] or all(
            i["key"] not in ("x", "big") for i in ok(tadmin.get("/v1/secrets?prefix=api-keys"))["items"]
        )

    def test_developer_not_in_production(self, tadmin: Http, make_token: MakeToken) -> None:
        """A developer reads a development secret; a shared one (it serves production) is 403 whatever env."""
        ok(tadmin.put(sec("api-keys", "dev", "env=development"), {"value": "sk-dev"}), 201)
        ok(tadmin.put(sec("api-keys", "prod"), {"value": PLANTED}), 201)
        dev, _ = make_token(["developer"])
        assert ok(dev.get(sec("api-keys", "dev", "env=development")))["value"] == "sk-dev"
        for env in ("development", "production"):
            assert PLANTED not in problem(dev.get(sec("api-keys", "prod", f"env={env}")), 403)["detail"]

    def test_other_tenant_sees_nothing(self, server: ServerProcess, tadmin: Http, admin: Http) -> None:
        """Tenant B's admin can't read, list or learn of tenant A's secret: same answers as for nothing."""
        ok(tadmin.put(sec("api-keys", "isolated"), {"value": PLANTED}), 201)
        other = ok(admin.post("/v1/tenants", {"name": f"other-{server.port}-sec", "admin_token": True}), 201)
        b = server.http(other["admin_token"]["token"])
        missing = problem(b.get(sec("api-keys", "never-existed")), 404)["detail"]
        found = problem(b.get(sec("api-keys", "isolated")), 404)["detail"]
        assert found.replace("isolated", "X") == missing.replace("never-existed", "X")
        assert ok(b.get("/v1/secrets"))["items"] == []
        assert PLANTED not in b.get(sec("api-keys", "isolated") + "/versions").body.decode()


@pytest.fixture
def debug_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server logging at DEBUG, the level most likely to leak."""
    with ServerProcess(tmp_path / "data").running("--log-level", "debug") as srv:
        yield srv


class TestNeverLeaks:
    def test_planted_secret_absent_from_logs_metrics_audit_and_files(
        self, debug_server: ServerProcess
    ) -> None:
        """After writes, reads, denials and errors at DEBUG: 0 hits in log, metrics, audit, db and WAL."""
        fresh_server = debug_server
        http = fresh_server.admin
        ok(http.put(sec("api-keys", "anthropic"), {"value": PLANTED}), 201)
        ok(http.get(sec("api-keys", "anthropic")))
        http.put(sec("api-keys", "anthropic"), {"value": PLANTED, "grace_period": "soon"})  # 400
        http.put(sec("api-keys", "anthropic"), raw=b'{"value": "' + PLANTED.encode() + b'"')  # malformed JSON
        ok(
            http.put(
                cfg_path("gw", "ep"),
                {"value": {"secrets": [{"field_path": "$.key", "secret_ref": "api-keys/anthropic"}]}},
            ),
            201,
        )
        ok(http.get(cfg_path("gw", "ep") + "&resolve=true"))  # injected into a response, not into logs
        fresh_server.http("lcm_" + PLANTED).get(sec("api-keys", "anthropic"))  # 401 with a planted "token"
        places = {
            "metrics": fresh_server.http().get("/metrics").body,
            "audit": http.get("/v1/audit?limit=1000").body,
            "log": fresh_server.log_path.read_bytes(),
        }
        for path in fresh_server.data_dir.iterdir():
            if path.is_file():
                places[path.name] = path.read_bytes()
        for name, data in places.items():
            assert PLANTED.encode() not in data, name


class TestCli:
    def test_seed_syntax(self, server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> None:
        """`secret set api-keys anthropic --value ...` then `secret get ... --env production` prints it."""
        env = {
            **os.environ,
            "LLMCM_SERVER": f"http://127.0.0.1:{server.port}",
            "LLMCM_TOKEN": tenant["token"],
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path),
        }
        cli = [sys.executable, "-m", "server.cli.main", "secret"]
        stored = subprocess.run(
            [*cli, "set", "api-keys", "anthropic", "--value", PLANTED],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stored.returncode == 0, stored.stderr
        assert PLANTED not in stored.stdout
        from_stdin = subprocess.run(
            [*cli, "rotate", "api-keys", "anthropic"],
            input=PLANTED + "-v2\n",
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert from_stdin.returncode == 0, from_stdin.stderr
        got = subprocess.run(
            [*cli, "get", "api-keys", "anthropic", "--env", "production"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout == PLANTED + "-v2\n"
        listed = subprocess.run(
            [*cli, "versions", "api-keys", "anthropic"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "grace" in listed.stdout
        assert PLANTED not in listed.stdout
