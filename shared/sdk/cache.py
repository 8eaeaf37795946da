"""The in-memory cache behind ``ConfigClient.get``: TTL-bound, size-bound, invalidated by watches.

Entries are keyed by (namespace, key, environment) and live ``ttl`` seconds on the monotonic
clock. A watch that sees an entry change drops it in *every* environment, because a change
to a lower environment of a chain (say global) changes what production resolves to as well,
while the watch only reports the environment it watches. A snapshot (the watch fell behind
the server's history) clears everything: changes were missed, which ones is unknown.

A read that started before an invalidation must not store the answer it got afterwards:
``generation()`` is taken before asking the server and ``store`` refuses the answer if any
invalidation happened in between (one counter for all entries; a spurious refusal only
costs one extra server read later).

Values holding injected secret plaintext are never stored here (the caller checks; the server
marks such answers no-store and audits every read of a secret).
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from typing import Any

from shared.models import Environment

Entry = tuple[str, str, str]  # namespace, key, environment

DEFAULT_MAX_ENTRIES = 10_000


class ValueCache:
    def __init__(self, ttl: float, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[Entry, tuple[float, dict[str, Any]]] = OrderedDict()
        self._generation = 0
        self.hits = 0
        self.misses = 0

    def get(self, entry: Entry) -> dict[str, Any] | None:
        """A private copy of the cached body, or None when absent or expired."""
        found = self._items.get(entry)
        if found is None or found[0] <= time.monotonic():
            if found is not None:
                del self._items[entry]
            self.misses += 1
            return None
        self._items.move_to_end(entry)
        self.hits += 1
        return copy.deepcopy(found[1])

    def generation(self) -> int:
        return self._generation

    def store(self, entry: Entry, body: dict[str, Any], generation: int) -> bool:
        """Keep ``body`` unless something was invalidated since ``generation`` was taken."""
        if generation != self._generation or self.ttl <= 0:
            return False
        self._items[entry] = (time.monotonic() + self.ttl, copy.deepcopy(body))
        self._items.move_to_end(entry)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return True

    def invalidate(self, namespace: str, key: str) -> None:
        """Forget (namespace, key) in every environment."""
        self._generation += 1
        for environment in Environment:
            self._items.pop((namespace, key, environment.value), None)

    def clear(self) -> None:
        self._generation += 1
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
