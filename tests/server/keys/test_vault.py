"""The ``vault`` key provider against the Transit stand-in (and a real Vault when given)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.config import ServerConfig
from server.keys.vault import VaultKeyProvider, VaultSettings, latest_version
from server.storage import SQLiteStorage
from shared.crypto import DecryptionFailed, WrappedKey, aad_for, new_key
from shared.errors import InvalidInput, Unavailable
from shared.models import Tenant
from tests.server.keys.conftest import VaultTarget
from tests.server.keys.vault_standin import StandinVault
from tests.support import ServerProcess

PLANTED = "sk-ant-api03-PLANTED-VAULT-VALUE-5e1d0c"


def aad(tenant: str, key: str = "anthropic", version: int = 1) -> bytes:
    return aad_for(purpose="secret", tenant=tenant, namespace="api-keys", key=key, version=version)


def settings(target: VaultTarget, **over: str) -> VaultSettings:
    base = VaultSettings(addr=target.addr, token=target.token, mount=target.mount, namespace=target.namespace)
    return replace(base, **over)


@pytest.fixture
async def provider(vault_target: VaultTarget) -> AsyncIterator[VaultKeyProvider]:
    async with VaultKeyProvider(settings(vault_target)) as keys:
        yield keys


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    """The store whose transactions wrap runs in (it counts encryptions per key version there)."""
    async with SQLiteStorage(tmp_path / "keys.db") as opened:
        yield opened


async def add_tenant(store: SQLiteStorage) -> str:
    tenant_id = uuid.uuid4().hex  # a fresh transit key per test, also on a real Vault
    async with store.write(tenant_id) as tx:
        await tx.insert_tenant(Tenant(tenant_id, f"t-{tenant_id[:6]}", "active", "2026-01-01T00:00:00Z"))
    return tenant_id


@pytest.fixture
async def tenant(store: SQLiteStorage) -> str:
    return await add_tenant(store)


async def wrap(
    keys: VaultKeyProvider, store: SQLiteStorage, tenant: str, dek: bytes, aad: bytes
) -> WrappedKey:
    async with store.write(tenant) as tx:
        return await keys.wrap(tx, tenant, dek, aad)


async def rewrap(
    keys: VaultKeyProvider, store: SQLiteStorage, tenant: str, wrapped: WrappedKey, aad: bytes
) -> WrappedKey:
    async with store.write(tenant) as tx:
        return await keys.rewrap(tx, tenant, wrapped, aad)


async def rotate(keys: VaultKeyProvider, store: SQLiteStorage, tenant: str) -> int:
    async with store.write(tenant) as tx:
        return await keys.rotate(tx, tenant)


async def counts(store: SQLiteStorage, tenant: str) -> dict[int, int]:
    """Encryptions made by each transit key version, as the store counted them."""
    return {k.version: k.encryptions for k in await store.keks(tenant)}


class TestWrapUnwrap:
    async def test_round_trip(self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str) -> None:
        """A wrapped DEK names the tenant's transit key and version 1, and unwraps to itself."""
        dek = new_key()
        wrapped = await wrap(provider, store, tenant, dek, aad(tenant))
        assert wrapped.kek_id == f"vault:{provider.settings.mount}/llmcm-{tenant}"
        assert wrapped.kek_version == 1
        assert wrapped.blob.startswith("vault:v1:")
        assert await provider.unwrap(tenant, wrapped, aad(tenant)) == dek

    async def test_wrong_aad_fails(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str
    ) -> None:
        """A wrapped DEK presented for another record (other AAD) does not open in Vault."""
        wrapped = await wrap(provider, store, tenant, new_key(), aad(tenant))
        with pytest.raises(DecryptionFailed, match="decrypt"):
            await provider.unwrap(tenant, wrapped, aad(tenant, key="openai"))

    @pytest.mark.parametrize("how", ["flip", "truncate", "version"])
    async def test_tampered_blob_fails(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str, how: str
    ) -> None:
        """A flipped byte, a truncated blob, or an edited version prefix fails to open."""
        wrapped = await wrap(provider, store, tenant, new_key(), aad(tenant))
        prefix, _, body = wrapped.blob.rpartition(":")
        raw = bytearray(base64.b64decode(body))
        if how == "flip":
            raw[20] ^= 0x01
            blob = f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"
        elif how == "truncate":
            blob = f"{prefix}:{base64.b64encode(bytes(raw[:-4])).decode()}"
        else:
            blob = wrapped.blob.replace("vault:v1:", "vault:v2:")
        with pytest.raises(DecryptionFailed):
            await provider.unwrap(tenant, replace(wrapped, blob=blob), aad(tenant))

    async def test_blob_from_another_tenant_fails(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str
    ) -> None:
        """Another tenant's wrapped DEK fails, whether its KEK id is left as is or forged."""
        other = await add_tenant(store)
        await wrap(provider, store, tenant, new_key(), aad(tenant))  # the tenant's own key exists
        theirs = await wrap(provider, store, other, new_key(), aad(tenant))
        with pytest.raises(DecryptionFailed, match="another tenant"):
            await provider.unwrap(tenant, theirs, aad(tenant))
        forged = replace(theirs, kek_id=provider.kek_id(tenant))
        with pytest.raises(DecryptionFailed, match="decrypt"):
            await provider.unwrap(tenant, forged, aad(tenant))

    async def test_not_a_vault_blob_fails(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str
    ) -> None:
        """A blob that is not vault:vN:… is refused before Vault is asked."""
        wrapped = WrappedKey(provider.kek_id(tenant), 1, base64.b64encode(new_key()).decode())
        with pytest.raises(DecryptionFailed, match="not a Vault ciphertext"):
            await provider.unwrap(tenant, wrapped, aad(tenant))


