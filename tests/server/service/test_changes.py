"""ChangeFeed over a real SQLite file: config changes and secret events, merged by revision."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.keys import LocalKeyProvider
from server.service import Ctx, Services
from server.service import changes as changes_module
from server.service.changes import as_cloudevents
from server.storage import SQLiteStorage
from shared.crypto import new_key
from shared.errors import InvalidInput
from shared.models import ConfigRef, Environment
from tests.server.service.conftest import FakeClock, token_ctx

PLAIN = "sk-PLANTED-FEED-SECRET-0123456789"
BOTH = frozenset({"config", "secret"})
SECRETS = frozenset({"secret"})


@pytest.fixture
async def feed(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Services, Ctx, Path]]:
    db = tmp_path / "feed.db"
    async with SQLiteStorage(db) as store:
        services = Services.build(store, clock=clock, keys=LocalKeyProvider(store, new_key()))
        _, token = await services.tenants.bootstrap("acme")
        yield services, Ctx(await services.tenants.authenticate(token, "t"), "t"), db


def sealed_columns(db: Path) -> list[str]:
    """Every ciphertext and wrapped data key in the store."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ciphertext, wrapped_dek FROM secret_versions").fetchall()
    return [str(col) for row in rows for col in row]


def kinds_of(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["kind"], c["type"], c["key"]) for c in result["changes"]]


