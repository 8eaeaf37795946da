"""Where the ``vault`` provider tests run: the local stand-in, and a real Vault when one is given.

``vault_target`` is parametrized with ``standin`` always and ``vault`` only when
``VAULT_ADDR`` and ``VAULT_TOKEN`` are set (the token needs to mount a transit
engine and set up AppRole: a dev server's root token does).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.server.keys.vault_standin import StandinVault

REAL_VAULT = bool(os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN"))
TARGETS = ["standin", *(["vault"] if REAL_VAULT else [])]


@dataclass
class VaultTarget:
    addr: str
    token: str
    mount: str
    namespace: str = ""
    standin: StandinVault | None = None
    admin: Any = None  # hvac.Client with the real Vault's token

    def approle(self) -> tuple[str, str]:
        """A fresh AppRole (role_id, secret_id) allowed to use the transit mount."""
        if self.standin is not None:
            return self.standin.add_approle()
        name = f"llmcm-test-{uuid.uuid4().hex[:8]}"
        self.admin.auth.approle.create_or_update_approle(name, token_policies=["llmcm-test"])
        role_id = self.admin.auth.approle.read_role_id(name)["data"]["role_id"]
        secret_id = self.admin.auth.approle.generate_secret_id(name)["data"]["secret_id"]
        return str(role_id), str(secret_id)


@pytest.fixture(scope="session")
def standin() -> Iterator[StandinVault]:
    server = StandinVault().start()
    try:
        yield server
    finally:
        server.stop()


def _real_vault() -> VaultTarget:
    import hvac  # type: ignore[import-untyped]

    mount = "llmcm-test-transit"
    admin = hvac.Client(
        url=os.environ["VAULT_ADDR"],
        token=os.environ["VAULT_TOKEN"],
        namespace=os.environ.get("VAULT_NAMESPACE") or None,
    )
    if f"{mount}/" not in admin.sys.list_mounted_secrets_engines()["data"]:
        admin.sys.enable_secrets_engine("transit", path=mount)
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_policy(
        "llmcm-test", f'path "{mount}/*" {{ capabilities = ["create", "read", "update"] }}'
    )
    return VaultTarget(
        os.environ["VAULT_ADDR"],
        os.environ["VAULT_TOKEN"],
        mount,
        namespace=os.environ.get("VAULT_NAMESPACE", ""),
        admin=admin,
    )


@pytest.fixture(params=TARGETS)
def vault_target(request: pytest.FixtureRequest, standin: StandinVault) -> VaultTarget:
    if request.param == "standin":
        return VaultTarget(standin.url, standin.root_token, standin.mount, standin=standin)
    return _real_vault()
