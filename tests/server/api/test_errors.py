"""Error answers of the REST API: problem+json with a useful detail, and the right status for each case."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import ENVIRONMENTS, PROBLEM, cfg, listed, ok, problem
from tests.support import Http, ServerProcess

MIB = 1 << 20


class TestMalformedBody:
    """Bodies that are not a JSON object with a "value" are refused with 400."""

    @pytest.mark.parametrize(
        "raw",
        [b"{", b'{"value": {"a": 1},}', b"not json", b'{"value": NaN}', b"\xff\xfe{}", b""],
        ids=["unclosed", "trailing-comma", "text", "nan", "not-utf8", "empty"],
    )
    def test_malformed_json_is_400(self, tadmin: Http, raw: bytes) -> None:
        """A body that is not valid JSON is a 400 problem whose detail says what is wrong."""
        doc = problem(tadmin.put(cfg("errs", "k"), raw=raw), 400)
        assert any(word in doc["detail"] for word in ("JSON", "UTF-8", "empty")), doc["detail"]
        assert listed(tadmin, "global") == []

    @pytest.mark.parametrize("body", [[1, 2], "text", None, 42], ids=["array", "string", "null", "number"])
    def test_body_not_an_object_is_400(self, tadmin: Http, body: object) -> None:
        """A JSON body that is not an object is a 400 problem."""
        doc = problem(tadmin.put(cfg("errs", "k"), raw=json.dumps(body).encode()), 400)
        assert "object" in doc["detail"]

    @pytest.mark.parametrize(
        "value",
        [[1, 2], "text", None, 42, 1.5, True],
        ids=["array", "string", "null", "number", "float", "bool"],
    )
    def test_value_not_an_object_is_400(self, tadmin: Http, value: object) -> None:
        """A "value" that is not a JSON object is a 400 problem naming 'value', and nothing is stored."""
        doc = problem(tadmin.put(cfg("errs", "k"), {"value": value}), 400)
        assert "value" in doc["detail"] and "object" in doc["detail"]
        assert listed(tadmin, "global") == []

    def test_missing_value_is_400(self, tadmin: Http) -> None:
        """A body without "value" is a 400 problem that names the missing field."""
        doc = problem(tadmin.put(cfg("errs", "k"), {"message": "no value here"}), 400)
        assert '"value"' in doc["detail"] or "'value'" in doc["detail"]
        assert listed(tadmin, "global") == []


# Every one of these must be refused with 400 by every config route: this is the path-traversal guard.
BAD_PATHS = {
    "dotdot": "/v1/configs/a/../k",
    "dotdot-first": "/v1/configs/../k",
    "dotdot-escape-route": "/v1/configs/../../v1/tokens",
    "dotdot-key": "/v1/configs/a/..",
    "dot": "/v1/configs/a/./k",
    "pct-dotdot": "/v1/configs/a/%2e%2e/k",
    "pct-dotdot-upper": "/v1/configs/a/%2E%2E/k",
    "pct-slash": "/v1/configs/a%2fb/k",
    "double-encoded-slash": "/v1/configs/a%252fb/k",
    "dotdot-pct-slash": "/v1/configs/a/..%2fk",
    "half-encoded-dotdot": "/v1/configs/a/.%2e/k",
    "nul": "/v1/configs/a%00/k",
    "nul-in-key": "/v1/configs/a/k%00",
    "backslash": "/v1/configs/a\\b/k",
    "pct-backslash": "/v1/configs/a%5c..%5cb/k",
    "uppercase-namespace": "/v1/configs/Abc/k",
    "uppercase-key": "/v1/configs/abc/Key",
    "cyrillic-a": "/v1/configs/%D0%B0pi/k",
    "fullwidth-solidus": "/v1/configs/a%EF%BC%8Fb/k",
    "trailing-slash": "/v1/configs/a/k/",
    "empty-segment": "/v1/configs/a//b/k",
    "leading-slash": "/v1/configs//a/k",
    "underscore-in-namespace": "/v1/configs/a_b/k",
    "space": "/v1/configs/a%20b/k",
    "namespace-501": "/v1/configs/" + "a" * 501 + "/k",
    "namespace-501-segments": "/v1/configs/" + "/".join(["abcd"] * 100) + "ab/k",
    "key-256": "/v1/configs/a/" + "k" * 256,
    "no-key": "/v1/configs/onlyone",
}


class TestPathGuard:
    """Namespace and key must match their patterns; everything else is a 400 and stores nothing."""

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
    @pytest.mark.parametrize("path", BAD_PATHS.values(), ids=BAD_PATHS.keys())
    def test_bad_name_is_400_and_nothing_stored(self, tadmin: Http, path: str, method: str) -> None:
        """A malformed or traversing config path is a 400 problem (never 200/404/500) and writes nothing."""
        body = {"value": {"leak": 1}} if method == "PUT" else None
        doc = problem(tadmin.request(method, f"{path}?env=global", body), 400)
        assert any(w in doc["detail"] for w in ("namespace", "key", "config path")), doc["detail"]
        for env in ENVIRONMENTS:
            assert listed(tadmin, env) == [], env

    @pytest.mark.parametrize(
        ("method", "suffix"), [("GET", "history"), ("GET", "diff"), ("POST", "rollback")]
    )
    @pytest.mark.parametrize(
        "ns", ["a/%2e%2e", "a%2fb", "a%252f..", "..", "A", "a//b"], ids=lambda s: s.replace("%", "pct")
    )
    def test_bad_name_on_subresource_is_400(self, tadmin: Http, method: str, suffix: str, ns: str) -> None:
        """History, diff and rollback refuse a malformed namespace with 400 too."""
        body = {"version": 1} if method == "POST" else None
        problem(tadmin.request(method, f"/v1/configs/{ns}/k/{suffix}?env=global", body), 400)

    def test_longest_names_are_accepted(self, tadmin: Http) -> None:
        """A 500-character namespace and a 255-character key are within the limits."""
        ns = "/".join(["n" * 99] * 5)
        assert len(ns) == 499
        ns += "x"
        ok(tadmin.put(cfg(ns, "k" * 255), {"value": {"a": 1}}), 201)
        assert ok(tadmin.get(cfg(ns, "k" * 255)))["value"] == {"a": 1}


class TestBodyLimit:
    """Bodies over the configured limit (default 1 MiB) are refused with 413."""

    def test_body_over_limit_is_413(self, tadmin: Http) -> None:
        """A body one MiB plus a little is a 413 problem that states the limit, and nothing is stored."""
        raw = b'{"value": {"blob": "' + b"x" * MIB + b'"}}'
        doc = problem(tadmin.put(cfg("big", "k"), raw=raw), 413)
        assert str(MIB) in doc["detail"]
        assert listed(tadmin, "global") == []

    def test_body_under_limit_is_accepted(self, tadmin: Http) -> None:
        """A body just under one MiB is stored."""
        raw = b'{"value": {"blob": "' + b"x" * (MIB - 4096) + b'"}}'
        ok(tadmin.put(cfg("big", "k"), raw=raw), 201)


class TestSchemaViolation:
    """A value breaking a bound schema is a 422 listing every violation with its JSON Pointer."""

    BAD_ENDPOINT = {
        "provider": "not-a-provider",
        "model": "",
        "temperature": 5,
        "max_tokens": 0,
        "endpoint": "ftp://x",
        "rate_limit": {"requests_per_minute": 10, "bogus": 1},
        "fallback": [{"provider": "openai", "model": "gpt"}, {"provider": "anthropic"}],
    }
    EXPECTED_POINTERS = {
        "/provider",
        "/model",
        "/temperature",
        "/max_tokens",
        "/endpoint",
        "/rate_limit",
        "/fallback/1",
    }

    @pytest.fixture
    def bound(self, tadmin: Http) -> Http:
        """The tenant with the built-in model-endpoint schema bound to models/* keys."""
        ok(
            tadmin.post(
                "/v1/schema-bindings", {"schema": "model-endpoint", "namespace": "models", "key": "*"}
            ),
            201,
        )
        return tadmin

    def test_every_violation_listed_with_pointer(self, bound: Http) -> None:
        """All seven violations come back, each with its JSON Pointer, in one 422 problem."""
        doc = problem(bound.put(cfg("models", "primary"), {"value": self.BAD_ENDPOINT}), 422)
        pointers = {v["pointer"] for v in doc["violations"]}
        assert pointers == self.EXPECTED_POINTERS
        assert all(v["message"] and v["schema"] == "model-endpoint" for v in doc["violations"])
        assert "7" in doc["detail"]

    def test_violation_stores_nothing(self, bound: Http) -> None:
        """After a 422 the entry does not exist."""
        problem(bound.put(cfg("models", "primary"), {"value": self.BAD_ENDPOINT}), 422)
        problem(bound.get(cfg("models", "primary")), 404)

    def test_root_violation_pointer_is_empty_string(self, bound: Http) -> None:
        """A missing required property is reported at the document root, whose RFC 6901 pointer is ''."""
        doc = problem(bound.put(cfg("models", "primary"), {"value": {"provider": "openai"}}), 422)
        assert [v["pointer"] for v in doc["violations"]] == [""]
        assert "model" in doc["violations"][0]["message"]

    def test_valid_value_is_stored(self, bound: Http) -> None:
        """A value that satisfies the schema is stored."""
        ok(bound.put(cfg("models", "primary"), {"value": {"provider": "openai", "model": "gpt-4o"}}), 201)

    def test_unbound_namespace_not_validated(self, bound: Http) -> None:
        """The binding applies only to its namespace glob."""
        ok(bound.put(cfg("other", "primary"), {"value": self.BAD_ENDPOINT}), 201)


class TestVersionConflict:
    """Optimistic concurrency: a stale expected version is a 409 naming both versions."""

    def test_expected_version_mismatch_is_409(self, tadmin: Http) -> None:
        """expected_version 5 against current 2 is a 409 whose detail names both numbers."""
        ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 1}}), 201)
        ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 2}}))
        doc = problem(tadmin.put(cfg("cc", "k"), {"value": {"v": 3}, "expected_version": 5}), 409)
        assert "5" in doc["detail"] and "2" in doc["detail"]
        assert (doc["expected_version"], doc["current_version"]) == (5, 2)
        assert ok(tadmin.get(cfg("cc", "k")))["value"] == {"v": 2}

    def test_if_match_mismatch_is_409(self, tadmin: Http) -> None:
        """If-Match: "7" against current 1 is a 409 whose detail names both numbers."""
        ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 1}}), 201)
        doc = problem(tadmin.put(cfg("cc", "k"), {"value": {"v": 2}}, headers={"If-Match": '"7"'}), 409)
        assert "7" in doc["detail"] and "1" in doc["detail"]
        assert ok(tadmin.get(cfg("cc", "k")))["version"] == 1

    def test_matching_if_match_writes(self, tadmin: Http) -> None:
        """If-Match naming the current version lets the write through."""
        ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 1}}), 201)
        assert ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 2}}, headers={"If-Match": "1"}))["version"] == 2

    def test_expected_version_zero_on_existing_is_409(self, tadmin: Http) -> None:
        """expected_version 0 means 'must not exist yet'."""
        ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 1}}), 201)
        problem(tadmin.put(cfg("cc", "k"), {"value": {"v": 2}, "expected_version": 0}), 409)

    def test_if_match_and_expected_version_disagree_is_400(self, tadmin: Http) -> None:
        """Two different expected versions in one request are refused before anything is written."""
        ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 1}}), 201)
        reply = tadmin.put(
            cfg("cc", "k"), {"value": {"v": 2}, "expected_version": 1}, headers={"If-Match": "2"}
        )
        problem(reply, 400)
        assert ok(tadmin.get(cfg("cc", "k")))["version"] == 1

    def test_delete_with_stale_if_match_is_409(self, tadmin: Http) -> None:
        """A delete with a stale If-Match is refused and the entry stays."""
        ok(tadmin.put(cfg("cc", "k"), {"value": {"v": 1}}), 201)
        doc = problem(tadmin.delete(cfg("cc", "k"), headers={"If-Match": "3"}), 409)
        assert "3" in doc["detail"] and "1" in doc["detail"]
        ok(tadmin.get(cfg("cc", "k")))


class TestAuthentication:
    """Requests to /v1 without a valid token are 401 problems."""

    def test_no_token_is_401(self, server: ServerProcess) -> None:
        """No Authorization header: 401 with a WWW-Authenticate challenge."""
        reply = server.http().get("/v1/configs?env=global")
        problem(reply, 401)
        assert reply.headers["www-authenticate"].lower().startswith("bearer")

    @pytest.mark.parametrize(
        "header", ["Bearer lcm_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz", "lcm_x"]
    )
    def test_invalid_token_is_401(self, server: ServerProcess, header: str) -> None:
        """An unknown token or a non-bearer scheme is a 401."""
        problem(server.http().get("/v1/configs", headers={"Authorization": header}), 401)

    def test_expired_token_is_401(self, tadmin: Http, make_token: MakeToken) -> None:
        """A token created with expires_in=1 works at once and is refused 1.5 s later."""
        client, _ = make_token(["operator"], expires_in=1)
        ok(client.get("/v1/whoami"))
        time.sleep(1.5)
        doc = problem(client.get("/v1/whoami"), 401)
        assert "expired" in doc["detail"]

    def test_revoked_token_is_401(self, tadmin: Http, make_token: MakeToken) -> None:
        """A revoked token is refused at once, even though it was just used."""
        client, record = make_token(["operator"])
        ok(client.get("/v1/whoami"))
        ok(tadmin.delete(f"/v1/tokens/{record['id']}"))
        doc = problem(client.get("/v1/whoami"), 401)
        assert "revoked" in doc["detail"]

    def test_revoked_token_cannot_repeat_a_read(self, tadmin: Http, make_token: MakeToken) -> None:
        """A revoked token is refused even for the very read it made before (no cached answer)."""
        ok(tadmin.put(cfg("rv", "k"), {"value": {"a": 1}}), 201)
        client, record = make_token(["operator"])
        ok(client.get(cfg("rv", "k")))
        ok(tadmin.delete(f"/v1/tokens/{record['id']}"))
        problem(client.get(cfg("rv", "k")), 401)

    def test_public_routes_need_no_token(self, server: ServerProcess) -> None:
        """Health, metrics and the OpenAPI document answer without a token."""
        http = server.http()
        for path in ("/health/live", "/health/ready", "/metrics", "/v1/openapi.json"):
            assert http.get(path).status == 200, path


class TestDenied:
    """A policy denial is a 403 problem naming the rule."""

    def test_denied_is_403_with_rule(self, make_token: MakeToken) -> None:
        """A developer writing production gets 403 with rule deny:default."""
        dev, _ = make_token(["developer"])
        doc = problem(dev.put(cfg("den", "k", "production"), {"value": {"a": 1}}), 403)
        assert doc["rule"] == "deny:default"
        assert "production" in doc["detail"]


class TestRouting:
    """Unknown routes and methods are problem+json too."""

    def test_unknown_route_is_404_problem(self, tadmin: Http) -> None:
        """A path no route matches is a 404 problem."""
        problem(tadmin.get("/v1/no-such-thing"), 404)

    def test_wrong_method_is_405_problem(self, tadmin: Http) -> None:
        """A known path with a wrong method is a 405 problem with an Allow header."""
        reply = tadmin.request("PATCH", "/v1/settings", {"x": 1})
        problem(reply, 405)
        assert "PUT" in reply.headers["allow"]

    def test_request_id_echoed(self, tadmin: Http) -> None:
        """A problem carries the request id, also sent back in X-Request-Id."""
        reply = tadmin.get(cfg("nope", "k"), headers={"X-Request-Id": "req-abc-123"})
        assert problem(reply, 404)["request_id"] == "req-abc-123"
        assert reply.headers["x-request-id"] == "req-abc-123"
        assert reply.content_type == PROBLEM


def _concrete(path: str) -> str:
    """A documented path with every {param} filled with a harmless valid name."""
    return re.sub(r"\{[^}]+\}", "probe", path)


@pytest.fixture(scope="module")
def protected(server: ServerProcess) -> list[tuple[str, str]]:
    """Every (method, path) of /v1/openapi.json that needs a token, with its parameters filled."""
    doc = ok(server.http().get("/v1/openapi.json"))
    out = [
        (method.upper(), _concrete(path))
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in {"get", "put", "post", "delete", "patch"} and op.get("security") != []
    ]
    assert len(out) >= 20
    return out


class TestAuthEveryRoute:
    """Every protected route in /v1/openapi.json demands a token, however its path is spelled."""

    def test_no_token_is_401_everywhere(
        self, server: ServerProcess, protected: list[tuple[str, str]]
    ) -> None:
        """Each protected operation answers 401 problem+json without a token."""
        http = server.http()
        wrong = []
        for method, path in protected:
            reply = http.request(method, path + "?env=global", {"value": {}, "version": 1})
            if reply.status != 401 or reply.content_type != PROBLEM:
                wrong.append((method, path, reply.status))
        assert wrong == []

    @pytest.mark.parametrize("prefix", ["/%76%31/", "/v%31/", "/%761/", "/%76%31%2f"])
    def test_encoded_prefix_does_not_skip_auth(
        self, server: ServerProcess, protected: list[tuple[str, str]], prefix: str
    ) -> None:
        """/v1 spelled with percent-escapes still needs a token: never 2xx and never a 500."""
        http = server.http()
        wrong = []
        for method, path in protected:
            reply = http.request(method, prefix + path.removeprefix("/v1/"), {"value": {}, "version": 1})
            if reply.status not in (400, 401, 404) or reply.content_type != PROBLEM:
                wrong.append((method, path, reply.status))
        assert wrong == []
