"""The long-poll change feed, GET /v1/changes, against a real server."""

from __future__ import annotations

import json
import threading
import time

import pytest
from cloudevents.http import from_json

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import cfg, ok, problem
from tests.support import Http


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
