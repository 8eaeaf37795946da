"""Resolution along environment chains, provenance, tenant chains, aliases, and listing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.api.helpers import cfg, listed, ok, problem
from tests.support import Http

NS, KEY = "llm-gateway/routing", "primary-model"
LAYERS: dict[str, dict[str, Any]] = {
    "global": {"model": {"name": "g", "temperature": 0.1}, "fallbacks": ["g1", "g2"], "only_global": 1},
    "development": {"model": {"name": "d"}, "only_dev": 2},
    "staging": {"model": {"temperature": 0.5}, "fallbacks": ["s1"], "only_staging": 3},
    "production": {"model": {"max_tokens": 100}, "only_prod": 4},
    "edge": {"model": {"name": "e"}, "only_edge": 5},
}
RESOLVED: dict[str, dict[str, Any]] = {
    "global": LAYERS["global"],
    "development": {
        "model": {"name": "d", "temperature": 0.1},
        "fallbacks": ["g1", "g2"],
        "only_global": 1,
        "only_dev": 2,
    },
    "staging": {
        "model": {"name": "d", "temperature": 0.5},
        "fallbacks": ["s1"],
        "only_global": 1,
        "only_dev": 2,
        "only_staging": 3,
    },
    "production": {
        "model": {"name": "d", "temperature": 0.5, "max_tokens": 100},
        "fallbacks": ["s1"],
        "only_global": 1,
        "only_dev": 2,
        "only_staging": 3,
        "only_prod": 4,
    },
    "edge": {
        "model": {"name": "e", "temperature": 0.1},
        "fallbacks": ["g1", "g2"],
        "only_global": 1,
        "only_edge": 5,
    },
}
CHAINS = {
    "global": ["global"],
    "development": ["global", "development"],
    "staging": ["global", "development", "staging"],
    "production": ["global", "development", "staging", "production"],
    "edge": ["global", "edge"],
}


def resolve(http: Http, env: str, explain: bool = False, ns: str = NS, key: str = KEY) -> dict[str, Any]:
    query = "resolve=true" + ("&explain=true" if explain else "")
    return ok(http.get(cfg(ns, key, env, query)))


@pytest.fixture
def layered(tadmin: Http) -> Http:
    """The entry written in every environment with the values of LAYERS."""
    for env, value in LAYERS.items():
        ok(tadmin.put(cfg(NS, KEY, env), {"value": value}), 201)
    return tadmin


class TestDefaultChains:
    """Each environment resolves along its default chain, lowest priority first."""

    @pytest.mark.parametrize("env", list(CHAINS))
    def test_resolved_value(self, layered: Http, env: str) -> None:
        """resolve=true deep-merges the environment's default chain."""
        got = resolve(layered, env)
        assert got["value"] == RESOLVED[env]
        assert got["resolved"] is True

    @pytest.mark.parametrize("env", list(CHAINS))
    def test_layers_follow_chain(self, layered: Http, env: str) -> None:
        """The answer lists the layers used, in chain order."""
        assert [layer["environment"] for layer in resolve(layered, env)["layers"]] == CHAINS[env]

    def test_unresolved_get_is_raw(self, layered: Http) -> None:
        """Without resolve=true a GET returns only the environment's own value."""
        assert ok(layered.get(cfg(NS, KEY, "production")))["value"] == LAYERS["production"]

    def test_missing_layers_are_skipped(self, tadmin: Http) -> None:
        """With only global and production written, production resolves to their merge."""
        ok(tadmin.put(cfg(NS, KEY, "global"), {"value": {"a": 1, "b": {"c": 1}}}), 201)
        ok(tadmin.put(cfg(NS, KEY, "production"), {"value": {"b": {"d": 2}}}), 201)
        assert resolve(tadmin, "production")["value"] == {"a": 1, "b": {"c": 1, "d": 2}}

    def test_deleted_layer_is_skipped(self, layered: Http) -> None:
        """A deleted layer no longer contributes to the resolved value."""
        ok(layered.delete(cfg(NS, KEY, "staging")))
        value = resolve(layered, "production")["value"]
        assert "only_staging" not in value
        assert value["fallbacks"] == ["g1", "g2"]

    def test_no_layer_is_404(self, tadmin: Http) -> None:
        """Resolving an entry written only outside the chain is 404."""
        ok(tadmin.put(cfg(NS, KEY, "edge"), {"value": {"a": 1}}), 201)
        problem(tadmin.get(cfg(NS, KEY, "staging", "resolve=true")), 404)

    def test_resolved_after_write_is_fresh(self, layered: Http) -> None:
        """A write to a lower layer shows in the next resolved read."""
        resolve(layered, "production")
        ok(layered.put(cfg(NS, KEY, "global"), {"value": {"only_global": 99}}))
        assert resolve(layered, "production")["value"]["only_global"] == 99


