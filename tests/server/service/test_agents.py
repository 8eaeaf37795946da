"""Agent status in the service layer: validation, who may report and read, cleaning, rollout counts."""

from __future__ import annotations

from typing import Any

import pytest

from server.service import Ctx, Services
from server.service.agents import LAST_ERROR_MAX, scrub_error
from shared.errors import InvalidInput, PermissionDenied
from shared.models import ConfigRef, Environment
from tests.server.service.conftest import FakeClock, token_ctx


async def write(services: Services, admin: Ctx, times: int = 1) -> None:
    for n in range(times):
        await services.configs.put(admin, ConfigRef("app", "k", Environment.PRODUCTION), {"n": n})


def report(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "agent_id": "pod-1",
        "namespaces": ["app"],
        "environment": "production",
        "applied_revision": 0,
        "state": "starting",
    }
    fields.update(overrides)
    return fields


class TestReport:
    async def test_service_account_reports_and_it_is_stored(
        self, services: Services, admin_ctx: Ctx, clock: FakeClock
    ) -> None:
        """A service account of the namespace reports; the report is stored with the server's time."""
        await write(services, admin_ctx, 2)
        agent = await token_ctx(services, admin_ctx, "service-account", namespaces=["app"])
        stored = await services.agents.report(agent, **report(applied_revision=2, state="applied"))
        assert (stored.agent_id, stored.applied_revision, stored.state) == ("pod-1", 2, "applied")
        assert stored.reported_at == "2026-11-26T12:00:00.000000Z"
        assert await services.agents.list_agents(admin_ctx) == [stored]

    async def test_a_new_report_replaces_the_last(
        self, services: Services, admin_ctx: Ctx, clock: FakeClock
    ) -> None:
        """The second report of an agent replaces its first; other agents keep theirs."""
        await write(services, admin_ctx, 3)
        await services.agents.report(admin_ctx, **report(applied_revision=1, state="applied"))
        await services.agents.report(
            admin_ctx, **report(agent_id="pod-2", applied_revision=1, state="applied")
        )
        clock.advance(60)
        await services.agents.report(admin_ctx, **report(applied_revision=3, state="applied"))
        listed = {s.agent_id: s.applied_revision for s in await services.agents.list_agents(admin_ctx)}
        assert listed == {"pod-1": 3, "pod-2": 1}

    @pytest.mark.parametrize(
        ("overrides", "fragment"),
        [
            ({"agent_id": ""}, "'agent_id' is required"),
            ({"agent_id": "pod 1"}, "invalid agent_id"),
            ({"agent_id": "x" * 300}, "invalid agent_id"),
            ({"agent_id": 7}, "'agent_id' is required"),
            ({"namespaces": []}, "'namespaces' is required"),
            ({"namespaces": "app"}, "'namespaces' is required"),
            ({"namespaces": ["App!"]}, "invalid namespace"),
            ({"namespaces": [f"n{i}" for i in range(101)]}, "the limit is 100"),
            ({"namespaces": [1]}, "list of strings"),
            ({"environment": ""}, "'environment' is required"),
            ({"environment": "moon"}, "unknown environment"),
            ({"applied_revision": -1}, "at least 0"),
            ({"applied_revision": "3"}, "must be an integer"),
            ({"applied_revision": True}, "must be an integer"),
            ({"applied_revision": 99}, "ahead of the tenant's current revision 0"),
            (
                {"state": "ok"},
                "'state' must be one of applied, check_failed, rolled_back, error, stale, starting",
            ),
            ({"last_error": 5}, "'last_error' must be a string"),
        ],
    )
    async def test_every_field_is_checked(
        self, services: Services, admin_ctx: Ctx, overrides: dict[str, Any], fragment: str
    ) -> None:
        """A report with a bad field is refused naming the field, and nothing is stored."""
        with pytest.raises(InvalidInput) as caught:
            await services.agents.report(admin_ctx, **report(**overrides))
        assert fragment in caught.value.detail
        assert await services.agents.list_agents(admin_ctx) == []

    async def test_namespace_outside_the_token_is_denied_and_audited(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """A service account may not report for a namespace it can't read; the denial is audited."""
        agent = await token_ctx(services, admin_ctx, "service-account", namespaces=["app"])
        with pytest.raises(PermissionDenied):
            await services.agents.report(agent, **report(namespaces=["app", "billing"]))
        records = await services.core.storage.audit_records(admin_ctx.principal.tenant_id)
        assert [(r.action, r.resource, r.result) for r in records][-1] == (
            "config:read",
            "agent/pod-1",
            "denied",
        )
        assert await services.agents.list_agents(admin_ctx) == []

    async def test_environment_the_token_cannot_read_is_denied(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """A developer token can't report for production, which it can't read."""
        developer = await token_ctx(services, admin_ctx, "developer")
        with pytest.raises(PermissionDenied):
            await services.agents.report(developer, **report())
        stored = await services.agents.report(developer, **report(environment="staging"))
        assert stored.environment == "staging"

    async def test_last_error_is_cleaned(self, services: Services, admin_ctx: Ctx) -> None:
        """last_error loses control characters and credentials and is cut to 500 characters."""
        text = "check failed:\nAuthorization: Bearer lcm_abcdefghijklmnop token=s3cr3t " + "x" * 600
        stored = await services.agents.report(admin_ctx, **report(state="check_failed", last_error=text))
        assert len(stored.last_error) == LAST_ERROR_MAX
        assert "\n" not in stored.last_error
        assert "lcm_abcdefghijklmnop" not in stored.last_error and "s3cr3t" not in stored.last_error


SHAPED = [
    "lcm_Zm9vYmFyYmF6cXV4",
    "sk-ant-api03-abcdefghijklmnopqrstuv",
    "eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln",
]


class TestScrub:
    @pytest.mark.parametrize("secret", SHAPED)
    def test_credential_shapes_are_redacted_anywhere(self, secret: str) -> None:
        """lcm_ tokens, provider API keys and JWTs are recognised on their own."""
        cleaned = scrub_error(f"fetch failed with {secret} (retrying)")
        assert secret not in cleaned and "redacted" in cleaned

    @pytest.mark.parametrize("secret", [*SHAPED, "hunter2hunter2"])
    @pytest.mark.parametrize(
        "template",
        [
            "password={}",
            '{{"api_key": "{}"}}',
            "https://user:{}@vault.example/v1",
            "Authorization: Bearer {}",
        ],
    )
    def test_credential_contexts_are_redacted(self, secret: str, template: str) -> None:
        """Whatever follows password=, api_key, URL user info or Bearer is redacted."""
        cleaned = scrub_error(template.format(secret))
        assert secret not in cleaned and "redacted" in cleaned

    def test_plain_errors_are_kept(self) -> None:
        """An ordinary error message passes unchanged."""
        text = "check_cmd 'nginx -t' exited 1: unknown directive \"proxy_pas\" in /etc/nginx/app.conf:12"
        assert scrub_error(text) == text


class TestListAndRollout:
    async def test_listing_needs_operator_or_admin(self, services: Services, admin_ctx: Ctx) -> None:
        """Operators and admins list agents; developers and service accounts are refused."""
        operator = await token_ctx(services, admin_ctx, "operator")
        assert await services.agents.list_agents(operator) == []
        developer = await token_ctx(services, admin_ctx, "developer")
        agent = await token_ctx(services, admin_ctx, "service-account", namespaces=["app"])
        for ctx in (developer, agent):
            with pytest.raises(PermissionDenied):
                await services.agents.list_agents(ctx)

    async def test_rollout_sorts_agents(self, services: Services, admin_ctx: Ctx) -> None:
        """At revision R: failed whatever their revision; applied at R or later; behind otherwise."""
        await write(services, admin_ctx, 5)
        for agent_id, revision, state in (
            ("a-done", 5, "applied"),
            ("b-later-stale", 4, "stale"),
            ("c-behind", 2, "applied"),
            ("d-failed", 5, "check_failed"),
            ("e-rolled-back", 3, "rolled_back"),
            ("f-starting", 0, "starting"),
        ):
            await services.agents.report(
                admin_ctx, **report(agent_id=agent_id, applied_revision=revision, state=state)
            )
        result = await services.agents.rollout(admin_ctx, 4)
        assert (result["revision"], result["current_revision"], result["total"]) == (4, 5, 6)
        assert result["counts"] == {"applied": 2, "behind": 2, "failed": 2}
        assert [a["agent_id"] for a in result["applied"]] == ["a-done", "b-later-stale"]
        assert [a["agent_id"] for a in result["behind"]] == ["c-behind", "f-starting"]
        assert [a["agent_id"] for a in result["failed"]] == ["d-failed", "e-rolled-back"]

    async def test_rollout_by_environment_and_bad_revisions(self, services: Services, admin_ctx: Ctx) -> None:
        """env narrows the agents; a revision below 1 or beyond the current one is refused."""
        await write(services, admin_ctx, 2)
        await services.agents.report(
            admin_ctx, **report(agent_id="prod", applied_revision=2, state="applied")
        )
        await services.agents.report(
            admin_ctx, **report(agent_id="stage", environment="staging", applied_revision=1, state="applied")
        )
        staging = await services.agents.rollout(admin_ctx, 2, environment="staging")
        assert staging["counts"] == {"applied": 0, "behind": 1, "failed": 0}
        for bad, fragment in ((0, "at least 1"), (3, "does not exist yet"), ("2", "must be an integer")):
            with pytest.raises(InvalidInput, match=fragment):
                await services.agents.rollout(admin_ctx, bad)
