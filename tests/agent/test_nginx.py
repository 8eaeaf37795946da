"""nginx end to end: the agent renders nginx.conf from a template, a real nginx master serves it.

As in a pod: ``init`` writes the set, nginx starts on it, the ``watch`` sidecar adopts the set,
then follows the server: a change re-renders nginx.conf, the nginx master (found by its pid
file) gets SIGHUP and serves the new content; a change that breaks nginx.conf is refused by
``--check-cmd 'nginx -t ...'`` on the staged set and nginx keeps serving the old content.

The nginx here is our own master process (``daemon off``, loopback port, pid file, logs and
temp paths in the test's directory), never the system service; it is stopped by its pid. nginx
must be installed (``.ci/run`` installs it); without it these tests fail, they are not skipped.
"""

from __future__ import annotations

import http.client
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent.agent_support import Setup, run_init, running, wait_until
from tests.support import ServerProcess, free_port

TEMPLATE = Path(__file__).with_name("nginx") / "nginx.conf.j2"
NAMESPACE = "web"
AGENT_ID = "nginx-sidecar"


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("nginx is not installed (.ci/run installs it with apt-get install -y nginx)")
    return found


@dataclass
class Nginx:
    binary: str
    run: Path  # pid file, logs, temp paths
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run / "nginx.pid"

    def base_argv(self) -> list[str]:
        return [self.binary, "-p", str(self.run), "-e", str(self.run / "startup-error.log")]

    def check_cmd(self) -> str:
        argv = [*self.base_argv(), "-t", "-q", "-c"]
        return shlex.join(argv) + " {staged}/nginx.conf"

    def start(self, conf: Path) -> None:
        self.proc = subprocess.Popen(
            [*self.base_argv(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_until(self._serving, timeout=15, what="nginx serving")

    def _serving(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            assert self.proc.stderr is not None
            raise AssertionError(f"nginx exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]!r}")
        if not self.pid_file.exists() or self.pid_file.read_text().strip() != str(self.proc.pid):
            return False
        try:
            self.get()
        except OSError:
            return False
        return True

    def get(self, path: str = "/greeting") -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return reply.status, reply.read().decode()
        finally:
            conn.close()

    def worker_pids(self) -> set[int]:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(p) for p in children.read_text().split()} if children.exists() else set()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGQUIT)  # graceful shutdown of the master and its workers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    run = tmp_path / "nginx"
    run.mkdir()
    instance = Nginx(nginx_binary(), run, free_port())
    try:
        yield instance
    finally:
        instance.stop()


def template_file(setup: Setup, nginx: Nginx) -> Path:
    """The fixture template with this test's run directory and port filled in."""
    text = TEMPLATE.read_text().replace("@RUN@", str(nginx.run)).replace("@PORT@", str(nginx.port))
    path = setup.tmp / "nginx.conf.j2"
    path.write_text(text)
    return path


def start_on_rendered_conf(setup: Setup, nginx: Nginx) -> tuple[dict[str, str], Path]:
    """init renders nginx.conf, nginx starts on it; (the agent's environment, the conf path)."""
    env = setup.env(
        NAMESPACE,
        LLMCM_AGENT_TEMPLATES=f"nginx.conf={template_file(setup, nginx)}",
        LLMCM_AGENT_AGENT_ID=AGENT_ID,
    )
    done = run_init(env)
    assert done.returncode == 0, done.stderr
    conf = setup.tmp / "config" / "nginx.conf"
    assert "keepalive_timeout 30;" in conf.read_text()
    nginx.start(conf)
    return env, conf


class TestNginx:
    def test_change_is_served_after_sighup(self, setup: Setup, nginx: Nginx) -> None:
        """A changed value is rendered into nginx.conf, the master gets SIGHUP, nginx serves it."""
        setup.put(NAMESPACE, "site", {"greeting": "hello v1", "keepalive": 30})
        env, conf = start_on_rendered_conf(setup, nginx)
        assert nginx.get() == (200, "hello v1\n")
        workers = nginx.worker_pids()
        assert workers
        argv = ["watch", "--pid-file", str(nginx.pid_file), "--check-cmd", nginx.check_cmd()]
        with running(env, *argv, log_path=setup.tmp / "agent.log") as agent:
            agent.wait_for("watch_synced")
            assert not agent.events("app_signalled")  # the init container's set is adopted as it is
            setup.put(NAMESPACE, "site", {"greeting": "hello v2", "keepalive": 30})
            wait_until(lambda: nginx.get() == (200, "hello v2\n"), timeout=20, what="nginx serving v2")
            signalled = agent.wait_for("app_signalled")
            assert signalled["pids"] == [int(nginx.pid_file.read_text())]
            assert "hello v2" in conf.read_text()
            assert nginx.worker_pids() - workers  # the master read the new conf into a new worker

    def test_broken_conf_is_refused_and_old_content_served(self, setup: Setup, nginx: Nginx) -> None:
        """A value that breaks nginx.conf fails `nginx -t` on the staged set: nothing is swapped,
        nginx is not signalled and keeps serving; the server hears check_failed; the next good
        change goes through."""
        setup.put(NAMESPACE, "site", {"greeting": "good", "keepalive": 30})
        env, conf = start_on_rendered_conf(setup, nginx)
        before = conf.read_bytes()
        argv = ["watch", "--pid-file", str(nginx.pid_file), "--check-cmd", nginx.check_cmd()]
        with running(env, *argv, log_path=setup.tmp / "agent.log") as agent:
            agent.wait_for("watch_synced")
            bad = setup.put(NAMESPACE, "site", {"greeting": "broken", "keepalive": "forever"})
            refused = agent.wait_for("set_refused_by_check", lambda e: e.get("revision") == bad)
            assert refused["check"] == "exited 1"
            assert conf.read_bytes() == before
            assert nginx.get() == (200, "good\n")
            assert not agent.events("app_signalled")
            wait_until(
                lambda: setup.agents().get(AGENT_ID, {}).get("state") == "check_failed",
                what="check_failed reported to the server",
            )
            setup.put(NAMESPACE, "site", {"greeting": "fixed", "keepalive": 15})
            wait_until(lambda: nginx.get() == (200, "fixed\n"), timeout=20, what="nginx serving the fix")
            assert "keepalive_timeout 15;" in conf.read_text()
            assert len(agent.events("app_signalled")) == 1
