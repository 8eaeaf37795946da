"""Fixtures of the deployment tests: a throwaway CA, and a server started the way the
Kubernetes manifests start it (master key and TLS files from the environment)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest

from tests.server.auth.pki import CA, Leaf
from tests.support import ServerProcess


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(tmp_path_factory.mktemp("deploy-pki"), "cluster")


@pytest.fixture(scope="session")
def server_leaf(ca: CA) -> Leaf:
    return ca.server_leaf()


def manifest_server_env(leaf: Leaf) -> dict[str, str]:
    """What the server container of k8s/overlays/single gets: the master key from a Secret and
    LLMCM_TLS_CERT / LLMCM_TLS_KEY naming the mounted certificate (here, the test CA's)."""
    return {
        "LLMCM_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "LLMCM_TLS_CERT": str(leaf.cert),
        "LLMCM_TLS_KEY": str(leaf.key),
    }


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, ca: CA, server_leaf: Leaf
) -> Iterator[ServerProcess]:
    """``init`` and ``serve`` over HTTPS with the manifests' variables (init sees them too, as
    the wait-for-init container's does)."""
    data = tmp_path_factory.mktemp("tls-server")
    env = manifest_server_env(server_leaf)
    with ServerProcess(data, env=env, tls=ca.client_context()).running() as srv:
        yield srv
