"""Small assertions and readers shared by the REST API tests.

They talk to a real server through ``tests.support.Http`` only; nothing here
imports the server package.
"""

from __future__ import annotations

from typing import Any

from tests.support import Http, Reply

PROBLEM = "application/problem+json"
ENVIRONMENTS = ("global", "development", "staging", "production", "edge")


def ok(reply: Reply, status: int = 200) -> Any:
    """The JSON body of a reply that must have ``status``."""
    assert reply.status == status, (reply.status, reply.body[:500])
    return reply.json


def problem(reply: Reply, status: int) -> dict[str, Any]:
    """The problem document of an error reply; checks type, status and that detail says something."""
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.content_type == PROBLEM, reply.headers
    doc = reply.json
    assert doc["status"] == status
    assert isinstance(doc["detail"], str)
    assert len(doc["detail"]) >= 10, doc
    assert doc.get("title") and doc.get("type")
    return doc


def cfg(namespace: str, key: str, env: str = "global", query: str = "") -> str:
    """The path of a config entry, with ``env`` and any extra query."""
    extra = f"&{query}" if query else ""
    return f"/v1/configs/{namespace}/{key}?env={env}{extra}"


def token(
    admin: Http, name: str, roles: list[str], namespaces: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """Create a token with the tenant-admin client ``admin``; returns the creation answer."""
    body: dict[str, Any] = {"name": name, "roles": roles, **extra}
    if namespaces is not None:
        body["namespaces"] = namespaces
    return ok(admin.post("/v1/tokens", body), 201)


def audit_records(
    http: Http, *, chain: str | None = None, after: int = 0, **filters: str
) -> list[dict[str, Any]]:
    """Every audit record of a chain after ``after``, paging through the API."""
    out: list[dict[str, Any]] = []
    while True:
        query = f"after={after}&limit=1000"
        if chain is not None:
            query += f"&chain={chain}"
        for name, value in filters.items():
            query += f"&{name}={value}"
        page = ok(http.get(f"/v1/audit?{query}"))["records"]
        out.extend(page)
        if len(page) < 1000:
            return out
        after = page[-1]["seq"]


def last_seq(http: Http) -> int:
    """The sequence number of the newest record on the caller's own audit chain."""
    records = audit_records(http)
    return records[-1]["seq"] if records else 0


def listed(http: Http, env: str, query: str = "") -> list[dict[str, Any]]:
    """Items of GET /v1/configs for one environment."""
    extra = f"&{query}" if query else ""
    return ok(http.get(f"/v1/configs?env={env}{extra}"))["items"]
