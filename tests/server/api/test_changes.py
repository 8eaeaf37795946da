"""The long-poll change feed, GET /v1/changes, against a real server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent, from_json

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import audit_records, cfg, ok, problem
from tests.support import Http, Reply, ServerProcess

PLAIN = "sk-PLANTED-CHANGE-FEED-VALUE-0123456789"


def poll(http: Http, since: int, query: str = "") -> dict[str, object]:
    return dict(ok(http.get(f"/v1/changes?since={since}{query}", timeout=60)))


class TestLongPoll:
    def test_existing_changes_come_back_at_once(self, tadmin: Http) -> None:
        """since=0 returns every change so far, in revision order, with the current revision."""
        for i in range(3):
            ok(tadmin.put(cfg("feed", f"k{i}"), {"value": {"i": i}}), 201)
        ok(tadmin.delete(cfg("feed", "k1")))
        got = poll(tadmin, 0, "&wait=5s")
        changes = got["changes"]
        assert [c["revision"] for c in changes] == [1, 2, 3, 4]  # type: ignore[index]
        assert [c["type"] for c in changes] == ["put", "put", "put", "delete"]  # type: ignore[index]
        assert got["revision"] == 4

    def test_waiting_poll_wakes_on_a_write(self, tadmin: Http) -> None:
        """A poll waiting at the head returns the change written while it waits."""
        head = int(poll(tadmin, 0)["revision"])  # type: ignore[arg-type]
        writer = threading.Timer(0.3, lambda: tadmin.put(cfg("feed", "late"), {"value": {"x": 1}}))
        writer.start()
        try:
            got = poll(tadmin, head, "&wait=30s")
        finally:
            writer.join()
        assert [(c["key"], c["revision"]) for c in got["changes"]] == [("late", head + 1)]  # type: ignore[index, union-attr]

    def test_deadline_returns_empty_with_current_revision(self, tadmin: Http) -> None:
        """With nothing new, the poll ends at its deadline with no changes and the same revision."""
        head = int(poll(tadmin, 0)["revision"])  # type: ignore[arg-type]
        got = poll(tadmin, head, "&wait=300ms")
        assert got == {"revision": head, "changes": []}

    def test_chained_polls_see_every_revision_once(self, tadmin: Http) -> None:
        """Polling from each returned revision while 3 writers write 60 changes: all, in order, once."""

        def writer(w: int) -> None:
            for i in range(20):
                ok(tadmin.put(cfg("chain", f"w{w}"), {"value": {"i": i}}), 201 if i == 0 else 200)

        start = int(poll(tadmin, 0)["revision"])  # type: ignore[arg-type]
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        seen: list[int] = []
        since, deadline = start, time.monotonic() + 30
        while len(seen) < 60 and time.monotonic() < deadline:
            got = poll(tadmin, since, "&wait=5s&prefix=chain")
            seen += [int(c["revision"]) for c in got["changes"]]  # type: ignore[index, union-attr]
            since = int(got["revision"])  # type: ignore[arg-type]
        for t in threads:
            t.join()
        assert seen == list(range(start + 1, start + 61))

    def test_filtered_like_reads(self, tadmin: Http, make_token: MakeToken) -> None:
        """A developer's feed has development changes, not production ones or restricted ones."""
        ok(tadmin.put(cfg("vis", "dev", "development"), {"value": {"a": 1}}), 201)
        ok(tadmin.put(cfg("vis", "prod", "production"), {"value": {"b": 1}}), 201)
        dev, _ = make_token(["developer"])
        keys = [c["key"] for c in poll(dev, 0)["changes"]]  # type: ignore[index, union-attr]
        assert "dev" in keys
        assert "prod" not in keys

    @pytest.mark.parametrize(
        "query", ["since=-1", "since=x", "wait=forever", "wait=10m", "env=qa", "prefix=../x"]
    )
    def test_bad_parameters_are_400(self, tadmin: Http, query: str) -> None:
        """Malformed revisions, waits, environments and prefixes are refused with a clear 400."""
        problem(tadmin.get(f"/v1/changes?{query}"), 400)


class TestCloudEvents:
    def test_changes_as_cloudevents_parse_with_the_sdk(self, tadmin: Http, tenant: dict[str, str]) -> None:
        """format=cloudevents gives CloudEvents 1.0 events the official SDK reads, with type and subject."""
        ok(tadmin.put(cfg("ce", "k"), {"value": {"a": 1}}), 201)
        ok(tadmin.put(cfg("ce", "k"), {"value": {"a": 2}}))
        ok(tadmin.delete(cfg("ce", "k")))
        got = poll(tadmin, 0, "&format=cloudevents")
        events = [from_json(json.dumps(e)) for e in got["events"]]  # type: ignore[union-attr]
        assert [e["type"] for e in events] == [
            "com.llmconfig.config.created",
            "com.llmconfig.config.updated",
            "com.llmconfig.config.deleted",
        ]
        assert {e["subject"] for e in events} == {f"{tenant['id']}/ce/k"}
        assert len({e["id"] for e in events}) == 3
        assert events[1].data["value"] == {"a": 2}
        assert events[0]["source"] == f"/llm-config-manager/tenants/{tenant['id']}"


