"""``llm-config-agent watch`` (the sidecar) as a real process: changes land, the app reloads,
an init container's set is adopted, checks and health gates keep bad sets out, drift is repaired."""

from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import pytest

from agent.fileset import TIMESTAMPED_RE, FileSet
from tests.agent.agent_support import (
    CONFIG_APP,
    Setup,
    Supervisor,
    read_json,
    run_init,
    running,
    sample_app,
    wait_until,
)
from tests.support import Http, ServerProcess, free_port

CHECK_SCRIPT = "import json, sys\nsys.exit(1 if json.load(open(sys.argv[1])).get('bad') else 0)\n"


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


def settings_file(setup: Setup) -> Path:
    return setup.tmp / "config" / "app" / "settings.json"


def stamped_dirs(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if TIMESTAMPED_RE.fullmatch(p.name)]


def settle(seconds: float = 0.5) -> None:
    """Give a wrong extra write or signal the time to show up before asserting it did not."""
    time.sleep(seconds)


class TestFollow:
    @pytest.mark.parametrize("transport", ["rest", "grpc"])
    def test_change_lands_and_app_gets_sighup(self, setup: Setup, transport: str) -> None:
        """A change on the server replaces the file and the app (found by pid file) gets one SIGHUP."""
        setup.put("app", "settings", {"v": 1})
        env = setup.env("app", transport=transport)
        with (
            sample_app(setup.tmp) as app,
            running(env, "watch", "--pid-file", str(app.pid_file), log_path=setup.tmp / "agent.log") as agent,
        ):
            agent.wait_for("watch_synced")
            assert read_json(settings_file(setup)) == {"v": 1}
            before = len(app.signals())
            setup.put("app", "settings", {"v": 2})
            wait_until(lambda: read_json(settings_file(setup)) == {"v": 2}, what="v2 on disk")
            wait_until(lambda: len(app.signals()) == before + 1, what="one SIGHUP")
            assert app.signals()[-1] == f"SIGHUP {app.proc.pid}"
            settle()
            assert len(app.signals()) == before + 1
            status, body = agent.health()
            assert status == 200 and body["status"] == "ready"
            status, metrics = agent.health("/metrics")
            assert b"llmcm_agent_reloads_total" in metrics and b"llmcm_agent_applied_revision" in metrics

    def test_delete_removes_the_file(self, setup: Setup) -> None:
        setup.put("app", "settings", {"v": 1})
        setup.put("app", "other", {"o": 1})
        with running(setup.env("app"), "watch", log_path=setup.tmp / "agent.log") as agent:
            agent.wait_for("watch_synced")
            setup.delete("app", "other")
            other = setup.tmp / "config" / "app" / "other.json"
            wait_until(lambda: not other.exists(), what="other.json removed")
            assert read_json(settings_file(setup)) == {"v": 1}

    def test_secret_values_come_from_resolved_reads(self, setup: Setup) -> None:
        """Watch events carry secret references, never values: the file gets the injected secret,
        0600, and follows a rotation of the secret."""
        reply = setup.http.put("/v1/secrets/keys/provider", {"value": "sk-first-AAAA1111"})
        assert reply.status in (200, 201)
        refs = [{"field_path": "$.api_key", "secret_ref": "keys/provider"}]
        setup.put("app", "provider", {"api_key": "", "n": 1, "secrets": refs})
        path = setup.tmp / "config" / "app" / "provider.json"
        with running(setup.env("app"), "watch", log_path=setup.tmp / "agent.log") as agent:
            agent.wait_for("watch_synced")
            assert read_json(path)["api_key"] == "sk-first-AAAA1111"
            setup.put("app", "provider", {"api_key": "", "n": 2, "secrets": refs})
            wait_until(lambda: read_json(path)["n"] == 2, what="n=2")
            assert read_json(path)["api_key"] == "sk-first-AAAA1111"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert setup.http.put("/v1/secrets/keys/provider", {"value": "sk-second-BBBB2222"}).status == 200
            wait_until(lambda: read_json(path)["api_key"] == "sk-second-BBBB2222", what="rotated secret")
            log = agent.log_text()
        assert "sk-first-AAAA1111" not in log and "sk-second-BBBB2222" not in log
        assert setup.token not in log

    def test_wait_applies_a_burst_once(self, setup: Setup) -> None:
        """--wait MIN:MAX: twenty quick changes become one set and one reload."""
        setup.put("app", "settings", {"v": 0})
        env = setup.env("app")
        with (
            sample_app(setup.tmp) as app,
            running(
                env, "watch", "--pid-file", str(app.pid_file), "--wait", "2s:10s", log_path=setup.tmp / "w"
            ) as agent,
        ):
            agent.wait_for("watch_synced")
            signals, applied = len(app.signals()), len(agent.events("applied"))
            for i in range(1, 21):
                setup.put("app", "settings", {"v": i})
            wait_until(lambda: read_json(settings_file(setup)) == {"v": 20}, what="v20")
            wait_until(lambda: len(app.signals()) == signals + 1, what="one SIGHUP")
            settle(2.5)
            assert len(app.signals()) == signals + 1
            assert len(agent.events("applied")) == applied + 1