class TestRotation:
    async def test_current_version_before_and_after_first_wrap(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str
    ) -> None:
        """0 before the tenant's transit key exists, 1 after the first wrap creates it."""
        assert await provider.current_version(tenant) == 0
        await wrap(provider, store, tenant, new_key(), aad(tenant))
        assert await provider.current_version(tenant) == 1

    async def test_rotate_keeps_old_blobs_and_moves_new_wraps(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str
    ) -> None:
        """After rotate, a v1 blob still opens and new wraps use v2."""
        dek = new_key()
        old = await wrap(provider, store, tenant, dek, aad(tenant))
        assert await rotate(provider, store, tenant) == 2
        assert await provider.unwrap(tenant, old, aad(tenant)) == dek
        new = await wrap(provider, store, tenant, new_key(), aad(tenant))
        assert (new.kek_version, new.blob.startswith("vault:v2:")) == (2, True)

    async def test_rewrap_moves_a_blob_to_the_latest_version(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str
    ) -> None:
        """Rewrap returns a v2 blob of the same DEK; with another AAD it fails."""
        dek = new_key()
        old = await wrap(provider, store, tenant, dek, aad(tenant))
        await rotate(provider, store, tenant)
        moved = await rewrap(provider, store, tenant, old, aad(tenant))
        assert (moved.kek_id, moved.kek_version) == (old.kek_id, 2)
        assert moved.blob.startswith("vault:v2:")
        assert await provider.unwrap(tenant, moved, aad(tenant)) == dek
        with pytest.raises(DecryptionFailed, match="rewrap"):
            await rewrap(provider, store, tenant, old, aad(tenant, version=2))


