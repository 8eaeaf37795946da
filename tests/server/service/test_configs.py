"""ConfigService in process: versions, resolution, the read cache and its invalidation."""

from __future__ import annotations

import asyncio

import jsonpatch
import pytest

from server.service import Ctx, Services
from shared.errors import Conflict, InvalidInput, NotFound, PermissionDenied, SchemaViolation, Unauthenticated
from shared.models import ConfigRef
from tests.server.service.conftest import FakeClock, token_ctx

REF = ConfigRef.parse("llm-gateway/routing", "primary-model", "global")
PROD = ConfigRef.parse("llm-gateway/routing", "primary-model", "production")


class TestVersions:
    async def test_versions_patches_and_revisions(self, services: Services, admin_ctx: Ctx) -> None:
        """Each write adds a version whose patch turns the previous value into the new one."""
        values = [{"model": "a"}, {"model": "b", "t": 1}, {"t": 2}]
        for v in values:
            await services.configs.put(admin_ctx, REF, v)
        history = await services.configs.history(admin_ctx, REF)
        assert [h["version"] for h in history] == [3, 2, 1]
        previous: dict[str, object] = {}
        for entry, value in zip(reversed(history), values, strict=True):
            assert jsonpatch.apply_patch(previous, entry["patch"]) == value
            previous = value

    async def test_expected_version_conflict_names_both(self, services: Services, admin_ctx: Ctx) -> None:
        """A stale expected_version is a conflict naming expected and current versions; nothing changes."""
        await services.configs.put(admin_ctx, REF, {"a": 1})
        await services.configs.put(admin_ctx, REF, {"a": 2})
        with pytest.raises(Conflict) as err:
            await services.configs.put(admin_ctx, REF, {"a": 3}, expected_version=1)
        assert "expected version 1" in err.value.detail and "current version is 2" in err.value.detail
        assert (await services.configs.get(admin_ctx, REF)).body["value"] == {"a": 2}

    async def test_expected_version_zero_means_create_only(self, services: Services, admin_ctx: Ctx) -> None:
        """expected_version 0 creates when absent and conflicts when present."""
        await services.configs.put(admin_ctx, REF, {"a": 1}, expected_version=0)
        with pytest.raises(Conflict):
            await services.configs.put(admin_ctx, REF, {"a": 2}, expected_version=0)

    async def test_delete_then_recreate(self, services: Services, admin_ctx: Ctx) -> None:
        """Delete hides the entry, keeps history, and a later put creates it again."""
        await services.configs.put(admin_ctx, REF, {"a": 1})
        await services.configs.delete(admin_ctx, REF)
        with pytest.raises(NotFound):
            await services.configs.get(admin_ctx, REF)
        result = await services.configs.put(admin_ctx, REF, {"a": 2})
        assert result.version.version == 3 and result.version.change_type.value == "create"

    async def test_rollback_adds_a_version(self, services: Services, admin_ctx: Ctx) -> None:
        """Rolling back to v1 writes v3 with v1's value and change type rollback."""
        await services.configs.put(admin_ctx, REF, {"a": 1})
        await services.configs.put(admin_ctx, REF, {"a": 2})
        result = await services.configs.rollback(admin_ctx, REF, 1)
        assert result.version.version == 3 and result.version.value == {"a": 1}
        assert result.version.change_type.value == "rollback"

    async def test_non_object_values_are_refused(self, services: Services, admin_ctx: Ctx) -> None:
        """Only JSON objects are config values."""
        for bad in ([1], "x", None, 3):
            with pytest.raises(InvalidInput):
                await services.configs.put(admin_ctx, REF, bad)


class TestResolution:
    async def test_production_chain_with_provenance(self, services: Services, admin_ctx: Ctx) -> None:
        """production resolves global -> development -> staging -> production with provenance."""
        for env, value in [
            ("global", {"m": "a", "p": {"t": 0.1, "k": 1}}),
            ("staging", {"p": {"t": 0.3}}),
            ("production", {"m": "b"}),
            ("edge", {"m": "edge"}),
        ]:
            await services.configs.put(admin_ctx, ConfigRef.parse(REF.namespace, REF.key, env), value)
        body = (await services.configs.get(admin_ctx, PROD, resolve=True, explain=True)).body
        assert body["value"] == {"m": "b", "p": {"t": 0.3, "k": 1}}
        assert body["provenance"] == {"/m": "production", "/p/t": "staging", "/p/k": "global"}
        assert [layer["environment"] for layer in body["layers"]] == ["global", "staging", "production"]

    async def test_tombstoned_layers_are_skipped(self, services: Services, admin_ctx: Ctx) -> None:
        """A deleted production layer no longer contributes to the resolved value."""
        await services.configs.put(admin_ctx, REF, {"m": "a"})
        await services.configs.put(admin_ctx, PROD, {"m": "b"})
        await services.configs.delete(admin_ctx, PROD)
        assert (await services.configs.get(admin_ctx, PROD, resolve=True)).body["value"] == {"m": "a"}