class TestSidecarAdoption:
    def test_adopts_the_init_containers_set(self, setup: Setup) -> None:
        """watch after init: the set is not rewritten and the app not signalled; later changes are."""
        setup.put("app", "settings", {"v": 1})
        env = setup.env("app")
        assert run_init(env).returncode == 0
        before = FileSet(setup.tmp / "config").current()
        assert before is not None
        with (
            sample_app(setup.tmp) as app,
            running(env, "watch", "--pid-file", str(app.pid_file), log_path=setup.tmp / "agent.log") as agent,
        ):
            assert agent.wait_for("adopted")["directory"] == before.directory
            assert agent.wait_for("watch_synced")["outcome"] == "unchanged"
            settle()
            after = FileSet(setup.tmp / "config").current()
            assert after is not None and after.directory == before.directory
            assert app.signals() == []
            assert agent.health()[0] == 200
            setup.put("app", "settings", {"v": 2})
            wait_until(lambda: app.signals() == [f"SIGHUP {app.proc.pid}"], what="one SIGHUP")
            assert read_json(settings_file(setup)) == {"v": 2}

    def test_change_since_init_is_applied_once(self, setup: Setup) -> None:
        setup.put("app", "settings", {"v": 1})
        env = setup.env("app")
        assert run_init(env).returncode == 0
        setup.put("app", "settings", {"v": 2})
        with (
            sample_app(setup.tmp) as app,
            running(env, "watch", "--pid-file", str(app.pid_file), log_path=setup.tmp / "agent.log") as agent,
        ):
            assert agent.wait_for("watch_synced")["outcome"] == "written"
            assert read_json(settings_file(setup)) == {"v": 2}
            wait_until(lambda: len(app.signals()) == 1, what="one SIGHUP")
            settle()
            assert len(app.signals()) == 1


