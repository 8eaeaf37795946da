"""`llm-config login`: the saved server and token, file modes, and env vars winning over them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.cli.conftest import Cli, url_of
from tests.support import ServerProcess


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestLogin:
    def test_saves_0600_and_later_commands_need_no_env(
        self, server: ServerProcess, tenant: dict[str, str], home: Path
    ) -> None:
        """login writes a 0600 file in a 0700 dir; later commands work with no LLMCM_* set."""
        bare = Cli(home)
        done = bare("login", "--server", url_of(server), "--token", tenant["token"])
        assert done.code == 0, done.err
        assert f"in tenant {tenant['name']}" in done.out
        assert mode(bare.config_file) == 0o600
        assert mode(bare.config_file.parent) == 0o700
        assert json.loads(bare.config_file.read_text()) == {
            "server": url_of(server),
            "token": tenant["token"],
        }
        who = bare("whoami", "--json")
        assert who.code == 0, who.err
        assert who.json["tenant_id"] == tenant["id"]

    def test_token_from_stdin(self, server: ServerProcess, tenant: dict[str, str], home: Path) -> None:
        """--token-stdin reads the token from stdin, keeping it out of the process list."""
        bare = Cli(home)
        done = bare("login", "--server", url_of(server), "--token-stdin", stdin=tenant["token"] + "\n")
        assert done.code == 0, done.err
        assert tenant["token"] not in done.out + done.err

    def test_bad_token_saves_nothing(self, server: ServerProcess, home: Path) -> None:
        """A token the server refuses exits 5 and no file is written."""
        bare = Cli(home)
        refused = bare("login", "--server", url_of(server), "--token", "lcm_wrong")
        assert refused.code == 5
        assert refused.err_lines == ["error: invalid token"]
        assert not bare.config_file.exists()

    def test_env_wins_over_saved_login(
        self, server: ServerProcess, tenant: dict[str, str], home: Path, closed_url: str
    ) -> None:
        """LLMCM_TOKEN and LLMCM_SERVER override the saved login."""
        bare = Cli(home)
        assert bare("login", "--server", url_of(server), "--token", tenant["token"]).code == 0
        as_root = bare.with_token(server.token)("whoami", "--json")
        assert as_root.code == 0, as_root.err
        assert as_root.json["roles"] == ["global-admin"]
        elsewhere = bare.with_server(closed_url).with_token("lcm_other")("whoami")
        assert elsewhere.code == 6

    def test_saved_token_not_sent_to_another_server(
        self, server: ServerProcess, tenant: dict[str, str], home: Path, closed_url: str
    ) -> None:
        """With LLMCM_SERVER pointing elsewhere and no LLMCM_TOKEN, the saved token is not used (exit 5)."""
        bare = Cli(home)
        assert bare("login", "--server", url_of(server), "--token", tenant["token"]).code == 0
        other = bare.with_server(closed_url)("whoami")
        assert other.code == 5
        assert other.err.startswith("error: no token for")

    def test_nothing_configured(self, home: Path) -> None:
        """Without a login or env vars a command says how to log in, with exit 1."""
        none = Cli(home)("list")
        assert none.code == 1
        assert none.err_lines == [
            "error: no server configured: run 'llm-config login --server URL' or set LLMCM_SERVER"
        ]

    def test_logout_removes_the_file(self, server: ServerProcess, tenant: dict[str, str], home: Path) -> None:
        """logout deletes the saved login; a later command is no longer authenticated."""
        bare = Cli(home)
        assert bare("login", "--server", url_of(server), "--token", tenant["token"]).code == 0
        assert bare("logout").code == 0
        assert not bare.config_file.exists()
        assert bare("whoami").code == 1