def secret(http: Http, namespace: str, key: str, value: str, env: str = "global", **extra: object) -> Reply:
    return http.put(f"/v1/secrets/{namespace}/{key}?env={env}", {"value": value, **extra})


def events(reply: Reply) -> list[CloudEvent]:
    """The CloudEvents of a format=cloudevents answer, read by the official SDK."""
    return [from_json(json.dumps(e)) for e in ok(reply)["events"]]


class TestSecretEvents:
    def test_secret_events_parse_with_the_sdk_in_revision_order(
        self, tadmin: Http, tenant: dict[str, str]
    ) -> None:
        """created, rotated and revoked come as CloudEvents between config changes, by revision."""
        ok(tadmin.put(cfg("mix", "a"), {"value": {"n": 1}}), 201)
        ok(secret(tadmin, "mix", "openai", PLAIN), 201)
        ok(tadmin.put(cfg("mix", "a"), {"value": {"n": 2}}))
        ok(secret(tadmin, "mix", "openai", PLAIN + "-2", grace_period=60))
        ok(tadmin.post("/v1/secrets/mix/openai/revoke", {"version": 1}))
        got = events(tadmin.get("/v1/changes?since=0&format=cloudevents"))
        assert [e["type"] for e in got] == [
            "com.llmconfig.config.created",
            "com.llmconfig.secret.created",
            "com.llmconfig.config.updated",
            "com.llmconfig.secret.rotated",
            "com.llmconfig.secret.revoked",
        ]
        assert [e["revision"] for e in got] == [1, 2, 3, 4, 5]
        assert [e["id"] for e in got] == [f"{tenant['id']}/{r}" for r in range(1, 6)]
        assert got[1]["subject"] == f"{tenant['id']}/mix/openai"
        assert got[3].data["version"] == 2 and got[3].data["namespace"] == "mix"
        assert got[4].data["versions"] == [1] and got[4].data["environment"] == "global"

    def test_no_secret_value_anywhere_in_the_answer(self, tadmin: Http) -> None:
        """The planted value appears nowhere in either format, whatever the event."""
        ok(secret(tadmin, "leak", "k", PLAIN, rotation_interval=3600), 201)
        ok(secret(tadmin, "leak", "k", PLAIN + "-2"))
        ok(tadmin.post("/v1/secrets/leak/k/revoke"))
        for query in ("format=cloudevents", "kinds=config,secret"):
            reply = tadmin.get(f"/v1/changes?since=0&{query}")
            assert reply.status == 200
            assert PLAIN.encode() not in reply.body
            assert b"ciphertext" not in reply.body and b"wrapped" not in reply.body
        assert len(events(tadmin.get("/v1/changes?since=0&format=cloudevents"))) == 3

    def test_plain_format_keeps_to_configs_unless_asked(self, tadmin: Http) -> None:
        """Without kinds the plain answer lists config changes only; kinds adds secret entries."""
        ok(secret(tadmin, "plain", "k", PLAIN), 201)
        ok(tadmin.put(cfg("plain", "c"), {"value": {"n": 1}}), 201)
        default = poll(tadmin, 0)
        assert [c["kind"] for c in default["changes"]] == ["config"]  # type: ignore[index, union-attr]
        both = poll(tadmin, 0, "&kinds=config,secret")
        assert [(c["kind"], c["type"]) for c in both["changes"]] == [("secret", "created"), ("config", "put")]  # type: ignore[index, union-attr]
        only = poll(tadmin, 0, "&kinds=secret")
        assert [c["key"] for c in only["changes"]] == ["k"]  # type: ignore[index, union-attr]
        assert default["revision"] == both["revision"] == only["revision"] == 2

    def test_a_scoped_token_sees_only_secrets_it_may_list(self, tadmin: Http, make_token: MakeToken) -> None:
        """A service account of team-a sees team-a's secret events; a developer sees none of a global
        secret (it serves production) but those of a development secret."""
        ok(secret(tadmin, "team-a", "key", PLAIN), 201)
        ok(secret(tadmin, "team-b", "key", PLAIN), 201)
        ok(secret(tadmin, "team-b", "dev-key", PLAIN, env="development"), 201)
        scoped, _ = make_token(["service-account"], ["team-a"])
        developer, _ = make_token(["developer"])
        assert [
            e["subject"].split("/", 1)[1]
            for e in events(scoped.get("/v1/changes?since=0&format=cloudevents"))
        ] == ["team-a/key"]
        assert [e.data["key"] for e in events(developer.get("/v1/changes?since=0&format=cloudevents"))] == [
            "dev-key"
        ]
        for http in (scoped, developer):  # exactly what secret list shows each of them
            listed = {(i["namespace"], i["key"]) for i in ok(http.get("/v1/secrets"))["items"]}
            shown = {
                (e.data["namespace"], e.data["key"])
                for e in events(http.get("/v1/changes?format=cloudevents"))
            }
            assert listed == shown

    def test_env_and_prefix_filter_secret_events(self, tadmin: Http) -> None:
        """env keeps the secrets that serve it; prefix keeps a namespace and those under it."""
        ok(secret(tadmin, "filt/sub", "all-envs", PLAIN), 201)
        ok(secret(tadmin, "filt", "prod", PLAIN, env="production"), 201)
        ok(secret(tadmin, "other", "dev", PLAIN, env="development"), 201)

        def keys(query: str) -> list[str]:
            return [
                e.data["key"] for e in events(tadmin.get(f"/v1/changes?since=0&format=cloudevents&{query}"))
            ]

        assert keys("env=production") == ["all-envs", "prod"]
        assert keys("env=development") == ["all-envs", "dev"]
        assert keys("prefix=filt") == ["all-envs", "prod"]

    def test_a_waiting_poll_wakes_on_a_secret_write(self, tadmin: Http) -> None:
        """A cloudevents poll waiting at the head returns the secret written while it waits."""
        head = int(poll(tadmin, 0)["revision"])  # type: ignore[arg-type]
        writer = threading.Timer(0.3, lambda: secret(tadmin, "wake", "k", PLAIN))
        writer.start()
        try:
            got = events(tadmin.get(f"/v1/changes?since={head}&wait=30s&format=cloudevents", timeout=60))
        finally:
            writer.join()
        assert [(e["type"], e["revision"]) for e in got] == [("com.llmconfig.secret.created", head + 1)]

    @pytest.mark.parametrize(
        "query",
        ["kinds=agents", "kinds=config,bogus", "kinds=config,", "resolve=true&env=global&kinds=secret"],
    )
    def test_bad_kinds_are_400(self, tadmin: Http, query: str) -> None:
        """kinds names config and/or secret, and does not go with resolve=true."""
        assert "kinds" in problem(tadmin.get(f"/v1/changes?{query}"), 400)["detail"]