class TestSecretEvents:
    async def test_secret_lifecycle_merged_with_configs_in_revision_order(
        self, feed: tuple[Services, Ctx, Path]
    ) -> None:
        """created, rotated and revoked come between config changes exactly where their revisions put them."""
        services, ctx, _ = feed
        await services.configs.put(ctx, ConfigRef.parse("gw", "a", "global"), {"n": 1})
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN)
        await services.configs.put(ctx, ConfigRef.parse("gw", "a", "global"), {"n": 2})
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN + "-2", grace_period=60)
        await services.secrets.revoke(ctx, "api-keys", "openai", version=1)
        got = await services.changes.poll(ctx, 0, kinds=BOTH)
        assert kinds_of(got) == [
            ("config", "put", "a"),
            ("secret", "created", "openai"),
            ("config", "put", "a"),
            ("secret", "rotated", "openai"),
            ("secret", "revoked", "openai"),
        ]
        revisions = [c["revision"] for c in got["changes"]]
        assert revisions == [1, 2, 3, 4, 5] and got["revision"] == 5
        created, rotated, revoked = (c for c in got["changes"] if c["kind"] == "secret")
        assert (created["version"], rotated["version"], rotated["previous_version"]) == (1, 2, 1)
        assert revoked["versions"] == [1] and revoked["environment"] == "global"
        assert set(created["serves"]) == {e.value for e in Environment}

    async def test_no_value_ciphertext_or_wrapped_key_in_any_event(
        self, feed: tuple[Services, Ctx, Path]
    ) -> None:
        """Neither the plain changes nor the CloudEvents hold the value, a ciphertext or a wrapped key."""
        services, ctx, db = feed
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN, rotation_interval=5)
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN + "-2")
        await services.secrets.revoke(ctx, "api-keys", "openai")
        got = await services.changes.poll(ctx, 0, kinds=BOTH)
        assert len(got["changes"]) == 3
        text = json.dumps(got) + json.dumps(as_cloudevents("t", got["changes"]))
        for planted in [PLAIN, *sealed_columns(db)]:
            assert planted not in text
        assert "ciphertext" not in text and "wrapped" not in text

    async def test_config_only_by_kind(self, feed: tuple[Services, Ctx, Path]) -> None:
        """kinds=config leaves secret events out; kinds=secret leaves config changes out; the revision
        reached is the same."""
        services, ctx, _ = feed
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN)
        await services.configs.put(ctx, ConfigRef.parse("gw", "a", "global"), {"n": 1})
        configs = await services.changes.poll(ctx, 0, kinds=frozenset({"config"}))
        secrets = await services.changes.poll(ctx, 0, kinds=SECRETS)
        assert kinds_of(configs) == [("config", "put", "a")]
        assert kinds_of(secrets) == [("secret", "created", "openai")]
        assert configs["revision"] == secrets["revision"] == 2

    async def test_only_those_who_may_list_a_secret_see_its_events(
        self, feed: tuple[Services, Ctx, Path]
    ) -> None:
        """A token scoped to one namespace sees that namespace's secrets; a developer sees a secret kept
        out of production but not one stored for global (which serves production)."""
        services, ctx, _ = feed
        await services.secrets.put(ctx, "team-a", "key", PLAIN)
        await services.secrets.put(ctx, "team-b", "key", PLAIN)
        await services.secrets.put(ctx, "team-a", "dev-key", PLAIN, env=Environment.DEVELOPMENT)
        scoped = await token_ctx(services, ctx, "service-account", namespaces=["team-a"])
        developer = await token_ctx(services, ctx, "developer")
        seen = await services.changes.poll(scoped, 0, kinds=SECRETS)
        assert [(c["namespace"], c["key"]) for c in seen["changes"]] == [
            ("team-a", "key"),
            ("team-a", "dev-key"),
        ]
        dev_seen = await services.changes.poll(developer, 0, kinds=SECRETS)
        assert [(c["namespace"], c["key"]) for c in dev_seen["changes"]] == [("team-a", "dev-key")]
        for caller in (scoped, developer):  # the same as what secret list shows them
            listed = {(r.namespace, r.key) for r in await services.secrets.list(caller)}
            shown = {
                (c["namespace"], c["key"])
                for c in (await services.changes.poll(caller, 0, kinds=SECRETS))["changes"]
            }
            assert listed == shown
        assert seen["revision"] == dev_seen["revision"] == 3  # hidden events are passed over, not lost

    async def test_prefix_and_environment_filter_secret_events(
        self, feed: tuple[Services, Ctx, Path]
    ) -> None:
        """prefix matches the namespace; env matches the environments a secret serves."""
        services, ctx, _ = feed
        await services.secrets.put(ctx, "team-a/sub", "everywhere", PLAIN)
        await services.secrets.put(ctx, "team-a", "prod-only", PLAIN, env=Environment.PRODUCTION)
        await services.secrets.put(ctx, "team-b", "dev-only", PLAIN, env=Environment.DEVELOPMENT)

        async def keys(**kw: Any) -> list[str]:
            return [c["key"] for c in (await services.changes.poll(ctx, 0, kinds=SECRETS, **kw))["changes"]]

        assert await keys(prefix="team-a") == ["everywhere", "prod-only"]
        assert await keys(environment=Environment.PRODUCTION) == ["everywhere", "prod-only"]
        assert await keys(environment=Environment.DEVELOPMENT) == ["everywhere", "dev-only"]
        assert await keys(prefix="team-b", environment=Environment.PRODUCTION) == []

    @pytest.mark.parametrize(
        "kinds", [BOTH, frozenset({"config"}), SECRETS], ids=lambda kinds: ",".join(sorted(kinds))
    )
    async def test_paging_through_a_long_mixed_history_sees_every_change_once(
        self, feed: tuple[Services, Ctx, Path], monkeypatch: pytest.MonkeyPatch, kinds: frozenset[str]
    ) -> None:
        """With pages of 3 rows, polling on from each answer's revision gives every change in order, once
        (runs of one kind longer than a page included)."""
        services, ctx, _ = feed
        monkeypatch.setattr(changes_module, "MAX_CHANGES", 3)
        expected: dict[str, list[int]] = {"config": [], "secret": []}
        for i in range(5):
            expected["config"].append(
                (
                    await services.configs.put(ctx, ConfigRef.parse("gw", "run", "global"), {"i": i})
                ).version.revision
            )
        for i in range(4):
            expected["config"].append(
                (
                    await services.configs.put(ctx, ConfigRef.parse("gw", f"c{i}", "global"), {"i": i})
                ).version.revision
            )
            expected["secret"].append(
                (await services.secrets.put(ctx, "api-keys", "k", f"{PLAIN}-{i}")).revision
            )
            await services.secrets.revoke(ctx, "api-keys", "k", version=i + 1)
            expected["secret"].append(await services.core.storage.current_revision(ctx.principal.tenant_id))
        for i in range(5):
            expected["secret"].append(
                (await services.secrets.put(ctx, "api-keys", "run", f"{PLAIN}-{i}")).revision
            )
        seen: list[int] = []
        since = 0
        for _ in range(50):
            got = await services.changes.poll(ctx, since, kinds=kinds)
            assert len(got["changes"]) <= 3
            seen += [c["revision"] for c in got["changes"]]
            if got["revision"] == since:
                break
            since = got["revision"]
        assert seen == sorted(r for kind in kinds for r in expected[kind])

    async def test_a_waiting_poll_wakes_on_a_secret_write(self, feed: tuple[Services, Ctx, Path]) -> None:
        """A poll waiting at the head returns the secret event written while it waits."""
        services, ctx, _ = feed
        waiting = asyncio.create_task(services.changes.poll(ctx, 0, wait=30, kinds=SECRETS))
        await asyncio.sleep(0)  # let the poll start waiting
        await services.configs.put(ctx, ConfigRef.parse("gw", "a", "global"), {"n": 1})  # not wanted
        await services.secrets.put(ctx, "api-keys", "openai", PLAIN)
        async with asyncio.timeout(10):
            got = await waiting
        assert kinds_of(got) == [("secret", "created", "openai")]

    async def test_bad_kinds_are_refused(self, feed: tuple[Services, Ctx, Path]) -> None:
        """kinds must name config and/or secret."""
        services, ctx, _ = feed
        for kinds in (frozenset(), frozenset({"agents"})):
            with pytest.raises(InvalidInput):
                await services.changes.poll(ctx, 0, kinds=kinds)


class TestCloudEventIds:
    def test_ids_are_unique_when_a_revision_carries_several_events(self) -> None:
        """One event at a revision is tenant/revision; several get -1, -2 … so no two ids are equal."""
        base = {"kind": "secret", "namespace": "ns", "key": "k", "time": "t", "environment": "global"}
        changes = [
            {**base, "type": "created", "revision": 4},
            {**base, "type": "rotation_due", "revision": 5},
            {**base, "type": "rotation_due", "revision": 5},
        ]
        events = as_cloudevents("acme", changes)
        assert [e["id"] for e in events] == ["acme/4", "acme/5-1", "acme/5-2"]
        assert [e["type"] for e in events] == [
            "com.llmconfig.secret.created",
            "com.llmconfig.secret.rotation_due",
            "com.llmconfig.secret.rotation_due",
        ]
