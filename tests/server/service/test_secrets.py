"""SecretService over a real SQLite file and the local key provider."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.keys import LocalKeyProvider
from server.service import Ctx, Services
from server.storage import SQLiteStorage
from shared.crypto import DecryptionFailed, WrappedKey, new_key
from shared.errors import InvalidInput, NotFound, PermissionDenied
from shared.models import ConfigRef, Environment, SecretVersion
from tests.server.service.conftest import FakeClock, token_ctx

PLAIN = "sk-ant-PLANTED-SECRET-VALUE-0123456789"


@pytest.fixture
async def secret_services(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Services, Ctx, Path]]:
    db = tmp_path / "s.db"
    async with SQLiteStorage(db) as store:
        keys = LocalKeyProvider(store, new_key(), max_encryptions=3)
        services = Services.build(store, clock=clock, keys=keys)
        _, token = await services.tenants.bootstrap("acme")
        ctx = Ctx(await services.tenants.authenticate(token, "t"), "t")
        yield services, ctx, db


def rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def tamper(db: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql, params)


class TestRoundTrip:
    async def test_put_then_get(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """A stored secret comes back as the same plaintext, with its version."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        value, record = await services.secrets.get(ctx, "api-keys", "anthropic")
        assert (value, record.version) == (PLAIN, 1)

    async def test_plaintext_never_reaches_the_database_files(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Neither the database nor its WAL contains the plaintext, the audit log neither."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        await services.secrets.get(ctx, "api-keys", "anthropic")
        for path in db.parent.iterdir():
            assert PLAIN.encode() not in path.read_bytes(), path.name
        assert PLAIN not in str(rows(db, "SELECT * FROM audit_log"))

    async def test_metadata_reads_carry_no_value(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """list and versions return metadata only."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        listed = [r.to_dict() for r in await services.secrets.list(ctx)]
        versions = [r.to_dict() for r in await services.secrets.versions(ctx, "api-keys", "anthropic")]
        for body in (listed, versions):
            assert PLAIN not in str(body)
            assert "ciphertext" not in str(body)

    async def test_every_plaintext_read_is_audited(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """Two reads leave two secret:read records."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        for _ in range(2):
            await services.secrets.get(ctx, "api-keys", "anthropic")
        assert rows(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'secret:read' AND result = 'ok'") == [
            (2,)
        ]


class TestRotationAndGrace:
    async def test_replaced_version_is_served_during_grace_only(
        self, secret_services: tuple[Services, Ctx, Path], clock: FakeClock
    ) -> None:
        """After a rotation with a 60 s grace, version 1 opens until the grace ends."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "openai", "old")
        await services.secrets.put(ctx, "api-keys", "openai", "new", grace_period=60)
        assert (await services.secrets.get(ctx, "api-keys", "openai"))[0] == "new"
        assert (await services.secrets.get(ctx, "api-keys", "openai", version=1))[0] == "old"
        clock.advance(61)
        with pytest.raises(NotFound, match="deprecated"):
            await services.secrets.get(ctx, "api-keys", "openai", version=1)

    async def test_revoked_and_expired_are_not_served(
        self, secret_services: tuple[Services, Ctx, Path], clock: FakeClock
    ) -> None:
        """A revoked secret and one past its expiry are refused."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "a", "revoked", "x")
        await services.secrets.revoke(ctx, "a", "revoked")
        with pytest.raises(NotFound, match="revoked"):
            await services.secrets.get(ctx, "a", "revoked", version=1)
        await services.secrets.put(ctx, "a", "short", "y", expires_in=10)
        clock.advance(11)
        with pytest.raises(NotFound, match="expired"):
            await services.secrets.get(ctx, "a", "short")

    async def test_kek_rotates_after_its_encryption_budget(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """With a budget of 3, the 4th secret uses KEK v2, and all of them still open."""
        services, ctx, db = secret_services
        for i in range(5):
            await services.secrets.put(ctx, "budget", f"k{i}", f"v{i}")
        assert [r[0] for r in rows(db, "SELECT kek_version FROM secret_versions ORDER BY version, key")] == [
            1,
            1,
            1,
            2,
            2,
        ]
        for i in range(5):
            assert (await services.secrets.get(ctx, "budget", f"k{i}"))[0] == f"v{i}"


class CountingUnwraps:
    """Counts the provider's unwraps: each is one opening of a stored value (a cache miss)."""

    def __init__(self, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
        provider = services.secrets.keys
        assert provider is not None
        real = provider.unwrap
        self.count = 0

        async def unwrap(tenant_id: str, wrapped: WrappedKey, aad: bytes) -> bytes:
            self.count += 1
            return await real(tenant_id, wrapped, aad)

        monkeypatch.setattr(provider, "unwrap", unwrap)


def read_audits(db: Path) -> int:
    (count,) = rows(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'secret:read' AND result = 'ok'")[0]
    assert isinstance(count, int)
    return count


class TestPlaintextCache:
    """An opened value is kept in memory for a few seconds; every write to the tenant's secrets
    drops it, and every read is still authorized, checked for validity and audited."""

    @pytest.fixture
    def unwraps(
        self, secret_services: tuple[Services, Ctx, Path], monkeypatch: pytest.MonkeyPatch
    ) -> CountingUnwraps:
        return CountingUnwraps(secret_services[0], monkeypatch)

    async def test_repeated_reads_open_once_and_each_is_audited(
        self, secret_services: tuple[Services, Ctx, Path], unwraps: CountingUnwraps
    ) -> None:
        """Three reads in a row: one opening, three audit records, the same value each time."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        for _ in range(3):
            assert (await services.secrets.get(ctx, "api-keys", "anthropic"))[0] == PLAIN
        assert unwraps.count == 1
        assert read_audits(db) == 3

    async def test_a_write_to_any_secret_of_the_tenant_drops_the_cache(
        self, secret_services: tuple[Services, Ctx, Path], unwraps: CountingUnwraps
    ) -> None:
        """After a put of another secret the cached value is opened again (from the store)."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        await services.secrets.get(ctx, "api-keys", "anthropic")
        await services.secrets.put(ctx, "api-keys", "openai", "sk-other")
        assert (await services.secrets.get(ctx, "api-keys", "anthropic"))[0] == PLAIN
        assert unwraps.count == 2

    async def test_a_cached_value_is_not_served_after_the_store_changed_under_it(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Served from memory while cached; once a write drops it, a read opens what is stored now
        (here a tampered row, which fails): the cache never outlives a write."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        await services.secrets.put(ctx, "api-keys", "openai", "sk-openai-other")
        await services.secrets.get(ctx, "api-keys", "anthropic")
        tamper(
            db,
            "UPDATE secret_versions SET wrapped_dek = (SELECT wrapped_dek FROM secret_versions "
            "WHERE key = 'openai') WHERE key = 'anthropic'",
        )
        assert (await services.secrets.get(ctx, "api-keys", "anthropic"))[0] == PLAIN  # from memory
        await services.secrets.put(ctx, "other", "key", "x")
        with pytest.raises(DecryptionFailed):
            await services.secrets.get(ctx, "api-keys", "anthropic")

    async def test_read_after_rotation_returns_the_new_value_at_once(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Version 1 cached, then rotated with a grace period: the active read is the new value and
        version 1, still in its grace, is opened again and still correct."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "openai", "old")
        assert (await services.secrets.get(ctx, "api-keys", "openai"))[0] == "old"
        await services.secrets.put(ctx, "api-keys", "openai", "new", grace_period=60)
        value, record = await services.secrets.get(ctx, "api-keys", "openai")
        assert (value, record.version) == ("new", 2)
        assert (await services.secrets.get(ctx, "api-keys", "openai", version=1))[0] == "old"

    async def test_rotated_out_version_is_never_served_from_cache(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Version 1 cached, then replaced without a grace period: asking for it by number is refused."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "openai", "old")
        await services.secrets.get(ctx, "api-keys", "openai", version=1)
        await services.secrets.put(ctx, "api-keys", "openai", "new")
        with pytest.raises(NotFound, match="deprecated"):
            await services.secrets.get(ctx, "api-keys", "openai", version=1)
        assert (await services.secrets.get(ctx, "api-keys", "openai"))[0] == "new"

    async def test_revoked_versions_are_never_served_from_cache(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Both versions cached; revoking version 1 refuses it at once, version 2 still reads;
        revoking everything refuses the active read too."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "openai", "old")
        await services.secrets.put(ctx, "api-keys", "openai", "new", grace_period=600)
        await services.secrets.get(ctx, "api-keys", "openai", version=1)
        await services.secrets.get(ctx, "api-keys", "openai")
        await services.secrets.revoke(ctx, "api-keys", "openai", version=1)
        with pytest.raises(NotFound, match="revoked"):
            await services.secrets.get(ctx, "api-keys", "openai", version=1)
        assert (await services.secrets.get(ctx, "api-keys", "openai"))[0] == "new"
        await services.secrets.revoke(ctx, "api-keys", "openai")
        with pytest.raises(NotFound, match="no active version"):
            await services.secrets.get(ctx, "api-keys", "openai")
        with pytest.raises(NotFound, match="revoked"):
            await services.secrets.get(ctx, "api-keys", "openai", version=2)
        assert read_audits(db) == 3  # refused reads leave no secret:read ok record

    async def test_rewrap_drops_the_cache(
        self, secret_services: tuple[Services, Ctx, Path], unwraps: CountingUnwraps
    ) -> None:
        """A KEK rotation and rewrap change the stored row: the next read opens it again, on the new KEK."""
        services, ctx, _ = secret_services
        assert isinstance(services.secrets.keys, LocalKeyProvider)
        services.secrets.keys.max_encryptions = 2**30
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        await services.secrets.get(ctx, "api-keys", "anthropic")
        current = (await services.keys.rotate(ctx))["current_version"]
        assert await services.keys.rewrap_tenant(ctx.principal.tenant_id, rate=0) == 1
        opened = unwraps.count  # the rewrap unwraps too
        value, record = await services.secrets.get(ctx, "api-keys", "anthropic")
        assert (value, record.kek_version) == (PLAIN, current)
        assert unwraps.count == opened + 1

    async def test_grace_period_ends_for_a_cached_version(
        self, secret_services: tuple[Services, Ctx, Path], clock: FakeClock
    ) -> None:
        """Version 1 read (cached) in its grace period is refused once the grace period is over."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "openai", "old")
        await services.secrets.put(ctx, "api-keys", "openai", "new", grace_period=60)
        assert (await services.secrets.get(ctx, "api-keys", "openai", version=1))[0] == "old"
        clock.advance(61)
        with pytest.raises(NotFound, match="deprecated"):
            await services.secrets.get(ctx, "api-keys", "openai", version=1)

    async def test_expiry_applies_to_a_cached_value(
        self, secret_services: tuple[Services, Ctx, Path], clock: FakeClock
    ) -> None:
        """A secret read (cached) shortly before it expires is refused right after."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "short", "y", expires_in=10)
        clock.advance(9)
        assert (await services.secrets.get(ctx, "api-keys", "short"))[0] == "y"
        clock.advance(2)
        with pytest.raises(NotFound, match="expired"):
            await services.secrets.get(ctx, "api-keys", "short")

    async def test_encoded_answer_is_kept_with_the_value_and_dropped_with_it(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """get_encoded encodes once per opened value; after a rotation the answer is the new value's."""
        services, ctx, db = secret_services
        calls: list[tuple[str, int]] = []

        def encode(value: str, record: SecretVersion) -> bytes:
            calls.append((value, record.version))
            return f"{record.version}:{value}".encode()

        await services.secrets.put(ctx, "api-keys", "openai", "old")
        for _ in range(2):
            assert await services.secrets.get_encoded(ctx, "api-keys", "openai", encode=encode) == b"1:old"
        await services.secrets.put(ctx, "api-keys", "openai", "new", grace_period=60)
        assert await services.secrets.get_encoded(ctx, "api-keys", "openai", encode=encode) == b"2:new"
        assert calls == [("old", 1), ("new", 2)]
        assert read_audits(db) == 3

    async def test_cached_value_is_still_authorized_per_caller(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """An admin's read caches the value; a developer asking next is still refused and audited."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "shared", PLAIN)
        await services.secrets.get(ctx, "api-keys", "shared")
        dev = await token_ctx(services, ctx, "developer")
        with pytest.raises(PermissionDenied):
            await services.secrets.get(dev, "api-keys", "shared")
        with pytest.raises(PermissionDenied):
            await services.secrets.get_encoded(dev, "api-keys", "shared", encode=lambda v, r: v.encode())
        assert rows(db, "SELECT COUNT(*) FROM audit_log WHERE result = 'denied'") == [(2,)]
        assert read_audits(db) == 1


class TestTampering:
    async def _two(self, services: Services, ctx: Ctx) -> None:
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        await services.secrets.put(ctx, "api-keys", "openai", "sk-openai-other")

    @pytest.mark.parametrize(
        ("what", "sql"),
        [
            (
                "flipped bit",
                "UPDATE secret_versions SET ciphertext = "
                "substr(ciphertext, 1, 20) || CASE substr(ciphertext, 21, 1) WHEN 'A' THEN 'B' ELSE 'A' END "
                "|| substr(ciphertext, 22) WHERE key = 'anthropic'",
            ),
            (
                "truncated",
                "UPDATE secret_versions SET ciphertext = substr(ciphertext, 1, 24) WHERE key = 'anthropic'",
            ),
            (
                "swapped nonce",
                "UPDATE secret_versions SET ciphertext = (SELECT substr(ciphertext, 1, 16) FROM "
                "secret_versions WHERE key = 'openai') || substr(ciphertext, 17) WHERE key = 'anthropic'",
            ),
            (
                "other secret's data key",
                "UPDATE secret_versions SET wrapped_dek = (SELECT wrapped_dek FROM "
                "secret_versions WHERE key = 'openai') WHERE key = 'anthropic'",
            ),
            (
                "environment relabelled",
                "UPDATE secret_versions SET metadata = json_set(metadata, '$.environment', 'development') "
                "WHERE key = 'anthropic'",
            ),
            (
                "row moved to another key",
                "UPDATE secret_versions SET (ciphertext, wrapped_dek, kek_version) = "
                "(SELECT ciphertext, wrapped_dek, kek_version FROM secret_versions WHERE key = 'openai') "
                "WHERE key = 'anthropic'",
            ),
        ],
    )
    async def test_tampered_rows_never_open(
        self, secret_services: tuple[Services, Ctx, Path], what: str, sql: str
    ) -> None:
        """Each tampering fails with DecryptionFailed and leaves a tamper_detected audit record."""
        services, ctx, db = secret_services
        await self._two(services, ctx)
        tamper(db, sql)
        with pytest.raises(DecryptionFailed) as err:
            await services.secrets.get(ctx, "api-keys", "anthropic")
        assert PLAIN not in err.value.detail
        assert "sk-openai-other" not in err.value.detail
        assert rows(db, "SELECT COUNT(*) FROM audit_log WHERE result = 'tamper_detected'") == [(1,)]

    async def test_wrong_master_key_opens_nothing(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """A server started with another master key can't open the tenant's KEK."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        other = Services.build(services.core.storage, keys=LocalKeyProvider(services.core.storage, new_key()))
        with pytest.raises(DecryptionFailed, match="master key"):
            await other.secrets.get(ctx, "api-keys", "anthropic")


class TestPolicy:
    async def test_developer_reads_only_secrets_kept_out_of_production(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """A developer reads a development secret, never a shared one (which serves production too)."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "shared", PLAIN)  # global: every environment
        await services.secrets.put(ctx, "api-keys", "sandbox", "sk-dev", env=Environment.DEVELOPMENT)
        dev = await token_ctx(services, ctx, "developer")
        assert (await services.secrets.get(dev, "api-keys", "sandbox", env=Environment.DEVELOPMENT))[
            0
        ] == "sk-dev"
        for env in (Environment.DEVELOPMENT, Environment.PRODUCTION, Environment.GLOBAL):
            with pytest.raises(PermissionDenied):  # naming another environment proves nothing
                await services.secrets.get(dev, "api-keys", "shared", env=env)
        with pytest.raises(NotFound, match="development only"):
            await services.secrets.get(ctx, "api-keys", "sandbox", env=Environment.PRODUCTION)
        assert [r.key for r in await services.secrets.list(dev)] == ["sandbox"]
        denied = rows(
            db, "SELECT COUNT(*) FROM audit_log WHERE action = 'secrets:read' AND result = 'denied'"
        )
        assert denied == [(3,)]

    async def test_developer_cannot_take_over_a_shared_secret(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Writing a development version over a shared secret needs write access wherever it served."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "shared", PLAIN)
        dev = await token_ctx(services, ctx, "developer")
        with pytest.raises(PermissionDenied):
            await services.secrets.put(dev, "api-keys", "shared", "mine", env=Environment.DEVELOPMENT)
        await services.secrets.put(dev, "api-keys", "own", "mine", env=Environment.DEVELOPMENT)

    async def test_service_account_limited_to_its_namespaces(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """A service account reads its namespace's secrets, and nothing else, not even in a list."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "gateway", "anthropic", PLAIN)
        await services.secrets.put(ctx, "billing", "stripe", "sk-stripe")
        svc = await token_ctx(services, ctx, "service-account", namespaces=["gateway"])
        assert (await services.secrets.get(svc, "gateway", "anthropic", env=Environment.PRODUCTION))[
            0
        ] == PLAIN
        with pytest.raises(PermissionDenied):
            await services.secrets.get(svc, "billing", "stripe", env=Environment.PRODUCTION)
        assert [r.namespace for r in await services.secrets.list(svc, env=Environment.PRODUCTION)] == [
            "gateway"
        ]


class TestSecretReferences:
    ENDPOINT = {
        "provider": "anthropic",
        "model": "claude",
        "auth": {"header": "x-api-key"},
        "secrets": [{"field_path": "$.auth.api_key", "secret_ref": "api-keys/anthropic"}],
    }

    async def _setup(self, services: Services, ctx: Ctx) -> None:
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        await services.configs.put(
            ctx, ConfigRef.parse("llm-gateway/routing", "primary", "global"), self.ENDPOINT
        )

    async def test_resolved_read_injects_plaintext(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """A resolved read carries the secret at field_path; the stored config never does."""
        services, ctx, db = secret_services
        await self._setup(services, ctx)
        prod = ConfigRef.parse("llm-gateway/routing", "primary", "production")
        body = (await services.configs.get(ctx, prod, resolve=True, memo_key="m")).body
        assert body["value"]["auth"] == {"header": "x-api-key", "api_key": PLAIN}
        raw = (
            await services.configs.get(ctx, ConfigRef.parse("llm-gateway/routing", "primary", "global"))
        ).body
        assert "api_key" not in raw["value"]["auth"]
        assert PLAIN not in str(rows(db, "SELECT value FROM config_versions"))

    async def test_each_injected_read_is_audited_and_never_memoized(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Two resolved reads are two audited secret reads; the memo holds nothing for them."""
        services, ctx, db = secret_services
        await self._setup(services, ctx)
        prod = ConfigRef.parse("llm-gateway/routing", "primary", "production")
        for _ in range(2):
            await services.configs.get(ctx, prod, resolve=True, memo_key="m")
        assert services.configs.memo_get(ctx.principal, "m") is None
        assert rows(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'secret:read' AND result = 'ok'") == [
            (2,)
        ]

    async def test_rotation_shows_on_the_next_read(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """After the secret rotates, the next resolved read carries the new value and a new ETag."""
        services, ctx, _ = secret_services
        await self._setup(services, ctx)
        prod = ConfigRef.parse("llm-gateway/routing", "primary", "production")
        before = await services.configs.get(ctx, prod, resolve=True)
        await services.secrets.put(ctx, "api-keys", "anthropic", "rotated-value", grace_period=60)
        after = await services.configs.get(ctx, prod, resolve=True)
        assert after.body["value"]["auth"]["api_key"] == "rotated-value"
        assert before.etag != after.etag
        assert hashlib.sha256(b"rotated-value").hexdigest()[:32] not in after.etag

    async def test_reader_without_secret_access_gets_403_naming_the_ref(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """A service account scoped to the config's namespace only is refused, naming the secret."""
        services, ctx, _ = secret_services
        await self._setup(services, ctx)
        prod = ConfigRef.parse("llm-gateway/routing", "primary", "production")
        narrow = await token_ctx(services, ctx, "service-account", namespaces=["llm-gateway"])
        with pytest.raises(PermissionDenied, match="api-keys/anthropic") as err:
            await services.configs.get(narrow, prod, resolve=True)
        assert err.value.extra["secret_ref"] == "api-keys/anthropic"
        wide = await token_ctx(services, ctx, "service-account", namespaces=["llm-gateway", "api-keys"])
        body = (await services.configs.get(wide, prod, resolve=True)).body
        assert body["value"]["auth"]["api_key"] == PLAIN

    async def test_missing_secret_fails_whole_read(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """A reference to a secret that doesn't exist is a 404 naming it, not a partial value."""
        services, ctx, _ = secret_services
        value = {
            **self.ENDPOINT,
            "secrets": [{"field_path": "$.auth.api_key", "secret_ref": "api-keys/none"}],
        }
        await services.configs.put(ctx, ConfigRef.parse("gw", "x", "global"), value)
        with pytest.raises(NotFound, match="api-keys/none"):
            await services.configs.get(ctx, ConfigRef.parse("gw", "x", "global"), resolve=True)

    @pytest.mark.parametrize(
        "secrets",
        [
            "api-keys/anthropic",
            [{"field_path": "$.a", "secret_ref": "../etc/passwd"}],
            [{"field_path": "a b", "secret_ref": "api-keys/anthropic"}],
            [{"field_path": "$.secrets[0]", "secret_ref": "api-keys/anthropic"}],
            [{"secret_ref": "api-keys/anthropic"}],
        ],
    )
    async def test_malformed_references_are_refused_on_write(
        self, secret_services: tuple[Services, Ctx, Path], secrets: object
    ) -> None:
        """Bad field paths or secret names are a 400 when the config is written."""
        services, ctx, _ = secret_services
        with pytest.raises(InvalidInput):
            await services.configs.put(ctx, ConfigRef.parse("gw", "bad", "global"), {"secrets": secrets})


class TestKeyRotation:
    async def _secrets(self, services: Services, ctx: Ctx, n: int) -> None:
        # a realistic budget: with the fixture's budget of 3 the rewrap itself would rotate again
        assert isinstance(services.secrets.keys, LocalKeyProvider)
        services.secrets.keys.max_encryptions = 2**30
        for i in range(n):
            await services.secrets.put(ctx, "rot", f"k{i}", f"value-{i}")

    async def test_rotate_then_rewrap_moves_keys_not_values(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """After rotation and rewrap every data key is on the new KEK; ciphertexts are untouched."""
        services, ctx, db = secret_services
        await self._secrets(services, ctx, 2)
        before = rows(db, "SELECT key, ciphertext FROM secret_versions ORDER BY key")
        status = await services.keys.rotate(ctx)
        current = status["current_version"]
        assert status["rewrap_pending"] == 2
        assert await services.keys.rewrap_tenant(ctx.principal.tenant_id, rate=0) == 2
        assert rows(db, "SELECT DISTINCT kek_version FROM secret_versions") == [(current,)]
        assert rows(db, "SELECT key, ciphertext FROM secret_versions ORDER BY key") == before
        for i in range(2):
            assert (await services.secrets.get(ctx, "rot", f"k{i}"))[0] == f"value-{i}"
        assert (await services.keys.status(ctx))["rewrap_pending"] == 0

    async def test_interrupted_rewrap_resumes(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """A rewrap stopped after 2 of 5 rows leaves 3 pending; the next run finishes, all still open."""
        services, ctx, _ = secret_services
        await self._secrets(services, ctx, 5)
        await services.keys.rotate(ctx)
        tenant = ctx.principal.tenant_id
        assert await services.keys.rewrap_tenant(tenant, rate=0, limit=2) == 2
        assert (await services.keys.status(ctx))["rewrap_pending"] == 3
        assert await services.keys.rewrap_tenant(tenant, rate=0) == 3
        assert (await services.keys.status(ctx))["rewrap_pending"] == 0
        for i in range(5):
            assert (await services.secrets.get(ctx, "rot", f"k{i}"))[0] == f"value-{i}"

    async def test_broken_row_is_passed_over_and_audited(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """A tampered wrapped key doesn't stall the rewrap: the others move, it stays pending, audited."""
        services, ctx, db = secret_services
        await self._secrets(services, ctx, 4)
        tamper(
            db, "UPDATE secret_versions SET wrapped_dek = 'AAAA' || substr(wrapped_dek, 5) WHERE key = 'k0'"
        )
        await services.keys.rotate(ctx)
        assert await services.keys.rewrap_tenant(ctx.principal.tenant_id, rate=0) == 3
        assert (await services.keys.status(ctx))["rewrap_pending"] == 1
        audited = rows(
            db, "SELECT resource FROM audit_log WHERE action = 'keys:rewrap' AND result = 'tamper_detected'"
        )
        assert audited == [("secret/rot/k0",)]

    async def test_only_admins_rotate(self, secret_services: tuple[Services, Ctx, Path]) -> None:
        """Operators, developers and scoped tokens can't rotate keys."""
        services, ctx, _ = secret_services
        for roles, scopes in ((["operator"], None), (["developer"], None), (["tenant-admin"], ["rot"])):
            other = await token_ctx(services, ctx, *roles, namespaces=scopes)
            with pytest.raises(PermissionDenied):
                await services.keys.rotate(other)


class TestDueAndRevisions:
    async def test_rotation_due_after_interval(
        self, secret_services: tuple[Services, Ctx, Path], clock: FakeClock
    ) -> None:
        """A secret with a 60 s rotation interval is listed as due after 61 s, and not after rotating."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "openai", "v1", rotation_interval=60)
        await services.secrets.put(ctx, "api-keys", "other", "x")
        assert await services.secrets.list(ctx, due=True) == []
        clock.advance(61)
        assert [r.key for r in await services.secrets.list(ctx, due=True)] == ["openai"]
        await services.secrets.put(ctx, "api-keys", "openai", "v2")  # keeps its interval
        assert await services.secrets.list(ctx, due=True) == []
        clock.advance(61)
        assert [r.key for r in await services.secrets.list(ctx, due=True)] == ["openai"]

    async def test_secret_rotation_advances_referencing_config_revision(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """The resolved revision of a config follows the newest version of the secrets it references."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        ref = ConfigRef.parse("gw", "ep", "global")
        await services.configs.put(ctx, ref, TestSecretReferences.ENDPOINT)
        before = (await services.configs.get(ctx, ref, resolve=True)).body["revision"]
        rotated = await services.secrets.put(ctx, "api-keys", "anthropic", "new", grace_period=10)
        after = (await services.configs.get(ctx, ref, resolve=True)).body
        assert after["revision"] == rotated.revision > before
        assert after["secret_versions"] == [
            {"secret_ref": "api-keys/anthropic", "version": 2, "revision": rotated.revision}
        ]


class TestReferencesRespectWhereSecretsServe:
    async def test_developer_config_cannot_pull_a_shared_secret(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """A developer's development config referencing a production-serving secret resolves to 403."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "shared", PLAIN)
        dev = await token_ctx(services, ctx, "developer")
        ref = ConfigRef.parse("sandbox", "ep", "development")
        value = {"secrets": [{"field_path": "$.key", "secret_ref": "api-keys/shared"}]}
        await services.configs.put(dev, ref, value)
        with pytest.raises(PermissionDenied, match="api-keys/shared") as err:
            await services.configs.get(dev, ref, resolve=True)
        assert PLAIN not in err.value.detail

    async def test_development_secret_is_not_injected_into_production(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """A config resolved for production may not use a secret kept for development."""
        services, ctx, _ = secret_services
        await services.secrets.put(ctx, "api-keys", "sandbox", "sk-dev", env=Environment.DEVELOPMENT)
        ref = ConfigRef.parse("gw", "ep", "global")
        await services.configs.put(
            ctx, ref, {"secrets": [{"field_path": "$.key", "secret_ref": "api-keys/sandbox"}]}
        )
        with pytest.raises(NotFound, match="development only"):
            await services.configs.get(ctx, ConfigRef.parse("gw", "ep", "production"), resolve=True)
        dev_view = await services.configs.get(ctx, ConfigRef.parse("gw", "ep", "development"), resolve=True)
        assert dev_view.body["value"]["key"] == "sk-dev"


class TestTransport:
    async def test_plaintext_needs_a_private_channel(
        self, secret_services: tuple[Services, Ctx, Path]
    ) -> None:
        """Over plain HTTP from another machine a secret is refused, directly and through a config."""
        services, ctx, db = secret_services
        await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
        await services.configs.put(ctx, ConfigRef.parse("gw", "ep", "global"), TestSecretReferences.ENDPOINT)
        remote = Ctx(ctx.principal, "r", private_channel=False)
        with pytest.raises(PermissionDenied, match="only over TLS") as err:
            await services.secrets.get(remote, "api-keys", "anthropic")
        assert err.value.extra["rule"] == "deny:insecure-transport"
        with pytest.raises(PermissionDenied, match="api-keys/anthropic"):
            await services.configs.get(remote, ConfigRef.parse("gw", "ep", "global"), resolve=True)
        assert rows(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'secret:read' AND result = 'ok'") == [
            (0,)
        ]
        denied = rows(
            db, "SELECT COUNT(*) FROM audit_log WHERE result = 'denied' AND metadata LIKE '%insecure%'"
        )
        assert denied == [(2,)]

    async def test_operator_may_allow_plain_http(self, tmp_path: Path) -> None:
        """With allow_insecure_secrets the same request is served."""
        async with SQLiteStorage(tmp_path / "i.db") as store:
            services = Services.build(
                store, keys=LocalKeyProvider(store, new_key()), allow_insecure_secrets=True
            )
            _, token = await services.tenants.bootstrap("acme")
            ctx = Ctx(await services.tenants.authenticate(token, "t"), "t", private_channel=False)
            await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
            assert (await services.secrets.get(ctx, "api-keys", "anthropic"))[0] == PLAIN