def test_rotation_due_is_announced_once_by_the_background_scan(tmp_path: Path) -> None:
    """With a 0.2 s scan, a secret whose 1 s rotation interval passes gets one rotation_due event and one
    audit record, and no second one on later scans or after a restart."""
    with ServerProcess(tmp_path / "data").running("--due-scan-interval", "0.2") as srv:
        admin = srv.admin
        stored = ok(secret(admin, "api-keys", "openai", PLAIN, rotation_interval=1), 201)
        ok(secret(admin, "api-keys", "no-interval", PLAIN), 201)
        seen: list[CloudEvent] = []
        since, deadline = stored["revision"] - 1, time.monotonic() + 30
        while time.monotonic() < deadline and not any(e["type"].endswith("rotation_due") for e in seen):
            reply = admin.get(f"/v1/changes?since={since}&wait=5s&format=cloudevents", timeout=60)
            seen += events(reply)
            since = reply.json["revision"]
        due = [e for e in seen if e["type"] == "com.llmconfig.secret.rotation_due"]
        assert len(due) == 1, [e["type"] for e in seen]
        assert due[0]["subject"] == f"{srv.tenant_id}/api-keys/openai"
        assert due[0].data["version"] == 1 and due[0].data["due_at"] > stored["created_at"]
        assert due[0]["id"] == f"{srv.tenant_id}/{due[0]['revision']}"
        for _ in range(3):  # more than ten scans later: nothing new
            reply = admin.get(f"/v1/changes?since={since}&wait=500ms&format=cloudevents")
            assert events(reply) == []
        srv.stop()
        srv.start("--due-scan-interval", "0.2")  # a scanner with no memory of what it announced
        reply = admin.get(f"/v1/changes?since={since}&wait=1500ms&format=cloudevents")
        assert events(reply) == []
        everything = admin.get("/v1/changes?since=0&format=cloudevents")
        assert [e["type"] for e in events(everything)].count("com.llmconfig.secret.rotation_due") == 1
        assert PLAIN.encode() not in everything.body
        records = audit_records(admin, action="secret:rotation_due")
        assert [(r["resource"], r["metadata"]["version"]) for r in records] == [("secret/api-keys/openai", 1)]