class TestAutoRotation:
    async def test_key_version_moves_after_the_budget(
        self, vault_target: VaultTarget, store: SQLiteStorage, tenant: str
    ) -> None:
        """Budget 3: wraps 1-3 use v1, 4-6 v2, the 7th v3; the store counts 3, 3, 1; all still open."""
        async with VaultKeyProvider(settings(vault_target), max_encryptions=3) as keys:
            deks = [new_key() for _ in range(7)]
            wrapped = [
                await wrap(keys, store, tenant, dek, aad(tenant, key=f"k{i}")) for i, dek in enumerate(deks)
            ]
            assert [w.kek_version for w in wrapped] == [1, 1, 1, 2, 2, 2, 3]
            assert [w.blob.split(":")[1] for w in wrapped] == ["v1"] * 3 + ["v2"] * 3 + ["v3"]
            assert await keys.current_version(tenant) == 3
            assert await counts(store, tenant) == {1: 3, 2: 3, 3: 1}
            for i, (dek, w) in enumerate(zip(deks, wrapped, strict=True)):
                assert await keys.unwrap(tenant, w, aad(tenant, key=f"k{i}")) == dek

    async def test_rewraps_count_and_rotate_too(
        self, vault_target: VaultTarget, store: SQLiteStorage, tenant: str
    ) -> None:
        """A rewrap encrypts with the latest version: it is counted and can use up the budget."""
        async with VaultKeyProvider(settings(vault_target), max_encryptions=3) as keys:
            deks = [new_key() for _ in range(3)]
            old = [
                await wrap(keys, store, tenant, dek, aad(tenant, key=f"k{i}")) for i, dek in enumerate(deks)
            ]
            assert await counts(store, tenant) == {1: 3, 2: 0}  # v2 made as v1 hit its budget
            moved = [
                await rewrap(keys, store, tenant, w, aad(tenant, key=f"k{i}")) for i, w in enumerate(old)
            ]
            assert [w.kek_version for w in moved] == [2, 2, 2]
            assert await counts(store, tenant) == {1: 3, 2: 3, 3: 0}
            assert await keys.current_version(tenant) == 3
            for i, (dek, w) in enumerate(zip(deks, moved, strict=True)):
                assert await keys.unwrap(tenant, w, aad(tenant, key=f"k{i}")) == dek

    async def test_a_rolled_back_write_is_not_counted(
        self, vault_target: VaultTarget, store: SQLiteStorage, tenant: str
    ) -> None:
        """The count lives in the caller's transaction: a write that fails leaves it as it was."""
        async with VaultKeyProvider(settings(vault_target), max_encryptions=10) as keys:
            await wrap(keys, store, tenant, new_key(), aad(tenant))
            with pytest.raises(RuntimeError, match="later step"):
                async with store.write(tenant) as tx:
                    await keys.wrap(tx, tenant, new_key(), aad(tenant, key="other"))
                    raise RuntimeError("a later step of the write failed")
            assert await counts(store, tenant) == {1: 1}

    async def test_manual_rotate_starts_a_counter_at_zero(
        self, provider: VaultKeyProvider, store: SQLiteStorage, tenant: str
    ) -> None:
        """key rotate: the new version is listed with 0 encryptions before any wrap uses it."""
        await wrap(provider, store, tenant, new_key(), aad(tenant))
        assert await rotate(provider, store, tenant) == 2
        assert await counts(store, tenant) == {1: 1, 2: 0}

    def test_budget_must_be_positive(self, vault_target: VaultTarget) -> None:
        with pytest.raises(InvalidInput, match="max_encryptions"):
            VaultKeyProvider(settings(vault_target), max_encryptions=0)


class TestAuth:
    async def test_bad_token_is_a_clear_error(
        self, vault_target: VaultTarget, store: SQLiteStorage, tenant: str
    ) -> None:
        """A refused token: wrap and unwrap fail closed as unavailable, not tampering; no token shown."""
        bogus = "hvs.not-a-real-token-0123456789"
        async with VaultKeyProvider(settings(vault_target, token=bogus)) as keys:
            with pytest.raises(Unavailable, match="403 permission denied") as info:
                await wrap(keys, store, tenant, new_key(), aad(tenant))
            assert bogus not in str(info.value)
            wrapped = WrappedKey(keys.kek_id(tenant), 1, "vault:v1:" + "A" * 60)
            with pytest.raises(Unavailable, match="403") as info2:  # an outage, not tampering
                await keys.unwrap(tenant, wrapped, aad(tenant))
            assert bogus not in str(info2.value)

    async def test_approle_login(self, vault_target: VaultTarget, store: SQLiteStorage, tenant: str) -> None:
        """With role_id + secret_id the provider logs in and wraps and unwraps."""
        role_id, secret_id = vault_target.approle()
        approle = settings(vault_target, token="", role_id=role_id, secret_id=secret_id)
        async with VaultKeyProvider(approle) as keys:
            dek = new_key()
            wrapped = await wrap(keys, store, tenant, dek, aad(tenant))
            assert await keys.unwrap(tenant, wrapped, aad(tenant)) == dek

    async def test_approle_bad_secret_id(self, vault_target: VaultTarget) -> None:
        """A wrong secret_id fails at start-up with one line naming the login, not the secret."""
        role_id, _ = vault_target.approle()
        wrong = str(uuid.uuid4())
        approle = settings(vault_target, token="", role_id=role_id, secret_id=wrong)
        with pytest.raises(Unavailable, match="AppRole login failed") as info:
            async with VaultKeyProvider(approle):
                pass
        assert wrong not in str(info.value)


