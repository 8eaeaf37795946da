"""RotationDue: each secret version past its rotation interval is announced once, durably."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.audit_chain import ChainVerifier
from server.keys import LocalKeyProvider
from server.service import Ctx, Services
from server.service.rotation import RotationDue
from server.storage import SQLiteStorage
from shared.crypto import new_key
from shared.models import Environment
from tests.server.service.conftest import FakeClock, token_ctx

PLAIN = "sk-PLANTED-DUE-SECRET-0123456789"
SECRETS = frozenset({"secret"})


@pytest.fixture
async def due(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Services, Ctx]]:
    async with SQLiteStorage(tmp_path / "due.db") as store:
        services = Services.build(store, clock=clock, keys=LocalKeyProvider(store, new_key()))
        _, token = await services.tenants.bootstrap("acme")
        yield services, Ctx(await services.tenants.authenticate(token, "t"), "t")


async def due_events(services: Services, ctx: Ctx) -> list[dict[str, Any]]:
    got = await services.changes.poll(ctx, 0, kinds=SECRETS)
    return [c for c in got["changes"] if c["type"] == "rotation_due"]


class TestScan:
    async def test_announced_once_after_the_interval(
        self, due: tuple[Services, Ctx], clock: FakeClock
    ) -> None:
        """Nothing before the interval has passed; after it, one notice, and later scans add none."""
        services, ctx = due
        stored = await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        await services.secrets.put(ctx, "api-keys", "no-interval", PLAIN)
        clock.advance(59)
        assert await services.rotation.scan() == []
        clock.advance(2)
        (notice,) = await services.rotation.scan()
        assert (notice.namespace, notice.key, notice.kind, notice.versions) == (
            "api-keys",
            "openai",
            "rotation_due",
            (1,),
        )
        clock.advance(3600)
        assert await services.rotation.scan() == []
        (event,) = await due_events(services, ctx)
        assert event["version"] == 1 and event["revision"] == notice.revision == 3
        assert event["due_at"] == "2026-11-26T12:01:00.000000Z" and event["rotation_interval"] == 60
        assert event["environment"] == "global" and stored.revision < event["revision"]

    async def test_a_restarted_scanner_announces_nothing_again(
        self, due: tuple[Services, Ctx], clock: FakeClock
    ) -> None:
        """A new scanner (a restart, another replica) finds the stored notice and writes no second one."""
        services, ctx = due
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        clock.advance(61)
        assert len(await services.rotation.scan()) == 1
        head = await services.core.storage.current_revision(ctx.principal.tenant_id)
        fresh = RotationDue(services.core, services.secrets)
        assert await fresh.scan() == []
        assert await services.core.storage.current_revision(ctx.principal.tenant_id) == head
        assert len(await due_events(services, ctx)) == 1

    async def test_concurrent_scans_announce_once(self, due: tuple[Services, Ctx], clock: FakeClock) -> None:
        """Two scanners running at the same moment still leave one notice."""
        services, ctx = due
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        clock.advance(61)
        other = RotationDue(services.core, services.secrets)
        results = await asyncio.gather(services.rotation.scan(), other.scan())
        assert sorted(len(r) for r in results) == [0, 1]
        assert len(await due_events(services, ctx)) == 1

    async def test_each_new_version_is_announced_when_it_falls_due(
        self, due: tuple[Services, Ctx], clock: FakeClock
    ) -> None:
        """Rotating ends the due state; the new version is announced once its own interval has passed."""
        services, ctx = due
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        clock.advance(61)
        await services.rotation.scan()
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN + "-2")  # keeps the interval
        assert await services.rotation.scan() == []
        clock.advance(61)
        assert [n.versions for n in await services.rotation.scan()] == [(2,)]
        assert [e["version"] for e in await due_events(services, ctx)] == [1, 2]

    async def test_revoked_and_rotated_versions_are_never_due(
        self, due: tuple[Services, Ctx], clock: FakeClock
    ) -> None:
        """A secret revoked before its interval ends is not announced; its revocation is an event."""
        services, ctx = due
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        await services.secrets.revoke(ctx, "api-keys", "openai")
        clock.advance(61)
        assert await services.rotation.scan() == []
        got = await services.changes.poll(ctx, 0, kinds=SECRETS)
        assert [c["type"] for c in got["changes"]] == ["created", "revoked"]

    async def test_every_tenant_is_scanned_and_sees_only_its_own(
        self, due: tuple[Services, Ctx], clock: FakeClock
    ) -> None:
        """Two tenants with a due secret each get one notice; neither feed shows the other's."""
        services, ctx = due
        _, token, _ = await services.tenants.create_tenant(ctx, "beta", admin_token=True)
        assert token is not None
        beta = Ctx(await services.tenants.authenticate(token, "t"), "t")
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        await services.secrets.put(beta, "api-keys", "openai", PLAIN, rotation_interval=60)
        clock.advance(61)
        assert len(await services.rotation.scan()) == 2
        for caller in (ctx, beta):
            (event,) = await due_events(services, caller)
            assert event["revision"] == 2

    async def test_audited_without_the_value(self, due: tuple[Services, Ctx], clock: FakeClock) -> None:
        """Each notice leaves one secret:rotation_due audit record (no value); the chain still verifies."""
        services, ctx = due
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        clock.advance(61)
        await services.rotation.scan()
        await services.rotation.scan()
        records = await services.core.storage.audit_records(ctx.principal.tenant_id)
        due_records = [r for r in records if r.action == "secret:rotation_due"]
        assert len(due_records) == 1
        assert due_records[0].resource == "secret/api-keys/openai" and due_records[0].metadata["version"] == 1
        assert PLAIN not in json.dumps([r.metadata for r in records])
        verifier = ChainVerifier()
        assert verifier.feed(records) and verifier.report().ok

    async def test_only_those_who_may_list_the_secret_see_its_notice(
        self, due: tuple[Services, Ctx], clock: FakeClock
    ) -> None:
        """A token scoped to another namespace and a developer (global secrets serve production) see no
        notice; a token scoped to the secret's namespace does."""
        services, ctx = due
        await services.secrets.put(ctx, "team-a", "openai", PLAIN, rotation_interval=60)
        clock.advance(61)
        await services.rotation.scan()
        scoped = await token_ctx(services, ctx, "service-account", namespaces=["team-a"])
        other = await token_ctx(services, ctx, "service-account", namespaces=["team-b"])
        developer = await token_ctx(services, ctx, "developer")
        assert len(await due_events(services, scoped)) == 1
        assert await due_events(services, other) == []
        assert await due_events(services, developer) == []
        got = await services.changes.poll(developer, 0, kinds=SECRETS, environment=Environment.DEVELOPMENT)
        assert got["changes"] == []

    async def test_a_waiting_poll_wakes_on_a_notice(
        self, due: tuple[Services, Ctx], clock: FakeClock
    ) -> None:
        """The scan runs the commit listeners: a poll waiting at the head returns the notice."""
        services, ctx = due
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=60)
        head = await services.core.storage.current_revision(ctx.principal.tenant_id)
        waiting = asyncio.create_task(services.changes.poll(ctx, head, wait=30, kinds=SECRETS))
        await asyncio.sleep(0)
        clock.advance(61)
        await services.rotation.scan()
        async with asyncio.timeout(10):
            got = await waiting
        assert [c["type"] for c in got["changes"]] == ["rotation_due"]
