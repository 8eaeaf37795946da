"""Versioning over REST: create, update, no-op, delete (tombstone), recreate, rollback, history, diff."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from tests.server.api.helpers import cfg, ok, problem
from tests.support import Http

NS, KEY = "llm-gateway/routing", "primary-model"
V1 = {"model": "gpt-4o", "temperature": 0.2, "fallback": ["a", "b"], "limits": {"rpm": 100}}
V2 = {"model": "claude", "temperature": 0.2, "fallback": ["b"], "limits": {"rpm": 100, "tpm": 5000}}
V3 = {"model": "claude", "extra": {"nested": {"deep": True}}}


def put(http: Http, value: dict[str, Any], status: int = 200, env: str = "production") -> dict[str, Any]:
    return ok(http.put(cfg(NS, KEY, env), {"value": value, "message": "m"}), status)


def history(http: Http, env: str = "production") -> list[dict[str, Any]]:
    return ok(http.get(f"/v1/configs/{NS}/{KEY}/history?env={env}"))["versions"]


@pytest.fixture
def three(tadmin: Http) -> Http:
    """An entry with versions 1, 2 and 3 (values V1, V2, V3) in production."""
    put(tadmin, V1, 201)
    put(tadmin, V2)
    put(tadmin, V3)
    return tadmin


class TestPut:
    """PUT creates version 1, then each change adds a version with a higher revision."""

    def test_first_put_creates_v1(self, tadmin: Http) -> None:
        """The first write is 201 with version 1, change_type create and changed=true."""
        out = put(tadmin, V1, 201)
        assert (out["version"], out["change_type"], out["changed"]) == (1, "create", True)
        assert out["revision"] >= 1
        assert out["value"] == V1

    def test_update_creates_v2_with_higher_revision(self, tadmin: Http) -> None:
        """A changed value is 200 with version 2, change_type update and a larger revision."""
        first = put(tadmin, V1, 201)
        second = put(tadmin, V2)
        assert (second["version"], second["change_type"], second["changed"]) == (2, "update", True)
        assert second["revision"] > first["revision"]

    def test_get_returns_latest(self, three: Http) -> None:
        """GET without version returns the newest version's value."""
        got = ok(three.get(cfg(NS, KEY, "production")))
        assert (got["version"], got["value"]) == (3, V3)

    def test_revision_is_per_tenant_counter(self, tadmin: Http) -> None:
        """Writes to different entries of one tenant take consecutive revisions."""
        a = ok(tadmin.put(cfg("rev", "a"), {"value": {"x": 1}}), 201)["revision"]
        b = ok(tadmin.put(cfg("rev", "b", "staging"), {"value": {"x": 1}}), 201)["revision"]
        assert b == a + 1


class TestUnchanged:
    """Writing the value an entry already has is a no-op."""

    def test_identical_put_is_unchanged(self, tadmin: Http) -> None:
        """The same value again answers changed=false with the existing version and revision."""
        first = put(tadmin, V1, 201)
        again = put(tadmin, dict(reversed(list(V1.items()))))
        assert again["changed"] is False
        assert (again["version"], again["revision"]) == (1, first["revision"])

    def test_identical_put_adds_no_history(self, tadmin: Http) -> None:
        """A no-op write leaves the history at one version."""
        put(tadmin, V1, 201)
        put(tadmin, V1)
        assert [v["version"] for v in history(tadmin)] == [1]