class TestDeepMerge:
    """Objects merge key by key; lists and scalars replace."""

    def test_list_replaces(self, layered: Http) -> None:
        """A list in a higher layer replaces the lower list; it is not concatenated."""
        assert resolve(layered, "staging")["value"]["fallbacks"] == ["s1"]

    def test_scalar_replaces_object(self, tadmin: Http) -> None:
        """A scalar over an object replaces the whole object."""
        ok(tadmin.put(cfg(NS, KEY, "global"), {"value": {"model": {"name": "g"}}}), 201)
        ok(tadmin.put(cfg(NS, KEY, "development"), {"value": {"model": "flat"}}), 201)
        assert resolve(tadmin, "development")["value"] == {"model": "flat"}

    def test_object_replaces_scalar(self, tadmin: Http) -> None:
        """An object over a scalar replaces it."""
        ok(tadmin.put(cfg(NS, KEY, "global"), {"value": {"model": "flat"}}), 201)
        ok(tadmin.put(cfg(NS, KEY, "development"), {"value": {"model": {"name": "d"}}}), 201)
        assert resolve(tadmin, "development")["value"] == {"model": {"name": "d"}}

    def test_null_replaces(self, tadmin: Http) -> None:
        """A null in a higher layer replaces the lower value."""
        ok(tadmin.put(cfg(NS, KEY, "global"), {"value": {"a": {"b": 1}}}), 201)
        ok(tadmin.put(cfg(NS, KEY, "development"), {"value": {"a": None}}), 201)
        assert resolve(tadmin, "development")["value"] == {"a": None}


class TestProvenance:
    """resolve=true&explain=true names the environment of every leaf by JSON Pointer."""

    def test_provenance_per_leaf(self, layered: Http) -> None:
        """Every leaf of the resolved production value maps to the layer that supplied it."""
        assert resolve(layered, "production", explain=True)["provenance"] == {
            "/model/name": "development",
            "/model/temperature": "staging",
            "/model/max_tokens": "production",
            "/fallbacks": "staging",
            "/only_global": "global",
            "/only_dev": "development",
            "/only_staging": "staging",
            "/only_prod": "production",
        }

    def test_provenance_escapes_pointer_tokens(self, tadmin: Http) -> None:
        """Keys with '/' and '~' are escaped in the pointer as RFC 6901 says."""
        ok(tadmin.put(cfg(NS, KEY, "global"), {"value": {"a/b": {"c~d": 1}}}), 201)
        assert resolve(tadmin, "development", explain=True)["provenance"] == {"/a~1b/c~0d": "global"}

    def test_no_provenance_without_explain(self, layered: Http) -> None:
        """Provenance is only added when explain=true."""
        assert "provenance" not in resolve(layered, "production")


class TestTenantChains:
    """PUT /v1/settings {"chains": ...} changes how a tenant resolves."""

    def test_custom_chain_changes_resolution(self, layered: Http) -> None:
        """With production = global -> production, development and staging no longer contribute."""
        assert resolve(layered, "production", explain=True)["value"] == RESOLVED["production"]
        ok(layered.put("/v1/settings", {"chains": {"production": ["global", "production"]}}))
        got = resolve(layered, "production", explain=True)
        assert got["value"] == {
            "model": {"name": "g", "temperature": 0.1, "max_tokens": 100},
            "fallbacks": ["g1", "g2"],
            "only_global": 1,
            "only_prod": 4,
        }
        assert set(got["provenance"].values()) == {"global", "production"}

    def test_custom_chain_shown_in_settings(self, tadmin: Http) -> None:
        """GET /v1/settings returns the chain that was set, other chains keep their defaults."""
        ok(tadmin.put("/v1/settings", {"chains": {"edge": ["global", "production", "edge"]}}))
        chains = ok(tadmin.get("/v1/settings"))["chains"]
        assert chains["edge"] == ["global", "production", "edge"]
        assert chains["production"] == CHAINS["production"]

    def test_custom_chain_is_per_tenant(self, server: Any, admin: Http, layered: Http) -> None:
        """Another tenant's chain setting does not change this tenant's resolution."""
        other = ok(
            admin.post("/v1/tenants", {"name": f"chains-other-{server.port}", "admin_token": True}), 201
        )
        other_http = server.http(other["admin_token"]["token"])
        ok(other_http.put("/v1/settings", {"chains": {"production": ["production"]}}))
        assert resolve(layered, "production")["value"] == RESOLVED["production"]

    @pytest.mark.parametrize(
        "chains",
        [
            {"production": ["global", "staging"]},
            {"production": []},
            {"production": ["global", "global", "production"]},
            {"qa": ["global", "qa"]},
            {"production": "global"},
        ],
        ids=["wrong-end", "empty", "duplicate", "unknown-env", "not-a-list"],
    )
    def test_invalid_chain_is_400(self, tadmin: Http, chains: dict[str, Any]) -> None:
        """A chain that is not a list ending in its own environment is refused with 400."""
        problem(tadmin.put("/v1/settings", {"chains": chains}), 400)


