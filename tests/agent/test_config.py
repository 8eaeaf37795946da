"""Agent configuration: the seed's env vars, flags over env, secrets from env/files only, clear errors."""

from __future__ import annotations

import base64
import os
import signal
from pathlib import Path

import pytest

from agent.config import AgentConfig, parse_duration, parse_mode, parse_owner, parse_signal, parse_wait
from agent.render import Format
from shared.errors import InvalidInput
from shared.models import Environment

SEED = {
    "CONFIG_SERVER": "grpc://llm-config-server.config-system:50051",
    "TENANT_ID": "acme-corp",
    "NAMESPACES": "llm-gateway/routing,llm-gateway/prompts",
    "ENVIRONMENT": "production",
    "SYNC_INTERVAL": "30s",
    "RELOAD_SIGNAL": "SIGHUP",
    "CONFIG_TOKEN": "tok_abc123",
}


class TestSeedEnvironment:
    def test_seed_variables_as_written(self) -> None:
        """The seed's Kubernetes env vars load into the frozen config as written."""
        cfg = AgentConfig.load(environ=SEED)
        assert cfg.server == SEED["CONFIG_SERVER"] and cfg.transport == "grpc"
        assert cfg.tenant_id == "acme-corp"
        assert cfg.namespaces == ("llm-gateway/routing", "llm-gateway/prompts")
        assert cfg.environment is Environment.PRODUCTION
        assert cfg.sync_interval == 30.0
        assert cfg.reload_signal is signal.SIGHUP
        assert cfg.token == "tok_abc123"
        cfg.check_for("watch")

    def test_defaults(self) -> None:
        """Defaults: /config, json, 0644/0600, SIGHUP, 127.0.0.1:8081, 60 s init timeout, no cache."""
        cfg = AgentConfig.load(environ={})
        assert cfg.config_dir == Path("/config")
        assert cfg.format_for("anything") is Format.JSON
        assert (cfg.file_mode, cfg.secret_file_mode) == (0o644, 0o600)
        assert cfg.reload_signal is signal.SIGHUP
        assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 8081)
        assert cfg.init_timeout == 60.0 and cfg.sync_interval == 30.0
        assert cfg.cache_path is None and cfg.cache_key_path is None
        assert cfg.transport == ""

    def test_is_frozen(self) -> None:
        """The config cannot be changed after it is built."""
        cfg = AgentConfig.load(environ=SEED)
        with pytest.raises(AttributeError):
            cfg.server = "http://other"  # type: ignore[misc]

    def test_flags_win_over_env(self) -> None:
        """A flag overrides the environment variable for the same setting."""
        cfg = AgentConfig.load(flags={"environment": "staging", "namespaces": ["a", "b"]}, environ=SEED)
        assert cfg.environment is Environment.STAGING and cfg.namespaces == ("a", "b")

    def test_other_settings_from_prefixed_env(self, tmp_path: Path) -> None:
        """Settings outside the seed's list come from LLMCM_AGENT_<NAME>."""
        cfg = AgentConfig.load(
            environ={
                "LLMCM_AGENT_PID_FILE": str(tmp_path / "app.pid"),
                "LLMCM_AGENT_WAIT": "2s:10s",
                "LLMCM_AGENT_MAX_STALE": "1h",
                "LLMCM_AGENT_LISTEN_PORT": "9091",
                "LLMCM_AGENT_ALLOW_STALE": "yes",
                "LLMCM_AGENT_FILE_MODE": "0640",
                "NAMESPACES": "a,b",
                "LLMCM_AGENT_FORMATS": "a=yaml, b=dotenv",
            }
        )
        assert cfg.pid_file == tmp_path / "app.pid"
        assert cfg.wait == (2.0, 10.0) and cfg.max_stale == 3600.0
        assert cfg.listen_port == 9091 and cfg.allow_stale is True and cfg.file_mode == 0o640
        assert cfg.format_for("a") is Format.YAML and cfg.format_for("b") is Format.DOTENV

    def test_cache_settings(self, tmp_path: Path) -> None:
        """CACHE_PATH and CACHE_KEY_FILE; without a key file the key sits beside the cache."""
        cfg = AgentConfig.load(environ={"CACHE_PATH": str(tmp_path / "c.db")})
        assert cfg.cache_key_path == tmp_path / "c.db.key"
        cfg = AgentConfig.load(
            environ={"CACHE_PATH": str(tmp_path / "c.db"), "CACHE_KEY_FILE": str(tmp_path / "k")}
        )
        assert cfg.cache_key_path == tmp_path / "k"

    def test_agent_id_from_pod_name(self) -> None:
        """The agent id defaults to POD_NAME, then HOSTNAME."""
        assert AgentConfig.load(environ={"POD_NAME": "web-7f9", "HOSTNAME": "h"}).agent_id == "web-7f9"
        assert AgentConfig.load(environ={"HOSTNAME": "h"}).agent_id == "h"


