"""``llm-config-agent init`` as a real process against a real server: write once, exit."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from agent.fileset import FileSet
from tests.agent.agent_support import Setup, agent_env, read_json, run_init
from tests.support import ServerProcess, free_port

SECRET = "sk-ant-INIT-SECRET-9f2c"


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


def _seed(setup: Setup) -> None:
    setup.put("llm-gateway/routing", "primary-model", {"model": "claude", "max_tokens": 1024})
    setup.put("llm-gateway/routing", "fallback", {"model": "small"}, env="global")
    setup.put("llm-gateway/routing/sub", "other", {"not": "mine"})
    reply = setup.http.put("/v1/secrets/api-keys/anthropic", {"value": SECRET})
    assert reply.status in (200, 201), reply.body
    refs = [{"field_path": "$.api_key", "secret_ref": "api-keys/anthropic"}]
    setup.put("llm-gateway/routing", "provider", {"url": "https://api", "api_key": "", "secrets": refs})


class TestInit:
    @pytest.mark.parametrize("transport", ["rest", "grpc"])
    def test_writes_the_set_and_exits_0(self, setup: Setup, transport: str) -> None:
        """Resolved values of exactly the listed namespace land as files; the secret is injected
        into a 0600 file, the others are 0644; the agent reports what it applied."""
        _seed(setup)
        env = setup.env("llm-gateway/routing", transport=transport, LLMCM_AGENT_AGENT_ID=f"init-{transport}")
        done = run_init(env)
        assert done.returncode == 0, done.stderr
        root = setup.tmp / "config"
        routing = root / "llm-gateway" / "routing"
        names = sorted(p.name for p in routing.iterdir())
        assert names == ["fallback.json", "primary-model.json", "provider.json"]
        assert read_json(routing / "primary-model.json") == {"model": "claude", "max_tokens": 1024}
        assert read_json(routing / "fallback.json") == {"model": "small"}  # from the global layer
        assert read_json(routing / "provider.json")["api_key"] == SECRET
        assert stat.S_IMODE((routing / "provider.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((routing / "fallback.json").stat().st_mode) == 0o644
        assert (root / "..data").is_symlink()
        assert SECRET not in done.stderr and setup.token not in done.stderr
        agent = setup.agents()[f"init-{transport}"]
        assert agent["state"] == "applied"
        assert agent["namespaces"] == ["llm-gateway/routing"]
        assert agent["applied_revision"] >= 1

    def test_second_init_rewrites_nothing(self, setup: Setup) -> None:
        """An init over an unchanged set leaves the applied directory as it was."""
        setup.put("app", "settings", {"a": 1})
        env = setup.env("app")
        assert run_init(env).returncode == 0
        before = FileSet(setup.tmp / "config").current()
        assert run_init(env).returncode == 0
        after = FileSet(setup.tmp / "config").current()
        assert before is not None and after is not None
        assert after.directory == before.directory

    def test_unreachable_server_exits_nonzero_after_init_timeout(self, tmp_path: Path) -> None:
        """Nothing listens: init retries until --init-timeout, then one clear line and exit 1."""
        env = agent_env(
            CONFIG_SERVER=f"http://127.0.0.1:{free_port()}",
            CONFIG_TOKEN="lcm_test_token_never_printed",
            NAMESPACES="app",
            CONFIG_DIR=str(tmp_path / "config"),
        )
        started = time.monotonic()
        done = run_init(env, "--init-timeout", "2s", timeout=30)
        elapsed = time.monotonic() - started
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("llm-config-agent: error: init: cannot reach server http://127.0.0.1:")
        assert "within 2 s" in last
        assert "lcm_test_token_never_printed" not in done.stderr
        assert elapsed >= 2.0  # it kept trying until the timeout
        assert '"event": "server_unreachable_retrying"' in done.stderr
        assert not (tmp_path / "config" / "..data").exists()

    def test_refused_token_fails_at_once(self, setup: Setup) -> None:
        """A token the server refuses is not retried: exit 1 naming the problem."""
        env = setup.env("app", CONFIG_TOKEN="lcm_not_a_real_token_0000")
        done = run_init(env, "--init-timeout", "30s")
        assert done.returncode == 1
        assert "init: cannot fetch configuration" in done.stderr.strip().splitlines()[-1]
        assert "lcm_not_a_real_token_0000" not in done.stderr

    def test_allow_stale_writes_from_the_cache(self, setup: Setup, tmp_path: Path) -> None:
        """With --allow-stale and a valid cache, an unreachable server still gives exit 0 and the files."""
        setup.put("app", "settings", {"a": 1})
        assert run_init(setup.env("app")).returncode == 0
        env = setup.env(
            "app", CONFIG_SERVER=f"http://127.0.0.1:{free_port()}", CONFIG_DIR=str(tmp_path / "fresh")
        )
        done = run_init(env, "--init-timeout", "1s", "--allow-stale")
        assert done.returncode == 0, done.stderr
        assert read_json(tmp_path / "fresh" / "app" / "settings.json") == {"a": 1}
        assert "warning" in done.stderr.strip().splitlines()[-1]
        assert "--allow-stale" in done.stderr

    def test_allow_stale_without_a_cache_fails(self, tmp_path: Path) -> None:
        env = agent_env(
            CONFIG_SERVER=f"http://127.0.0.1:{free_port()}",
            CONFIG_TOKEN="lcm_x",
            NAMESPACES="app",
            CONFIG_DIR=str(tmp_path / "config"),
            CACHE_PATH=str(tmp_path / "absent.db"),
        )
        done = run_init(env, "--init-timeout", "1s", "--allow-stale")
        assert done.returncode == 1
        assert "no usable cache" in done.stderr.strip().splitlines()[-1]

    def test_bad_setting_exits_2(self, tmp_path: Path) -> None:
        env = agent_env(CONFIG_SERVER="ftp://x", CONFIG_TOKEN="t", NAMESPACES="app")
        done = run_init(env)
        assert done.returncode == 2
        assert "CONFIG_SERVER" in done.stderr
