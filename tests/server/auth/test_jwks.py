"""JwtVerifier in-process: a JWKS URL on a loopback aiohttp server, caching, refresh on unknown kid."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.auth import JwtSettings, JwtVerifier, parse_jwks
from shared.errors import InvalidInput, Unauthenticated, Unavailable
from tests.server.auth.pki import AUDIENCE, ISSUER, JwtKeys
from tests.support import free_port


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Idp:
    """A loopback JWKS endpoint whose key set the test can change; counts fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.status = 200
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks"
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.Response(text=json.dumps(self.jwks), status=self.status, content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def idp(jwt_keys: JwtKeys) -> AsyncIterator[Idp]:
    server = Idp(jwt_keys.jwks())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def verifier(source: str, clock: Clock) -> JwtVerifier:
    return JwtVerifier(JwtSettings(jwks=source, issuer=ISSUER, audience=AUDIENCE), clock=clock)


def token(keys: JwtKeys, kid: str = "rsa-1", key: rsa.RSAPrivateKey | None = None) -> str:
    return jwt.encode(JwtKeys.claims("t1"), key or keys.rsa, algorithm="RS256", headers={"kid": kid})


class TestUrl:
    async def test_fetched_once_and_cached(self, idp: Idp, jwt_keys: JwtKeys) -> None:
        """The key set is fetched at start and reused for every token."""
        async with verifier(idp.url, Clock()) as v:
            await v.start()
            for _ in range(5):
                identity = await v.verify(token(jwt_keys))
                assert (identity.subject, identity.tenant, identity.roles) == (
                    "alice@example.org",
                    "t1",
                    ("developer",),
                )
        assert idp.fetches == 1

    async def test_unknown_kid_refetches_at_most_once_a_minute(self, idp: Idp, jwt_keys: JwtKeys) -> None:
        """An unknown kid refetches the set, but not again within 60 s; after that it may."""
        clock = Clock()
        async with verifier(idp.url, clock) as v:
            await v.start()
            clock.now += 61
            with pytest.raises(Unauthenticated, match="unknown kid"):
                await v.verify(token(jwt_keys, kid="new"))
            assert idp.fetches == 2
            for _ in range(3):
                with pytest.raises(Unauthenticated, match="unknown kid"):
                    await v.verify(token(jwt_keys, kid="new"))
            assert idp.fetches == 2
            clock.now += 61
            with pytest.raises(Unauthenticated, match="unknown kid"):
                await v.verify(token(jwt_keys, kid="newer"))
            assert idp.fetches == 3

    async def test_rotated_key_is_picked_up(self, idp: Idp, jwt_keys: JwtKeys) -> None:
        """After the provider adds a key, a token signed with it verifies once the set is refetched."""
        clock = Clock()
        rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        async with verifier(idp.url, clock) as v:
            await v.start()
            new_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rotated.public_key()))
            idp.jwks = {"keys": [*idp.jwks["keys"], {**new_jwk, "kid": "rsa-2"}]}
            clock.now += 61
            assert (await v.verify(token(jwt_keys, kid="rsa-2", key=rotated))).subject == "alice@example.org"

    async def test_unreachable_url_is_unavailable_then_recovers(self, jwt_keys: JwtKeys) -> None:
        """A provider down at start-up doesn't stop the server; tokens get 503 until it answers."""
        clock = Clock()
        idp = Idp(jwt_keys.jwks())
        async with verifier(idp.url, clock) as v:
            await v.start()  # logs, doesn't raise
            with pytest.raises(Unavailable, match="could not be loaded"):
                await v.verify(token(jwt_keys))
            await idp.start()
            try:
                clock.now += 6
                assert (await v.verify(token(jwt_keys))).tenant == "t1"
            finally:
                await idp.stop()

    async def test_failed_refresh_keeps_the_old_keys(self, idp: Idp, jwt_keys: JwtKeys) -> None:
        """If a refresh fails (HTTP 500), tokens signed with known keys keep verifying."""
        clock = Clock()
        async with verifier(idp.url, clock) as v:
            await v.start()
            idp.status = 500
            clock.now += 4000  # past max_age: a refresh is due
            assert (await v.verify(token(jwt_keys))).tenant == "t1"
            assert idp.fetches == 2

    async def test_close_is_safe_twice(self, idp: Idp) -> None:
        """aclose() may be called again after the context closed it."""
        v = verifier(idp.url, Clock())
        async with v:
            await v.start()
        await v.aclose()

    def test_plain_http_only_on_loopback(self) -> None:
        """http:// is accepted for 127.0.0.1 and localhost, refused for any other host."""
        verifier("http://127.0.0.1:1/jwks", Clock())
        verifier("http://localhost:1/jwks", Clock())
        verifier("https://idp.example/jwks", Clock())
        with pytest.raises(InvalidInput, match="must use https://"):
            verifier("http://idp.example/jwks", Clock())


class TestKeySet:
    def test_only_rsa_and_p256_keys_are_kept(self, jwt_keys: JwtKeys) -> None:
        """oct, OKP, P-384 keys and keys declared for other algorithms or uses are dropped."""
        p384 = json.loads(
            jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())
        )
        rsa_jwk = next(k for k in jwt_keys.jwks()["keys"] if k["kid"] == "rsa-1")
        doc = {
            "keys": [
                *jwt_keys.jwks()["keys"],
                {**p384, "kid": "p384"},
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                    "kid": "ed",
                },
                {**rsa_jwk, "kid": "rsa-as-hs", "alg": "HS256"},
                {**rsa_jwk, "kid": "rsa-enc", "use": "enc"},
            ]
        }
        keys = parse_jwks(json.dumps(doc).encode(), "test")
        assert sorted(k or "" for k in keys) == ["ec-1", "rsa-1"]
        assert [k.algorithm_name for k in keys["rsa-1"]] == ["RS256"]
        assert [k.algorithm_name for k in keys["ec-1"]] == ["ES256"]

    @pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"keys": {}}'])
    def test_malformed_sets_are_refused(self, raw: bytes) -> None:
        """A body that is not a JWK set is InvalidInput naming where it came from."""
        with pytest.raises(InvalidInput, match="JWKS at here"):
            parse_jwks(raw, "here")
