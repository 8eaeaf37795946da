"""The configuration an agent holds: resolved entries of its namespaces, and how changes merge in.

``ConfigState`` is a plain value: ``(namespace, key) -> Entry`` plus ``revision``, the
revision up to which every change is reflected. The core loop keeps one "desired" state,
merges watch events and full fetches into it with the rules below, and hands copies to
the applier, which renders them into files.

Merge rules (what keeps a resumed or re-fetched state from going back in time):

- a change is taken only when it is newer than what the state holds for that entry
  (``Entry.revision`` is the resolved value's revision: the newest of its layers and of
  the secrets it references, the same number a watch event carries);
- a full fetch taken while a stream was running is merged with a *floor*: the highest
  revision the stream had seen when the fetch started. Every change up to the floor is
  in the fetch; an entry the fetch lacks is gone if the state's copy is no newer than the
  floor, and kept (it arrived on the stream meanwhile) otherwise.

The cache form (``to_cache`` / ``from_cache``) names each entry ``namespace/key``, plus
one ``agent`` entry recording environment and namespaces so a cache written for another
set of namespaces or another environment is not served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("agent.state")

EntryName = tuple[str, str]  # (namespace, key)
CACHE_META = "agent"  # a name without '/', so it never collides with a namespace/key entry


@dataclass(frozen=True, slots=True)
class Entry:
    """One resolved config value; ``secret`` when the server injected secret values into it."""

    value: dict[str, Any] = field(repr=False)
    revision: int
    secret: bool = False


def has_secret_refs(value: Mapping[str, Any]) -> bool:
    """Whether a resolved value references secrets (``secrets: [{field_path, secret_ref}]``)."""
    refs = value.get("secrets")
    return isinstance(refs, list) and bool(refs)


@dataclass(slots=True)
class ConfigState:
    entries: dict[EntryName, Entry] = field(default_factory=dict)
    revision: int = 0

    def copy(self) -> ConfigState:
        return ConfigState(dict(self.entries), self.revision)

    def same_entries(self, other: ConfigState | None) -> bool:
        return other is not None and self.entries == other.entries

    @property
    def max_entry_revision(self) -> int:
        return max((e.revision for e in self.entries.values()), default=0)

    # ---- merging

    def newer(self, name: EntryName, revision: int) -> bool:
        """Whether a change of ``name`` at ``revision`` is newer than what the state holds."""
        held = self.entries.get(name)
        return held is None or revision > held.revision

    def put(self, name: EntryName, entry: Entry) -> bool:
        """Take ``entry`` if it is newer; whether the state changed."""
        held = self.entries.get(name)
        if held is not None and held.revision >= entry.revision:
            return False
        if held == entry:
            return False
        self.entries[name] = entry
        return held is None or held.value != entry.value or held.secret != entry.secret

    def delete(self, name: EntryName, revision: int) -> bool:
        held = self.entries.get(name)
        if held is None or held.revision >= revision:
            return False
        del self.entries[name]
        return True

    def advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)

    def merge_fetch(self, fetched: ConfigState, floor: int | None) -> bool:
        """Merge a full fetch (see the module docstring); whether any entry changed."""
        changed = False
        for name, entry in fetched.entries.items():
            changed |= self.put(name, entry)
        for name in [n for n in self.entries if n not in fetched.entries]:
            if floor is None or self.entries[name].revision <= floor:
                del self.entries[name]
                changed = True
        if floor is not None:
            self.advance(floor)
        self.advance(fetched.revision)
        return changed

    def replace(self, entries: Iterable[tuple[EntryName, Entry]], revision: int) -> bool:
        """Take a snapshot as the whole truth at ``revision``; whether any entry changed."""
        new = dict(entries)
        changed = new != self.entries
        self.entries = new
        self.revision = max(self.revision, revision)
        return changed

    # ---- the cache form

    def to_cache(self, environment: str, namespaces: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {CACHE_META: {"environment": environment, "namespaces": sorted(namespaces)}}
        for (namespace, key), entry in self.entries.items():
            out[f"{namespace}/{key}"] = {
                "value": entry.value,
                "revision": entry.revision,
                "secret": entry.secret,
            }
        return out

    @classmethod
    def from_cache(
        cls, entries: Mapping[str, Any], revision: int, environment: str, namespaces: Iterable[str]
    ) -> ConfigState | None:
        """The state a cache snapshot holds, or None when it was written for another environment
        (logged). Entries of namespaces not configured any more are left out."""
        meta = entries.get(CACHE_META)
        if not isinstance(meta, dict) or meta.get("environment") != environment:
            log.warning(
                "cache_not_for_this_agent",
                reason="written for another environment" if isinstance(meta, dict) else "no agent record",
            )
            return None
        wanted = set(namespaces)
        state = cls(revision=revision)
        for name, raw in entries.items():
            if name == CACHE_META:
                continue
            namespace, _, key = name.rpartition("/")
            if namespace not in wanted:
                continue
            if (
                not isinstance(raw, dict)
                or not isinstance(raw.get("value"), dict)
                or not isinstance(raw.get("revision"), int)
            ):
                log.warning("cache_entry_refused", name=name, reason="unexpected shape")
                return None
            state.entries[(namespace, key)] = Entry(raw["value"], raw["revision"], bool(raw.get("secret")))
        return state
