"""ConfigState: the merge rules that keep a resumed or re-fetched state from going back in time,
the cache form, and the files a state becomes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.layout import build_files, template_context
from agent.render import Template
from agent.state import CACHE_META, ConfigState, Entry, has_secret_refs


def state(revision: int = 0, **entries: tuple[dict[str, object], int]) -> ConfigState:
    return ConfigState({("ns", k): Entry(v, r) for k, (v, r) in entries.items()}, revision)


class TestChanges:
    def test_newer_change_is_taken(self) -> None:
        s = state(a=({"v": 1}, 5))
        assert s.put(("ns", "a"), Entry({"v": 2}, 6))
        assert s.entries[("ns", "a")].value == {"v": 2}

    def test_replayed_older_change_is_skipped(self) -> None:
        """An event replayed after a reconnect (same or lower revision) is not applied twice."""
        s = state(a=({"v": 2}, 6))
        assert not s.newer(("ns", "a"), 6)
        assert not s.put(("ns", "a"), Entry({"v": 1}, 5))
        assert not s.delete(("ns", "a"), 6)
        assert s.entries[("ns", "a")].value == {"v": 2}

    def test_same_value_newer_revision_is_no_change(self) -> None:
        s = state(a=({"v": 1}, 5))
        assert not s.put(("ns", "a"), Entry({"v": 1}, 9))
        assert s.entries[("ns", "a")].revision == 9

    def test_delete_after_put(self) -> None:
        s = state(a=({"v": 1}, 5))
        assert s.delete(("ns", "a"), 7)
        assert s.entries == {}


class TestFullFetch:
    def test_entry_missing_from_fetch_is_gone_when_not_newer_than_floor(self) -> None:
        s = state(a=({"v": 1}, 3), b=({"v": 1}, 4))
        fetched = state(a=({"v": 1}, 3))
        assert s.merge_fetch(fetched, floor=10)
        assert set(s.entries) == {("ns", "a")}
        assert s.revision == 10

    def test_entry_newer_than_floor_survives_a_fetch_without_it(self) -> None:
        """A change the stream delivered after the fetch started is not undone by the fetch."""
        s = state(a=({"v": 1}, 3), new=({"v": 1}, 12))
        assert not s.merge_fetch(state(a=({"v": 1}, 3)), floor=10)
        assert ("ns", "new") in s.entries

    def test_older_fetched_value_does_not_replace_a_newer_one(self) -> None:
        s = state(a=({"v": 3}, 12))
        s.merge_fetch(state(a=({"v": 2}, 8)), floor=10)
        assert s.entries[("ns", "a")].value == {"v": 3}

    def test_without_a_floor_the_fetch_is_the_truth(self) -> None:
        s = state(a=({"v": 1}, 3), b=({"v": 1}, 40))
        s.merge_fetch(state(a=({"v": 1}, 3)), floor=None)
        assert set(s.entries) == {("ns", "a")}

    def test_snapshot_replaces_everything(self) -> None:
        s = state(a=({"v": 1}, 3), b=({"v": 1}, 4))
        assert s.replace([(("ns", "c"), Entry({"v": 9}, 20))], 20)
        assert set(s.entries) == {("ns", "c")} and s.revision == 20


class TestCacheForm:
    def test_round_trip(self) -> None:
        s = ConfigState({("ns", "a"): Entry({"v": 1}, 3, secret=True)}, 7)
        cached = s.to_cache("production", ["ns"])
        assert CACHE_META in cached
        back = ConfigState.from_cache(cached, 7, "production", ["ns"])
        assert back is not None and back.entries == s.entries and back.revision == 7

    def test_other_environment_is_refused(self) -> None:
        cached = state(a=({"v": 1}, 3)).to_cache("staging", ["ns"])
        assert ConfigState.from_cache(cached, 3, "production", ["ns"]) is None

    def test_namespaces_no_longer_configured_are_left_out(self) -> None:
        cached = state(a=({"v": 1}, 3)).to_cache("production", ["ns"])
        back = ConfigState.from_cache(cached, 3, "production", ["other"])
        assert back is not None and back.entries == {}


class TestLayout:
    def test_files_formats_and_secret_modes(self, tmp_path: Path) -> None:
        cfg = AgentConfig.load(
            flags={"namespaces": "ns,env-ns", "formats": ["env-ns=dotenv"], "config_dir": str(tmp_path)},
            environ={},
        )
        s = ConfigState(
            {("ns", "a"): Entry({"v": 1}, 3), ("env-ns", "b"): Entry({"token": "x"}, 4, secret=True)}, 4
        )
        files = {f.path: f for f in build_files(cfg, s)}
        assert files["ns/a.json"].content == b'{"v":1}\n' and not files["ns/a.json"].secret
        assert files["env-ns/b.env"].content == b"TOKEN=x\n" and files["env-ns/b.env"].secret

    def test_template_context_ignores_progress_revisions(self, tmp_path: Path) -> None:
        """The state's revision moves with every progress mark; a template's output must not."""
        cfg = AgentConfig.load(flags={"namespaces": "ns,empty", "config_dir": str(tmp_path)}, environ={})
        source = "{{ revision }} {{ configs.ns.a.v }} {{ configs.empty }}"
        cfg = replace(cfg, templates=(Template("t.conf", source),))
        early, late = state(3, a=({"v": 1}, 3)), state(90, a=({"v": 1}, 3))
        assert template_context(cfg, early)["configs"] == {"ns": {"a": {"v": 1}}, "empty": {}}
        assert build_files(cfg, early) == build_files(cfg, late)
        assert build_files(cfg, early)[-1].content == b"3 1 {}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"secrets": [{"field_path": "$.a", "secret_ref": "x/y"}]}, True),
        ({"secrets": []}, False),
        ({}, False),
    ],
)
def test_has_secret_refs(value: dict[str, object], expected: bool) -> None:
    assert has_secret_refs(value) is expected
