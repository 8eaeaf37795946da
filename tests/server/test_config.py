"""ServerConfig settings that have no other home in the tests: the rotation-due scan interval."""

from __future__ import annotations

import pytest

from server.config import ServerConfig
from shared.errors import InvalidInput


class TestDueScanInterval:
    def test_default_env_and_flag(self) -> None:
        """60 s by default; LLMCM_DUE_SCAN_INTERVAL sets it; the flag wins over the environment."""
        assert ServerConfig.load(environ={}).due_scan_interval == 60.0
        env = {"LLMCM_DUE_SCAN_INTERVAL": "0.5"}
        assert ServerConfig.load(environ=env).due_scan_interval == 0.5
        assert ServerConfig.load(flags={"due_scan_interval": 2.0}, environ=env).due_scan_interval == 2.0

    @pytest.mark.parametrize("raw", ["0", "-1", "soon", "86401"])
    def test_bad_values_are_refused_by_name(self, raw: str) -> None:
        """Zero, negative, non-numeric and over-a-day intervals fail with an error naming the setting."""
        with pytest.raises(InvalidInput, match="due_scan_interval"):
            ServerConfig.load(environ={"LLMCM_DUE_SCAN_INTERVAL": raw})
