"""The policy decision function: roles, deny rules, default deny, explanations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.service.core import DEFAULT_SETTINGS, validate_settings
from server.service.policy import Action, Principal, Request, decide
from shared.errors import InvalidInput
from shared.models import Environment as E

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday


def who(*roles: str, namespaces: tuple[str, ...] = ()) -> Principal:
    return Principal("tok_x", "t", "n", frozenset(roles), namespaces)


def check(
    p: Principal,
    action: Action,
    env: E | None = None,
    ns: str | None = "app",
    cls: str | None = None,
    settings: dict[str, object] | None = None,
    now: datetime = NOW,
) -> tuple[bool, str]:
    d = decide(p, Request(action, env, ns, cls), settings or DEFAULT_SETTINGS, lambda: now)
    return d.allowed, d.rule


class TestRoles:
    @pytest.mark.parametrize(
        ("env", "read", "write"),
        [
            (E.GLOBAL, True, False),
            (E.DEVELOPMENT, True, True),
            (E.STAGING, True, False),
            (E.PRODUCTION, False, False),
            (E.EDGE, False, False),
        ],
    )
    def test_developer(self, env: E, read: bool, write: bool) -> None:
        """Developers read global/development/staging and write only development."""
        assert check(who("developer"), Action.CONFIG_READ, env)[0] is read
        assert check(who("developer"), Action.CONFIG_WRITE, env)[0] is write

    def test_operator_writes_production_but_manages_no_tokens(self) -> None:
        """Operators change configs everywhere but can't manage tokens or settings."""
        assert check(who("operator"), Action.CONFIG_WRITE, E.PRODUCTION) == (True, "allow:role:operator")
        assert check(who("operator"), Action.TOKEN_MANAGE) == (False, "deny:default")
        assert check(who("operator"), Action.SETTINGS_WRITE)[0] is False

    def test_service_account_reads_only_its_namespaces(self) -> None:
        """A service account reads its namespaces (and their children) and writes nothing."""
        sa = who("service-account", namespaces=("llm-gateway",))
        assert check(sa, Action.CONFIG_READ, E.PRODUCTION, "llm-gateway/routing")[0]
        assert check(sa, Action.CONFIG_READ, E.PRODUCTION, "llm-gatewayx") == (False, "deny:namespace-scope")
        assert check(sa, Action.CONFIG_WRITE, E.PRODUCTION, "llm-gateway") == (False, "deny:default")

    def test_namespace_scope_limits_even_admins(self) -> None:
        """A token limited to namespaces is limited whatever its roles."""
        scoped = who("tenant-admin", namespaces=("team-a/*",))
        assert check(scoped, Action.CONFIG_WRITE, E.PRODUCTION, "team-a/x")[0]
        assert check(scoped, Action.CONFIG_WRITE, E.PRODUCTION, "team-b/x")[1] == "deny:namespace-scope"

    def test_scoped_tokens_only_touch_configs(self) -> None:
        """A namespace-limited token can't manage tokens, settings, schemas or read the audit log."""
        scoped = who("tenant-admin", "pii-authorized", namespaces=("team-a",))
        for action in (Action.TOKEN_MANAGE, Action.SETTINGS_WRITE, Action.SCHEMA_WRITE, Action.AUDIT_READ):
            assert check(scoped, action) == (False, "deny:namespace-scope")
        assert check(scoped, Action.SCHEMA_READ)[0]

    def test_no_environment_means_every_environment(self) -> None:
        """A config read across environments needs a grant covering all of them."""
        assert check(who("developer"), Action.CONFIG_READ, None, ns=None) == (False, "deny:default")
        assert check(who("operator"), Action.CONFIG_READ, None, ns=None)[0]

    def test_tenant_admin_cannot_manage_tenants(self) -> None:
        """Only global-admin may create or list tenants."""
        assert check(who("tenant-admin"), Action.TENANT_MANAGE)[0] is False
        assert check(who("global-admin"), Action.TENANT_MANAGE)[0] is True

    def test_no_roles_is_default_deny(self) -> None:
        """With no role that grants it, the default rule denies and says so."""
        allowed, rule = check(who(), Action.CONFIG_READ, E.GLOBAL)
        assert (allowed, rule) == (False, "deny:default")


class TestDenyRules:
    WINDOW = {**DEFAULT_SETTINGS, "change_window": {"days": ["mon", "tue"], "start": "09:00", "end": "17:00"}}

    def test_change_window_blocks_production_writes_outside_it(self) -> None:
        """Outside the window, production writes are denied even for admins; other envs are not."""
        assert check(who("global-admin"), Action.CONFIG_WRITE, E.PRODUCTION, settings=self.WINDOW) == (
            False,
            "deny:production-change-window",
        )
        assert check(who("global-admin"), Action.CONFIG_WRITE, E.STAGING, settings=self.WINDOW)[0]
        assert check(who("global-admin"), Action.CONFIG_READ, E.PRODUCTION, settings=self.WINDOW)[0]

    def test_change_window_allows_inside_it(self) -> None:
        """Inside the window production writes follow the roles again."""
        monday_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
        assert check(who("operator"), Action.CONFIG_WRITE, E.PRODUCTION, settings=self.WINDOW, now=monday_10)[
            0
        ]

    def test_overnight_window_spans_midnight(self) -> None:
        """A 22:00-06:00 window opened on Monday covers Monday 23:00 and Tuesday 05:00, not Tuesday 07:00."""
        night = {**DEFAULT_SETTINGS, "change_window": {"days": ["mon"], "start": "22:00", "end": "06:00"}}

        def at(day: int, hour: int) -> bool:
            now = datetime(2026, 11, 23 + day, hour, 0, tzinfo=UTC)  # 23rd is a Monday
            return check(who("operator"), Action.CONFIG_WRITE, E.PRODUCTION, settings=night, now=now)[0]

        assert (at(0, 23), at(1, 5), at(1, 7), at(0, 21)) == (True, True, False, False)

    def test_restricted_needs_pii_authorized(self) -> None:
        """Restricted configs need pii-authorized on top of a role that grants the action."""
        assert check(who("tenant-admin"), Action.CONFIG_READ, E.GLOBAL, cls="restricted") == (
            False,
            "deny:restricted-classification",
        )
        assert check(who("tenant-admin", "pii-authorized"), Action.CONFIG_READ, E.GLOBAL, cls="restricted")[0]
        assert check(who("pii-authorized"), Action.CONFIG_READ, E.GLOBAL, cls="restricted")[0] is False


class TestSettings:
    def test_defaults_fill_unspecified_fields(self) -> None:
        """A partial settings document is completed with the default chains."""
        out = validate_settings({"audit_reads": True})
        assert out["audit_reads"] is True
        assert out["chains"]["production"] == ["global", "development", "staging", "production"]

    @pytest.mark.parametrize(
        "bad",
        [
            {"chains": {"production": ["production", "global"]}},
            {"chains": {"production": []}},
            {"chains": {"qa": ["qa"]}},
            {"chains": {"staging": ["global", "global", "staging"]}},
            {"change_window": {"days": ["xyz"], "start": "09:00", "end": "10:00"}},
            {"change_window": {"start": "09:00", "end": "09:00"}},
            {"audit_reads": "yes"},
            {"colour": "red"},
        ],
    )
    def test_invalid_settings_are_refused(self, bad: dict[str, object]) -> None:
        """Chains must end with their own environment, windows must parse, unknown fields are errors."""
        with pytest.raises(InvalidInput):
            validate_settings(bad)