class TestDelete:
    """DELETE writes a tombstone version; the history keeps everything."""

    def test_delete_writes_tombstone_version(self, three: Http) -> None:
        """The delete answer is version 4, change_type delete, deleted=true."""
        out = ok(three.delete(cfg(NS, KEY, "production")))
        assert (out["version"], out["change_type"], out["deleted"]) == (4, "delete", True)

    def test_get_after_delete_is_404(self, three: Http) -> None:
        """A deleted entry reads as 404."""
        ok(three.delete(cfg(NS, KEY, "production")))
        problem(three.get(cfg(NS, KEY, "production")), 404)

    def test_history_keeps_all_versions_after_delete(self, three: Http) -> None:
        """History lists the tombstone and every version before it, newest first."""
        ok(three.delete(cfg(NS, KEY, "production")))
        versions = history(three)
        assert [v["version"] for v in versions] == [4, 3, 2, 1]
        assert [v["deleted"] for v in versions] == [True, False, False, False]

    def test_old_version_readable_after_delete(self, three: Http) -> None:
        """?version=2 still returns version 2's value after the delete."""
        ok(three.delete(cfg(NS, KEY, "production")))
        got = ok(three.get(cfg(NS, KEY, "production", "version=2")))
        assert (got["version"], got["value"]) == (2, V2)

    def test_delete_twice_is_404(self, three: Http) -> None:
        """Deleting a deleted entry is 404 and adds no version."""
        ok(three.delete(cfg(NS, KEY, "production")))
        problem(three.delete(cfg(NS, KEY, "production")), 404)
        assert len(history(three)) == 4

    def test_delete_missing_is_404(self, tadmin: Http) -> None:
        """Deleting an entry that never existed is 404."""
        problem(tadmin.delete(cfg(NS, KEY, "production")), 404)

    def test_put_after_delete_recreates(self, three: Http) -> None:
        """A put after a delete writes version 5 with change_type create, readable again."""
        ok(three.delete(cfg(NS, KEY, "production")))
        out = three.put(cfg(NS, KEY, "production"), {"value": V1}).json
        assert (out["version"], out["change_type"], out["changed"]) == (5, "create", True)
        assert ok(three.get(cfg(NS, KEY, "production")))["value"] == V1

    def test_put_after_delete_is_201_created(self, three: Http) -> None:
        """Re-creating a deleted entry answers 201 Created, as any PUT that creates a resource (RFC 9110)."""
        ok(three.delete(cfg(NS, KEY, "production")))
        assert three.put(cfg(NS, KEY, "production"), {"value": V1}).status == 201

    def test_put_after_delete_same_value_is_a_change(self, tadmin: Http) -> None:
        """Re-putting the value a deleted entry had is a real write, not a no-op."""
        put(tadmin, V1, 201)
        ok(tadmin.delete(cfg(NS, KEY, "production")))
        out = tadmin.put(cfg(NS, KEY, "production"), {"value": V1}).json
        assert (out["changed"], out["version"]) == (True, 3)