class TestStandinOnly:
    async def test_vault_sees_only_the_dek_and_a_hash_of_the_aad(
        self, standin: StandinVault, store: SQLiteStorage, tenant: str
    ) -> None:
        """Encrypt requests carry a 32-byte DEK and a 32-byte context; the AAD's names stay here."""
        async with VaultKeyProvider(VaultSettings(addr=standin.url, token=standin.root_token)) as keys:
            start = len(standin.requests)
            await wrap(keys, store, tenant, new_key(), aad(tenant, key="very-secret-key-name"))
        bodies = [
            json.loads(b) for m, p, b in standin.requests[start:] if p.endswith(f"encrypt/llmcm-{tenant}")
        ]
        assert len(bodies) == 1
        assert len(base64.b64decode(bodies[0]["plaintext"])) == 32
        assert len(base64.b64decode(bodies[0]["context"])) == 32
        assert all("very-secret-key-name" not in b for _, _, b in standin.requests[start:])

    async def test_approle_token_expiry_triggers_one_new_login(
        self, standin: StandinVault, store: SQLiteStorage, tenant: str
    ) -> None:
        """When Vault forgets the AppRole token, the provider logs in again and carries on."""
        role_id, secret_id = standin.add_approle()
        approle = VaultSettings(addr=standin.url, role_id=role_id, secret_id=secret_id)
        async with VaultKeyProvider(approle) as keys:
            dek = new_key()
            wrapped = await wrap(keys, store, tenant, dek, aad(tenant))
            standin.tokens = {standin.root_token}  # the AppRole token expired
            assert await keys.unwrap(tenant, wrapped, aad(tenant)) == dek

    async def test_read_and_rotate_answer_as_vault_documents(self, standin: StandinVault) -> None:
        """Read key: ``keys`` maps each version to its creation time; rotate adds one; an unknown key
        is 404 on read and 400 ``key not found`` on rotate (the shapes the provider relies on)."""
        import hvac  # type: ignore[import-untyped]
        import hvac.exceptions  # type: ignore[import-untyped]

        client = hvac.Client(url=standin.url, token=standin.root_token)
        name = f"llmcm-{uuid.uuid4().hex}"
        try:
            client.secrets.transit.create_key(name, key_type="aes256-gcm96", derived=True)
            first = client.secrets.transit.read_key(name)["data"]
            assert (first["type"], first["derived"], first["kdf"]) == ("aes256-gcm96", True, "hkdf_sha256")
            assert list(first["keys"]) == ["1"] and isinstance(first["keys"]["1"], int)
            assert latest_version(first) == 1
            client.secrets.transit.rotate_key(name)
            second = client.secrets.transit.read_key(name)["data"]
            assert sorted(second["keys"]) == ["1", "2"]
            assert latest_version(second) == 2
            assert latest_version({"keys": second["keys"]}) == 2  # without latest_version, as documented
            with pytest.raises(hvac.exceptions.InvalidPath):
                client.secrets.transit.read_key(f"{name}-missing")
            with pytest.raises(hvac.exceptions.InvalidRequest, match="key not found"):
                client.secrets.transit.rotate_key(f"{name}-missing")
        finally:
            client.adapter.close()

    async def test_unreachable_vault_is_unavailable(self, store: SQLiteStorage, tenant: str) -> None:
        """Nothing listening: wrap fails with a retriable 'cannot reach Vault'."""
        from tests.support import free_port

        dead = VaultSettings(addr=f"http://127.0.0.1:{free_port()}", token="t", timeout=2)
        async with VaultKeyProvider(dead) as keys:
            with pytest.raises(Unavailable, match="cannot reach Vault") as info:
                await wrap(keys, store, tenant, new_key(), b"aad")
        assert info.value.retriable


