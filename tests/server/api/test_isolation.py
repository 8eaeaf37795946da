"""Tenant isolation on every route: tenant A's admin must never read, list, infer or change tenant B's data.

The routes are taken from /v1/openapi.json, so a route added to the document is
probed without touching this file (a new path parameter makes the probe fail
until a substitution for it is added below). Every probe is sent twice: once
naming B's real resources and once naming resources that exist nowhere; the two
answers must be indistinguishable, and no answer may contain B's data.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.server.api.helpers import audit_records, cfg, ok, problem, token
from tests.support import Http, Reply, ServerProcess

METHOD_ORDER = ("get", "post", "delete", "put", "patch")  # reads first; A's own writes last
PARAM_RE = re.compile(r"\{([^}]+)\}")


@dataclass
class Names:
    """The identifiers one side of a probe puts into paths, queries and bodies."""

    namespace: str
    key: str
    tenant_id: str
    token_id: str
    schema: str
    binding_id: str

    def path_value(self, param: str) -> str:
        mapping = {
            "namespace": self.namespace,
            "key": self.key,
            "tenant_id": self.tenant_id,
            "token_id": self.token_id,
            "name": self.schema,
            "binding_id": self.binding_id,
        }
        if param not in mapping:
            raise AssertionError(f"no isolation substitution for path parameter {{{param}}}; add one")
        return mapping[param]

    def texts(self) -> list[str]:
        return [self.namespace, self.key, self.tenant_id, self.token_id, self.schema, self.binding_id]


@dataclass
class TenantB:
    """Tenant B's data, with what A may legitimately mention and what must never reach A."""

    names: Names
    token: str
    values: dict[tuple[str, str], dict[str, Any]]
    secret_texts: list[str]  # never in any answer to A: values, tenant name, ids A never sends, secrets
    snapshot: dict[str, Any] = field(default_factory=dict)


def _snapshot(b: Http, names: Names) -> dict[str, Any]:
    """What B sees of its own tenant; compared before and after A's probes."""
    shot: dict[str, Any] = {}
    for env in ("global", "production"):
        got = ok(b.get(cfg(names.namespace, names.key, env)))
        shot[f"config-{env}"] = (got["version"], got["revision"], got["value"])
        shot[f"history-{env}"] = len(
            ok(b.get(f"/v1/configs/{names.namespace}/{names.key}/history?env={env}"))["versions"]
        )
    shot["list"] = ok(b.get("/v1/configs?env=production"))["items"]
    shot["schemas"] = ok(b.get("/v1/schemas"))["schemas"]
    shot["bindings"] = ok(b.get("/v1/schema-bindings"))["bindings"]
    shot["tokens"] = ok(b.get("/v1/tokens"))["tokens"]
    shot["settings"] = ok(b.get("/v1/settings"))
    shot["secret"] = ok(b.get(f"/v1/secrets/{names.namespace}/{names.key}/versions"))["versions"]
    return shot


@pytest.fixture(scope="module")
def tenant_b(server: ServerProcess) -> TenantB:
    """Tenant B with configs, a schema and binding, extra tokens and custom settings."""
    admin = server.admin
    tag = uuid.uuid4().hex[:10]
    created = ok(admin.post("/v1/tenants", {"name": f"iso-b-{tag}", "admin_token": True}), 201)
    b = server.http(created["admin_token"]["token"])
    namespace, key = f"iso-b-{tag}/private", f"secret-key-{tag}"
    values = {
        ("global", key): {"marker": f"B-GLOBAL-VALUE-{tag}", "shared": {"x": 1}},
        ("production", key): {"marker": f"B-PROD-VALUE-{tag}", "api_base": f"https://b-{tag}.example"},
    }
    for (env, k), value in values.items():
        ok(b.put(cfg(namespace, k, env), {"value": value, "message": f"B-MESSAGE-{tag}"}), 201)
    ok(b.put(cfg(namespace, key, "production"), {"value": {**values[("production", key)], "v": 2}}))
    values[("production", key)] = {**values[("production", key)], "v": 2}
    schema, hidden_schema = f"b-schema-{tag}", f"b-hidden-schema-{tag}"
    for name in (schema, hidden_schema):
        ok(b.put(f"/v1/schemas/{name}", {"schema": {"type": "object", "title": f"B-SCHEMA-TITLE-{tag}"}}))
    binding = ok(b.post("/v1/schema-bindings", {"schema": schema, "namespace": f"iso-b-{tag}/*"}), 201)
    hidden_binding = ok(b.post("/v1/schema-bindings", {"schema": hidden_schema, "namespace": "z"}), 201)
    extra = token(b, f"b-extra-{tag}", ["operator"])
    hidden = token(b, f"b-hidden-{tag}", ["service-account"], [f"iso-b-{tag}"])
    ok(b.put("/v1/settings", {"chains": {"edge": ["global", "production", "edge"]}, "audit_reads": False}))
    secret_value = f"B-SECRET-VALUE-{tag}"
    ok(b.put(f"/v1/secrets/{namespace}/{key}", {"value": secret_value}), 201)
    names = Names(namespace, key, created["tenant"]["id"], extra["id"], schema, binding["id"])
    secrets = [
        *(v["marker"] for v in values.values()),
        f"b-{tag}.example",
        f"B-MESSAGE-{tag}",
        f"B-SCHEMA-TITLE-{tag}",
        secret_value,
        f"iso-b-{tag}",  # B's tenant name (namespaces A sends contain it: checked only when not sent)
        hidden["id"],
        hidden_schema,
        hidden_binding["id"],
        created["admin_token"]["id"],
        created["admin_token"]["token"],
        extra["token"],
        hidden["token"],
    ]
    state = TenantB(names, created["admin_token"]["token"], values, secrets)
    state.snapshot = _snapshot(b, names)
    return state


