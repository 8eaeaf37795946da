"""The gRPC API against a real server process: every RPC, its status codes, auth, isolation, and
parity with REST (the same cases through both transports must end the same way)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from server.config import ServerConfig
from shared.errors import InvalidInput
from shared.proto.llmconfig.v1 import config_pb2 as pb
from shared.proto.llmconfig.v1 import config_pb2_grpc as pb_grpc
from tests.server.api.helpers import audit_records, cfg, ok, token
from tests.support import REPO, SERVER_CMD, Http, Reply, ServerProcess, free_port

Stub = pb_grpc.ConfigServiceStub
CALL_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's server, with its gRPC listener on a port of the test's choosing."""
    with ServerProcess(tmp_path_factory.mktemp("grpc")).running("--grpc-port", str(free_port())) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[Stub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield pb_grpc.ConfigServiceStub(channel)
    finally:
        channel.close()


def auth(token_value: str | None) -> list[tuple[str, str]]:
    return [] if token_value is None else [("authorization", f"Bearer {token_value}")]


@dataclass
class Failure:
    code: grpc.StatusCode
    details: str
    problem: dict[str, Any]


def fails(call: Callable[..., Any], request: Any, token_value: str | None) -> Failure:
    """Make a call that must fail; its status code, details and the problem document."""
    try:
        call(request, metadata=auth(token_value), timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        trailing = dict(exc.trailing_metadata() or ())
        problem = json.loads(trailing["llmcm-problem"]) if "llmcm-problem" in trailing else {}
        return Failure(exc.code(), exc.details() or "", problem)
    raise AssertionError(f"{request!r} succeeded")


def value_of(entry: Any) -> Any:
    return json.loads(entry.value_json) if entry.value_json else None


@pytest.fixture
def admin_token(tenant: dict[str, str]) -> str:
    """The tenant-admin token of a tenant of the test's own."""
    return tenant["token"]


class TestConfigRpcs:
    def test_put_then_get_keeps_json_numbers(self, stub: Stub, admin_token: str) -> None:
        """Put stores a value and Get returns it with integers and floats exactly as written."""
        written = stub.Put(
            pb.PutRequest(
                namespace="app/llm",
                key="model",
                environment="production",
                value_json='{"temperature":0.7,"max_tokens":4096,"ratio":1.0,"big":12345678901234567890}',
                message="first",
            ),
            metadata=auth(admin_token),
        )
        assert (written.version, written.revision, written.change_type, written.changed) == (
            1,
            1,
            "create",
            True,
        )
        got = stub.Get(
            pb.GetRequest(namespace="app/llm", key="model", environment="prod"), metadata=auth(admin_token)
        )
        assert (
            got.value_json == '{"temperature":0.7,"max_tokens":4096,"ratio":1.0,"big":12345678901234567890}'
        )
        assert (got.environment, got.version, got.message) == ("production", 1, "first")
        assert got.author.endswith("-admin")
        assert got.sha256 == written.sha256 and got.etag

    def test_unchanged_put_keeps_the_version(self, stub: Stub, admin_token: str) -> None:
        """Writing the stored value again answers changed=false with the same version."""
        request = pb.PutRequest(namespace="app", key="same", value_json='{"a":1}')
        assert stub.Put(request, metadata=auth(admin_token)).changed
        again = stub.Put(request, metadata=auth(admin_token))
        assert (again.changed, again.version) == (False, 1)

    def test_resolve_with_provenance(self, stub: Stub, admin_token: str) -> None:
        """Get with resolve merges the chain; explain names the environment of every leaf."""
        md = auth(admin_token)
        stub.Put(
            pb.PutRequest(namespace="app", key="r", environment="global", value_json='{"a":1,"b":2}'),
            metadata=md,
        )
        stub.Put(
            pb.PutRequest(namespace="app", key="r", environment="production", value_json='{"b":3}'),
            metadata=md,
        )
        got = stub.Get(
            pb.GetRequest(namespace="app", key="r", environment="production", resolve=True, explain=True),
            metadata=md,
        )
        assert got.resolved and value_of(got) == {"a": 1, "b": 3}
        assert [(layer.environment, layer.version) for layer in got.layers] == [
            ("global", 1),
            ("production", 1),
        ]
        assert dict(got.provenance) == {"/a": "global", "/b": "production"}

    def test_get_a_stored_version(self, stub: Stub, admin_token: str) -> None:
        """Get with version returns that version, not the latest."""
        md = auth(admin_token)
        for n in (1, 2):
            stub.Put(pb.PutRequest(namespace="app", key="v", value_json=json.dumps({"n": n})), metadata=md)
        got = stub.Get(pb.GetRequest(namespace="app", key="v", version=1), metadata=md)
        assert (got.version, value_of(got)) == (1, {"n": 1})

    def test_list_under_a_prefix(self, stub: Stub, admin_token: str) -> None:
        """List returns the latest entries of one environment under a namespace prefix."""
        md = auth(admin_token)
        for namespace in ("team/a", "team/b", "other"):
            stub.Put(
                pb.PutRequest(namespace=namespace, key="k", environment="staging", value_json="{}"),
                metadata=md,
            )
        listed = stub.List(pb.ListRequest(prefix="team", environment="staging"), metadata=md)
        assert listed.environment == "staging"
        assert [(item.namespace, item.key) for item in listed.items] == [("team/a", "k"), ("team/b", "k")]

    def test_history_rollback_delete(self, stub: Stub, admin_token: str) -> None:
        """History lists versions newest first with patches; Rollback restores a value; Delete removes it."""
        md = auth(admin_token)
        for n in (1, 2):
            stub.Put(pb.PutRequest(namespace="app", key="h", value_json=json.dumps({"n": n})), metadata=md)
        history = stub.History(pb.HistoryRequest(namespace="app", key="h"), metadata=md)
        assert [v.version for v in history.versions] == [2, 1]
        assert json.loads(history.versions[0].patch_json) == [{"op": "replace", "path": "/n", "value": 2}]
        rolled = stub.Rollback(pb.RollbackRequest(namespace="app", key="h", version=1), metadata=md)
        assert (rolled.version, rolled.change_type, value_of(rolled)) == (3, "rollback", {"n": 1})
        deleted = stub.Delete(pb.DeleteRequest(namespace="app", key="h", expected_version=3), metadata=md)
        assert (deleted.version, deleted.deleted, deleted.change_type) == (4, True, "delete")
        gone = fails(stub.Get, pb.GetRequest(namespace="app", key="h"), admin_token)
        assert gone.code is grpc.StatusCode.NOT_FOUND

    def test_history_limit_and_before(self, stub: Stub, admin_token: str) -> None:
        """History honours limit and before like the REST query parameters."""
        md = auth(admin_token)
        for n in range(4):
            stub.Put(pb.PutRequest(namespace="app", key="hl", value_json=json.dumps({"n": n})), metadata=md)
        page = stub.History(pb.HistoryRequest(namespace="app", key="hl", limit=2, before=4), metadata=md)
        assert [v.version for v in page.versions] == [3, 2]

    def test_writes_are_audited_like_rest(self, stub: Stub, admin_token: str, server: ServerProcess) -> None:
        """A write through gRPC leaves the same audit record a REST write does, with the request id."""
        md = [*auth(admin_token), ("x-request-id", "grpc-audit-probe-1")]
        stub.Put(pb.PutRequest(namespace="audited", key="k", value_json='{"x":1}'), metadata=md)
        records = [
            r for r in audit_records(server.http(admin_token)) if r["request_id"] == "grpc-audit-probe-1"
        ]
        assert [(r["action"], r["resource"], r["result"]) for r in records] == [
            ("config:put", "config/audited/k@global", "ok")
        ]


class TestStatusCodes:
    def test_invalid_argument(self, stub: Stub, admin_token: str) -> None:
        """Bad names, environments, JSON and values are INVALID_ARGUMENT with the REST message."""
        cases = [
            (stub.Get, pb.GetRequest(namespace="Bad Name", key="k"), "invalid namespace"),
            (stub.Get, pb.GetRequest(namespace="a", key="k", environment="moon"), "unknown environment"),
            (
                stub.Put,
                pb.PutRequest(namespace="a", key="k", value_json="{oops"),
                "value_json is not valid JSON",
            ),
            (
                stub.Put,
                pb.PutRequest(namespace="a", key="k", value_json="[1]"),
                "'value' must be a JSON object",
            ),
            (stub.Put, pb.PutRequest(namespace="a", key="k"), "'value_json' must carry the value"),
            (stub.Get, pb.GetRequest(namespace="a", key="k", version=1, resolve=True), "not both"),
            (stub.Rollback, pb.RollbackRequest(namespace="a", key="k"), "positive integer"),
            (stub.List, pb.ListRequest(prefix="A B"), "invalid prefix"),
        ]
        for call, request, fragment in cases:
            failure = fails(call, request, admin_token)
            assert failure.code is grpc.StatusCode.INVALID_ARGUMENT, (request, failure)
            assert fragment in failure.details, (fragment, failure.details)
            assert failure.problem["status"] in (400, 422) and failure.problem["detail"] == failure.details

    def test_schema_violation_carries_every_violation(
        self, stub: Stub, admin_token: str, server: ServerProcess
    ) -> None:
        """A value breaking a bound schema is INVALID_ARGUMENT; the problem lists the violations."""
        ok(
            server.http(admin_token).post(
                "/v1/schema-bindings", {"schema": "model-endpoint", "namespace": "m"}
            ),
            201,
        )
        failure = fails(
            stub.Put, pb.PutRequest(namespace="m", key="k", value_json='{"provider":7}'), admin_token
        )
        assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
        assert failure.problem["code"] == "schema_violation"
        assert failure.problem["violations"] and all("pointer" in v for v in failure.problem["violations"])

    def test_payload_too_large(self, stub: Stub, admin_token: str) -> None:
        """A request over the body limit is INVALID_ARGUMENT naming the limit (413 over REST)."""
        big = json.dumps({"blob": "x" * (1 << 20)})
        failure = fails(stub.Put, pb.PutRequest(namespace="a", key="k", value_json=big), admin_token)
        assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "larger than the limit of 1048576 bytes" in failure.details
        assert failure.problem["status"] == 413

    def test_not_found(self, stub: Stub, admin_token: str) -> None:
        """A missing entry, version or rollback target is NOT_FOUND."""
        stub.Put(pb.PutRequest(namespace="nf", key="k", value_json="{}"), metadata=auth(admin_token))
        for call, request in (
            (stub.Get, pb.GetRequest(namespace="nf", key="missing")),
            (stub.Get, pb.GetRequest(namespace="nf", key="k", version=9)),
            (stub.Rollback, pb.RollbackRequest(namespace="nf", key="k", version=9)),
            (stub.History, pb.HistoryRequest(namespace="nf", key="missing")),
            (stub.Delete, pb.DeleteRequest(namespace="nf", key="missing")),
        ):
            assert fails(call, request, admin_token).code is grpc.StatusCode.NOT_FOUND, request

    def test_version_conflict_is_aborted(self, stub: Stub, admin_token: str) -> None:
        """expected_version that is not the current one is ABORTED, saying both versions."""
        stub.Put(pb.PutRequest(namespace="c", key="k", value_json="{}"), metadata=auth(admin_token))
        failure = fails(
            stub.Put,
            pb.PutRequest(namespace="c", key="k", value_json='{"a":1}', expected_version=0),
            admin_token,
        )
        assert failure.code is grpc.StatusCode.ABORTED
        assert (failure.problem["expected_version"], failure.problem["current_version"]) == (0, 1)

    def test_permission_denied_names_the_rule(self, stub: Stub, make_token: Any) -> None:
        """A developer writing production is PERMISSION_DENIED; the problem names the rule."""
        _, developer = make_token(["developer"])
        failure = fails(
            stub.Put,
            pb.PutRequest(namespace="p", key="k", environment="production", value_json="{}"),
            developer["token"],
        )
        assert failure.code is grpc.StatusCode.PERMISSION_DENIED
        assert failure.problem["rule"] == "deny:default"

    @pytest.mark.parametrize("token_value", [None, "lcm_notarealtoken", "Basic abc", ""])
    def test_missing_or_bad_token_is_unauthenticated(self, stub: Stub, token_value: str | None) -> None:
        """No token, an unknown token or another scheme is UNAUTHENTICATED on every RPC."""
        metadata = [] if token_value is None else [("authorization", token_value)]
        for call, request in (
            (stub.Get, pb.GetRequest(namespace="a", key="k")),
            (stub.Put, pb.PutRequest(namespace="a", key="k", value_json="{}")),
            (stub.List, pb.ListRequest()),
            (stub.ReportStatus, pb.ReportStatusRequest(agent_id="x")),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call(request, metadata=metadata, timeout=CALL_TIMEOUT)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

    def test_revoked_token_is_unauthenticated(self, stub: Stub, make_token: Any, tadmin: Http) -> None:
        """A token revoked over REST no longer works over gRPC."""
        _, record = make_token(["operator"])
        stub.List(pb.ListRequest(), metadata=auth(record["token"]))
        ok(tadmin.delete(f"/v1/tokens/{record['id']}"))
        assert fails(stub.List, pb.ListRequest(), record["token"]).code is grpc.StatusCode.UNAUTHENTICATED

    def test_request_id_comes_back(self, stub: Stub, admin_token: str) -> None:
        """A well-formed x-request-id is used and returned; errors carry it in the problem."""
        md = [*auth(admin_token), ("x-request-id", "my-req-42")]
        _, call = stub.List.with_call(pb.ListRequest(), metadata=md)
        assert dict(call.trailing_metadata())["x-request-id"] == "my-req-42"
        with pytest.raises(grpc.RpcError) as caught:
            stub.Get(pb.GetRequest(namespace="a", key="missing"), metadata=md)
        assert (
            json.loads(dict(caught.value.trailing_metadata())["llmcm-problem"])["request_id"] == "my-req-42"
        )


class TestStatusMapping:
    """The mapping itself, for error classes no config RPC raises today."""

    def test_every_class_has_its_code(self) -> None:
        """Each class of the exception tree maps to the documented gRPC status code."""
        from server.api.grpc_service import status_code_for
        from shared import errors

        expected = {
            errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
            errors.PayloadTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
            errors.NotFound: grpc.StatusCode.NOT_FOUND,
            errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
            errors.Conflict: grpc.StatusCode.ABORTED,
            errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
            errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
            errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
            errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
            errors.StorageError: grpc.StatusCode.INTERNAL,
            errors.AuditWriteFailed: grpc.StatusCode.INTERNAL,
            errors.ProtocolError: grpc.StatusCode.INTERNAL,
            errors.LLMConfigError: grpc.StatusCode.INTERNAL,
        }
        for cls, code in expected.items():
            assert status_code_for(cls("x")) is code, cls
        assert status_code_for(errors.SchemaViolation("x", [])) is grpc.StatusCode.INVALID_ARGUMENT
        assert status_code_for(KeyError("secret-text")) is grpc.StatusCode.INTERNAL

    async def test_internal_errors_leak_no_detail(self) -> None:
        """An unexpected exception or a storage failure is INTERNAL with only the request id."""
        from server.api.grpc_service import ConfigServicer
        from shared.errors import StorageError

        class Aborted(Exception):
            pass

        class Context:
            def __init__(self) -> None:
                self.aborted: tuple[Any, ...] = ()

            async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
                self.aborted = (code, details, dict(trailing_metadata))
                raise Aborted

        servicer = ConfigServicer.__new__(ConfigServicer)
        for error in (RuntimeError("password=hunter2"), StorageError("SQLite failed: disk /var/secret")):
            context = Context()
            with pytest.raises(Aborted):
                await servicer._abort(context, "Get", "req-1", error)
            code, details, trailing = context.aborted
            assert code is grpc.StatusCode.INTERNAL
            assert details == "internal error; see server logs for request id req-1"
            assert (
                "hunter2" not in trailing["llmcm-problem"] and "/var/secret" not in trailing["llmcm-problem"]
            )


class TestIsolation:
    def test_other_tenants_entries_are_invisible(
        self, stub: Stub, server: ServerProcess, admin_token: str
    ) -> None:
        """Tenant B's token never reads, lists or changes tenant A's entries through gRPC."""
        created = ok(
            server.admin.post("/v1/tenants", {"name": f"grpc-b-{free_port()}", "admin_token": True}), 201
        )
        other = created["admin_token"]["token"]
        stub.Put(
            pb.PutRequest(namespace="iso", key="k", value_json='{"a":"A-ONLY"}'), metadata=auth(admin_token)
        )
        assert (
            fails(stub.Get, pb.GetRequest(namespace="iso", key="k"), other).code is grpc.StatusCode.NOT_FOUND
        )
        assert (
            fails(stub.History, pb.HistoryRequest(namespace="iso", key="k"), other).code
            is grpc.StatusCode.NOT_FOUND
        )
        assert list(stub.List(pb.ListRequest(prefix="iso"), metadata=auth(other)).items) == []
        mine = stub.Put(pb.PutRequest(namespace="iso", key="k", value_json='{"b":1}'), metadata=auth(other))
        assert (mine.version, mine.revision) == (1, 1)
        theirs = stub.Get(pb.GetRequest(namespace="iso", key="k"), metadata=auth(admin_token))
        assert value_of(theirs) == {"a": "A-ONLY"}


# -- parity --------------------------------------------------------------------------------------

REST_CLASS = {400: "invalid", 413: "invalid", 422: "invalid", 401: "unauthenticated", 403: "denied"}
REST_CLASS.update({404: "not_found", 409: "conflict"})
GRPC_CLASS = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "denied",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ABORTED: "conflict",
}

# (operation, token, arguments): run in order on a fresh tenant per transport
CASES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("put", "admin", {"ns": "app/x", "key": "k", "env": "global", "value": {"v": 1, "f": 1.5}}),
    ("put", "admin", {"ns": "app/x", "key": "k", "env": "production", "value": {"v": 2}}),
    ("get", "admin", {"ns": "app/x", "key": "k", "env": "production"}),
    ("get", "admin", {"ns": "app/x", "key": "k", "env": "production", "resolve": True}),
    ("get", "developer", {"ns": "app/x", "key": "k", "env": "production"}),
    ("put", "developer", {"ns": "app/x", "key": "k", "env": "production", "value": {"v": 3}}),
    ("put", "developer", {"ns": "app/x", "key": "k", "env": "development", "value": {"v": 4}}),
    ("get", "developer", {"ns": "app/x", "key": "k", "env": "development", "resolve": True}),
    ("get", "service", {"ns": "app/x", "key": "k", "env": "production", "resolve": True}),
    ("get", "service", {"ns": "other", "key": "k", "env": "global"}),
    ("put", "service", {"ns": "app/x", "key": "k", "env": "global", "value": {}}),
    ("put", "admin", {"ns": "app/x", "key": "k", "env": "global", "value": {"v": 1, "f": 1.5}}),
    ("put", "admin", {"ns": "app/x", "key": "k", "env": "global", "value": {"v": 5}, "expected_version": 7}),
    ("put", "admin", {"ns": "app/x", "key": "k", "env": "global", "value": {"v": 5}, "expected_version": 1}),
    ("put", "admin", {"ns": "app/x", "key": "new", "env": "global", "value": {}, "expected_version": 0}),
    ("put", "admin", {"ns": "Bad/NS", "key": "k", "env": "global", "value": {}}),
    ("put", "admin", {"ns": "app/x", "key": "k", "env": "moon", "value": {}}),
    ("get", "admin", {"ns": "app/x", "key": "missing", "env": "global"}),
    ("get", "admin", {"ns": "app/x", "key": "k", "env": "global", "version": 1}),
    ("get", "admin", {"ns": "app/x", "key": "k", "env": "global", "version": 1, "resolve": True}),
    ("get", None, {"ns": "app/x", "key": "k", "env": "global"}),
    ("get", "bogus", {"ns": "app/x", "key": "k", "env": "global"}),
    ("history", "admin", {"ns": "app/x", "key": "k", "env": "global"}),
    ("history", "developer", {"ns": "app/x", "key": "k", "env": "production"}),
    ("rollback", "admin", {"ns": "app/x", "key": "k", "env": "global", "version": 1}),
    ("rollback", "admin", {"ns": "app/x", "key": "k", "env": "global", "version": 99}),
    ("rollback", "developer", {"ns": "app/x", "key": "k", "env": "global", "version": 1}),
    ("delete", "developer", {"ns": "app/x", "key": "k", "env": "global"}),
    ("delete", "admin", {"ns": "app/x", "key": "k", "env": "development", "expected_version": 5}),
    ("delete", "admin", {"ns": "app/x", "key": "k", "env": "development"}),
    ("get", "admin", {"ns": "app/x", "key": "k", "env": "development"}),
    ("delete", "admin", {"ns": "app/x", "key": "k", "env": "development"}),
    ("list", "admin", {"prefix": "app", "env": "production"}),
    ("list", "admin", {"prefix": "app", "env": "production", "resolve": True}),
    ("list", "service", {"env": "global"}),
    ("list", "developer", {"env": "production"}),
    ("report", "service", {"agent_id": "pod-1", "namespaces": ["app"], "env": "production", "rev": 3}),
    ("report", "service", {"agent_id": "pod-2", "namespaces": ["other"], "env": "production", "rev": 3}),
    ("report", "developer", {"agent_id": "pod-3", "namespaces": ["app"], "env": "production", "rev": 3}),
    ("report", "service", {"agent_id": "pod 4", "namespaces": ["app"], "env": "production", "rev": 3}),
    ("report", "service", {"agent_id": "pod-5", "namespaces": ["app"], "env": "production", "rev": 9999}),
]


def _config_outcome(body: dict[str, Any]) -> dict[str, Any]:
    keep = ("namespace", "key", "environment", "version", "revision", "value", "change_type", "changed")
    out = {k: body.get(k) for k in keep}
    out["deleted"] = bool(body.get("deleted", False))
    out["resolved"] = bool(body.get("resolved", False))
    out["layers"] = [(x["environment"], x["version"], x["revision"]) for x in body.get("layers", [])]
    if out["version"] is None:
        out["version"] = 0  # a resolved answer has no version of its own
    for name in ("change_type", "changed"):
        if not out[name]:
            out[name] = None
    return out


def _entry_dict(entry: Any) -> dict[str, Any]:
    return {
        "namespace": entry.namespace,
        "key": entry.key,
        "environment": entry.environment,
        "version": entry.version,
        "revision": entry.revision,
        "value": value_of(entry),
        "change_type": entry.change_type,
        "changed": entry.changed,
        "deleted": entry.deleted,
        "resolved": entry.resolved,
        "layers": [
            {"environment": x.environment, "version": x.version, "revision": x.revision} for x in entry.layers
        ],
    }


def _outcome(operation: str, body: Any) -> Any:
    if operation == "history":
        return [(v["version"], v["revision"], v["value"], v["change_type"]) for v in body["versions"]]
    if operation == "list":
        return [_config_outcome(item) for item in body["items"]]
    if operation == "report":
        return (
            body["agent_id"],
            body["namespaces"],
            body["environment"],
            body["applied_revision"],
            body["state"],
        )
    return _config_outcome(body)


def run_rest(http: Http, operation: str, args: dict[str, Any]) -> tuple[str, Any]:
    path = cfg(args.get("ns", ""), args.get("key", ""), args.get("env", "global"))
    reply: Reply
    if operation == "put":
        body: dict[str, Any] = {"value": args["value"]}
        if "expected_version" in args:
            body["expected_version"] = args["expected_version"]
        reply = http.put(path, body)
    elif operation == "get":
        query = "".join(f"&{k}={str(args[k]).lower()}" for k in ("version", "resolve") if k in args)
        reply = http.get(path + query)
    elif operation == "delete":
        headers = {"If-Match": str(args["expected_version"])} if "expected_version" in args else None
        reply = http.delete(path, headers=headers)
    elif operation == "history":
        reply = http.get(f"/v1/configs/{args['ns']}/{args['key']}/history?env={args['env']}")
    elif operation == "rollback":
        reply = http.post(
            f"/v1/configs/{args['ns']}/{args['key']}/rollback?env={args['env']}", {"version": args["version"]}
        )
    elif operation == "list":
        query = f"env={args['env']}" + (f"&prefix={args['prefix']}" if "prefix" in args else "")
        reply = http.get(f"/v1/configs?{query}" + ("&resolve=true" if args.get("resolve") else ""))
    else:
        reply = http.post("/v1/agents/status", _report_body(args))
    if reply.status >= 300:
        return REST_CLASS[reply.status], None
    data = reply.json
    if operation == "list":
        data = {"items": data["items"]}
    return "ok", _outcome(operation, data)


def _report_body(args: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent_id": args["agent_id"],
        "namespaces": args["namespaces"],
        "environment": args["env"],
        "applied_revision": args["rev"],
        "state": "applied",
    }


def run_grpc(stub: Stub, token_value: str | None, operation: str, args: dict[str, Any]) -> tuple[str, Any]:
    names = {"namespace": args.get("ns", ""), "key": args.get("key", ""), "environment": args.get("env", "")}
    md = auth(token_value)
    try:
        if operation == "put":
            request = pb.PutRequest(**names, value_json=json.dumps(args["value"]))
            if "expected_version" in args:
                request.expected_version = args["expected_version"]
            return "ok", _outcome(operation, _entry_dict(stub.Put(request, metadata=md)))
        if operation == "get":
            got = stub.Get(
                pb.GetRequest(**names, version=args.get("version"), resolve=args.get("resolve", False)),
                metadata=md,
            )
            return "ok", _outcome(operation, _entry_dict(got))
        if operation == "delete":
            request = pb.DeleteRequest(**names)
            if "expected_version" in args:
                request.expected_version = args["expected_version"]
            return "ok", _outcome(operation, _entry_dict(stub.Delete(request, metadata=md)))
        if operation == "history":
            history = stub.History(pb.HistoryRequest(**names), metadata=md)
            return "ok", _outcome(operation, {"versions": [_entry_dict(v) for v in history.versions]})
        if operation == "rollback":
            rolled = stub.Rollback(pb.RollbackRequest(**names, version=args["version"]), metadata=md)
            return "ok", _outcome(operation, _entry_dict(rolled))
        if operation == "list":
            listed = stub.List(
                pb.ListRequest(
                    prefix=args.get("prefix", ""), environment=args["env"], resolve=args.get("resolve", False)
                ),
                metadata=md,
            )
            return "ok", _outcome(operation, {"items": [_entry_dict(i) for i in listed.items]})
        body = _report_body(args)
        reported = stub.ReportStatus(pb.ReportStatusRequest(**body), metadata=md)
        return "ok", _outcome(
            operation,
            {
                "agent_id": reported.agent_id,
                "namespaces": list(reported.namespaces),
                "environment": reported.environment,
                "applied_revision": reported.applied_revision,
                "state": reported.state,
            },
        )
    except grpc.RpcError as exc:
        return GRPC_CLASS.get(exc.code(), str(exc.code())), None


def _fresh_tenant(server: ServerProcess, label: str) -> dict[str, str | None]:
    created = ok(
        server.admin.post("/v1/tenants", {"name": f"parity-{label}-{free_port()}", "admin_token": True}), 201
    )
    admin = server.http(created["admin_token"]["token"])
    return {
        "admin": created["admin_token"]["token"],
        "developer": token(admin, "dev", ["developer"])["token"],
        "service": token(admin, "svc", ["service-account"], ["app"])["token"],
        "bogus": "lcm_" + "A" * 43,
    }


class TestParity:
    def test_same_cases_same_outcomes(self, stub: Stub, server: ServerProcess) -> None:
        """Each case through REST (tenant R) and gRPC (tenant G) ends in the same class and value."""
        rest_tokens, grpc_tokens = _fresh_tenant(server, "rest"), _fresh_tenant(server, "grpc")
        mismatches = []
        for operation, who, args in CASES:
            rest = run_rest(server.http(rest_tokens[who] if who else None), operation, args)
            over_grpc = run_grpc(stub, grpc_tokens[who] if who else None, operation, args)
            if rest != over_grpc:
                mismatches.append((operation, who, args, rest, over_grpc))
        assert mismatches == []

    def test_cases_cover_every_outcome(self, stub: Stub, server: ServerProcess) -> None:
        """The parity cases reach success and each error class, so the comparison means something."""
        tokens = _fresh_tenant(server, "cover")
        seen = {run_grpc(stub, tokens[who] if who else None, op, args)[0] for op, who, args in CASES}
        assert seen == {"ok", "invalid", "unauthenticated", "denied", "not_found", "conflict"}


# -- the listener --------------------------------------------------------------------------------


class TestListener:
    def test_busy_grpc_port_is_one_line(self, tmp_path: Path) -> None:
        """serve with a gRPC port another process holds exits 1 with one line naming it."""
        run = subprocess.run(
            [*SERVER_CMD, "init", "--data", str(tmp_path), "--json"],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert run.returncode == 0
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            out = subprocess.run(
                [
                    *SERVER_CMD,
                    "serve",
                    "--data",
                    str(tmp_path),
                    "--port",
                    str(free_port()),
                    "--grpc-port",
                    str(port),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert out.returncode == 1
        lines = [line for line in out.stderr.strip().splitlines() if not line.startswith("{")]
        assert lines == [f"Error: cannot listen on 127.0.0.1:{port} for gRPC: Address already in use"]

    def test_same_port_for_both_is_refused(self, tmp_path: Path) -> None:
        """--grpc-port equal to --port is refused before anything starts."""
        port = str(free_port())
        out = subprocess.run(
            [*SERVER_CMD, "serve", "--data", str(tmp_path), "--port", port, "--grpc-port", port],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1
        assert "the REST and gRPC listeners need two ports" in out.stderr

    def test_port_setting(self) -> None:
        """The gRPC port comes from LLMCM_GRPC_PORT or the flag; out-of-range values are refused."""
        assert ServerConfig.load(environ={}).grpc_port == 50051
        assert ServerConfig.load(environ={"LLMCM_GRPC_PORT": "6000"}).grpc_port == 6000
        assert ServerConfig.load(flags={"grpc_port": 0}, environ={"LLMCM_GRPC_PORT": "6000"}).grpc_port == 0
        with pytest.raises(InvalidInput, match="grpc_port"):
            ServerConfig.load(environ={"LLMCM_GRPC_PORT": "70000"})

    def test_many_calls_on_one_connection(self, stub: Stub, admin_token: str) -> None:
        """Concurrent calls multiplexed on one channel all succeed (no stream cap in the way)."""
        futures = [
            stub.List.future(
                pb.ListRequest(environment="global"), metadata=auth(admin_token), timeout=CALL_TIMEOUT
            )
            for _ in range(200)
        ]
        assert all(f.result().environment == "global" for f in futures)