class TestSecrets:
    def test_token_never_in_repr(self) -> None:
        """The token and the cache key do not appear in repr (logs of the config are safe)."""
        key = base64.b64encode(os.urandom(32)).decode()
        cfg = AgentConfig.load(environ={**SEED, "CACHE_KEY": key})
        assert "tok_abc123" not in repr(cfg) and key not in repr(cfg)
        assert cfg.cache_key is not None and len(cfg.cache_key) == 32

    def test_token_from_file_is_reread(self, tmp_path: Path) -> None:
        """CONFIG_TOKEN_FILE is read at start (to fail early) and again on each read_token()."""
        path = tmp_path / "token"
        path.write_text("tok_one\n")
        cfg = AgentConfig.load(environ={"CONFIG_TOKEN_FILE": str(path)})
        assert cfg.read_token() == "tok_one"
        path.write_text("tok_two\n")
        assert cfg.read_token() == "tok_two"

    def test_token_fallback_llmcm_token(self) -> None:
        """LLMCM_TOKEN (the CLI's variable) is used when CONFIG_TOKEN is not set."""
        assert AgentConfig.load(environ={"LLMCM_TOKEN": "tok_cli"}).token == "tok_cli"
        both = AgentConfig.load(environ={"LLMCM_TOKEN": "tok_cli", "CONFIG_TOKEN": "tok_cfg"})
        assert both.token == "tok_cfg"

    def test_token_errors(self, tmp_path: Path) -> None:
        """Missing/empty token file, both sources, or a token with spaces: clear errors, no token echoed."""
        with pytest.raises(InvalidInput, match="cannot read CONFIG_TOKEN_FILE"):
            AgentConfig.load(environ={"CONFIG_TOKEN_FILE": str(tmp_path / "absent")})
        (tmp_path / "empty").write_text("\n")
        with pytest.raises(InvalidInput, match="is empty"):
            AgentConfig.load(environ={"CONFIG_TOKEN_FILE": str(tmp_path / "empty")})
        (tmp_path / "t").write_text("x")
        with pytest.raises(InvalidInput, match="not both"):
            AgentConfig.load(environ={"CONFIG_TOKEN_FILE": str(tmp_path / "t"), "CONFIG_TOKEN": "y"})
        with pytest.raises(InvalidInput, match="spaces or control") as caught:
            AgentConfig.load(environ={"CONFIG_TOKEN": "secret part two"})
        assert "secret" not in caught.value.detail.replace("spaces", "")

    def test_secrets_refused_as_flags(self) -> None:
        """The token and cache key cannot be passed as flags (a command line is public)."""
        for name in ("token", "cache_key"):
            with pytest.raises(InvalidInput, match="never from a flag"):
                AgentConfig.load(flags={name: "x"}, environ={})

    def test_bad_cache_key(self) -> None:
        """CACHE_KEY must be 32 bytes, base64."""
        with pytest.raises(InvalidInput, match="CACHE_KEY holds 5 bytes"):
            AgentConfig.load(environ={"CACHE_KEY": base64.b64encode(b"short").decode()})


