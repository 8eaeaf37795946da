"""The ``vault`` key provider against the Transit stand-in (and a real Vault when given)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from server.config import ServerConfig
from server.keys.vault import VaultKeyProvider, VaultSettings
from server.storage import WriteTx
from shared.crypto import DecryptionFailed, WrappedKey, aad_for, new_key
from shared.errors import InvalidInput, Unavailable
from tests.server.keys.conftest import VaultTarget
from tests.server.keys.vault_standin import StandinVault
from tests.support import ServerProcess

NO_TX = cast(WriteTx, None)  # the vault provider keeps no state in the store
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
def tenant() -> str:
    return uuid.uuid4().hex


class TestWrapUnwrap:
    async def test_round_trip(self, provider: VaultKeyProvider, tenant: str) -> None:
        """A wrapped DEK names the tenant's transit key and version 1, and unwraps to itself."""
        dek = new_key()
        wrapped = await provider.wrap(NO_TX, tenant, dek, aad(tenant))
        assert wrapped.kek_id == f"vault:{provider.settings.mount}/llmcm-{tenant}"
        assert wrapped.kek_version == 1
        assert wrapped.blob.startswith("vault:v1:")
        assert await provider.unwrap(tenant, wrapped, aad(tenant)) == dek

    async def test_wrong_aad_fails(self, provider: VaultKeyProvider, tenant: str) -> None:
        """A wrapped DEK presented for another record (other AAD) does not open in Vault."""
        wrapped = await provider.wrap(NO_TX, tenant, new_key(), aad(tenant))
        with pytest.raises(DecryptionFailed, match="decrypt"):
            await provider.unwrap(tenant, wrapped, aad(tenant, key="openai"))

    @pytest.mark.parametrize("how", ["flip", "truncate", "version"])
    async def test_tampered_blob_fails(self, provider: VaultKeyProvider, tenant: str, how: str) -> None:
        """A flipped byte, a truncated blob, or an edited version prefix fails to open."""
        wrapped = await provider.wrap(NO_TX, tenant, new_key(), aad(tenant))
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

    async def test_blob_from_another_tenant_fails(self, provider: VaultKeyProvider, tenant: str) -> None:
        """Another tenant's wrapped DEK fails, whether its KEK id is left as is or forged."""
        other = uuid.uuid4().hex
        await provider.wrap(NO_TX, tenant, new_key(), aad(tenant))  # the tenant's own key exists
        theirs = await provider.wrap(NO_TX, other, new_key(), aad(tenant))
        with pytest.raises(DecryptionFailed, match="another tenant"):
            await provider.unwrap(tenant, theirs, aad(tenant))
        forged = replace(theirs, kek_id=provider.kek_id(tenant))
        with pytest.raises(DecryptionFailed, match="decrypt"):
            await provider.unwrap(tenant, forged, aad(tenant))

    async def test_not_a_vault_blob_fails(self, provider: VaultKeyProvider, tenant: str) -> None:
        """A blob that is not vault:vN:… is refused before Vault is asked."""
        wrapped = WrappedKey(provider.kek_id(tenant), 1, base64.b64encode(new_key()).decode())
        with pytest.raises(DecryptionFailed, match="not a Vault ciphertext"):
            await provider.unwrap(tenant, wrapped, aad(tenant))


class TestRotation:
    async def test_current_version_before_and_after_first_wrap(
        self, provider: VaultKeyProvider, tenant: str
    ) -> None:
        """0 before the tenant's transit key exists, 1 after the first wrap creates it."""
        assert await provider.current_version(tenant) == 0
        await provider.wrap(NO_TX, tenant, new_key(), aad(tenant))
        assert await provider.current_version(tenant) == 1

    async def test_rotate_keeps_old_blobs_and_moves_new_wraps(
        self, provider: VaultKeyProvider, tenant: str
    ) -> None:
        """After rotate, a v1 blob still opens and new wraps use v2."""
        dek = new_key()
        old = await provider.wrap(NO_TX, tenant, dek, aad(tenant))
        assert await provider.rotate(NO_TX, tenant) == 2
        assert await provider.unwrap(tenant, old, aad(tenant)) == dek
        new = await provider.wrap(NO_TX, tenant, new_key(), aad(tenant))
        assert (new.kek_version, new.blob.startswith("vault:v2:")) == (2, True)

    async def test_rewrap_moves_a_blob_to_the_latest_version(
        self, provider: VaultKeyProvider, tenant: str
    ) -> None:
        """Rewrap returns a v2 blob of the same DEK; with another AAD it fails."""
        dek = new_key()
        old = await provider.wrap(NO_TX, tenant, dek, aad(tenant))
        await provider.rotate(NO_TX, tenant)
        moved = await provider.rewrap(NO_TX, tenant, old, aad(tenant))
        assert (moved.kek_id, moved.kek_version) == (old.kek_id, 2)
        assert moved.blob.startswith("vault:v2:")
        assert await provider.unwrap(tenant, moved, aad(tenant)) == dek
        with pytest.raises(DecryptionFailed, match="rewrap"):
            await provider.rewrap(NO_TX, tenant, old, aad(tenant, version=2))


