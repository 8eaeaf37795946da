"""JWT bearer tokens from an OIDC provider: RS256/ES256 against the JWKS file, claims to principals."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.server.api.helpers import cfg, ok, problem
from tests.server.auth.pki import JwtKeys, tamper
from tests.support import Http, ServerProcess

SUB = "alice@example.org"


@pytest.fixture(scope="module")
def seeded(secure_server: ServerProcess) -> dict[str, Any]:
    """Configs team/app and other/app in development and production; a tenant named 'globex'."""
    admin = secure_server.admin
    for namespace in ("team", "other"):
        for env in ("development", "production"):
            ok(admin.put(cfg(namespace, "app", env), {"value": {"ns": namespace, "env": env}}), 201)
    globex = ok(admin.post("/v1/tenants", {"name": "globex"}), 201)
    return {"globex_id": globex["tenant"]["id"]}


def bearer(server: ServerProcess, token: str) -> Http:
    return server.http(token)


class TestAccepted:
    def test_rs256(self, secure_server: ServerProcess, jwt_keys: JwtKeys) -> None:
        """A valid RS256 token authenticates as jwt:<sub> in its tenant with its roles."""
        token = jwt_keys.sign(jwt_keys.claims(secure_server.tenant_id, ["developer"]), "RS256")
        who = ok(bearer(secure_server, token).get("/v1/whoami"))
        assert who["tenant_id"] == secure_server.tenant_id
        assert who["roles"] == ["developer"]
        assert who["namespaces"] == []
        assert who["name"] == SUB
        assert who["token_id"].startswith(f"jwt:{SUB}#")

    def test_es256(self, secure_server: ServerProcess, jwt_keys: JwtKeys) -> None:
        """A valid ES256 token authenticates with the roles it carries."""
        token = jwt_keys.sign(jwt_keys.claims(secure_server.tenant_id, ["operator", "developer"]), "ES256")
        who = ok(bearer(secure_server, token).get("/v1/whoami"))
        assert who["tenant_id"] == secure_server.tenant_id
        assert who["roles"] == ["developer", "operator"]

    def test_tenant_by_name(
        self, secure_server: ServerProcess, jwt_keys: JwtKeys, seeded: dict[str, Any]
    ) -> None:
        """The tenant claim may name the tenant instead of giving its id."""
        token = jwt_keys.sign(jwt_keys.claims("globex", ["developer"]))
        assert ok(bearer(secure_server, token).get("/v1/whoami"))["tenant_id"] == seeded["globex_id"]

    def test_roles_decide_access(
        self, secure_server: ServerProcess, jwt_keys: JwtKeys, seeded: dict[str, Any]
    ) -> None:
        """A developer JWT reads development but not production; an operator JWT reads production."""
        developer = bearer(
            secure_server, jwt_keys.sign(jwt_keys.claims(secure_server.tenant_id, ["developer"]))
        )
        operator = bearer(
            secure_server, jwt_keys.sign(jwt_keys.claims(secure_server.tenant_id, ["operator"]))
        )
        ok(developer.get(cfg("team", "app", "development")))
        problem(developer.get(cfg("team", "app", "production")), 403)
        ok(operator.get(cfg("team", "app", "production")))

    def test_same_subject_with_fewer_roles_gets_less(
        self, secure_server: ServerProcess, jwt_keys: JwtKeys, seeded: dict[str, Any]
    ) -> None:
        """Roles come from each token: after an operator's reads, a developer token of that sub is denied."""
        tenant = secure_server.tenant_id
        operator = bearer(secure_server, jwt_keys.sign(jwt_keys.claims(tenant, ["operator"])))
        developer = bearer(secure_server, jwt_keys.sign(jwt_keys.claims(tenant, ["developer"])))
        path = cfg("other", "app", "production")
        ok(operator.get(path))
        ok(operator.get(path))  # now memoized for the operator
        problem(developer.get(path), 403)
        assert ok(operator.get("/v1/whoami"))["token_id"] != ok(developer.get("/v1/whoami"))["token_id"]

    def test_namespaces_claim_scopes_the_token(
        self, secure_server: ServerProcess, jwt_keys: JwtKeys, seeded: dict[str, Any]
    ) -> None:
        """A service-account JWT with namespaces [team] reads team/* only."""
        claims = jwt_keys.claims(secure_server.tenant_id, ["service-account"], namespaces=["team"])
        client = bearer(secure_server, jwt_keys.sign(claims, "ES256"))
        ok(client.get(cfg("team", "app", "production")))
        assert problem(client.get(cfg("other", "app", "production")), 403)["rule"] == "deny:namespace-scope"

    def test_small_clock_skew_is_tolerated(self, secure_server: ServerProcess, jwt_keys: JwtKeys) -> None:
        """A token that expired 10 s ago is still accepted (30 s leeway)."""
        now = int(time.time())
        claims = jwt_keys.claims(secure_server.tenant_id, exp=now - 10, iat=now - 100, nbf=now - 100)
        ok(bearer(secure_server, jwt_keys.sign(claims)).get("/v1/whoami"))

    def test_lcm_tokens_still_work(self, secure_server: ServerProcess) -> None:
        """With JWT configured, lcm_ tokens are still checked as this server's own tokens."""
        assert ok(secure_server.admin.get("/v1/whoami"))["roles"] == ["global-admin"]