class TestErrors:
    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({"CONFIG_SERVER": "ftp://x"}, r"server \(CONFIG_SERVER\).*scheme http or https or grpc"),
            ({"CONFIG_SERVER": "http://user:pw@"}, r"'http://\*\*\*@'"),
            ({"NAMESPACES": "ok,../etc"}, r"invalid namespace '../etc'"),
            ({"ENVIRONMENT": "prodd"}, r"environment \(ENVIRONMENT\): unknown environment 'prodd'"),
            ({"SYNC_INTERVAL": "soon"}, r"sync_interval \(SYNC_INTERVAL\): 'soon' is not a duration"),
            ({"SYNC_INTERVAL": "0s"}, r"out of range"),
            ({"RELOAD_SIGNAL": "SIGNOPE"}, r"reload_signal \(RELOAD_SIGNAL\): 'SIGNOPE' is not a signal"),
            ({"RELOAD_SIGNAL": "KILL"}, r"SIGKILL cannot be handled"),
            ({"TENANT_ID": "a b"}, r"tenant_id \(TENANT_ID\)"),
            ({"LLMCM_AGENT_FILE_MODE": "rw-r--r--"}, r"not an octal file mode"),
            ({"LLMCM_AGENT_FILE_MODE": "4755"}, r"special bits"),
            ({"LLMCM_AGENT_SECRET_FILE_MODE": "0044"}, r"owner read"),
            ({"LLMCM_AGENT_PROCESS_CMDLINE": "(unclosed"}, r"not a valid regular expression"),
            ({"LLMCM_AGENT_CHECK_CMD": "nginx -t 'unclosed"}, r"cannot split the command"),
            ({"LLMCM_AGENT_WAIT": "10s:2s"}, r"MIN \(10 s\) is larger than MAX \(2 s\)"),
            ({"LLMCM_AGENT_LISTEN_PORT": "99999"}, r"not a port"),
            ({"LLMCM_AGENT_ALLOW_STALE": "maybe"}, r"not a boolean"),
            ({"LLMCM_AGENT_LOG_LEVEL": "loud"}, r"not one of debug, info, warning, error"),
            ({"LLMCM_AGENT_RELOAD_URL": "localhost:8080/reload"}, r"reload_url"),
            ({"LLMCM_AGENT_FORMATS": "a=toml", "NAMESPACES": "a"}, r"unknown output format 'toml'"),
            ({"LLMCM_AGENT_FORMATS": "b=yaml", "NAMESPACES": "a"}, r"not in NAMESPACES: b"),
            ({"LLMCM_AGENT_FORMATS": "a", "NAMESPACES": "a"}, r"'a' is not NAME=VALUE"),
            ({"LLMCM_AGENT_FILE_OWNER": "no-such-user-xyz"}, r"no user named"),
        ],
    )
    def test_bad_value_named(self, env: dict[str, str], expected: str) -> None:
        """Each bad value stops loading with an error naming the setting and what is wrong."""
        with pytest.raises(InvalidInput, match=expected):
            AgentConfig.load(environ=env)

    def test_conflicting_reload_settings(self, tmp_path: Path) -> None:
        """Two ways to find the app, or two ways to reload it, are refused."""
        with pytest.raises(InvalidInput, match="give one of pid_file, process_name"):
            AgentConfig.load(flags={"pid_file": str(tmp_path / "p"), "process_name": "nginx"}, environ={})
        with pytest.raises(InvalidInput, match="one way to reload"):
            AgentConfig.load(flags={"process_name": "nginx", "reload_url": "http://127.0.0.1/r"}, environ={})

    def test_typed_flag_values(self) -> None:
        """Flags may arrive already typed (from click): a Signals, an int mode, a (uid, gid), a tuple wait."""
        cfg = AgentConfig.load(
            flags={
                "reload_signal": signal.SIGUSR2,
                "file_mode": 0o640,
                "file_owner": (1234, 5678),
                "wait": ("1s", "3s"),
                "sync_interval": 5,
                "config_dir": Path("/tmp/x"),
            },
            environ={},
        )
        assert cfg.reload_signal is signal.SIGUSR2 and cfg.file_mode == 0o640
        assert cfg.file_owner == (1234, 5678) and cfg.wait == (1.0, 3.0)
        assert cfg.sync_interval == 5.0 and cfg.config_dir == Path("/tmp/x")

    def test_unknown_flag(self) -> None:
        """A flag name that is not a setting is an error, not silently ignored."""
        with pytest.raises(InvalidInput, match="unknown agent setting 'nmespaces'"):
            AgentConfig.load(flags={"nmespaces": "a"}, environ={})

    def test_mode_requirements(self) -> None:
        """check_for lists everything a mode is missing, in one error."""
        cfg = AgentConfig.load(environ={})
        with pytest.raises(InvalidInput, match=r"agent init needs CONFIG_SERVER.*; NAMESPACES"):
            cfg.check_for("init")
        with pytest.raises(InvalidInput, match="CONFIG_TOKEN or CONFIG_TOKEN_FILE"):
            env = {"CONFIG_SERVER": "http://127.0.0.1:1", "NAMESPACES": "a"}
            AgentConfig.load(environ=env).check_for("watch")
        with pytest.raises(InvalidInput, match="standalone mode serves from the cache"):
            AgentConfig.load(environ={"NAMESPACES": "a"}).check_for("standalone")
        with pytest.raises(InvalidInput, match="unknown agent mode"):
            cfg.check_for("daemon")

    def test_templates_read_and_compiled_at_load(self, tmp_path: Path) -> None:
        """Templates are read and compiled once at start; a missing file or syntax error stops loading."""
        (tmp_path / "ok.j2").write_text("listen {{ port }};\n")
        cfg = AgentConfig.load(flags={"templates": [f"nginx.conf={tmp_path / 'ok.j2'}"]}, environ={})
        assert [t.output for t in cfg.templates] == ["nginx.conf"]
        assert cfg.templates[0].render({"port": 80}).content == b"listen 80;\n"
        with pytest.raises(InvalidInput, match="cannot read template"):
            AgentConfig.load(flags={"templates": [f"x.conf={tmp_path / 'absent.j2'}"]}, environ={})
        (tmp_path / "bad.j2").write_text("{% if %}")
        with pytest.raises(InvalidInput, match="syntax error"):
            AgentConfig.load(flags={"templates": [f"x.conf={tmp_path / 'bad.j2'}"]}, environ={})
        with pytest.raises(InvalidInput, match="template output name"):
            AgentConfig.load(flags={"templates": [f"../x={tmp_path / 'ok.j2'}"]}, environ={})


