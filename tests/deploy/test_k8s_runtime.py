"""Running what the manifests run, with their settings, against real processes.

- base/wait-for-init.py (the server pods' init container) waits on a store without a tenant,
  saying how to create one, and lets the pod go on once there is one.
- The example pod's agent init container, with its environment as written (only the
  addresses and paths moved onto this machine), fetches from a server set up like the
  manifests' (TLS and master key from the environment): it trusts the server's CA through
  SSL_CERT_FILE, and receives the injected secret, which the server hands out over TLS only.
"""

from __future__ import annotations

import select
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent.agent_support import agent_env, read_json, run_init
from tests.deploy.manifests import AGENT_IMAGE, K8S, container_env, image_name, pod_spec, workloads
from tests.server.auth.pki import CA, Leaf
from tests.support import ServerProcess

WAIT_FOR_INIT = K8S / "base" / "wait-for-init.py"
SECRET = "sk-ant-DEPLOY-SECRET-7c1e"
POD_NAME = "llm-gateway-5d8f7-x2x9k"


class TestWaitForInit:
    def test_initialized_store_lets_the_pod_go_on(self, tls_server: ServerProcess) -> None:
        """With the store's settings (LLMCM_DATA_DIR, the master key) it exits 0 at once."""
        env = {**manifest_server_env_for(tls_server), "LLMCM_DATA_DIR": str(tls_server.data_dir)}
        done = subprocess.run(
            [sys.executable, str(WAIT_FOR_INIT)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "initialized" in done.stdout

    def test_store_without_tenant_waits_and_says_how_to_init(self, tmp_path: Path) -> None:
        """On an empty store it keeps waiting and names the ``kubectl exec … init`` to run."""
        env = {**_base_env(), "LLMCM_DATA_DIR": str(tmp_path / "data"), "HOSTNAME": "llm-config-server-0"}
        proc = subprocess.Popen(
            [sys.executable, str(WAIT_FOR_INIT)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)  # the first check takes ~1 s
            assert ready, "nothing said within 30 s"
            line = proc.stdout.readline()
            assert "kubectl exec -it llm-config-server-0 -c wait-for-init -- llm-config-server init" in line
            time.sleep(0.5)
            assert proc.poll() is None, "it stopped instead of waiting"
        finally:
            proc.kill()
            proc.wait(timeout=10)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in agent_env().items() if not k.startswith("VAULT_")}


def manifest_server_env_for(server: ServerProcess) -> dict[str, str]:
    keys = ("LLMCM_MASTER_KEY", "LLMCM_TLS_CERT", "LLMCM_TLS_KEY")
    return {**_base_env(), **{k: server.env[k] for k in keys}}


def test_server_with_the_manifest_env_keeps_no_key_file(tls_server: ServerProcess) -> None:
    """Master key from the environment (a Secret): init and serve leave no key file in the store."""
    assert not (tls_server.data_dir / "master.key").exists()
    assert tls_server.http().get("/health/ready").status == 200


@pytest.fixture(scope="module")
def seeded(tls_server: ServerProcess) -> ServerProcess:
    admin = tls_server.admin
    for namespace, key, value in (
        ("llm-gateway/routing", "primary-model", {"model": "claude-sonnet", "fallback": ["claude-haiku"]}),
        ("llm-gateway/prompts", "system", {"template": "You are a helpful assistant."}),
        (
            "llm-gateway/routing",
            "provider",
            {"api_key": "", "secrets": [{"field_path": "$.api_key", "secret_ref": "api-keys/anthropic"}]},
        ),
    ):
        reply = admin.put(f"/v1/configs/{namespace}/{key}?env=production", {"value": value})
        assert reply.status in (200, 201), reply.body
    reply = admin.put("/v1/secrets/api-keys/anthropic", {"value": SECRET})
    assert reply.status in (200, 201), reply.body
    return tls_server


def _init_container() -> tuple[Any, dict[str, Any]]:
    for doc in workloads():
        spec = pod_spec(doc)
        if spec.get("shareProcessNamespace"):
            (init,) = [c for c in spec["initContainers"] if image_name(c) == AGENT_IMAGE]
            return doc, init
    raise AssertionError("no agent pod example under k8s/")


def _example_init_env(server: ServerProcess, ca: CA, tmp: Path, *, trust: bool) -> dict[str, str]:
    """The example's init-container variables as written, with the server's address, the token
    file, the config dir and the CA bundle moved to where this test has them."""
    _, init = _init_container()
    env = container_env(init, {"field/metadata.name": POD_NAME})
    token_file = tmp / "token"
    token_file.write_text(server.token + "\n")
    moved = {
        "CONFIG_SERVER": f"https://127.0.0.1:{server.port}",
        "CONFIG_TOKEN_FILE": str(token_file),
        "CONFIG_DIR": str(tmp / "config"),
        "SSL_CERT_FILE": str(ca.cert_path),
    }
    assert set(moved) <= set(env), set(moved) - set(env)
    env.update(moved)
    if not trust:
        del env["SSL_CERT_FILE"]
    settings = agent_env(**env)
    if not trust:
        settings.pop("SSL_CERT_FILE", None)
    return settings


class TestExampleInitContainer:
    def test_fetches_over_tls_with_the_manifest_settings(
        self, seeded: ServerProcess, ca: CA, server_leaf: Leaf, tmp_path: Path
    ) -> None:
        """Exit 0; both namespaces written; the secret injected into a 0600 file (so it came over
        TLS); the token and the secret never in the agent's output."""
        env = _example_init_env(seeded, ca, tmp_path, trust=True)
        done = run_init(env)
        assert done.returncode == 0, done.stderr
        root = tmp_path / "config"
        assert read_json(root / "llm-gateway" / "routing" / "primary-model.json")["model"] == "claude-sonnet"
        assert read_json(root / "llm-gateway" / "prompts" / "system.json")["template"].startswith("You are")
        provider = root / "llm-gateway" / "routing" / "provider.json"
        assert read_json(provider)["api_key"] == SECRET
        assert stat.S_IMODE(provider.stat().st_mode) == 0o600
        assert SECRET not in done.stderr + done.stdout and seeded.token not in done.stderr + done.stdout
        agents = seeded.admin.get("/v1/agents").json["agents"]
        assert POD_NAME in {a["agent_id"] for a in agents}  # POD_NAME from the downward API

    def test_without_the_ca_bundle_it_refuses_the_server(
        self, seeded: ServerProcess, ca: CA, tmp_path: Path
    ) -> None:
        """The CA setting is what makes it work: without SSL_CERT_FILE the certificate is refused."""
        env = _example_init_env(seeded, ca, tmp_path, trust=False)
        env["LLMCM_AGENT_INIT_TIMEOUT"] = "2s"
        done = run_init(env)
        assert done.returncode == 1, done.stderr
        assert not (tmp_path / "config" / "llm-gateway").exists()