def _now() -> int:
    return int(time.time())


def _refused_cases() -> list[tuple[str, Callable[[JwtKeys, str], str], str]]:
    # times are read when a case runs, not when the module is collected: a long run reaches
    # the last cases many minutes after collection
    c = JwtKeys.claims
    return [
        (
            "expired",
            lambda k, t: k.sign(c(t, exp=_now() - 120, iat=_now() - 600, nbf=_now() - 600)),
            "expired",
        ),
        ("not yet valid", lambda k, t: k.sign(c(t, nbf=_now() + 600, iat=_now())), "not valid yet"),
        ("wrong issuer", lambda k, t: k.sign(c(t, iss="https://evil.example")), "wrong issuer"),
        ("wrong audience", lambda k, t: k.sign(c(t, aud="someone-else")), "wrong audience"),
        ("tampered signature", lambda k, t: tamper(k.sign(c(t))), "bad signature"),
        ("tampered ES256", lambda k, t: tamper(k.sign(c(t), "ES256")), "bad signature"),
        ("signed by a stranger", lambda k, t: k.sign_with_stranger(c(t)), "bad signature"),
        ("alg none", lambda k, t: k.unsigned(c(t)), "'none' is refused"),
        ("HS256 with the public key", lambda k, t: k.hs256_with_public_key(c(t)), "'HS256' is refused"),
        ("unknown kid", lambda k, t: k.sign(c(t), kid="rotated-away"), "unknown kid"),
        ("kid of the ignored oct key", lambda k, t: k.sign(c(t), kid="hmac-1"), "unknown kid"),
        ("EC key named for RS256", lambda k, t: k.sign(c(t), kid="ec-1"), "is not an RS256 key"),
        ("no sub", lambda k, t: k.sign(c(t, sub=None)), "'sub'"),
        ("no exp", lambda k, t: k.sign(c(t, exp=None)), "'exp'"),
        ("no tenant", lambda k, t: k.sign(c("", roles=["developer"])), "tenant claim"),
        ("unknown tenant", lambda k, t: k.sign(c("no-such-tenant")), "unknown tenant"),
        ("unknown role", lambda k, t: k.sign(c(t, ["developer", "root"])), "'root' is not a role"),
        ("no roles", lambda k, t: k.sign(c(t, [])), "no roles"),
        ("global-admin", lambda k, t: k.sign(c(t, ["global-admin"])), "does not accept from JWTs"),
        ("unscoped service account", lambda k, t: k.sign(c(t, ["service-account"])), "must be scoped"),
        ("bad namespace scope", lambda k, t: k.sign(c(t, namespaces=["../x"])), "namespace scope"),
        ("not a JWT", lambda k, t: "definitely-not-a-jwt-" + "x" * 40, "well-formed JWT"),
    ]


REFUSED = _refused_cases()


class TestRefused:
    @pytest.mark.parametrize(("case", "make", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
    def test_refused_with_reason(
        self,
        secure_server: ServerProcess,
        jwt_keys: JwtKeys,
        case: str,
        make: Callable[[JwtKeys, str], str],
        reason: str,
    ) -> None:
        """Each bad token is 401 with a detail naming why, and the body never contains the token."""
        token = make(jwt_keys, secure_server.tenant_id)
        reply = bearer(secure_server, token).get("/v1/whoami")
        doc = problem(reply, 401)
        assert reason in doc["detail"], doc["detail"]
        assert token.encode() not in reply.body
        signature = token.rsplit(".", 1)[-1]
        assert not signature or signature.encode() not in reply.body

    def test_tokens_never_reach_the_log(self, secure_server: ServerProcess, jwt_keys: JwtKeys) -> None:
        """After good and bad JWTs, the server's DEBUG log holds none of them, nor their signatures."""
        tenant = secure_server.tenant_id
        tokens = [make(jwt_keys, tenant) for _, make, _ in REFUSED]
        tokens.append(jwt_keys.sign(jwt_keys.claims(tenant, ["developer"])))
        for token in tokens:
            bearer(secure_server, token).get("/v1/whoami")
        log = secure_server.log_path.read_text()
        assert "jwks_loaded" in log  # the log is the server's, at DEBUG
        for token in tokens:
            assert token not in log
            signature = token.split(".")[-1]
            assert not signature or signature not in log