class TestReadCache:
    async def test_write_invalidates_cached_reads(self, services: Services, admin_ctx: Ctx) -> None:
        """A read after an acknowledged write never returns the cached old value."""
        await services.configs.put(admin_ctx, REF, {"v": 1})
        await services.configs.put(admin_ctx, PROD, {"w": 1})
        assert (await services.configs.get(admin_ctx, PROD, resolve=True)).body["value"] == {"v": 1, "w": 1}
        await services.configs.put(admin_ctx, REF, {"v": 2})
        assert (await services.configs.get(admin_ctx, PROD, resolve=True)).body["value"] == {"v": 2, "w": 1}

    async def test_reads_racing_writes_end_consistent(self, services: Services, admin_ctx: Ctx) -> None:
        """Reads interleaved with writes: once writes stop, every read returns the last value."""
        await services.configs.put(admin_ctx, REF, {"v": 0})

        async def writes() -> None:
            for i in range(1, 30):
                await services.configs.put(admin_ctx, REF, {"v": i})

        async def reads() -> None:
            for _ in range(200):
                await services.configs.get(admin_ctx, PROD, resolve=True)
                await asyncio.sleep(0)

        await asyncio.gather(writes(), reads(), reads())
        assert (await services.configs.get(admin_ctx, PROD, resolve=True)).body["value"] == {"v": 29}
        assert (await services.configs.get(admin_ctx, REF)).body["value"] == {"v": 29}

    async def test_cache_does_not_bypass_policy(self, services: Services, admin_ctx: Ctx) -> None:
        """A value cached by an admin's read is still denied to a developer in production."""
        await services.configs.put(admin_ctx, PROD, {"v": 1})
        await services.configs.get(admin_ctx, PROD)
        dev = await token_ctx(services, admin_ctx, "developer")
        with pytest.raises(PermissionDenied):
            await services.configs.get(dev, PROD)

    async def test_restricted_cached_value_needs_pii(self, services: Services, admin_ctx: Ctx) -> None:
        """A restricted value stays denied to a reader without pii-authorized, cached or not."""
        pii_admin = await token_ctx(services, admin_ctx, "tenant-admin", "pii-authorized")
        await services.configs.put(pii_admin, REF, {"v": 1}, metadata={"classification": "restricted"})
        await services.configs.get(pii_admin, REF)
        with pytest.raises(PermissionDenied):
            await services.configs.get(admin_ctx, REF)
        with pytest.raises(PermissionDenied):
            await services.configs.put(admin_ctx, REF, {"v": 2})


class TestTokens:
    async def test_expired_token_is_refused(
        self, services: Services, admin_ctx: Ctx, clock: FakeClock
    ) -> None:
        """A token past its expiry no longer authenticates."""
        token, _ = await services.tenants.create_token(
            admin_ctx, name="short", roles=["developer"], expires_in=60
        )
        await services.tenants.authenticate(token, "r")
        clock.advance(61)
        with pytest.raises(Unauthenticated, match="expired"):
            await services.tenants.authenticate(token, "r")

    async def test_revocation_is_immediate(self, services: Services, admin_ctx: Ctx) -> None:
        """A revoked token fails on the very next request, despite the auth cache."""
        token, record = await services.tenants.create_token(admin_ctx, name="x", roles=["developer"])
        await services.tenants.authenticate(token, "r")
        await services.tenants.revoke_token(admin_ctx, record.id)
        with pytest.raises(Unauthenticated, match="revoked"):
            await services.tenants.authenticate(token, "r")


