"""The OpenAPI 3.1 document: its structure, and that it describes exactly the routes the app registers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from server.api.app import OPENAPI, create_app
from server.api.openapi import UNDOCUMENTED
from server.service import Services
from server.storage import SQLiteStorage
from tests.server.api.helpers import ok
from tests.support import ServerProcess

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


@pytest.fixture(scope="module")
def doc(server: ServerProcess) -> dict[str, Any]:
    """The document as the running server serves it, without a token."""
    reply = server.http().get("/v1/openapi.json")
    assert reply.content_type == "application/json"
    return ok(reply)


@pytest.fixture
def app_and_doc(tmp_path: Path) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    """The routes of an app built in-process (storage never opened) and the document that app serves."""
    app = create_app(Services.build(SQLiteStorage(tmp_path / "x.db")))
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        entry = (route.method, route.resource.canonical)
        if entry not in UNDOCUMENTED:
            routes.add(entry)
    return routes, json.loads(app[OPENAPI])


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


class TestStructure:
    """The served document is a well-formed OpenAPI 3.1 description."""

    def test_version_and_info(self, doc: dict[str, Any]) -> None:
        """openapi is 3.1.0 and info carries a title and a version."""
        assert doc["openapi"] == "3.1.0"
        assert isinstance(doc["info"]["title"], str) and doc["info"]["title"]
        assert isinstance(doc["info"]["version"], str) and doc["info"]["version"]

    def test_paths_are_absolute(self, doc: dict[str, Any]) -> None:
        """Every path key starts with '/' and only holds known methods (plus parameters/summary)."""
        assert doc["paths"]
        for path, item in doc["paths"].items():
            assert path.startswith("/"), path
            assert set(item) <= METHODS | {"parameters", "summary", "description"}, path

    def test_every_operation_has_responses(self, doc: dict[str, Any]) -> None:
        """Each operation has a summary and at least one response with a description."""
        for path, method, op in _operations(doc):
            assert op.get("summary"), (method, path)
            assert op["responses"], (method, path)
            for code, response in op["responses"].items():
                assert re.fullmatch(r"[1-5](\d\d|XX)|default", code), (method, path, code)
                assert _deref(doc, response)["description"], (method, path, code)

    def test_path_parameters_declared(self, doc: dict[str, Any]) -> None:
        """Each {param} of a path is declared as a required path parameter, and no other path param is."""
        for path, method, op in _operations(doc):
            in_path = set(PARAM_RE.findall(path))
            declared = {p["name"] for p in op.get("parameters", []) if _deref(doc, p)["in"] == "path"}
            assert in_path == declared, (method, path)
            assert all(p["required"] is True for p in op.get("parameters", []) if p["in"] == "path")

    def test_parameters_well_formed(self, doc: dict[str, Any]) -> None:
        """Every parameter has a name, a valid location and a schema; no duplicates per operation."""
        for path, method, op in _operations(doc):
            seen = set()
            for param in map(lambda p: _deref(doc, p), op.get("parameters", [])):
                assert param["in"] in {"query", "header", "path", "cookie"}, (method, path)
                assert param["name"] and "schema" in param, (method, path)
                assert (param["name"], param["in"]) not in seen, (method, path, param["name"])
                seen.add((param["name"], param["in"]))

    def test_refs_resolve(self, doc: dict[str, Any]) -> None:
        """Every $ref points at something in the document."""

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if "$ref" in node:
                    assert node["$ref"].startswith("#/"), node["$ref"]
                    _deref(doc, node)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(doc)

    def test_bearer_security(self, doc: dict[str, Any]) -> None:
        """Bearer auth is the default; public routes opt out with an empty security list."""
        assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert doc["security"] == [{"bearer": []}]
        public = {p for p, m, op in _operations(doc) if op.get("security") == []}
        assert public == {"/health/live", "/health/ready", "/metrics", "/v1/openapi.json"}

    def test_protected_operations_document_401(self, doc: dict[str, Any]) -> None:
        """Every operation that needs a token documents the 401 problem answer."""
        for path, method, op in _operations(doc):
            if op.get("security") != []:
                assert "401" in op["responses"], (method, path)

    def test_errors_documented_as_problem_json(self, doc: dict[str, Any]) -> None:
        """Every documented 4xx answer is application/problem+json."""
        for path, _, op in _operations(doc):
            for code, response in op["responses"].items():
                if code.startswith("4"):
                    assert set(_deref(doc, response)["content"]) == {"application/problem+json"}, (path, code)

    def test_request_bodies_are_json(self, doc: dict[str, Any]) -> None:
        """Every request body is described as application/json with a schema."""
        for path, method, op in _operations(doc):
            if "requestBody" in op:
                assert "schema" in op["requestBody"]["content"]["application/json"], (method, path)


class TestRoutesMatch:
    """The document and the aiohttp router describe the same operations."""

    def test_every_route_documented(self, app_and_doc: tuple[set[tuple[str, str]], dict[str, Any]]) -> None:
        """Every registered (method, route) is in the document."""
        routes, document = app_and_doc
        documented = {(m.upper(), p) for p, m, _ in _operations(document)}
        assert sorted(routes - documented) == []

    def test_every_documented_operation_registered(
        self, app_and_doc: tuple[set[tuple[str, str]], dict[str, Any]]
    ) -> None:
        """Every documented (method, path) is a registered route."""
        routes, document = app_and_doc
        documented = {(m.upper(), p) for p, m, _ in _operations(document)}
        assert sorted(documented - routes) == []

    def test_served_document_is_the_apps(
        self, doc: dict[str, Any], app_and_doc: tuple[set[tuple[str, str]], dict[str, Any]]
    ) -> None:
        """The running server serves the same document the app builds."""
        assert doc == app_and_doc[1]

    def test_undocumented_list_is_small(self) -> None:
        """Only the catch-all that turns malformed config paths into 400s is left out."""
        assert frozenset({("*", "/v1/configs/{rest}")}) == UNDOCUMENTED
