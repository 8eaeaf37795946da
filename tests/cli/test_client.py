"""``shared.client.RestClient`` in-process against the real server: answers and translated errors."""

from __future__ import annotations

import pytest

from server.cli.output import exit_code_for
from shared.client import RestClient, check_server_url
from shared.errors import (
    Conflict,
    InvalidInput,
    LLMConfigError,
    NotFound,
    PermissionDenied,
    SchemaViolation,
    Unauthenticated,
    Unavailable,
    from_problem,
)
from tests.cli.conftest import url_of
from tests.support import ServerProcess


class TestRestClient:
    async def test_write_then_read(self, server: ServerProcess, tenant: dict[str, str]) -> None:
        """put_config returns version and revision; get_config returns the value."""
        async with RestClient(url_of(server), tenant["token"]) as client:
            wrote = await client.put_config("svc/a", "k", {"x": 1}, env="prod", message="m")
            got = await client.get_config("svc/a", "k", env="production")
        assert (wrote["version"], wrote["environment"]) == (1, "production")
        assert wrote["revision"] >= 1
        assert got["value"] == {"x": 1}

    async def test_problem_becomes_project_error(self, server: ServerProcess, tenant: dict[str, str]) -> None:
        """A 404 and a 409 come back as NotFound and Conflict carrying the server's detail."""
        async with RestClient(url_of(server), tenant["token"]) as client:
            with pytest.raises(NotFound, match="not found in global"):
                await client.get_config("svc/a", "missing")
            await client.put_config("svc/a", "c", {"v": 1})
            with pytest.raises(Conflict) as caught:
                await client.put_config("svc/a", "c", {"v": 2}, expected_version=5)
        assert caught.value.extra["current_version"] == 1

    async def test_unauthenticated(self, server: ServerProcess) -> None:
        """A bad token raises Unauthenticated."""
        async with RestClient(url_of(server), "lcm_bogus") as client:
            with pytest.raises(Unauthenticated):
                await client.whoami()

    async def test_unreachable_names_url_not_token(self, closed_url: str) -> None:
        """A refused connection raises Unavailable naming the server URL and not the token."""
        client = RestClient(closed_url, "lcm_secret-value")
        with pytest.raises(Unavailable) as caught:
            await client.whoami()
        await client.close()
        await client.close()  # safe twice
        assert closed_url in caught.value.detail
        assert "lcm_secret" not in caught.value.detail

    async def test_names_checked_before_sending(self, closed_url: str) -> None:
        """An invalid namespace fails with InvalidInput without touching the network."""
        async with RestClient(closed_url, "t") as client:
            with pytest.raises(InvalidInput, match="invalid namespace"):
                await client.get_config("a/../b", "k")

    def test_server_url_checked(self) -> None:
        """Only http(s) URLs with a host are accepted; the trailing slash is dropped."""
        assert check_server_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
        for bad in ("127.0.0.1:8080", "ftp://host", "http://", "http://h/?q=1", "http://u:p@h"):
            with pytest.raises(InvalidInput):
                check_server_url(bad)


class TestExitCodes:
    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (NotFound("x"), 3),
            (Conflict("x"), 4),
            (from_problem({"code": "already_exists", "detail": "x"}, 409), 4),
            (Unauthenticated("x"), 5),
            (PermissionDenied("x"), 5),
            (Unavailable("x"), 6),
            (from_problem({"detail": "bad gateway"}, 502), 6),
            (LLMConfigError("x"), 6),
            (InvalidInput("x"), 1),
            (SchemaViolation("x", []), 1),
        ],
    )
    def test_mapping(self, error: LLMConfigError, code: int) -> None:
        """Each error class maps to its documented exit code."""
        assert exit_code_for(error) == code
