"""A stand-in for the parts of HashiCorp Vault the ``vault`` key provider calls.

No Vault server can be installed on these machines, so the provider is tested
against this aiohttp app, which implements the Transit and AppRole endpoints
used, with the request and response shapes of the Vault HTTP API documentation:

- ``POST /v1/<mount>/keys/:name``           create (idempotent; ``type``, ``derived``)
- ``GET  /v1/<mount>/keys/:name``           read (``keys`` version → creation time, ``latest_version`` …);
                                            404 ``{"errors": []}`` for an unknown key
- ``POST /v1/<mount>/keys/:name/rotate``    add a version; answers the key as read does (as current
                                            Vault does; older ones answer 204, so the provider reads
                                            the key afterwards); 400 ``key not found``
- ``POST /v1/<mount>/encrypt/:name``        base64 ``plaintext`` (+ ``context``) → ``vault:vN:…``
- ``POST /v1/<mount>/decrypt/:name``        ``ciphertext`` (+ ``context``) → base64 ``plaintext``
- ``POST /v1/<mount>/rewrap/:name``         ``ciphertext`` (+ ``context``) → latest-version ciphertext
- ``POST /v1/auth/approle/login``           ``role_id`` + ``secret_id`` → ``auth.client_token``

Every other route needs an ``X-Vault-Token`` it issued: 403 ``permission denied``
otherwise. Bad input answers 400 with ``{"errors": [...]}``. Crypto is real:
AES-256-GCM per key version with a random 96-bit nonce, ciphertext
``vault:vN:base64(nonce || ciphertext+tag)``; for derived keys the per-request key
is HKDF-SHA256(version key, info=context), so a wrong context, a tampered blob or
another key's blob really fails. Every request body is logged (``requests``) so
tests can check what the provider sent.

Runs in its own thread with its own event loop (``StandinVault.start()``), so
tests that block on a server subprocess that calls it do not deadlock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class VaultProblem(Exception):
    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(errors)
        self.status = status
        self.errors = list(errors)


@dataclass
class TransitKey:
    derived: bool
    versions: dict[int, bytes] = field(default_factory=dict)
    created: dict[int, int] = field(default_factory=dict)
    min_decryption_version: int = 1

    def add_version(self) -> None:
        version = max(self.versions, default=0) + 1
        self.versions[version] = AESGCM.generate_key(bit_length=256)
        self.created[version] = int(time.time())

    @property
    def latest(self) -> int:
        return max(self.versions)

    def key_for(self, version: int, context: bytes | None) -> bytes:
        key = self.versions[version]
        if not self.derived:
            return key
        if not context:
            raise VaultProblem(
                400,
                "missing 'context' for key derivation; the key was created using a derived key, "
                "which means additional, per-request information must be included in order to "
                "perform operations with the key",
            )
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(key)

    def encrypt(self, plaintext: bytes, context: bytes | None, version: int = 0) -> str:
        version = version or self.latest
        if version not in self.versions:
            raise VaultProblem(400, "invalid key version")
        nonce = os.urandom(12)
        sealed = AESGCM(self.key_for(version, context)).encrypt(nonce, plaintext, None)
        return f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, ciphertext: str, context: bytes | None) -> bytes:
        if not ciphertext.startswith("vault:"):
            raise VaultProblem(400, "invalid ciphertext: no prefix")
        parts = ciphertext.split(":", 2)
        if len(parts) != 3 or not parts[1].startswith("v"):
            raise VaultProblem(400, "invalid ciphertext: wrong number of fields")
        try:
            version = int(parts[1][1:])
        except ValueError:
            raise VaultProblem(400, "invalid ciphertext: version number could not be decoded") from None
        if version < self.min_decryption_version:
            raise VaultProblem(400, "ciphertext or signature version is disallowed by policy (too old)")
        if version not in self.versions:
            raise VaultProblem(400, "invalid key version")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise VaultProblem(400, "invalid ciphertext: could not decode base64") from None
        if len(raw) < 12 + 16:
            raise VaultProblem(400, "invalid ciphertext: too short")
        try:
            return AESGCM(self.key_for(version, context)).decrypt(raw[:12], raw[12:], None)
        except InvalidTag:
            raise VaultProblem(400, "cipher: message authentication failed") from None

    def info(self, name: str) -> dict[str, Any]:
        """The ``data`` of read key (and of rotate) for an ``aes256-gcm96`` key, ``keys`` mapping each
        version to its creation time in Unix seconds: the fields of the API documentation's sample
        plus those Vault's transit backend adds (``latest_version``, ``min_available_version``,
        ``auto_rotate_period``; ``kdf`` for derived keys). The sample's ``imported`` is answered as
        ``imported_key``, as the backend does. The provider relies on ``keys`` (or ``latest_version``)."""
        data: dict[str, Any] = {
            "name": name,
            "type": "aes256-gcm96",
            "derived": self.derived,
            "deletion_allowed": False,
            "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": 0,
            "latest_version": self.latest,
            "exportable": False,
            "allow_plaintext_backup": False,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_signing": False,
            "supports_derivation": True,
            "auto_rotate_period": 0,
            "imported_key": False,
            "keys": {str(v): t for v, t in self.created.items()},
        }
        if self.derived:
            data["kdf"] = "hkdf_sha256"
            data["convergent_encryption"] = False
        return data


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    """Vault's Content-Type is exactly application/json (hvac reads "errors" only then)."""
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")


