"""``shared.sdk.cache.ValueCache``: TTL, size bound, invalidation across environments, no stale stores."""

from __future__ import annotations

import pytest

from shared.sdk import cache as cache_module
from shared.sdk.cache import ValueCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(cache_module.time, "monotonic", fake)
    return fake


class TestValueCache:
    def test_ttl(self, clock: FakeClock) -> None:
        """An entry is served until its TTL has passed, then it is gone."""
        cache = ValueCache(ttl=300)
        assert cache.store(("ns", "k", "global"), {"value": {"a": 1}}, cache.generation())
        clock.now += 299
        assert cache.get(("ns", "k", "global")) == {"value": {"a": 1}}
        clock.now += 2
        assert cache.get(("ns", "k", "global")) is None
        assert len(cache) == 0

    def test_copies(self, clock: FakeClock) -> None:
        """A caller mutating what it got does not change what the next caller gets."""
        cache = ValueCache(ttl=300)
        cache.store(("ns", "k", "global"), {"value": {"a": 1}}, cache.generation())
        got = cache.get(("ns", "k", "global"))
        assert got is not None
        got["value"]["a"] = 2
        assert cache.get(("ns", "k", "global")) == {"value": {"a": 1}}

    def test_invalidate_every_environment(self, clock: FakeClock) -> None:
        """A change of (ns, k) drops it in every environment, and nothing else."""
        cache = ValueCache(ttl=300)
        for env in ("global", "staging", "production"):
            cache.store(("ns", "k", env), {"value": {}}, cache.generation())
        cache.store(("ns", "other", "production"), {"value": {}}, cache.generation())
        cache.invalidate("ns", "k")
        assert len(cache) == 1
        assert cache.get(("ns", "other", "production")) is not None

    def test_answer_older_than_invalidation_not_stored(self, clock: FakeClock) -> None:
        """A read begun before an invalidation cannot store its (possibly stale) answer."""
        cache = ValueCache(ttl=300)
        generation = cache.generation()
        cache.invalidate("ns", "k")
        assert not cache.store(("ns", "k", "global"), {"value": {"old": True}}, generation)
        assert cache.get(("ns", "k", "global")) is None

    def test_size_bound_evicts_least_recent(self, clock: FakeClock) -> None:
        cache = ValueCache(ttl=300, max_entries=2)
        cache.store(("ns", "a", "global"), {"value": {}}, cache.generation())
        cache.store(("ns", "b", "global"), {"value": {}}, cache.generation())
        assert cache.get(("ns", "a", "global")) is not None  # a is now the most recent
        cache.store(("ns", "c", "global"), {"value": {}}, cache.generation())
        assert cache.get(("ns", "b", "global")) is None
        assert cache.get(("ns", "a", "global")) is not None