class TestAuth:
    async def test_bad_token_is_a_clear_error(self, vault_target: VaultTarget, tenant: str) -> None:
        """A refused token: wrap and unwrap fail closed as unavailable, not tampering; no token shown."""
        bogus = "hvs.not-a-real-token-0123456789"
        async with VaultKeyProvider(settings(vault_target, token=bogus)) as keys:
            with pytest.raises(Unavailable, match="403 permission denied") as info:
                await keys.wrap(NO_TX, tenant, new_key(), aad(tenant))
            assert bogus not in str(info.value)
            wrapped = WrappedKey(keys.kek_id(tenant), 1, "vault:v1:" + "A" * 60)
            with pytest.raises(Unavailable, match="403") as info2:  # an outage, not tampering
                await keys.unwrap(tenant, wrapped, aad(tenant))
            assert bogus not in str(info2.value)

    async def test_approle_login(self, vault_target: VaultTarget, tenant: str) -> None:
        """With role_id + secret_id the provider logs in and wraps and unwraps."""
        role_id, secret_id = vault_target.approle()
        approle = settings(vault_target, token="", role_id=role_id, secret_id=secret_id)
        async with VaultKeyProvider(approle) as keys:
            dek = new_key()
            wrapped = await keys.wrap(NO_TX, tenant, dek, aad(tenant))
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
    async def test_vault_sees_only_the_dek_and_a_hash_of_the_aad(self, standin: StandinVault) -> None:
        """Encrypt requests carry a 32-byte DEK and a 32-byte context; the AAD's names stay here."""
        tenant = uuid.uuid4().hex
        async with VaultKeyProvider(VaultSettings(addr=standin.url, token=standin.root_token)) as keys:
            start = len(standin.requests)
            await keys.wrap(NO_TX, tenant, new_key(), aad(tenant, key="very-secret-key-name"))
        bodies = [
            json.loads(b) for m, p, b in standin.requests[start:] if p.endswith(f"encrypt/llmcm-{tenant}")
        ]
        assert len(bodies) == 1
        assert len(base64.b64decode(bodies[0]["plaintext"])) == 32
        assert len(base64.b64decode(bodies[0]["context"])) == 32
        assert all("very-secret-key-name" not in b for _, _, b in standin.requests[start:])

    async def test_approle_token_expiry_triggers_one_new_login(self, standin: StandinVault) -> None:
        """When Vault forgets the AppRole token, the provider logs in again and carries on."""
        tenant = uuid.uuid4().hex
        role_id, secret_id = standin.add_approle()
        approle = VaultSettings(addr=standin.url, role_id=role_id, secret_id=secret_id)
        async with VaultKeyProvider(approle) as keys:
            dek = new_key()
            wrapped = await keys.wrap(NO_TX, tenant, dek, aad(tenant))
            standin.tokens = {standin.root_token}  # the AppRole token expired
            assert await keys.unwrap(tenant, wrapped, aad(tenant)) == dek

    async def test_unreachable_vault_is_unavailable(self) -> None:
        """Nothing listening: wrap fails with a retriable 'cannot reach Vault'."""
        from tests.support import free_port

        dead = VaultSettings(addr=f"http://127.0.0.1:{free_port()}", token="t", timeout=2)
        async with VaultKeyProvider(dead) as keys:
            with pytest.raises(Unavailable, match="cannot reach Vault") as info:
                await keys.wrap(NO_TX, "t1", new_key(), b"aad")
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