def _b64_field(body: dict[str, Any], name: str, what: str) -> bytes | None:
    value = body.get(name)
    if value in (None, ""):
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise VaultProblem(400, f"failed to base64-decode {what}") from None


class StandinVault:
    """The app plus its state; ``start()`` serves it on a free loopback port in a thread."""

    def __init__(self, *, mount: str = "transit") -> None:
        self.mount = mount
        self.root_token = "hvs." + secrets.token_urlsafe(18)
        self.tokens: set[str] = {self.root_token}
        self.approles: dict[str, str] = {}  # role_id -> secret_id
        self.keys: dict[str, TransitKey] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, body)
        self.rotations: list[str] = []  # names of keys rotated, in order
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- test helpers -----------------------------------------------------------

    def add_approle(self) -> tuple[str, str]:
        role_id, secret_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.approles[role_id] = secret_id
        return role_id, secret_id

    def revoke_all_tokens(self) -> None:
        self.tokens.clear()

    # -- the app ----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        m = "/v1/{mount}"
        app.router.add_post("/v1/auth/approle/login", self.login)
        app.router.add_post(m + "/keys/{name}", self.create_key)
        app.router.add_get(m + "/keys/{name}", self.read_key)
        app.router.add_post(m + "/keys/{name}/rotate", self.rotate_key)
        app.router.add_post(m + "/encrypt/{name}", self.encrypt)
        app.router.add_post(m + "/decrypt/{name}", self.decrypt)
        app.router.add_post(m + "/rewrap/{name}", self.rewrap)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        text = await request.text()
        self.requests.append((request.method, request.path, text))
        try:
            if request.path != "/v1/auth/approle/login":
                if request.headers.get("X-Vault-Token", "") not in self.tokens:
                    raise VaultProblem(403, "permission denied")
                if request.match_info.get("mount") != self.mount:
                    raise VaultProblem(404, f"no handler for route '{request.path[4:]}'")
            return await handler(request)  # type: ignore[no-any-return]
        except VaultProblem as exc:
            return _json({"errors": exc.errors}, exc.status)
        except web.HTTPNotFound:
            return _json({"errors": []}, 404)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        text = await request.text()
        if not text:
            return {}
        try:
            body = json.loads(text)
        except ValueError:
            raise VaultProblem(400, "failed to parse JSON input") from None
        if not isinstance(body, dict):
            raise VaultProblem(400, "failed to parse JSON input")
        return body

    @staticmethod
    def _reply(data: dict[str, Any] | None = None, *, auth: Any = None, warnings: Any = None) -> web.Response:
        return _json(
            {
                "request_id": str(uuid.uuid4()),
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": data,
                "wrap_info": None,
                "warnings": warnings,
                "auth": auth,
            }
        )

    def _key(self, request: web.Request) -> tuple[str, TransitKey]:
        name = request.match_info["name"]
        key = self.keys.get(name)
        if key is None:
            raise VaultProblem(400, "encryption key not found")
        return name, key

    async def login(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        role_id, secret_id = str(body.get("role_id", "")), str(body.get("secret_id", ""))
        if not role_id:
            raise VaultProblem(400, "missing role_id")
        if role_id not in self.approles:
            raise VaultProblem(400, "invalid role ID")
        if not secrets.compare_digest(self.approles[role_id], secret_id):
            raise VaultProblem(400, "invalid secret id")
        token = "hvs." + secrets.token_urlsafe(18)
        self.tokens.add(token)
        auth = {
            "client_token": token,
            "accessor": str(uuid.uuid4()),
            "policies": ["default", "llmcm"],
            "token_policies": ["default", "llmcm"],
            "metadata": {"role_name": "llmcm"},
            "lease_duration": 1200,
            "renewable": True,
        }
        return self._reply(None, auth=auth)

    async def create_key(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = request.match_info["name"]
        if body.get("type", "aes256-gcm96") != "aes256-gcm96":
            raise VaultProblem(400, f"unknown key type {body.get('type')}")
        if name in self.keys:
            return self._reply(self.keys[name].info(name), warnings=[f"key {name} already existed"])
        key = TransitKey(derived=bool(body.get("derived", False)))
        key.add_version()
        self.keys[name] = key
        return self._reply(key.info(name))

    async def read_key(self, request: web.Request) -> web.Response:
        """``GET keys/:name``; an unknown key is 404 with an empty ``errors`` list, as Vault answers."""
        name = request.match_info["name"]
        if name not in self.keys:
            raise VaultProblem(404)
        return self._reply(self.keys[name].info(name))

    async def rotate_key(self, request: web.Request) -> web.Response:
        """``POST keys/:name/rotate``: no body needed (``managed_key_name`` / ``managed_key_id``
        only matter for managed keys); an unknown key is 400 ``key not found``."""
        await self._body(request)
        name = request.match_info["name"]
        key = self.keys.get(name)
        if key is None:
            raise VaultProblem(400, "key not found")
        key.add_version()
        self.rotations.append(name)
        return self._reply(key.info(name))

    async def encrypt(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = request.match_info["name"]
        context = _b64_field(body, "context", "context")
        if "plaintext" not in body:
            raise VaultProblem(400, "missing plaintext to encrypt")
        plaintext = _b64_field(body, "plaintext", "plaintext") or b""
        key = self.keys.get(name)
        if key is None:  # Vault upserts on encrypt
            key = self.keys[name] = TransitKey(derived=context is not None)
            key.add_version()
        ciphertext = key.encrypt(plaintext, context, int(body.get("key_version") or 0))
        return self._reply({"ciphertext": ciphertext, "key_version": int(ciphertext.split(":")[1][1:])})

    async def decrypt(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        _, key = self._key(request)
        if not body.get("ciphertext"):
            raise VaultProblem(400, "missing ciphertext to decrypt")
        plaintext = key.decrypt(str(body["ciphertext"]), _b64_field(body, "context", "context"))
        return self._reply({"plaintext": base64.b64encode(plaintext).decode("ascii")})

    async def rewrap(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        _, key = self._key(request)
        if not body.get("ciphertext"):
            raise VaultProblem(400, "missing ciphertext to decrypt")
        context = _b64_field(body, "context", "context")
        plaintext = key.decrypt(str(body["ciphertext"]), context)
        ciphertext = key.encrypt(plaintext, context, int(body.get("key_version") or 0))
        return self._reply({"ciphertext": ciphertext, "key_version": int(ciphertext.split(":")[1][1:])})

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> StandinVault:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def serve() -> None:
            self._runner = web.AppRunner(self.app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="standin-vault", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(10)
