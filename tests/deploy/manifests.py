"""Reading the deployment files the way the tests need them, and what the code really reads.

- ``manifests()``: every Kubernetes document under ``k8s/`` (kustomization files aside),
  with the file it came from; ``workloads()`` and ``containers()`` walk them.
- ``server_env_names()`` / ``agent_env_names()``: the environment variables the server and
  the agent read, derived from ``server/config.py`` and ``agent/config.py`` themselves (the
  config dataclasses' fields, plus every name the loaders look up literally), never listed here.
- ``command_params()``: parse a command line with the real click command, without running it.
- ``container_env()``: a container's environment as the kubelet would hand it over, with
  values from Secrets and the downward API filled in by the caller.
"""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from agent.config import ENV_PREFIX, SECRET_SETTINGS, SEED_ENV, AgentConfig
from server.config import ServerConfig
from tests.support import REPO

K8S = REPO / "k8s"
KUSTOMIZATION = "kustomization.yaml"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the manifests must say, not a bind
SERVER_IMAGE = "llm-config-server"
AGENT_IMAGE = "llm-config-agent"

# Variables a manifest may set that our code does not read but a library in the same process
# does: OpenSSL takes the CA bundle of aiohttp's default TLS context from SSL_CERT_FILE (the
# agent has no CA setting of its own; tests/deploy/test_k8s_runtime.py shows that it works).
PROCESS_ENV = frozenset({"SSL_CERT_FILE"})


@dataclass(frozen=True)
class Doc:
    path: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}: {self.kind}/{self.name}"


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != KUSTOMIZATION)


def kustomization_files() -> list[Path]:
    return sorted(K8S.rglob(KUSTOMIZATION))


def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def manifests() -> list[Doc]:
    return [Doc(path, body) for path in manifest_files() for body in load(path)]


def workloads(docs: list[Doc] | None = None) -> list[Doc]:
    return [d for d in (manifests() if docs is None else docs) if d.kind in WORKLOAD_KINDS]


def pod_spec(doc: Doc) -> dict[str, Any]:
    spec = doc.body["spec"] if doc.kind == "Pod" else doc.body["spec"]["template"]["spec"]
    return dict(spec)


def pod_labels(doc: Doc) -> dict[str, str]:
    if doc.kind == "Pod":
        return dict(doc.body["metadata"].get("labels", {}))
    return dict(doc.body["spec"]["template"]["metadata"].get("labels", {}))


def containers(doc: Doc, *, init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def image_name(container: Mapping[str, Any]) -> str:
    """The image without registry and tag, as the kustomization's ``images`` entries name it."""
    image = str(container["image"]).rsplit("/", 1)[-1]
    return image.split("@", 1)[0].split(":", 1)[0]


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def console_scripts() -> dict[str, str]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return dict(tomllib.load(fh)["project"]["scripts"])


# ---- what the code reads


def _literal_env_reads(source: Path) -> set[str]:
    """Names looked up literally in the module: ``env.get("NAME")`` and ``env["NAME"]``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("env", "environ")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("env", "environ")
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            names.add(node.slice.value)
    return names


def server_env_names() -> frozenset[str]:
    """``LLMCM_<FIELD>`` for every ServerConfig field, plus the names server/config.py reads as such."""
    fields = {f"LLMCM_{f.name.upper()}" for f in dataclasses.fields(ServerConfig)}
    return frozenset(fields | _literal_env_reads(REPO / "server" / "config.py"))


def agent_env_names() -> frozenset[str]:
    """The seed's names (SEED_ENV), ``LLMCM_AGENT_<FIELD>`` for the other non-secret fields, plus
    the names agent/config.py reads as such (the token, the cache key, the pod name)."""
    fields = {
        SEED_ENV.get(f.name, ENV_PREFIX + f.name.upper())
        for f in dataclasses.fields(AgentConfig)
        if f.name not in SECRET_SETTINGS
    }
    return frozenset(fields | _literal_env_reads(REPO / "agent" / "config.py"))


# ---- command lines


def command_params(group: click.Group, argv: list[str]) -> tuple[str, dict[str, Any]]:
    """(subcommand, its parsed parameters) for ``argv``; a click UsageError if anything is unknown."""
    if not argv or argv[0] not in group.commands:
        raise click.UsageError(f"{argv[:1]} is not a command of {group.name}: {sorted(group.commands)}")
    command = group.commands[argv[0]]
    parent = click.Context(group, info_name=group.name, obj={})
    with command.make_context(argv[0], list(argv[1:]), parent=parent) as ctx:
        return argv[0], dict(ctx.params)


# ---- containers


def container_env(container: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    """The container's variables: literal values as written, ``valueFrom`` ones from ``values``
    (keyed ``secret/NAME/KEY``, ``configmap/NAME/KEY`` or ``field/PATH``), which must hold them."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = f"secret/{source['secretKeyRef']['name']}/{source['secretKeyRef']['key']}"
        elif "configMapKeyRef" in source:
            ref = f"configmap/{source['configMapKeyRef']['name']}/{source['configMapKeyRef']['key']}"
        elif "fieldRef" in source:
            ref = f"field/{source['fieldRef']['fieldPath']}"
        else:
            raise AssertionError(f"{var['name']}: unexpected valueFrom {source}")
        if ref not in values:
            raise AssertionError(f"{var['name']} comes from {ref}, which the test has no value for")
        env[var["name"]] = values[ref]
    return env


def named_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def mount_for(doc: Doc, container: Mapping[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volumeMount, volume) of ``container`` under which ``path`` lies; AssertionError if none."""
    best: dict[str, Any] | None = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if (path == root or path.startswith(root + "/")) and (
            best is None or len(root) > len(best["mountPath"])
        ):
            best = mount
    if best is None:
        raise AssertionError(f"{doc.where}: {container['name']} mounts nothing at {path}")
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    if doc.kind == "StatefulSet":
        for claim in doc.body["spec"].get("volumeClaimTemplates", []):
            volumes.setdefault(claim["metadata"]["name"], {"name": claim["metadata"]["name"], "claim": claim})
    if best["name"] not in volumes:
        raise AssertionError(f"{doc.where}: volume {best['name']} is mounted but not defined")
    return best, volumes[best["name"]]


def probes(container: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in container:
            yield kind, container[kind]