class TestRollback:
    """Rollback writes a new version equal to an old one; history only grows."""

    def test_rollback_writes_new_version_with_old_value(self, three: Http) -> None:
        """Rolling back to 1 writes version 4 with V1's value and change_type rollback."""
        out = ok(three.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": 1}))
        assert (out["version"], out["change_type"], out["value"]) == (4, "rollback", V1)
        assert ok(three.get(cfg(NS, KEY, "production")))["value"] == V1

    def test_rollback_only_grows_history(self, three: Http) -> None:
        """After a rollback every earlier version is still there, unchanged."""
        before = history(three)
        ok(three.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": 1}))
        after = history(three)
        assert [v["version"] for v in after] == [4, 3, 2, 1]
        assert after[1:] == before

    def test_rollback_revision_increases(self, three: Http) -> None:
        """The rollback version takes a new, higher revision."""
        latest = history(three)[0]["revision"]
        out = ok(three.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": 2}))
        assert out["revision"] > latest

    def test_rollback_to_missing_version_is_404(self, three: Http) -> None:
        """Rolling back to a version that does not exist is 404 and writes nothing."""
        problem(three.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": 9}), 404)
        assert len(history(three)) == 3

    @pytest.mark.parametrize("version", [0, -1, "1", None, 1.5, True])
    def test_rollback_bad_version_is_400(self, three: Http, version: object) -> None:
        """A version that is not a positive integer is 400."""
        problem(three.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": version}), 400)

    def test_rollback_restores_deleted_entry(self, three: Http) -> None:
        """Rolling back a deleted entry to version 2 makes it readable with V2 again."""
        ok(three.delete(cfg(NS, KEY, "production")))
        ok(three.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": 2}))
        assert ok(three.get(cfg(NS, KEY, "production")))["value"] == V2


class TestHistoryPatch:
    """Each history entry carries the RFC 6902 patch from the version before it."""

    def test_patches_rebuild_every_version(self, three: Http) -> None:
        """Applying each entry's patch to the previous value gives that entry's value."""
        ok(three.delete(cfg(NS, KEY, "production")))
        ok(three.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": 2}))
        versions = list(reversed(history(three)))
        previous: dict[str, Any] = {}
        for entry in versions:
            assert jsonpatch.apply_patch(previous, entry["patch"]) == entry["value"], entry["version"]
            previous = entry["value"]

    def test_history_is_newest_first_with_metadata(self, three: Http) -> None:
        """History entries are newest first and carry change type, author and message."""
        versions = history(three)
        assert [v["version"] for v in versions] == [3, 2, 1]
        assert [v["change_type"] for v in versions] == ["update", "update", "create"]
        assert all(v["author"] and v["message"] == "m" and v["created_at"] for v in versions)

    def test_history_limit(self, three: Http) -> None:
        """limit=2 returns only the two newest versions."""
        versions = ok(three.get(f"/v1/configs/{NS}/{KEY}/history?env=production&limit=2"))["versions"]
        assert [v["version"] for v in versions] == [3, 2]

    def test_history_of_missing_entry_is_404(self, tadmin: Http) -> None:
        """History of an entry that never existed is 404."""
        problem(tadmin.get(f"/v1/configs/{NS}/{KEY}/history?env=production"), 404)


class TestDiff:
    """GET .../diff returns the RFC 6902 patch between two versions."""

    def test_diff_between_versions(self, three: Http) -> None:
        """The patch from version 1 to 3 turns V1 into V3."""
        out = ok(three.get(f"/v1/configs/{NS}/{KEY}/diff?env=production&from=1&to=3"))
        assert (out["from_version"], out["to_version"]) == (1, 3)
        assert jsonpatch.apply_patch(V1, out["patch"]) == V3

    def test_diff_defaults_to_previous_version(self, three: Http) -> None:
        """Without from/to the diff is from the previous to the current version."""
        out = ok(three.get(f"/v1/configs/{NS}/{KEY}/diff?env=production"))
        assert (out["from_version"], out["to_version"]) == (2, 3)
        assert jsonpatch.apply_patch(V2, out["patch"]) == V3

    def test_diff_missing_version_is_404(self, three: Http) -> None:
        """A diff naming a version that does not exist is 404."""
        problem(three.get(f"/v1/configs/{NS}/{KEY}/diff?env=production&from=1&to=8"), 404)


class TestVersionQuery:
    """?version=N reads one stored version."""

    @pytest.mark.parametrize(("n", "value"), [(1, V1), (2, V2), (3, V3)])
    def test_version_n(self, three: Http, n: int, value: dict[str, Any]) -> None:
        """Each stored version is readable by number."""
        got = ok(three.get(cfg(NS, KEY, "production", f"version={n}")))
        assert (got["version"], got["value"]) == (n, value)

    def test_missing_version_is_404(self, three: Http) -> None:
        """A version number past the newest is 404."""
        problem(three.get(cfg(NS, KEY, "production", "version=4")), 404)

    @pytest.mark.parametrize("raw", ["0", "-1", "abc", "1.5"])
    def test_bad_version_is_400(self, three: Http, raw: str) -> None:
        """A version that is not a positive integer is 400."""
        problem(three.get(cfg(NS, KEY, "production", f"version={raw}")), 400)

    def test_versions_are_per_environment(self, three: Http) -> None:
        """The production entry's versions do not exist in staging."""
        problem(three.get(cfg(NS, KEY, "staging")), 404)
