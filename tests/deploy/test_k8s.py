"""The Kubernetes manifests under k8s/: valid against a current Kubernetes version's schemas
(``kubernetes-validate --strict``, offline: the package bundles them), and consistent with the
code: every variable is one the server or agent reads and its value loads, every port and
probe is one the programs serve, every kustomization names files that exist.

With ``kubectl`` on the PATH the overlays are also built (``kubectl kustomize``, offline) and
the output validated; without it that test is skipped and the Python checks of the
kustomization files stand alone.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from packaging.version import Version

import agent.main
import server.main
from agent.config import AgentConfig
from agent.health import AgentStatus, HealthServer
from server.api.app import create_app
from server.config import ServerConfig
from server.service import Services
from server.storage import open_storage
from tests.deploy.images import IMAGES, Image
from tests.deploy.manifests import (
    AGENT_IMAGE,
    ALL_INTERFACES,
    K8S,
    KUSTOMIZATION,
    PROCESS_ENV,
    SERVER_IMAGE,
    WORKLOAD_KINDS,
    Doc,
    agent_env_names,
    command_params,
    container_env,
    containers,
    image_name,
    kustomization_files,
    load,
    manifest_files,
    manifests,
    mount_for,
    named_port,
    pod_labels,
    pod_spec,
    probes,
    project_version,
    server_env_names,
    workloads,
)

KUBERNETES = max(kv_utils.all_versions(), key=Version)  # the newest schemas the package bundles
OVERLAYS = ("overlays/single", "overlays/ha", "examples/app-with-agent")
NAMESPACE = "llm-config"
CLIENT_LABEL = ("llm-config.io/client", "true")
AGENT_REQUESTS = {"cpu": "50m", "memory": "64Mi"}
AGENT_LIMITS = {"cpu": "200m", "memory": "256Mi"}
# values the kubelet would take from Secrets and the downward API
VALUE_FROM = {
    "secret/llm-config-server/master-key": base64.b64encode(os.urandom(32)).decode(),
    "secret/llm-config-server/storage-url": "postgresql://llmcm@postgres.llm-config.svc:5432/llmcm",
    "secret/llm-config-server/redis-url": "redis://redis.llm-config.svc:6379/0",
    "field/metadata.name": "llm-gateway-5d8f7-x2x9k",
}
KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "namespace", "labels", "resources", "images", "configMapGenerator",
    "patches", "components", "namePrefix", "nameSuffix",
}  # fmt: skip


def _docs_of(kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in manifests() if d.kind == kind and (name is None or d.name == name)]


def _server_containers() -> list[tuple[Doc, dict[str, Any]]]:
    """(workload, container) of every container that runs the server image's entrypoint."""
    return [
        (doc, c)
        for doc in workloads()
        for c in containers(doc)
        if image_name(c) == SERVER_IMAGE and "command" not in c
    ]


def _agent_containers() -> list[tuple[Doc, dict[str, Any]]]:
    return [(doc, c) for doc in workloads() for c in containers(doc) if image_name(c) == AGENT_IMAGE]


def _ids(pairs: list[tuple[Doc, dict[str, Any]]]) -> list[str]:
    return [f"{doc.kind}/{doc.name}/{container['name']}" for doc, container in pairs]


def _server_config(doc: Doc, container: dict[str, Any]) -> ServerConfig:
    """The container's settings as ``llm-config-server serve`` would load them."""
    argv = [*Image.parse(IMAGES[SERVER_IMAGE]).entrypoint[1:], *container.get("args", [])]
    _, flags = command_params(server.main.cli, argv)
    return ServerConfig.load(flags=flags, environ=container_env(container, VALUE_FROM))


def _agent_config(doc: Doc, container: dict[str, Any], tmp: Path) -> tuple[str, AgentConfig]:
    """(mode, settings) of an agent container as ``llm-config-agent`` would load them. The token
    file must lie on a mounted Secret; a stand-in file is read in its place."""
    mode, flags = command_params(agent.main.cli, list(container.get("args", [])))
    env = container_env(container, VALUE_FROM)
    if "CONFIG_TOKEN_FILE" in env:
        _, volume = mount_for(doc, container, env["CONFIG_TOKEN_FILE"])
        assert "secret" in volume, f"{doc.where}: CONFIG_TOKEN_FILE is not on a Secret volume"
        stand_in = tmp / "token"
        stand_in.write_text("lcm_" + "A" * 43)
        env["CONFIG_TOKEN_FILE"] = str(stand_in)
    config = AgentConfig.load(flags={k: v for k, v in flags.items() if v not in (None, ())}, environ=env)
    config.check_for(mode)
    return mode, config