class TestReadMemo:
    async def test_memo_serves_repeat_reads(self, services: Services, admin_ctx: Ctx) -> None:
        """A repeated read with the same key is answered from the memo."""
        await services.configs.put(admin_ctx, PROD, {"v": 1})
        first = await services.configs.get(admin_ctx, PROD, memo_key="k")
        assert services.configs.memo_get(admin_ctx.principal, "k") is first

    async def test_write_invalidates_memo(self, services: Services, admin_ctx: Ctx) -> None:
        """After any write in the tenant the memo answers nothing until read again."""
        await services.configs.put(admin_ctx, PROD, {"v": 1})
        await services.configs.get(admin_ctx, PROD, memo_key="k")
        await services.configs.put(admin_ctx, REF, {"other": 1})
        assert services.configs.memo_get(admin_ctx.principal, "k") is None
        again = await services.configs.get(admin_ctx, PROD, resolve=True, memo_key="k2")
        assert again.body["value"] == {"other": 1, "v": 1}

    async def test_settings_change_invalidates_memo(self, services: Services, admin_ctx: Ctx) -> None:
        """Changing the tenant's chains drops memoized resolutions built on the old chain."""
        await services.configs.put(admin_ctx, REF, {"from": "global"})
        await services.configs.put(admin_ctx, PROD, {"p": 1})
        await services.configs.get(admin_ctx, PROD, resolve=True, memo_key="k")
        await services.tenants.put_settings(admin_ctx, {"chains": {"production": ["production"]}})
        assert services.configs.memo_get(admin_ctx.principal, "k") is None
        fresh = await services.configs.get(admin_ctx, PROD, resolve=True, memo_key="k")
        assert fresh.body["value"] == {"p": 1}

    async def test_memo_is_per_token(self, services: Services, admin_ctx: Ctx) -> None:
        """Another token never gets an answer memoized for the first one."""
        await services.configs.put(admin_ctx, PROD, {"v": 1})
        await services.configs.get(admin_ctx, PROD, memo_key="k")
        dev = await token_ctx(services, admin_ctx, "developer")
        assert services.configs.memo_get(dev.principal, "k") is None
        with pytest.raises(PermissionDenied):
            await services.configs.get(dev, PROD, memo_key="k")

    async def test_audited_and_restricted_reads_are_not_memoized(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """Reads that must be audited, and restricted values, always take the full path."""
        pii = await token_ctx(services, admin_ctx, "tenant-admin", "pii-authorized")
        await services.configs.put(pii, REF, {"v": 1}, metadata={"classification": "restricted"})
        await services.configs.get(pii, REF, memo_key="r")
        assert services.configs.memo_get(pii.principal, "r") is None
        await services.configs.put(admin_ctx, PROD, {"v": 1})
        await services.tenants.put_settings(admin_ctx, {"audit_reads": True})
        await services.configs.get(admin_ctx, PROD, memo_key="a")
        assert services.configs.memo_get(admin_ctx.principal, "a") is None


class TestRestrictedHistory:
    async def _restricted_then_developer(self, services: Services, admin_ctx: Ctx) -> tuple[Ctx, ConfigRef]:
        pii = await token_ctx(services, admin_ctx, "tenant-admin", "pii-authorized")
        dev_ref = ConfigRef.parse("pii/users", "profile", "development")
        await services.configs.put(pii, dev_ref, {"ssn": "x"}, metadata={"classification": "restricted"})
        return await token_ctx(services, admin_ctx, "developer"), dev_ref

    async def test_update_without_metadata_keeps_classification(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """A PUT that omits metadata keeps the entry restricted; a developer still can't read it."""
        dev, ref = await self._restricted_then_developer(services, admin_ctx)
        pii = await token_ctx(services, admin_ctx, "tenant-admin", "pii-authorized")
        result = await services.configs.put(pii, ref, {"ssn": "y"})
        assert result.version.metadata == {"classification": "restricted"}
        with pytest.raises(PermissionDenied):
            await services.configs.get(dev, ref)

    async def test_history_and_diff_hide_restricted_versions(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """History and diff that would show a restricted version need pii-authorized."""
        dev, ref = await self._restricted_then_developer(services, admin_ctx)
        with pytest.raises(PermissionDenied):
            await services.configs.history(dev, ref)
        with pytest.raises(PermissionDenied):
            await services.configs.diff(dev, ref, from_version=None, to_version=None)

    async def test_rollback_to_restricted_version_needs_pii(self, services: Services, admin_ctx: Ctx) -> None:
        """Rolling back onto a restricted version is a write of restricted content."""
        pii = await token_ctx(services, admin_ctx, "tenant-admin", "pii-authorized")
        await services.configs.put(pii, REF, {"v": 1}, metadata={"classification": "restricted"})
        await services.configs.put(pii, REF, {"v": 2}, metadata={"classification": "internal"})
        with pytest.raises(PermissionDenied):
            await services.configs.rollback(admin_ctx, REF, 1)
        assert (await services.configs.rollback(pii, REF, 1)).version.value == {"v": 1}

    async def test_diff_of_first_version_is_against_empty(self, services: Services, admin_ctx: Ctx) -> None:
        """Diffing an entry with one version shows everything added since version 0."""
        await services.configs.put(admin_ctx, REF, {"a": 1})
        out = await services.configs.diff(admin_ctx, REF, from_version=None, to_version=None)
        assert out["from_version"] == 0
        assert out["patch"] == [{"op": "add", "path": "/a", "value": 1}]


class TestSchemasOnResolvedValues:
    async def _bind(self, services: Services, admin_ctx: Ctx) -> None:
        await services.schemas.bind(admin_ctx, "model-endpoint", "llm-gateway/*", "primary-model")

    async def test_partial_override_is_valid_when_resolution_is(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """A production layer with only some fields passes: its resolved value is complete."""
        await self._bind(services, admin_ctx)
        await services.configs.put(admin_ctx, REF, {"provider": "openai", "model": "gpt-4o"})
        result = await services.configs.put(admin_ctx, PROD, {"temperature": 0.1})
        assert result.changed

    async def test_override_breaking_resolution_names_environment(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """An override that makes production's resolved value invalid is refused, naming production."""
        await self._bind(services, admin_ctx)
        await services.configs.put(admin_ctx, REF, {"provider": "openai", "model": "gpt-4o"})
        with pytest.raises(SchemaViolation) as err:
            await services.configs.put(admin_ctx, PROD, {"temperature": 9})
        assert [(v["pointer"], v["environments"]) for v in err.value.violations] == [
            ("/temperature", ["production"])
        ]

    async def test_lower_layer_change_checks_every_environment_above(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """A global write that breaks only production's resolution is refused for production."""
        await self._bind(services, admin_ctx)
        await services.configs.put(admin_ctx, REF, {"provider": "openai", "model": "a", "max_tokens": 10})
        await services.configs.put(admin_ctx, PROD, {"provider": "anthropic", "model": "b"})
        with pytest.raises(SchemaViolation) as err:
            await services.configs.put(admin_ctx, REF, {"max_tokens": 10})
        envs = {e for v in err.value.violations for e in v["environments"]}
        assert envs == {
            "global",
            "development",
            "staging",
            "edge",
        }  # production has its own provider and model
        assert all(v["pointer"] == "" for v in err.value.violations)

    async def test_deleting_a_base_layer_that_others_need_is_refused(
        self, services: Services, admin_ctx: Ctx
    ) -> None:
        """Deleting global when production's override alone would be invalid fails; nothing changes."""
        await self._bind(services, admin_ctx)
        await services.configs.put(admin_ctx, REF, {"provider": "openai", "model": "a"})
        await services.configs.put(admin_ctx, PROD, {"temperature": 0.5})
        with pytest.raises(SchemaViolation):
            await services.configs.delete(admin_ctx, REF)
        assert (await services.configs.get(admin_ctx, REF)).body["value"]["model"] == "a"


class TestChangesSince:
    async def test_changes_are_filtered_like_reads(self, services: Services, admin_ctx: Ctx) -> None:
        """A developer's change feed holds only what it may read: no production, no restricted."""
        pii = await token_ctx(services, admin_ctx, "tenant-admin", "pii-authorized")
        dev_ref = ConfigRef.parse("app", "k", "development")
        await services.configs.put(admin_ctx, dev_ref, {"v": 1})
        await services.configs.put(admin_ctx, PROD, {"v": 2})
        await services.configs.put(
            pii,
            ConfigRef.parse("pii", "k", "development"),
            {"v": 3},
            metadata={"classification": "restricted"},
        )
        dev = await token_ctx(services, admin_ctx, "developer")
        seen = (await services.changes.poll(dev, 0))["changes"]
        assert [(c["namespace"], c["environment"]) for c in seen] == [("app", "development")]
        everything = (await services.changes.poll(pii, 0))["changes"]
        assert [c["revision"] for c in everything] == [1, 2, 3]