@pytest.fixture(scope="module")
def tenant_a(server: ServerProcess) -> Http:
    """Tenant A's tenant-admin."""
    created = ok(
        server.admin.post("/v1/tenants", {"name": f"iso-a-{uuid.uuid4().hex[:10]}", "admin_token": True}), 201
    )
    return server.http(created["admin_token"]["token"])


def _nowhere() -> Names:
    tag = uuid.uuid4().hex[:10]
    return Names(
        namespace=f"iso-n-{tag}/private",
        key=f"secret-key-{tag}",
        tenant_id=str(uuid.uuid4()),
        token_id="tok_" + uuid.uuid4().hex[:20],
        schema=f"b-schema-{tag}",
        binding_id="bnd_" + uuid.uuid4().hex[:16],
    )


def _resolve_ref(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


# Values for query parameters and body fields that name a resource of B.
_NAMING_QUERY = {"prefix": "namespace", "tenant_id": "tenant_id", "chain": "tenant_id"}
_NAMING_BODY = {"tenant_id": "tenant_id", "token_id": "token_id", "namespace": "namespace", "key": "key"}
_PLAIN_QUERY = {
    "env": "production",
    "version": "1",
    "resolve": "true",
    "explain": "true",
    "limit": "10",
    "before": "5",
    "from": "1",
    "to": "2",
    "after": "0",
    "action": "config:put",
    "result": "ok",
}
_PLAIN_BODY: dict[str, Any] = {
    "value": {"probe": True},
    "version": 1,
    "roles": ["developer"],
    "action": "config:read",
    "name": "iso-probe",
    "admin_token": False,
}


def _default(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    return {"string": "x", "integer": 1, "number": 1, "boolean": False, "array": [], "object": {}}.get(
        kind if isinstance(kind, str) else "object", {}
    )


@dataclass(frozen=True)
class Probe:
    """One request shape; ``render`` fills it with one side's names."""

    method: str
    template: str
    query: tuple[tuple[str, str], ...]  # (param, plain value or "@kind" naming one of Names' fields)
    body: tuple[tuple[str, Any], ...] | None

    def render(self, names: Names) -> tuple[str, Any]:
        def fill(value: Any) -> Any:
            return getattr(names, value[1:]) if isinstance(value, str) and value.startswith("@") else value

        path = PARAM_RE.sub(lambda m: names.path_value(m.group(1)), self.template)
        if self.query:
            path += "?" + "&".join(f"{k}={fill(v)}" for k, v in self.query)
        body = None if self.body is None else {k: fill(v) for k, v in self.body}
        return path, body

    @property
    def label(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return f"{self.method.upper()} {self.template}?{query} body={dict(self.body or ())}"


def _probes(doc: dict[str, Any]) -> Iterator[Probe]:
    """Every operation of the document, once plain and once per parameter or field that names a resource."""
    ops = [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHOD_ORDER]
    ops.sort(key=lambda t: (METHOD_ORDER.index(t[0]), t[1]))
    for method, path, op in ops:
        params = op.get("parameters", [])
        query_params = [p["name"] for p in params if p["in"] == "query"]
        base_query = tuple((n, _PLAIN_QUERY[n]) for n in query_params if n == "env")
        body_schema = None
        if "requestBody" in op:
            body_schema = _resolve_ref(doc, op["requestBody"]["content"]["application/json"]["schema"])
        base_body: tuple[tuple[str, Any], ...] | None = None
        naming_fields: list[str] = []
        if body_schema is not None:
            props = body_schema.get("properties", {})
            fields: list[tuple[str, Any]] = []
            for name in body_schema.get("required", []):
                if name in _NAMING_BODY or (name == "schema" and props.get(name, {}).get("type") == "string"):
                    fields.append((name, "@" + _NAMING_BODY.get(name, "schema")))
                else:
                    fields.append(
                        (name, _PLAIN_BODY.get(name, _default(_resolve_ref(doc, props.get(name, {})))))
                    )
            base_body = tuple(fields)
            required = set(body_schema.get("required", []))
            naming_fields = [n for n in props if n in _NAMING_BODY and n not in required]
        yield Probe(method, path, base_query, base_body)
        for name in query_params:
            if name == "env":
                continue
            value = "@" + _NAMING_QUERY[name] if name in _NAMING_QUERY else _PLAIN_QUERY.get(name, "x")
            yield Probe(method, path, (*base_query, (name, value)), base_body)
        for name in naming_fields:
            yield Probe(method, path, base_query, (*(base_body or ()), (name, "@" + _NAMING_BODY[name])))


def _normalise(text: str, b: Names, nowhere: Names) -> str:
    for one, other in zip(b.texts(), nowhere.texts(), strict=True):
        text = text.replace(one, "<NAME>").replace(other, "<NAME>")
    return text


def _comparable(reply: Reply, b: Names, nowhere: Names) -> Any:
    """The part of an answer that must not differ between B's names and nonexistent ones."""
    if reply.status >= 400:
        doc = reply.json
        return reply.status, doc.get("code"), _normalise(doc.get("detail", ""), b, nowhere), doc.get("rule")
    return reply.status


@pytest.fixture(scope="module")
def results(server: ServerProcess, tenant_a: Http, tenant_b: TenantB) -> list[dict[str, Any]]:
    """Send every probe with B's names and with nonexistent names; keep both answers."""
    doc = ok(server.http().get("/v1/openapi.json"))
    out = []
    sent: set[str] = set()
    for probe in _probes(doc):
        nowhere = _nowhere()
        b_path, b_body = probe.render(tenant_b.names)
        n_path, n_body = probe.render(nowhere)
        b_reply = tenant_a.request(probe.method.upper(), b_path, b_body)
        n_reply = tenant_a.request(probe.method.upper(), n_path, n_body)
        request_text = b_path + json.dumps(b_body)
        out.append(
            {
                "probe": probe,
                "b": b_reply,
                "n": n_reply,
                "nowhere": nowhere,
                "request": request_text,
                "sent_before": set(sent),
            }
        )
        sent |= {t for t in tenant_b.names.texts() if t in request_text}
    return out


class TestEveryRoute:
    """Every documented route, called by A with B's names, answers as if B did not exist."""

    def test_every_documented_operation_probed(
        self, server: ServerProcess, results: list[dict[str, Any]]
    ) -> None:
        """The probes cover every (method, path) of /v1/openapi.json."""
        doc = ok(server.http().get("/v1/openapi.json"))
        documented = {(m, p) for p, item in doc["paths"].items() for m in item if m in METHOD_ORDER}
        probed = {(r["probe"].method, r["probe"].template) for r in results}
        assert documented == probed
        assert len(documented) >= 20

    def test_no_b_data_in_any_answer(self, results: list[dict[str, Any]], tenant_b: TenantB) -> None:
        """No answer to A holds B's values, secrets, tenant id, token ids or schema names it was not sent."""
        leaks = []
        b = tenant_b.names
        maybe_echoed = [b.tenant_id, b.token_id, b.schema, b.binding_id, b.namespace, b.key]
        for r in results:
            body = r["b"].body.decode("utf-8", "replace") + json.dumps(r["b"].headers)
            forbidden = [s for s in tenant_b.secret_texts if s not in r["request"]]
            forbidden += [s for s in maybe_echoed if s not in r["request"] and s not in r["sent_before"]]
            found = [s for s in forbidden if s in body]
            if found:
                leaks.append((r["probe"].label, r["b"].status, found))
        assert leaks == []

    def test_b_names_answer_like_nonexistent_ones(
        self, results: list[dict[str, Any]], tenant_b: TenantB
    ) -> None:
        """Status, error code, detail (names aside) and rule are the same for B's and nonexistent names."""
        differing = []
        for r in results:
            b_side = _comparable(r["b"], tenant_b.names, r["nowhere"])
            n_side = _comparable(r["n"], tenant_b.names, r["nowhere"])
            if b_side != n_side:
                differing.append((r["probe"].label, b_side, n_side))
        assert differing == []

    def test_successful_reads_identical(self, results: list[dict[str, Any]], tenant_b: TenantB) -> None:
        """A successful GET under /v1 answers the same body for B's names and nonexistent ones."""
        differing = []
        for r in results:
            probe = r["probe"]
            if probe.method != "get" or r["b"].status != 200 or not probe.template.startswith("/v1/"):
                continue
            b_text = _normalise(r["b"].body.decode(), tenant_b.names, r["nowhere"])
            n_text = _normalise(r["n"].body.decode(), tenant_b.names, r["nowhere"])
            if b_text != n_text:
                differing.append(probe.label)
        assert differing == []

    def test_no_server_errors(self, results: list[dict[str, Any]]) -> None:
        """No probe makes the server fail."""
        assert [r["probe"].label for r in results if r["b"].status >= 500 or r["n"].status >= 500] == []

    def test_b_unchanged(
        self, results: list[dict[str, Any]], server: ServerProcess, tenant_b: TenantB
    ) -> None:
        """After A's probes, B's configs, history, schemas, bindings, tokens and settings are as before."""
        assert results
        assert _snapshot(server.http(tenant_b.token), tenant_b.names) == tenant_b.snapshot

    def test_b_audit_has_no_a_actions(
        self, results: list[dict[str, Any]], server: ServerProcess, tenant_b: TenantB, tenant_a: Http
    ) -> None:
        """Nothing A did landed on B's audit chain, and B's chain still verifies."""
        assert results
        b = server.http(tenant_b.token)
        a_token_id = ok(tenant_a.get("/v1/whoami"))["token_id"]
        assert [r for r in audit_records(b) if a_token_id in r["actor"]] == []
        assert ok(b.get("/v1/audit/verify"))["ok"] is True


class TestDirect:
    """The isolation cases the issue names explicitly."""

    def test_get_other_tenant_is_403(self, tenant_a: Http, tenant_b: TenantB) -> None:
        """A tenant-admin reading another tenant by id gets 403, the same as for a random id."""
        doc = problem(tenant_a.get(f"/v1/tenants/{tenant_b.names.tenant_id}"), 403)
        other = problem(tenant_a.get(f"/v1/tenants/{uuid.uuid4()}"), 403)
        assert doc["detail"] == other["detail"]

    def test_get_own_tenant_is_200(self, tenant_a: Http) -> None:
        """A tenant-admin can read its own tenant."""
        me = ok(tenant_a.get("/v1/whoami"))
        assert ok(tenant_a.get(f"/v1/tenants/{me['tenant_id']}"))["id"] == me["tenant_id"]

    def test_revoke_other_tenants_token_is_404(
        self, server: ServerProcess, tenant_a: Http, tenant_b: TenantB
    ) -> None:
        """DELETE /v1/tokens/{B's token id} by A is 404 and B's token keeps working."""
        problem(tenant_a.delete(f"/v1/tokens/{tenant_b.names.token_id}"), 404)
        problem(
            tenant_a.delete(f"/v1/tokens/{tenant_b.names.token_id}?tenant_id={tenant_b.names.tenant_id}"), 403
        )
        ok(server.http(tenant_b.token).get("/v1/whoami"))
        listed = ok(server.http(tenant_b.token).get("/v1/tokens"))["tokens"]
        assert [t["revoked"] for t in listed if t["id"] == tenant_b.names.token_id] == [False]

    def test_same_names_are_separate(self, server: ServerProcess, tenant_a: Http, tenant_b: TenantB) -> None:
        """A writing at B's namespace and key creates A's own entry; B's value is untouched."""
        ns, key = tenant_b.names.namespace, tenant_b.names.key
        ok(tenant_a.put(cfg(ns, key, "staging"), {"value": {"from": "a"}}), 201)
        problem(server.http(tenant_b.token).get(cfg(ns, key, "staging")), 404)
        got = ok(server.http(tenant_b.token).get(cfg(ns, key, "production")))
        assert got["value"] == tenant_b.values[("production", key)]

    def test_global_admin_can_cross(self, admin: Http, tenant_b: TenantB) -> None:
        """The global-admin may read another tenant (the one role that crosses tenants)."""
        assert ok(admin.get(f"/v1/tenants/{tenant_b.names.tenant_id}"))["id"] == tenant_b.names.tenant_id