# ---- schemas


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    """Every document validates strictly (unknown fields refused) against the newest schemas."""
    docs = load(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The validation can fail: a misspelt field in a real manifest is refused."""
    (doc,) = _docs_of("StatefulSet")
    broken = yaml.safe_load(yaml.safe_dump(doc.body))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_validates_against_a_current_kubernetes() -> None:
    assert Version(KUBERNETES) >= Version("1.33")


# ---- kustomize


@pytest.mark.parametrize("path", kustomization_files(), ids=lambda p: str(p.parent.relative_to(K8S)))
def test_kustomization_references_exist(path: Path) -> None:
    """Known keys only; every resource is a file or a directory with a kustomization; every
    generated file exists; every image entry is used by a container, at the project's version."""
    (body,) = load(path)
    assert body["kind"] == "Kustomization"
    assert set(body) <= KUSTOMIZATION_KEYS, set(body) - KUSTOMIZATION_KEYS
    for resource in body.get("resources", []):
        target = (path.parent / resource).resolve()
        assert target.is_file() or (target / KUSTOMIZATION).is_file(), f"{path}: {resource} does not exist"
        assert K8S.resolve() in target.parents, f"{path}: {resource} lies outside k8s/"
    for generator in body.get("configMapGenerator", []):
        for file in generator.get("files", []):
            assert (path.parent / file.split("=")[-1]).is_file(), f"{path}: {file} does not exist"
    used = {image_name(c) for f in _resource_files(path) for d in load(f) for c in _containers_of(d)}
    for entry in body.get("images", []):
        assert entry["name"] in used, f"{path}: image {entry['name']} is used by no container"
        assert entry["newTag"] == project_version()


def _resource_files(kustomization: Path) -> list[Path]:
    """The manifest files a kustomization takes in, through its bases."""
    out = []
    (body,) = load(kustomization)
    for resource in body.get("resources", []):
        target = (kustomization.parent / resource).resolve()
        out += _resource_files(target / KUSTOMIZATION) if target.is_dir() else [target]
    return out


def _containers_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    if body.get("kind") not in WORKLOAD_KINDS:
        return []
    return containers(Doc(Path(), body))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_is_reachable_from_a_kustomization(overlay: str) -> None:
    """Each overlay takes in the files it should, and together they take in every manifest."""
    reached = {p for o in OVERLAYS for p in _resource_files(K8S / o / KUSTOMIZATION)}
    assert set(manifest_files()) <= reached, set(manifest_files()) - reached
    files = {p.relative_to(K8S).as_posix() for p in _resource_files(K8S / overlay / KUSTOMIZATION)}
    if overlay.startswith("overlays/"):
        assert {"base/service.yaml", "base/networkpolicy.yaml"} <= files


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl not on the PATH: kustomize build not run"
)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_build(overlay: str) -> None:
    """``kubectl kustomize`` builds the overlay offline; the output validates strictly, the
    server's objects land in one namespace and pull the project's version."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    images = {c["image"] for d in docs for c in _containers_of(d)}
    if overlay.startswith("overlays/"):
        assert {d["metadata"].get("namespace", NAMESPACE) for d in docs if d["kind"] != "Namespace"} == {
            NAMESPACE
        }
        assert images == {f"{SERVER_IMAGE}:{project_version()}"}
        workload = "StatefulSet" if overlay.endswith("single") else "Deployment"
        assert (workload, "llm-config-server") in kinds
        assert ("NetworkPolicy", "llm-config-server") in kinds
    else:
        assert f"{AGENT_IMAGE}:{project_version()}" in images


# ---- the server


def test_server_variants() -> None:
    """single: a StatefulSet of one replica with a claim for the store; ha: a Deployment of three
    on PostgreSQL and Redis, their URLs and the master key from Secrets."""
    (sts,) = _docs_of("StatefulSet", "llm-config-server")
    assert sts.body["spec"]["replicas"] == 1
    (claim,) = sts.body["spec"]["volumeClaimTemplates"]
    (server,) = containers(sts, init=False)
    config = _server_config(sts, server)
    _, volume = mount_for(sts, server, str(config.data_dir))
    assert volume.get("claim") is claim
    assert config.storage_url.startswith("sqlite:///") and config.storage == ""

    (deploy,) = _docs_of("Deployment", "llm-config-server")
    assert deploy.body["spec"]["replicas"] == 3
    (server,) = containers(deploy, init=False)
    config = _server_config(deploy, server)
    assert config.storage.startswith("postgresql://") and config.redis.startswith("redis://")
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in server["env"] if "valueFrom" in v}
    assert set(refs) == {"LLMCM_STORAGE", "LLMCM_REDIS", "LLMCM_MASTER_KEY"}


@pytest.mark.parametrize(("doc", "container"), _server_containers(), ids=_ids(_server_containers()))
def test_server_env_and_flags_are_real(doc: Doc, container: dict[str, Any]) -> None:
    """Every variable is one server/config.py reads, every flag one ``serve`` has, and together
    they load; the master key comes from a Secret, never a literal."""
    names = {v["name"] for v in container.get("env", [])}
    assert names <= server_env_names(), names - server_env_names()
    config = _server_config(doc, container)
    assert config.host == ALL_INTERFACES
    assert config.master_key, "no LLMCM_MASTER_KEY: replicas would each make a key of their own"
    literal = {v["name"] for v in container["env"] if "value" in v}
    assert not literal & {"LLMCM_MASTER_KEY", "LLMCM_STORAGE", "LLMCM_REDIS", "LLMCM_VAULT_TOKEN"}


@pytest.mark.parametrize(("doc", "container"), _server_containers(), ids=_ids(_server_containers()))
def test_server_tls_files_are_mounted(doc: Doc, container: dict[str, Any]) -> None:
    """TLS is on (agents receive secret values only over TLS) and its files are on the Secret."""
    config = _server_config(doc, container)
    assert config.tls
    for path in (config.tls_cert, config.tls_key):
        mount, volume = mount_for(doc, container, path)
        assert mount.get("readOnly") is True
        assert "secret" in volume
        assert Path(path).name in ("tls.crt", "tls.key")


@pytest.mark.parametrize(("doc", "container"), _server_containers(), ids=_ids(_server_containers()))
def test_server_ports_and_probes(doc: Doc, container: dict[str, Any], server_routes: set[str]) -> None:
    """Container ports are the ports the server listens on; probes ask real GET routes on the REST
    port, over HTTPS when TLS is on; liveness on /health/live, readiness on /health/ready."""
    config = _server_config(doc, container)
    assert named_port(container, "rest") == config.port
    assert named_port(container, "grpc") == config.grpc_port
    found = dict(probes(container))
    assert found["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert found["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for kind, probe in found.items():
        get = probe["httpGet"]
        assert get["path"] in server_routes, f"{kind} asks {get['path']}, which the server does not serve"
        assert named_port(container, get["port"]) == config.port
        assert get.get("scheme", "HTTP") == ("HTTPS" if config.tls else "HTTP")


@pytest.fixture(scope="module")
def server_routes() -> set[str]:
    """GET routes of the server's aiohttp application (server.api.app.create_app)."""
    app = create_app(Services.build(open_storage("sqlite:///never-opened/llmcm.db")))
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}