class TestParsers:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0), ("1m30s", 90.0), (2, 2)],
    )
    def test_durations(self, text: str | int, seconds: float) -> None:
        """Durations in Go/Kubernetes style, or plain seconds."""
        assert parse_duration(text) == seconds

    def test_wait_forms(self) -> None:
        """MIN:MAX, or MIN alone meaning MAX = 4 x MIN."""
        assert parse_wait("2s:10s") == (2.0, 10.0)
        assert parse_wait("500ms") == (0.5, 2.0)

    @pytest.mark.parametrize("text", ["SIGHUP", "HUP", "hup", "sighup", "1"])
    def test_signal_forms(self, text: str) -> None:
        """A signal by full name, short name, any case, or number."""
        assert parse_signal(text) is signal.SIGHUP

    def test_mode_forms(self) -> None:
        """Octal modes with or without a leading 0 / 0o."""
        assert parse_mode("644") == parse_mode("0644") == parse_mode("0o644") == 0o644

    def test_owner_forms(self) -> None:
        """USER[:GROUP] by number or name; a bare known user takes its primary group."""
        assert parse_owner("1234:5678") == (1234, 5678)
        assert parse_owner("root") == (0, 0)
        assert parse_owner("0:0") == (0, 0)
        with pytest.raises(InvalidInput, match="give the group too"):
            parse_owner("987654")