class TestConfig:
    def test_vault_needs_an_address_and_credentials(self) -> None:
        """key_provider vault without vault_addr, or without any credential, is one clear line."""
        with pytest.raises(InvalidInput, match="vault_addr"):
            ServerConfig.load(flags={"key_provider": "vault", "vault_token": "x"}, environ={})
        with pytest.raises(InvalidInput, match="vault_token"):
            ServerConfig.load(flags={"key_provider": "vault", "vault_addr": "http://127.0.0.1:1"}, environ={})
        with pytest.raises(InvalidInput, match="go together"):
            ServerConfig.load(flags={"vault_role_id": "r"}, environ={})
        with pytest.raises(InvalidInput, match="key_provider must be"):
            ServerConfig.load(flags={"key_provider": "kms"}, environ={})

    def test_env_and_vault_fallbacks(self) -> None:
        """LLMCM_VAULT_* are read; VAULT_ADDR/VAULT_TOKEN fill in; the token is not in repr."""
        config = ServerConfig.load(
            environ={
                "LLMCM_KEY_PROVIDER": "vault",
                "VAULT_ADDR": "http://127.0.0.1:8200",
                "VAULT_TOKEN": "s3",
            }
        )
        assert (config.key_provider, config.vault_addr, config.vault_token) == (
            "vault",
            "http://127.0.0.1:8200",
            "s3",
        )
        assert "s3" not in repr(config)
        approle = ServerConfig.load(
            environ={
                "LLMCM_KEY_PROVIDER": "vault",
                "LLMCM_VAULT_ADDR": "https://vault:8200",
                "LLMCM_VAULT_ROLE_ID": "r",
                "LLMCM_VAULT_SECRET_ID": "s",
                "VAULT_TOKEN": "ignored",
            }
        )
        assert (approle.vault_token, approle.vault_role_id, approle.vault_mount) == ("", "r", "transit")


class TestServeWithVault:
    def test_secret_round_trip_through_rest(self, tmp_path: Path, standin: StandinVault) -> None:
        """serve --key-provider vault stores and reads a secret; Vault never sees the value."""
        server = ServerProcess(
            tmp_path,
            env={"LLMCM_VAULT_ADDR": standin.url, "LLMCM_VAULT_TOKEN": standin.root_token},
        )
        server.init()
        start = len(standin.requests)
        server.start("--key-provider", "vault")
        try:
            created = server.admin.put("/v1/secrets/api-keys/anthropic", {"value": PLANTED})
            assert created.status == 201, created.body
            reply = server.admin.get("/v1/secrets/api-keys/anthropic")
            assert reply.status == 200, reply.body
            assert reply.json["value"] == PLANTED
        finally:
            server.stop()
        seen = standin.requests[start:]
        paths = {p for _, p, _ in seen}
        assert f"/v1/transit/encrypt/llmcm-{server.tenant_id}" in paths
        assert f"/v1/transit/decrypt/llmcm-{server.tenant_id}" in paths
        encoded = base64.b64encode(PLANTED.encode()).decode()
        for _, _, body in seen:
            assert PLANTED not in body and encoded[:24] not in body
        for _, path, body in seen:
            if "/encrypt/" in path:
                assert len(base64.b64decode(json.loads(body)["plaintext"])) == 32  # a DEK, nothing else
        assert PLANTED not in server.log_path.read_text()

    def test_auto_rotation_through_rest(self, tmp_path: Path, standin: StandinVault) -> None:
        """KEK budget 3: seven secrets move the tenant's transit key to v3; all read back; key
        status lists v1-v3 with their secret versions and encryption counts."""
        server = ServerProcess(
            tmp_path,
            env={
                "LLMCM_VAULT_ADDR": standin.url,
                "LLMCM_VAULT_TOKEN": standin.root_token,
                "LLMCM_KEK_MAX_ENCRYPTIONS": "3",
            },
        )
        with server.running("--key-provider", "vault"):
            for i in range(7):
                created = server.admin.put(f"/v1/secrets/auto/k{i}", {"value": f"{PLANTED}-{i}"})
                assert created.status == 201, created.body
                assert created.json["kek_version"] == 1 + i // 3
            for i in range(7):
                reply = server.admin.get(f"/v1/secrets/auto/k{i}")
                assert (reply.status, reply.json["value"]) == (200, f"{PLANTED}-{i}")
            status = server.admin.get("/v1/keys/status")
            assert status.status == 200, status.body
        assert (status.json["provider"], status.json["current_version"]) == ("vault", 3)
        listed = {v["version"]: (v["secret_versions"], v["encryptions"]) for v in status.json["versions"]}
        assert listed == {1: (3, 3), 2: (3, 3), 3: (1, 1)}
        assert status.json["rewrap_pending"] == 6
        assert standin.rotations.count(f"llmcm-{server.tenant_id}") == 2
        assert PLANTED not in server.log_path.read_text()
