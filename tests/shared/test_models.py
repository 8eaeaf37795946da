"""Name validation: the path-traversal guard lives in these patterns."""

import pytest

from shared.errors import InvalidInput
from shared.models import Environment, parse_environment, redact_url, validate_key, validate_namespace


class TestNames:
    @pytest.mark.parametrize("ns", ["a", "llm-gateway/routing", "a/b/c-1", "x" * 500])
    def test_valid_namespaces(self, ns: str) -> None:
        """Lowercase segments separated by single slashes are accepted."""
        assert validate_namespace(ns) == ns

    @pytest.mark.parametrize(
        "ns",
        [
            "",
            "..",
            "a/../b",
            "a//b",
            "/a",
            "a/",
            "A",
            "a b",
            "a\\b",
            "a\x00",
            "a%2fb",
            "\u0430",
            "a\uff0fb",
            "a\n",
            "x" * 501,
            "a_b",
        ],
    )
    def test_invalid_namespaces(self, ns: str) -> None:
        """Traversal, encodings, control characters, look-alikes and overlong names are refused."""
        with pytest.raises(InvalidInput):
            validate_namespace(ns)

    @pytest.mark.parametrize("key", ["", ".", "..", "a/b", "K", "k\n", "x" * 256, "history", "\uff4b"])
    def test_invalid_keys(self, key: str) -> None:
        """Keys are one segment of a-z 0-9 _ -, at most 255, and not a reserved word."""
        with pytest.raises(InvalidInput):
            validate_key(key)

    def test_error_message_does_not_echo_raw_control_bytes(self) -> None:
        """The rejected name is shown escaped, so a NUL or newline can't forge log lines."""
        with pytest.raises(InvalidInput) as err:
            validate_namespace("a\nb\x00")
        assert "\n" not in err.value.detail and "\x00" not in err.value.detail


class TestEnvironments:
    @pytest.mark.parametrize(
        ("raw", "env"),
        [
            ("prod", Environment.PRODUCTION),
            ("dev", Environment.DEVELOPMENT),
            ("Staging", Environment.STAGING),
            (None, Environment.GLOBAL),
        ],
    )
    def test_aliases_and_default(self, raw: str | None, env: Environment) -> None:
        """dev and prod are aliases, case is ignored, and no environment means global."""
        assert parse_environment(raw) is env

    def test_unknown_environment_lists_the_valid_ones(self) -> None:
        """An unknown environment is a 400 that names the allowed values."""
        with pytest.raises(InvalidInput, match="production"):
            parse_environment("qa")


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://app:s3cret@db:5432/llmcm", "postgresql://***@db:5432/llmcm"),
            ("https://user@idp.example/jwks", "https://***@idp.example/jwks"),
            ("https://idp.example/a@b", "https://idp.example/a@b"),
            ("sqlite:////var/lib/llmcm.db", "sqlite:////var/lib/llmcm.db"),
            ("/etc/jwks.json", "/etc/jwks.json"),
        ],
    )
    def test_credentials_never_shown(self, url: str, shown: str) -> None:
        """User-info in a URL is replaced; paths, hosts and URLs without credentials are kept."""
        assert redact_url(url) == shown