def test_service_and_network_policy_match_the_server() -> None:
    """Service ports target the server's named ports (8080 REST, 50051 gRPC); the NetworkPolicy
    selects the server pods and opens exactly those ports, to labelled clients only."""
    ports = {}
    for doc, container in _server_containers():
        config = _server_config(doc, container)
        ports[doc.where] = {config.port, config.grpc_port}
        for service in _docs_of("Service"):
            selector = service.body["spec"]["selector"]
            if selector.items() <= pod_labels(doc).items():
                for entry in service.body["spec"]["ports"]:
                    assert named_port(container, entry["targetPort"]) == entry["port"]
    assert set(map(frozenset, ports.values())) == {frozenset({8080, 50051})}
    (policy,) = _docs_of("NetworkPolicy", "llm-config-server")
    spec = policy.body["spec"]
    for doc, _ in _server_containers():
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels(doc).items()
    (rule,) = spec["ingress"]
    assert {p["port"] for p in rule["ports"]} == {8080, 50051}
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"] == dict([CLIENT_LABEL])
    assert peer["namespaceSelector"]["matchLabels"] == dict([CLIENT_LABEL])


def test_wait_for_init_runs_the_generated_script() -> None:
    """The server pods' init container runs base/wait-for-init.py from the generated ConfigMap
    with the settings the server has (so ``kubectl exec … init`` inside it sets up that store)."""
    (base,) = load(K8S / "base" / KUSTOMIZATION)
    (generator,) = base["configMapGenerator"]
    assert generator["files"] == ["wait-for-init.py"]
    for doc in workloads():
        if not any(image_name(c) == SERVER_IMAGE for c in containers(doc)):
            continue
        (init,) = pod_spec(doc)["initContainers"]
        assert init["name"] == "wait-for-init"
        _, script = init["command"]
        _, volume = mount_for(doc, init, script)
        assert volume["configMap"]["name"] == generator["name"]
        assert Path(script).name == "wait-for-init.py"
        assert {v["name"] for v in init["env"]} <= server_env_names()
        (server,) = containers(doc, init=False)
        server_config = _server_config(doc, server)
        init_config = ServerConfig.load(environ=container_env(init, VALUE_FROM))
        assert init_config.storage_url == server_config.storage_url
        assert init_config.master_key == server_config.master_key