class TestGates:
    def test_check_cmd_failure_keeps_the_old_set(self, setup: Setup) -> None:
        """A set the check refuses is not swapped in, is reported check_failed, and the next change
        is tried again."""
        script = setup.tmp / "check.py"
        script.write_text(CHECK_SCRIPT)
        check = f"{sys.executable} {script} {{staged}}/app/settings.json"
        setup.put("app", "settings", {"v": 1})
        env = setup.env("app", LLMCM_AGENT_AGENT_ID="check-agent")
        with (
            sample_app(setup.tmp) as app,
            running(
                env, "watch", "--pid-file", str(app.pid_file), "--check-cmd", check, log_path=setup.tmp / "w"
            ) as agent,
        ):
            agent.wait_for("watch_synced")
            signals = len(app.signals())
            setup.put("app", "settings", {"v": 2, "bad": True})
            agent.wait_for("set_refused_by_check")
            assert read_json(settings_file(setup)) == {"v": 1}
            wait_until(lambda: setup.agents()["check-agent"]["state"] == "check_failed", what="check_failed")
            assert len(app.signals()) == signals
            root = setup.tmp / "config"
            wait_until(lambda: len(stamped_dirs(root)) == 1, what="the refused staging directory removed")
            setup.put("app", "settings", {"v": 3})
            wait_until(lambda: read_json(settings_file(setup)) == {"v": 3}, what="v3")
            wait_until(lambda: setup.agents()["check-agent"]["state"] == "applied", what="applied")
            wait_until(lambda: len(app.signals()) == signals + 1, what="SIGHUP for v3")

    def test_unhealthy_app_is_rolled_back(self, setup: Setup) -> None:
        """The sample app exits on a bad config: --health-url notices, the last good set comes
        back, the app (restarted as a pod would) serves the last good config, and the agent
        reports rolled_back. A good change afterwards applies."""
        setup.put("app", "settings", {"valid": True, "v": 1})
        env = setup.env("app", LLMCM_AGENT_AGENT_ID="rollback-agent")
        assert run_init(env).returncode == 0
        port, pid_file = free_port(), setup.tmp / "app.pid"
        app_argv = [
            sys.executable, str(CONFIG_APP), "--config", str(settings_file(setup)), "--port", str(port),
            "--pid-file", str(pid_file), "--record", str(setup.tmp / "app.log"), "--lifetime", "120",
        ]
        app = Http(port)

        def served() -> object:
            return json.loads(app.get("/config", timeout=2).body)

        with Supervisor(app_argv) as supervisor:
            wait_until(lambda: served() == {"valid": True, "v": 1}, what="app serving v1")
            args = ("watch", "--pid-file", str(pid_file), "--health-url", f"http://127.0.0.1:{port}/healthz",
                    "--health-timeout", "5s")
            with running(env, *args, log_path=setup.tmp / "agent.log") as agent:
                agent.wait_for("watch_synced")
                setup.put("app", "settings", {"valid": False, "v": 2})
                rolled = agent.wait_for("rolled_back")
                assert rolled["refused_revision"] > rolled["to_revision"]
                assert read_json(settings_file(setup)) == {"valid": True, "v": 1}
                wait_until(lambda: supervisor.exits, what="the app's exit")
                assert supervisor.exits[0] == 3  # the app did die on the bad config
                wait_until(lambda: served() == {"valid": True, "v": 1}, what="app serving v1 again")
                wait_until(
                    lambda: setup.agents()["rollback-agent"]["state"] == "rolled_back", what="rolled_back"
                )
                setup.put("app", "settings", {"valid": True, "v": 3})
                wait_until(lambda: served() == {"valid": True, "v": 3}, what="app serving v3")
                wait_until(lambda: setup.agents()["rollback-agent"]["state"] == "applied", what="applied")


class TestDrift:
    def test_edited_and_deleted_files_are_restored(self, setup: Setup) -> None:
        setup.put("app", "settings", {"v": 1})
        with (
            sample_app(setup.tmp) as app,
            running(setup.env("app"), "watch", "--pid-file", str(app.pid_file), log_path=setup.tmp / "a.log")
            as agent,
        ):
            agent.wait_for("watch_synced")
            signals = len(app.signals())
            path = settings_file(setup)
            path.write_text('{"v": "tampered"}\n')
            wait_until(lambda: read_json(path) == {"v": 1}, what="edit repaired")
            agent.wait_for("drift_repaired")
            (setup.tmp / "config" / "app").unlink()  # the visible link
            wait_until(lambda: path.exists() and read_json(path) == {"v": 1}, what="link restored")
            settle()
            assert len(app.signals()) == signals  # a repair is not a new config for the app
            assert agent.stop() == 0  # SIGTERM: a clean stop
