"""``ConfigClient`` against a real server, over REST and over gRPC: reads, writes, cache, errors."""

from __future__ import annotations

import asyncio

import pytest

from shared.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Unauthenticated, Unavailable
from shared.sdk import Change, ConfigClient
from tests.shared.sdk.conftest import TRANSPORTS
from tests.support import Http, ServerProcess, free_port


class TestReads:
    async def test_get_resolves_the_chain(
        self, endpoint: str, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """get answers the merged value of the environment's chain, like GET ?resolve=true."""
        http = Http(server.port, tenant["token"])
        http.put("/v1/configs/sdk/read/model?env=global", {"value": {"model": "a", "temperature": 0}})
        http.put("/v1/configs/sdk/read/model?env=production", {"value": {"model": "b"}})
        async with ConfigClient(endpoint, tenant["id"], tenant["token"]) as client:
            assert await client.get("sdk/read", "model", "production") == {"model": "b", "temperature": 0}
            assert await client.get("sdk/read", "model", "dev") == {"model": "a", "temperature": 0}
            assert await client.get("sdk/read", "model") == {"model": "a", "temperature": 0}
            entry = await client.get_entry("sdk/read", "model", "production")
        assert [layer["environment"] for layer in entry["layers"]] == ["global", "production"]

    async def test_injected_secret_not_cached(
        self, endpoint: str, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """get injects a referenced secret, and such a value is never served from the cache."""
        http = Http(server.port, tenant["token"])
        assert http.put("/v1/secrets/sdk/keys/provider", {"value": "sk-first"}).status == 201
        ref = {"field_path": "$.api_key", "secret_ref": "sdk/keys/provider"}
        put = http.put("/v1/configs/sdk/sec/endpoint?env=global", {"value": {"url": "u", "secrets": [ref]}})
        assert put.status == 201, put.body
        async with ConfigClient(endpoint, tenant["id"], tenant["token"]) as client:
            assert (await client.get("sdk/sec", "endpoint"))["api_key"] == "sk-first"
            http.put("/v1/secrets/sdk/keys/provider", {"value": "sk-second"})
            assert (await client.get("sdk/sec", "endpoint"))["api_key"] == "sk-second"
            assert client.cache is not None and len(client.cache) == 0

    async def test_list_history_rollback_delete(self, endpoint: str, tenant: dict[str, str]) -> None:
        """The thin methods answer what the REST API answers."""
        async with ConfigClient(endpoint, tenant["id"], tenant["token"]) as client:
            first = await client.put("sdk/thin", "k", {"v": 1}, message="one")
            second = await client.put("sdk/thin", "k", {"v": 2}, expected_version=1)
            assert (first["version"], second["version"], second["changed"]) == (1, 2, True)
            assert second["revision"] > first["revision"]
            items = await client.list("sdk/thin")
            assert [(i["key"], i["value"]) for i in items] == [("k", {"v": 2})]
            versions = await client.history("sdk/thin", "k")
            assert [(v["version"], v["message"]) for v in versions] == [(2, ""), (1, "one")]
            rolled = await client.rollback("sdk/thin", "k", 1)
            assert (rolled["version"], await client.get("sdk/thin", "k")) == (3, {"v": 1})
            deleted = await client.delete("sdk/thin", "k")
            assert deleted["deleted"] is True
            with pytest.raises(NotFound):
                await client.get("sdk/thin", "k")


class TestSecrets:
    async def test_get_secret_over_rest(self, server: ServerProcess, tenant: dict[str, str]) -> None:
        """get_secret answers the plaintext of the secret's current version."""
        Http(server.port, tenant["token"]).put("/v1/secrets/sdk/keys/plain", {"value": "sk-plain"})
        async with ConfigClient(f"http://127.0.0.1:{server.port}", tenant["id"], tenant["token"]) as client:
            assert await client.get_secret("sdk/keys", "plain") == "sk-plain"
            assert await client.get_secret("sdk/keys", "plain", "global") == "sk-plain"

    async def test_get_secret_over_grpc_says_why_not(self, grpc_port: int, tenant: dict[str, str]) -> None:
        """The gRPC API has no secret reads: get_secret explains that instead of failing obscurely."""
        async with ConfigClient(f"grpc://127.0.0.1:{grpc_port}", tenant["id"], tenant["token"]) as client:
            with pytest.raises(InvalidInput, match="http"):
                await client.get_secret("sdk/keys", "plain")


class TestCache:
    async def test_cached_until_invalidated_by_own_write(
        self, endpoint: str, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """A cached value is served while someone else changes it; the client's own write drops it."""
        http = Http(server.port, tenant["token"])
        http.put("/v1/configs/sdk/cache/k?env=global", {"value": {"v": 1}})
        async with ConfigClient(endpoint, tenant["id"], tenant["token"], cache_ttl=300) as client:
            assert await client.get("sdk/cache", "k") == {"v": 1}
            http.put("/v1/configs/sdk/cache/k?env=global", {"value": {"v": 2}})
            assert await client.get("sdk/cache", "k") == {"v": 1}  # from the cache, as asked
            await client.put("sdk/cache", "k", {"v": 3}, "staging")
            assert await client.get("sdk/cache", "k") == {"v": 2}

    async def test_disabled(self, endpoint: str, server: ServerProcess, tenant: dict[str, str]) -> None:
        """With cache_enabled=False every get asks the server."""
        http = Http(server.port, tenant["token"])
        http.put("/v1/configs/sdk/nocache/k?env=global", {"value": {"v": 1}})
        async with ConfigClient(endpoint, None, tenant["token"], cache_enabled=False) as client:
            assert await client.get("sdk/nocache", "k") == {"v": 1}
            http.put("/v1/configs/sdk/nocache/k?env=global", {"value": {"v": 2}})
            assert await client.get("sdk/nocache", "k") == {"v": 2}

    async def test_watch_invalidates(
        self, endpoint: str, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """A watch on the client drops the cached entry when it sees the entry change."""
        http = Http(server.port, tenant["token"])
        http.put("/v1/configs/sdk/inval/k?env=global", {"value": {"v": 1}})
        async with ConfigClient(endpoint, tenant["id"], tenant["token"]) as client:
            assert await client.get("sdk/inval", "k", "production") == {"v": 1}
            changes = client.watch("sdk/inval", environment="production", progress=True)
            assert (await anext(changes)).type == "progress"  # connected
            http.put("/v1/configs/sdk/inval/k?env=global", {"value": {"v": 2}})
            async with asyncio.timeout(30):
                change = await anext(changes)
            assert isinstance(change, Change) and change.value == {"v": 2}
            assert await client.get("sdk/inval", "k", "production") == {"v": 2}
            await changes.aclose()


class TestErrors:
    async def test_server_errors_become_project_errors(self, endpoint: str, tenant: dict[str, str]) -> None:
        """Not found, a version conflict and a bad token raise NotFound, Conflict and Unauthenticated,
        carrying the server's detail and extra fields, whichever the transport."""
        async with ConfigClient(endpoint, tenant["id"], tenant["token"]) as client:
            with pytest.raises(NotFound, match="no value in any environment"):
                await client.get("sdk/err", "missing", "production")
            await client.put("sdk/err", "c", {"v": 1})
            with pytest.raises(Conflict) as caught:
                await client.put("sdk/err", "c", {"v": 2}, expected_version=7)
            assert caught.value.extra["current_version"] == 1
        async with ConfigClient(endpoint, None, "lcm_bogus") as client:
            with pytest.raises(Unauthenticated):
                await client.get("sdk/err", "c")

    async def test_wrong_tenant(self, server: ServerProcess, tenant: dict[str, str]) -> None:
        """A token of another tenant than tenant_id is refused before any config is read."""
        url = f"http://127.0.0.1:{server.port}"
        async with ConfigClient(url, "some-other-tenant", tenant["token"]) as client:
            with pytest.raises(PermissionDenied, match="some-other-tenant"):
                await client.get("sdk/err", "c")
        async with ConfigClient(url, tenant["name"], tenant["token"]) as client:
            await client.put("sdk/err", "by-name", {"v": 1})  # the tenant's name is accepted too

    async def test_checked_before_sending(self) -> None:
        """Bad endpoints, names and environments fail with InvalidInput without touching the network."""
        for bad in ("127.0.0.1:8080", "ftp://h", "http://u:p@h", "grpc://h:1/path"):
            with pytest.raises(InvalidInput):
                async with ConfigClient(bad, None, "t") as client:
                    await client.get("a", "b")
        with pytest.raises(InvalidInput, match="auth_token"):
            ConfigClient("http://127.0.0.1:1", None, " ")
        for scheme in TRANSPORTS:
            async with ConfigClient(f"{scheme}://127.0.0.1:{free_port()}", None, "t") as client:
                with pytest.raises(InvalidInput, match="invalid namespace"):
                    await client.get("a/../b", "k")
                with pytest.raises(InvalidInput, match="unknown environment"):
                    await client.get("a", "k", "prd")
                with pytest.raises(InvalidInput, match="namespace"):
                    client.watch("A B")

    @pytest.mark.parametrize("scheme", TRANSPORTS)
    async def test_unreachable_names_endpoint_not_token(self, scheme: str) -> None:
        """A refused connection is Unavailable naming the endpoint, never the token; close is safe twice."""
        closed = f"{scheme}://127.0.0.1:{free_port()}"
        client = ConfigClient(closed, None, "lcm_secret-token")
        with pytest.raises(Unavailable) as caught:
            await client.get("a", "k")
        await client.close()
        await client.close()
        assert closed in caught.value.detail and "lcm_secret" not in caught.value.detail
        with pytest.raises(InvalidInput, match="closed"):
            await client.get("a", "k")
