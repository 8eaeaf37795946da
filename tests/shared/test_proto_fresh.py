"""The committed gRPC code is what scripts/gen-proto makes from config.proto today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

PROTO_DIR = Path("shared/proto/llmconfig/v1")
GENERATED = ("config_pb2.py", "config_pb2.pyi", "config_pb2_grpc.py")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/gen-proto run into a temporary directory with this interpreter."""
    out = tmp_path_factory.mktemp("proto")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gen-proto"), str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out / PROTO_DIR


class TestGeneratedCode:
    @pytest.mark.parametrize("name", GENERATED)
    def test_committed_file_is_fresh(self, regenerated: Path, name: str) -> None:
        """Each committed generated file is byte for byte what the generator makes now."""
        committed = REPO / PROTO_DIR / name
        assert committed.exists(), f"{committed} is missing: run scripts/gen-proto"
        fresh = (regenerated / name).read_bytes()
        assert committed.read_bytes() == fresh, f"{PROTO_DIR / name} is stale: run scripts/gen-proto"

    def test_nothing_else_generated(self, regenerated: Path) -> None:
        """The generator makes exactly the files that are committed (a new one would go unchecked)."""
        assert sorted(p.name for p in regenerated.iterdir()) == sorted(GENERATED)

    def test_package_imports(self) -> None:
        """The generated modules import as shared.proto.llmconfig.v1 and name the llmconfig.v1 service."""
        from shared.proto.llmconfig.v1 import config_pb2, config_pb2_grpc

        service = config_pb2.DESCRIPTOR.services_by_name["ConfigService"]
        assert service.full_name == "llmconfig.v1.ConfigService"
        assert {m.name for m in service.methods} == {
            "Get",
            "List",
            "Put",
            "Delete",
            "History",
            "Rollback",
            "Watch",
            "ReportStatus",
        }
        assert service.methods_by_name["Watch"].server_streaming
        assert hasattr(config_pb2_grpc, "ConfigServiceStub")

    def test_only_the_api_edges_import_generated_code(self) -> None:
        """Outside shared/proto, only server/api/grpc*.py and the client transport import it."""
        offenders = []
        for package in ("server", "shared", "agent"):
            for path in (REPO / package).rglob("*.py"):
                rel = path.relative_to(REPO)
                if rel.parts[:2] == ("shared", "proto"):
                    continue
                allowed = (rel.parts[:2] == ("server", "api") and rel.name.startswith("grpc")) or (
                    "transport" in rel.name or rel.name.startswith("grpc")
                )
                if "shared.proto" in path.read_text(encoding="utf-8") and not allowed:
                    offenders.append(str(rel))
        assert offenders == []