class TestEnvironments:
    """Environment names: aliases dev and prod, anything unknown is 400."""

    @pytest.mark.parametrize(("alias", "env"), [("dev", "development"), ("prod", "production")])
    def test_alias_writes_the_environment(self, tadmin: Http, alias: str, env: str) -> None:
        """Writing with an alias stores in the full environment name."""
        out = ok(tadmin.put(cfg(NS, KEY, alias), {"value": {"a": 1}}), 201)
        assert out["environment"] == env
        assert ok(tadmin.get(cfg(NS, KEY, env)))["value"] == {"a": 1}

    @pytest.mark.parametrize(("alias", "env"), [("dev", "development"), ("prod", "production")])
    def test_alias_reads_the_environment(self, layered: Http, alias: str, env: str) -> None:
        """Reading and resolving with an alias is the same as the full name."""
        assert resolve(layered, alias)["value"] == RESOLVED[env]

    @pytest.mark.parametrize("env", ["qa", "prd", "../production", "production%00"])
    def test_unknown_env_is_400(self, tadmin: Http, env: str) -> None:
        """An unknown environment is a 400 that lists the valid ones, for reads, writes and lists."""
        for reply in (
            tadmin.get(cfg(NS, KEY, env)),
            tadmin.put(cfg(NS, KEY, env), {"value": {"a": 1}}),
            tadmin.get(f"/v1/configs?env={env}"),
        ):
            assert "production" in problem(reply, 400)["detail"]
        for real in CHAINS:
            assert listed(tadmin, real) == []

    def test_default_env_is_global(self, tadmin: Http) -> None:
        """Without env the entry lives in global."""
        ok(tadmin.put(f"/v1/configs/{NS}/{KEY}", {"value": {"a": 1}}), 201)
        assert ok(tadmin.get(cfg(NS, KEY, "global")))["environment"] == "global"


@pytest.fixture
def catalog(tadmin: Http) -> Http:
    """Entries in several namespaces and environments for the list tests."""
    entries = [
        ("llm-gateway/routing", "primary", "global", {"m": "g"}),
        ("llm-gateway/routing", "primary", "production", {"p": 1}),
        ("llm-gateway/limits", "rpm", "production", {"rpm": 10}),
        ("llm-gateway/limits", "tpm", "staging", {"tpm": 5}),
        ("llm-gateway", "root", "production", {"r": 1}),
        ("llm-gatewayx/other", "k", "production", {"x": 1}),
        ("prompts/support", "greeting", "production", {"t": "hi"}),
        ("llm-gateway/gone", "k", "production", {"gone": True}),
    ]
    for ns, key, env, value in entries:
        ok(tadmin.put(cfg(ns, key, env), {"value": value}), 201)
    ok(tadmin.delete(cfg("llm-gateway/gone", "k", "production")))
    return tadmin


def names(items: list[dict[str, Any]]) -> list[str]:
    return [f"{i['namespace']}/{i['key']}" for i in items]


class TestList:
    """GET /v1/configs lists current entries by prefix or glob, per environment."""

    def test_list_by_prefix(self, catalog: Http) -> None:
        """A prefix covers the namespace and its descendants, not siblings sharing the text."""
        assert names(listed(catalog, "production", "prefix=llm-gateway")) == [
            "llm-gateway/root",
            "llm-gateway/limits/rpm",
            "llm-gateway/routing/primary",
        ]

    def test_list_by_glob(self, catalog: Http) -> None:
        """'llm-gateway/*' matches the namespaces under llm-gateway."""
        got = names(listed(catalog, "production", "prefix=llm-gateway/*"))
        assert "llm-gateway/limits/rpm" in got and "llm-gateway/routing/primary" in got
        assert "llm-gatewayx/other/k" not in got and "prompts/support/greeting" not in got

    def test_list_is_per_environment(self, catalog: Http) -> None:
        """Only entries of the requested environment are listed, with their own values."""
        items = listed(catalog, "staging", "prefix=llm-gateway")
        assert names(items) == ["llm-gateway/limits/tpm"]
        assert items[0]["value"] == {"tpm": 5}
        assert {i["environment"] for i in listed(catalog, "production")} == {"production"}

    def test_list_hides_deleted(self, catalog: Http) -> None:
        """A deleted entry is not listed."""
        assert "llm-gateway/gone/k" not in names(listed(catalog, "production"))

    def test_list_resolved(self, catalog: Http) -> None:
        """resolve=true lists entries present anywhere in the chain, with merged values."""
        items = {
            f"{i['namespace']}/{i['key']}": i
            for i in listed(catalog, "production", "prefix=llm-gateway&resolve=true")
        }
        assert items["llm-gateway/routing/primary"]["value"] == {"m": "g", "p": 1}
        assert items["llm-gateway/limits/tpm"]["value"] == {"tpm": 5}
        assert all(i["resolved"] for i in items.values())

    def test_list_without_prefix_lists_all(self, catalog: Http) -> None:
        """No prefix lists every current entry of the environment."""
        assert len(listed(catalog, "production")) == 5

    @pytest.mark.parametrize("prefix", ["LLM", "a..b/%2e", "a%00b", "x\\y", "a;b"])
    def test_bad_prefix_is_400(self, catalog: Http, prefix: str) -> None:
        """A prefix with characters outside names and globs is 400."""
        problem(catalog.get(f"/v1/configs?env=production&prefix={prefix}"), 400)