# ---- every container


@pytest.mark.parametrize("doc", workloads(), ids=lambda d: d.where)
def test_pods_are_locked_down(doc: Doc) -> None:
    """Non-root uid 1000, no privilege escalation, no capabilities, read-only root filesystem,
    RuntimeDefault seccomp, no service-account token, requests and limits on every container."""
    spec = pod_spec(doc)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in containers(doc):
        ctx = c["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000, c["name"]
        assert ctx["allowPrivilegeEscalation"] is False, c["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert ctx["readOnlyRootFilesystem"] is True, c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"])


# ---- the agent pod example


@pytest.fixture
def example() -> Doc:
    (doc,) = [d for d in workloads() if pod_spec(d).get("shareProcessNamespace")]
    return doc


def test_agent_as_init_container_and_sidecar(example: Doc) -> None:
    """The seed's pod: agent ``init`` first, agent ``watch`` beside the app, one process namespace,
    one emptyDir at /config shared by all three, the agent's resources as the seed gives them."""
    spec = pod_spec(example)
    assert spec["shareProcessNamespace"] is True
    (init,) = spec["initContainers"]
    assert image_name(init) == AGENT_IMAGE and init["args"] == ["init"]
    sidecars = [c for c in spec["containers"] if image_name(c) == AGENT_IMAGE]
    (sidecar,) = sidecars
    assert sidecar["args"] == ["watch"]
    (app,) = [c for c in spec["containers"] if c is not sidecar]
    for c in (init, sidecar, app):
        mount, volume = mount_for(example, c, "/config")
        assert mount["mountPath"] == "/config" and "emptyDir" in volume
        assert mount.get("readOnly", False) is (c is app)
    for c in (init, sidecar):
        assert c["resources"] == {"requests": AGENT_REQUESTS, "limits": AGENT_LIMITS}
    assert dict([CLIENT_LABEL]).items() <= pod_labels(example).items()


@pytest.mark.parametrize(("doc", "container"), _agent_containers(), ids=_ids(_agent_containers()))
def test_agent_env_is_what_the_agent_reads(doc: Doc, container: dict[str, Any], tmp_path: Path) -> None:
    """Every variable is one agent/config.py reads (or OpenSSL's CA bundle), the seed's names are
    all there, the values load, and they point where the pod puts things: CONFIG_DIR on the
    shared emptyDir, the token on a Secret (never a literal), CONFIG_SERVER at the Service."""
    names = {v["name"] for v in container["env"]}
    assert names <= agent_env_names() | PROCESS_ENV, names - agent_env_names() - PROCESS_ENV
    assert {"CONFIG_SERVER", "TENANT_ID", "NAMESPACES", "ENVIRONMENT", "CONFIG_TOKEN_FILE"} <= names
    assert "CONFIG_TOKEN" not in {v["name"] for v in container["env"] if "value" in v}
    mode, config = _agent_config(doc, container, tmp_path)
    if mode == "watch":
        assert {"SYNC_INTERVAL", "RELOAD_SIGNAL"} <= names
        assert config.process_name or config.pid_file or config.process_cmdline, "no app to signal"
    assert mount_for(doc, container, str(config.config_dir))[0]["mountPath"] == "/config"
    url = urlsplit(config.server)
    assert url.scheme == "https"
    (service,) = _docs_of("Service", "llm-config-server")
    assert url.hostname == f"{service.name}.{NAMESPACE}.svc"
    assert url.port in {p["port"] for p in service.body["spec"]["ports"] if p["name"] == "rest"}
    env = container_env(container, VALUE_FROM)
    if "SSL_CERT_FILE" in env:
        assert "configMap" in mount_for(doc, container, env["SSL_CERT_FILE"])[1]


async def test_agent_probes_ask_real_routes(example: Doc, tmp_path: Path) -> None:
    """The sidecar's probes ask paths its health listener serves, on the port it listens on,
    which must be reachable from the kubelet (not loopback)."""
    (sidecar,) = [c for c in containers(example, init=False) if image_name(c) == AGENT_IMAGE]
    _, config = _agent_config(example, sidecar, tmp_path)
    assert config.listen_host == ALL_INTERFACES
    found = dict(probes(sidecar))
    assert found["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert found["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    async with HealthServer(AgentStatus(), "127.0.0.1", 0) as health, aiohttp.ClientSession() as session:
        for kind, probe in found.items():
            get = probe["httpGet"]
            assert named_port(sidecar, get["port"]) == config.listen_port
            assert get.get("scheme", "HTTP") == "HTTP"
            async with session.get(f"http://127.0.0.1:{health.port}{get['path']}") as reply:
                assert reply.status in (200, 503), f"{kind}: {get['path']} answered {reply.status}"
