"""Dockerfile.server and Dockerfile.agent, parsed (Docker does not run here) and checked against
the code: the console scripts and flags they call exist, the ports are the ones the programs
listen on, the health checks answer against real processes, and the build context holds
what the build needs and no more (a wheel built from exactly that context runs)."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

import agent.main
import server.main
from agent.config import AgentConfig
from agent.health import AgentStatus, HealthServer
from server.config import ServerConfig
from tests.deploy.images import Image, context_files, dockerignore_patterns, healthcheck_code, ignored
from tests.deploy.manifests import ALL_INTERFACES, command_params, console_scripts
from tests.support import REPO, ServerProcess, free_port

BASE_IMAGE = "python:3.11-slim"
CLICK_GROUPS: dict[str, click.Group] = {
    "llm-config-server": server.main.cli,
    "llm-config-agent": agent.main.cli,
}
EXPECTED = {
    "Dockerfile.server": {
        "entrypoint": ["llm-config-server", "serve"],
        "ports": {ServerConfig().port, ServerConfig().grpc_port},
        "health_port": ServerConfig().port,
    },
    "Dockerfile.agent": {
        "entrypoint": ["llm-config-agent"],
        "ports": {AgentConfig().listen_port},
        "health_port": AgentConfig().listen_port,
    },
}
DOCKERFILES = sorted(EXPECTED)


@pytest.fixture(params=DOCKERFILES)
def image(request: pytest.FixtureRequest) -> Image:
    return Image.parse(request.param)


class TestStages:
    def test_multi_stage_on_pinned_slim_python(self, image: Image) -> None:
        """A build stage and a runtime stage, every one FROM python:3.11-slim by tag."""
        assert len(image.stages) >= 2, f"{image.path.name} is not multi-stage"
        assert {stage.base for stage in image.stages} == {BASE_IMAGE}

    def test_runtime_stage_takes_only_the_venv(self, image: Image) -> None:
        """The final stage copies the virtualenv from the build stage and installs nothing itself."""
        final_copies = [c for c in image.copies() if c[2] == "/opt/venv"]
        assert final_copies == [({"from": image.stages[0].name}, ["/opt/venv"], "/opt/venv")]
        assert not any("pip" in run for run in image.runs(image.final))
        assert "/opt/venv/bin" in " ".join(image.final.values("ENV"))

    def test_no_extras_installed(self, image: Image) -> None:
        """The wheel is installed bare: no [test] or [dev] extras, no editable install."""
        installs = [run for run in image.runs() if "pip install" in run]
        assert installs, f"{image.path.name} installs nothing"
        for run in installs:
            assert "[" not in run and " -e " not in run, run


class TestRuntime:
    def test_runs_as_uid_1000(self, image: Image) -> None:
        """The final stage switches to uid 1000 (numeric, so runAsNonRoot can verify it)."""
        assert image.user is not None
        assert image.user.split(":")[0] == "1000"
        assert any("--uid 1000" in run for run in image.runs(image.final))

    def test_exposes_the_ports_the_program_listens_on(self, image: Image) -> None:
        assert image.exposed == EXPECTED[image.path.name]["ports"]

    def test_entrypoint_is_a_console_script(self, image: Image) -> None:
        """The ENTRYPOINT names a [project.scripts] entry whose click group has the subcommand."""
        entrypoint = image.entrypoint
        assert entrypoint == EXPECTED[image.path.name]["entrypoint"]
        scripts = console_scripts()
        assert entrypoint[0] in scripts
        module_name, _, function = scripts[entrypoint[0]].partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function))
        assert module.cli is CLICK_GROUPS[entrypoint[0]]
        argv = [*entrypoint[1:], *image.cmd]
        command, _ = command_params(CLICK_GROUPS[entrypoint[0]], argv)
        assert command in CLICK_GROUPS[entrypoint[0]].commands

    def test_server_default_command_listens_everywhere_on_the_volume(self) -> None:
        """CMD gives serve real flags: all interfaces, the store in the /data volume."""
        image = Image.parse("Dockerfile.server")
        _, params = command_params(server.main.cli, [*image.entrypoint[1:], *image.cmd])
        config = ServerConfig.load(flags=params, environ={})
        assert config.host == ALL_INTERFACES
        assert str(config.data_dir) == "/data"
        assert image.final.values("VOLUME") == ['["/data"]']

    def test_an_unknown_flag_is_caught(self) -> None:
        """The flag check can fail: click refuses a flag serve does not have."""
        with pytest.raises(click.UsageError):
            command_params(server.main.cli, ["serve", "--listen", ALL_INTERFACES])

    def test_healthcheck_options(self, image: Image) -> None:
        options, command = image.healthcheck
        assert command[:2] == ["python", "-c"]
        assert {"interval", "timeout", "retries"} <= set(options)


def _healthcheck(image: Image, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run with this interpreter (the image's ``python``)."""
    return subprocess.run(
        [sys.executable, "-c", healthcheck_code(image)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


class TestHealthchecks:
    def test_server_healthcheck_answers_over_http(self, server: ServerProcess) -> None:
        """Against a live server (its port through LLMCM_PORT, as the server reads it): exit 0."""
        done = _healthcheck(Image.parse("Dockerfile.server"), {"LLMCM_PORT": str(server.port)})
        assert done.returncode == 0, done.stderr

    def test_server_healthcheck_answers_over_https(self, tls_server: ServerProcess) -> None:
        """With LLMCM_TLS_CERT set (as in the Kubernetes manifests) it asks over HTTPS."""
        env = {"LLMCM_PORT": str(tls_server.port), "LLMCM_TLS_CERT": tls_server.env["LLMCM_TLS_CERT"]}
        done = _healthcheck(Image.parse("Dockerfile.server"), env)
        assert done.returncode == 0, done.stderr

    def test_server_healthcheck_fails_when_nothing_listens(self) -> None:
        done = _healthcheck(Image.parse("Dockerfile.server"), {"LLMCM_PORT": str(free_port())})
        assert done.returncode != 0

    def test_default_ports_are_the_programs_defaults(self, image: Image) -> None:
        """Without LLMCM_PORT / LLMCM_AGENT_LISTEN_PORT the check asks the default port."""
        code = healthcheck_code(image)
        assert f"'{EXPECTED[image.path.name]['health_port']}'" in code
        assert "/health/live" in code

    async def test_agent_healthcheck_answers(self) -> None:
        """Against the agent's real health listener: exit 0; once it is gone: not 0."""
        async with HealthServer(AgentStatus(), "127.0.0.1", 0) as health:
            code = healthcheck_code(Image.parse("Dockerfile.agent"))
            env = {**os.environ, "LLMCM_AGENT_LISTEN_PORT": str(health.port)}
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, env=env, stderr=asyncio.subprocess.DEVNULL
        )
        assert await asyncio.wait_for(proc.wait(), 30) != 0


class TestBuildContext:
    def test_dockerignore_keeps_out_what_the_image_does_not_need(self) -> None:
        patterns = dockerignore_patterns()
        for path in (".venv/bin/python", ".git/config", "tests/conftest.py", "bench/secrets.py",
                     "k8s/base/kustomization.yaml", "llm_config_manager.egg-info/PKG-INFO",
                     "server/__pycache__/main.cpython-311.pyc"):  # fmt: skip
            assert ignored(path, patterns), path

    def test_every_copy_source_is_in_the_context(self, image: Image) -> None:
        """What the build stage COPYs exists in the repository and is not ignored."""
        patterns = dockerignore_patterns()
        for flags, sources, _ in image.copies():
            if "from" in flags:
                continue
            for source in sources:
                assert (REPO / source).exists(), source
                assert not ignored(source, patterns), source

    def test_wheel_built_from_the_context_runs(self, tmp_path: Path) -> None:
        """The build stage's step, on a copy of exactly the build context: the wheel carries the
        console scripts the ENTRYPOINTs call and both programs start from it (package data too)."""
        context = tmp_path / "context"
        for relative in context_files(dockerignore_patterns()):
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target)
        wheels = tmp_path / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
             "--wheel-dir", str(wheels), str(context)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        (wheel,) = wheels.glob("*.whl")
        site = tmp_path / "site"
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
            entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
            scripts = zf.read(entry_points).decode()
        for dockerfile in DOCKERFILES:
            script = Image.parse(dockerfile).entrypoint[0]
            assert f"{script} = {console_scripts()[script]}" in scripts
        env = {**os.environ, "PYTHONPATH": str(site)}
        for module, argv in (("server.main", ["serve", "--help"]), ("agent.main", ["watch", "--help"])):
            code = (
                f"import sys, {module} as m; assert m.__file__.startswith({str(site)!r}), m.__file__; "
                f"sys.argv = ['x', *{argv!r}]; m.main()"
            )
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        assert list(site.glob("shared/proto/llmconfig/v1/*.proto"))
