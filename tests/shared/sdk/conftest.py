"""SDK tests run every case over both transports: one server per module serving REST and gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, free_port

TRANSPORTS = ("http", "grpc")


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, grpc_port: int) -> Iterator[ServerProcess]:
    """The shared module server, with its gRPC port open too."""
    with ServerProcess(tmp_path_factory.mktemp("server")).running("--grpc-port", str(grpc_port)) as srv:
        yield srv


@pytest.fixture(params=TRANSPORTS)
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def endpoint_of(scheme: str, server: ServerProcess, grpc_port: int) -> str:
    port = grpc_port if scheme == "grpc" else server.port
    return f"{scheme}://127.0.0.1:{port}"


@pytest.fixture
def endpoint(scheme: str, server: ServerProcess, grpc_port: int) -> str:
    """The module server's endpoint for the transport under test."""
    return endpoint_of(scheme, server, grpc_port)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    """A server of the test's own (with gRPC), for tests that kill and restart it."""
    port = free_port()
    with ServerProcess(tmp_path / "data").running("--grpc-port", str(port)) as srv:
        yield srv, port
